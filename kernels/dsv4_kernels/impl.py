"""Choosing between the Triton kernel and the plain PyTorch reference."""

from __future__ import annotations

import os
from typing import Literal

import torch

Impl = Literal["auto", "triton", "reference"]
"""`"reference"`: plain PyTorch, any device; `"triton"`: the kernel (CUDA, or CPU under
TRITON_INTERPRET=1); `"auto"`: Triton when the inputs are on CUDA (or the interpreter is on),
else the reference."""


def use_triton(impl: Impl, device: torch.device) -> bool:
    """Whether `impl` resolves to the Triton kernel for tensors on `device`.

    Raises:
        ValueError: `impl` is not one of "auto", "triton", "reference".
    """
    if impl == "reference":
        return False
    if impl == "triton":
        return True
    if impl == "auto":
        # Read here, not from triton_fp8, so that the reference path never imports triton.
        return device.type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") == "1"
    raise ValueError(f"impl must be 'auto', 'triton' or 'reference', got {impl!r}")
