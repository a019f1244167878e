"""Byte-level tokenizer for the `tiny` and `mid` configs: ids 0-255 are bytes, 256 BOS, 257 EOS.

Deterministic and dependency-free; ids ≥ 256 decode to nothing. The chat template mirrors
DeepSeek's `<｜User｜>…<｜Assistant｜>` turn markers as plain text.
"""

from __future__ import annotations

import codecs

BOS_ID = 256
EOS_ID = 257


class ByteTokenizer:
    """UTF-8 bytes as tokens (see module docstring)."""

    bos_id = BOS_ID
    eos_id = EOS_ID

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`, with BOS first when `add_bos`."""
        ids = list(text.encode("utf-8"))
        return [BOS_ID, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`; special ids are dropped, invalid UTF-8 becomes U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Prompt text for chat `messages` ({"role", "content"}), ending with the assistant turn."""
        parts = []
        for m in messages:
            role = m.get("role", "user")
            content = m.get("content", "")
            if role == "system":
                parts.append(content)
            elif role == "assistant":
                parts.append(f"<｜Assistant｜>{content}<｜end▁of▁sentence｜>")
            else:
                parts.append(f"<｜User｜>{content}")
        return "".join(parts) + "<｜Assistant｜>"


class IncrementalDecoder:
    """Streams text from token ids, holding back incomplete UTF-8 sequences."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """Text completed by one more token (often "" inside a multi-byte character)."""
        if token_id >= 256:
            return ""
        return self._dec.decode(bytes([token_id]))

    def flush(self) -> str:
        """Whatever is left (an incomplete character becomes U+FFFD)."""
        return self._dec.decode(b"", final=True)
