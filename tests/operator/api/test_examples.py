"""Every file in examples/ is a valid DeepSeekV4Deployment for the CRD and the operator's parse."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from dsv4_operator.api import parse_deployment

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
REQUIRED = {
    "flash-4x-h100",
    "pro-1m-h100",
    "pro-8x-h200",
    "flash-int4-8x-rtx5090",
    "flash-autoscaled",
}
FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_required_examples_exist() -> None:
    assert {path.stem for path in FILES} >= REQUIRED


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_example_is_accepted_by_the_crd_and_the_parse(path: Path, validate: Any) -> None:
    body = yaml.safe_load(path.read_text())
    assert body["metadata"]["name"] == path.stem
    assert validate(body) == []
    deployment = parse_deployment(body)
    assert deployment.api_version == "dsv4.io/v1alpha1"
    assert deployment.kind == "DeepSeekV4Deployment"


def _spec(name: str) -> Any:
    return parse_deployment(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())).spec


def test_examples_say_what_their_names_say() -> None:
    flash = _spec("flash-4x-h100")
    assert (flash.model, flash.gpu.types, flash.gpu.gpus_per_node) == ("flash", ("h100-80gb",), 4)
    pro_1m = _spec("pro-1m-h100")
    assert (pro_1m.model, pro_1m.max_model_len) == ("pro", 1_048_576)
    assert (pro_1m.gpu.types, pro_1m.gpu.gpus_per_node, pro_1m.gpu.max_nodes) == (
        ("h100-80gb",),
        8,
        3,
    )
    pro_h200 = _spec("pro-8x-h200")
    assert (pro_h200.gpu.types, pro_h200.gpu.gpus_per_node, pro_h200.gpu.max_nodes) == (
        ("h200-141gb",),
        8,
        1,
    )
    int4 = _spec("flash-int4-8x-rtx5090")
    assert (int4.weights_format, int4.gpu.types, int4.gpu.gpus_per_node) == (
        "int4",
        ("rtx-5090-32gb",),
        8,
    )
    assert isinstance(int4.max_model_len, int)
    assert int4.max_model_len < 1_048_576
    scaled = _spec("flash-autoscaled")
    assert scaled.autoscaling.enabled
    assert scaled.autoscaling.min_replicas < scaled.autoscaling.max_replicas
