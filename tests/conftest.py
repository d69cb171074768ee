"""Shared fixtures: one PLANTOPS_HOME and one local Spark session per test run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its configuration when first imported: point it at one throw-away home for the
# whole run (one metadata DB per run) before any test module imports it.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="plantops-tests-"))
os.environ["PLANTOPS_HOME"] = str(SESSION_HOME)

from plantops.net import free_port  # noqa: E402

# The embedded tier's default ports (`make demo`, `make up`): api-server, Spark Connect, mail sink.
DEMO_PORTS = {"api-server": 28080, "spark connect": 28715, "mail sink": 28025}

# Every server the tests start takes a free port (the stack's own services are shared on purpose).
os.environ["PLANTOPS_API_PORT"] = str(free_port())
os.environ["PLANTOPS_SPARK_CONNECT_PORT"] = str(free_port())
os.environ["PLANTOPS_SMTP_PORT"] = str(free_port())
from plantops.environments import localenv  # noqa: E402

localenv.apply(SESSION_HOME)


def without_site(name: str) -> dict:
    """A shipped use case's YAML with its site's defaults written in and ``site`` dropped: the
    template of tests that change its approvers or notifications (tests/test_sites.py covers what a
    site gives)."""
    import yaml

    from plantops import config

    data = yaml.safe_load((REPO / "include" / "use_cases" / f"{name}.yaml").read_text())
    site = data.pop("site", None)
    return config._inherit(data, config.load_sites(REPO / "include" / "sites")[site]) if site else data


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the run's metadata DB once (SQLite, ~15 s)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    return SESSION_HOME


@pytest.fixture(scope="session")
def spark():
    """A local[1] Spark session shared by the whole run (JVM start costs ~15 s)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("plantops-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture
def plantops_home(tmp_path, monkeypatch) -> Path:
    """A private PLANTOPS_HOME (historian, state DB, MLflow, lake) for one test."""
    home = tmp_path / "plantops"
    home.mkdir()
    monkeypatch.setenv("PLANTOPS_HOME", str(home))
    for var in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_STATE_URL", "MLFLOW_TRACKING_URI", "PLANTOPS_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    return home


def pytest_terminal_summary(terminalreporter):
    """Print the fault-injection counts when that suite ran."""
    import sys

    faults = sys.modules.get("test_faults") or sys.modules.get("tests.test_faults")
    if faults and faults.COUNTS["files"]:
        c = faults.COUNTS
        terminalreporter.write_line(
            f"fault injection: {c['files']} files tried, {c['files_quarantined']} quarantined; rows in "
            f"{c['rows_in']} = written {c['rows_written']} + rejected {c['rows_rejected']}"
        )
