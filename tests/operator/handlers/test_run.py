"""Settings, the kopf wiring of `run`, `dsv4 operator run`, and the operator metrics."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError
from typer.testing import CliRunner

from dsv4_operator import cli
from dsv4_operator.handlers import build_registry
from dsv4_operator.handlers import runner as run_module
from dsv4_operator.metrics import OperatorMetrics
from dsv4_operator.settings import DEFAULT_RUNTIME_IMAGE, OperatorSettings


def _activities(registry: Any) -> dict[str, Any]:
    """The registry's activity handlers (startup, peering objects...) by their short id."""
    return {h.id.rsplit(".", 1)[-1]: h.fn for h in registry._activities.get_all_handlers()}


def _kopf_request(
    monkeypatch: pytest.MonkeyPatch, method: str, path: str, session: Any, clock: list[float]
) -> None:
    """Send one request through kopf's own request loop with the settings the operator installs.

    `session.request` answers each attempt; kopf's sleeps between attempts only advance
    `clock[0]` (seconds). Whatever the last attempt raises propagates.
    """
    import asyncio
    import logging

    from kopf._cogs.clients import api as kopf_api

    from dsv4_operator.handlers.lifecycle import configure_kopf

    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings())

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    class Context:
        server = "https://127.0.0.1:6443"

        def __init__(self) -> None:
            self.session = session

        def add_response(self, _: Any) -> None: ...

    monkeypatch.setattr(asyncio, "sleep", sleep)  # kopf sleeps between attempts with it
    asyncio.run(
        kopf_api.request(
            method,
            path,
            settings=settings,
            logger=logging.getLogger("kopf"),
            context=cast(Any, Context()),
        )
    )


def test_settings_from_env_round_trip() -> None:
    env = {
        "DSV4_OPERATOR_NAMESPACES": "team-a, team-b",
        "DSV4_OPERATOR_PEERING": "dsv4",
        "DSV4_OPERATOR_PRIORITY": "7",
        "DSV4_OPERATOR_RESYNC_SECONDS": "2.5",
        "DSV4_OPERATOR_METRICS_PORT": "0",
        "UNRELATED": "x",
    }
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ("team-a", "team-b")
    assert (settings.peering, settings.priority, settings.resync_seconds) == ("dsv4", 7, 2.5)
    assert settings.runtime_image == DEFAULT_RUNTIME_IMAGE
    assert OperatorSettings.from_env(settings.to_env()) == settings
    with pytest.raises(ValidationError, match="resync_seconds"):
        OperatorSettings.from_env({"DSV4_OPERATOR_RESYNC_SECONDS": "-1"})


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            OperatorSettings(),
            {"clusterwide": True, "namespaces": (), "standalone": True, "peering_name": None},
        ),
        (
            OperatorSettings(namespaces=("a", "b"), peering="dsv4", priority=5, liveness_port=8081),
            {
                "clusterwide": False,
                "namespaces": ("a", "b"),
                "standalone": False,
                "peering_name": "dsv4",
                "priority": 5,
                "liveness_endpoint": "http://0.0.0.0:8081/healthz",
            },
        ),
    ],
)
def test_run_passes_settings_to_kopf(
    monkeypatch: pytest.MonkeyPatch, settings: OperatorSettings, expected: dict[str, Any]
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    run_module.run(settings)
    assert {k: seen[k] for k in expected} == expected
    assert isinstance(seen["registry"], kopf.OperatorRegistry)


def test_registry_has_the_handlers() -> None:
    registry = build_registry(OperatorSettings(resync_seconds=3))
    resource = kopf.Resource("dsv4.io", "v1alpha1", "deepseekv4deployments")
    changing = registry._changing.get_all_handlers()
    names = {h.id for h in changing}
    assert any("reconcile" in n for n in names), names
    assert any("forget" in n for n in names), names
    timers: list[Any] = list(registry._spawning.get_all_handlers())
    # resync (3 s) and the native autoscaler (15 s); progress (10 s) is not faster: not added
    assert sorted(h.interval for h in timers) == [3, 15]
    fast = build_registry(OperatorSettings(resync_seconds=60, progress_seconds=5))
    fast_timers: list[Any] = list(fast._spawning.get_all_handlers())
    assert sorted(h.interval for h in fast_timers) == [5, 15, 60]
    handlers: list[Any] = [*changing, *timers]
    assert all(h.selector.check(resource) for h in handlers)
    assert registry._activities.get_all_handlers()


def test_peering_objects_handler_only_with_a_peering_name() -> None:
    def startup_ids(settings: OperatorSettings) -> list[str]:
        handlers = build_registry(settings)._activities.get_all_handlers()
        return [h.id for h in handlers if h.activity is not None and h.activity.value == "startup"]

    alone = startup_ids(OperatorSettings())
    peered = startup_ids(OperatorSettings(peering="dsv4", namespaces=("a",)))
    assert "peering-objects" not in alone
    # After the main startup handler, which puts the client in memo; kopf runs them in order.
    assert peered == [*alone, "peering-objects"]


def test_cli_operator_run_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[OperatorSettings, bool]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: None)
    from dsv4_operator import handlers

    monkeypatch.setattr(handlers, "run", lambda s, verbose=False: seen.append((s, verbose)))
    monkeypatch.setenv("DSV4_OPERATOR_RESYNC_SECONDS", "30")
    monkeypatch.setenv("DSV4_OPERATOR_RUNTIME_IMAGE", "env/image:1")
    result = CliRunner().invoke(
        cli.app,
        ["operator", "run", "-n", "a", "-n", "b", "--peering", "p", "--priority", "3",
         "--metrics-port", "0", "--progress-seconds", "4", "--log-format", "json", "--verbose"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((settings, verbose),) = seen
    assert settings.namespaces == ("a", "b")
    assert (settings.peering, settings.priority, settings.metrics_port) == ("p", 3, 0)
    assert (settings.resync_seconds, settings.runtime_image) == (30.0, "env/image:1")
    assert (settings.progress_seconds, settings.log_format) == (4.0, "json")
    assert verbose


def test_metrics_by_result_and_gpu_type() -> None:
    metrics = OperatorMetrics()
    metrics.observe("ns/a", "applied", 0.2)
    metrics.observe("ns/b", "invalid_spec", 0.01)
    metrics.set_plan("ns/a", "h100-80gb", 24)
    metrics.set_plan("ns/b", "h100-80gb", 8)
    text = generate_latest(metrics.registry).decode()
    assert 'dsv4_operator_reconciles_total{result="applied"} 1.0' in text
    assert 'dsv4_operator_reconciles_total{result="invalid_spec"} 1.0' in text
    assert "dsv4_operator_reconcile_duration_seconds_count 2.0" in text
    assert "dsv4_operator_managed_deployments 2.0" in text
    assert 'dsv4_operator_planned_gpus{gpu_type="h100-80gb"} 32.0' in text
    metrics.set_plan("ns/a", "h200-141gb", 16)
    metrics.forget("ns/b")
    text = generate_latest(metrics.registry).decode()
    assert 'dsv4_operator_planned_gpus{gpu_type="h100-80gb"} 0.0' in text
    assert 'dsv4_operator_planned_gpus{gpu_type="h200-141gb"} 16.0' in text
    assert "dsv4_operator_managed_deployments 1.0" in text


def _ready(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "False", "reason": reason}]}


def test_progress_timer_filter() -> None:
    from dsv4_operator.handlers.deployment import rolling_out

    assert rolling_out(spec={}, status=_ready("ReplicasNotReady"))
    # Waiting for a Secret or ConfigMap: checked as often as a rollout (review finding: only
    # the resync noticed it appear).
    assert rolling_out(spec={}, status=_ready("ReferenceMissing"))
    assert not rolling_out(spec={"paused": True}, status=_ready("ReplicasNotReady"))
    assert not rolling_out(spec={}, status=_ready("InvalidSpec"))
    assert not rolling_out(spec={}, status={})
    ready = {"conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}]}
    assert not rolling_out(spec={}, status=ready)
    # A lasting wait (reported in status instead of kopf's retries): the timers retry it.
    waiting = {"type": "Progressing", "status": "True", "reason": "Waiting"}
    assert rolling_out(spec={}, status={"conditions": [*ready["conditions"], waiting]})
    assert not rolling_out(spec={"paused": True}, status={"conditions": [waiting]})


def test_peering_handler_keeps_watching_a_missing_namespace_until_cleanup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging
    import threading

    import kopf
    from tests.operator.kube.fake_api import FakeApi

    from dsv4_operator.handlers import lifecycle

    started: list[threading.Thread] = []
    real_thread = threading.Thread

    def recording_thread(*args: Any, **kwargs: Any) -> threading.Thread:
        thread = real_thread(*args, **kwargs)
        started.append(thread)
        return thread

    api = FakeApi(fail=[("POST", "/namespaces/late/", 404)], fail_details={"kind": "namespaces"})
    monkeypatch.setattr(lifecycle, "build_api_client", lambda: api)
    monkeypatch.setattr(threading, "Thread", recording_thread)  # lifecycle's threading too
    registry = build_registry(OperatorSettings(peering="dsv4", namespaces=("late",)))
    handlers = _activities(registry)
    memo = kopf.Memo()
    logger = logging.getLogger("test-run")
    handlers["peering-objects"](memo=memo, logger=logger)
    (thread,) = started
    assert thread.daemon
    assert not memo.peering_stop.is_set()
    handlers["cleanup"](memo=memo)  # the operator stops: so does the watch
    assert memo.peering_stop.is_set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_drained_group_probe_follows_kopfs_field_handler_arguments() -> None:
    """Review finding: kopf gives a `field="spec"` handler the old spec itself as `old`; reading
    `old["spec"]` made leaving native mode never probe for drained groups."""
    from dsv4_operator.handlers.deployment import probe_for_drained

    native = {"autoscaling": {"enabled": True, "mode": "native"}}
    keda = {"autoscaling": {"enabled": True, "mode": "keda"}}
    assert probe_for_drained("update", native, keda)
    assert probe_for_drained("update", native, {**native, "paused": True})
    assert not probe_for_drained("update", keda, native)
    assert not probe_for_drained("create", None, keda)
    assert probe_for_drained("resume", None, {"autoscaling": {"enabled": False}})
    assert not probe_for_drained("resume", None, keda)


@pytest.mark.parametrize("log_format", ["full", "plain", "json"])
def test_log_lines_about_a_resource_name_it(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user finding: `kopf.configure`'s default omits the object prefix, so a warning such
    as "resync: ... (next resync retries)" did not say which of 200 resources it was about."""
    import json
    import logging

    from kopf._core.actions.loggers import ObjectLogger

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        run_module.configure_logging(OperatorSettings(log_format=log_format))  # type: ignore[arg-type]
        body = kopf.Body(
            {
                "apiVersion": "dsv4.io/v1alpha1",
                "kind": "DeepSeekV4Deployment",
                "metadata": {"namespace": "team-a", "name": "pro-1m", "uid": "u-1"},
            }
        )
        ObjectLogger(body=body, settings=kopf.OperatorSettings()).warning("resync: 503")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = capsys.readouterr().err.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert record["message"] == "resync: 503"
        assert record["object"]["namespace"] == "team-a"
        assert record["object"]["name"] == "pro-1m"
    else:
        assert line.endswith("[team-a/pro-1m] resync: 503"), line


def test_log_format_setting_is_checked() -> None:
    assert OperatorSettings.from_env({"DSV4_OPERATOR_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ValidationError, match="log_format"):
        OperatorSettings.from_env({"DSV4_OPERATOR_LOG_FORMAT": "yaml"})


def test_operator_run_help_states_the_settings_defaults() -> None:
    """New-user trial: `dsv4 operator run --help` showed no defaults; they must be the real ones."""
    text = " ".join(CliRunner().invoke(cli.app, ["operator", "run", "--help"]).output.split())
    defaults = OperatorSettings()
    assert f"(default {defaults.runtime_image})" in text
    assert f"(default {defaults.resync_seconds:g})" in text
    assert f"(default {defaults.progress_seconds:g})" in text
    assert f"default {defaults.metrics_port})" in text
    assert f"(default {defaults.log_format})" in text


def test_a_peering_object_lost_with_its_namespace_is_created_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Day-2 finding (two replicas with --peering, on the local control plane): a watched
    namespace deleted and created again loses its KopfPeering. kopf had paused the standby
    there on the object's DELETED event and nothing re-created it, so when the active replica
    went, the standby stayed paused in every namespace (kopf pauses the whole operator while
    any namespace is blocked) until it was restarted."""
    import logging
    import threading
    import time

    import kopf
    from tests.operator.kube.fake_api import FakeApi

    from dsv4_operator.handlers import lifecycle

    api = FakeApi()
    monkeypatch.setattr(lifecycle, "build_api_client", lambda: api)
    monkeypatch.setattr(lifecycle, "PEERING_RECHECK_SECONDS", 0.01)
    registry = build_registry(OperatorSettings(peering="dsv4", namespaces=("a",)))
    handlers = _activities(registry)
    memo = kopf.Memo()
    handlers["peering-objects"](memo=memo, logger=logging.getLogger("test-run"))
    path = "/apis/kopf.dev/v1/namespaces/a/kopfpeerings/dsv4"
    assert path in api.objects  # created at startup: the namespace exists
    del api.objects[path]  # the namespace is deleted and created again
    deadline = time.monotonic() + 5
    while path not in api.objects and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert path in api.objects
    finally:
        handlers["cleanup"](memo=memo)
    stop: threading.Event = memo.peering_stop
    assert stop.is_set()


def test_the_timers_make_kopf_add_its_finalizer() -> None:
    """Day-2 check: the delete handler is `optional=True`, yet every resource gets kopf's
    finalizer (seen on the local control plane), because kopf marks each timer as needing one;
    the module docstring had said none is added. README's uninstall steps rely on this."""
    registry = build_registry(OperatorSettings())
    timers = registry._spawning.get_all_handlers()
    assert {t.id.rsplit(".", 1)[-1] for t in timers} >= {"resync", "autoscale"}
    assert all(t.requires_finalizer for t in timers)
    (forget,) = [h for h in registry._changing.get_all_handlers() if h.id.endswith("forget")]
    assert not forget.requires_finalizer


def test_kopf_keeps_retrying_its_requests_through_a_ten_minute_api_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Day-2 finding (local plane, two peered replicas, kube-apiserver SIGKILLed for 90 s): the
    standby's peering keep-alive PATCH failed its 9 attempts (kopf's default backoffs, 54 s in
    all), and kopf stopped the whole operator ("Multidimensional multitasker has failed") instead
    of resuming when the server came back. kopf's own request loop, with the settings the
    startup handler installs, must outlast such an outage."""
    import aiohttp

    from dsv4_operator.handlers.lifecycle import API_RETRY_BACKOFFS_SECONDS

    clock = [0.0]

    class Recovered(Exception):
        """The API server is back: the request got through."""

    class Session:
        async def request(self, **_: Any) -> None:
            if clock[0] < 600:  # a 10-minute outage
                raise aiohttp.ClientConnectionError("Connect call failed")
            raise Recovered

    with pytest.raises(Recovered):
        _kopf_request(
            monkeypatch,
            "PATCH",
            "/apis/kopf.dev/v1/namespaces/ns/kopfpeerings/dsv4",
            Session(),
            clock,
        )
    assert clock[0] >= 600
    # ... and notices the server's return within 15 s of it.
    assert max(API_RETRY_BACKOFFS_SECONDS) <= 15


def test_missing_credentials_name_the_kubeconfig_and_stop_the_operator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """h12 (README walk-through): `dsv4 operator run` without KUBECONFIG logged kubernetes'
    "Invalid kube-config file. No configuration found." (no path) in a traceback and retried its
    startup every 60 s forever; now the error names the file and kopf stops the operator."""
    import logging

    from dsv4_operator.kube import CredentialsError, build_api_client

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nowhere" / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(CredentialsError) as caught:
        build_api_client()
    assert str(missing) in str(caught.value)
    assert "$KUBECONFIG" in str(caught.value)

    registry = build_registry(OperatorSettings(metrics_port=0))
    handlers = _activities(registry)
    with pytest.raises(kopf.PermanentError, match="no Kubernetes credentials"):
        handlers["startup"](
            settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger("t")
        )


def test_a_busy_metrics_port_is_named_and_stops_the_operator() -> None:
    """h12 (README walk-through): `dsv4 operator run --metrics-port P` with P taken logged a bare
    "[Errno 98] Address already in use" traceback and retried its startup every 60 s forever."""
    import logging
    import socket

    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        registry = build_registry(OperatorSettings(metrics_port=port))
        handlers = _activities(registry)
        with pytest.raises(kopf.PermanentError, match=f"--metrics-port .*{port}"):
            handlers["startup"](
                settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger("t")
            )


def test_kopf_retries_a_forbidden_request_as_long_as_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Operator-change review, local plane: a watched namespace without the chart's Role (one
    deleted and re-created) had kopf's list there refused (403) and the operator stop after
    60 s with kopf's default backoffs; with API_RETRY_BACKOFFS_SECONDS it stops after about
    11.5 minutes (README: Install). kopf retries 403 like 5xx; this pins what the README says."""
    from kopf._cogs.clients import errors as kopf_errors

    from dsv4_operator.handlers.lifecycle import API_RETRY_BACKOFFS_SECONDS

    clock = [0.0]
    attempts = [0]

    class Session:
        async def request(self, **_: Any) -> None:
            attempts[0] += 1
            raise kopf_errors.APIForbiddenError("forbidden", status=403, headers={})

    with pytest.raises(kopf_errors.APIForbiddenError):
        _kopf_request(
            monkeypatch,
            "GET",
            "/apis/dsv4.io/v1alpha1/namespaces/team-b/deepseekv4deployments",
            Session(),
            clock,
        )
    assert attempts[0] == len(API_RETRY_BACKOFFS_SECONDS) + 1 == 52
    assert 11 * 60 < clock[0] == sum(API_RETRY_BACKOFFS_SECONDS) < 12 * 60


def _stop_timers_on_deletion(*, timer_ends_after: float | None) -> list[float]:
    """kopf's own `stop_daemons` (what it runs on a deletion) on the operator's resync timer.

    The timer is mid-run, as a sync handler in its thread is: it ends `timer_ends_after` s after
    the stop request (None: it has already ended). Returns kopf's delays (s) before it looks
    again; the finalizer stays until a look finds every timer ended.
    """
    import asyncio
    import logging

    from kopf._core.engines import daemons
    from kopf._core.intents import stoppers

    from dsv4_operator.handlers.lifecycle import configure_kopf

    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings())
    registry = build_registry(OperatorSettings(resync_seconds=1))
    (resync,) = [h for h in registry._spawning.get_all_handlers() if "resync" in h.id]

    async def scenario() -> list[float]:
        async def running_timer() -> None:
            if timer_ends_after is not None:
                await asyncio.sleep(timer_ends_after)

        task = asyncio.create_task(running_timer())
        if timer_ends_after is None:
            await task
        daemon = daemons.Daemon(
            task=task,
            logger=logging.getLogger("test"),
            handler=resync,
            stopper=stoppers.DaemonStopper(),
        )
        delays = await daemons.stop_daemons(settings=settings, daemons={resync.id: daemon})
        task.cancel()
        return list(delays)

    return asyncio.run(scenario())


def test_a_timer_running_at_deletion_is_looked_at_again_within_a_second() -> None:
    """kopf 1.45 defaults look again 60 s later (`cancellation_polling`), and nothing wakes it
    when the timer ends, so the finalizer stayed a minute after a resync that was mid-run."""
    delays = _stop_timers_on_deletion(timer_ends_after=5.0)
    assert delays, "kopf released a resource whose timer still runs"
    assert 0 < max(delays) <= 1.0, delays


def test_an_ended_timer_does_not_delay_the_deletion() -> None:
    assert _stop_timers_on_deletion(timer_ends_after=None) == []


@pytest.mark.parametrize(
    ("group", "version", "plural", "kind"),
    [
        ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", "LeaderWorkerSet"),
        ("", "v1", "services", "Service"),
        ("", "v1", "configmaps", "ConfigMap"),
        ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
        ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        ("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    ],
)
def test_the_childrens_watches_ask_the_api_server_for_this_operators_children_only(
    group: str, version: str, plural: str, kind: str
) -> None:
    """kopf's `labels` filter on a handler is client-side: without a selector in the request,
    the watch of Services and ConfigMaps would list and stream every one of the watched
    namespaces (the whole cluster in cluster-wide mode) to the operator. kopf sends
    `settings.watching.label_selectors` as `labelSelector` on its list and watch requests
    (kopf `_cogs/clients/watching.py`, `fetching.py`), collected per resource as here."""
    from kopf._cogs.structs.references import Resource

    from dsv4_operator.handlers.deployment import CHILD_SELECTOR, WATCHED_CHILDREN
    from dsv4_operator.handlers.lifecycle import configure_kopf

    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings())
    resource = Resource(group, version, plural, kind=kind, namespaced=True)
    assert settings.watching.label_selectors.collect(resource) == [CHILD_SELECTOR]
    assert CHILD_SELECTOR == "app.kubernetes.io/managed-by=dsv4-operator"
    assert len(WATCHED_CHILDREN) == 6
    ours = Resource("dsv4.io", "v1alpha1", "deepseekv4deployments", kind="DeepSeekV4Deployment")
    assert settings.watching.label_selectors.collect(ours) == []  # the resources themselves
