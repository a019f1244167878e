"""kopf's peering objects, created by the operator at startup (fake API: fault injection)."""

from __future__ import annotations

import logging
import threading

import kopf
import pytest
from tests.operator.kube.fake_api import FakeApi

from dsv4_operator.handlers.lifecycle import (
    PEERING_BACKOFF_SECONDS,
    create_peering_objects,
    watch_missing_namespaces,
)
from dsv4_operator.kube import ApiError, KubeClient, TransientApiError
from dsv4_operator.kube.peering import ensure_peering, peering_objects

NS_PATH = "/apis/kopf.dev/v1/namespaces/{}/kopfpeerings/dsv4"
CLUSTER_PATH = "/apis/kopf.dev/v1/clusterkopfpeerings/dsv4"


def test_one_kopfpeering_per_watched_namespace_or_one_cluster_wide() -> None:
    namespaced = peering_objects("dsv4", ("a", "b"))
    assert [(o["kind"], o["metadata"]["namespace"]) for o in namespaced] == [
        ("KopfPeering", "a"),
        ("KopfPeering", "b"),
    ]
    (cluster,) = peering_objects("dsv4", ())
    assert cluster["kind"] == "ClusterKopfPeering"
    assert "namespace" not in cluster["metadata"]
    assert {o["apiVersion"] for o in [*namespaced, cluster]} == {"kopf.dev/v1"}


def test_creates_what_is_missing_and_leaves_existing_objects_alone() -> None:
    api = FakeApi()
    writes: list[tuple[str, str]] = []
    kube = KubeClient(api, "dsv4-operator", on_write=lambda verb, kind: writes.append((verb, kind)))
    first = ensure_peering(kube, "dsv4", ("a", "b"))
    assert first.created == ("a/dsv4", "b/dsv4")
    assert (first.existing, first.forbidden) == ((), ())
    assert set(api.objects) == {NS_PATH.format("a"), NS_PATH.format("b")}
    # kopf's records in status survive a restart: an existing object is not written.
    api.objects[NS_PATH.format("a")]["status"] = {"pod-1": {"priority": 5}}
    again = ensure_peering(kube, "dsv4", ("a", "b"))
    assert (again.created, again.existing) == ((), ("a/dsv4", "b/dsv4"))
    assert api.objects[NS_PATH.format("a")]["status"] == {"pod-1": {"priority": 5}}
    assert [m for m, _ in api.requests] == ["POST"] * 4
    assert writes == [("create", "KopfPeering")] * 4


def test_cluster_wide_object_has_a_cluster_scoped_path() -> None:
    api = FakeApi()
    result = ensure_peering(KubeClient(api, "m"), "dsv4", ())
    assert result.created == ("dsv4",)
    assert api.requests == [("POST", "/apis/kopf.dev/v1/clusterkopfpeerings")]
    assert CLUSTER_PATH in api.objects


def test_forbidden_namespaces_are_reported_and_the_others_still_created() -> None:
    api = FakeApi(fail=[("POST", "/namespaces/a/", 403)])
    result = ensure_peering(KubeClient(api, "m"), "dsv4", ("a", "b"))
    assert (result.created, result.forbidden) == (("b/dsv4",), ("a/dsv4",))
    # The API server checks `create` before existence: a LIST by name (RBAC list) tells.
    assert ("GET", "/apis/kopf.dev/v1/namespaces/a/kopfpeerings") in api.requests


def test_forbidden_create_of_an_existing_object_counts_as_existing() -> None:
    api = FakeApi(fail=[("POST", "/namespaces/a/", 403)])
    api.objects[NS_PATH.format("a")] = {"metadata": {"name": "dsv4", "namespace": "a"}}
    result = ensure_peering(KubeClient(api, "m"), "dsv4", ("a",))
    assert (result.existing, result.forbidden) == (("a/dsv4",), ())


def test_forbidden_to_list_too_is_forbidden() -> None:
    api = FakeApi(fail=[("POST", "/namespaces/a/", 403), ("GET", "/namespaces/a/", 403)])
    assert ensure_peering(KubeClient(api, "m"), "dsv4", ("a",)).forbidden == ("a/dsv4",)


def test_a_missing_namespace_is_reported_not_fatal() -> None:
    api = FakeApi(fail=[("POST", "/namespaces/gone/", 404)], fail_details={"kind": "namespaces"})
    result = ensure_peering(KubeClient(api, "m"), "dsv4", ("gone", "b"))
    assert (result.no_namespace, result.created) == (("gone/dsv4",), ("b/dsv4",))


def test_namespace_patterns_are_skipped() -> None:
    api = FakeApi()
    result = ensure_peering(KubeClient(api, "m"), "dsv4", ("team-*", "!kube-system", "x,y", "b"))
    assert (result.patterns, result.created) == (("team-*", "!kube-system", "x,y"), ("b/dsv4",))
    only = ensure_peering(KubeClient(FakeApi(), "m"), "dsv4", ("team-*",))
    assert (only.patterns, only.created) == (("team-*",), ())


@pytest.mark.parametrize(
    ("status", "error"), [(404, ApiError), (422, ApiError), (503, TransientApiError)]
)
def test_other_failures_raise(status: int, error: type[ApiError]) -> None:
    api = FakeApi(fail=[("POST", "kopfpeerings", status)])
    with pytest.raises(error) as caught:
        ensure_peering(KubeClient(api, "m"), "dsv4", ("a",))
    assert caught.value.status == status
    assert (status == 503) == isinstance(caught.value, TransientApiError)


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (404, kopf.TemporaryError, "kopf.dev/v1 KopfPeering is not served"),
        (503, kopf.TemporaryError, "failed, retrying"),
        (422, kopf.PermanentError, "creating the KopfPeering 'dsv4' failed"),
    ],
)
def test_startup_handler_retries_what_time_can_fix(
    status: int, error: type[Exception], words: str
) -> None:
    api = FakeApi(fail=[("POST", "kopfpeerings", status)])
    logger = logging.getLogger("test-peering")
    with pytest.raises(error, match=words) as caught:
        create_peering_objects(KubeClient(api, "m"), "dsv4", ("a",), logger)
    if isinstance(caught.value, kopf.TemporaryError):
        assert caught.value.delay == PEERING_BACKOFF_SECONDS


def test_startup_handler_logs_what_it_created_and_what_it_could_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi(fail=[("POST", "/namespaces/b/", 403)])
    logger = logging.getLogger("test-peering")
    with caplog.at_level(logging.INFO, logger="test-peering"):
        create_peering_objects(KubeClient(api, "m"), "dsv4", ("a", "b", "t-*"), logger)
    created = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in created] == ["Created kopf peering object(s): a/dsv4"]
    (forbidden,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "KopfPeering b/dsv4 does not exist" in forbidden.getMessage()
    assert "RBAC create on kopfpeerings" in forbidden.getMessage()
    (pattern,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "t-*" in pattern.getMessage()


def test_startup_handler_names_a_missing_namespace(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi(fail=[("POST", "/namespaces/gone/", 404)], fail_details={"kind": "namespaces"})
    logger = logging.getLogger("test-peering")
    with caplog.at_level(logging.INFO, logger="test-peering"):
        create_peering_objects(KubeClient(api, "m"), "dsv4", ("gone",), logger)
    (missing,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert missing.getMessage().startswith("Watched namespace gone does not exist")


def test_a_namespace_created_after_startup_gets_its_peering_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Missing at the first recheck (404 on the namespace), created before the second.
    api = FakeApi(fail=[("POST", "/namespaces/late/", 404)], fail_details={"kind": "namespaces"})
    clients: list[KubeClient] = []

    def make_kube() -> KubeClient:
        clients.append(KubeClient(api, "m"))
        return clients[-1]

    logger = logging.getLogger("test-peering")
    with caplog.at_level(logging.INFO, logger="test-peering"):
        watch_missing_namespaces(
            make_kube, "dsv4", ("late",), stop=threading.Event(), logger=logger, interval=0.01
        )
    assert len(clients) == 2
    assert api.closed
    assert "/apis/kopf.dev/v1/namespaces/late/kopfpeerings/dsv4" in api.objects
    assert any("namespaces that appeared: late/dsv4" in r.getMessage() for r in caplog.records)


def test_the_namespace_watch_stops_when_told() -> None:
    api = FakeApi()
    stop = threading.Event()
    stop.set()
    watch_missing_namespaces(
        lambda: KubeClient(api, "m"), "dsv4", ("late",), stop=stop,
        logger=logging.getLogger("test-peering"), interval=0.01,
    )  # fmt: skip
    assert api.requests == []


TERMINATING = (
    'kopfpeerings.kopf.dev "dsv4" is forbidden: unable to create new content in namespace a '
    "because it is being terminated"
)
"""The API server's NamespaceLifecycle admission answer (403) to a create in a namespace
being deleted."""


def test_a_namespace_being_deleted_is_not_given_up_as_forbidden() -> None:
    """Deleting a watched namespace deletes its KopfPeering at once, but the namespace stays
    Terminating for a while (its pods' grace period, kopf's own finalizers on its resources).
    A check in that window got a 403 on the create, found no object, and dropped the namespace
    as forbidden for good: created again, it never got its KopfPeering, and kopf stayed
    paused there (and, with peering, everywhere) until a restart."""
    result = ensure_peering(
        KubeClient(FakeApi(fail=[("POST", "/namespaces/a/", 403)], fail_message=TERMINATING), "m"),
        "dsv4",
        ("a",),
    )
    assert (result.forbidden, result.missing_namespaces) == ((), ("a",))
    api = FakeApi(fail=[("POST", "/namespaces/a/", 403)], fail_message=TERMINATING)
    stop = threading.Event()
    clients: list[KubeClient] = []

    def make_kube() -> KubeClient:
        clients.append(KubeClient(api, "m"))
        if len(clients) == 2:  # the namespace exists again: this check is the last
            stop.set()
        return clients[-1]

    watch_missing_namespaces(
        make_kube, "dsv4", ("a",), stop=stop, logger=logging.getLogger("test-peering"),
        interval=0.01, keep=True,
    )  # fmt: skip
    assert len(clients) == 2
    assert NS_PATH.format("a") in api.objects


def test_one_namespace_that_cannot_be_checked_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The keep=True watch checked every watched namespace in one go, so a LIST refused in
    one (403: a watched namespace deleted for good takes the chart's Role in it along) failed
    the whole round, every round: the other namespaces' KopfPeerings were never re-created
    again, and the same warning was logged every PEERING_RECHECK_SECONDS."""
    api = FakeApi(fail=[("GET", "/namespaces/a/", 403)] * 3)
    for obj in peering_objects("dsv4", ("a",)):
        api.objects[NS_PATH.format("a")] = obj
    stop = threading.Event()
    clients: list[KubeClient] = []

    def make_kube() -> KubeClient:
        clients.append(KubeClient(api, "m"))
        if len(clients) == 3:
            stop.set()
        return clients[-1]

    logger = logging.getLogger("test-peering")
    with caplog.at_level(logging.INFO, logger="test-peering"):
        watch_missing_namespaces(
            make_kube, "dsv4", ("a", "b"), stop=stop, logger=logger, interval=0.01, keep=True
        )
    assert NS_PATH.format("b") in api.objects  # b lost its object meanwhile: created again
    assert NS_PATH.format("a") in api.objects  # a is left as it is
    refusals = [r for r in caplog.records if "/namespaces/a/" in r.getMessage()]
    assert len(refusals) == 1  # said once, not at every check
