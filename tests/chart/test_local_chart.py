"""The chart copy the README installs on the local 1.20 control plane (`local-chart DIR`).

The chart itself needs Kubernetes 1.25 (its CRD's CEL rules, Chart.yaml `kubeVersion`), so the
README's "Install with Helm" stops on the local plane. `python -m tests.support.operator_e2e
local-chart DIR` writes the copy the e2e tests install there: the same chart with the CEL rules
dropped from its CRD and a `kubeVersion` that 1.20 meets. These tests run that command as the
README does and render the copy for Kubernetes 1.20.2 with the real helm binary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tests.chart.chart_support import CHART_DIR, CRD_FILE, helm, helm_path
from tests.support.cluster import REPO_ROOT

KUBE = "v1.20.2"
"""The local control plane's kube-apiserver (hack/cluster.sh K8S_VERSION)."""


def _has_cel(node: Any) -> bool:
    if isinstance(node, dict):
        return "x-kubernetes-validations" in node or any(_has_cel(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_cel(v) for v in node)
    return False


def _local_chart(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.operator_e2e", "local-chart", str(dest)],
        cwd=REPO_ROOT,
        text=True,
        capture_output=True,
        check=False,
    )


def test_local_chart_renders_for_the_local_control_plane(tmp_path: Path) -> None:
    helm_path()  # skips, naming the binary, when helm is not built
    # The chart as shipped refuses 1.20 (the README's reason for the copy).
    refused = helm("template", "dsv4", str(CHART_DIR), "--kube-version", KUBE, check=False)
    assert refused.returncode != 0
    assert "kubeVersion" in refused.stderr

    done = _local_chart(tmp_path)
    assert done.returncode == 0, done.stderr
    copy = tmp_path / CHART_DIR.name
    assert str(copy) in done.stdout  # says where the chart to install is

    crd = yaml.safe_load((copy / "crds" / CRD_FILE.name).read_text(encoding="utf-8"))
    assert not _has_cel(crd)
    assert _has_cel(yaml.safe_load(CRD_FILE.read_text(encoding="utf-8")))  # the source has some
    # Everything else is the chart's own: same schema otherwise, same templates and values.
    original = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(props["properties"]) == set(
        original["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "properties"
        ]
    )
    for part in ("values.yaml", "values.schema.json", "templates/deployment.yaml"):
        assert (copy / part).read_bytes() == (CHART_DIR / part).read_bytes(), part

    out = helm(
        "template", "dsv4", str(copy), "-n", "dsv4-system", "--kube-version", KUBE, "--include-crds"
    ).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole"} <= kinds


def test_local_chart_refuses_an_existing_copy_and_a_missing_argument(tmp_path: Path) -> None:
    assert _local_chart(tmp_path).returncode == 0
    again = _local_chart(tmp_path)
    assert again.returncode != 0
    assert "exists" in again.stderr

    usage = subprocess.run(
        [sys.executable, "-m", "tests.support.operator_e2e", "local-chart"],
        cwd=REPO_ROOT,
        text=True,
        capture_output=True,
        check=False,
    )
    assert usage.returncode == 2
    assert "local-chart DIR" in usage.stderr
