"""The operator stops rather than write through an older CRD (which would delete fields).

An older CRD applied over this operator's (another Helm release of an older chart, a revert)
makes the API server hide the fields it lacks from every DeepSeekV4Deployment, and delete them
for good at the next write of each object, which the operator makes on every reconcile. So
`dsv4 operator run` refuses to start on such a CRD, and stops (exit 1) when one is applied
while it runs; the object keeps the field once the right CRD is back.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import REPO_ROOT, ControlPlane, InstalledCrd
from tests.support.operator_e2e import Cluster, operator_env, operator_process, wait_until

from dsv4_operator.api import parse_deployment
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec

pytestmark = pytest.mark.e2e

DROPPED = "cost"
"""The spec property the "older" CRD lacks here."""


def _apply_crd(plane: ControlPlane, crd: dict[str, Any]) -> None:
    """Apply `crd`; wait until it is established and the server's OpenAPI (which kubectl
    validates objects against, and which the API server updates a little later) agrees on
    whether it has `spec.cost`, so later tests' `kubectl apply` see the CRD they expect."""
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager", "dsv4-e2e"]
    plane.kubectl(*args, "-f", "-", stdin=json.dumps(crd))
    plane.wait_crd_established(crd["metadata"]["name"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    has = DROPPED in spec["properties"]
    explain = ["explain", f"deepseekv4deployments.spec.{DROPPED}"]
    wait_until(
        lambda: (plane.kubectl(*explain, check=False).returncode == 0) == has,
        f"the served OpenAPI {'with' if has else 'without'} spec.{DROPPED}",
        60,
    )


def _older(installed: dict[str, Any]) -> dict[str, Any]:
    crd = copy.deepcopy(installed)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"][DROPPED]
    return crd


def _priced_example() -> dict[str, Any]:
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        body: dict[str, Any] = yaml.safe_load(path.read_text())
        if DROPPED in body["spec"] and plan(request_from_spec(parse_deployment(body).spec)).fits:
            return body
    pytest.fail(f"no fitting example sets spec.{DROPPED}")


@pytest.fixture
def cluster(kube_api: Any) -> Cluster:
    return Cluster(kube_api)


@pytest.fixture
def env(control_plane: ControlPlane, upstream_crds: object, dsv4_crd: object) -> dict[str, str]:
    return operator_env(control_plane.kubeconfig, metrics_port=0, runtime_image="e2e")


def _exit_code(proc: Any, within: float) -> int:
    deadline = time.monotonic() + within
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    code = proc.poll()
    assert code is not None, f"the operator still runs after {within} s"
    return int(code)


def test_the_operator_does_not_start_on_an_older_crd(
    control_plane: ControlPlane,
    dsv4_crd: InstalledCrd,
    env: dict[str, str],
    namespace: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    _apply_crd(control_plane, _older(dsv4_crd.installed))
    try:
        with operator_process(env, "--namespace", namespace, log=log) as proc:
            assert _exit_code(proc, 90) == 1
        text = log.read_text()
        assert f"lacks what this operator's has: spec.{DROPPED} (v1alpha1)" in text
        assert "Apply this operator's CRD" in text
    finally:
        _apply_crd(control_plane, dsv4_crd.installed)


def test_the_operator_stops_when_an_older_crd_lands_and_the_field_survives(
    control_plane: ControlPlane,
    dsv4_crd: InstalledCrd,
    env: dict[str, str],
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
) -> None:
    body = _priced_example()
    name = body["metadata"]["name"]
    log = tmp_path / "operator.log"
    try:
        with operator_process(env, "--namespace", namespace, log=log) as proc:
            control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(body))
            cluster.wait_condition(namespace, name, "Planned", "True", timeout=60)
            before = cluster.dsv4(namespace, name)
            assert before is not None
            assert before["spec"][DROPPED] == body["spec"][DROPPED]
            _apply_crd(control_plane, _older(dsv4_crd.installed))
            assert _exit_code(proc, 30) == 1
        assert "stopping: the served CustomResourceDefinition" in log.read_text()
        assert f"spec.{DROPPED} (v1alpha1)" in log.read_text()
    finally:
        _apply_crd(control_plane, dsv4_crd.installed)
    after = wait_until(lambda: cluster.dsv4(namespace, name), "the resource", 10)
    assert after["spec"][DROPPED] == body["spec"][DROPPED]
