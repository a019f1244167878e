"""Fixtures for the e2e tests: a real control plane on loopback, started once per session.

- `control_plane` (session): etcd + kube-apiserver + kube-controller-manager from
  `$DSV4_CACHE/bin` (built by `make cluster` = `hack/cluster.sh build`), on free ports, with
  kubectl and helm helpers. Skips, naming the missing binary, when the binaries are absent
  (tests/conftest.py turns that skip into a failure when DSV4_REQUIRE_E2E=1, as in CI).
- `namespace` (function): a fresh namespace, deleted afterwards.
- `kube_api` (function): a `kubernetes.client.ApiClient` for the plane.
- `kubelet` (function): the test-only `KubeletStandIn` (binds Pending pods, reports them Ready).
- `upstream_crds` (session): the LeaderWorkerSet, KEDA ScaledObject, ServiceMonitor and PodMonitor
  CRDs from `$DSV4_FIXTURES/crds/`, transformed at test time for the 1.20 server and installed.
- `dsv4_crd` (session): the generated DeepSeekV4Deployment CRD from `crds/`, installed.
- `cel_server` (session): apiextensions-apiserver 1.36 beside the plane, which enforces CEL rules
  (test-cluster.md §2.7); skips naming the missing binary or why its build failed.

Every test that uses these fixtures must be marked `@pytest.mark.e2e`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cel_server import CelServer, cel_server_unavailable
from tests.support.cluster import (
    REPO_ROOT,
    UPSTREAM_CRD_FILES,
    ControlPlane,
    InstalledCrd,
    KubeletStandIn,
    TransformReport,
    load_upstream_crd,
    missing_binaries,
    transform_crd_for_1_20,
)

_FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the control plane's startup time and memory, when it ran."""
    figures = config.stash.get(_FIGURES, [])
    if figures:
        terminalreporter.section("local control plane")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ControlPlane]:
    """A running control plane (etcd + kube-apiserver + kube-controller-manager) per session."""
    if missing := missing_binaries():
        pytest.skip(f"control-plane binaries missing: {', '.join(missing)} (run: make cluster)")
    plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        rss = plane.rss_bytes()
        mib = ", ".join(f"{name} {b / 2**20:.0f} MiB" for name, b in sorted(rss.items()))
        pytestconfig.stash[_FIGURES].append(
            f"started in {plane.startup_seconds:.1f} s on 127.0.0.1:{plane.port}; "
            f"RSS at teardown: {mib}"
        )
        plane.stop()


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")
    slug = slug.removeprefix("test-")[:40].strip("-")
    return f"e2e-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (without waiting) afterwards."""
    name = _namespace_name(request.node.name)
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kube_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` for the control plane, closed after the test."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kubelet(control_plane: ControlPlane) -> Iterator[KubeletStandIn]:
    """TEST-ONLY kubelet stand-in: `add_node(...)`, then `run_pending(namespace)`."""
    standin = KubeletStandIn(control_plane)
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture(scope="session")
def upstream_crds(control_plane: ControlPlane) -> dict[str, TransformReport]:
    """Install the upstream LWS, ScaledObject, ServiceMonitor and PodMonitor CRDs (transformed).

    Returns the transformation report by CRD name (`leaderworkersets.leaderworkerset.x-k8s.io`,
    ...). The transformed copies live only in memory (test-cluster.md §2.8).
    """
    reports: dict[str, TransformReport] = {}
    crds = []
    for file_name in UPSTREAM_CRD_FILES:
        crd, report = transform_crd_for_1_20(load_upstream_crd(file_name))
        reports[crd["metadata"]["name"]] = report
        crds.append(crd)
    control_plane.apply(*crds)
    control_plane.wait_crd_established(*reports)
    return reports


def generated_crd_path() -> Path | None:
    """The generated DeepSeekV4Deployment CRD in `crds/` (None when not generated yet)."""
    found = sorted((REPO_ROOT / "crds").glob("*deepseekv4deployments*.yaml"))
    return found[0] if found else None


@pytest.fixture(scope="session")
def dsv4_crd(control_plane: ControlPlane) -> InstalledCrd:
    """Install the generated DeepSeekV4Deployment CRD from `crds/` (minus CEL, see InstalledCrd)."""
    path = generated_crd_path()
    if path is None:
        pytest.skip("no crds/*deepseekv4deployments*.yaml (run: make generate)")
    generated = yaml.safe_load(path.read_text())
    installed, report = transform_crd_for_1_20(
        generated, drop_empty_defaults=False, atomic_list_maps=False
    )
    name = str(generated["metadata"]["name"])
    control_plane.apply(installed)
    control_plane.wait_crd_established(name)
    return InstalledCrd(name, path, generated, installed, report.validations_dropped)


@pytest.fixture(scope="session")
def cel_server(control_plane: ControlPlane) -> CelServer:
    """The CEL-capable CRD server, started beside the plane (stopped with it)."""
    if reason := cel_server_unavailable():
        pytest.skip(reason)
    return CelServer.start(control_plane)
