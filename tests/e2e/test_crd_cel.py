"""The CRDs on a CEL-capable API server: what the 1.20 test plane cannot check.

apiextensions-apiserver 1.36 (`cel_server`, test-cluster.md §2.7) runs the CRD code of a 1.36
kube-apiserver. Here:

- the generated DeepSeekV4Deployment CRD is installed exactly as generated, CEL rules included:
  the server compiles every rule and refuses the CRD if a rule's estimated cost is over its
  budget, which no offline check estimates;
- the upstream LWS, KEDA ScaledObject, ServiceMonitor and PodMonitor CRDs are installed
  untransformed (the 1.20 plane needs them rewritten, test-cluster.md §2.8);
- resources are written with strict field validation, as kubectl does, and the server's verdict
  is compared with the offline validator's (tests/operator/api/conftest.py) and the operator's
  pydantic parse, on the malformed cases and on generated parallelism and scaling specs;
- every rendered LeaderWorkerSet and ScaledObject, and the chart's ServiceMonitor, are accepted
  by the untransformed upstream CRDs.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.chart.chart_support import VALUES_DIR, one, template
from tests.chart.test_render import SERVICE_MONITOR_API
from tests.e2e.conftest import generated_crd_path
from tests.operator.api.conftest import CrdValidator
from tests.operator.api.test_malformed import CASES, Case
from tests.operator.render.conftest import LAYOUT_SPECS, example_cases
from tests.support.cel_server import Api, CelServer, Refusal
from tests.support.cluster import (
    REPO_ROOT,
    UPSTREAM_CRD_FILES,
    ControlPlane,
    load_upstream_crd,
    namespaced_crd,
)
from tests.support.spec_cases import (
    PARALLELISM_CASES,
    SCALING_CASES,
    parallelism_body,
    parse_accepts,
    scaling_body,
    with_spec,
)

from dsv4_operator.api import parse_deployment, parse_spec
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render import Owner, render_children

pytestmark = pytest.mark.e2e

Json = dict[str, Any]
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
DSV4_PLURAL = "deepseekv4deployments"
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
PLURALS = {"LeaderWorkerSet": "leaderworkersets", "ScaledObject": "scaledobjects"}


@pytest.fixture(scope="module")
def api(cel_server: CelServer) -> Iterator[Api]:
    """JSON access to the CEL server."""
    client = cel_server.api_client()
    try:
        yield Api(client)
    finally:
        client.close()


def _established(api: Api, plane: ControlPlane, name: str) -> Json:
    """The stored CRD `name` once the server reports it Established (30 s at most)."""
    stored: Json = {}

    def check() -> bool:
        nonlocal stored
        stored = api.request("GET", f"{CRD_PATH}/{name}")
        conditions = stored.get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    plane.wait_for(check, f"CRD {name} Established on the CEL server", interval=0.1)
    return stored


@pytest.fixture(scope="module")
def installed(api: Api, cel_server: CelServer) -> dict[str, tuple[Json, Json]]:
    """(as sent, as stored) by CRD name: the generated CRD and the four upstream CRDs, untouched."""
    path = generated_crd_path()
    if path is None:
        pytest.skip("no crds/*deepseekv4deployments*.yaml (run: make generate)")
    crds = [yaml.safe_load(path.read_text())]
    crds += [load_upstream_crd(file_name) for file_name in UPSTREAM_CRD_FILES]
    out = {}
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            api.request("POST", CRD_PATH, crd)
        except Refusal as refused:
            pytest.fail(
                f"the CEL server refused CRD {name}: {refused.text}\n{cel_server.log_tail()}"
            )
        out[name] = (crd, _established(api, cel_server.plane, name))
    return out


def _dsv4(installed: dict[str, tuple[Json, Json]]) -> tuple[Json, Json]:
    return next(pair for name, pair in installed.items() if name.startswith(DSV4_PLURAL))


def _rule_count(node: Any) -> int:
    if isinstance(node, dict):
        own = len(node.get("x-kubernetes-validations", []))
        return own + sum(_rule_count(v) for k, v in node.items() if k != "x-kubernetes-validations")
    if isinstance(node, list):
        return sum(_rule_count(v) for v in node)
    return 0


def test_generated_crd_is_established_with_every_cel_rule(
    installed: dict[str, tuple[Json, Json]],
) -> None:
    sent, stored = _dsv4(installed)
    # Creating the CRD compiled every rule and checked its estimated cost against the budget.
    assert _rule_count(sent) >= 15
    assert _rule_count(stored["spec"]) == _rule_count(sent)
    assert stored["spec"]["versions"] == sent["spec"]["versions"]
    conditions = {c["type"]: c for c in stored["status"]["conditions"]}
    assert "NonStructuralSchema" not in conditions
    assert conditions["NamesAccepted"]["status"] == "True"


def test_upstream_crds_install_untransformed(installed: dict[str, tuple[Json, Json]]) -> None:
    for name, (sent, stored) in installed.items():
        assert stored["spec"]["versions"] == sent["spec"]["versions"], name
    assert len(installed) == 1 + len(UPSTREAM_CRD_FILES)


def _named(body: Json, prefix: str) -> Json:
    out = copy.deepcopy(body)
    out["metadata"] = {"name": f"{prefix}-{secrets.token_hex(3)}", "namespace": "default"}
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_stored_and_server_defaults_match_the_parse(
    api: Api, installed: dict[str, tuple[Json, Json]], example: Any
) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    resources = [d for d in docs if d.get("kind") == "DeepSeekV4Deployment"]
    assert resources
    for doc in resources:
        body = _named(doc, "example")
        stored = api.create(body, DSV4_PLURAL)
        try:
            # The server's structural defaults and the pydantic defaults give the same spec.
            assert parse_spec(stored["spec"]) == parse_deployment(body).spec
            assert stored["spec"] != body["spec"], "expected the server to fill in defaults"
        finally:
            api.delete(stored, DSV4_PLURAL)


@pytest.fixture(scope="module")
def offline(installed: dict[str, tuple[Json, Json]]) -> CrdValidator:
    """The offline validator over the same generated CRD."""
    return CrdValidator(_dsv4(installed)[0])


def _verdict_as_is(api: Api, body: Json) -> Refusal | None:
    try:
        api.create(body, DSV4_PLURAL, dry_run=True)
    except Refusal as refused:
        return refused
    return None


def _verdict(api: Api, body: Json) -> Refusal | None:
    """The server's verdict on `body` under a fresh name (dry run: nothing is stored)."""
    return _verdict_as_is(api, _named(body, "case"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_case_gets_the_offline_verdict(
    api: Api, offline: CrdValidator, case: Case
) -> None:
    refused = _verdict(api, case.body())
    if case.crd is None:
        assert refused is None, refused and refused.text
        return
    assert refused is not None, "the CEL server accepted a resource the offline check refuses"
    # 422 Invalid; 400 BadRequest for strict decoding (an unknown field).
    assert refused.status in (400, 422), refused.text
    field = case.crd[0]
    assert field in refused.text, refused.text
    # Each CEL rule message the offline check reports reaches the user verbatim.
    messages = {entry["message"] for _, entry in offline.rules()}
    for error in offline.validate(case.body()):
        message = error.split(": ", 1)[1]
        if message in messages:
            assert message in refused.text, refused.text


@pytest.mark.parametrize("mode", ["native", "keda", "hpa"])
def test_autoscaled_manifest_without_replicas_is_accepted(api: Api, mode: str) -> None:
    # minReplicas 3, `replicas` left out (default 1): the scaler raises it; before, the server
    # refused it and manifests had to state a `replicas` that every GitOps sync reset.
    body = with_spec(
        autoscaling={"enabled": True, "mode": mode, "minReplicas": 3, "maxReplicas": 4}
    )
    assert "replicas" not in body["spec"]
    refused = _verdict(api, body)
    assert refused is None, refused.text
    assert parse_deployment(body).spec.replicas == 1


def test_model_is_immutable_on_the_server(
    api: Api, installed: dict[str, tuple[Json, Json]]
) -> None:
    stored = api.create(_named(with_spec(model="flash"), "immutable"), DSV4_PLURAL)
    try:
        switched = copy.deepcopy(stored)
        switched["spec"]["model"] = "pro"
        with pytest.raises(Refusal) as caught:
            api.replace(switched, DSV4_PLURAL)
        assert caught.value.status == 422
        assert "spec.model is immutable" in caught.value.text
        scaled = copy.deepcopy(stored)
        scaled["spec"]["replicas"] = 3
        assert api.replace(scaled, DSV4_PLURAL)["spec"]["replicas"] == 3
    finally:
        api.delete(stored, DSV4_PLURAL)


def test_queue_name_is_immutable_on_the_server(
    api: Api, installed: dict[str, tuple[Json, Json]]
) -> None:
    stored = api.create(_named(with_spec(), "queued"), DSV4_PLURAL)
    try:
        queued = copy.deepcopy(stored)
        queued["spec"]["placement"] = {"queueName": "inference"}
        with pytest.raises(Refusal) as caught:
            api.replace(queued, DSV4_PLURAL)
        assert caught.value.status == 422
        assert "spec.placement.queueName is immutable" in caught.value.text
        placed = copy.deepcopy(stored)
        placed["spec"]["placement"] = {"exclusiveTopologyKey": "example.com/rack"}
        stored = api.replace(placed, DSV4_PLURAL)
        assert stored["spec"]["placement"]["topologyPolicy"] == "Required"  # server default
    finally:
        api.delete(stored, DSV4_PLURAL)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [("a" * 50, True), ("a" * 51, False), ("v4.flash", False), ("4flash", False)],
)
def test_metadata_name_rules_on_the_server(
    api: Api, installed: dict[str, tuple[Json, Json]], name: str, accepted: bool
) -> None:
    body = with_spec()
    body["metadata"] = {"name": name, "namespace": "default"}
    refused = _verdict_as_is(api, body)
    if accepted:
        assert refused is None, refused and refused.text
    else:
        assert refused is not None, f"the server accepted metadata.name {name!r}"
        assert "metadata.name" in refused.text, refused.text


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(PARALLELISM_CASES.map(parallelism_body), SCALING_CASES.map(scaling_body)))
def test_layout_and_scaling_rules_on_the_server_agree_with_pydantic(
    api: Api, installed: dict[str, tuple[Json, Json]], body: Json
) -> None:
    refused = _verdict(api, body)
    assert (refused is None) == parse_accepts(body), (body["spec"], refused and refused.text)


def _children_cases() -> list[tuple[str, Any, Any]]:
    cases = [(case.id, case.spec, case.plan) for case in example_cases()]
    for case_id, (_, raw) in LAYOUT_SPECS.items():
        spec = parse_spec(raw)
        cases.append((case_id, spec, plan(request_from_spec(spec))))
    keda = [(f"{case_id}-keda", _in_keda_mode(spec), planned) for case_id, spec, planned in cases]
    return cases + keda


def _in_keda_mode(spec: DeepSeekV4DeploymentSpec) -> DeepSeekV4DeploymentSpec:
    """`spec` with autoscaling in mode keda, 1 to 3 replicas (renders a ScaledObject)."""
    auto = spec.autoscaling.model_copy(
        update={"enabled": True, "mode": "keda", "min_replicas": 1, "max_replicas": 3}
    )
    return spec.model_copy(update={"autoscaling": auto})


CHILDREN_CASES = _children_cases()


@pytest.mark.parametrize(
    ("spec", "planned"),
    [(spec, planned) for _, spec, planned in CHILDREN_CASES],
    ids=[case_id for case_id, _, _ in CHILDREN_CASES],
)
def test_rendered_children_pass_the_untransformed_upstream_crds(
    api: Api, installed: dict[str, tuple[Json, Json]], spec: Any, planned: Any
) -> None:
    assert planned.fits
    owner = Owner(name="cel-children", namespace="default", uid="0b6f-uid", generation=1)
    children = render_children(owner, spec, planned, image="dsv4-runtime:test")
    custom = [child for child in children if child["kind"] in PLURALS]
    assert "LeaderWorkerSet" in {child["kind"] for child in custom}
    for child in custom:
        try:
            api.create(child, PLURALS[child["kind"]], dry_run=True)
        except Refusal as refused:
            pytest.fail(f"{child['kind']} refused: {refused.text}\n{json.dumps(child)[:2000]}")


def test_scaled_object_cel_rule_is_enforced(
    api: Api, installed: dict[str, tuple[Json, Json]]
) -> None:
    # The control for the test above: the KEDA CRD's one CEL rule does run on this server.
    spec = _in_keda_mode(parse_spec(with_spec()["spec"]))
    owner = Owner(name="cel-keda", namespace="default", uid="0b6f-uid", generation=1)
    children = render_children(owner, spec, plan(request_from_spec(spec)), image="x:1")
    scaled = next(child for child in children if child["kind"] == "ScaledObject")
    scaled["spec"]["minReplicaCount"] = scaled["spec"]["maxReplicaCount"] + 1
    with pytest.raises(Refusal, match="minReplicaCount must be less than or equal"):
        api.create(scaled, PLURALS["ScaledObject"], dry_run=True)


def test_chart_monitors_pass_the_untransformed_crds(
    api: Api, installed: dict[str, tuple[Json, Json]]
) -> None:
    objects = template(
        values_files=[VALUES_DIR / "namespaced-ha.yaml"],
        api_versions=[SERVICE_MONITOR_API, "monitoring.coreos.com/v1/PodMonitor"],
    )
    monitor = one(objects, "ServiceMonitor")
    monitor["metadata"]["namespace"] = "default"
    stored = api.create(monitor, "servicemonitors", dry_run=True)
    assert stored["spec"]["endpoints"][0]["port"] == "metrics"
    engines = one(objects, "PodMonitor")
    engines["metadata"]["namespace"] = "default"
    stored = api.create(engines, "podmonitors", dry_run=True)
    assert stored["spec"]["podMetricsEndpoints"][0]["port"] == "admin"


def test_the_server_refuses_a_crd_whose_rule_costs_too_much(api: Api) -> None:
    # The control for the install tests above: this server does estimate rule costs. A rule
    # that compares every pair of 10,000 unbounded strings is over the per-rule budget.
    items = {"type": "array", "maxItems": 10000, "items": {"type": "string"}}
    rule = "self.names.all(a, self.names.all(b, a == b || a != b))"
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"names": items},
                "x-kubernetes-validations": [{"rule": rule}],
            }
        },
    }
    crd = namespaced_crd("cost.dsv4.io", "Costly", "costlies", schema)
    with pytest.raises(Refusal, match="cost") as caught:
        api.request("POST", CRD_PATH, crd)
    assert caught.value.status == 422


def _scale_bounds(node: Any, factor: int) -> None:
    """Multiply every maxItems, maxLength and maxProperties under `node` by `factor`."""
    if isinstance(node, dict):
        for key in ("maxItems", "maxLength", "maxProperties"):
            if key in node:
                node[key] *= factor
        for value in node.values():
            _scale_bounds(value, factor)
    elif isinstance(node, list):
        for value in node:
            _scale_bounds(value, factor)


def _install_copy(api: Api, crd: Json, scale: Callable[[Json], None]) -> Refusal | None:
    """Install `crd` under a throwaway group after `scale(openAPIV3Schema)`; delete it again."""
    copied = copy.deepcopy(crd)
    group = f"headroom{secrets.token_hex(3)}.dsv4.io"
    copied["spec"]["group"] = group
    copied["metadata"] = {"name": f"{copied['spec']['names']['plural']}.{group}"}
    scale(copied["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    try:
        api.request("POST", CRD_PATH, copied)
    except Refusal as refused:
        return refused
    api.request("DELETE", f"{CRD_PATH}/{copied['metadata']['name']}")
    return None


def test_every_rule_has_cost_headroom(api: Api, installed: dict[str, tuple[Json, Json]]) -> None:
    # Older API servers estimate costs differently; keep every rule well inside the budget.
    # With every list, string and map bound x8, rules iterating two lists cost >= 64x more.
    sent, _ = _dsv4(installed)
    refused = _install_copy(api, sent, lambda schema: _scale_bounds(schema, 8))
    assert refused is None, refused and refused.text


def test_extra_args_rule_has_cost_headroom(
    api: Api, installed: dict[str, tuple[Json, Json]]
) -> None:
    # engine._OWNED_CEL's claim: the owned-flags rule costs under 1/32 of its budget.
    sent, _ = _dsv4(installed)

    def scale(schema: Json) -> None:
        _scale_bounds(
            schema["properties"]["spec"]["properties"]["engine"]["properties"]["extraArgs"], 32
        )

    refused = _install_copy(api, sent, scale)
    assert refused is None, refused and refused.text


def test_cel_server_is_a_recent_kubernetes(api: Api) -> None:
    # hack/cluster.sh stamps the Kubernetes version its Go library packages were released with.
    version = api.request("GET", "/version")
    assert version["major"] == "1"
    assert int(version["minor"]) >= 30, version
    assert version["gitVersion"].startswith(f"v1.{version['minor']}."), version
