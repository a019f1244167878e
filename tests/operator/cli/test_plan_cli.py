"""`dsv4 plan` end to end through typer's runner."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dsv4_operator.cli import app
from dsv4_operator.planning.findings import CLI_FLAGS, Setting

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_json_output_and_exit_zero_when_it_fits() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "pro",
            "--max-model-len",
            "1048576",
            "--nodes",
            "3",
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fits"] is True
    assert data["gpu"]["type"] == "h100-80gb"


def test_unfit_plan_prints_json_and_exits_one() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "flash",
            "--gpu",
            "RTX-5090-32GB",
            "--gpus-per-node",
            "2",
            "--nodes",
            "1",
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["fits"] is False
    assert data["gpu"]["type"] == "rtx-5090-32gb"
    table = runner.invoke(app, "plan --model flash --gpu rtx-5090-32gb --gpus-per-node 2 --nodes 1")
    # The table's shortfall row names the same request as the NO_FEASIBLE_LAYOUT message.
    assert "short for one 4,096-token request" in " ".join(table.stdout.split())
    assert "0-token request" not in table.stdout.split("KV:")[0]
    # The KV line of a plan with no room for a request says so, not "0 concurrent 0-token".
    kv_line = " ".join(table.stdout.split("KV:")[1].split("/dev/shm")[0].split())
    assert "no room for one request" in kv_line
    assert "0 concurrent" not in kv_line


def test_kv_line_separates_kv_room_from_sequences_at_once() -> None:
    # flash-4x-h100 at 256 batched tokens: KV room for 4 full-length requests, but max-num-seqs 2
    # on one DP rank.
    result = runner.invoke(
        app, ["plan", "examples/flash-4x-h100.yaml", "--max-num-batched-tokens", "256"]
    )
    kv_line = " ".join(result.stdout.split("KV:")[1].split("/dev/shm")[0].split())
    assert "room for 4 65,536-token requests" in kv_line
    assert "max-num-seqs 2 x DP 1 = 2 sequences at once" in kv_line


def test_kv_line_says_one_request_and_one_sequence_in_the_singular() -> None:
    """h12 (README walk-through): following the RTX 5090 advice (then --cpu-offload-gb 52, now 53)
    printed "room for 1 111,104-token requests; ... = 1 sequences at once". (359,680 tokens at
    the 1,024 batched tokens the plan takes for max-model-len auto, BATCH_LOWERED_FOR_CONTEXT;
    123,904 at vLLM's default 2,048.)"""
    result = runner.invoke(
        app,
        "plan --model flash --gpu rtx-5090-32gb --gpus-per-node 2 --nodes 1 --cpu-offload-gb 53",
    )
    assert result.exit_code == 0, result.output
    kv_line = " ".join(result.stdout.split("KV:")[1].split("/dev/shm")[0].split())
    assert "room for 1 359,680-token request;" in kv_line
    assert "max-num-seqs 1 x DP 1 = 1 sequence at once" in kv_line


def test_invalid_input_exits_two_naming_the_field() -> None:
    result = runner.invoke(app, ["plan", "--gpu", "h900-80gb"])
    assert result.exit_code == 2
    assert "error: --gpu (gpu_types): unknown GPU type 'h900-80gb'" in result.output
    result = runner.invoke(app, ["plan", "--model", "flash", "--gpu", "h100-80gb", "--nodes", "0"])
    assert result.exit_code == 2
    assert "error: --nodes (max_nodes): 0 must be at least 1" in result.output
    result = runner.invoke(app, ["plan", "--max-model-len", "lots"])
    assert result.exit_code == 2
    assert "max_model_len" in result.output


def test_table_fits_in_100_columns() -> None:
    result = runner.invoke(
        app, ["plan", "--model", "pro", "--max-model-len", "1048576", "--nodes", "3"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "Why" in result.stdout
    assert max(len(line) for line in lines) <= 100


def test_yaml_output_parses() -> None:
    import yaml

    result = runner.invoke(
        app, ["plan", "--model", "flash", "--gpu", "h200-141gb", "--output", "yaml"]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["model"] == "flash"


@pytest.mark.parametrize("flag", ["--expert-parallel", "--no-expert-parallel"])
def test_pinned_expert_parallel_flag(flag: str) -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "flash",
            "--gpu",
            "h200-141gb",
            "--tensor-parallel",
            "8",
            flag,
            "--output",
            "json",
        ],
    )
    data = json.loads(result.stdout)
    assert (data["layout"]["expert_parallel"] > 1) is (flag == "--expert-parallel")


def test_file_argument_with_flag_override() -> None:
    example = ROOT / "examples" / "pro-1m-h100.yaml"
    result = runner.invoke(app, ["plan", str(example), "--output", "json"])
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    assert data["model"] == "pro"
    over = runner.invoke(
        app, ["plan", str(example), "--max-model-len", "65536", "--output", "json"]
    )
    assert json.loads(over.stdout)["max_model_len"] == 65536


def test_flags_are_case_insensitive_and_cpu_offload_is_a_flag() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "FLASH",
            "--weights",
            "FP8",
            "--kv-cache-dtype",
            "FP8",
            "--gpu",
            "H200-141GB",
            "--max-model-len",
            "AUTO",
            "--output",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weights_format"] == "fp8"
    offload = runner.invoke(
        app,
        [
            "plan",
            "--model",
            "flash",
            "--gpu",
            "rtx-5090-32gb",
            "--gpus-per-node",
            "8",
            "--nodes",
            "1",
            "--cpu-offload-gb",
            "4",
            "--output",
            "json",
        ],
    )
    data = json.loads(offload.stdout)
    assert data["engine_args"]["cpu_offload_gb"] == 4.0


def test_operator_run_with_a_bad_setting_names_it_and_exits_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before kopf starts: a one-line error naming the flag and the variable, no traceback.
    result = runner.invoke(app, ["operator", "run", "--resync-seconds", "-5"])
    assert result.exit_code == 2
    assert "--resync-seconds / DSV4_OPERATOR_RESYNC_SECONDS: Input should be greater than 0" in (
        result.output
    )
    assert "Traceback" not in result.output
    monkeypatch.setenv("DSV4_OPERATOR_PROGRESS_SECONDS", "abc")
    result = runner.invoke(app, ["operator", "run"])
    assert result.exit_code == 2
    assert "DSV4_OPERATOR_PROGRESS_SECONDS: Input should be a valid number" in result.output
    monkeypatch.delenv("DSV4_OPERATOR_PROGRESS_SECONDS")
    monkeypatch.setenv("DSV4_OPERATOR_AUTOSCALE_SECONDS", "0")  # no flag for this one
    result = runner.invoke(app, ["operator", "run"])
    assert result.exit_code == 2
    assert "error: DSV4_OPERATOR_AUTOSCALE_SECONDS: Input should be greater than 0" in (
        result.output
    )


def _plan_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["plan", *args, "--output", "json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_flags_alone_budget_the_hub_download_as_the_resource_does() -> None:
    """New-user trial: from flags the first-boot budget left out the Hub download (805 s for
    Pro 1M on H100) while the same spec, applied, downloads (about 4,270 s of startup probe)."""
    base = ("--model", "pro", "--max-model-len", "1048576", "--gpu", "h100-80gb", "--nodes", "3")
    with_download = _plan_json(*base)["startup_budget_seconds"]
    local = _plan_json(*base, "--no-download")["startup_budget_seconds"]
    assert isinstance(with_download, int)
    assert isinstance(local, int)
    assert with_download - local == -(-864_695_000_000 // 250_000_000)  # at the assumed 250 MB/s
    # The JSON says which it assumed (an added key of the contract).
    assert _plan_json(*base)["weights_download"] is True
    assert _plan_json(*base, "--no-download")["weights_download"] is False
    # With a FILE its modelSource decides (this example reads a PVC); the flag overrides it.
    spec = str(ROOT / "examples" / "pro-1m-h100.yaml")
    from_file = _plan_json(spec)["startup_budget_seconds"]
    assert from_file == _plan_json(spec, "--no-download")["startup_budget_seconds"]
    assert from_file != _plan_json(spec, "--download")["startup_budget_seconds"]


def test_a_table_piped_into_head_exits_zero_when_the_plan_fits() -> None:
    """New-user trial: `dsv4 plan ... | head -2` exited 1 (rich's broken-pipe exit), the code
    reserved for a plan that does not fit."""
    cli = Path(sys.executable).parent / "dsv4"
    shell = f"'{cli}' plan --model flash --gpu a100-80gb | head -1; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "fits" in done.stdout


@pytest.mark.parametrize("extra", [[], ["--no-expert-parallel"]])
def test_a_pinned_size_that_breaks_every_layout_is_the_option_named(extra: list[str]) -> None:
    """New-user trial: `--data-parallel 3` was reported as `--expert-parallel` (EP = 3 does not
    divide the experts), or with `--no-expert-parallel` as `--tensor-parallel`."""
    args = ["plan", "--model", "flash", "--gpu", "h100-80gb", "--data-parallel", "3", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --data-parallel (data_parallel): ")


def test_help_spells_every_option_in_full_at_80_columns() -> None:
    """New-user trial: rich's help table cut names to `--pipeline-paral…` at 80 columns."""
    result = runner.invoke(app, ["plan", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    for flag in ("--pipeline-parallel", "--max-num-batched-tokens", "--gpu-memory-utilization"):
        assert flag in result.stdout
    assert "…" not in result.stdout


def test_a_plan_where_no_length_fits_says_so_instead_of_zero() -> None:
    """New-user trial: an unfit plan printed `max-model-len 0` and `auto: 0 tokens`."""
    result = runner.invoke(
        app, ["plan", "--model", "pro", "--gpu", "rtx-4090-24gb", "--gpus-per-node", "1"]
    )
    assert result.exit_code == 1
    assert "max-model-len none fits;" in result.stdout
    assert "max-model-len auto: no request length fits the pool" in result.stdout
    assert "max-model-len 0" not in result.stdout


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_a_cpu_offload_that_is_not_a_finite_size_exits_two_naming_the_flag(value: str) -> None:
    # `--cpu-offload-gb nan` once ended in a ValueError traceback (inf: OverflowError).
    result = runner.invoke(app, ["plan", "--cpu-offload-gb", value])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--cpu-offload-gb (cpu_offload_bytes)" in result.output


@pytest.mark.parametrize("value", ["1e300", "4097"])
def test_a_cpu_offload_above_the_resources_limit_exits_two_naming_it(value: str) -> None:
    # 1e300 GiB is finite but overflowed to inf in bytes (OverflowError traceback); the resource
    # refuses more than MAX_CPU_OFFLOAD_GIB (4096) in extraArgs, the flag now does too.
    result = runner.invoke(app, ["plan", "--cpu-offload-gb", value])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--cpu-offload-gb (cpu_offload_bytes)" in result.output
    assert "4096" in result.output


def test_a_cpu_offload_at_the_limit_is_planned() -> None:
    result = runner.invoke(app, ["plan", "--cpu-offload-gb", "4096", "--output", "json"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.output)["engine_args"]["cpu_offload_gb"] == 4096


def test_the_cuda_graph_cap_is_counted_shown_in_engine_args_and_bounded() -> None:
    """`--max-cudagraph-capture-size` (vLLM's flag) replaces vLLM's default cap the plan counts
    and renders; 0 exits two naming the flag."""
    base = ["plan", "--gpu", "h200-141gb", "--max-model-len", "8192", "--output", "json"]
    base += ["--max-num-seqs", "256"]  # vLLM's default cap: min(256 x 2, 512)
    default = json.loads(runner.invoke(app, base).stdout)
    assert default["engine_args"]["max_cudagraph_capture_size"] == 512
    result = runner.invoke(app, [*base, "--max-cudagraph-capture-size", "2048"])
    assert result.exit_code == 0, result.output
    pinned = json.loads(result.stdout)
    assert pinned["engine_args"]["max_cudagraph_capture_size"] == 2048
    graph = pinned["memory_per_gpu"]["cuda_graph_bytes"]
    assert graph == (3 + 2048 // 8) * (8 << 20) > default["memory_per_gpu"]["cuda_graph_bytes"]
    refused = runner.invoke(app, ["plan", "--max-cudagraph-capture-size", "0"])
    assert refused.exit_code == 2, (refused.output, refused.exception)
    assert "--max-cudagraph-capture-size (max_cudagraph_capture_size)" in refused.output


def _plan_data(*args: str) -> dict[str, Any]:
    """`dsv4 plan ARGS --output json`, fitting (exit 0) or not (exit 1)."""
    result = runner.invoke(app, ["plan", *args, "--output", "json"])
    assert result.exit_code in (0, 1), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _flag_value(term: dict[str, Any]) -> str:
    """A structured term's value as its `dsv4 plan` option takes it."""
    return str(term["value"])


def test_json_advice_is_structured_and_plans_when_pasted_back() -> None:
    """h18: automation had to parse English for the advice. Each warning carries its terms as
    data ({setting, value, bound, flag, spec_field, spec_value}); a script takes the
    NO_FEASIBLE_LAYOUT's advised values, passes each as its flag, and the plan fits."""
    asked = ["--gpu", "h200-141gb", "--max-num-seqs", "512", "--max-num-batched-tokens", "256"]
    data = _plan_data(*asked)
    assert data["fits"] is False
    (no_fit,) = [w for w in data["warnings"] if w["code"] == "NO_FEASIBLE_LAYOUT"]
    advised = [t for t in no_fit["terms"] if t["bound"] != "exact" and t["value"] is not None]
    assert {(t["flag"], t["value"]) for t in advised} >= {
        ("--max-num-seqs", 256),
        ("--max-num-batched-tokens", 512),
    }
    for t in advised:
        if t["flag"] not in {"--max-num-seqs", "--max-num-batched-tokens"}:
            continue
        assert t["spec_field"] in {"spec.maxNumSeqs", "spec.maxNumBatchedTokens"}
        assert t["spec_value"] == t["value"]
        args = [*asked, t["flag"], _flag_value(t)]
        assert _plan_data(*args)["fits"] is True, args
    # Rejected layouts' reasons carry theirs the same way.
    reasons = [f for r in data["rejected"] for f in r["reasons"]]
    assert reasons
    assert all(isinstance(f["terms"], list) for f in reasons)


def test_json_terms_are_the_findings_terms_in_the_words_of_the_message() -> None:
    """The structured terms are built from each finding's `Term`s: each value appears in the
    message as `dsv4 plan` words it, and utilization's spec value is in whole percent."""
    data = _plan_data("--gpu", "h200-141gb", "--gpu-memory-utilization", "0.995", "--nodes", "1")
    termed = [w for w in data["warnings"] if w["terms"]]
    assert termed
    util = [
        t
        for w in termed
        for t in w["terms"]
        if t["setting"] == "gpu_memory_utilization" and t["value"] is not None
    ]
    assert util
    for w in termed:
        for t in w["terms"]:
            assert set(t) == {"setting", "value", "bound", "flag", "spec_field", "spec_value"}
            assert t["bound"] in {"exact", "most", "least"}
            if t["value"] is None:
                assert t["spec_value"] is None
                continue
            shown = f"{t['value']:,}" if isinstance(t["value"], int) else f"{t['value']}"
            assert shown in w["message"], (t, w["message"])
    for t in util:
        assert t["flag"] == "--gpu-memory-utilization"
        assert t["spec_field"] == "spec.gpuMemoryUtilizationPercent"
        if t["spec_value"] is None:  # the field's 10..99 cannot take it (the 0.995 given)
            assert not 10 <= round(t["value"] * 100) <= 99, t
            continue
        assert isinstance(t["spec_value"], int)
        assert abs(t["spec_value"] - t["value"] * 100) < 1
    assert any(t["spec_value"] is not None for t in util)


def test_every_setting_a_term_names_has_a_dsv4_plan_flag() -> None:

    help_text = runner.invoke(app, ["plan", "--help"], terminal_width=200).output
    for setting in Setting:
        assert CLI_FLAGS[setting] in help_text, setting


def test_json_advice_key_holds_what_would_fit_as_data() -> None:
    """h18: NO_FEASIBLE_LAYOUT's CPU-offload and smaller-batch options are not request
    settings its terms name; `advice` gives all of what would fit as data. Pro at 1M on 2
    nodes of H100: the batch of 2,048 (4,096 before the window and state blocks were counted as
    vLLM 0.33.0 reserves them, for 2 batches in flight) and the offload are advised, and each,
    passed back as its flag, plans."""
    asked = ["--model", "pro", "--gpu", "h100-80gb", "--nodes", "2", "--max-model-len", "1048576"]
    data = _plan_data(*asked)
    assert data["fits"] is False
    advice = data["advice"]
    (no_fit,) = [w for w in data["warnings"] if w["code"] == "NO_FEASIBLE_LAYOUT"]
    assert advice["max_num_batched_tokens"] == 2048
    assert f"--max-num-batched-tokens {advice['max_num_batched_tokens']}" in no_fit["message"]
    assert _plan_data(*asked, "--max-num-batched-tokens", "2048")["fits"] is True
    gib = advice["cpu_offload_gib"]
    assert isinstance(gib, int)
    assert f"--cpu-offload-gb {gib}" in no_fit["message"]
    assert _plan_data(*asked, "--cpu-offload-gb", str(gib))["fits"] is True
    assert advice["settings"] == []
    assert advice["layout_advised"] is True
    assert advice["layout"]["gpus"] > data["layout"]["gpus"]
    assert f"at least {advice['layout']['gpus']} GPUs" in no_fit["message"]
    # The h18 setting advice: the same term objects as the warning's, and no layout.
    seqs = _plan_data(
        "--gpu", "h200-141gb", "--max-num-seqs", "512", "--max-num-batched-tokens", "256"
    )
    (no_fit,) = [w for w in seqs["warnings"] if w["code"] == "NO_FEASIBLE_LAYOUT"]
    assert seqs["advice"]["settings"]
    assert all(t in no_fit["terms"] for t in seqs["advice"]["settings"])
    assert seqs["advice"]["layout_advised"] is False
    # A plan that fits has none.
    assert _plan_data("--gpu", "h200-141gb")["advice"] is None


def test_json_advice_gives_the_setting_a_layout_needs_as_data() -> None:
    """h19: with --max-num-seqs 4096 over a 1,024-token batch on one node of H100, neither
    the setting nor more GPUs alone fit. `advice.layout_settings` holds the setting the advised
    layout needs; passing it and the layout's nodes back plans."""
    asked = ["--model", "pro", "--gpu", "h100-80gb", "--nodes", "1", "--speculative-tokens", "2"]
    asked += ["--max-num-seqs", "4096", "--max-num-batched-tokens", "1024"]
    data = _plan_data(*asked)
    assert data["fits"] is False
    advice = data["advice"]
    assert advice["layout_advised"] is True
    assert advice["layout"] is not None
    (term,) = advice["layout_settings"]
    assert term["flag"] == "--max-num-seqs"
    nodes = str(advice["layout"]["nodes"])
    assert _plan_data(*asked, term["flag"], _flag_value(term), "--nodes", nodes)["fits"] is True
    assert _plan_data(*asked, "--nodes", nodes)["fits"] is False
    # Other plans carry the key, empty.
    assert (
        _plan_data("--gpu", "h100-80gb", "--nodes", "1", "--model", "pro")["advice"][
            "layout_settings"
        ]
        == []
    )


def test_a_utilization_the_spec_field_cannot_take_has_no_spec_value() -> None:
    """h19: Pro at 1M on two H100 nodes needs 1042 % utilization for the weights; the term's
    spec_value said 1043, which spec.gpuMemoryUtilizationPercent (10 to 99) refuses, so a
    script pasting it got an invalid spec. It is null there: no utilization would do."""
    args = ["--model", "pro", "--gpu", "h100-80gb", "--max-model-len", "1048576", "--nodes", "2"]
    result = runner.invoke(app, ["plan", *args, "--output", "json"])
    assert result.exit_code == 1, result.output  # does not fit
    out: dict[str, Any] = json.loads(result.stdout)
    findings = [*out["warnings"], *(f for r in out["rejected"] for f in r["reasons"])]
    terms = [
        t
        for f in findings
        for t in f["terms"]
        if t["setting"] == "gpu_memory_utilization" and t["value"] is not None
    ]
    over = [t for t in terms if t["value"] > 0.99]
    assert over
    assert all(t["spec_value"] is None for t in over)
    assert all(10 <= t["spec_value"] <= 99 for t in terms if t["spec_value"] is not None)


def _spec_file(tmp_path: Path, spec: dict[str, Any]) -> Path:
    body = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "d"},
        "spec": spec,
    }
    path = tmp_path / "d.yaml"
    path.write_text(json.dumps(body))
    return path


def test_a_file_whose_budget_no_layout_takes_names_the_spec_field_and_its_share(
    tmp_path: Path,
) -> None:
    """h22: `dsv4 plan FILE` said "error: gpu_budget: no layout can be evaluated: 8 GPUs exceed
    the GPU budget of 4" for a spec.gpu.budget of 8: neither the field nor that replicas share
    it (the operator's status says both for the same file)."""
    path = _spec_file(
        tmp_path,
        {
            "model": "flash",
            "replicas": 2,
            "gpu": {"types": ["h200-141gb"], "budget": 8},
            "parallelism": {"tensor": 8},
        },
    )
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: spec.gpu.budget (gpu_budget): no layout can be evaluated: 8 GPUs exceed the GPU "
        "budget of 4; spec.gpu.budget 8 shared by spec.replicas 2 leaves 4 GPUs per replica "
        "(lower spec.replicas or raise the budget)"
    ), result.output


def test_a_file_whose_budget_is_shared_says_the_share_in_the_table(tmp_path: Path) -> None:
    """h22: Pro with spec.gpu.budget 16 and spec.replicas 3 was planned on 4 GPUs and did not
    fit; the table said "at least 8 GPUs of this type" on 8-GPU nodes and never why only 4 were
    tried (16 // 3 = 5 per replica)."""
    path = _spec_file(
        tmp_path, {"model": "pro", "replicas": 3, "gpu": {"types": ["h200-141gb"], "budget": 16}}
    )
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 1
    flat = " ".join(result.stdout.split())
    assert (
        "spec.gpu.budget 16 shared by spec.replicas 3 leaves 5 GPUs per replica (lower "
        "spec.replicas or raise the budget)"
    ) in flat
    # One replica with the whole budget: nothing to say.
    alone = _spec_file(tmp_path, {"model": "pro", "gpu": {"types": ["h200-141gb"], "budget": 16}})
    assert "shared by" not in runner.invoke(app, ["plan", str(alone)]).stdout


def test_a_pinned_size_from_a_file_is_named_as_its_spec_field(tmp_path: Path) -> None:
    """h22: spec.parallelism.tensor 3 in FILE was reported as "--tensor-parallel
    (tensor_parallel)", a flag the user never passed."""
    path = _spec_file(
        tmp_path, {"model": "flash", "gpu": {"types": ["h200-141gb"]}, "parallelism": {"tensor": 3}}
    )
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: spec.parallelism.tensor / --tensor-parallel (tensor_parallel): no layout"
    ), result.output
    flag = runner.invoke(app, ["plan", str(path), "--tensor-parallel", "5"])
    assert flag.output.startswith("error: --tensor-parallel (tensor_parallel): "), flag.output


def test_a_file_whose_replicas_cap_its_tokens_target_names_the_field(tmp_path: Path) -> None:
    """h22: "60,000 tokens/s ... needs 24 replicas; at most 1 are allowed": the 1 is the file's
    spec.replicas (default 1), which `dsv4 plan FILE` never named."""
    path = _spec_file(
        tmp_path,
        {
            "model": "flash",
            "load": {"tokensPerSecond": 60000},
            "gpu": {"types": ["h200-141gb"], "maxNodes": 1},
        },
    )
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 1
    flat = " ".join(result.stdout.split())
    assert (
        "spec.replicas 1 caps the replicas spec.load.tokensPerSecond may use (raise "
        "spec.replicas to 27, or enable spec.autoscaling with maxReplicas 27)"
    ) in flat
    fits = runner.invoke(app, ["plan", str(path), "--tokens-per-second", "2000"])
    assert fits.exit_code == 0
    assert "caps the replicas" not in fits.stdout


_FLASH_ONE_NODE = ["plan", "--model", "flash", "--gpu", "h200-141gb", "--nodes", "1"]


def test_a_tokens_target_one_replica_holds_says_replica_in_the_singular() -> None:
    """h22: `dsv4 plan examples/flash-autoscaled.yaml` printed "needs 1 replicas (8 GPUs)".
    (Its 20,000 tokens/s now take 2 replicas: each request reserves its window and compressor
    state blocks from vLLM 0.33.0's shared pool, so a replica holds fewer sequences; 10,000
    take one.)"""
    example = str(ROOT / "examples" / "flash-autoscaled.yaml")
    result = runner.invoke(app, ["plan", example, "--tokens-per-second", "10000"])
    assert result.exit_code == 0
    assert "10,000 tokens/s needs 1 replica (8 GPUs) at ~" in result.stdout
    more = runner.invoke(
        app,
        [*_FLASH_ONE_NODE, "--tokens-per-second", "60000"],
    )
    assert "60,000 tokens/s needs 10 replicas (80 GPUs) at ~" in more.stdout


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_invalid_option_writes_an_error_document_to_stdout(fmt: str) -> None:
    """h27: `--output json` with bad input wrote nothing to stdout (English on stderr only)."""
    result = runner.invoke(app, ["plan", "--gpu", "h900-80gb", "--output", fmt])
    assert result.exit_code == 2
    load = json.loads if fmt == "json" else yaml.safe_load
    error = load(result.stdout)["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert error["field"] == "gpu_types"
    assert error["where"] == "--gpu (gpu_types)"
    assert error["message"].startswith("unknown GPU type 'h900-80gb'")
    assert error["problems"] == []
    # The English stays on stderr, word for word.
    assert f"error: {error['where']}: {error['message']}" in result.stderr


def test_invalid_file_lists_every_failing_field_in_the_error_document(tmp_path: Path) -> None:
    body = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "x"},
        "spec": {"model": "flash", "gpu": {"type": "h100-80gb", "count": 3}},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    result = runner.invoke(app, ["plan", str(path), "--output", "json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "file"
    problems = {p["path"]: p["message"] for p in error["problems"]}
    assert problems["spec.gpu.types"] == "Field required"
    assert "unknown field" in problems["spec.gpu.type"]
    assert "unknown field" in problems["spec.gpu.count"]
    assert "apiVersion" not in problems


def test_table_output_writes_no_error_document() -> None:
    result = runner.invoke(app, ["plan", "--gpu", "h900-80gb"])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_a_plan_document_has_no_error_key() -> None:
    result = runner.invoke(app, ["plan", "examples/flash-4x-h100.yaml", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert "error" not in json.loads(result.stdout)


def test_kv_offloading_size_option_grows_shm_and_names_the_finding() -> None:
    """h28: `dsv4 plan --kv-offloading-size` plans what the resource's extraArgs flag does: N GiB
    per engine, times the engines per pod (TP4 DP2 on 8 GPUs: 2), in /dev/shm."""
    args = "plan --model flash --gpu h100-80gb --gpus-per-node 8 --nodes 1 "
    args += "--tensor-parallel 4 --data-parallel 2 --output json"
    base = json.loads(runner.invoke(app, args).stdout)
    result = runner.invoke(app, args + " --kv-offloading-size 1.5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kv_offload_bytes"] == 2 * 3 * (1 << 29)
    assert data["shm_size_bytes"] == base["shm_size_bytes"] + 2 * 3 * (1 << 29)
    assert "KV_OFFLOAD" in [w["code"] for w in data["warnings"]]
    bad = runner.invoke(app, args + " --kv-offloading-size -1")
    assert bad.exit_code == 2
    assert "--kv-offloading-size (kv_offloading_gib)" in bad.output


def test_a_file_that_is_not_utf8_is_invalid_input_with_an_error_document(tmp_path: Path) -> None:
    """h33: a FILE that is not UTF-8 text raised UnicodeDecodeError out of `dsv4 plan`: a
    traceback and exit 1, which the exit codes say means "the plan does not fit"."""
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00spec")
    result = runner.invoke(app, ["plan", str(path), "--output", "json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "file"
    assert error["message"].startswith(f"{path}: ")
    assert "utf-8" in error["message"]


def test_a_file_nested_too_deep_for_the_yaml_loader_is_invalid_input(tmp_path: Path) -> None:
    """h33: PyYAML's constructor recurses once per nesting level, so a FILE nested some
    thousands deep raised RecursionError out of `dsv4 plan` (a traceback, exit 1: "does not
    fit") instead of invalid input."""
    path = tmp_path / "deep.yaml"
    path.write_text("spec: " + "[" * 5000 + "]" * 5000 + "\n")
    result = runner.invoke(app, ["plan", str(path), "--output", "json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "file"
    assert error["message"].startswith(f"{path}: ")


def test_an_example_a_smaller_batch_fits_on_fewer_gpus_says_so_and_plans_it() -> None:
    """examples/pro-1m-h200-kueue.yaml (8 concurrent 1M-token requests) takes 16 H200 at vLLM's
    8,192 batched tokens; at 2,048 the window and state blocks each request reserves for the
    batches in flight shrink enough for 8 GPUs, which the plan now says, and which plans."""
    example = str(ROOT / "examples" / "pro-1m-h200-kueue.yaml")
    data = _plan_data(example)
    assert (data["layout"]["gpus"], data["max_num_batched_tokens"]) == (16, 8192)
    (said,) = [w for w in data["warnings"] if w["code"] == "BATCH_FITS_FEWER_GPUS"]
    assert "at 2,048 it fits on 8 h200-141gb GPUs (1x8 TP2 DP4) instead of 16" in said["message"]
    (term,) = [t for t in said["terms"] if t["bound"] == "most"]
    assert (term["flag"], term["value"]) == ("--max-num-batched-tokens", 2048)
    followed = _plan_data(example, term["flag"], str(term["value"]))
    assert followed["fits"] is True
    assert followed["layout"]["gpus"] == 8
