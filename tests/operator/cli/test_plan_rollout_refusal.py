"""`dsv4 plan FILE` refuses what the operator refuses once it has the plan (h38 B).

The operator reports `InvalidSpec` after planning for a group that `spec.placement` can never
schedule, worker StatefulSet names too long for their pods, and a download larger than the
ephemeral-storage limit (`render.refusal.rollout_refusal`). `dsv4 plan FILE` printed `fits`
(exit 0) for such manifests, although the README presents it as the check before applying.
"""

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from dsv4_operator.cli import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def _manifest(tmp_path: Path, change: dict[str, Any], name: str | None = None) -> Path:
    body = yaml.safe_load((ROOT / "examples" / "pro-1m-h100.yaml").read_text())
    body["spec"] |= change
    if name is not None:
        body["metadata"]["name"] = name
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_the_example_itself_fits_on_several_nodes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(_manifest(tmp_path, {})), "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layout"]["nodes"] > 1


def test_a_placement_that_cannot_hold_the_group_exits_2(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"placement": {"exclusiveTopologyKey": "kubernetes.io/hostname"}})
    result = runner.invoke(app, ["plan", str(path), "--output", "json"])
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "file"
    assert "spec.placement.exclusiveTopologyKey kubernetes.io/hostname" in error["message"]
    assert "spans 3 nodes" in error["message"]
    assert "spans 3 nodes" in result.stderr


def test_worker_names_too_long_for_their_pods_exit_2(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"replicas": 12}, name="a" * 50)
    result = runner.invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    assert "metadata.name" in result.stderr
    assert "would get no pods" in result.stderr
