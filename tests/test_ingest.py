"""Ingest on real TEP days: historian + landed files -> bronze, quarantine with reasons, ledger."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from plantops.sources import historian, landing, replay
from plantops.stages import ingest
from plantops import storage
from plantops.config import get_use_case
from plantops.settings import get_settings


@pytest.fixture
def uc():
    return get_use_case("tep_reactor")


@pytest.fixture
def one_day(plantops_home, uc):
    episode = replay.HISTORY[-1]  # a normal day
    replay.replay_episode(uc, episode)
    return episode


def test_historian_day_lands_in_bronze_and_rerun_is_identical(one_day, uc):
    start, end = one_day.start, one_day.start + timedelta(days=1)
    first = ingest.ingest_historian(uc, start, end, "run-1")
    assert first["rows_in"] == 480 * 33 == first["rows_written"] and first["rows_rejected"] == 0
    path = get_settings().bronze_root / uc.id / f"date={one_day.day}" / "historian.parquet"
    before = pd.read_parquet(path)
    again = ingest.ingest_historian(uc, start, end, "run-2")
    after = pd.read_parquet(path)
    assert again["rows_written"] == first["rows_written"]
    pd.testing.assert_frame_equal(before.drop(columns="batch"), after.drop(columns="batch"))
    assert len(storage.read_bronze(get_settings().bronze_root, uc.id, str(one_day.day), "2099-01-01")) == 480 * 33


def test_out_of_range_historian_rows_are_rejected_with_reason_and_counted(one_day, uc):
    start = one_day.start
    bad = pd.DataFrame({"asset": [uc.historian.asset] * 2, "tag": ["XMEAS_9", "XMEAS_7"],
                        "ts": [start + timedelta(minutes=1), start + timedelta(minutes=2)],
                        "value": [500.0, 2700.0], "quality": ["good", "good"]})
    historian.write_tag_values(bad)
    result = ingest.ingest_historian(uc, start, start + timedelta(days=1), "run-1")
    assert result["rows_in"] == 480 * 33 + 2 == result["values_in"]
    assert result["rows_rejected"] == 1 == result["values_rejected"]
    assert result["rows_in"] == result["rows_written"] + result["rows_rejected"]
    rejected = pd.read_parquet(result["quarantined"])
    # The same record shape as a landed file's rejected values.
    assert list(rejected.columns) == ingest.REJECTED_COLUMNS
    assert rejected[["tag", "raw", "reason", "source"]].values.tolist() == [
        ["XMEAS_9", "500.0", "out of range [119.1, 121.5]", "historian"]]
    assert result["rejected_values"] == {"XMEAS_9": {"out of range [119.1, 121.5]": 1}}


def test_landed_file_is_ingested_once_and_archived(one_day, uc):
    first = ingest.ingest_landed(uc, "run-1")
    (item,) = first["files"]
    assert item["status"] == "ingested" and item["rows_in"] == 480 == item["rows_written"]
    assert not list(landing.landing_dir(uc.landing.folder).glob("*.parquet"))
    bronze = sorted((get_settings().bronze_root / uc.id).rglob("*.parquet"))
    before = [p.read_bytes() for p in bronze]
    # NiFi delivers the very same file again: a no-op, recorded as a duplicate.
    replay.replay_episode(uc, one_day)
    second = ingest.ingest_landed(uc, "run-2")
    assert [f["status"] for f in second["files"]] == ["duplicate"]
    ledger = landing.rows_of(uc.id)
    assert [(r["status"], r["duplicate_of"]) for r in ledger] == [("ingested", None), ("duplicate", item["file"])]
    assert sorted((get_settings().bronze_root / uc.id).rglob("*.parquet")) == bronze
    assert [p.read_bytes() for p in bronze] == before


def test_incomplete_files_are_not_read(plantops_home, uc):
    folder = landing.landing_dir(uc.landing.folder)
    folder.mkdir(parents=True)
    (folder / ".tep_reactor_analyzers_20260324.parquet").write_bytes(b"PAR1 half written")
    (folder / "other.parquet.part").write_bytes(b"PAR1")
    assert landing.scan(uc.landing.folder, uc.landing.pattern) == []
    assert ingest.ingest_landed(uc, "run-1") == {"files": []}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda path, frame: path.write_bytes(path.read_bytes()[:200]), "unreadable parquet"),
        (lambda path, frame: frame.drop(columns=["XMEAS_30"]).to_parquet(path), "expect_table_columns_to_match_set"),
        (lambda path, frame: frame.iloc[::-1].to_parquet(path), "expect_column_values_to_be_increasing"),
        (lambda path, frame: frame.iloc[:0].to_parquet(path), "expect_table_row_count_to_be_between"),
    ],
)
def test_bad_files_go_to_quarantine_untouched_with_reason(one_day, uc, damage, reason):
    (path,) = landing.landing_dir(uc.landing.folder).glob("*.parquet")
    frame = pd.read_parquet(path)
    damage(path, frame)
    original = path.read_bytes()
    result = ingest.ingest_landed(uc, "run-1")
    assert [f["status"] for f in result["files"]] == ["quarantined"]
    target = get_settings().quarantine_root / uc.id / path.name
    assert target.read_bytes() == original
    why = json.loads((target.parent / (target.name + ".reason.json")).read_text())
    assert reason in why["reason"]
    assert landing.rows_of(uc.id)[-1]["status"] == "quarantined"


def test_bad_rows_inside_a_good_file_are_dropped_and_counted(one_day, uc):
    (path,) = landing.landing_dir(uc.landing.folder).glob("*.parquet")
    frame = pd.read_parquet(path)
    frame.loc[10, "XMEAS_23"] = np.nan
    frame.loc[20, "XMEAS_24"] = 1e6
    frame.to_parquet(path)
    (item,) = ingest.ingest_landed(uc, "run-1")["files"]
    assert item["status"] == "ingested"
    # Two bad values in two rows: those values are rejected, their rows' other 18 values written.
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (480, 480, 0)
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (480 * 19, 480 * 19 - 2, 2)
    rejected = pd.read_parquet(item["rejected_rows_at"])
    assert rejected[["tag", "ts", "raw", "reason"]].values.tolist() == [
        ["XMEAS_23", frame.at[10, "ts"], "nan", "missing (NaN)"],
        ["XMEAS_24", frame.at[20, "ts"], "1000000.0", "out of range [6.2, 11.4]"]]
    bronze = storage.read_bronze(get_settings().bronze_root, uc.id, str(one_day.day), "2099-01-01")
    for row in (10, 20):
        written = bronze[bronze["ts"] == frame.at[row, "ts"]].set_index("tag")["value"]
        bad_tag = "XMEAS_23" if row == 10 else "XMEAS_24"
        assert written.to_dict() == frame.drop(columns=["ts", bad_tag]).loc[row].to_dict()


def test_release_puts_a_fixed_file_back_in_line(one_day, uc):
    (path,) = landing.landing_dir(uc.landing.folder).glob("*.parquet")
    good = pd.read_parquet(path)
    good.drop(columns=["XMEAS_30"]).to_parquet(path)
    ingest.ingest_landed(uc, "run-1")
    fixed = get_settings().quarantine_root / uc.id / path.name
    good.to_parquet(fixed)  # the engineer repairs the file in quarantine
    landing.release(uc.id, path.name, uc.landing.folder)
    (item,) = ingest.ingest_landed(uc, "run-2")["files"]
    assert item["status"] == "ingested" and item["rows_written"] == 480
    assert [r["status"] for r in landing.rows_of(uc.id)] == ["quarantined", "released", "ingested"]


def test_a_quarantined_file_is_mailed_to_the_operators(one_day, uc, tmp_path, monkeypatch):
    from plantops.environments import mailsink
    from plantops.stages import pipeline

    sink, port = mailsink.start(tmp_path / "mail")
    monkeypatch.setenv("AIRFLOW_CONN_PLANTOPS_SMTP", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
         "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 0}}))
    try:
        (path,) = landing.landing_dir(uc.landing.folder).glob("*.parquet")
        path.write_bytes(path.read_bytes()[:200])
        day = one_day.start
        result = pipeline.ingest(uc.id, day.isoformat(), (day + timedelta(days=1)).isoformat(), "run-q")
    finally:
        mailsink.stop(sink)
    assert result["quarantined_files"] == 1 and result["notified"]["sent"], result["notified"]
    (mail,) = mailsink.messages(tmp_path / "mail")
    assert mail["X-Envelope-To"] == "control-room@eastman-demo.example"
    assert mail["Subject"] == "[plantops tep_reactor] 1 landed file(s) quarantined"
    body = mail.get_body(("html", "plain")).get_content()
    assert path.name in body and "unreadable" in body and "/dags/tep_reactor__ingest/runs/run-q" in body
