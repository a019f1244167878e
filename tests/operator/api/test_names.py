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
    check_name_for_groups,
    crd_manifest,
    parse_deployment,
)
from dsv4_operator.api.names import STATEFULSET_NAME_MAX_LENGTH

GOOD = ["a", "flash", "pro-1m-h100", "a" * 50, "v4-2"]
BAD = [
    ("1flash", "not a DNS-1035 label"),
    ("flash.prod", "not a DNS-1035 label"),
    ("Flash", "not a DNS-1035 label"),
    ("flash-", "not a DNS-1035 label"),
    ("a" * 51, "51 characters, more than 50"),
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


@pytest.mark.parametrize(
    ("length", "groups", "fits"),
    [(50, 10, True), (50, 11, False), (49, 100, True), (49, 101, False), (48, 1000, True),
     (48, 1001, False)],
)  # fmt: skip
def test_the_exact_bound_depends_on_the_groups(length: int, groups: int, fits: bool) -> None:
    # The worker StatefulSet of the last group, '<name>-<groups - 1>', must fit 52 characters.
    name = "a" * length
    assert (len(f"{name}-{groups - 1}") <= STATEFULSET_NAME_MAX_LENGTH) is fits
    if fits:
        check_name_for_groups(name, groups)
    else:
        with pytest.raises(InvalidSpecError, match=r"metadata\.name: .* more than 52"):
            check_name_for_groups(name, groups)


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
