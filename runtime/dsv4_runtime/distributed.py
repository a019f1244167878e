"""This pod's place in its LeaderWorkerSet group, from the LWS environment.

LWS sets, in every pod of a group (kubernetes-sigs/lws, `pkg/utils/pod`):
`LWS_LEADER_ADDRESS` (the leader pod's DNS name on the group's headless Service),
`LWS_GROUP_SIZE` (pods in the group) and `LWS_WORKER_INDEX` (0 = leader).

vLLM's DP coordination runs over ZMQ, which does not resolve DNS names, so the leader's address is
resolved to an IP here (`resolve_leader_ip`) before it goes into `--data-parallel-address`
(design-lessons lesson 2). The headless Service LWS creates publishes not-ready addresses, so the
name resolves while the leader is still loading; DNS may still lag pod start by a few seconds,
hence the retries.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dsv4_runtime.config import RuntimeConfig

__all__ = [
    "LWS_GROUP_SIZE",
    "LWS_LEADER_ADDRESS",
    "LWS_WORKER_INDEX",
    "POD_IP",
    "RESOLVE_RETRY_SECONDS",
    "RESOLVE_TIMEOUT_SECONDS",
    "LeaderUnresolvedError",
    "Resolver",
    "Role",
    "RoleError",
    "bind_host",
    "host_port",
    "resolve_leader_ip",
    "role_from_env",
    "system_resolver",
]

LWS_LEADER_ADDRESS = "LWS_LEADER_ADDRESS"
LWS_GROUP_SIZE = "LWS_GROUP_SIZE"
LWS_WORKER_INDEX = "LWS_WORKER_INDEX"
POD_IP = "POD_IP"
"""The pod's primary IP, from the downward API (`status.podIP`, set by the operator): the
address kubelet probes and Services send traffic to."""
log = logging.getLogger("dsv4_runtime")
_WILDCARDS = {"0.0.0.0": "::"}  # noqa: S104  (a wildcard bind: pods listen on all interfaces)


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (RFC 3986 authority)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_host(host: str, env: Mapping[str, str]) -> str:
    """The address to listen on: `host`, or `::` for `0.0.0.0` when the pod's IP is IPv6.

    The pod's IP is its primary one (`POD_IP`). On an IPv6-only or IPv6-primary cluster
    kubelet probes, and Services reach, that IPv6 address, which a socket bound to `0.0.0.0`
    never answers: the pod would never be Ready. vLLM binds `::` without IPV6_V6ONLY (both
    families on Linux); the runtime's own server gets IPv6 only (asyncio sets it), which is
    the address that is probed. Any other `host`, and a missing or unparsable `POD_IP`, is
    kept as it is (an unparsable one with a warning that names it).
    """
    wildcard = _WILDCARDS.get(host)
    if wildcard is None:
        return host
    raw = env.get(POD_IP, "").strip()
    try:
        primary = ipaddress.ip_address(raw)
    except ValueError:
        if raw:  # set but garbled: say so, an IPv6-primary pod would never be Ready
            log.warning(
                "%s=%r is not an IP address (the downward API's status.podIP is one): "
                "listening on %s as given",
                POD_IP,
                raw,
                host,
            )
        return host
    return wildcard if primary.version == 6 else host


RESOLVE_TIMEOUT_SECONDS = 300.0
"""How long to wait for the leader's name to resolve (DNS lags pod creation)."""
RESOLVE_RETRY_SECONDS = 2.0
"""Pause between resolution attempts."""

Resolver = Callable[[str], str]
"""Maps a host name to one IP address string; raises `OSError` if it does not resolve."""


class RoleError(RuntimeError):
    """The LWS environment is missing, malformed or disagrees with the plan."""


class LeaderUnresolvedError(RoleError):
    """The leader's name did not resolve in time: a wait that ran out, not a bad argument.

    The leader pod has no DNS record until it has an IP, so a leader still Pending (a GPU node
    being provisioned, an image pull) outlasts `RESOLVE_TIMEOUT_SECONDS`; the runtime exits 1
    (restart and wait again), not 2, which names bad arguments.
    """


@dataclass(frozen=True)
class Role:
    """Where this pod sits in its group.

    Attributes:
        worker_index: `LWS_WORKER_INDEX`, 0 for the leader.
        group_size: `LWS_GROUP_SIZE` (= the plan's `nodes`).
        leader_address: `LWS_LEADER_ADDRESS` as given (a DNS name or an IP).
    """

    worker_index: int
    group_size: int
    leader_address: str

    @property
    def is_leader(self) -> bool:
        """True for worker index 0, the pod that serves the API."""
        return self.worker_index == 0


def role_from_env(env: Mapping[str, str], config: RuntimeConfig) -> Role:
    """Read this pod's role from the LWS variables and check it against the plan.

    A single-node plan runs without LWS variables (leader, address 127.0.0.1).

    Raises:
        RoleError: a variable is missing (multi-node), not an integer, out of range,
            `LWS_LEADER_ADDRESS` is neither an IP nor a DNS name, or `LWS_GROUP_SIZE` differs
            from `--nodes`; the message names the variable and its value.
    """
    present = [
        name for name in (LWS_LEADER_ADDRESS, LWS_GROUP_SIZE, LWS_WORKER_INDEX) if name in env
    ]
    if not present and config.nodes == 1:
        return Role(worker_index=0, group_size=1, leader_address="127.0.0.1")
    missing = [n for n in (LWS_LEADER_ADDRESS, LWS_GROUP_SIZE, LWS_WORKER_INDEX) if n not in env]
    if missing:
        raise RoleError(
            f"the plan has --nodes {config.nodes} but the LeaderWorkerSet variable(s) "
            f"{', '.join(missing)} are not set: run the pod from the operator's LeaderWorkerSet"
        )
    group_size = _int_var(env, LWS_GROUP_SIZE)
    worker_index = _int_var(env, LWS_WORKER_INDEX)
    if group_size != config.nodes:
        raise RoleError(
            f"{LWS_GROUP_SIZE}={group_size} but the plan expects --nodes {config.nodes}: "
            "the LeaderWorkerSet size and the runtime arguments come from different plans"
        )
    if not 0 <= worker_index < group_size:
        raise RoleError(f"{LWS_WORKER_INDEX}={worker_index} is outside [0, {group_size - 1}]")
    address = env[LWS_LEADER_ADDRESS].strip()
    if not address:
        raise RoleError(f"{LWS_LEADER_ADDRESS} is empty")
    if not _is_ip(address) and _DNS_NAME.fullmatch(address) is None:
        raise RoleError(
            f"{LWS_LEADER_ADDRESS}={address!r} is neither an IP address nor a DNS name "
            "(LeaderWorkerSet sets <leader pod>.<service>.<namespace>)"
        )
    return Role(worker_index=worker_index, group_size=group_size, leader_address=address)


_DNS_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
"""A DNS name: dot-separated RFC 1123 labels of at most 63 characters, 253 in all."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _int_var(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    try:
        return int(raw)
    except ValueError:
        raise RoleError(f"{name} must be an integer, got {raw!r}") from None


def system_resolver(host: str) -> str:
    """Resolve `host` with the system resolver, preferring IPv4 (ZMQ `tcp://` URIs, vLLM DP).

    Raises:
        OSError: the name does not resolve.
    """
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} resolved to no address")
    infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
    return str(infos[0][4][0])


def resolve_leader_ip(
    address: str,
    resolver: Resolver = system_resolver,
    *,
    timeout_seconds: float = RESOLVE_TIMEOUT_SECONDS,
    retry_seconds: float = RESOLVE_RETRY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Turn the leader's address into an IP, retrying while DNS catches up.

    Args:
        address: `LWS_LEADER_ADDRESS`; an IP literal is returned unchanged.
        resolver: name → IP (injectable for tests).
        timeout_seconds: give up after this long.
        retry_seconds: pause between attempts.
        sleep: injectable sleep.
        clock: injectable monotonic clock.

    Returns:
        The IP address as a string.

    Raises:
        LeaderUnresolvedError: the name did not resolve within `timeout_seconds` (names the
            last error).
    """
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    deadline = clock() + timeout_seconds
    failed = False
    while True:
        try:
            ip = str(ipaddress.ip_address(resolver(address)))
        except (OSError, ValueError) as error:
            if clock() >= deadline:
                raise LeaderUnresolvedError(
                    f"{LWS_LEADER_ADDRESS}={address} did not resolve to an IP within "
                    f"{timeout_seconds:g} s ({error}); vLLM's DP coordination (ZMQ) needs an IP. "
                    "The leader pod gets a DNS record once it has an IP: is it still Pending "
                    "(kubectl get pods)? Exiting to restart and wait again"
                ) from error
            if not failed:  # once: the pod log says what the pod waits for
                log.info(
                    "%s=%s does not resolve yet (%s): retrying every %g s for up to %g s "
                    "(the headless Service's DNS lags pod start)",
                    LWS_LEADER_ADDRESS,
                    address,
                    error,
                    retry_seconds,
                    timeout_seconds,
                )
                failed = True
        else:
            log.info("%s=%s resolved to %s", LWS_LEADER_ADDRESS, address, ip)
            return ip
        sleep(retry_seconds)
