"""Whether something listens on a TCP port: the one probe the services, the jobs and the tiers use."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

LOOPBACK = "127.0.0.1"


def port_open(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """True when a TCP connection to host:port is accepted within ``timeout`` seconds."""
    with socket.socket() as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def url_answers(url: str, default_port: int, timeout: float = 1.0) -> bool:
    """:func:`port_open` for the host and port of a URL such as ``sc://127.0.0.1:15002``."""
    parsed = urlparse(url)
    return port_open(parsed.port or default_port, parsed.hostname or LOOPBACK, timeout)


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now, chosen by the kernel (bind to 0): what every server a test or a
    benchmark starts takes, so that a running `make demo` or `make up` never collides with it."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
