"""`metadata.name`: a DNS-1035 label of at most 47 characters, in parse_deployment and the CRD."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dsv4_operator.api import (
    DEEPSEEK_V4_DEPLOYMENT,
    NAME_MAX_LENGTH,
    NAME_PATTERN,
    InvalidSpecError,
    check_name,
    crd_manifest,
    parse_deployment,
)

GOOD = ["a", "flash", "pro-1m-h100", "a" * 47, "v4-2"]
BAD = [
    ("1flash", "not a DNS-1035 label"),
    ("flash.prod", "not a DNS-1035 label"),
    ("Flash", "not a DNS-1035 label"),
    ("flash-", "not a DNS-1035 label"),
    ("a" * 48, "48 characters, more than 47"),
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(("name", "fragment"), BAD)
def test_bad_names_name_the_field_and_the_rule(name: str, fragment: str) -> None:
    with pytest.raises(InvalidSpecError) as raised:
        check_name(name)
    assert str(raised.value).startswith("metadata.name: ")
    assert fragment in str(raised.value)


def test_worker_statefulset_names_stay_within_52_characters() -> None:
    # LWS names each group's worker StatefulSet '<name>-<index>'; with up to 1,000 replicas
    # and as many surge groups the index stays below 2,000.
    longest = "a" * NAME_MAX_LENGTH + "-1999"
    assert len(longest) == 52


def test_parse_deployment_checks_the_name() -> None:
    body: dict[str, Any] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "2flash"},
        "spec": {"model": "flash", "gpu": {"types": ["h100-80gb"]}},
    }
    with pytest.raises(InvalidSpecError, match=r"metadata\.name: '2flash' is not a DNS-1035"):
        parse_deployment(body)
    body["metadata"] = {"name": "flash"}
    assert parse_deployment(body).metadata["name"] == "flash"
    body["metadata"] = {}  # a file without a name (dsv4 plan) is fine
    parse_deployment(body)


def test_the_crd_carries_the_same_rule() -> None:
    schema = crd_manifest(DEEPSEEK_V4_DEPLOYMENT)["spec"]["versions"][0]["schema"]
    name = schema["openAPIV3Schema"]["properties"]["metadata"]["properties"]["name"]
    assert (name["type"], name["maxLength"], name["pattern"]) == (
        "string",
        NAME_MAX_LENGTH,
        NAME_PATTERN,
    )
    # The server matches the pattern anywhere unless anchored; ours is anchored.
    for good in GOOD:
        assert re.search(name["pattern"], good)
    for bad, _ in BAD[:4]:
        assert not re.search(name["pattern"], bad)
