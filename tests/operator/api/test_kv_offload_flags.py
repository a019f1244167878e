"""Host KV cache flags in `spec.engine.extraArgs`: counted, accepted uncounted, or refused.

vLLM 0.33.0 (vllm/config/vllm.py at 000fc94b, `VllmConfig._post_init_kv_transfer_config`):
`--kv-offloading-size=N` with the native backend becomes `OffloadingConnector` with
`cpu_bytes_to_use = N x 2^30` bytes per engine; with `lmcache` it becomes `LMCacheMPConnector`
and the size is not passed on. vLLM runs the LMCache connectors, another offloading spec and
`cpu_bytes_to_use_per_rank`, whose host memory the plan cannot size: the parse accepts them and
names them (`kv_offload_not_counted`) for the planner's warning. The values below are restated
by hand, not taken from the code.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dsv4_operator.api.v1alpha1.engine import EngineSpec

_GIB = 1 << 30


def _transfer(connector: str, **extra: object) -> str:
    config: dict[str, object] = {"kv_connector": connector, "kv_role": "kv_both"}
    if extra:
        config["kv_connector_extra_config"] = extra
    return "--kv-transfer-config=" + json.dumps(config)


@pytest.mark.parametrize(
    ("args", "gib"),
    [
        ((), 0.0),
        (("--kv-offloading-size=64",), 64.0),
        (("--kv-offloading-size=1.5", "--kv-offloading-backend=native"), 1.5),
        # the last entry counts, as vLLM's parser takes the last
        (("--kv-offloading-size=8", "--kv-offloading-size=2"), 2.0),
        # lmcache alone is a no-op in vLLM (offloading starts only with a size)
        (("--kv-offloading-backend=lmcache",), 0.0),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use=3 * _GIB),), 3.0),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use=str(_GIB // 2)),), 0.5),
        # SimpleCPUOffloadConnector's DEFAULT_CPU_CAPACITY_BYTES without a size: 8 GiB
        ((_transfer("SimpleCPUOffloadConnector"),), 8.0),
        ((_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use=_GIB),), 1.0),
        # a P/D connector keeps no offloaded blocks in host memory the plan counts
        ((_transfer("NixlConnector"),), 0.0),
        (
            (
                _transfer(
                    "MultiConnector",
                    connectors=[
                        {"kv_connector": "NixlConnector", "kv_role": "kv_both"},
                        {
                            "kv_connector": "OffloadingConnector",
                            "kv_role": "kv_both",
                            "kv_connector_extra_config": {"cpu_bytes_to_use": 2 * _GIB},
                        },
                    ],
                ),
            ),
            2.0,
        ),
        # with a size vLLM overrides the connector and its cpu_bytes_to_use
        (
            (
                _transfer("OffloadingConnector", cpu_bytes_to_use=3 * _GIB),
                "--kv-offloading-size=5",
            ),
            5.0,
        ),
    ],
)
def test_host_kv_cache_per_engine_is_read(args: tuple[str, ...], gib: float) -> None:
    assert EngineSpec(extra_args=args).kv_offloading_gib == gib


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--kv-offloading-size=0",), "above 0 and at most 4096"),
        (("--kv-offloading-size=-1",), "above 0 and at most 4096"),
        (("--kv-offloading-size=nan",), "above 0 and at most 4096"),
        (("--kv-offloading-size=4097",), "above 0 and at most 4096"),
        (("--kv-offloading-size",), "needs a value in the same entry"),
        (("--kv-offloading-backend=disk",), "one of native, lmcache"),
        ((_transfer("OffloadingConnector", num_cpu_blocks=1000),), "num_cpu_blocks is not read"),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use=0),), "cpu_bytes_to_use"),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use="2g"),), "cpu_bytes_to_use"),
        ((_transfer("OffloadingConnector"),), "vLLM 0.33.0 refuses"),
        (
            (_transfer("MultiConnector", connectors=[{"kv_connector": "OffloadingConnector"}]),),
            "cpu_bytes_to_use",
        ),
        (
            (
                '--kv-transfer-config={"kv_connector": "OffloadingConnector", '
                '"kv_connector_extra_config": [1]}',
            ),
            "must be a JSON object",
        ),
        (("--kv-transfer-config=OffloadingConnector",), "needs a JSON object"),
        # an abbreviation vLLM's parser would take for the flag the plan reads
        (("--kv-transfer={}",), "abbreviates --kv-transfer-config"),
    ],
)
def test_host_kv_cache_the_plan_cannot_size_is_refused(args: tuple[str, ...], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EngineSpec(extra_args=args)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("args", "gib", "words"),
    [
        # vLLM 0.33.0 runs lmcache as LMCacheMPConnector and drops the size
        (("--kv-offloading-size=64", "--kv-offloading-backend=lmcache"), 0.0, ("lmcache",)),
        ((_transfer("LMCacheConnectorV1"),), 0.0, ("LMCacheConnectorV1",)),
        ((_transfer("LMCacheMPConnector"),), 0.0, ("LMCacheMPConnector",)),
        (
            (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB, spec_name="X"),),
            0.0,
            ("OffloadingConnector with spec 'X'",),
        ),
        (
            (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB, spec_module_path="m"),),
            0.0,
            ("from 'm'",),
        ),
        # a counted connector beside an uncounted one: the counted part stays counted
        (
            (
                _transfer(
                    "MultiConnector",
                    connectors=[
                        {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"},
                        {
                            "kv_connector": "OffloadingConnector",
                            "kv_role": "kv_both",
                            "kv_connector_extra_config": {"cpu_bytes_to_use": 2 * _GIB},
                        },
                    ],
                ),
            ),
            2.0,
            ("LMCacheConnectorV1",),
        ),
        # a size keeps the config's extra keys (vLLM updates them), spec_name included
        (
            (
                _transfer("OffloadingConnector", cpu_bytes_to_use=_GIB, spec_name="X"),
                "--kv-offloading-size=5",
            ),
            0.0,
            ("spec 'X'",),
        ),
        # with a size, lmcache replaces a counted connector too
        (
            (
                _transfer("OffloadingConnector", cpu_bytes_to_use=_GIB),
                "--kv-offloading-size=5",
                "--kv-offloading-backend=lmcache",
            ),
            0.0,
            ("lmcache",),
        ),
    ],
)
def test_host_kv_cache_the_plan_cannot_size_is_accepted_and_named(
    args: tuple[str, ...], gib: float, words: tuple[str, ...]
) -> None:
    engine = EngineSpec(extra_args=args)
    assert engine.kv_offloading_gib == gib
    assert len(engine.kv_offload_not_counted) == len(words)
    for name, word in zip(engine.kv_offload_not_counted, words, strict=True):
        assert word in name


@pytest.mark.parametrize(
    ("args", "gib", "rank_bytes"),
    [
        ((_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use_per_rank=_GIB),), 0.0, _GIB),
        # the per-rank size overrides cpu_bytes_to_use (vLLM only logs the mismatch)
        (
            (
                _transfer(
                    "SimpleCPUOffloadConnector",
                    cpu_bytes_to_use=64 * _GIB,
                    cpu_bytes_to_use_per_rank=str(_GIB // 2),
                ),
            ),
            0.0,
            _GIB // 2,
        ),
        # vLLM reads it with int(); 0 leaves no room (accepted, counts nothing)
        ((_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use_per_rank=0),), 0.0, 0),
        (
            (
                _transfer(
                    "MultiConnector",
                    connectors=[
                        {
                            "kv_connector": "SimpleCPUOffloadConnector",
                            "kv_connector_extra_config": {"cpu_bytes_to_use_per_rank": _GIB},
                        },
                        {
                            "kv_connector": "OffloadingConnector",
                            "kv_connector_extra_config": {"cpu_bytes_to_use": 2 * _GIB},
                        },
                    ],
                ),
            ),
            2.0,
            _GIB,
        ),
    ],
)
def test_a_per_rank_host_kv_cache_is_read_per_rank(
    args: tuple[str, ...], gib: float, rank_bytes: int
) -> None:
    engine = EngineSpec(extra_args=args)
    assert (engine.kv_offloading_gib, engine.kv_offload_rank_bytes) == (gib, rank_bytes)
    assert engine.kv_offload_not_counted == ()


@pytest.mark.parametrize("size", ["1g", -1, 1.5, 4097 * _GIB])
def test_a_bad_per_rank_size_is_refused(size: object) -> None:
    with pytest.raises(ValidationError) as caught:
        EngineSpec(
            extra_args=(_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use_per_rank=size),)
        )
    assert "cpu_bytes_to_use_per_rank" in str(caught.value)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--kv-offloading-size=64",),
        ("--kv-offloading-backend=lmcache",),
        (_transfer("NixlConnector"),),
        (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB),),
        # OffloadingConnector's CPUOffloadingSpec reads cpu_bytes_to_use alone
        (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB, cpu_bytes_to_use_per_rank=1),),
    ],
)
def test_a_counted_or_absent_host_kv_cache_names_nothing(args: tuple[str, ...]) -> None:
    assert EngineSpec(extra_args=args).kv_offload_not_counted == ()


@pytest.mark.parametrize(
    "args",
    [
        ("--kv-offloading-size=0",),
        ("--kv-offloading-size=4097",),
        (_transfer("OffloadingConnector"),),
        (_transfer("OffloadingConnector", cpu_bytes_to_use="2g"),),
        (_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use_per_rank="1g"),),
        (_transfer("MultiConnector", connectors="x"),),
        (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB) + "x",),
    ],
)
def test_each_remaining_refusal_says_why(args: tuple[str, ...]) -> None:
    """h34: what is still refused is what vLLM 0.33.0 refuses at start, or more host memory
    than a node holds; the message says which."""
    with pytest.raises(ValidationError) as caught:
        EngineSpec(extra_args=args)
    text = str(caught.value)
    assert "vLLM 0.33.0 refuses" in text or "vLLM refuses" in text or "vLLM reads it" in text
