"""Shared code of the chart tests: the real helm 4 binary, rendering, chart copies.

helm comes from `$DSV4_CACHE/bin` (hack/cluster.sh build, `make cluster`; test-cluster.md §5).
Tests that need it skip, naming the missing binary, when it is absent.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.cluster import REPO_ROOT, bin_dir, fixtures_dir

CHART_DIR = REPO_ROOT / "charts" / "dsv4-operator"
VALUES_DIR = Path(__file__).resolve().parent / "values"
CRD_FILE = CHART_DIR / "crds" / "dsv4.io_deepseekv4deployments.yaml"

Json = dict[str, Any]
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's loader when PyYAML has it (the CRD is 54 kB: ~10x faster than pure Python)."""


def helm_path() -> Path:
    """The helm binary; skips the calling test (naming the path) when it is missing."""
    path = bin_dir() / "helm"
    if not path.is_file():
        pytest.skip(f"helm binary missing: {path} (run: make cluster)")
    return path


def helm(*args: str, check: bool = True, env: Mapping[str, str] | None = None) -> Any:
    """Run `helm ARGS...` and return the CompletedProcess (text); raise on failure if `check`.

    Raises:
        AssertionError: helm exited non-zero while `check` is true (message holds stderr).
    """
    proc = subprocess.run(
        [str(helm_path()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=None if env is None else dict(env),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} -> rc {proc.returncode}\n{proc.stderr}")
    return proc


def template(
    *,
    chart: Path = CHART_DIR,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    api_versions: Sequence[str] = (),
    namespace: str = "dsv4-system",
    release: str = "dsv4",
    is_upgrade: bool = False,
    include_crds: bool = False,
) -> list[Json]:
    """`helm template` the chart and return every rendered object (hooks included)."""
    args = ["template", release, str(chart), "--namespace", namespace]
    for path in values_files:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    for version in api_versions:
        args += ["--api-versions", version]
    if is_upgrade:
        args.append("--is-upgrade")
    if include_crds:
        args.append("--include-crds")
    out = helm(*args).stdout
    return [doc for doc in yaml.load_all(out, Loader=_LOADER) if doc]


def by_kind(objects: Sequence[Json], kind: str) -> list[Json]:
    """The objects of one kind, in render order."""
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[Json], kind: str) -> Json:
    """The single object of `kind` (asserts there is exactly one)."""
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def load_crd_file(path: Path = CRD_FILE) -> Json:
    """The chart's generated CRD as a dict."""
    doc: Json = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    return doc


def copy_chart(
    dest: Path,
    *,
    version: str | None = None,
    app_version: str | None = None,
    crd: Callable[[Json], Json] | None = None,
    kube_version: str | None = None,
) -> Path:
    """Copy the chart to `dest/dsv4-operator`, optionally changing its versions and its CRD.

    Args:
        dest: a folder (created if missing).
        version: new Chart.yaml `version`.
        app_version: new Chart.yaml `appVersion`.
        crd: function from the generated CRD to the one the copy's `crds/` should hold.
        kube_version: new Chart.yaml `kubeVersion` (the 1.20 test server with a CRD adapted
            to it, without CEL rules).

    Returns:
        The copy's folder.
    """
    target = dest / CHART_DIR.name
    shutil.copytree(CHART_DIR, target)
    chart_yaml = target / "Chart.yaml"
    meta = yaml.safe_load(chart_yaml.read_text(encoding="utf-8"))
    if version is not None:
        meta["version"] = version
    if app_version is not None:
        meta["appVersion"] = app_version
    if kube_version is not None:
        meta["kubeVersion"] = kube_version
    chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    if crd is not None:
        new = crd(copy.deepcopy(load_crd_file()))
        (target / "crds" / CRD_FILE.name).write_text(
            yaml.safe_dump(new, sort_keys=False), encoding="utf-8"
        )
    return target


def upstream_crd(file_name: str) -> Json:
    """An upstream CRD from `$DSV4_FIXTURES/crds/` (skips, naming the path, when absent)."""
    path = fixtures_dir() / "crds" / file_name
    if not path.is_file():
        pytest.skip(f"fixture missing: {path}")
    doc: Json = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc
