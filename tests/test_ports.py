"""Tests run beside anything: the embedded tier's default ports are held for the whole run.

conftest listens on the api-server, Spark Connect and mail-sink defaults of `make demo` / `make up`
(or finds a running demo holding them) before any test starts, and points every server the tests
start at a free port instead. So every e2e test of this run is itself the proof that a running demo
cannot break `make test`; this file checks that the premise holds.
"""

from __future__ import annotations

import os

from conftest import DEMO_PORTS
from plantops.environments import localenv, sparkconnect
from plantops.net import port_open


def test_the_demo_default_ports_are_taken_while_the_suite_runs():
    for name, port in DEMO_PORTS.items():
        assert port_open(port), f"the demo's {name} port {port} is free: the suite would not prove it runs beside one"


def test_every_server_the_tests_start_takes_another_port():
    ours = {"api-server": localenv.API_PORT, "spark connect": sparkconnect.configured_port(),
            "mail sink": int(os.environ["PLANTOPS_SMTP_PORT"])}
    assert set(ours) == set(DEMO_PORTS)
    for name, port in ours.items():
        assert port != DEMO_PORTS[name], name
    env = localenv.airflow_env()
    assert env["AIRFLOW__API__PORT"] == str(localenv.API_PORT)
    assert f'"port": {os.environ["PLANTOPS_SMTP_PORT"]}' in env["AIRFLOW_CONN_PLANTOPS_SMTP"]
