"""LWS role from the environment and leader-address resolution."""

from __future__ import annotations

import logging

import pytest

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role, RoleError, bind_host, resolve_leader_ip, role_from_env

TWO_NODES = RuntimeConfig(
    engine="vllm",
    model="m",
    served_model_name="m",
    nodes=2,
    data_parallel_size=16,
    data_parallel_size_local=8,
)
LWS = {"LWS_LEADER_ADDRESS": "dsv4-0.dsv4.ns", "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "1"}


@pytest.mark.parametrize(
    "address",
    ["dsv4-0.dsv4.ns", "dsv4-0.dsv4.ns.svc.cluster.local.", "10.1.2.3", "fd00::5", "leader"],
)
def test_addresses_lws_sets_are_taken(address: str) -> None:
    assert role_from_env({**LWS, "LWS_LEADER_ADDRESS": address}, TWO_NODES).leader_address == (
        address
    )


def test_worker_role_from_lws_env() -> None:
    assert role_from_env(LWS, TWO_NODES) == Role(1, 2, "dsv4-0.dsv4.ns")
    assert not role_from_env(LWS, TWO_NODES).is_leader
    assert role_from_env({**LWS, "LWS_WORKER_INDEX": "0"}, TWO_NODES).is_leader


def test_single_node_runs_without_lws() -> None:
    one = TWO_NODES.replace(nodes=1, data_parallel_size=8)
    assert role_from_env({}, one) == Role(0, 1, "127.0.0.1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "--nodes 2 but the LeaderWorkerSet variable(s) LWS_LEADER_ADDRESS, LWS_GROUP_SIZE"),
        ({**LWS, "LWS_GROUP_SIZE": "3"}, "LWS_GROUP_SIZE=3 but the plan expects --nodes 2"),
        ({**LWS, "LWS_WORKER_INDEX": "2"}, "LWS_WORKER_INDEX=2 is outside [0, 1]"),
        ({**LWS, "LWS_WORKER_INDEX": "one"}, "LWS_WORKER_INDEX must be an integer, got 'one'"),
        ({**LWS, "LWS_LEADER_ADDRESS": " "}, "LWS_LEADER_ADDRESS is empty"),
        # h39: a garbled address was retried as a DNS name for 300 s before the error
        (
            {**LWS, "LWS_LEADER_ADDRESS": "http://dsv4-0.dsv4.ns:8000"},
            "LWS_LEADER_ADDRESS='http://dsv4-0.dsv4.ns:8000' is neither an IP address nor a "
            "DNS name (LeaderWorkerSet sets <leader pod>.<service>.<namespace>)",
        ),
        (
            {**LWS, "LWS_LEADER_ADDRESS": "dsv4-0.dsv4.ns,dsv4-1.dsv4.ns"},
            "LWS_LEADER_ADDRESS='dsv4-0.dsv4.ns,dsv4-1.dsv4.ns' is neither an IP address",
        ),
    ],
)
def test_bad_lws_env(env: dict[str, str], message: str) -> None:
    with pytest.raises(RoleError) as caught:
        role_from_env(env, TWO_NODES)
    assert message in str(caught.value)


def test_ip_literal_is_returned_without_resolving() -> None:
    def never(host: str) -> str:
        raise AssertionError(host)

    assert resolve_leader_ip("10.1.2.3", never) == "10.1.2.3"


def test_resolution_retries_until_dns_answers() -> None:
    answers: list[str | OSError] = [OSError("NXDOMAIN"), OSError("NXDOMAIN"), "10.9.8.7"]
    slept: list[float] = []

    def resolver(host: str) -> str:
        assert host == "dsv4-0.dsv4.ns"
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    ip = resolve_leader_ip("dsv4-0.dsv4.ns", resolver, sleep=slept.append, clock=lambda: 0.0)
    assert ip == "10.9.8.7"
    assert slept == [2.0, 2.0]


def test_resolution_gives_up_with_a_clear_message() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def resolver(host: str) -> str:
        raise OSError(f"{host}: Name or service not known")

    with pytest.raises(RoleError) as caught:
        resolve_leader_ip(
            "leader.x", resolver, timeout_seconds=10, sleep=sleep, clock=lambda: now[0]
        )
    assert "LWS_LEADER_ADDRESS=leader.x did not resolve to an IP within 10 s" in str(caught.value)
    assert now[0] == 10.0


def test_system_resolver_resolves_localhost() -> None:
    assert resolve_leader_ip("localhost") in {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    ("host", "pod_ip", "bound"),
    [
        ("0.0.0.0", "fd00:10:244::5", "::"),  # IPv6-only or IPv6-primary cluster
        ("0.0.0.0", "10.244.1.5", "0.0.0.0"),
        ("0.0.0.0", "", "0.0.0.0"),  # no downward API (run by hand)
        ("0.0.0.0", "not-an-ip", "0.0.0.0"),
        ("10.0.0.7", "fd00::5", "10.0.0.7"),  # an explicit address is kept
        ("::", "10.244.1.5", "::"),
    ],
)
def test_the_wildcard_follows_the_pods_ip_family(host: str, pod_ip: str, bound: str) -> None:
    """Runtime review (h23 A): on an IPv6 cluster kubelet probes the pod's IPv6 address, which a
    socket bound to 0.0.0.0 never answers, so the pod was never Ready."""
    env = {"POD_IP": pod_ip} if pod_ip else {}
    assert bind_host(host, env) == bound


def test_a_leader_name_that_does_not_resolve_yet_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """h39: a worker whose leader's DNS record lags logged nothing for up to 300 s, so its pod
    log did not say what it was waiting for."""
    answers: list[str | OSError] = [OSError("NXDOMAIN"), OSError("NXDOMAIN"), "10.9.8.7"]

    def resolver(host: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    with caplog.at_level(logging.INFO, logger="dsv4_runtime"):
        resolve_leader_ip("dsv4-0.dsv4.ns", resolver, sleep=lambda _: None, clock=lambda: 0.0)
    waiting = [r.getMessage() for r in caplog.records if "does not resolve yet" in r.getMessage()]
    assert waiting == [
        "LWS_LEADER_ADDRESS=dsv4-0.dsv4.ns does not resolve yet (NXDOMAIN): retrying every 2 s "
        "for up to 300 s (the headless Service's DNS lags pod start)"
    ]
    resolved = [r.getMessage() for r in caplog.records if "resolved to" in r.getMessage()]
    assert resolved == ["LWS_LEADER_ADDRESS=dsv4-0.dsv4.ns resolved to 10.9.8.7"]


def test_a_pod_ip_that_is_not_an_ip_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """h39: a garbled `POD_IP` (a user's `spec.engine.env` override with `status.podIPs`, a
    comma-separated list) was ignored silently; on an IPv6-primary pod the runtime then listens
    on 0.0.0.0 and the pod is never Ready, with nothing in its log to say why."""
    with caplog.at_level(logging.WARNING, logger="dsv4_runtime"):
        assert bind_host("0.0.0.0", {"POD_IP": "fd00::5,10.244.1.5"}) == "0.0.0.0"
        assert bind_host("0.0.0.0", {}) == "0.0.0.0"  # unset: run by hand, no warning
        assert bind_host("0.0.0.0", {"POD_IP": "10.244.1.5"}) == "0.0.0.0"
    assert [r.getMessage() for r in caplog.records] == [
        "POD_IP='fd00::5,10.244.1.5' is not an IP address (the downward API's status.podIP "
        "is one): listening on 0.0.0.0 as given"
    ]
