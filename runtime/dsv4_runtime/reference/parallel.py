"""Process groups of the reference engine: rank placement, TP groups and the EP group.

The same code runs on CPU ranks over gloo (tests) and on GPUs over NCCL (one rank per GPU): only
`backend` and the device differ. Rank r of a world of `tp_size × dp_size` ranks sits in TP group
r // tp_size (consecutive ranks share a node's NVLink, as vLLM places TP) at TP rank r % tp_size;
the EP group, when expert parallelism is on, is the whole world (vLLM's `--enable-expert-parallel`
makes EP = TP × DP).

Where ranks come from (`rendezvous_from_env`): torchrun's `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
`MASTER_PORT` (PyTorch `torch.distributed.run` docs), or else the LeaderWorkerSet variables
`LWS_LEADER_ADDRESS`, `LWS_GROUP_SIZE`, `LWS_WORKER_INDEX` (kubernetes-sigs/lws) with
`procs_per_pod` ranks per pod and `LOCAL_RANK` selecting one of them.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

import torch.distributed as dist

from dsv4_runtime.distributed import LWS_GROUP_SIZE, LWS_LEADER_ADDRESS, LWS_WORKER_INDEX

#: torch.distributed's default TCP store port (`torch.distributed.run --master-port` default).
DEFAULT_MASTER_PORT = 29500
#: Seconds a collective or the rendezvous may wait before failing (bounded, so a lost rank fails
#: the others instead of hanging them).
DEFAULT_TIMEOUT_S = 300.0


@dataclasses.dataclass(frozen=True)
class Rendezvous:
    """Where this process sits in the world and where the TCP store listens.

    Attributes:
        rank: global rank, 0 ≤ rank < world_size.
        world_size: number of ranks.
        master_addr: host of the TCP store (rank 0's host; an IP or a name).
        master_port: TCP port of the store.
        local_rank: rank within this host/pod (selects the GPU); 0 on CPU.
    """

    rank: int
    world_size: int
    master_addr: str
    master_port: int = DEFAULT_MASTER_PORT
    local_rank: int = 0

    def __post_init__(self) -> None:
        """Check the ranges.

        Raises:
            ValueError: naming the field and its limit.
        """
        if self.world_size < 1:
            msg = f"world_size must be ≥ 1, got {self.world_size}"
            raise ValueError(msg)
        if not 0 <= self.rank < self.world_size:
            msg = f"rank={self.rank} is outside [0, {self.world_size - 1}]"
            raise ValueError(msg)
        if not 0 < self.master_port < 65536:
            msg = f"master_port={self.master_port} is outside [1, 65535]"
            raise ValueError(msg)


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        msg = f"{name}={env[name]!r} is not an integer"
        raise ValueError(msg) from None


def rendezvous_from_env(
    env: Mapping[str, str], *, procs_per_pod: int = 1, master_port: int = DEFAULT_MASTER_PORT
) -> Rendezvous:
    """Read the rank placement from torchrun's or LWS's environment variables.

    torchrun (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, optional `MASTER_PORT`, `LOCAL_RANK`) wins when
    `RANK` is set. Otherwise LWS: world = `LWS_GROUP_SIZE` × `procs_per_pod`, rank =
    `LWS_WORKER_INDEX` × `procs_per_pod` + `LOCAL_RANK` (default 0), store on the leader
    (`LWS_LEADER_ADDRESS`) at `master_port`. With neither, a single rank on 127.0.0.1.

    Raises:
        ValueError: a variable is missing or not an integer, or a rank is out of range; the message
            names the variable.
    """
    if "RANK" in env:
        missing = [n for n in ("WORLD_SIZE", "MASTER_ADDR") if n not in env]
        if missing:
            msg = f"RANK is set but {', '.join(missing)} is not (torchrun sets all three)"
            raise ValueError(msg)
        return Rendezvous(
            rank=_int_env(env, "RANK"),
            world_size=_int_env(env, "WORLD_SIZE"),
            master_addr=env["MASTER_ADDR"],
            master_port=_int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else master_port,
            local_rank=_int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
        )
    if procs_per_pod < 1:
        msg = f"procs_per_pod must be ≥ 1, got {procs_per_pod}"
        raise ValueError(msg)
    local_rank = _int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    if not 0 <= local_rank < procs_per_pod:
        msg = f"LOCAL_RANK={local_rank} is outside [0, {procs_per_pod - 1}] (procs_per_pod)"
        raise ValueError(msg)
    if LWS_WORKER_INDEX in env:
        missing = [n for n in (LWS_GROUP_SIZE, LWS_LEADER_ADDRESS) if n not in env]
        if missing:
            msg = f"{LWS_WORKER_INDEX} is set but {', '.join(missing)} is not (LWS sets all three)"
            raise ValueError(msg)
        pods = _int_env(env, LWS_GROUP_SIZE)
        return Rendezvous(
            rank=_int_env(env, LWS_WORKER_INDEX) * procs_per_pod + local_rank,
            world_size=pods * procs_per_pod,
            master_addr=env[LWS_LEADER_ADDRESS].strip(),
            master_port=master_port,
            local_rank=local_rank,
        )
    return Rendezvous(
        rank=local_rank,
        world_size=procs_per_pod,
        master_addr="127.0.0.1",
        master_port=master_port,
        local_rank=local_rank,
    )


@dataclasses.dataclass(frozen=True)
class ParallelGroups:
    """This rank's groups in a TP × DP world, with EP over the whole world or off.

    Attributes:
        rank: global rank.
        world_size: tp_size × dp_size.
        tp_size: ranks that split attention heads, expert widths and the vocabulary.
        dp_size: ranks that run different requests (DP attention).
        tp_rank: this rank's index in its TP group.
        dp_rank: this rank's TP group index.
        tp_group: the process group of this rank's TP group (None when tp_size = 1).
        ep_group: the expert-parallel group (the world) when EP is on, else None.
    """

    rank: int
    world_size: int
    tp_size: int
    dp_size: int
    tp_rank: int
    dp_rank: int
    tp_group: dist.ProcessGroup | None
    ep_group: dist.ProcessGroup | None

    @property
    def ep_size(self) -> int:
        """Ranks that split the routed experts (1 when EP is off)."""
        return self.world_size if self.ep_group is not None else 1

    @property
    def ep_rank(self) -> int:
        """This rank's index in the EP group (0 when EP is off)."""
        return self.rank if self.ep_group is not None else 0


def init_distributed(
    rdzv: Rendezvous, *, backend: str = "gloo", timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Join the default process group through a TCP store at `rdzv.master_addr:master_port`.

    `backend` is "gloo" for CPU ranks, "nccl" for one GPU per rank. Every collective then fails
    after `timeout_s` seconds instead of hanging when a rank is lost.

    Raises:
        RuntimeError: already initialised, or the rendezvous failed (from torch.distributed).
    """
    if dist.is_initialized():
        msg = "torch.distributed is already initialised in this process"
        raise RuntimeError(msg)
    dist.init_process_group(
        backend,
        init_method=f"tcp://{rdzv.master_addr}:{rdzv.master_port}",
        rank=rdzv.rank,
        world_size=rdzv.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def build_groups(
    tp_size: int, dp_size: int = 1, *, expert_parallel: bool = False
) -> ParallelGroups:
    """Create the TP groups (and the EP group) of the initialised world; all ranks must call it.

    Args:
        tp_size: ranks per TP group (consecutive global ranks).
        dp_size: number of TP groups (DP attention ranks when tp_size = 1).
        expert_parallel: split the routed experts over the whole world: with tp_size = 1 (DP
            attention) by all-to-all dispatch/combine; with dp_size = 1 (TP attention, tokens
            replicated) each rank runs its experts on all tokens and the TP all-reduce combines.

    Raises:
        RuntimeError: torch.distributed is not initialised.
        ValueError: tp_size × dp_size differs from the world size, or EP with both > 1.
    """
    if not dist.is_initialized():
        msg = "call init_distributed first"
        raise RuntimeError(msg)
    world, rank = dist.get_world_size(), dist.get_rank()
    if tp_size < 1 or dp_size < 1 or tp_size * dp_size != world:
        msg = f"tp_size × dp_size = {tp_size} × {dp_size} must equal the world size {world}"
        raise ValueError(msg)
    if expert_parallel and tp_size > 1 and dp_size > 1:
        msg = (
            "expert_parallel needs tp_size = 1 (DP attention + EP) or dp_size = 1 (TP attention"
            f" + EP), got tp_size={tp_size}, dp_size={dp_size}"
        )
        raise ValueError(msg)
    tp_group = None
    for g in range(dp_size):  # new_group is collective: every rank creates every group
        ranks = list(range(g * tp_size, (g + 1) * tp_size))
        group = dist.new_group(ranks) if tp_size > 1 else None
        if rank in ranks:
            tp_group = group
    ep_group = dist.new_group(list(range(world))) if expert_parallel and world > 1 else None
    return ParallelGroups(
        rank=rank,
        world_size=world,
        tp_size=tp_size,
        dp_size=dp_size,
        tp_rank=rank % tp_size,
        dp_rank=rank // tp_size,
        tp_group=tp_group,
        ep_group=ep_group,
    )
