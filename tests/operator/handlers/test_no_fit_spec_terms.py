"""InsufficientCapacity (condition and Event) names settings as spec fields, not CLI options.

`no_fit_message` words the closest layout's problems with `spec_words`; a problem whose
sentence writes a setting's CLI name as plain text reaches the resource as `max-num-seqs` or
`max-model-len auto`, options a DeepSeekV4Deployment does not have. `dsv4 plan` keeps its text.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dsv4_operator.api import parse_spec
from dsv4_operator.handlers.announcements import no_fit_message
from dsv4_operator.planning import plan
from dsv4_operator.planning.findings import Code
from dsv4_operator.planning.from_spec import request_from_spec

_BASE: dict[str, Any] = {"model": "flash", "gpu": {"types": ["h100-80gb"], "maxNodes": 1}}
_CLI = re.compile(r"(?<![\w.-])(max-model-len|max-num-seqs|max-num-batched-tokens)\b")


@pytest.mark.parametrize(
    ("spec", "code", "said", "cli"),
    [
        (
            {**_BASE, "maxNumSeqs": 600, "maxNumBatchedTokens": 512},
            Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS,
            "spec.maxNumSeqs 600 exceeds spec.maxNumBatchedTokens 512",
            "max-num-seqs 600 exceeds max-num-batched-tokens 512: vLLM refuses to start",
        ),
        (  # h18: the batch was "spec.maxNumBatchedTokens 1,024", a value no spec field takes
            {**_BASE, "maxNumSeqs": 2048, "maxNumBatchedTokens": 1024},
            Code.MAX_NUM_SEQS_EXCEEDS_BATCHED_TOKENS,
            "spec.maxNumSeqs 2048 exceeds spec.maxNumBatchedTokens 1024: vLLM refuses to start",
            "max-num-seqs 2048 exceeds max-num-batched-tokens 1,024: vLLM refuses to start",
        ),
        (
            {**_BASE, "maxNumSeqs": 1024, "load": {"concurrency": 1024}},
            Code.CONTEXT_TOO_SHORT,
            "minimum for spec.maxModelLen auto",
            "minimum for max-model-len auto",
        ),
    ],
)
def test_insufficient_capacity_says_spec_fields(
    spec: dict[str, Any], code: Code, said: str, cli: str
) -> None:
    p = plan(request_from_spec(parse_spec(spec)))
    assert not p.fits
    assert p.chosen.problems[0].code is code
    message = no_fit_message(p)
    assert said in message
    assert not _CLI.findall(message), message
    assert cli in p.chosen.problems[0].message  # dsv4 plan's text is unchanged


def test_a_pinned_max_num_seqs_under_the_concurrency_target_says_spec_max_num_seqs() -> None:
    spec = {
        "model": "flash",
        "gpu": {"types": ["h200-141gb"], "maxNodes": 1},
        "maxNumSeqs": 4,
        "load": {"concurrency": 100},
    }
    p = plan(request_from_spec(parse_spec(spec)))
    assert not p.fits
    found = next(f for f in p.chosen.problems if f.code is Code.CONCURRENCY_EXCEEDS_MAX_NUM_SEQS)
    assert found.message.startswith("max-num-seqs 4 x 1 DP ranks = 4 concurrent requests")
    message = no_fit_message(p)
    assert "spec.maxNumSeqs 4 x 1 DP ranks = 4 concurrent requests" in message
    assert not _CLI.findall(message), message
