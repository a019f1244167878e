"""KV compressor: Triton vs the PyTorch reference (ratio 4 overlapping, ratio 128)."""

from typing import Any

import pytest
import torch

from dsv4_kernels.compressor import compress, compress_reference, compress_reference_fp8
from dsv4_kernels.compressor.triton_compressor import compress_triton
from dsv4_kernels.kv_format import dequantize_fp8_ds_mla
from dsv4_kernels.testing import assert_close, poisoned_like

# Tolerances: the kernel follows the reference's rounding points (bf16 after pooling and after
# RMSNorm); on the GPU rsqrt/exp differ in the last fp32 bit, which can flip a bf16 rounding
# (2**-8) or an e4m3 code (2**-4) in a few elements.
BF16_REL = 4e-3
FP8_REL = 2e-2


def _inputs(
    b: int, t: int, ratio: int, d: int, prev: bool, device: torch.device, seed: int
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    c = 2 if ratio == 4 else 1

    def rnd(*shape: int, s: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * s).to(device)

    g = t // ratio
    ang = torch.rand(b, g, 32, generator=gen).to(device) * 6.28
    pk = rnd(b, ratio, c * d) if prev else None
    ps = rnd(b, ratio, c * d) if prev else None
    return {
        "kv": rnd(b, t, c * d),
        "score": rnd(b, t, c * d, s=2.0),
        "ape": rnd(ratio, c * d, s=0.5),
        "norm_weight": rnd(d).abs() + 0.5,
        "cos": ang.cos(),
        "sin": ang.sin(),
        "ratio": ratio,
        "prev_kv": pk,
        "prev_score": ps,
    }


@pytest.mark.parametrize(
    ("ratio", "d", "b", "t", "prev"),
    [
        (4, 512, 3, 12, False),
        (4, 512, 2, 8, True),
        (128, 512, 2, 256, False),
        (4, 128, 1, 20, True),
    ],
)
def test_compress_bf16_matches_reference(
    ratio: int, d: int, b: int, t: int, prev: bool, device: torch.device
) -> None:
    args = _inputs(b, t, ratio, d, prev, device, seed=ratio + d + t)
    out = poisoned_like(torch.empty(b, t // ratio, d, dtype=torch.bfloat16, device=device))
    compress_triton(**args, out=out)
    ref = compress_reference(**args)
    assert_close(out.float(), ref.float(), BF16_REL, "compressed entries")


@pytest.mark.parametrize(("ratio", "t", "prev"), [(4, 16, True), (128, 128, False)])
def test_compress_fp8_ds_mla_matches_reference(
    ratio: int, t: int, prev: bool, device: torch.device
) -> None:
    args = _inputs(2, t, ratio, 512, prev, device, seed=7 * ratio)
    out = poisoned_like(torch.empty(2, t // ratio, 584, dtype=torch.uint8, device=device))
    compress_triton(**args, out_format="fp8_ds_mla", out=out)
    ref = compress_reference_fp8(**args)
    assert int(out[..., 583].max()) == 0  # pad byte written
    assert_close(dequantize_fp8_ds_mla(out), dequantize_fp8_ds_mla(ref), FP8_REL, "fp8 entries")
    # Scales are powers of two chosen from the same bf16 values: all bytes agree.
    assert torch.equal(out[..., 576:583], ref[..., 576:583])


def test_overlap_uses_previous_window() -> None:
    args = _inputs(1, 8, 4, 512, True, torch.device("cpu"), seed=5)
    with_prev = compress(**args, impl="reference")
    without = compress(**dict(args, prev_kv=None, prev_score=None), impl="reference")
    assert not torch.equal(with_prev[:, 0], without[:, 0])  # entry 0 sees the previous window
    assert torch.equal(with_prev[:, 1], without[:, 1])  # entry 1 sees only tokens 0..7


def test_compress_rejects_bad_ratio_and_length() -> None:
    args = _inputs(1, 8, 4, 512, False, torch.device("cpu"), seed=1)
    with pytest.raises(ValueError, match="ratio must be 4 or 128"):
        compress(**dict(args, ratio=8))
    with pytest.raises(ValueError, match="not a multiple of ratio"):
        compress(**dict(args, kv=args["kv"][:, :6]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prev_score": None}, "prev_kv and prev_score must be given together"),
        ({"prev_kv": None}, "prev_kv and prev_score must be given together"),
        ({"ape": torch.zeros(4, 512)}, "ape must be"),
        ({"norm_weight": torch.ones(256)}, "norm_weight must be"),
        ({"cos": torch.zeros(2, 3, 32)}, "cos and sin must be"),
        ({"prev_kv": torch.zeros(2, 3, 1024)}, "prev_kv and prev_score must be"),
        ({"score": torch.zeros(2, 8, 512)}, "score must have the shape of kv"),
        ({"out_format": "fp16"}, "out_format must be"),
    ],
)
def test_compress_rejects_inconsistent_inputs(change: dict[str, Any], message: str) -> None:
    # Before this check, a prev_kv without its prev_score was silently dropped (entry 0 then
    # pooled 4 tokens instead of 8) and mis-shaped tensors reached the kernel's raw pointers.
    args = _inputs(2, 8, 4, 512, True, torch.device("cpu"), seed=3)
    for impl in ("reference", "triton"):
        with pytest.raises(ValueError, match=message):
            compress(**dict(args, **change), impl=impl)


def test_compress_rejects_previous_window_without_overlap() -> None:
    args = _inputs(1, 128, 128, 512, False, torch.device("cpu"), seed=4)
    prev = torch.zeros(1, 128, 512)
    with pytest.raises(ValueError, match="only ratio 4"):
        compress(**dict(args, prev_kv=prev, prev_score=prev), impl="reference")
