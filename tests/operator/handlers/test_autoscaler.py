"""The native autoscaler loop through the real KubeClient against an in-memory API and runtimes."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from tests.operator.kube.fake_api import FakeApi

from dsv4_operator.handlers.autoscaler import (
    UNREACHABLE_GRACE_SECONDS,
    Autoscaler,
    AutoscalerMetrics,
)
from dsv4_operator.handlers.deployment import native_autoscaling
from dsv4_operator.kube import KubeClient
from dsv4_operator.render import Owner
from dsv4_operator.render.admin import admin_secret

CR_PATH = "/apis/dsv4.io/v1alpha1/namespaces/ns/deepseekv4deployments/d"
SECRET_PATH = "/api/v1/namespaces/ns/secrets/d-admin"
TOKEN = "5a0c3e9b7d214f68a1c2b3d4e5f60718"
SPEC: dict[str, Any] = {
    "model": "flash",
    "gpu": {"types": ["h200-141gb"], "gpusPerNode": 8, "budget": 24},
    "replicas": 1,
    "autoscaling": {
        "enabled": True,
        "mode": "native",
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetTokensPerSecondPerReplica": 1000,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": 60,
    },
}


@dataclass
class Runtimes:
    """Leader admin servers answering by URL: tokens counter, KV usage, running, waiting, held."""

    tokens: dict[int, float] = field(default_factory=dict)
    kv: dict[int, float] = field(default_factory=dict)
    running: dict[int, int] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)
    sick: set[int] = field(default_factory=set)
    """Groups whose engine does not answer (the runtime's /ready says "engine not ready")."""
    calls: list[tuple[str, str]] = field(default_factory=list)
    token: str | None = TOKEN
    """The pods' DSV4_RUNTIME_ADMIN_TOKEN (None: pods rendered before the token existed)."""

    def __call__(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        self.calls.append((method, url))
        group = int(url.split("//d-", 1)[1].split(".", 1)[0])
        if group not in self.tokens:
            return None  # not started yet
        if method == "POST":
            return self._post(group, url, headers)
        if url.endswith("/ready"):
            if group in self.sick:
                held = group in self.held
                reason = "engine not ready" + ("; drained by the autoscaler" if held else "")
                return 503, json.dumps({"ready": False, "reason": reason, "held": held})
            if group in self.held:
                return 503, '{"ready": false, "reason": "drained by the autoscaler"}'
            return 200, '{"ready": true}'
        return 200, (
            f'vllm:generation_tokens_total{{engine="0"}} {self.tokens[group]}\n'
            f'vllm:kv_cache_usage_perc{{engine="0"}} {self.kv.get(group, 0.1)}\n'
            f'vllm:num_requests_running{{engine="0"}} {self.running.get(group, 0)}\n'
            'vllm:num_requests_waiting{engine="0"} 0\n'
        )

    def _post(self, group: int, url: str, headers: Mapping[str, str]) -> tuple[int, str]:
        """/drain or /undrain, with the token check of dsv4_runtime.server."""
        if self.token is None:
            return 403, '{"error": "drain is disabled"}'
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, '{"error": "a valid admin bearer token is required"}'
        (self.held.add if url.endswith("/drain") else self.held.discard)(group)
        return 200, "{}"


class Events(list[tuple[str, str, str]]):
    def __call__(self, kind: str, reason: str, message: str) -> None:
        self.append((kind, reason, message))


def setup(spec: dict[str, Any] | None = None) -> tuple[FakeApi, Runtimes, Autoscaler, list[float]]:
    fake = FakeApi()
    fake.objects[CR_PATH] = {
        "apiVersion": "dsv4.io/v1alpha1",
        "kind": "DeepSeekV4Deployment",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": copy.deepcopy(spec or SPEC),
    }
    # The admin Secret, as the reconciler creates it (render.admin).
    fake.objects[SECRET_PATH] = admin_secret(Owner("d", "ns", "u-1"), "flash", TOKEN)
    runtimes = Runtimes(tokens={0: 0.0})
    clock = [0.0]
    scaler = Autoscaler(
        KubeClient(fake, "dsv4-operator"),
        AutoscalerMetrics(CollectorRegistry()),
        http=runtimes,
        clock=lambda: clock[0],
        now=lambda: datetime(2026, 11, 29, tzinfo=UTC),
    )
    return fake, runtimes, scaler, clock


def tick(scaler: Autoscaler, clock: list[float], events: Events, seconds: float = 15.0) -> Any:
    clock[0] += seconds
    return scaler.step("ns", "d", events)


def test_token_rate_scales_up_records_the_decision_and_exports_metrics() -> None:
    fake, rt, scaler, clock = setup()
    events = Events()
    assert tick(scaler, clock, events).action == "hold"  # first scrape: no rate yet
    rt.tokens[0] += 2500 * 15  # 2,500 tokens/s against a target of 1,000 per replica
    decision = tick(scaler, clock, events)
    assert decision.action == "scale"
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2
    record = fake.objects[CR_PATH]["status"]["recentScalingDecisions"][-1]
    assert (record["fromReplicas"], record["toReplicas"], record["reason"]) == (
        1,
        2,
        "TokenRateHigh",
    )
    assert events[-1][:2] == ("Normal", "ScaledUp")
    text = generate_latest(scaler.metrics.registry).decode()
    assert 'dsv4_autoscaler_replicas{deployment="ns/d"} 2.0' in text
    assert 'dsv4_autoscaler_decisions_total{action="scale"} 1.0' in text
    # Group 1 is still starting (its leader does not answer): a saturated group 0 adds nothing,
    # the starting group is the fix.
    rt.tokens[0] += 1800 * 15
    rt.kv[0] = 0.95
    assert tick(scaler, clock, events).action == "hold"
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2


def test_scale_down_drains_the_last_group_first() -> None:
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    rt.running = {0: 1, 1: 3}
    events = Events()
    actions = []
    for _ in range(12):
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
        if 1 in rt.held:
            rt.running[1] = 0  # the drained group finished its requests
        actions.append(tick(scaler, clock, events).action)
    assert "drain" in actions
    assert actions.index("drain") < actions.index("scale")
    assert ("POST", "http://d-1.d.ns:8081/drain") in rt.calls
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1
    assert fake.objects[CR_PATH]["status"]["recentScalingDecisions"][-1]["reason"] == "TokenRateLow"


def test_unreadable_engine_metrics_hold_a_scale_down_instead_of_reading_zero_load() -> None:
    # Two groups at low load would scale down to one; but while group 0's runtime answers
    # without its engine's series (the engine was too slow) or its /metrics fails, its load is
    # unknown, not zero: nothing is drained. Once readable again, the scale-down goes on.
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    events = Events()
    blind = {"mode": "no-engine"}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.endswith("d-0.d.ns:8081/metrics") and blind["mode"] == "no-engine":
            return 200, "dsv4_runtime_engine_ready 1.0\n"  # the runtime's own series only
        if url.endswith("d-0.d.ns:8081/metrics") and blind["mode"] == "down":
            return None
        return rt(method, url, headers)

    scaler.http = http
    decisions = []
    calls_while_blind = 0
    for i in range(16):
        blind["mode"] = "no-engine" if i < 6 else "down" if i < 8 else "ok"
        rt.tokens[0] += 100 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 100 * 15
        decisions.append(tick(scaler, clock, events))
        if i == 7:
            calls_while_blind = len(rt.calls)
    blind_part = decisions[:8]
    assert all(d.action == "hold" for d in blind_part)
    assert any("metrics of groups [0] could not be read" in d.reason for d in blind_part)
    assert not [c for c in rt.calls[:calls_while_blind] if c[0] == "POST"]
    assert "drain" in [d.action for d in decisions[8:]]
    assert fake.objects[CR_PATH]["spec"]["replicas"] in (1, 2)
    text = generate_latest(scaler.metrics.registry).decode()
    assert "dsv4_autoscaler_scrape_failures_total 8.0" in text


def test_a_runtime_that_refuses_the_drain_keeps_its_group_and_warns() -> None:
    # Pods rendered before the drain token existed (403), or a token mismatch (401): the group
    # keeps serving, the replicas stay, and each refused step is a DrainFailed Warning.
    for token, status in ((None, "403"), ("another-token", "401")):

        def pods_hold(fake: FakeApi, rt: Runtimes, token: str | None = token) -> None:
            rt.token = token

        fake, rt, events = _two_groups_at_low_load(pods_hold)
        failed = [e for e in events if e[1] == "DrainFailed"]
        assert failed, events
        assert failed[0][0] == "Warning"
        assert f"groups 1 (HTTP {status})" in failed[0][2]
        assert not any(e[1] == "Draining" for e in events)
        assert rt.held == set()
        assert fake.objects[CR_PATH]["spec"]["replicas"] == 2


def test_a_partly_refused_drain_is_rolled_back_and_warned_once() -> None:
    # Two groups to drain, one refuses: the other is undrained again at once, nothing is held,
    # replicas stay, and the same failure is one Warning, not one per step.
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 3
    spec["autoscaling"]["scaleDownMaxStep"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0, 2: 0.0}
    refusing = _Refusing(rt, group=2)
    scaler.http = refusing
    events = Events()
    for _ in range(12):
        for group in rt.tokens:
            rt.tokens[group] += 100 * 15
        tick(scaler, clock, events)
    assert refusing.refused > 1  # decided again after each rollback
    assert ("POST", "http://d-1.d.ns:8081/undrain") in rt.calls
    assert rt.held == set()
    warnings = [e for e in events if e[1] == "DrainFailed"]
    assert len(warnings) == 1, events
    assert warnings[0][0] == "Warning"
    assert "groups 2 (HTTP 403)" in warnings[0][2]
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 3


@dataclass
class _Refusing:
    """Runtimes where one group refuses POSTs with 403."""

    runtimes: Runtimes
    group: int
    refused: int = 0

    def __call__(self, method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if method == "POST" and f"//d-{self.group}." in url:
            self.refused += 1
            return 403, '{"error": "drain is disabled"}'
        return self.runtimes(method, url, headers)


def test_a_victim_that_does_not_answer_does_not_block_the_scale_down() -> None:
    # Group 2's leader crash-loops (no answer): it serves nothing, so it counts as drained and
    # the scale-down goes on; group 1 is not drained and undrained on every tick.
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 3
    spec["autoscaling"]["scaleDownMaxStep"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    events = Events()
    for _ in range(40):
        rt.tokens[0] += 100 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 100 * 15
        tick(scaler, clock, events)
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1
    assert not [c for c in rt.calls if c[1].endswith("/undrain")]
    assert not [e for e in events if e[1] == "DrainFailed"]


def _two_groups_at_low_load(
    prepare: Callable[[FakeApi, Runtimes], None],
) -> tuple[FakeApi, Runtimes, Events]:
    """Two groups at 300 tokens/s each against a 1,000 target (one should go), 12 steps."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    prepare(fake, rt)
    events = Events()
    for _ in range(12):
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 300 * 15
        tick(scaler, clock, events)
    return fake, rt, events


def test_without_the_admin_secret_nothing_is_drained() -> None:
    def no_secret(fake: FakeApi, rt: Runtimes) -> None:
        del fake.objects[SECRET_PATH]

    fake, rt, events = _two_groups_at_low_load(no_secret)
    (warning,) = [e for e in events if e[1] == "DrainFailed"]
    assert "no token in Secret d-admin" in warning[2]
    assert not [c for c in rt.calls if c[0] == "POST"]
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2


def test_not_native_or_paused_does_nothing() -> None:
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"]["mode"] = "keda"
    _, rt, scaler, clock = setup(spec)
    assert tick(scaler, clock, Events()) is None
    assert rt.calls == []
    assert not native_autoscaling(spec)
    assert native_autoscaling(SPEC)
    paused = copy.deepcopy(SPEC)
    paused["paused"] = True
    _, rt, scaler, clock = setup(paused)
    assert tick(scaler, clock, Events()) is None


def test_decisions_keep_the_last_ten() -> None:
    fake, _, scaler, clock = setup()
    fake.objects[CR_PATH]["status"] = {
        "recentScalingDecisions": [
            {
                "time": "2026-11-28T00:00:00Z",
                "fromReplicas": 1,
                "toReplicas": 2,
                "reason": "Old",
                "message": "",
            }
        ]
        * 10
    }
    runtimes = scaler.http
    assert isinstance(runtimes, Runtimes)
    tick(scaler, clock, Events())
    runtimes.tokens[0] += 5000 * 15
    tick(scaler, clock, Events())
    kept = fake.objects[CR_PATH]["status"]["recentScalingDecisions"]
    assert len(kept) == 10
    assert kept[-1]["reason"] == "TokenRateHigh"


def test_scaling_active_condition_is_written_only_on_change() -> None:
    fake, rt, scaler, clock = setup()
    fake.objects[CR_PATH]["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": "2026-11-28T00:00:00Z",
                "observedGeneration": 1,
            }
        ]
    }

    def active() -> tuple[str, str]:
        conds = {c["type"]: c for c in fake.objects[CR_PATH]["status"]["conditions"]}
        assert conds["Ready"]["status"] == "True"  # the reconciler's conditions are kept
        return conds["ScalingActive"]["status"], conds["ScalingActive"]["reason"]

    def status_writes() -> int:
        return sum(1 for m, p in fake.requests if m == "PATCH" and p.endswith("/status"))

    tick(scaler, clock, Events())
    assert active() == ("True", "TokenThroughput")
    writes = status_writes()
    tick(scaler, clock, Events())
    assert status_writes() == writes  # unchanged: no write
    rt.tokens.clear()  # the leader stops answering
    tick(scaler, clock, Events())
    assert active() == ("False", "NoMetrics")


def test_a_group_with_an_unreadable_metrics_body_does_not_stop_the_step() -> None:
    _fake, rt, scaler, clock = setup()
    events = Events()

    def garbled(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.endswith("/metrics"):
            return 200, "vllm:generation_tokens_total{engine=0 oops\n"
        return rt(method, url, headers)

    scaler.http = garbled
    decision = tick(scaler, clock, events)
    assert decision is not None
    assert decision.action == "hold"
    text = generate_latest(scaler.metrics.registry).decode()
    assert "dsv4_autoscaler_scrape_failures_total 1.0" in text


def test_a_deleted_resource_leaves_no_state_for_a_new_one_of_the_same_name() -> None:
    fake, rt, scaler, clock = setup()
    events = Events()
    tick(scaler, clock, events)
    rt.tokens[0] += 2500 * 15
    assert tick(scaler, clock, events).action == "scale"
    cr = fake.objects.pop(CR_PATH)
    assert tick(scaler, clock, events) is None  # deleted
    assert scaler._states == {}
    assert scaler._counters == {}
    assert 'deployment="ns/d"' not in generate_latest(scaler.metrics.registry).decode()
    cr["spec"]["replicas"] = 1
    fake.objects[CR_PATH] = cr
    # Re-created: the first scrape has no rate yet, as for any new resource.
    assert tick(scaler, clock, events).action == "hold"


def _idle_pair() -> tuple[FakeApi, Runtimes, Autoscaler, list[float]]:
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    spec["autoscaling"] = {**spec["autoscaling"], "scaleDownStabilizationSeconds": 600}
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    rt.running = {0: 5, 1: 5}
    return fake, rt, scaler, clock


def test_a_restarted_operator_neither_reads_zero_load_nor_scales_down_before_a_window() -> None:
    """Review finding: the first scrape after an operator restart gave 0 tokens/s (no previous
    counter sample), which read as an idle group: a drain on the first tick and a scale-down
    45 s after the restart, skipping the 600 s scale-down window."""
    _, rt, scaler, clock = _idle_pair()
    events = Events()
    first = tick(scaler, clock, events)
    assert first.action == "hold"
    assert "metrics of groups [0, 1] could not be read" in first.reason
    decisions = []
    while clock[0] < 600:
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
        decisions.append(tick(scaler, clock, events))
    assert all(d.action == "hold" for d in decisions)
    assert any("whole scale-down window of observations" in d.reason for d in decisions)
    assert not [c for c in rt.calls if c[0] == "POST"]
    for _ in range(8):  # past the window: the low load now drains group 1 first
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
        decisions.append(tick(scaler, clock, events))
    assert "drain" in [d.action for d in decisions]


def test_a_held_group_reported_after_a_restart_is_undrained() -> None:
    # The operator restarted mid-drain: group 1 still says it is drained. The new state has not
    # watched a window, so it cancels that drain instead of keeping the group out for a window.
    _, rt, scaler, clock = _idle_pair()
    rt.held = {1}
    events = Events()
    decision = tick(scaler, clock, events)
    assert (decision.action, decision.groups) == ("undrain", (1,))
    assert rt.held == set()
    assert events[-1][1] == "DrainCancelled"


def test_a_drained_group_that_stops_answering_is_not_removed_while_it_may_serve() -> None:
    """Review finding: a group whose /ready timed out once counted as starting (0 requests), so a
    drained victim with 4 requests in flight was removed at once."""
    fake, rt, scaler, clock = _idle_pair()
    events = Events()
    blip = {"on": False}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if blip["on"] and "//d-1." in url and method == "GET":
            return None
        return rt(method, url, headers)

    scaler.http = http
    actions = []
    while "drain" not in actions:
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
        actions.append(tick(scaler, clock, events).action)
    rt.running[1] = 4  # requests still finishing on the drained group ...
    blip["on"] = True  # ... whose leader stops answering
    drained_at = clock[0]
    while fake.objects[CR_PATH]["spec"]["replicas"] == 2 and clock[0] < drained_at + 1800:
        rt.tokens[0] += 300 * 15
        decision = tick(scaler, clock, events)
    # Held while the group may still serve (unknown for UNREACHABLE_GRACE_SECONDS), then it
    # counts as gone (LeaderWorkerSet recreates a failed group) and the scale-down completes.
    assert decision.action == "scale"
    assert clock[0] - drained_at >= UNREACHABLE_GRACE_SECONDS


def test_switching_native_autoscaling_off_undrains_the_held_groups() -> None:
    """Review finding: groups the native autoscaler drained stayed out of the Service for good
    once autoscaling was disabled, switched to keda/hpa, or paused."""
    changes: tuple[dict[str, Any], ...] = ({"enabled": False}, {"mode": "keda"}, {"paused": True})
    for change in changes:
        fake, rt, scaler, clock = _idle_pair()
        rt.running = {0: 0, 1: 1}
        events = Events()
        for _ in range(60):
            rt.tokens[0] += 300 * 15
            rt.tokens[1] += 0 if 1 in rt.held else 300 * 15
            if tick(scaler, clock, events).action == "drain":
                break
        assert rt.held == {1}
        body = fake.objects[CR_PATH]
        if "paused" in change:
            body["spec"].update(change)
            assert tick(scaler, clock, events) is None  # the timer still runs when paused
        else:
            body["spec"]["autoscaling"] = {**body["spec"]["autoscaling"], **change}
            assert not native_autoscaling(body["spec"])  # the timer stops: the handler releases
            scaler.release(body, events)
        assert rt.held == set(), change
        assert ("POST", "http://d-1.d.ns:8081/undrain") in rt.calls
        assert "ns/d" not in scaler._states


def test_native_scale_from_zero_runs_the_wake_up_query() -> None:
    """Review finding: at zero replicas nothing set the requests waiting outside the pods, so a
    native deployment that scaled to zero never came back."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 0
    spec["autoscaling"] = {
        **spec["autoscaling"],
        "minReplicas": 0,
        "scaleToZeroIdleSeconds": 60,
        "wakeUpQuery": 'gateway_pending{route="d"}',
    }
    fake, rt, scaler, clock = setup(spec)
    scaler.prometheus_url = "http://prom:9090"
    empty = '{"status":"success","data":{"resultType":"vector","result":[]}}'
    pending: dict[str, tuple[int, str] | None] = {"answer": (200, empty)}
    queries: list[str] = []

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.startswith("http://prom:9090/api/v1/query?"):
            queries.append(url)
            return pending["answer"]
        return rt(method, url, headers)

    scaler.http = http
    events = Events()
    assert tick(scaler, clock, events).action == "hold"  # nobody waits: stay at zero
    assert queries == ["http://prom:9090/api/v1/query?query=gateway_pending%7Broute%3D%22d%22%7D"]
    pending["answer"] = None  # Prometheus down: a Warning once, still zero
    tick(scaler, clock, events)
    tick(scaler, clock, events)
    warnings = [e for e in events if e[1] == "WakeUpQueryFailed"]
    assert len(warnings) == 1
    assert "http://prom:9090 did not answer" in warnings[0][2]
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 0
    result = [{"metric": {"pod": "gw-1"}, "value": [1, "2.5"]}]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
    pending["answer"] = (200, body)
    decision = tick(scaler, clock, events)
    assert (decision.action, decision.replicas_to) == ("scale", 1)
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1


def test_a_group_with_unreadable_metrics_does_not_stop_a_scale_up() -> None:
    """Review finding: with one group's /metrics failing, no recommendation was recorded, so
    5,000 tokens/s on the other group (target 1,000) held at 2 replicas for good. The known
    groups' load is a lower bound: enough to scale up, never to scale down."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.endswith("d-1.d.ns:8081/metrics"):
            return 500, "engine scrape failed"
        return rt(method, url, headers)

    scaler.http = http
    events = Events()
    for _ in range(12):
        rt.tokens[0] += 5000 * 15
        tick(scaler, clock, events)
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 5
    assert not [c for c in rt.calls if c[0] == "POST"]  # and nothing was drained


def test_a_group_index_scaled_away_and_back_is_a_new_starting_group() -> None:
    """Review finding: the index's last answer and token counter outlived its group, so a group
    re-created at that index within 120 s counted as unknown instead of starting, and the KV
    guard rail added yet another group."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    events = Events()
    tick(scaler, clock, events)
    tick(scaler, clock, events)  # both groups answered
    fake.objects[CR_PATH]["spec"]["replicas"] = 1  # group 1 removed (its pods are gone)
    del rt.tokens[1]
    tick(scaler, clock, events)
    rt.kv[0] = 0.95  # group 0 saturates: the guard rail asks for one more group ...
    rt.tokens[0] += 100 * 15
    first = tick(scaler, clock, events)
    assert (first.action, first.replicas_to) == ("scale", 2)
    rt.tokens[0] += 100 * 15
    second = tick(scaler, clock, events)  # ... and the new group 1, not answering yet, is the fix
    assert second.action == "hold", second.reason
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2


def test_release_probes_for_groups_a_previous_process_drained_and_retries_failures() -> None:
    """Review finding: release() undrained only the groups held in this process's memory, so a
    group drained before an operator restart stayed out of service for good; a failed undrain
    was not retried and its Warning said the groups keep serving."""
    fake, rt, scaler, _ = _idle_pair()
    rt.held = {1}  # drained by the previous operator process
    body = fake.objects[CR_PATH]
    body["spec"]["autoscaling"] = {**body["spec"]["autoscaling"], "enabled": False}
    events = Events()
    scaler.release(body, events)  # a resync: no probe, nothing known to this process
    assert rt.held == {1}
    secret = fake.objects.pop(SECRET_PATH)  # the undrain cannot get its token
    scaler.release(body, events, probe=True)  # operator start or leaving native mode
    assert rt.held == {1}
    assert events[-1][1] == "DrainFailed"
    assert "the groups stay drained; tried again at the next step or resync" in events[-1][2]
    fake.objects[SECRET_PATH] = secret
    scaler.release(body, events)  # the next resync retries the groups it found
    assert rt.held == set()
    assert events[-1][1] == "DrainCancelled"
    assert "ns/d" not in scaler._states


def test_release_undrains_a_held_group_whose_engine_is_unhealthy() -> None:
    """Runtime review: /ready said only "engine not ready" for a held group whose engine was
    unhealthy, so the undrain sweep at operator start missed it, and it stayed out of the
    Service after its engine recovered. It is still no capacity an undrain brings back."""
    fake, rt, scaler, clock = _idle_pair()
    rt.held, rt.sick = {1}, {1}
    assert scaler._group("ns/d", Owner("d", "ns", "u-1"), 1, clock[0], {}).starting
    body = fake.objects[CR_PATH]
    body["spec"]["autoscaling"] = {**body["spec"]["autoscaling"], "enabled": False}
    scaler.release(body, Events(), probe=True)
    assert rt.held == set()


def test_a_drain_is_cancelled_when_a_groups_load_becomes_unknown() -> None:
    """Final review: one unreadable sample during a drain kept the drained group out of service
    for a whole scale-down window (its down-recommendation counted as the current replicas)."""
    _, rt, scaler, clock = _idle_pair()
    events = Events()
    blind = {"on": False}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if blind["on"] and url.endswith("d-0.d.ns:8081/metrics"):
            return 500, "engine scrape failed"
        return rt(method, url, headers)

    scaler.http = http
    rt.running = {0: 1, 1: 1}
    while not rt.held:
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 300 * 15
        tick(scaler, clock, events)
    blind["on"] = True
    rt.tokens[0] += 300 * 15
    decision = tick(scaler, clock, events)
    assert (decision.action, decision.groups) == ("undrain", (1,))
    assert "could not be read: drain cancelled" in decision.reason
    assert rt.held == set()


def test_a_woken_group_is_not_scaled_back_to_zero_while_it_loads() -> None:
    """New-user trial: a group woken by `kubectl scale` (or the wake-up query) was removed
    60 s later while still loading, and the event said it had been drained."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 1
    spec["autoscaling"] = {**spec["autoscaling"], "minReplicas": 0, "scaleToZeroIdleSeconds": 60}
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {}  # group 0 is still loading: its leader does not answer
    events = Events()
    for _ in range(20):  # 5 minutes of loading
        assert tick(scaler, clock, events).action == "hold"
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1
    rt.tokens = {0: 0.0}  # ready now, and idle
    decisions = [tick(scaler, clock, events) for _ in range(10)]
    scale = next(d for d in decisions if d.action == "scale")
    assert scale.replicas_to == 0
    assert "drained groups [0]" in scale.reason  # it was drained first, and says so


def _condition(ctype: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-11-28T00:00:00Z",
        "observedGeneration": 1,
    }


def test_scaling_active_does_not_undo_a_condition_the_reconciler_wrote_meanwhile() -> None:
    """Day-2 finding: `_report_active` wrote back the whole condition list it had read at the
    start of the step (before seconds of scraping). When the groups turned ready, the reconciler
    set Ready=True during that scrape and the autoscaler's write put Ready=False back: status
    flapped and the next reconcile posted AllReplicasReady a second time."""
    fake, rt, scaler, clock = setup()
    fake.objects[CR_PATH]["status"] = {
        "conditions": [_condition("Ready", "False", "ReplicasNotReady")]
    }

    def reconciler_meanwhile(
        method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, str] | None:
        if url.endswith("/metrics"):  # the reconciler's status patch lands during the scrape
            fake.objects[CR_PATH]["status"]["conditions"] = [
                _condition("Ready", "True", "AllReplicasReady")
            ]
        return rt(method, url, headers)

    scaler.http = reconciler_meanwhile
    tick(scaler, clock, Events())
    conditions = {c["type"]: c for c in fake.objects[CR_PATH]["status"]["conditions"]}
    assert conditions["ScalingActive"]["reason"] == "TokenThroughput"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "True",
        "AllReplicasReady",
    )


def test_an_unchanged_scaling_active_costs_no_second_read() -> None:
    fake, _rt, scaler, clock = setup()
    tick(scaler, clock, Events())  # writes ScalingActive once
    fake.requests.clear()
    tick(scaler, clock, Events())
    assert fake.requests.count(("GET", CR_PATH)) == 1  # the step's own read only
    assert not [r for r in fake.requests if r[0] == "PATCH" and r[1].endswith("/status")]


def test_a_step_whose_spec_changed_meanwhile_writes_no_scaling_active() -> None:
    """Autoscaling switched to hpa during a step's scrape: the reconciler wrote the HPA's
    ScalingActive, and the step's write (built from the fresh read, whose resourceVersion it
    matched) replaced it with the native autoscaler's TokenThroughput, which the reconciler
    removed again only at its next resync (ScalingActive flapped, lastTransitionTime too)."""
    fake, rt, scaler, clock = setup()

    def switched_to_hpa(
        method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, str] | None:
        if url.endswith("/metrics"):  # the edit and the reconcile land during the scrape
            obj = fake.objects[CR_PATH]
            obj["spec"]["autoscaling"]["mode"] = "hpa"
            obj["metadata"]["generation"] = 2
            obj["status"] = {"conditions": [_condition("ScalingActive", "True", "HPA")]}
        return rt(method, url, headers)

    scaler.http = switched_to_hpa
    tick(scaler, clock, Events())
    (active,) = [
        c for c in fake.objects[CR_PATH]["status"]["conditions"] if c["type"] == "ScalingActive"
    ]
    assert active["reason"] == "HPA"


def test_a_non_finite_engine_value_is_unknown_load_not_a_crash_or_idle() -> None:
    # An exposition with +Inf waiting requests made parse_snapshot's int() raise OverflowError
    # out of the step (the timer failed at every tick); a NaN token counter read as no load and
    # let two groups scale down to one. Both are one group's unreadable scrape: held, counted.
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    events = Events()
    bad = {"line": 'vllm:num_requests_waiting{engine="1"} +Inf\n'}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        answer = rt(method, url, headers)
        if url.endswith("d-0.d.ns:8081/metrics") and answer is not None:
            return answer[0], answer[1] + bad["line"]
        return answer

    scaler.http = http
    decisions = [tick(scaler, clock, events) for _ in range(3)]
    bad["line"] = 'vllm:generation_tokens_total{engine="1"} NaN\n'
    decisions += [tick(scaler, clock, events) for _ in range(8)]  # past the 60 s window
    assert all(d is not None and d.action == "hold" for d in decisions)
    assert "metrics of groups [0] could not be read" in decisions[-1].reason
    assert not [c for c in rt.calls if c[0] == "POST"]
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2
    text = generate_latest(scaler.metrics.registry).decode()
    assert "dsv4_autoscaler_scrape_failures_total 11.0" in text


def test_losing_every_leader_at_once_is_unknown_load_not_groups_starting() -> None:
    """h29: three groups served 2,700 tokens/s with 30 requests each; then the operator could
    reach none of them (a NetworkPolicy, DNS, its own network). After 120 s each counted as
    starting (0 tokens/s), so one scale-down window later the groups were removed one per
    scrape, requests and all ("groups [2] served nothing"). No leader answering at all says
    nothing about the groups: those that served stay unknown, and nothing is removed."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 3
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0, 2: 0.0}
    rt.running = {0: 30, 1: 30, 2: 30}
    events = Events()
    cut = {"on": False}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return None if cut["on"] else rt(method, url, headers)

    scaler.http = http
    decisions = []
    for i in range(60):  # 15 minutes, 15 times the scale-down window
        for group in rt.tokens:
            rt.tokens[group] += 900 * 15
        cut["on"] = i >= 10
        decisions.append(tick(scaler, clock, events))
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 3
    assert [d.action for d in decisions] == ["hold"] * 60
    assert "metrics of groups [0, 1, 2] could not be read" in decisions[-1].reason
    assert not [e for e in events if e[1] == "ScaledDown"]
    active = fake.objects[CR_PATH]["status"]["conditions"][-1]
    assert (active["type"], active["status"], active["reason"]) == (
        "ScalingActive",
        "False",
        "NoMetrics",
    )
    # Once the leaders answer again, their load is read and the count holds at 3 replicas.
    cut["on"] = False
    for _ in range(3):
        for group in rt.tokens:
            rt.tokens[group] += 900 * 15
        decision = tick(scaler, clock, events)
    assert decision.action == "hold"
    assert round(decision.load_tokens_per_second) == 2700


def test_a_wake_up_from_zero_is_recorded_as_waiting_requests_not_a_high_token_rate() -> None:
    """h29: the scale 0 -> 1 on the wake-up query was recorded as `TokenRateHigh` and posted
    as "0 -> 1 replicas at 0 tokens/s: token load: 0 tokens/s, 1 replicas wanted"."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 0
    spec["autoscaling"] = {
        **spec["autoscaling"],
        "minReplicas": 0,
        "scaleToZeroIdleSeconds": 60,
        "wakeUpQuery": 'gateway_pending{route="d"}',
    }
    fake, rt, scaler, clock = setup(spec)
    scaler.prometheus_url = "http://prom:9090"
    result = [{"metric": {"pod": "gw-1"}, "value": [1, "3"]}]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.startswith("http://prom:9090/api/v1/query?"):
            return 200, body
        return rt(method, url, headers)

    scaler.http = http
    events = Events()
    decision = tick(scaler, clock, events)
    assert (decision.action, decision.replicas_to) == ("scale", 1)
    record = fake.objects[CR_PATH]["status"]["recentScalingDecisions"][-1]
    assert record["reason"] == "RequestsWaiting"
    assert record["message"] == "3 requests wait with no replica: 0 tokens/s, 1 replicas wanted"
    assert events[-1] == (
        "Normal",
        "ScaledUp",
        "0 -> 1 replicas at 0 tokens/s: 3 requests wait with no replica: 0 tokens/s, "
        "1 replicas wanted",
    )


def test_a_spec_changed_during_the_scrape_is_not_overwritten_by_the_stale_decision() -> None:
    """h29: the step decided from the resource it read before scraping (2 s per unanswered
    request, per group) and merge-patched spec.replicas without a precondition, so a user who
    meanwhile disabled autoscaling and set replicas 4 found them set to 2."""
    fake, rt, scaler, clock = setup()
    events = Events()
    assert tick(scaler, clock, events).action == "hold"  # first scrape: no rate yet
    rt.tokens[0] += 2500 * 15  # 2,500 tokens/s against a target of 1,000 per replica

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.endswith("/metrics"):  # the user's apply lands while the step scrapes
            live = fake.objects[CR_PATH]
            live["spec"] = {**live["spec"], "replicas": 4}
            live["spec"]["autoscaling"] = {**live["spec"]["autoscaling"], "enabled": False}
            live["metadata"]["generation"] = 2
        return rt(method, url, headers)

    scaler.http = http
    decision = tick(scaler, clock, events)
    assert decision is not None
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 4
    assert not [e for e in events if e[1] == "ScaledUp"]
    assert not (fake.objects[CR_PATH].get("status") or {}).get("recentScalingDecisions")


def test_a_scale_not_written_for_a_changed_resource_keeps_the_measured_load() -> None:
    """h33: the hold that replaces a scale decided from a stale read said 0 tokens/s, so the
    load gauge dropped to 0 for that step (and a ScalingLimited already posted was forgotten)."""
    fake, rt, scaler, clock = setup()
    events = Events()
    tick(scaler, clock, events)  # first scrape: no rate yet
    rt.tokens[0] += 2500 * 15

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.endswith("/metrics"):  # a spec change lands while the step scrapes
            fake.objects[CR_PATH]["metadata"]["generation"] = 2
        return rt(method, url, headers)

    scaler.http = http
    decision = tick(scaler, clock, events)
    assert decision.action == "hold"
    assert decision.load_tokens_per_second == pytest.approx(2500)
    text = generate_latest(scaler.metrics.registry).decode()
    assert 'dsv4_autoscaler_load_tokens_per_second{deployment="ns/d"} 2500.0' in text


@pytest.mark.parametrize(
    ("budget", "replicas", "cap"),
    [
        # Flash plans 2 H200s per replica: a budget of 6 GPUs caps maxReplicas 5 at 3.
        (6, 3, "spec.gpu.budget of 6 GPUs allows 3 replicas of 2 GPUs"),
        (24, 5, "spec.autoscaling.maxReplicas is 5"),
    ],
)
def test_load_beyond_the_ceiling_is_warned_once_naming_what_caps_it(
    budget: int, replicas: int, cap: str
) -> None:
    """h29: a native deployment held at its ceiling under more load said nothing (the HPA has
    its ScalingLimited condition)."""
    spec = copy.deepcopy(SPEC)
    spec["gpu"]["budget"] = budget
    spec["replicas"] = replicas
    fake, rt, scaler, clock = setup(spec)
    groups = range(replicas)
    for group in groups:
        rt.tokens[group] = 0.0
    events = Events()
    tick(scaler, clock, events)  # first scrape: no rate yet
    for _ in range(3):
        for group in groups:
            rt.tokens[group] += 7000 / replicas * 15  # 7,000 tokens/s: 7 replicas of 1,000
        tick(scaler, clock, events)
    limited = [e for e in events if e[1] == "ScalingLimited"]
    assert len(limited) == 1, events  # once, not at every step
    kind, _, message = limited[0]
    assert kind == "Warning"
    assert "wants 7 replicas" in message
    assert f"at most {replicas} may run: {cap}" in message
    assert fake.objects[CR_PATH]["spec"]["replicas"] == replicas
    # Back under the ceiling, then over it again: warned anew.
    for group in groups:
        rt.tokens[group] += 1000 / replicas * 15
    tick(scaler, clock, events)
    for group in groups:
        rt.tokens[group] += 7000 / replicas * 15
    tick(scaler, clock, events)
    assert len([e for e in events if e[1] == "ScalingLimited"]) == 2


def test_load_within_the_ceiling_posts_no_scaling_limited() -> None:
    _, rt, scaler, clock = setup()
    events = Events()
    tick(scaler, clock, events)
    rt.tokens[0] += 2500 * 15  # wants 3 of at most 3
    tick(scaler, clock, events)
    assert not [e for e in events if e[1] == "ScalingLimited"]


POD_PATH = "/api/v1/namespaces/ns/pods/d-{}"
"""Group i's leader pod: LeaderWorkerSet names it `<lws>-<i>` (the lws is named like the CR)."""


def leader_pod(index: int, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    """Group `index`'s leader pod as the API server serves it (a kubelet wrote its status)."""
    meta: dict[str, Any] = {"name": f"d-{index}", "namespace": "ns", "uid": f"pod-{index}"}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }


def _one_group_unreached(
    prepare: Callable[[FakeApi], None], *, answered_before: bool = True, minutes: int = 30
) -> tuple[FakeApi, Runtimes, Events, list[Any]]:
    """Two groups at 300 tokens/s each against a 1,000 target (one should go); group 1 serves
    user traffic all along, but from the second step on (or from the start) its leader does not
    answer the operator (a NetworkPolicy, a CNI fault on the path between them)."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    prepare(fake)
    events = Events()
    cut = {"on": not answered_before}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return None if cut["on"] and "//d-1." in url else rt(method, url, headers)

    scaler.http = http
    decisions = []
    for i in range(minutes * 4):
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 300 * 15
        cut["on"] = cut["on"] or i >= 2
        decisions.append(tick(scaler, clock, events))
    return fake, rt, events, decisions


@pytest.mark.parametrize("answered_before", [True, False], ids=["answered-before", "never"])
def test_a_group_whose_leader_pod_is_ready_but_unreachable_is_not_removed(
    answered_before: bool,
) -> None:
    """h32: a network fault between the operator and one leader (the kubelet's probe on the node
    still passes: the pod is Ready, the Service routes user requests to it) made the group
    count as starting 120 s later, and it was removed with its requests ("groups [1] served
    nothing"). The leader pod's Ready condition says the group may serve: unknown load."""

    def prepare(fake: FakeApi) -> None:
        fake.objects[POD_PATH.format(0)] = leader_pod(0)
        fake.objects[POD_PATH.format(1)] = leader_pod(1)

    fake, _rt, events, decisions = _one_group_unreached(prepare, answered_before=answered_before)
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2
    assert not [e for e in events if e[1] == "ScaledDown"]
    assert "metrics of groups [1] could not be read" in decisions[-1].reason
    # Said once, naming the group, its pod and why, not at every step.
    warned = [e for e in events if e[1] == "LeaderUnreachable"]
    assert len(warned) == 1, warned
    kind, _, message = warned[0]
    assert kind == "Warning"
    assert "group 1" in message
    assert "d-1" in message
    assert "Ready" in message
    # Only the unreachable group's pod is read.
    assert ("GET", POD_PATH.format(1)) in fake.requests
    assert ("GET", POD_PATH.format(0)) not in fake.requests


@pytest.mark.parametrize(
    "pod",
    [None, leader_pod(1, ready=False), leader_pod(1, terminating=True)],
    ids=["absent", "not-ready", "terminating"],
)
def test_a_group_whose_leader_pod_does_not_serve_is_removed_after_the_grace(
    pod: dict[str, Any] | None,
) -> None:
    """The pod gone, not Ready or terminating: the group is restarting or gone (LeaderWorkerSet
    recreates a failed group), as before h32: starting once UNREACHABLE_GRACE_SECONDS passed."""

    def prepare(fake: FakeApi) -> None:
        if pod is not None:
            fake.objects[POD_PATH.format(1)] = copy.deepcopy(pod)

    fake, _rt, events, _ = _one_group_unreached(prepare)
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1
    assert [e for e in events if e[1] == "ScaledDown"]
    assert not [e for e in events if e[1] == "LeaderUnreachable"]


@pytest.mark.parametrize("status", [403, 500])
def test_a_failed_pod_read_counts_the_group_as_unknown_and_the_step_goes_on(status: int) -> None:
    """The pods cannot be read (RBAC of an older chart: 403; the API server: 5xx): the safe side
    is unknown load, and the step still decides (a scale-up would still happen)."""

    def prepare(fake: FakeApi) -> None:
        fake.objects[POD_PATH.format(1)] = leader_pod(1, ready=False)
        fake.fail = [("GET", "/pods/d-1", status)] * 1000

    fake, _rt, events, decisions = _one_group_unreached(prepare)
    assert len(decisions) == 120
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2
    assert "metrics of groups [1] could not be read" in decisions[-1].reason
    warned = [e for e in events if e[1] == "LeaderUnreachable"]
    assert len(warned) == 1, warned
    assert "d-1" in warned[0][2]
    assert f"HTTP {status}" in warned[0][2]
    assert ("RBAC get on pods" in warned[0][2]) == (status == 403)


def test_leader_unreachable_is_warned_again_after_the_leader_answered_in_between() -> None:
    """Once per fault: not at every step, but a second fault after recovery is said again."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 2
    fake, rt, scaler, clock = setup(spec)
    rt.tokens = {0: 0.0, 1: 0.0}
    fake.objects[POD_PATH.format(1)] = leader_pod(1)
    events = Events()
    cut = {"on": False}

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return None if cut["on"] and "//d-1." in url else rt(method, url, headers)

    scaler.http = http
    for on in [False] * 2 + [True] * 20 + [False] * 4 + [True] * 20:
        rt.tokens[0] += 300 * 15
        rt.tokens[1] += 300 * 15
        cut["on"] = on
        tick(scaler, clock, events)
    assert len([e for e in events if e[1] == "LeaderUnreachable"]) == 2
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 2


def test_each_scaling_cause_keeps_its_recorded_reason_message_and_event() -> None:
    """h36: the recorded reason came from words of the policy's free text ("guard rail"); it
    comes from `Decision.cause` now. What a user reads stays as it was: each cause's
    `recentScalingDecisions` entry and ScaledUp/ScaledDown Event, word for word (the wake-up
    from zero, `RequestsWaiting`, is the test above)."""
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"] = {**spec["autoscaling"], "minReplicas": 0, "scaleToZeroIdleSeconds": 60}
    fake, rt, scaler, clock = setup(spec)
    events = Events()
    tick(scaler, clock, events)  # first counter sample
    rt.tokens[0] += 2500 * 15  # 2,500 tokens/s over a target of 1,000: TokenRateHigh
    tick(scaler, clock, events)
    rt.tokens[1] = 0.0  # group 1 serves
    rt.tokens[0] += 1200 * 15
    tick(scaler, clock, events)
    rt.kv[0] = 0.95  # over the 80 % guard rail, no group starting: GuardRail
    rt.tokens[0] += 1200 * 15
    rt.tokens[1] += 1200 * 15
    tick(scaler, clock, events)
    rt.kv[0] = 0.1
    rt.tokens[2] = 0.0  # no load from now on: drained down one by one, then Idle to zero
    for _ in range(40):
        tick(scaler, clock, events)
    records = [
        (r["fromReplicas"], r["toReplicas"], r["reason"], r["message"])
        for r in fake.objects[CR_PATH]["status"]["recentScalingDecisions"]
    ]
    assert records == [
        (1, 2, "TokenRateHigh", "token load: 2500 tokens/s, 3 replicas wanted"),
        (2, 3, "GuardRail", "guard rail on groups [0]: 2400 tokens/s, 3 replicas wanted"),
        (3, 2, "TokenRateLow", "0 tokens/s fits 2 replicas; drained groups [2]"),
        (2, 1, "TokenRateLow", "0 tokens/s fits 1 replicas; drained groups [1]"),
        (1, 0, "Idle", "0 tokens/s fits 0 replicas; drained groups [0]"),
    ]
    scaled = [e for e in events if e[1] in {"ScaledUp", "ScaledDown"}]
    assert scaled == [
        (
            "Normal",
            "ScaledUp",
            "1 -> 2 replicas at 2,500 tokens/s: token load: 2500 tokens/s, 3 replicas wanted",
        ),
        (
            "Normal",
            "ScaledUp",
            "2 -> 3 replicas at 2,400 tokens/s: guard rail on groups [0]: 2400 tokens/s, "
            "3 replicas wanted",
        ),
        (
            "Normal",
            "ScaledDown",
            "3 -> 2 replicas at 0 tokens/s: 0 tokens/s fits 2 replicas; drained groups [2]",
        ),
        (
            "Normal",
            "ScaledDown",
            "2 -> 1 replicas at 0 tokens/s: 0 tokens/s fits 1 replicas; drained groups [1]",
        ),
        (
            "Normal",
            "ScaledDown",
            "1 -> 0 replicas at 0 tokens/s: 0 tokens/s fits 0 replicas; drained groups [0]",
        ),
    ]


def test_scaling_active_at_zero_replicas_says_whether_anything_wakes_the_deployment() -> None:
    """h36: scaled to zero, ScalingActive was False/NoMetrics "0 of 0 replica groups report
    metrics" whether or not `wakeUpQuery` brings it back: a working scale-to-zero read as
    broken autoscaling, and a broken wake-up signal (or none) gave no more than that."""
    spec = copy.deepcopy(SPEC)
    spec["replicas"] = 0
    spec["autoscaling"] = {
        **spec["autoscaling"],
        "minReplicas": 0,
        "scaleToZeroIdleSeconds": 60,
        "wakeUpQuery": 'gateway_pending{route="d"}',
    }
    fake, rt, scaler, clock = setup(spec)
    scaler.prometheus_url = "http://prom:9090"
    answer: list[tuple[int, str] | None] = [None]

    def http(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        if url.startswith("http://prom:9090/api/v1/query?"):
            return answer[0]
        return rt(method, url, headers)

    def active() -> tuple[str, str, str]:
        conds = {c["type"]: c for c in fake.objects[CR_PATH]["status"]["conditions"]}
        c = conds["ScalingActive"]
        return c["status"], c["reason"], c["message"]

    scaler.http = http
    tick(scaler, clock, Events())  # Prometheus does not answer
    assert active() == (
        "False",
        "WakeUpQueryFailed",
        "no replica runs and spec.autoscaling.wakeUpQuery fails (the WakeUpQueryFailed "
        "Warning says why): nothing scales the deployment up from zero",
    )
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    answer[0] = (200, json.dumps(empty))
    tick(scaler, clock, Events())
    assert active() == (
        "True",
        "WakeUpQuery",
        "no replica runs; spec.autoscaling.wakeUpQuery answers and scales the deployment "
        "up from zero",
    )
    # Without a wake-up query nothing but `kubectl scale` brings it back.
    del fake.objects[CR_PATH]["spec"]["autoscaling"]["wakeUpQuery"]
    tick(scaler, clock, Events())
    assert active() == (
        "False",
        "ScaledToZero",
        "no replica runs and spec.autoscaling.wakeUpQuery is not set: only a change of "
        "spec.replicas (kubectl scale) scales the deployment up from zero",
    )
