"""`dsv4 plan --kv-offloading-size` takes what the resource's extraArgs flag takes.

h37: `--kv-offloading-size 0` planned as "no host KV cache", while the resource refuses
`--kv-offloading-size=0` in `spec.engine.extraArgs`, because vLLM 0.33.0 does not read 0 as off:
`VllmConfig._post_init_kv_transfer_config` (vllm/config/vllm.py at 000fc94b) turns offloading on
for any size that is not None and gives the native backend's `OffloadingConnector`
`cpu_bytes_to_use` 0, which `CPUOffloadingSpec` refuses ("cpu_bytes_to_use must be specified in
kv_connector_extra_config", vllm/v1/kv_offload/cpu/spec.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from dsv4_operator.api.v1alpha1.engine import EngineSpec
from dsv4_operator.cli import app

runner = CliRunner()
ARGS = ["plan", "--model", "flash", "--gpu", "h200-141gb", "--gpus-per-node", "8"]


def test_zero_is_refused_as_vllm_refuses_it() -> None:
    result = runner.invoke(app, [*ARGS, "--kv-offloading-size", "0"])
    assert result.exit_code == 2, result.output
    assert "--kv-offloading-size (kv_offloading_gib)" in result.output
    assert "above 0 and at most 4096" in result.output
    assert "vLLM 0.33.0 refuses" in result.output
    assert "leave --kv-offloading-size out" in result.output


def test_zero_is_an_error_document_in_json() -> None:
    result = runner.invoke(app, [*ARGS, "--kv-offloading-size", "0", "--output", "json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "kv_offloading_gib"
    assert error["code"] == "INVALID_REQUEST"
    assert "above 0" in error["message"]


def test_zero_over_a_file_is_refused_too() -> None:
    result = runner.invoke(
        app, ["plan", "examples/flash-4x-h100.yaml", "--kv-offloading-size", "0"]
    )
    assert result.exit_code == 2, result.output
    assert "--kv-offloading-size" in result.output


@pytest.mark.parametrize(
    "gib", [0.0, -0.0, -1.0, 0.5, 1.0, 64.0, 4096.0, 4096.5, math.inf, math.nan]
)
def test_the_option_and_the_spec_accept_the_same_sizes(gib: float) -> None:
    cli = runner.invoke(app, [*ARGS, "--kv-offloading-size", str(gib), "--output", "json"])
    assert cli.exit_code in (0, 1, 2), cli.output
    try:
        EngineSpec(extra_args=(f"--kv-offloading-size={gib}",))
    except ValidationError:
        spec_accepts = False
    else:
        spec_accepts = True
    assert (cli.exit_code != 2) is spec_accepts
    assert spec_accepts is (0 < gib <= 4096)


_LMCACHE = '--kv-transfer-config={"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}'
_SIMPLE = (
    '--kv-transfer-config={"kv_connector": "SimpleCPUOffloadConnector", "kv_role": "kv_both", '
    '"kv_connector_extra_config": {"cpu_bytes_to_use_per_rank": 1073741824}}'
)


def _file(tmp_path: Path, name: str, extra_args: list[str]) -> Path:
    body = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": name},
        "spec": {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8},
            "engine": {"extraArgs": extra_args},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _host_kv(doc: dict[str, Any]) -> tuple[list[str], int, int]:
    return [w["code"] for w in doc["warnings"]], doc["kv_offload_bytes"], doc["shm_size_bytes"]


@pytest.mark.parametrize(
    "extra_args",
    [
        [_LMCACHE],  # native --kv-offloading-size replaces the connector: nothing uncounted
        [_SIMPLE],  # ... and its per-rank size
        [_LMCACHE, "--kv-offloading-backend=lmcache"],  # lmcache drops the size: uncounted
        [],
    ],
)
def test_the_option_over_a_file_plans_as_the_flag_in_its_extra_args(
    tmp_path: Path, extra_args: list[str]
) -> None:
    """h37: over a FILE whose extraArgs configure a host KV cache, the option added its GiB to
    what the file set (LMCache still warned HOST_KV_NOT_COUNTED, a SimpleCPUOffloadConnector's
    per-rank size was counted too), though vLLM 0.33.0's `--kv-offloading-size` replaces the
    connector (`VllmConfig._post_init_kv_transfer_config`); the option now plans what
    `--kv-offloading-size=4` appended to the file's extraArgs plans."""
    optioned = _file(tmp_path, "optioned", extra_args)
    flagged = _file(tmp_path, "flagged", [*extra_args, "--kv-offloading-size=4"])
    by_option = runner.invoke(
        app, ["plan", str(optioned), "--kv-offloading-size", "4", "--output", "json"]
    )
    by_flag = runner.invoke(app, ["plan", str(flagged), "--output", "json"])
    assert by_option.exit_code == 0, by_option.output
    assert by_flag.exit_code == 0, by_flag.output
    assert _host_kv(json.loads(by_option.stdout)) == _host_kv(json.loads(by_flag.stdout))


def test_the_option_the_spec_and_the_planner_word_the_size_bound_alike() -> None:
    """The three checks of the `--kv-offloading-size` bound (the option, `spec.engine.extraArgs`,
    the planner's request) each worded it their own way: "GiB of host KV cache per engine",
    "per engine (DP rank)", a bare "from 0 to 4096 GiB". One wording now
    (`kv_offloading_bound`), with the planner's 0 (no host KV cache) its only difference."""
    from dsv4_operator.planning import PlanRequest, plan
    from dsv4_operator.planning.findings import PlanningError

    unit = "GiB of host KV cache per engine (DP rank; {}4096 GiB is more than a node holds)"
    cli = runner.invoke(app, [*ARGS, "--kv-offloading-size", "4097"])
    assert f"above 0 and at most 4096 {unit.format('')}" in " ".join(cli.output.split())
    with pytest.raises(ValidationError) as refused:
        EngineSpec(extra_args=("--kv-offloading-size=4097",))
    assert f"above 0 and at most 4096 {unit.format('')}" in str(refused.value)
    with pytest.raises(PlanningError) as planned:
        plan(PlanRequest(model="flash", gpu_types=("h200-141gb",), kv_offloading_gib=4097))
    assert f"from 0 to 4096 {unit.format('0: none; ')}" in str(planned.value)
