"""Pod settings Kubernetes would refuse only at pod creation are refused on the resource."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.spec_cases import with_spec

from dsv4_operator.api import InvalidSpecError, parse_deployment


def _body(resources: Any = None, tolerations: Any = None) -> dict[str, Any]:
    body = with_spec() if resources is None else with_spec(resources=resources)
    if tolerations is not None:
        body["spec"]["gpu"]["tolerations"] = tolerations
    return body


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"requests": {"memory": "512Gi"}, "limits": {"memory": "256Gi"}},
         "limits.memory (256Gi) is below requests.memory (512Gi)"),
        ({"requests": {"cpu": "32"}, "limits": {"cpu": "31500m"}},
         "limits.cpu (31500m) is below requests.cpu (32)"),
        ({"requests": {"bogus": "1"}}, "'bogus' is not a standard resource"),
        ({"requests": {"example.com/nic": "1"}, "limits": {"example.com/nic": "2"}},
         "example.com/nic cannot be overcommitted"),
        ({"requests": {"rdma/hca": "1"}}, "rdma/hca cannot be overcommitted"),
        ({"requests": {"hugepages-2Mi": "1Gi"}}, "hugepages-2Mi cannot be overcommitted"),
        ({"requests": {"hugepages-2Mi": "1Gi"}, "limits": {"hugepages-2Mi": "2Gi"}},
         "hugepages-2Mi cannot be overcommitted"),
    ],
)  # fmt: skip
def test_resources_a_pod_cannot_have_are_refused(resources: Any, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.resources") as caught:
        parse_deployment(_body(resources=resources))
    assert message in str(caught.value)


def test_valid_resources_pass(validate: Any) -> None:
    resources = {
        "requests": {"cpu": "32", "memory": "512Gi", "hugepages-2Mi": "1Gi", "example.com/x": 1},
        "limits": {"memory": "600Gi", "hugepages-2Mi": "1Gi", "example.com/x": 1, "a.io/y": 2},
    }
    assert parse_deployment(_body(resources=resources)).spec.resources is not None
    assert validate(_body(resources=resources)) == []


def test_toleration_seconds_needs_no_execute(validate: Any) -> None:
    bad = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}]
    no_effect = [{"key": "gpu", "operator": "Exists", "tolerationSeconds": 60}]
    assert any(
        "tolerationSeconds needs effect NoExecute" in e
        for e in validate(_body(tolerations=no_effect))
    )
    with pytest.raises(InvalidSpecError, match="tolerationSeconds needs effect NoExecute"):
        parse_deployment(_body(tolerations=bad))
    assert any(
        "tolerationSeconds needs effect NoExecute" in e for e in validate(_body(tolerations=bad))
    )
    good = [{"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
    parse_deployment(_body(tolerations=good))
    assert validate(_body(tolerations=good)) == []


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.33.0",
        "nvcr.io/nvidia/vllm:25.09-py3",
        "localhost:5000/dsv4-runtime",
        "Registry.Example.com:443/team/dsv4_runtime:0.1.0@sha256:" + "a" * 64,
        "ghcr.io/org/repo.name/sub-path:TAG_1",
        "busybox",
    ],
)
def test_real_image_references_are_accepted(image: str, validate: Any) -> None:
    body = with_spec(engine={"image": image})
    assert parse_deployment(body).spec.engine.image == image
    assert validate(body) == []


def test_every_bad_label_and_annotation_key_is_named_in_one_error() -> None:
    """New-user trial (carried): a second bad key surfaced only after the first was fixed."""
    from dsv4_operator.api import InvalidSpecError, parse_spec

    labels = {"dsv4.io/deployment": "x", "x" * 64: "y", "team": "a"}
    annotations = {"leaderworkerset.sigs.k8s.io/size": "4", "Bad Key": "v"}
    spec = {
        "model": "flash",
        "gpu": {"types": ["h200-141gb"]},
        "pod": {"labels": labels, "annotations": annotations},
    }
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    text = str(caught.value)
    assert "'dsv4.io/deployment': the prefixes" in text
    assert "1 to 63 characters" in text
    assert "'leaderworkerset.sigs.k8s.io/size': the prefixes" in text
    assert "Bad Key" in text or "bad key" in text
