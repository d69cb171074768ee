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
    assert result["rows_in"] == 480 * 33 + 2
    assert result["rows_rejected"] == 1
    assert result["rows_in"] == result["rows_written"] + result["rows_rejected"]
    rejected = pd.read_parquet(result["quarantined"])
    assert rejected["value"].tolist() == [500.0] and "XMEAS_9" in rejected["tag"].tolist()
    assert "greater_than" in rejected["reason"].iloc[0]


def test_landed_file_is_ingested_once_and_archived(one_day, uc):
    first = ingest.ingest_landed(uc, "run-1")
    (item,) = first["files"]
    assert item["status"] == "ingested" and item["rows_in"] == 480 == item["rows_written"]
    assert not list(landing.landing_dir(uc.landing.folder).glob("*.parquet"))
    # NiFi delivers the very same file again: a no-op, recorded as a duplicate.
    replay.replay_episode(uc, one_day)
    second = ingest.ingest_landed(uc, "run-2")
    assert [f["status"] for f in second["files"]] == ["duplicate"]
    assert [r["status"] for r in landing.rows_of(uc.id)] == ["ingested"]


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
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (480, 478, 2)
    rejected = pd.read_parquet(item["rejected_rows_at"])
    assert sorted(rejected["reason"].str.split("(").str[0].unique()) == [
        "expect_column_values_to_be_between", "expect_column_values_to_not_be_null"]


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
