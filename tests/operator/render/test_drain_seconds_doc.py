"""`spec.rollout.drainSeconds`' description states the pods' terminationGracePeriodSeconds.

96b0b79 added the route settle time to the grace of multi-node groups (40 s more), but the
field's description (CRD, `kubectl explain`) still said "this plus 25 s" for every pod, and
that a stopping group holds its GPUs "up to this long" (drainSeconds), short of the grace.
"""

import re

from dsv4_operator import crdgen
from dsv4_operator.api import parse_spec
from dsv4_operator.render.runtime_args import termination_grace


def _description() -> str:
    crd = crdgen.crd_dict()
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rollout = schema["properties"]["spec"]["properties"]["rollout"]
    return " ".join(str(rollout["properties"]["drainSeconds"]["description"]).split())


def test_the_description_gives_the_grace_of_single_and_multi_node_groups() -> None:
    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}})
    drain = spec.rollout.drain_seconds
    single = termination_grace(spec, 1) - drain
    multi = termination_grace(spec, 2) - drain
    assert single != multi  # the two differ, so the description must give both
    text = _description()
    offsets = {int(n) for n in re.findall(r"plus (\d+) s", text)}
    assert offsets == {single, multi}, text
    assert "up to this long" not in text, text
