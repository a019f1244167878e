"""Specs and plans for the rendering tests: every example that fits; 1-, 2-, 3-node layouts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsv4_operator.api import parse_deployment, parse_spec
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan, plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render import Owner

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))

LAYOUT_SPECS: dict[str, tuple[int, dict[str, Any]]] = {
    "1-node": (
        1,
        {"model": "flash", "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 1}},
    ),
    "2-node": (
        2,
        {
            "model": "pro",
            "maxModelLen": 65536,
            "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "maxNodes": 2},
            "parallelism": {"tensor": 8, "data": 2, "pipeline": 1},
            "replicas": 2,
            "rollout": {"maxSurge": 1, "maxUnavailable": 0},
        },
    ),
    "3-node": (
        3,
        {
            "model": "pro",
            "maxModelLen": 1048576,
            "gpu": {
                "types": ["h100-80gb"],
                "gpusPerNode": 8,
                "maxNodes": 3,
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            },
            "modelSource": {"pvc": {"claimName": "weights", "path": "/DeepSeek-V4-Pro"}},
            "resources": {"requests": {"cpu": "64", "memory": "512Gi"}},
            "pod": {
                "imagePullSecrets": ["regcred"],
                "priorityClassName": "inference-high",
                "runtimeClassName": "nvidia",
                "schedulerName": "volcano",
                "serviceAccountName": "weights-reader",
                "labels": {"team": "llm", "example.com/cost-center": "42"},
                "annotations": {"sidecar.istio.io/inject": "false"},
            },
        },
    ),
}


@dataclass(frozen=True)
class Case:
    """One spec, its plan, and the owner the children are rendered for."""

    id: str
    spec: DeepSeekV4DeploymentSpec
    plan: Plan
    owner: Owner


def _owner(name: str) -> Owner:
    return Owner(name=name, namespace="inference", uid="0b6f-uid", generation=3)


def example_cases() -> list[Case]:
    """Every example that fits (the lead tunes them; those that do not fit are not rendered)."""
    cases = []
    for path in EXAMPLES:
        body = yaml.safe_load(path.read_text())
        spec = parse_deployment(body).spec
        planned = plan(request_from_spec(spec))
        if planned.fits:
            cases.append(Case(path.stem, spec, planned, _owner(body["metadata"]["name"])))
    return cases


def layout_cases() -> list[Case]:
    """Specs whose plans span exactly 1, 2 and 3 nodes per replica."""
    cases = []
    for key, (nodes, raw) in LAYOUT_SPECS.items():
        spec = parse_spec(raw)
        planned = plan(request_from_spec(spec))
        assert planned.fits, key
        assert planned.chosen.layout.nodes == nodes, key
        cases.append(Case(key, spec, planned, _owner(f"dsv4-{key}")))
    return cases


ALL_CASES = example_cases() + layout_cases()


@pytest.fixture(params=ALL_CASES, ids=[c.id for c in ALL_CASES])
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = request.param
    return found


@pytest.fixture(scope="session")
def lws_crd(fixtures_dir: Path) -> dict[str, Any]:
    """The upstream LeaderWorkerSet CRD from `$DSV4_FIXTURES/crds/`, untransformed (parsed once)."""
    path = fixtures_dir / "crds" / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    return loaded


@pytest.fixture(scope="session")
def lws_schema(lws_crd: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the CRD's v1 version."""
    (version,) = [v for v in lws_crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema
