"""/dev/shm size per worker pod, from the layout (design-lessons lesson 3, gap G3).

Terms, added then rounded up to a whole GiB and capped at `SHM_CAP_BYTES`:

- a floor of 1 GiB (llm-d uses 2 Gi, KServe 1 to 8 Gi);
- per local DP rank, vLLM's shared-memory broadcast of scheduler output: 10 chunks x 16 MiB;
- per local GPU, NCCL: 32 MiB of proxy buffers with NVLink (llm-d's "about 32 MB per local DP");
  without NVLink NCCL's SHM transport, 4 MiB x 4 channels x 2 directions per local peer;
- the CPU offload region, when the plan offloads to host memory;
- after the cap and the long-context raise, the host KV cache of `--kv-offloading-size` (or an
  offloading `--kv-transfer-config`): vLLM 0.33.0's `OffloadingConnector` keeps it in one file
  in /dev/shm per engine (`SharedOffloadRegion`, vLLM PR #50094) and first checks that /dev/shm
  has room for it (PR #50358), so the tmpfs must hold it whole, beyond the 64 GiB cap.

The size is raised to 16 GiB when more than 8 concurrent requests run with contexts over 100k
tokens (the known rule; shm exhaustion at long context: gpustack #5014, production-stack #899).
Ray's object store would add 30 % of host memory, but Ray is used only for PP, which the engine does
not support for this model.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsv4_operator.planning.memory import Layout

__all__ = [
    "LONG_CONTEXT_MIN_SHM_BYTES",
    "SHM_CAP_BYTES",
    "SHM_FLOOR_BYTES",
    "ShmPlan",
    "shm_bytes",
]

_MIB, _GIB = 1 << 20, 1 << 30
SHM_FLOOR_BYTES = 1 * _GIB
SHM_CAP_BYTES = 64 * _GIB
LONG_CONTEXT_MIN_SHM_BYTES = 16 * _GIB
_LONG_CONTEXT_TOKENS, _LONG_CONTEXT_REQUESTS = 100_000, 8
_MESSAGE_QUEUE_BYTES = 10 * 16 * _MIB
_NCCL_NVLINK_BYTES = 32 * _MIB
_NCCL_SHM_PER_PEER_BYTES = 4 * _MIB * 4 * 2


@dataclass(frozen=True, slots=True)
class ShmPlan:
    """The /dev/shm size and why.

    Attributes:
        size_bytes: emptyDir sizeLimit for /dev/shm, bytes.
        reasons: one line per term that set the size.
        kv_offload_bytes: the host KV cache of the pod's engines, bytes, included in
            `size_bytes` (0 without KV offloading); the renderer adds it to `spec.shmSize` too.
    """

    size_bytes: int
    reasons: tuple[str, ...]
    kv_offload_bytes: int = 0


def shm_bytes(
    layout: Layout,
    *,
    nvlink: bool,
    max_num_seqs: int,
    max_model_len: int,
    cpu_offload_bytes: int = 0,
    kv_offload_bytes: int = 0,
) -> ShmPlan:
    """Size /dev/shm for one worker pod of a layout (module docstring gives the formula).

    Args:
        layout: parallel layout (its per-node part matters).
        nvlink: GPUs of a node are joined by NVLink/Infinity Fabric.
        max_num_seqs: concurrent sequences per DP rank.
        max_model_len: context cap, tokens.
        cpu_offload_bytes: host-memory offload region placed in /dev/shm, bytes.
        kv_offload_bytes: host KV cache of all the pod's engines, bytes (per engine x engines
            per pod), added after the rounding, the cap and the long-context raise.

    Returns:
        The size and the reasons.
    """
    local = layout.gpus_per_node
    queues = layout.data_parallel_local * _MESSAGE_QUEUE_BYTES
    if nvlink:
        nccl = local * _NCCL_NVLINK_BYTES
    else:
        nccl = local * max(local - 1, 0) * _NCCL_SHM_PER_PEER_BYTES
    raw = SHM_FLOOR_BYTES + queues + nccl + cpu_offload_bytes
    size = min(-(-raw // _GIB) * _GIB, SHM_CAP_BYTES)
    reasons = [
        f"1 GiB floor + {layout.data_parallel_local} local DP message queues "
        f"({queues // _MIB} MiB) + NCCL for {local} local GPUs ({nccl // _MIB} MiB"
        f"{', NVLink' if nvlink else ', SHM transport without NVLink'})"
        + (f" + CPU offload {cpu_offload_bytes // _MIB} MiB" if cpu_offload_bytes else "")
    ]
    long_context = max_model_len > _LONG_CONTEXT_TOKENS
    if long_context and max_num_seqs * layout.data_parallel_local > _LONG_CONTEXT_REQUESTS:
        if size < LONG_CONTEXT_MIN_SHM_BYTES:
            reasons.append(
                f"raised to 16 GiB: more than {_LONG_CONTEXT_REQUESTS} concurrent requests with "
                f"contexts over {_LONG_CONTEXT_TOKENS:,} tokens need at least 16 GiB of /dev/shm"
            )
        size = max(size, LONG_CONTEXT_MIN_SHM_BYTES)
    if kv_offload_bytes:
        reasons[0] += f"; plus the engines' host KV cache ({kv_offload_bytes:,} B)"
    return ShmPlan(
        size_bytes=size + kv_offload_bytes,
        reasons=tuple(reasons),
        kv_offload_bytes=kv_offload_bytes,
    )
