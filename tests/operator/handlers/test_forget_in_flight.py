"""A reconcile or autoscaler step in flight when its resource is deleted leaves nothing behind.

kopf runs a resource's deletion handlers while its timers are being stopped, not after they
stopped (kopf 1.45 `_core/reactor/processing.py`, `process_spawning_cause`: "the signal to
terminate is sent to the daemons immediately, but the actual check of their shutdown is
performed only when all the on-deletion handlers have succeeded"); a timer already running in
its thread goes on. What it wrote after the delete handler's `forget` stayed for the life of
the process: one entry per deleted resource in each per-resource map, and the resource kept in
`dsv4_operator_managed_deployments` and the planned GPUs.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pytest
import tests.operator.handlers.test_autoscaler as auto
from prometheus_client import CollectorRegistry, generate_latest
from tests.operator.handlers.test_reconciler import CR_PATH, Events, _setup
from tests.operator.handlers.test_said_once import PROMETHEUS, at_zero_with_a_wake_up_query
from tests.operator.kube.fake_api import FakeApi

from dsv4_operator.handlers import build_registry
from dsv4_operator.handlers.autoscaler import Autoscaler, AutoscalerMetrics
from dsv4_operator.handlers.reconciler import Reconciler
from dsv4_operator.settings import OperatorSettings

KEY = "ns/d"


def _delete_handler() -> Callable[..., Any]:
    """The registered kopf `on.delete` handler (`forget`)."""
    registry = build_registry(OperatorSettings())
    (forget,) = [h for h in registry._changing.get_all_handlers() if h.id.endswith("forget")]
    handler: Callable[..., Any] = forget.fn
    return handler


def _deleted_meanwhile(
    fake: FakeApi,
    reconciler: Reconciler,
    autoscaler: Autoscaler,
    hold: Callable[[threading.Event, threading.Event], None],
    work: Callable[[], Any],
) -> None:
    """Run `work` until `hold` stops it (it sets the first event and waits for the second), mark
    the resource deleted and run the delete handler meanwhile, then let `work` finish."""
    reached, go = threading.Event(), threading.Event()
    hold(reached, go)
    worker = threading.Thread(target=work)
    worker.start()
    assert reached.wait(10)
    fake.objects[CR_PATH]["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    memo = kopf.Memo(reconciler=reconciler, autoscaler=autoscaler)
    raw: Any = copy.deepcopy(fake.objects[CR_PATH])
    body = kopf.Body(raw)
    forgetting = threading.Thread(target=_delete_handler(), kwargs={"body": body, "memo": memo})
    forgetting.start()
    forgetting.join(0.5)  # it may wait for `work`: let it run or wait first
    go.set()
    worker.join(10)
    forgetting.join(10)
    assert not worker.is_alive()
    assert not forgetting.is_alive()


def _kept(maps: Mapping[str, Any]) -> list[str]:
    """The names of `maps` that still hold the resource (keyed by it, or by (it, group))."""
    return [
        name
        for name, kept in maps.items()
        if any(k == KEY or (isinstance(k, tuple) and k[0] == KEY) for k in kept)
    ]


@pytest.mark.parametrize("fails", [False, True], ids=["applied", "transient-failure"])
def test_a_reconcile_in_flight_when_the_resource_is_deleted_leaves_nothing(fails: bool) -> None:
    fake, reconciler = _setup()
    autoscaler = Autoscaler(reconciler.kube, AutoscalerMetrics(CollectorRegistry()))
    real = fake.call_api

    def hold(reached: threading.Event, go: threading.Event) -> None:
        def call_api(method: str, url: str, *args: Any, **kw: Any) -> Any:
            if method == "PATCH" and "/leaderworkersets/" in url and not reached.is_set():
                reached.set()
                go.wait(10)
                if fails:
                    fake.fail.append(("PATCH", "/leaderworkersets/", 503))
            return real(method, url, *args, **kw)

        fake.call_api = call_api  # type: ignore[method-assign]

    _deleted_meanwhile(
        fake, reconciler, autoscaler, hold, lambda: reconciler.reconcile("ns", "d", Events())
    )
    maps = {
        "_children_seen": reconciler._children_seen,
        "_scalers_checked": reconciler._scalers_checked,
        "_starting_since": reconciler._starting_since,
        "_settled": reconciler._settled,
        "_retrying": reconciler._retrying,
        "_notices": reconciler._notices.resources(),
    }
    assert _kept(maps) == []
    text = generate_latest(reconciler.metrics.registry).decode()
    assert "dsv4_operator_managed_deployments 0.0" in text
    assert not re.search(r"dsv4_operator_planned_gpus\{.*\} [1-9]", text)  # no GPUs planned


def test_an_autoscaler_step_in_flight_when_the_resource_is_deleted_leaves_nothing() -> None:
    fake, rt, autoscaler, clock = at_zero_with_a_wake_up_query()
    _, reconciler = _setup()
    reconciler.kube = autoscaler.kube
    empty = '{"status":"success","data":{"resultType":"vector","result":[]}}'
    events = auto.Events()

    def answered(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        return (200, empty) if url.startswith(PROMETHEUS) else rt(method, url, headers)

    autoscaler.http = answered
    auto.tick(autoscaler, clock, events)

    def hold(reached: threading.Event, go: threading.Event) -> None:
        def down(method: str, url: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
            if url.startswith(PROMETHEUS):  # Prometheus does not answer, slowly
                reached.set()
                go.wait(10)
                return None
            return rt(method, url, headers)

        autoscaler.http = down

    _deleted_meanwhile(
        fake, reconciler, autoscaler, hold, lambda: auto.tick(autoscaler, clock, events)
    )
    assert [r for _, r, _ in events] == ["WakeUpQueryFailed"]  # the step went on meanwhile
    maps = {
        "_states": autoscaler._states,
        "_counters": autoscaler._counters,
        "_answered": autoscaler._answered,
        "_posted": autoscaler._posted.resources(),
    }
    assert _kept(maps) == []
    assert 'deployment="ns/d"' not in generate_latest(autoscaler.metrics.registry).decode()


def test_a_reconcile_that_finds_the_resource_deleting_drops_what_was_kept() -> None:
    """One that waited for the lock while the delete handler ran comes after its `forget`."""
    fake, reconciler = _setup()
    reconciler.reconcile("ns", "d", Events())
    fake.objects[CR_PATH]["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    outcome = reconciler.reconcile("ns", "d", Events())
    assert (outcome.result, outcome.gone) == ("unchanged", True)
    maps = {
        "_children_seen": reconciler._children_seen,
        "_scalers_checked": reconciler._scalers_checked,
        "_settled": reconciler._settled,
    }
    assert _kept(maps) == []
    text = generate_latest(reconciler.metrics.registry).decode()
    assert "dsv4_operator_managed_deployments 0.0" in text


def test_an_autoscaler_step_that_finds_the_resource_deleting_scales_nothing_and_forgets() -> None:
    fake, rt, autoscaler, clock = auto.setup()
    events = auto.Events()
    auto.tick(autoscaler, clock, events)  # first scrape: no rate yet
    rt.tokens[0] += 2500 * 15  # would scale up to 3
    fake.objects[CR_PATH]["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    assert auto.tick(autoscaler, clock, events) is None
    assert fake.objects[CR_PATH]["spec"]["replicas"] == 1
    assert _kept({"_states": autoscaler._states, "_counters": autoscaler._counters}) == []
