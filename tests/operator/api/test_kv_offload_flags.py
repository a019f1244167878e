"""Host KV cache flags in `spec.engine.extraArgs`: what the parse counts and what it refuses.

vLLM 0.33.0 (vllm/config/vllm.py at 000fc94b, `VllmConfig._post_init_kv_transfer_config`):
`--kv-offloading-size=N` with the native backend becomes `OffloadingConnector` with
`cpu_bytes_to_use = N x 2^30` bytes per engine; with `lmcache` it becomes `LMCacheMPConnector`
and the size is not passed on. The values below are restated by hand, not taken from the code.
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
        (
            ("--kv-offloading-size=64", "--kv-offloading-backend=lmcache"),
            "use --kv-offloading-backend=native",
        ),
        ((_transfer("LMCacheConnectorV1"),), "LMCACHE_CONFIG_FILE"),
        ((_transfer("LMCacheMPConnector"),), "standalone LMCache server"),
        ((_transfer("OffloadingConnector", num_cpu_blocks=1000),), "num_cpu_blocks is not read"),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use=0),), "cpu_bytes_to_use"),
        ((_transfer("OffloadingConnector", cpu_bytes_to_use="2g"),), "cpu_bytes_to_use"),
        (
            (_transfer("OffloadingConnector", cpu_bytes_to_use=_GIB, spec_name="X"),),
            "spec 'X' is not supported",
        ),
        (
            (_transfer("SimpleCPUOffloadConnector", cpu_bytes_to_use_per_rank=_GIB),),
            "cpu_bytes_to_use_per_rank is not supported",
        ),
        (
            (_transfer("MultiConnector", connectors=[{"kv_connector": "LMCacheConnectorV1"}]),),
            "LMCacheConnectorV1 is not supported",
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


def test_a_refused_lmcache_size_says_what_to_write_instead() -> None:
    for args in (
        ("--kv-offloading-size=64", "--kv-offloading-backend=lmcache"),
        (_transfer("LMCacheConnectorV1"),),
    ):
        with pytest.raises(ValidationError) as caught:
            EngineSpec(extra_args=args)
        assert "--kv-offloading" in str(caught.value)
        assert "/dev/shm and memory request" in str(caught.value)
