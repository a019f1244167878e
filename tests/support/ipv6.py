"""Whether this machine has an IPv6 loopback, for tests of listening on `::`."""

from __future__ import annotations

import socket


def ipv6_loopback() -> bool:
    """True when a socket can bind ::1 (IPv6 on in the kernel and the loopback configured)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
