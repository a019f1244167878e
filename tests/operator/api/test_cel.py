"""The CRD's CEL rules, evaluated with cel-expr-python against the generated schema.

Besides fixed cases (test_malformed.py), a Hypothesis property checks that the CEL rules and the
pydantic validators give the same verdict on the cross-field rules, so a cluster with CEL and the
operator's own parse agree.
"""

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsv4_operator.api import InvalidSpecError, parse_deployment

BASE: dict[str, Any] = {
    "apiVersion": "dsv4.io/v1alpha1",
    "kind": "DeepSeekV4Deployment",
    "metadata": {"name": "x"},
    "spec": {"model": "flash", "gpu": {"types": ["h200-141gb"]}},
}


def _with_spec(**fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["spec"].update(fields)
    return body


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
    args = ["--enforce-eager", "--seed=3", "--max-model-len-extra=1", "--tokenizer=/m/tok"]
    assert validate(_with_spec(engine={"extraArgs": args})) == []
    assert parse_deployment(_with_spec(engine={"extraArgs": args})).spec.engine.extra_args == tuple(
        args
    )


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--block-size=64", "--block-size is set by the runtime"),
        ("--served-model-name=x", "--served-model-name is set by the runtime"),
        ("--max-model=1048576", "--max-model abbreviates --max-model-len"),
        ("--gpu-memory=0.99", "abbreviates --gpu-memory-utilization"),
    ],
)
def test_extra_args_the_runtime_owns_or_abbreviations_are_refused_by_the_parse(
    validate: Any, arg: str, message: str
) -> None:
    # The CRD's CEL rule checks only the operator's own flags (its cost grows with the list);
    # the operator's parse refuses these too, so the CR gets Ready=False, not crashing pods.
    body = _with_spec(engine={"extraArgs": [arg]})
    assert validate(body) == []
    with pytest.raises(InvalidSpecError, match=message):
        parse_deployment(body)


def _verdicts(validate: Any, body: dict[str, Any]) -> tuple[bool, bool]:
    crd_ok = validate(body) == []
    try:
        parse_deployment(body)
    except InvalidSpecError:
        return crd_ok, False
    return crd_ok, True


OPTIONAL_SIZE = st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 5, 8, 16]))


PARALLELISM_CASES = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["flash", "pro"]),
        "gpusPerNode": st.sampled_from([1, 2, 4, 6, 8]),
        "maxNodes": st.sampled_from([1, 2, 3]),
        "tensor": OPTIONAL_SIZE,
        "data": OPTIONAL_SIZE,
        "pipeline": OPTIONAL_SIZE,
        "expert": st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 6, 8, 16, 24, 32])),
    }
)


@settings(max_examples=300, deadline=None)
@given(case=PARALLELISM_CASES)
def test_parallelism_rules_agree_with_pydantic(validate: Any, case: dict[str, Any]) -> None:
    sizes = {key: case[key] for key in ("tensor", "data", "pipeline", "expert")}
    body = _with_spec(
        model=case["model"],
        gpu={
            "types": ["h100-80gb"],
            "gpusPerNode": case["gpusPerNode"],
            "maxNodes": case["maxNodes"],
        },
        parallelism={key: value for key, value in sizes.items() if value is not None},
    )
    crd_ok, parse_ok = _verdicts(validate, body)
    assert crd_ok == parse_ok, (body["spec"], validate(body))


SCALING_CASES = st.fixed_dictionaries(
    {
        "enabled": st.booleans(),
        "mode": st.sampled_from(["native", "keda", "hpa"]),
        "minReplicas": st.integers(0, 4),
        "maxReplicas": st.integers(1, 4),
        "replicas": st.integers(0, 5),
        "idle": st.one_of(st.none(), st.just(600)),
        "maxSurge": st.sampled_from([0, 1, "0%", "25%"]),
        "maxUnavailable": st.sampled_from([0, 1, "0%", "100%"]),
    }
)


@settings(max_examples=300, deadline=None)
@given(case=SCALING_CASES)
def test_scaling_rules_agree_with_pydantic(validate: Any, case: dict[str, Any]) -> None:
    autoscaling = {key: case[key] for key in ("enabled", "mode", "minReplicas", "maxReplicas")}
    if case["idle"] is not None:
        autoscaling["scaleToZeroIdleSeconds"] = case["idle"]
    body = _with_spec(
        replicas=case["replicas"],
        autoscaling=autoscaling,
        rollout={"maxSurge": case["maxSurge"], "maxUnavailable": case["maxUnavailable"]},
    )
    crd_ok, parse_ok = _verdicts(validate, body)
    assert crd_ok == parse_ok, (body["spec"], validate(body))


def test_env_from_a_secret_is_accepted(validate: Any) -> None:
    env = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
        {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"},
    ]
    assert validate(_with_spec(engine={"env": env})) == []
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
