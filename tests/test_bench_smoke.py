"""The bench measures what it claims: same features in every engine, real child memory, valid inputs.

Small and fast (no Spark, no Airflow import): `make bench` itself is the slow part.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import engines, measure, run, synth
from plantops.config import discover, load_use_case
from plantops.features import feature_columns, wide_features_pandas

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tags():
    return load_use_case(REPO / "include" / "use_cases" / "tep_reactor.yaml").tags[:3]


def _edge_rows(day_root: Path, tag: str) -> None:
    """Rows each engine must ignore: a bad-quality outlier and a good-quality NaN (a real NaN:
    pandas-to-arrow conversion would turn it into a null)."""
    schema = pq.read_schema(day_root / "historian.parquet")
    start = pd.Timestamp(day_root.name.removeprefix("date="), tz="UTC").value // 1_000
    table = pa.table({
        "asset": [synth.ASSET] * 2,
        "tag": [tag] * 2,
        "ts": pa.array([start + 5_000_000, start + 6_000_000], pa.timestamp("us", tz="UTC")),
        "value": pa.array([1e9, float("nan")], pa.float64()),
        "quality": ["bad", "good"],
        "source": ["landing"] * 2,
        "batch": ["edge"] * 2,
    }).cast(schema)
    pq.write_table(table, day_root / "landing.parquet")


def test_duckdb_baseline_computes_the_feature_contract(tmp_path, tags):
    bronze = synth.bronze(tmp_path / "cache", 3 * 1_500, tags)  # 25 minutes of 3 tags
    day = next(bronze.root.glob("date=*"))
    _edge_rows(day, tags[0].name)
    # Drop one tag's second minute entirely: its bucket must be carried forward, not left empty.
    hist = pq.read_table(day / "historian.parquet").to_pandas()
    epoch = hist["ts"].astype("int64") // 10**6
    hole = (hist["tag"] == tags[1].name) & (epoch % 3600 >= 60) & (epoch % 3600 < 120)
    pq.write_table(pa.Table.from_pandas(hist[~hole], preserve_index=False), day / "historian.parquet")

    names = [t.name for t in tags]
    args = engines.parse_args(["duckdb", "--input", str(bronze.root), "--output", str(tmp_path / "duck"),
                               "--tags", ",".join(names), "--bucket-seconds", "60", "--rolling-buckets", "5"])
    assert engines.run_duckdb(args)["rows_out"] == 25

    got = pd.read_parquet(tmp_path / "duck").sort_values("ts").reset_index(drop=True)
    long = pd.read_parquet(bronze.root, columns=engines.READ_COLUMNS)
    long["ts"] = long["ts"].astype("datetime64[ns, UTC]")
    want = wide_features_pandas(long, names, 60, 5)
    assert list(got.columns[: 2 + 3 * len(names)]) == ["asset", "ts", *feature_columns(names)]
    assert (got["ts"].astype("datetime64[us, UTC]") == want["ts"].astype("datetime64[us, UTC]")).all()
    columns = feature_columns(names)
    np.testing.assert_allclose(got[columns], want[columns], rtol=1e-9, atol=1e-9)
    assert got[names[1]].notna().all()


def test_measure_reports_the_child_peak_memory_and_enforces_the_cap(tmp_path):
    code = "import time; x = b'x' * (300 * 2**20); time.sleep(0.5)"
    fits = measure.run([sys.executable, "-c", code], log_path=tmp_path / "fits.log")
    assert fits.ok
    assert 300 <= fits.maxrss_mb < 600
    assert fits.peak_rss_mb >= fits.maxrss_mb

    capped = measure.run([sys.executable, "-c", code.replace("0.5", "30")], mem_cap_mb=200,
                         log_path=tmp_path / "capped.log")
    assert capped.killed_at_cap and not capped.ok
    assert capped.wall_s < 20


def test_generated_use_cases_are_valid_and_distinct(tmp_path):
    run.write_use_cases(tmp_path, 3)
    use_cases, broken = discover(tmp_path)
    assert broken == {}
    assert sorted(use_cases) == ["tep_reactor_001", "tep_reactor_002", "tep_reactor_003"]


def test_budget_verdicts_say_by_how_much():
    assert run.budget("x", 1.2, 1.5, "x")["margin"] == "met, 20% headroom"
    missed = run.budget("x", 1.8, 1.5, "x")
    assert missed["met"] is False and missed["margin"] == "missed by 20%"
    assert run.budget("x", 30.0, 6, "x")["margin"] == "missed by 5.0x"
    assert run.budget("x", None, 6, "x")["met"] is None


# -- the latency figure without a standalone: its file naming, timing and verdict --------------------


class _IdleApi:
    """Stands in for the REST API of a standalone whose ingest run has finished."""

    def idle(self) -> bool:
        return True

    def runs_since(self, since):
        return [{"dag_run_id": "asset_triggered__1", "run_type": "asset_triggered",
                 "queued_at": (since + pd.Timedelta(seconds=0.1)).isoformat()}]

    def task_instance(self, run_id):
        # Still running when the bronze file appeared: the run that wrote it.
        return {"start_date": "2000-01-01T00:00:00+00:00", "end_date": None, "queued_when": None}

    def landing_events_since(self, since):
        return []


def test_latency_times_a_landed_file_to_its_bronze_rows(tmp_path, monkeypatch):
    """The figure's path without Airflow: a file landed as NiFi does, then written to bronze under
    the name ingest gives it (storage.write_bronze, ``landing-<stem>``), is found and timed."""
    import threading

    from bench import latency
    from plantops.storage import write_bronze

    home = tmp_path / "home"
    monkeypatch.setenv("PLANTOPS_HOME", str(home))
    name, day = latency.file_name(0)

    def ingest_later() -> None:
        landed = home / "landing" / "tep_reactor" / name
        while not landed.exists():
            threading.Event().wait(0.05)
        threading.Event().wait(0.3)
        wide = pd.read_parquet(landed)
        long = wide.melt(id_vars="ts", var_name="tag", value_name="value").assign(
            asset="tep_reactor", quality="good", source="landing", batch=name)
        write_bronze(home / "bronze", "tep_reactor", long, f"landing-{landed.stem}")

    worker = threading.Thread(target=ingest_later)
    worker.start()
    result = latency.measure_file(_IdleApi(), home, 0, lambda i: latency.cmd_land(
        latency.argparse.Namespace(index=i)), timeout_s=30)
    worker.join()
    assert result.error is None
    assert 0.3 <= result.latency_s < 10
    assert result.rows == 480 * 19  # one day of the 19 analyzer tags
    assert result.run_id == "asset_triggered__1" and result.breakdown["task_ended"] is None
    assert latency.bronze_path(home, name, day).exists()


def test_latency_verdict_needs_every_file_and_the_median():
    from bench import latency

    files = [latency.FileLatency(f"f{i}", "2026-04-01", "t", s, breakdown={"bronze_written": s})
             for i, s in enumerate([20.0, 40.0, 25.0])]
    summary = latency.summarize(files, 30.0)
    assert summary["median_s"] == 25.0 and summary["met"] is True
    lost = latency.summarize([*files, latency.FileLatency("f3", "2026-04-04", "t", None, error="timeout")], 30.0)
    assert lost["arrived"] == 3 and lost["met"] is False


def test_latency_standalone_keeps_off_other_airflows(tmp_path):
    from bench import latency

    env = latency.standalone_env(tmp_path, 28380, base={"PATH": "/usr/bin", "PLANTOPS_STATE_URL": "postgresql://x",
                                                         "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"})
    assert env["PLANTOPS_HOME"] == str(tmp_path)
    assert "PLANTOPS_STATE_URL" not in env and env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert (env["AIRFLOW__API__PORT"], env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
            env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]) == ("28380", "28381", "28382")


# -- the monitor figure without Airflow: its verdicts and where the time went ------------------------


def _monitor_run(day: str, branch: str, wall: float, state: str = "success") -> dict:
    skipped = [b for b in ("no_action", "trigger_retrain", "request_approval") if b != branch]
    return {
        "day": day, "state": state, "branch": branch if state == "success" else None, "wall_s": wall,
        "tasks": {"assess_drift": {"state": "success", "seconds": wall - 5.0},
                  "choose_branch": {"state": "success", "seconds": 1.0},
                  branch: {"state": "success", "seconds": 0.5},
                  **{b: {"state": "skipped", "seconds": 0.0} for b in skipped}},
        "assess_parts_s": {"compute_drift": 9.0},
        "airflow_overhead_s": 3.5,
    }


def test_monitor_verdicts_say_by_how_much_and_where_the_time_went():
    runs = {"normal": _monitor_run("2026-03-24", "no_action", 45.0),
            "drift": _monitor_run("2026-03-25", "trigger_retrain", 90.0)}
    normal, drift = run.monitor_budgets(runs, {"normal": "no_action", "drift": "trigger_retrain"})
    assert normal["met"] is True and normal["margin"] == "met, 25% headroom" and normal["limit"] == 60.0
    assert drift["met"] is False and drift["margin"] == "missed by 1.5x"
    assert "assess_drift 85.0 s (compute_drift 9.0 s)" in drift["why"]
    assert "no_action" not in drift["why"] and "outside the tasks (dag.test scheduling, DB) 3.5 s" in drift["why"]
    row = run.table({"monitor": {"budgets": [normal, drift]}}).splitlines()[-1]
    assert row.startswith("| whole monitor DAG run, embedded tier, 2026-03-25 (trigger_retrain) | 90.0 s | <= 60 s |")


def test_monitor_run_on_the_wrong_branch_or_failed_is_not_measured():
    wrong = run.monitor_budgets({"normal": _monitor_run("2026-03-24", "trigger_retrain", 20.0)},
                                {"normal": "no_action"})[0]
    assert wrong["met"] is None and "expected no_action" in wrong["why"]
    failed = run.monitor_budgets({"drift": _monitor_run("2026-03-25", "trigger_retrain", 20.0, state="failed")},
                                 {"drift": "trigger_retrain"})[0]
    assert failed["value"] is None and failed["why"] == "the run ended failed"
