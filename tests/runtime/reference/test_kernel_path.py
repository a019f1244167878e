"""Greedy decoding through `dsv4_kernels` equals the pure-PyTorch path token for token (tiny)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from dsv4_kernels import kv_format
from dsv4_kernels.kv_format import ROPE_DIM
from dsv4_runtime.reference import kernel_ops
from dsv4_runtime.reference.config import TINY
from dsv4_runtime.reference.engine import Engine, SamplingParams
from dsv4_runtime.reference.kernel_ops import KernelOps
from dsv4_runtime.reference.kvcache import KVBlockPool
from dsv4_runtime.reference.kvquant import round_index_keys, round_main_kv
from dsv4_runtime.reference.model import Transformer
from dsv4_runtime.reference.ops import TorchOps

from .conftest import random_ids


# Under Triton's CPU interpreter every kernel call of both prompts' prefill and 8 decode steps
# runs in numpy: over 8 minutes on a 2-core AMD EPYC (the suite's 600 s limit cut it there).
@pytest.mark.timeout(2400)
def test_kernel_path_greedy_equals_torch_path(tiny_model: Transformer) -> None:
    """Prompts past the window and HCA boundary (entries of every layer type, CSA top-16 of up to
    65 entries), batched: the same 8 greedy tokens through both paths."""
    prompts = [random_ids(30, seed=31), random_ids(262, seed=32)]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    outputs = []
    for ops in (TorchOps(), KernelOps()):
        engine = Engine(
            tiny_model, KVBlockPool(TINY, 4), max_num_seqs=2, max_model_len=512, ops=ops
        )
        outputs.append(engine.generate(prompts, params))
    assert outputs[0] == outputs[1]
    assert all(len(o) == 8 for o in outputs[0])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("ratio", [0, 4, 128])
def test_compressed_page_is_fixed_per_layer_kind(
    ratio: int, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Triton kernels compile per page size (a constexpr): the kernel path must pass the
    same page size whatever the entry count, or it compiles anew as a request grows. The
    entries must still land in the slots the block table names (the output is compared with
    the pure-PyTorch path). On CUDA the Triton kernels run (window 128: they need a multiple
    of 64); on the CPU their references."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA: run `pytest -m gpu tests/runtime/reference` on the H200")
    if device == "cpu":
        # The references, even when tests/kernels turned the Triton interpreter on for this
        # process (`dsv4_kernels.impl` reads it per call): the packing is what is tested here,
        # and the interpreter's runs of these kernels are tests/kernels' (at window 64+).
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    seen: list[tuple[int, int]] = []
    for name in ("hca_attention", "csa_attention", "sparse_mla_attention"):
        real = getattr(kernel_ops, name)

        def spy(*args: object, _real: Any = real, **kwargs: object) -> Any:
            cache, table, page = args[6], args[7], args[8]
            assert isinstance(cache, torch.Tensor)
            assert isinstance(table, torch.Tensor)
            assert isinstance(page, int)
            seen.append((page, table.shape[1]))
            return _real(*args, **kwargs)

        monkeypatch.setattr(kernel_ops, name, spy)
    gen = torch.Generator().manual_seed(5)
    h, window = (16, 128) if device == "cuda" else (4, 8)
    ops, torch_ops = kernel_ops.KernelOps(), TorchOps()
    for m in (1, 3, 70, 131):
        length = (ratio or 4) * m + 3
        w = min(window, length)

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen).to(device)

        positions = torch.tensor([length - 1], device=device)
        q, sink = rand(1, h, 512), rand(h)
        # the values fp8_ds_mla holds, so both paths see the same numbers (module docstring)
        rows, entries = round_main_kv(rand(w, 512), ROPE_DIM), round_main_kv(rand(m, 512), ROPE_DIM)
        chosen = None
        if ratio == 4:
            chosen = torch.randperm(m, generator=gen)[None, : min(m, 16)].to(device)
        kw: dict[str, Any] = {"ratio": ratio, "sink": sink, "scale": 512**-0.5, "window": window}
        got = ops.attend(q, positions, rows, length - w, entries, chosen, **kw)
        want = torch_ops.attend(q, positions, rows, length - w, entries, chosen, **kw)
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
    pages = {page for page, _ in seen}
    assert pages == {kernel_ops.comp_page_entries(ratio)}, seen
    if ratio:
        assert max(width for _, width in seen) > 1, "no request spanned several pages"


def test_fp8_rounding_equals_the_kernels_formats_next_to_powers_of_two() -> None:
    """`kvquant` rounds to what `dsv4_kernels.kv_format` stores, also for float32 tiles whose
    amax is a float32 ulp above 448 · 2^k: the scale is 2^(k+1), not 2^k (`torch.log2` of
    amax / 448 rounds to k there), which shows in e4m3 subnormals: 3 · 2^(k-9) is a code at
    scale 2^k but a tie at 2^(k+1), stored as 4 · 2^(k-9). Index keys likewise."""
    gen = torch.Generator().manual_seed(4)
    rows = torch.randn(6, 512, generator=gen)
    for i, k in enumerate((-20, -10, 0, 8, 16, 32)):
        amax = torch.nextafter(torch.tensor(448.0 * 2.0**k), torch.tensor(math.inf))
        rows[i, :64] = rows[i, :64].clamp(-2, 2) / 2 * amax
        rows[i, 5] = amax
        rows[i, 6] = 3 * 2.0 ** (k - 9)
    stored = kv_format.dequantize_fp8_ds_mla(kv_format.quantize_fp8_ds_mla(rows))
    assert torch.equal(round_main_kv(rows, 64), stored)
    keys = rows[:, :128].contiguous()
    k8, scale = kv_format.quantize_index_keys(keys)
    assert torch.equal(round_index_keys(keys), k8.float() * scale[:, None])
