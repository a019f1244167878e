"""GPU catalog: memory, node shape, interconnect, number formats and the Kubernetes node label.

`memory_bytes` is the device memory as `nvidia-smi --query-gpu=memory.total` reports it (MiB x
2^20; `rocm-smi --showmeminfo vram` for AMD); the runtime's preflight checks the same figure.
Sources: nvidia-smi output published in vendor and user reports; H200 143,771 MiB measured on this
project's H200 machines (2026-10-29). vLLM multiplies the total the CUDA runtime reports
(`torch.cuda.mem_get_info`) by `--gpu-memory-utilization` (facts §5.3), and that total is smaller
by the driver's reservation `reserved_bytes`: measured on this project's H200 (CUDA 150,109,880,320
B against nvidia-smi's 143,771 MiB: 616 MiB), read from PyTorch's "total capacity" in public
out-of-memory reports for H100 80GB (79.11 GiB), A100 80GB (79.15 GiB) and RTX 4090 (23.65 GiB);
other types use the H200's 616 MiB until measured.

`bandwidth_bytes_per_s` is the vendor HBM/GDDR figure, used only to rank layouts by expected decode
throughput. `label` is the value of the node label that GPU Feature Discovery
(`nvidia.com/gpu.product`) or the AMD device plugin's labeller (`amd.com/gpu.product-name`) sets.

Unknown GPUs are described inline with `GpuType(...)` (the CRD's custom GPU list maps to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GPUS", "GpuType", "get_gpu"]

_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class GpuType:
    """One GPU model as the planner sees it.

    Attributes:
        name: catalog name, lowercase with memory (`h100-80gb`).
        memory_bytes: total device memory reported by the driver, bytes.
        bandwidth_bytes_per_s: peak memory bandwidth, bytes per second (vendor datasheet).
        gpus_per_node: GPUs in a typical node of this type.
        nvlink_domain: GPUs joined by NVLink/Infinity Fabric (1 = PCIe only).
        fp8: native FP8 matrix math.
        fp4: native FP4 (MXFP4/NVFP4) matrix math.
        arch: compute architecture (`sm90`, `gfx942`...).
        vendor: `nvidia` or `amd`.
        label_key: node label key carrying the product name.
        label: node label value for this product.
        resource: extended resource name requested by pods.
        reserved_bytes: memory the driver keeps out of the CUDA-visible total, bytes.
    """

    name: str
    memory_bytes: int
    bandwidth_bytes_per_s: int
    gpus_per_node: int
    nvlink_domain: int
    fp8: bool
    fp4: bool
    arch: str
    vendor: Literal["nvidia", "amd"]
    label_key: str
    label: str
    resource: str
    reserved_bytes: int = 616 * _MIB

    @property
    def cuda_total_bytes(self) -> int:
        """Total memory as the CUDA runtime (and so vLLM) sees it, bytes."""
        return self.memory_bytes - self.reserved_bytes


def _nv(
    name: str,
    mib: int,
    tb_s: float,
    per_node: int,
    domain: int,
    fp8: bool,
    fp4: bool,
    arch: str,
    label: str,
    reserved_mib: int = 616,
) -> GpuType:
    return GpuType(
        name=name,
        memory_bytes=mib * _MIB,
        bandwidth_bytes_per_s=int(tb_s * 1e12),
        gpus_per_node=per_node,
        nvlink_domain=domain,
        fp8=fp8,
        fp4=fp4,
        arch=arch,
        vendor="nvidia",
        label_key="nvidia.com/gpu.product",
        label=label,
        resource="nvidia.com/gpu",
        reserved_bytes=reserved_mib * _MIB,
    )


def _amd(name: str, total: int, tb_s: float, fp4: bool, arch: str, label: str) -> GpuType:
    return GpuType(
        name=name,
        memory_bytes=total,
        bandwidth_bytes_per_s=int(tb_s * 1e12),
        gpus_per_node=8,
        nvlink_domain=8,
        fp8=True,
        fp4=fp4,
        arch=arch,
        vendor="amd",
        label_key="amd.com/gpu.product-name",
        label=label,
        resource="amd.com/gpu",
    )


GPUS: dict[str, GpuType] = {
    g.name: g
    for g in (
        _nv("h100-80gb", 81559, 3.35, 8, 8, True, False, "sm90", "NVIDIA-H100-80GB-HBM3", 550),
        _nv("h200-141gb", 143771, 4.8, 8, 8, True, False, "sm90", "NVIDIA-H200"),
        _nv("h20-96gb", 97871, 4.0, 8, 8, True, False, "sm90", "NVIDIA-H20"),
        _nv("a100-80gb", 81920, 2.039, 8, 8, False, False, "sm80", "NVIDIA-A100-SXM4-80GB", 870),
        _nv("l40s-48gb", 46068, 0.864, 8, 1, True, False, "sm89", "NVIDIA-L40S"),
        _nv("l20-48gb", 46068, 0.864, 8, 1, True, False, "sm89", "NVIDIA-L20"),
        _nv("rtx-a6000-48gb", 49140, 0.768, 8, 1, False, False, "sm86", "NVIDIA-RTX-A6000"),
        _nv(
            "rtx-4090-24gb", 24564, 1.008, 8, 1, True, False, "sm89", "NVIDIA-GeForce-RTX-4090", 346
        ),
        _nv("rtx-5090-32gb", 32607, 1.792, 8, 1, True, True, "sm120", "NVIDIA-GeForce-RTX-5090"),
        _nv("gh200-96gb", 97871, 4.0, 4, 1, True, False, "sm90", "NVIDIA-GH200-480GB"),
        _nv("b200-180gb", 183359, 8.0, 8, 8, True, True, "sm100", "NVIDIA-B200"),
        _nv("gb200-186gb", 189471, 8.0, 4, 72, True, True, "sm100", "NVIDIA-GB200"),
        _amd("mi300x-192gb", 205_822_885_888, 5.3, False, "gfx942", "MI300X"),
        _amd("mi355x-288gb", 309_220_868_096, 8.0, True, "gfx950", "MI355X"),
    )
}
"""The built-in catalog, keyed by name (the names are the CRD's `GpuTypeName` values)."""


def get_gpu(name: str, custom: dict[str, GpuType] | None = None) -> GpuType:
    """Look a GPU type up by name, case-insensitively; inline descriptions take precedence.

    Args:
        name: e.g. `H100-80GB` or `h100-80gb`.
        custom: GPU types described inline by the user, keyed by lowercase name.

    Raises:
        KeyError: when the name is neither in `custom` nor in the catalog; the message lists the
            catalog names.
    """
    key = name.lower()
    if custom and key in custom:
        return custom[key]
    try:
        return GPUS[key]
    except KeyError:
        msg = (
            f"unknown GPU type {name!r}: expected one of {', '.join(GPUS)} or an inline description"
        )
        raise KeyError(msg) from None
