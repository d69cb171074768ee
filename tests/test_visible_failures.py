"""A run that quarantined a whole landed file does not end green: the ingest DAG, run for real.

One ``dag.test()`` of a landing-only use case with a good file and a broken one: the good file's
days reach bronze and the bronze asset event (the features wake for them), the operator view
records the quarantine, and the run fails in ``report_quarantine`` naming the file and its reason,
in task logs the UI can read.
A second run with nothing new skips, and does not fail.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest

from plantops import cli
from plantops.config import get_use_case
from plantops.settings import get_settings
from test_onboarding import DAY, PARQUET_HEADERS, ROWS, pi_export


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_a_quarantined_file_fails_the_run_and_the_good_days_flow_on(airflow_db, plantops_home, monkeypatch, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow.utils.log.log_reader import TaskLogReader

    from plantops.orchestration import tasklogs
    from plantops.orchestration.dagfactory import assets, build_ingest
    from plantops.sources import landing
    from plantops.stages import decisions

    monkeypatch.setenv("PLANTOPS_USE_CASES", str(plantops_home / "use_cases"))
    frame, states = pi_export(PARQUET_HEADERS[:6])
    sample = tmp_path / "good_20260324.parquet"
    frame.to_parquet(sample)
    assert cli.main(["init-use-case", "press_9", "--from", str(sample), "--timezone", "UTC"]) == 0
    use_case = get_use_case("press_9")
    folder = get_settings().landing_root / "press_9"
    folder.mkdir(parents=True)
    shutil.copy(sample, folder / sample.name)
    (folder / "broken_20260324.parquet").write_bytes(b"PAR1 cut short by the export")

    dag = build_ingest(use_case, assets(use_case))
    tasklogs.install()  # as the demo does: dag.test() writes no task log files of its own
    tasklogs.install()  # idempotent: one listener, one line per record
    dr = dag.test(logical_date=datetime(2026, 3, 25, tzinfo=timezone.utc))
    assert _states(dr) == {"ingest_sources": "success", "report_quarantine": "failed"}
    assert str(dr.state) == "failed"
    # Each task's log, read as the UI reads it: the quarantine and the failure's reason are there.
    reader = TaskLogReader()
    logs = {ti.task_id: [str(m.event) for m in reader.read_log_chunks(ti, ti.try_number, {})[0]]
            for ti in dr.get_task_instances()}
    quarantined = [e for e in logs["ingest_sources"] if e.startswith("quarantined broken_20260324.parquet")]
    assert len(quarantined) == 1, logs["ingest_sources"]
    assert logs["ingest_sources"][-1] == "ingest_sources succeeded", logs["ingest_sources"]
    assert logs["report_quarantine"][-1].startswith("report_quarantine failed: "), logs["report_quarantine"]
    assert any("broken_20260324.parquet: unreadable parquet" in e for e in logs["report_quarantine"]), \
        logs["report_quarantine"]

    by_name = {row["name"]: row for row in landing.rows_of("press_9")}
    assert by_name["good_20260324.parquet"]["status"] == "ingested"
    assert by_name["good_20260324.parquet"]["values_written"] == ROWS * 6 - len(states)
    assert by_name["broken_20260324.parquet"]["status"] == "quarantined"
    with create_session() as session:
        events = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                                 .where(AssetModel.name == "press_9.bronze")).all()
        assert [e.extra["days"] for e in events] == [[DAY]]
    (record,) = decisions.for_run("press_9", dr.run_id)
    assert record["kind"] == "quarantine" and record["payload"]["days_written"] == [DAY]
    (item,) = record["payload"]["files"]
    assert item["file"] == "broken_20260324.parquet" and item["reason"].startswith("unreadable parquet (source parquet_wide): ")
    # The task's error names the file and why (what the operator reads in the log and the failure mail).
    from plantops.stages.pipeline import FilesQuarantined, report_quarantine

    with pytest.raises(FilesQuarantined, match=r"broken_20260324.parquet: unreadable parquet \(source parquet_wide\): "):
        report_quarantine("press_9", dr.run_id)

    # Nothing new: a skip, not a failure, and no bronze event.
    quiet = dag.test(logical_date=datetime(2026, 3, 26, tzinfo=timezone.utc))
    assert _states(quiet) == {"ingest_sources": "skipped", "report_quarantine": "skipped"}
    assert str(quiet.state) == "success"
    with create_session() as session:
        assert session.scalar(select(AssetEvent.id).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                              .where(AssetModel.name == "press_9.bronze").order_by(AssetEvent.id.desc())) \
            == events[0].id
