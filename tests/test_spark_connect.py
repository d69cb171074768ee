"""The warm Spark: a Spark Connect server from the PySpark wheel, and the feature job over it.

One server for the whole file (its start is the file's main cost, ~10-20 s); the last test stops it.
The classic local session of conftest is active in the same process throughout: a job over
Connect must not use it, and it must still work afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from plantops.environments import sparkconnect
from plantops.sources import tep
from spark_jobs.build_features import main
from test_build_features import tep_long, write_bronze_day

REPO = Path(__file__).resolve().parents[1]
TAGS = list(tep.TAGS)[:8]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Where the embedded tier keeps a home's server: <home>/spark-connect.
    folder = tmp_path_factory.mktemp("home") / "spark-connect"
    began = time.monotonic()
    started = sparkconnect.start(_free_port(), master="local[2]", folder=folder)
    print(f"Spark Connect server up in {time.monotonic() - began:.1f} s")
    yield started
    sparkconnect.stop(folder)


@pytest.fixture(scope="module")
def bronze(tmp_path_factory) -> Path:
    """Real TEP rows (two assets, 100 samples each at 180 s) as bronze of two days: the second day
    is the first shifted by a day, so a one-day range has a lookback day to read."""
    root = tmp_path_factory.mktemp("bronze")
    long = tep_long(TAGS)
    write_bronze_day(root, "2024-03-01", long)
    write_bronze_day(root, "2024-03-02", long.assign(ts=long["ts"] + pd.Timedelta(days=1)))
    return root


def job(bronze: Path, output: Path, start: str = "2024-03-01", end: str = "2024-03-03") -> list[str]:
    return ["--input", str(bronze), "--output", str(output), "--start", start, "--end", end,
            "--lookback-days", "1", "--tags", ",".join(TAGS), "--bucket-seconds", "180", "--rolling-buckets", "10"]


def features(folder: Path) -> pd.DataFrame:
    out = pd.read_parquet(folder)
    out["date"] = out["date"].astype(str)
    return out.sort_values(["asset", "ts"]).reset_index(drop=True)


def test_the_job_over_connect_equals_the_job_on_the_classic_session(spark, server, bronze, tmp_path):
    assert main(job(bronze, tmp_path / "classic")) == 0
    began = time.monotonic()
    assert main([*job(bronze, tmp_path / "connect"), "--remote", server.url]) == 0
    print(f"job over Connect: {time.monotonic() - began:.1f} s")

    want, got = features(tmp_path / "classic"), features(tmp_path / "connect")
    # 2 assets x 100 buckets of 180 s per day, two days: exactly the same frame.
    assert got.groupby("date").size().to_dict() == {"2024-03-01": 200, "2024-03-02": 200}
    assert list(got.columns) == ["asset", "ts", *[c for t in TAGS for c in (t, f"{t}__rmean", f"{t}__rstd")], "date"]
    pd.testing.assert_frame_equal(got, want)
    # The shared server still serves, the classic session still works, and no staging is left.
    assert sparkconnect.status(server.folder).pid == server.pid and sparkconnect.healthy(server.url)
    assert spark.range(3).count() == 3 and "SPARK_CONNECT_MODE_ENABLED" not in os.environ
    assert sorted(p.name for p in (tmp_path / "connect").iterdir()) == [
        ".build_features.lock", "date=2024-03-01", "date=2024-03-02"]


def test_the_features_task_runs_over_a_spark_connect_connection(server, bronze, tmp_path, monkeypatch):
    """The DAG's SparkJob operator: conn_type spark_connect -> the job in the task process over the
    server, a non-zero exit (no bronze in range) -> a failed task."""
    from plantops.orchestration.operators import SparkJob

    monkeypatch.setenv("AIRFLOW_CONN_WARM_TEST", json.dumps(
        {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": server.port}))
    task = SparkJob(task_id="build_features", application=str(REPO / "spark_jobs" / "build_features.py"),
                    conn_id="warm_test", application_args=job(bronze, tmp_path / "out", end="2024-03-02"),
                    env_vars={"PLANTOPS_WARM_TEST": "1"})
    task.execute({})
    assert features(tmp_path / "out").groupby("date").size().to_dict() == {"2024-03-01": 200}
    assert "PLANTOPS_WARM_TEST" not in os.environ
    empty = SparkJob(task_id="empty", application=task.application, conn_id="warm_test",
                     application_args=job(bronze, tmp_path / "out", "2024-03-05", "2024-03-06"))
    with pytest.raises(RuntimeError, match=f"over Spark Connect at sc://127.0.0.1:{server.port}/ exited with code 1"):
        empty.execute({})


def test_an_unreachable_server_fails_the_task_naming_the_url_and_the_fix(tmp_path, monkeypatch):
    from plantops.orchestration.operators import SparkJob

    port = _free_port()
    monkeypatch.setenv("AIRFLOW_CONN_WARM_GONE", json.dumps(
        {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": port}))
    task = SparkJob(task_id="build_features", application=str(REPO / "spark_jobs" / "build_features.py"),
                    conn_id="warm_gone", application_args=job(tmp_path, tmp_path / "out"))
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"no Spark Connect server answers at sc://127.0.0.1:{port}/.*"
                                           r"make up.*python -m plantops.environments.sparkconnect start"):
        task.execute({})
    assert time.monotonic() - began < 10


def test_the_embedded_tier_points_plantops_spark_at_the_running_server(server, tmp_path):
    from plantops.environments import localenv

    assert json.loads(localenv.spark_connection(server.folder.parent)) == {
        "conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": server.port}
    assert json.loads(localenv.spark_connection(tmp_path)) == {"conn_type": "spark", "host": "local[*]"}


ORPHAN = """
import sys
from pyspark.sql.connect.session import SparkSession
spark = SparkSession.builder.remote(sys.argv[1]).create()
# A write that runs for minutes, into the staging folder a feature job of this session would use.
spark.range(0, 10**11, numPartitions=2).selectExpr("id", "sha2(cast(id as string), 256) AS h").write.parquet(
    f"{sys.argv[2]}/.staging-{spark.session_id}")
"""


def test_a_later_sweep_interrupts_the_orphaned_write_of_a_killed_client(server, tmp_path, caplog):
    """Kill -9 of a client mid-write leaves its write running on the server; the next run's sweep
    (under the output lock) interrupts that session before removing its staging folder, so the
    orphan can neither write on into a removed folder nor hold the server's cores."""
    import logging
    import signal
    import subprocess
    import sys

    from spark_jobs.build_features import sweep_staging

    client = subprocess.Popen([sys.executable, "-c", ORPHAN, server.url, str(tmp_path)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".staging-*/**/*.parquet")) and time.monotonic() < deadline:
        assert client.poll() is None, "the client ended before writing"
        time.sleep(0.2)
    os.killpg(client.pid, signal.SIGKILL)
    client.wait()
    (staging,) = tmp_path.glob(".staging-*")
    with caplog.at_level(logging.INFO):
        sweep_staging(tmp_path, server.url)
    assert "interrupted 1 orphaned operations of dead client session" in caplog.text
    assert not staging.exists()
    time.sleep(2)
    assert list(tmp_path.iterdir()) == [], "the orphaned write wrote on after the sweep"
    assert sparkconnect.healthy(server.url)


def test_start_is_idempotent_and_stop_is_clean(server):
    again = sparkconnect.start(server.port, folder=server.folder)
    assert (again.reused, again.pid, again.url) == (True, server.pid, server.url)
    with pytest.raises(RuntimeError, match=f"already runs on port {server.port}"):
        sparkconnect.start(_free_port(), folder=server.folder)

    assert sparkconnect.stop(server.folder) is True
    assert sparkconnect.status(server.folder) is None and not (server.folder / "server.pid").exists()
    assert not Path(f"/proc/{server.pid}").exists() or b"SparkConnectServer" not in Path(
        f"/proc/{server.pid}/cmdline").read_bytes()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    assert sparkconnect.stop(server.folder) is False
