"""Rerunning a stage for the same interval and run id (an Airflow retry, a cleared task) changes nothing.

One pass runs every stage the way its DAG task does, through the same functions: ingest, the Spark
feature job and its gate, training (whose first attempt dies right after registering its model
version, and is retried), scoring and the monitor's assessment. A second pass reruns each stage
with the same run ids and the same intervals. Every store is compared between the two passes:
bronze files, the landing ledger, the feature table, the MLflow registry, the predictions table and
the decision store.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pandas as pd
import pytest

from plantops.stages import decisions, pipeline, registry
from plantops.sources import historian, landing, replay
from plantops.config import get_use_case
from plantops.settings import get_settings

UC = "tep_reactor"
# What Airflow would call these runs: one id per DAG, kept for the rerun as a retry keeps it.
RUN_IDS = {stage: f"scheduled__2026-03-25T00:00:00+00:00__{stage}" for stage in ("ingest", "train", "monitor")}


def _bronze() -> dict[str, tuple[str, pd.DataFrame]]:
    root = get_settings().bronze_root / UC
    return {str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), pd.read_parquet(path))
            for path in sorted(root.glob("date=*/*.parquet"))}


def _ledger() -> list[tuple]:
    return [(r["name"], r["size"], r["sha256"], r["status"], r["rows_in"], r["rows_written"], r["rows_rejected"])
            for r in landing.rows_of(UC)]


def _model_versions() -> list[tuple[str, str, str | None]]:
    client = registry.configure()
    return sorted((v.version, v.run_id, v.tags.get("airflow_run_id"))
                  for v in client.search_model_versions(f"name = '{UC}'"))


def _mlflow_runs() -> list[str]:
    client = registry.configure()
    experiment = client.get_experiment_by_name(UC)
    return sorted(r.info.run_id for r in client.search_runs([experiment.experiment_id]))


def _predictions(start, end) -> pd.DataFrame:
    # id and scored_at say when a row was written, not what it says.
    frame = historian.read_predictions(UC, start, end)
    return frame.drop(columns=["id", "scored_at"], errors="ignore").reset_index(drop=True)


def _decisions() -> list[tuple]:
    rows = decisions.latest(UC, limit=1000)
    return sorted((r["id"], r["dag_run_id"], r["kind"], r["branch"], r["reason"]) for r in rows)


def _die_after_the_first_new_version(monkeypatch) -> list[str]:
    """The first model version is created, then the training task dies before it hears back (a
    kill, a dropped connection to the tracking server): what its retry has to cope with."""
    from mlflow import MlflowClient

    # What mlflow.register_model and log_model(registered_model_name=...) call to create a version.
    original = MlflowClient._create_model_version
    created: list[str] = []

    def create_then_die(self, *args, **kwargs):
        version = original(self, *args, **kwargs)
        if not created:
            created.append(str(version.version))
            raise ConnectionError("training died right after registering its version (injected)")
        return version

    monkeypatch.setattr(MlflowClient, "_create_model_version", create_then_die)
    return created


def _run_every_stage(spark_job_args: list[str], start, end, day: str, train_dies_once: bool = False) -> dict:
    """One pass of ingest -> features -> gate -> train -> score -> assess, as the DAG tasks call them."""
    from spark_jobs.build_features import main as build_features

    results = {"ingest": pipeline.ingest(UC, start.isoformat(), end.isoformat(), RUN_IDS["ingest"])}
    assert build_features(spark_job_args) == 0
    window = {"start": str(start.date()), "end": str(end.date())}
    results["check_features"] = pipeline.check_features(UC, window["start"], window["end"])
    if train_dies_once:
        with pytest.raises(ConnectionError, match="injected"):
            pipeline.train(UC, RUN_IDS["train"], git_commit="test")
        # Airflow's retry of the task: same run id.
    results["train"] = pipeline.train(UC, RUN_IDS["train"], git_commit="test")
    results["score"] = pipeline.score(UC, day)
    assessed = pipeline.assess(UC, RUN_IDS["monitor"], day)
    results["assess"] = {k: assessed[k] for k in ("branch", "reason", "drift_share", "champion_version", "alarm_rate")}
    return results


def _state(start, end) -> dict:
    return {
        "bronze": _bronze(),
        "ledger": _ledger(),
        "features": pipeline.load_features(UC),
        "versions": _model_versions(),
        "runs": _mlflow_runs(),
        "predictions": _predictions(start, end),
        "decisions": _decisions(),
    }


def test_rerunning_every_stage_with_the_same_run_id_changes_nothing(plantops_home, spark, monkeypatch):
    from plantops.modalities.tags import feature_job_args

    use_case = get_use_case(UC)
    episodes = replay.HISTORY[-6:]  # three labelled fault days, three labelled normal days
    for episode in episodes:
        replay.replay_episode(use_case, episode)
    start, end = episodes[0].start, episodes[-1].start + timedelta(days=1)
    day = str(episodes[-1].day)
    job_args = [*feature_job_args(use_case), "--start", str(start.date()), "--end", str(end.date())]

    died = _die_after_the_first_new_version(monkeypatch)
    first = _run_every_stage(job_args, start, end, day, train_dies_once=True)
    assert died == ["1"]
    after_first = _state(start, end)
    second = _run_every_stage(job_args, start, end, day)
    after_second = _state(start, end)

    # The first pass did real work, so the comparisons below compare something.
    assert first["ingest"]["days"] == [str(e.day) for e in episodes]
    assert len(after_first["bronze"]) == 2 * len(episodes)  # historian + landed analyzer file per day
    assert len(after_first["ledger"]) == len(episodes)
    assert first["check_features"]["rows"] == len(after_first["features"]) == 480 * len(episodes)
    # The retry after the injected death found the version the dead attempt registered.
    assert len(after_first["versions"]) == 1, f"the retried training registered again: {after_first['versions']}"
    assert after_first["versions"][0][2] == RUN_IDS["train"] and len(after_first["runs"]) == 1
    assert first["train"]["version"] == "1" and first["train"]["promoted"]
    assert first["score"]["rows"] == len(after_first["predictions"]) == 480
    assert {(k, r) for _, r, k, *_ in after_first["decisions"]} == {
        ("train", RUN_IDS["train"]), ("monitor", RUN_IDS["monitor"])}

    # Bronze: the same files with the same rows; the ledger holds each landed file once.
    assert after_second["bronze"].keys() == after_first["bronze"].keys()
    for name, (digest, rows) in after_first["bronze"].items():
        again = after_second["bronze"][name][1]
        pd.testing.assert_frame_equal(again, rows, obj=name)
        assert not again.duplicated(["tag", "ts"]).any(), name
    assert after_second["ledger"] == after_first["ledger"]
    assert sorted(n for n, *_ in after_second["ledger"]) == sorted({n for n, *_ in after_first["ledger"]})
    assert second["ingest"]["files"] == [], "a retried ingest found the landed files again"

    # Features, the model registry, predictions and decisions: identical, nothing added.
    pd.testing.assert_frame_equal(after_second["features"], after_first["features"])
    assert not after_second["features"].duplicated(["asset", "ts"]).any()
    assert second["check_features"] == first["check_features"]
    assert after_second["versions"] == after_first["versions"], "a retried training registered another version"
    assert after_second["runs"] == after_first["runs"], "a retried training logged another MLflow run"
    assert second["train"]["version"] == first["train"]["version"]
    assert second["train"]["promoted"] == first["train"]["promoted"]
    assert second["score"] == first["score"]
    pd.testing.assert_frame_equal(after_second["predictions"], after_first["predictions"])
    assert after_second["decisions"] == after_first["decisions"]
    assert second["assess"] == first["assess"]
    report_dirs = list((get_settings().reports_root / UC).iterdir())
    assert len(report_dirs) == 1, report_dirs
