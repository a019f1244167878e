"""Checks before the engine starts; each failure names the expected and the actual value.

In order, failing fast at the first problem:

1. Engine versions (vLLM engine only): vLLM >= 0.20.0, the first release with DeepSeek-V4
   (`min_vllm_version 0.20.0`, vLLM PR #40760; facts §5.1), and transformers > 4.51.1. An older
   engine would otherwise die late with "Unrecognized model architecture". Versions are read from
   package metadata; vLLM is never imported here.
2. Stale shared memory (only inside a Kubernetes pod): every entry under the shm mount is
   deleted. The mount is the pod's own (`emptyDir: {medium: Memory}`; the operator never sets
   `hostIPC`), nothing runs yet, so anything there is left over from a previous container of
   this pod (NCCL/vLLM segments after a crash: llm-d #352, vllm #54002,
   design-lessons lesson 3). An entry that cannot be deleted fails the start.
3. Shared-memory size: the mount's total size >= the plan's `--expected-shm-bytes`.
4. GPUs: at least `--expected-gpus` GPUs, each with total memory >= `--expected-gpu-memory-bytes`
   less `GPU_MEMORY_TOLERANCE_PERCENT` (nvidia-smi when present, else torch in a child process so
   no CUDA context stays behind in the runtime; no probe at all while GPUs are expected is a
   failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from dsv4_runtime.config import RuntimeConfig

__all__ = [
    "GPU_MEMORY_TOLERANCE_PERCENT",
    "IN_POD_VARIABLE",
    "MIN_TRANSFORMERS_EXCLUSIVE",
    "MIN_VLLM",
    "GpuInfo",
    "GpuProbeResult",
    "PreflightError",
    "PreflightReport",
    "Probes",
    "check_gpus",
    "check_shm_size",
    "check_versions",
    "clean_shm",
    "probe_gpus",
    "run_preflight",
]

MIN_VLLM = Version("0.20.0")
"""First vLLM with DeepSeek-V4 (recipes `min_vllm_version`, PR #40760; facts §5.1)."""
MIN_TRANSFORMERS_EXCLUSIVE = Version("4.51.1")
"""transformers must be newer than this (issue 5: older ones fail on V4's config)."""

GPU_MEMORY_TOLERANCE_PERCENT = 2
"""How far below the plan's per-GPU memory a GPU may report and still pass. nvidia-smi's
`memory.total` is the usable framebuffer, below the nominal size a catalogue may list (H100 80 GB:
81,559 MiB = 79.65 GiB, 0.44 % under 80 GiB; H200: 143,771 MiB, 0.42 % under 141 GiB); GPU types
that could be confused differ by far more (H100 80 GB vs 94 GB: 15 %)."""

IN_POD_VARIABLE = "KUBERNETES_SERVICE_HOST"
"""Set by the kubelet in every pod. Only inside a pod is the shm mount the runtime's own (the
pod's emptyDir); run by hand on a host, /dev/shm belongs to everyone and is left alone."""

_MIB = 1 << 20
_GIB = 1 << 30
_PROBE_TIMEOUT_S = 60.0


class PreflightError(RuntimeError):
    """A check failed; `check` names it (`versions`, `shm-stale`, `shm-size`, `gpus`)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the probe saw it: index, product name, total memory in bytes."""

    index: int
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class GpuProbeResult:
    """GPUs found, and which probe found them (`nvidia-smi`, `torch`, or why none ran)."""

    gpus: tuple[GpuInfo, ...]
    source: str


def _default_package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _default_shm_size(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


def _default_in_pod() -> bool:
    return IN_POD_VARIABLE in os.environ


def _default_remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def probe_gpus() -> GpuProbeResult:
    """GPUs from nvidia-smi, else from torch in a child process, else none.

    nvidia-smi's `memory.total` is in MiB (`--format=csv,noheader,nounits`). A probe that hangs
    or prints what cannot be read gives no GPUs and says why (preflight then fails cleanly).
    """
    smi = shutil.which("nvidia-smi")
    return _probe_nvidia_smi(smi) if smi is not None else _probe_torch()


def _probe_nvidia_smi(smi: str) -> GpuProbeResult:
    query = [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(  # noqa: S603  (fixed argv, no shell)
            query, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return GpuProbeResult((), f"nvidia-smi did not answer within {_PROBE_TIMEOUT_S:g} s")
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[:1]
        return GpuProbeResult((), f"nvidia-smi failed: {' '.join(reason)}")
    gpus = []
    for line in done.stdout.strip().splitlines():
        try:
            index, name, mib = (part.strip() for part in line.split(","))
            gpus.append(GpuInfo(int(index), name, int(mib) * _MIB))
        except ValueError:  # e.g. `[N/A]` memory on a GPU in a bad state
            return GpuProbeResult((), f"nvidia-smi printed an unreadable GPU line: {line!r}")
    return GpuProbeResult(tuple(gpus), "nvidia-smi")


def _probe_torch() -> GpuProbeResult:
    code = (
        "import json, torch\n"
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
        "props = [torch.cuda.get_device_properties(i) for i in range(n)]\n"
        "print(json.dumps([[i, p.name, p.total_memory] for i, p in enumerate(props)]))\n"
    )
    try:
        done = subprocess.run(  # noqa: S603  (our interpreter, fixed code)
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return GpuProbeResult((), "no nvidia-smi; torch probe timed out")
    if done.returncode != 0:
        return GpuProbeResult((), "no nvidia-smi, and torch could not be imported")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return GpuProbeResult(tuple(GpuInfo(int(i), str(n), int(m)) for i, n, m in rows), "torch")


@dataclass(frozen=True)
class Probes:
    """The machine as preflight sees it; each part replaceable in tests."""

    package_version: Callable[[str], str | None] = _default_package_version
    shm_size_bytes: Callable[[Path], int] = _default_shm_size
    remove: Callable[[Path], None] = _default_remove
    in_pod: Callable[[], bool] = _default_in_pod
    gpus: Callable[[], GpuProbeResult] = probe_gpus


@dataclass(frozen=True)
class PreflightReport:
    """What preflight found: stale entries removed (count, bytes) and non-fatal warnings."""

    stale_entries_removed: int = 0
    stale_bytes_removed: int = 0
    warnings: tuple[str, ...] = field(default=())


def check_versions(probes: Probes) -> None:
    """Check vLLM >= 0.20.0 and transformers > 4.51.1.

    Raises:
        PreflightError: a package is missing, unparseable or too old (names both versions).
    """
    vllm = probes.package_version("vllm")
    if vllm is None or _version(vllm) < MIN_VLLM:
        actual = "not installed" if vllm is None else vllm
        raise PreflightError(
            "versions",
            f"vLLM >= {MIN_VLLM} is required for DeepSeek-V4 (DeepseekV4ForCausalLM, vLLM PR "
            f"#40760), found {actual}; an older vLLM stops with 'Unrecognized model "
            "architecture'. Use the runtime image pinned in runtime/Dockerfile.",
        )
    transformers = probes.package_version("transformers")
    if transformers is None or _version(transformers) <= MIN_TRANSFORMERS_EXCLUSIVE:
        actual = "not installed" if transformers is None else transformers
        raise PreflightError(
            "versions",
            f"transformers > {MIN_TRANSFORMERS_EXCLUSIVE} is required for DeepSeek-V4, found "
            f"{actual}; an older transformers stops with 'Unrecognized model architecture'.",
        )


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def clean_shm(path: Path, remove: Callable[[Path], None]) -> tuple[int, int]:
    """Delete every entry under the shm mount `path`.

    Returns:
        (entries removed, bytes they held).

    Raises:
        PreflightError: entries remain after cleanup (expected 0, actual count, bytes, names).
    """
    if not path.is_dir():
        return 0, 0
    removed = removed_bytes = 0
    errors: dict[Path, str] = {}
    for entry in sorted(path.iterdir()):
        size = _size(entry)
        try:
            remove(entry)
        except OSError as error:
            errors[entry] = f"{type(error).__name__}: {error}"
            continue
        removed += 1
        removed_bytes += size
    left = sorted(path.iterdir())
    if left:
        left_bytes = sum(_size(entry) for entry in left)
        names = ", ".join(f"{e.name} ({errors.get(e, 'still present')})" for e in left[:5])
        raise PreflightError(
            "shm-stale",
            f"stale shared memory in {path}: expected 0 entries after cleanup, found "
            f"{len(left)} ({left_bytes} bytes): {names}. Another process may still hold the "
            "mount, or the files are not ours to delete.",
        )
    return removed, removed_bytes


def _size(entry: Path) -> int:
    try:
        if entry.is_dir() and not entry.is_symlink():
            return sum(p.lstat().st_size for p in entry.rglob("*") if not p.is_dir())
        return entry.lstat().st_size
    except OSError:
        return 0


def check_shm_size(path: Path, expected_bytes: int, probes: Probes) -> None:
    """Check that the shm mount holds at least `expected_bytes`.

    Raises:
        PreflightError: the mount is missing or smaller (both sizes in bytes and GiB).
    """
    if expected_bytes <= 0:
        return
    if not path.is_dir():
        raise PreflightError(
            "shm-size",
            f"shared memory: expected a mount of at least {_bytes(expected_bytes)} at {path}, "
            "actual: no such directory",
        )
    actual = probes.shm_size_bytes(path)
    if actual < expected_bytes:
        raise PreflightError(
            "shm-size",
            f"shared memory {path} is too small: expected at least {_bytes(expected_bytes)} "
            f"(the plan's --expected-shm-bytes), actual {_bytes(actual)}. Mount an emptyDir "
            f"with medium: Memory and sizeLimit >= {expected_bytes} at {path}.",
        )


def check_gpus(config: RuntimeConfig, probes: Probes) -> tuple[str, ...]:
    """Check GPU count and per-GPU memory against the plan.

    Returns:
        Warnings (more GPUs visible than planned: vLLM uses the first ones, the rest idle).

    Raises:
        PreflightError: fewer GPUs than expected, or a GPU with less memory (names both).
    """
    if config.expected_gpus <= 0:
        return ()
    found = probes.gpus()
    listing = "; ".join(f"{g.index}: {g.name} {_bytes(g.memory_bytes)}" for g in found.gpus)
    if len(found.gpus) < config.expected_gpus:
        raise PreflightError(
            "gpus",
            f"expected {config.expected_gpus} GPUs (the plan's --expected-gpus), actual "
            f"{len(found.gpus)} ({found.source}{': ' + listing if listing else ''}). Check the "
            "pod's nvidia.com/gpu limit and the node's GPU driver.",
        )
    if config.expected_gpu_memory_bytes > 0:
        expected = config.expected_gpu_memory_bytes
        floor = expected - expected * GPU_MEMORY_TOLERANCE_PERCENT // 100
        for gpu in found.gpus:
            if gpu.memory_bytes < floor:
                raise PreflightError(
                    "gpus",
                    f"GPU {gpu.index} ({gpu.name}): expected {_bytes(expected)} of memory per "
                    f"GPU (the plan's --expected-gpu-memory-bytes; at least {floor} bytes with "
                    f"the {GPU_MEMORY_TOLERANCE_PERCENT} % tolerance), actual "
                    f"{_bytes(gpu.memory_bytes)} ({found.source}). The pod landed on a "
                    "different GPU type than planned.",
                )
    if len(found.gpus) > config.expected_gpus:
        return (
            f"{len(found.gpus)} GPUs visible but the plan uses {config.expected_gpus}; "
            "the others stay idle",
        )
    return ()


def _bytes(count: int) -> str:
    return f"{count} bytes ({count / _GIB:.2f} GiB)"


def run_preflight(config: RuntimeConfig, probes: Probes | None = None) -> PreflightReport:
    """Run every check in the module docstring's order.

    Raises:
        PreflightError: the first failing check.
    """
    probes = probes or Probes()
    if config.engine == "vllm":
        check_versions(probes)
    warnings: tuple[str, ...] = ()
    if probes.in_pod():
        removed, removed_bytes = clean_shm(config.shm_path, probes.remove)
    else:
        removed = removed_bytes = 0
        warnings += (
            f"not in a Kubernetes pod ({IN_POD_VARIABLE} unset): {config.shm_path} may be shared "
            "with other programs, so stale files were not removed",
        )
    check_shm_size(config.shm_path, config.expected_shm_bytes, probes)
    warnings += check_gpus(config, probes)
    return PreflightReport(removed, removed_bytes, warnings)
