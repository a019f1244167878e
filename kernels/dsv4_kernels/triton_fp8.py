"""Triton helpers for float8 e4m3 and UE8M0 that run the same on the GPU and the interpreter.

Triton 3.9's interpreter (TRITON_INTERPRET=1, CPU CI) converts float8 wrongly (a bitcast
uint8 -> float8e4nv -> bf16 returns garbage and fp32 -> float8 does not round to nearest), so the
kernels take a `NATIVE_FP8` constexpr: True on the GPU (hardware cvt, fp8 MMA), False under the
interpreter, where e4m3 is decoded and encoded with exact integer arithmetic instead. Both forms
are exact, so the CPU tests check the same function the GPU computes.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
"""True when Triton runs kernels in its CPU interpreter."""
NATIVE_FP8 = not INTERPRET
"""Use hardware float8 conversions and float8 tensor-core dots (the GPU)."""


@triton.jit
def e4m3_bits_to_f32(b):
    """Decode float8 e4m3fn bit patterns (uint8/int32 tensor) to float32, exactly.

    The two NaN codes (0x7F, 0xFF: exponent and mantissa all ones in e4m3fn) decode to NaN,
    as the hardware conversion and torch.float8_e4m3fn do.
    """
    b = b.to(tl.int32) & 0xFF
    sign = (b >> 7) & 1
    e = (b >> 3) & 0xF
    m = b & 0x7
    normal_bits = (sign << 31) | ((e + 120) << 23) | (m << 20)
    normal_bits = tl.where((b & 0x7F) == 0x7F, 0x7FC00000, normal_bits)
    normal = normal_bits.to(tl.float32, bitcast=True)
    sub = m.to(tl.float32) * 0.001953125  # m * 2**-9
    sub = tl.where(sign == 1, -sub, sub)
    return tl.where(e == 0, sub, normal)


@triton.jit
def decode_e4m3(b, NATIVE: tl.constexpr):
    """float8 e4m3fn bytes (uint8 tensor) -> bfloat16 values (exact)."""
    if NATIVE:
        return b.to(tl.float8e4nv, bitcast=True).to(tl.bfloat16)
    else:
        return e4m3_bits_to_f32(b).to(tl.bfloat16)


@triton.jit
def pow2_from_exponent(e):
    """2**e as float32 for int32 exponents in [-126, 127] (exact)."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def ue8m0_exponent(amax):
    """ceil(log2(max(amax, 1e-4) / 448)) from the float bits (int32), as DeepSeek's act_quant."""
    y = tl.maximum(amax, 1e-4) / 448.0
    bits = y.to(tl.int32, bitcast=True)
    e = ((bits >> 23) & 0xFF) - 127
    return e + ((bits & 0x7FFFFF) != 0).to(tl.int32)


@triton.jit
def f32_to_e4m3_bits(x):
    """Round float32 (|x| <= 448, finite) to float8 e4m3fn, nearest-even; returns int32 bits."""
    bits = x.to(tl.int32, bitcast=True)
    sign = (bits >> 31) & 1
    a = tl.abs(x)
    abits = a.to(tl.int32, bitcast=True)
    # Subnormal range (|x| < 2**-6): value = m * 2**-9, m = rne(a * 512); 8 becomes 2**-6.
    y = a * 512.0
    r = (y + 12582912.0) - 12582912.0  # round half to even for 0 <= y < 2**22
    sub_code = r.to(tl.int32)
    # Normal range: keep 3 mantissa bits, round half to even, carry into the exponent.
    exp = ((abits >> 23) & 0xFF) - 127
    mant = abits & 0x7FFFFF
    keep = mant >> 20
    rem = mant & 0xFFFFF
    up = (rem > 0x80000) | ((rem == 0x80000) & ((keep & 1) == 1))
    code = ((exp + 7) << 3) + keep + up.to(tl.int32)
    code = tl.minimum(code, 0x7E)
    mag = tl.where(a < 0.015625, sub_code, code)
    return (sign << 7) | mag


@triton.jit
def round_bf16(x):
    """float32 -> bfloat16, round half to even (the interpreter's plain cast truncates).

    NaN stays NaN (quiet bit set, so the truncating cast keeps it): rounding its bits would
    carry a high payload into the sign (0x7FFFFFFF, the GPUs' canonical NaN, became -0.0) or
    drop a low one (0x7F800001 became inf).
    """
    bits = x.to(tl.int32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
    bits = tl.where((bits & 0x7FFFFFFF) > 0x7F800000, bits | 0x7FC00000, rounded)
    return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)


@triton.jit
def mma(a, b, acc, NATIVE: tl.constexpr):
    """Return acc + a @ b with float32 accumulation.

    Under the interpreter, bf16 dots return garbage (Triton 3.9), so the operands (exact in
    float32) are widened there first.
    """
    if NATIVE:
        return tl.dot(a, b, acc)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
