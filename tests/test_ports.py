"""Tests run beside anything: every server the tests start takes a free port, never a default of
`make demo` / `make up` (api-server 28080, Spark Connect 28715, mail sink 28025), so a running demo
cannot break `make test`, and a demo started while the tests run finds its ports free."""

from __future__ import annotations

import contextlib
import os
import socket

from conftest import DEMO_PORTS
from plantops.environments import localenv, sparkconnect
from plantops.net import port_open


@contextlib.contextmanager
def demo_ports_taken():
    """Listen on every demo default that is free now (as a running demo would), for one test."""
    held = []
    try:
        for port in DEMO_PORTS.values():
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # a demo holds it already
                sock.close()
                continue
            sock.listen(1)
            held.append(sock)
        yield
    finally:
        for sock in held:
            sock.close()


def test_every_server_the_tests_start_takes_another_port():
    ours = {"api-server": localenv.API_PORT, "spark connect": sparkconnect.configured_port(),
            "mail sink": int(os.environ["PLANTOPS_SMTP_PORT"])}
    assert set(ours) == set(DEMO_PORTS)
    for name, port in ours.items():
        assert port != DEMO_PORTS[name], name
    env = localenv.airflow_env()
    assert env["AIRFLOW__API__PORT"] == str(localenv.API_PORT)
    assert f'"port": {os.environ["PLANTOPS_SMTP_PORT"]}' in env["AIRFLOW_CONN_PLANTOPS_SMTP"]


def test_the_tests_spark_connect_server_starts_while_the_demo_ports_are_taken(tmp_path):
    with demo_ports_taken():
        for name, port in DEMO_PORTS.items():
            assert port_open(port), name
        folder = tmp_path / "spark-connect"
        server = sparkconnect.start(sparkconnect.configured_port(), master="local[1]", folder=folder)
        try:
            assert server.port == sparkconnect.configured_port() != DEMO_PORTS["spark connect"]
            assert port_open(server.port)
        finally:
            sparkconnect.stop(folder)
