"""The CRD's CEL rules, evaluated with cel-expr-python against the generated schema.

Besides fixed cases (test_malformed.py), a Hypothesis property checks that the CEL rules and the
pydantic validators give the same verdict on the cross-field rules, so a cluster with CEL and the
operator's own parse agree.
"""

from typing import Any

import pytest
from hypothesis import given, settings
from tests.support.spec_cases import (
    PARALLELISM_CASES,
    SCALING_CASES,
    parallelism_body,
    parse_accepts,
    scaling_body,
)
from tests.support.spec_cases import with_spec as _with_spec

from dsv4_operator.api import InvalidSpecError, parse_deployment


def test_every_rule_compiles_and_names_a_spec_field(crd_validator: Any) -> None:
    rules = crd_validator.rules()
    assert len(rules) >= 15
    for path, entry in rules:
        crd_validator.compile(entry["rule"])
        assert entry["message"].startswith("spec."), (path, entry["message"])


def test_gpu_types_match_case_insensitively(validate: Any) -> None:
    assert validate(_with_spec(gpu={"types": ["H200-141GB", "H100-80gb"]})) == []


def test_custom_gpu_type_is_accepted_by_name(validate: Any) -> None:
    custom = {
        "name": "MI250X-128GB",
        "memory": "128Gi",
        "memoryBandwidthGbps": 3276,
        "denseBf16Tflops": 383,
        "vendor": "amd",
    }
    body = _with_spec(gpu={"types": ["mi250x-128gb", "h100-80gb"], "customTypes": [custom]})
    assert validate(body) == []
    spec = parse_deployment(body).spec
    found = spec.gpu.custom_type("mi250x-128gb")
    assert found is not None
    assert found.memory_bytes == 128 * 2**30
    assert spec.gpu.normalized_types == ("mi250x-128gb", "h100-80gb")


def test_model_is_immutable_on_update(validate: Any) -> None:
    old = _with_spec(model="flash")
    new = _with_spec(model="pro")
    assert validate(new) == []  # a create has no oldSelf: the transition rule does not run
    assert validate(new, old) == [
        "spec.model: spec.model is immutable: create a new DeepSeekV4Deployment to switch "
        "between flash and pro"
    ]
    assert validate(_with_spec(model="flash", replicas=3), old) == []


def test_percent_and_count_rollout_values(validate: Any) -> None:
    for rollout in ({"maxSurge": "25%", "maxUnavailable": 0}, {"maxSurge": 0, "maxUnavailable": 1}):
        assert validate(_with_spec(rollout=rollout)) == []
    assert validate(_with_spec(rollout={"maxSurge": "0%", "maxUnavailable": 0})) == [
        "spec.rollout: spec.rollout.maxSurge and spec.rollout.maxUnavailable must not both be 0"
    ]


def test_extra_args_may_pass_flags_the_operator_does_not_own(validate: Any) -> None:
    # A flag a later vLLM might add that starts with an owned one is not an abbreviation of it;
    # vLLM 0.33.0 has no such flag, so the parse checks it only for another release.
    args = ["--enforce-eager", "--seed=3", "--max-model-len-extra=1", "--tokenizer=/m/tok"]
    engine = {"extraArgs": args, "version": "0.34.0"}
    assert validate(_with_spec(engine=engine)) == []
    assert parse_deployment(_with_spec(engine=engine)).spec.engine.extra_args == tuple(args)
    with pytest.raises(InvalidSpecError, match="--max-model-len-extra is not a `vllm serve`"):
        parse_deployment(_with_spec(engine={"extraArgs": args}))


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--block-size=64", "--block-size is set by the runtime"),
        ("--served-model-name=x", "--served-model-name is set by the runtime"),
        ("--reasoning-parser", "--reasoning-parser is set by the runtime"),
    ],
)
def test_extra_args_the_runtime_owns_are_refused_by_the_crd_and_the_parse(
    validate: Any, arg: str, message: str
) -> None:
    body = _with_spec(engine={"extraArgs": ["--enforce-eager", arg]})
    (error,) = validate(body)
    assert error.startswith("spec.engine: spec.engine.extraArgs must not set flags")
    assert arg.split("=", 1)[0] in error
    with pytest.raises(InvalidSpecError, match=message):
        parse_deployment(body)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--max-model=1048576", "--max-model abbreviates --max-model-len"),
        ("--gpu-memory=0.99", "abbreviates --gpu-memory-utilization"),
        ("--block-si=64", "abbreviates --block-size"),
    ],
)
def test_abbreviated_extra_args_are_refused_by_the_parse(
    validate: Any, arg: str, message: str
) -> None:
    # The CRD's CEL rule matches owned flags exactly (an abbreviation check would cost too much
    # of the rule budget, see engine._OWNED_CEL); the operator's parse refuses abbreviations, so
    # the CR gets Ready=False, not crashing pods.
    body = _with_spec(engine={"extraArgs": [arg]})
    assert validate(body) == []
    with pytest.raises(InvalidSpecError, match=message):
        parse_deployment(body)


@settings(max_examples=300, deadline=None)
@given(case=PARALLELISM_CASES)
def test_parallelism_rules_agree_with_pydantic(validate: Any, case: dict[str, Any]) -> None:
    body = parallelism_body(case)
    assert (validate(body) == []) == parse_accepts(body), (body["spec"], validate(body))


@settings(max_examples=300, deadline=None)
@given(case=SCALING_CASES)
def test_scaling_rules_agree_with_pydantic(validate: Any, case: dict[str, Any]) -> None:
    body = scaling_body(case)
    assert (validate(body) == []) == parse_accepts(body), (body["spec"], validate(body))


def test_env_from_a_secret_is_accepted(validate: Any) -> None:
    env = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"},
        # vLLM's default: the CUDA-graph estimate stays inside the budget the plan counts
        {"name": "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "value": "1"},
    ]
    assert validate(_with_spec(engine={"env": env})) == []
    assert len(parse_deployment(_with_spec(engine={"env": env})).spec.engine.env) == 3
    both = [
        {
            "name": "A",
            "valueFrom": {
                "secretKeyRef": {"name": "s", "key": "k"},
                "configMapKeyRef": {"name": "c", "key": "k"},
            },
        }
    ]
    assert validate(_with_spec(engine={"env": both})) == [
        "spec.engine.env[0].valueFrom: spec.engine.env: valueFrom must set exactly one of "
        "secretKeyRef, configMapKeyRef"
    ]
    with pytest.raises(
        InvalidSpecError, match=r"spec\.engine\.env\[0\]\.valueFrom: set exactly one"
    ):
        parse_deployment(_with_spec(engine={"env": both}))


def test_default_model_source_per_format() -> None:
    pro_fp8 = parse_deployment(_with_spec(model="pro", weightsFormat="fp8")).spec
    source = pro_fp8.effective_model_source.hugging_face
    assert source is not None
    assert (source.repo, source.revision) == ("sgl-project/DeepSeek-V4-Pro-FP8", "main")
    flash = parse_deployment(_with_spec()).spec.effective_model_source.hugging_face
    assert flash is not None
    assert flash.repo == "deepseek-ai/DeepSeek-V4-Flash"
    pvc = {"pvc": {"claimName": "w"}}
    own = parse_deployment(_with_spec(weightsFormat="bf16", modelSource=pvc)).spec
    assert own.effective_model_source.pvc is not None


def test_queue_name_is_immutable_on_update(validate: Any) -> None:
    queued = _with_spec(placement={"queueName": "inference"})
    plain = _with_spec()
    message = (
        "spec: spec.placement.queueName is immutable (Kueue refuses to set, change or remove the "
        "queue of an existing LeaderWorkerSet): create a new DeepSeekV4Deployment instead"
    )
    assert validate(queued) == []  # a create may set it
    assert validate(queued, plain) == [message]  # set later
    assert validate(plain, queued) == [message]  # removed
    assert validate(_with_spec(placement={"queueName": "batch"}), queued) == [message]
    # Unchanged, with other placement fields and the replicas changing: allowed.
    same = _with_spec(placement={"queueName": "inference", "topologyKey": "a.io/b"}, replicas=2)
    assert validate(same, queued) == []
    assert validate(_with_spec(replicas=2), plain) == []


@pytest.mark.parametrize(
    ("arg", "accepted"),
    [("--dtype=auto", True), ("--dtype=bfloat16", True), ("--dtype=float16", False),
     ("--dtype", False)],
)  # fmt: skip
def test_dtype_values_agree_between_the_crd_and_the_parse(
    validate: Any, arg: str, accepted: bool
) -> None:
    """Diff review: only the parse checked --dtype's value, so the API server stored a spec the
    operator then reported InvalidSpec; admission refuses it now too."""
    body = _with_spec(engine={"extraArgs": [arg]})
    errors = validate(body)
    assert (errors == []) is accepted, errors
    if not accepted:
        assert "--dtype may only be auto or bfloat16" in errors[0]
    assert parse_accepts(body) is accepted
