"""The operator's health and metrics servers listen where kubelet probes them (IPv4 or IPv6)."""

from __future__ import annotations

import socket

import httpx
import pytest
from tests.support.ipv6 import ipv6_loopback

from dsv4_operator.metrics import OperatorMetrics
from dsv4_operator.settings import listen_host


@pytest.mark.parametrize(
    ("pod_ip", "host"),
    [("fd00:10:244::9", "::"), ("10.244.0.9", "0.0.0.0"), ("", "0.0.0.0"), ("x", "0.0.0.0")],
)
def test_the_listen_host_follows_the_pods_ip_family(pod_ip: str, host: str) -> None:
    assert listen_host({"POD_IP": pod_ip} if pod_ip else {}) == host


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_metrics_are_served_on_ipv6_when_asked() -> None:
    port = _free_port()
    OperatorMetrics().serve(port, listen_host({"POD_IP": "::1"}))
    answer = httpx.get(f"http://[::1]:{port}/metrics", timeout=5.0)
    assert answer.status_code == 200
    assert "dsv4_operator" in answer.text
