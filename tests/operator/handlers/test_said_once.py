"""Events and status said once per change: posted once, again when what they say changes, again
after the condition cleared, and forgotten with the resource.

Pins the reconciler's memos (the `ReconcileError` Event of a failure status cannot show, the
transient roll-out failure that makes a lasting wait) and the native autoscaler's lasting
Warnings (`DrainFailed`, `WakeUpQueryFailed`, `ScalingLimited`, `LeaderUnreachable`) on the paths
the older tests did not cover.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
import tests.operator.handlers.test_autoscaler as auto
from tests.operator.handlers.test_reconciler import (
    CR_PATH,
    SECRET_PATH,
    Events,
    _conditions,
    _secret,
    _setup,
)
from tests.operator.kube.fake_api import FakeApi

from dsv4_operator.handlers.autoscaler import Autoscaler
from dsv4_operator.kube import ApiError

STATUS_403 = ("PATCH", "/status", 403)


def _refuse_status(fake: Any, message: str) -> None:
    """Refuse every status write with 403 `message` (each reconcile tries two: its own status,
    then the ReconcileError report) until `fake.fail` is cleared."""
    fake.fail = [STATUS_403] * 20
    fake.fail_message = message


def test_a_reconcile_error_is_posted_again_when_its_message_changes_or_it_recurs() -> None:
    """A failure status cannot show (403 on the status subresource) is one `ReconcileError`
    Event per message: a new message is posted, and so is the same one after a reconcile that
    ended otherwise."""
    fake, reconciler = _setup()
    events = Events()
    for message in ("first refusal", "second refusal"):
        _refuse_status(fake, message)
        for _ in range(3):
            assert reconciler.reconcile("ns", "d", events).result == "internal_error"
    errors = [m for _, r, m in events if r == "ReconcileError"]
    assert len(errors) == 2
    assert ["first refusal" in errors[0], "second refusal" in errors[1]] == [True, True]
    fake.fail.clear()  # RBAC fixed
    assert reconciler.reconcile("ns", "d", events).result == "applied"
    _refuse_status(fake, "second refusal")  # and broken again, the same way
    fake.objects[CR_PATH]["metadata"]["generation"] = 2  # a spec edit: status to write
    for _ in range(2):
        reconciler.reconcile("ns", "d", events)
    again = [m for _, r, m in events if r == "ReconcileError"]
    assert len(again) == 3
    assert "second refusal" in again[2]


def test_a_deleted_resource_is_reported_afresh_when_created_again() -> None:
    """The delete handler's `forget` drops what was said: a resource created again under the
    name posts its `ReconcileError` again, and its first transient failure is no lasting wait."""
    fake, reconciler = _setup()
    _refuse_status(fake, "refused")
    events = Events()
    for _ in range(2):
        reconciler.reconcile("ns", "d", events)
    assert [r for _, r, _ in events].count("ReconcileError") == 1
    reconciler.forget("ns", "d")
    assert reconciler._notices.resources() == frozenset()
    reconciler.reconcile("ns", "d", events)
    assert [r for _, r, _ in events].count("ReconcileError") == 2

    fake, reconciler = _setup()
    fake.objects[SECRET_PATH] = _secret("u-OLD")  # a predecessor's Secret: a transient wait
    assert not reconciler.reconcile("ns", "d", Events()).reported
    reconciler.forget("ns", "d")
    assert not reconciler.reconcile("ns", "d", Events()).reported  # a first failure again
    assert reconciler.reconcile("ns", "d", Events()).reported


def test_a_wait_is_lasting_only_after_the_same_failure_twice_in_a_row() -> None:
    """Another transient failure in between, or a reconcile that succeeded, starts over: the
    failure is reported as a wait (`reported`) only at its second consecutive time."""
    fake, reconciler = _setup()
    fake.objects[SECRET_PATH] = _secret("u-OLD")
    reported = []
    for fail in ([], [("GET", "/secrets/d-admin", 503)], [], []):
        fake.fail = list(fail)
        outcome = reconciler.reconcile("ns", "d", Events())
        assert outcome.result == "transient_error"
        reported.append(outcome.reported)
    assert reported == [False, False, False, True]
    del fake.objects[SECRET_PATH]  # the predecessor's Secret is gone at last
    assert reconciler.reconcile("ns", "d", Events()).result == "applied"
    fake.objects[SECRET_PATH] = _secret("u-OLD")  # and the same wait again, later
    events = Events()
    outcomes = [reconciler.reconcile("ns", "d", events) for _ in range(2)]
    assert [o.reported for o in outcomes] == [False, True]
    assert [r for _, r, _ in events] == ["ApiRetry"]  # a new streak, said once


def _drain_refused_by(refusals: list[int]) -> list[str]:
    """Two groups at low load (one should go) whose drain is refused with `refusals[i]` at step
    i (0: taken); the DrainFailed messages posted."""
    spec = copy.deepcopy(auto.SPEC)
    spec["replicas"] = 2
    _, rt, scaler, clock = auto.setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    step = [0]

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if method == "POST" and url.endswith("/drain"):
            code = refusals[min(step[0], len(refusals) - 1)]
            if code:
                return code, '{"error": "refused"}'
        return rt(method, url, headers)

    scaler.http = http
    events = auto.Events()
    for i in range(len(refusals) + 6):
        step[0] = max(0, i - 5)  # the first drain is decided at the fifth step
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
        auto.tick(scaler, clock, events)
        if 1 in rt.held:
            rt.held.discard(1)  # undrained by hand: the next step drains it again
    return [m for _, r, m in events if r == "DrainFailed"]


def test_drain_failed_is_posted_again_when_the_refusal_changes_or_recurs() -> None:
    failed = _drain_refused_by([403, 403, 401, 401, 0, 401, 401])  # 0: the drain is taken
    assert len(failed) == 3, failed
    assert ["HTTP 403" in failed[0], "HTTP 401" in failed[1], "HTTP 401" in failed[2]] == [
        True,
        True,
        True,
    ]


PROMETHEUS = "http://prom:9090"


def at_zero_with_a_wake_up_query() -> tuple[FakeApi, auto.Runtimes, Autoscaler, list[float]]:
    """`auto.setup` of a native deployment at zero replicas with `wakeUpQuery` set, run on
    Prometheus at `PROMETHEUS`."""
    spec = copy.deepcopy(auto.SPEC)
    spec["replicas"] = 0
    spec["autoscaling"] = {
        **spec["autoscaling"],
        "minReplicas": 0,
        "scaleToZeroIdleSeconds": 60,
        "wakeUpQuery": "gateway_pending",
    }
    fake, rt, scaler, clock = auto.setup(spec)
    scaler.prometheus_url = PROMETHEUS
    return fake, rt, scaler, clock


def _wake_up_failures(answers: list[tuple[int, str] | None]) -> list[str]:
    """A deployment at zero replicas with a wake-up query answered by `answers`, one per step;
    the WakeUpQueryFailed messages posted."""
    _, rt, scaler, clock = at_zero_with_a_wake_up_query()
    at = [0]

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.startswith(PROMETHEUS):
            return answers[at[0]]
        return rt(method, url, headers)

    scaler.http = http
    events = auto.Events()
    for i in range(len(answers)):
        at[0] = i
        auto.tick(scaler, clock, events)
    return [m for _, r, m in events if r == "WakeUpQueryFailed"]


def test_wake_up_query_failed_is_posted_again_when_the_failure_changes_or_recurs() -> None:
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
    down, broken, fine = None, (500, "boom"), (200, empty)
    failed = _wake_up_failures([down, down, broken, broken, fine, fine, broken, broken])
    assert len(failed) == 3, failed
    assert "did not answer" in failed[0]
    assert "HTTP 500" in failed[1]
    assert "HTTP 500" in failed[2]


def test_scaling_limited_is_posted_again_when_the_ceiling_changes() -> None:
    spec = copy.deepcopy(auto.SPEC)
    spec["replicas"] = 5  # maxReplicas 5, budget 24 GPUs: ceiling 5
    fake, rt, scaler, clock = auto.setup(spec)
    rt.tokens = dict.fromkeys(range(6), 0.0)
    events = auto.Events()
    auto.tick(scaler, clock, events)  # first scrape: no rate yet
    for step in range(4):
        if step == 3:  # the ceiling rises to 6, still below the 7 the load wants
            fake.objects[CR_PATH]["spec"]["autoscaling"]["maxReplicas"] = 6
            fake.objects[CR_PATH]["metadata"]["generation"] += 1
        replicas = fake.objects[CR_PATH]["spec"]["replicas"]
        for group in range(replicas):
            rt.tokens[group] += 7000 / replicas * 15
        auto.tick(scaler, clock, events)
    limited = [m for _, r, m in events if r == "ScalingLimited"]
    assert len(limited) == 2, limited
    assert "at most 5 may run" in limited[0]
    assert "at most 6 may run" in limited[1]


def test_leader_unreachable_is_posted_again_when_what_keeps_the_group_changes() -> None:
    """Group 1's leader is unreachable all along; its pod is Ready, then cannot be read."""
    spec = copy.deepcopy(auto.SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = auto.setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    fake.objects[auto.POD_PATH.format(1)] = auto.leader_pod(1)

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return None if "//d-1." in url else rt(method, url, headers)

    scaler.http = http
    events = auto.Events()
    for step in range(8):
        if step == 4:
            fake.fail = [("GET", "/pods/d-1", 500)] * 100
        rt.tokens[0] += 300 * 15
        auto.tick(scaler, clock, events)
    warned = [m for _, r, m in events if r == "LeaderUnreachable"]
    assert len(warned) == 2, warned
    assert "is Ready" in warned[0]
    assert "could not be read" in warned[1]


def test_a_deleted_deployment_is_warned_afresh_when_created_again() -> None:
    """The autoscaler forgets a deleted deployment's Warnings: one created again under the name
    with the same fault is warned again."""
    fake, rt, scaler, clock = at_zero_with_a_wake_up_query()

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return None if url.startswith(PROMETHEUS) else rt(method, url, headers)

    scaler.http = http
    events = auto.Events()
    auto.tick(scaler, clock, events)
    auto.tick(scaler, clock, events)
    cr = fake.objects.pop(CR_PATH)
    assert auto.tick(scaler, clock, events) is None  # deleted: forgotten
    assert scaler._posted.resources() == frozenset()
    fake.objects[CR_PATH] = cr
    auto.tick(scaler, clock, events)
    assert [r for _, r, _ in events].count("WakeUpQueryFailed") == 2


def test_a_reconcile_error_status_showed_is_posted_again_when_status_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once status showed the failure (its write got through), the Event memo is dropped: the
    same failure later, with status refused again, is posted again."""
    from dsv4_operator.handlers import reconciler as module

    fake, reconciler = _setup()
    events = Events()

    def refused(*_: Any, **__: Any) -> Any:
        raise ApiError(403, "Forbidden", "get secrets")

    monkeypatch.setattr(module, "plan", refused)
    _refuse_status(fake, "status refused")
    reconciler.reconcile("ns", "d", events)  # the Event says it
    fake.fail.clear()
    reconciler.reconcile("ns", "d", events)  # status says it (and its Event)
    assert _conditions(fake)["Ready"] == ("False", "ReconcileError")
    said = len(events)
    fake.objects[CR_PATH]["metadata"]["generation"] = 2  # a spec edit: status to write
    _refuse_status(fake, "status refused")
    reconciler.reconcile("ns", "d", events)
    assert [r for _, r, _ in events[said:]] == ["ReconcileError"]
