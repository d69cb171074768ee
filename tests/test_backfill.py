"""Backfills leave built days alone (#15): a tag's carry-forward ends after ``features.max_gap``,
rolling windows cover time rather than rows, and a file of old days rebuilds only those days and
the built days that read them as lookback, in one job whatever the ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from plantops.features import format_ranges, parse_ranges, wide_features_pandas
from plantops.stages import pipeline
from spark_jobs.build_features import main
from tests.test_build_features import assert_same, spark_result, write_bronze_day

REPO = Path(__file__).resolve().parents[1]
T0 = pd.Timestamp("2024-03-01", tz="UTC")
UC = "line_b"
TAGS = ["XMEAS_7", "XMEAS_9"]


def rows(asset: str, tag: str, ts: pd.DatetimeIndex, values) -> pd.DataFrame:
    return pd.DataFrame({"asset": asset, "tag": tag, "ts": ts, "value": values, "quality": "good",
                         "source": "historian", "batch": "b1"})


def every_3_min(start: pd.Timestamp, hours: float) -> pd.DatetimeIndex:
    return start + pd.to_timedelta(np.arange(int(hours * 20)) * 180, unit="s")


# -- max_gap ----------------------------------------------------------------------------------------

def test_a_silent_tag_is_carried_for_max_gap_then_missing(spark):
    """X reports every 3 min for 12 h; Y only in the first hour. With max_gap 2 h, Y's last mean is
    carried over the buckets up to 2 h after its last one and is missing (NaN) from then on."""
    ts = every_3_min(T0, 12)
    long = pd.concat([rows("p1", "X", ts, np.arange(len(ts), dtype=float)),
                      rows("p1", "Y", ts[:20], np.full(20, 7.0)),
                      # a second asset whose Y never goes quiet: the limit is per asset and tag
                      rows("p2", "X", ts, np.ones(len(ts))), rows("p2", "Y", ts, np.full(len(ts), 3.0))])
    got = spark_result(spark, long, ["X", "Y"], 180, 4, max_gap_seconds=7200)
    want = wide_features_pandas(long, ["X", "Y"], 180, 4, max_gap_seconds=7200)
    assert_same(got, want)

    p1 = got[got["asset"] == "p1"].reset_index(drop=True)
    assert len(p1) == 240
    last_y = T0 + pd.Timedelta(minutes=57)
    carried = p1["ts"] <= last_y + pd.Timedelta(hours=2)
    assert int(carried.sum()) == 20 + 40  # its own hour, then 2 h of 3-min buckets
    assert (p1.loc[carried, "Y"] == 7.0).all()
    assert p1.loc[~carried, "Y"].isna().all() and int((~carried).sum()) == 180
    # The rolling mean keeps the carried values while they are in its 4-bucket window, no longer.
    assert p1["Y__rmean"].notna().sum() == 60 + 3
    assert got.loc[got["asset"] == "p2", "Y"].eq(3.0).all()

    # Without the limit (a max_gap longer than the data) the stale value would be carried to the end.
    unlimited = spark_result(spark, long, ["X", "Y"], 180, 4, max_gap_seconds=86400)
    assert unlimited.loc[unlimited["asset"] == "p1", "Y"].eq(7.0).all()


def test_max_gap_must_cover_a_bucket():
    with pytest.raises(SystemExit):
        main(["--input", "i", "--output", "o", "--start", "2024-03-01", "--end", "2024-03-02", "--tags", "X",
              "--bucket-seconds", "600", "--rolling-buckets", "6", "--max-gap-seconds", "300"])


# -- rolling over time ------------------------------------------------------------------------------

def test_rolling_windows_do_not_reach_across_a_gap(spark):
    """One day at 100, two silent days, then a day counting up from 0: the rolling window of the
    first rows after the gap holds only rows after it (a window of rows would average in the 100s)."""
    before = every_3_min(T0, 24)
    after = every_3_min(T0 + pd.Timedelta(days=3), 24)
    long = pd.concat([rows("p1", "X", before, np.full(len(before), 100.0)),
                      rows("p1", "X", after, np.arange(len(after), dtype=float))])
    got = spark_result(spark, long, ["X"], 180, 10)
    assert_same(got, wide_features_pandas(long, ["X"], 180, 10))

    later = got[got["ts"] >= after[0]].reset_index(drop=True)
    assert len(later) == 480
    expected = [np.mean(np.arange(max(0, i - 9), i + 1)) for i in range(10)]
    assert later["X__rmean"].head(10).tolist() == pytest.approx(expected)
    assert later["X__rstd"].iloc[0] == 0.0  # one value in the window: 0, not the spread of the 100s
    assert later["X__rstd"].iloc[1] == pytest.approx(np.std([0.0, 1.0], ddof=1))

    # On contiguous data a window of 10 buckets of time is the window of 10 rows it always was.
    first = got[got["ts"] < after[0]]
    assert first["X__rmean"].eq(100.0).all() and first["X__rstd"].eq(0.0).all()


# -- planning ---------------------------------------------------------------------------------------

def test_each_run_of_consecutive_days_is_its_own_range():
    assert pipeline.feature_window(["2025-06-01", "2024-01-03", "2024-01-02"]) == [
        {"start": "2024-01-02", "end": "2024-01-04"},
        {"start": "2025-06-01", "end": "2025-06-02"},
    ]


def test_a_changed_day_brings_the_built_days_that_read_it():
    built = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-06", "2025-06-01"]
    # 2023-12-31 is read as lookback by 2024-01-01 and -02 (lookback_days 2): both are rebuilt,
    # 2024-01-03 is not. 2024-01-05 (never built) brings 2024-01-06 but not a day that does not exist.
    assert pipeline.feature_window(["2023-12-31", "2024-01-05"], built, lookback_days=2) == [
        {"start": "2023-12-31", "end": "2024-01-03"},
        {"start": "2024-01-05", "end": "2024-01-07"},
    ]
    assert pipeline.feature_window(["2023-12-31"], built, lookback_days=0) == [
        {"start": "2023-12-31", "end": "2024-01-01"}]
    with pytest.raises(ValueError, match="the triggering ingest wrote nothing"):
        pipeline.feature_window([])


def test_ranges_round_trip_and_refuse_overlaps():
    spec = "2024-01-02:2024-01-04,2025-06-01:2025-06-02"
    assert format_ranges((r.isoformat() for r in pair) for pair in parse_ranges(spec)) == spec
    with pytest.raises(ValueError, match="overlap at 2024-01-03"):
        parse_ranges("2024-01-02:2024-01-04,2024-01-03:2024-01-05")
    with pytest.raises(ValueError, match="must be after the start"):
        parse_ranges("2024-01-04:2024-01-04")
    with pytest.raises(ValueError, match="expected START:END"):
        parse_ranges("2024-01-04")


# -- the backfill, end to end through the job -------------------------------------------------------

@pytest.fixture
def line_b(plantops_home, monkeypatch) -> Path:
    """A use case of two tags with lookback_days 2, in a private PLANTOPS_HOME."""
    spec = yaml.safe_load((REPO / "include" / "use_cases" / "tep_reactor.yaml").read_text())
    spec["id"] = UC
    spec["features"] = {"bucket": "3min", "rolling_buckets": 20, "lookback_days": 2, "max_gap": "6h"}
    spec["tags"] = [t for t in spec["tags"] if t["name"] in TAGS]
    folder = plantops_home / "use_cases"
    folder.mkdir()
    (folder / f"{UC}.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(folder))
    return plantops_home


def bronze_day(root: Path, day: str, level: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = every_3_min(pd.Timestamp(day, tz="UTC"), 24)
    frame = pd.concat(rows(asset, tag, ts, rng.normal(level, 5, len(ts)))
                      for asset in ("reactor_a", "reactor_b") for tag in TAGS)
    write_bronze_day(root / UC, day, frame)
    return frame


def build(days: list[str]) -> dict:
    """What <uc>__features does for the changed days: plan_window, then the job with its arguments."""
    from plantops.config import get_use_case
    from plantops.modalities.tags import feature_job_args

    plan = pipeline.plan_features(UC, days)
    assert main([*feature_job_args(get_use_case(UC)), "--ranges", plan["ranges"]]) == 0
    return plan


def files(features: Path) -> dict[str, dict[str, tuple[bytes, int]]]:
    """Every parquet file of every built day: name -> (bytes, mtime)."""
    return {d.name: {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(d.glob("*.parquet"))}
            for d in sorted(features.glob("date=*"))}


RECENT = ["2025-06-01", "2025-06-02", "2025-06-03", "2025-06-04"]


def test_a_backfilled_old_day_leaves_the_built_days_byte_for_byte(spark, line_b):
    from plantops.settings import get_settings

    bronze, features = get_settings().bronze_root, get_settings().features_root / UC
    recent = pd.concat([bronze_day(bronze, day, 50.0, i) for i, day in enumerate(RECENT)])
    assert build(RECENT)["ranges"] == "2025-06-01:2025-06-05"
    before = files(features)
    assert list(before) == [f"date={d}" for d in RECENT] and all(before.values())

    # A file of a day four months earlier lands beside them.
    old = bronze_day(bronze, "2025-02-10", 80.0, 99)
    plan = build(["2025-02-10"])
    assert plan == {"ranges": "2025-02-10:2025-02-11", "days": ["2025-02-10"], "lookahead": []}
    after = files(features)
    assert list(after) == ["date=2025-02-10", *before]
    for day, built in before.items():
        assert after[day] == built, f"{day} was rewritten by the backfill of 2025-02-10"

    # The old day is complete and is what the reference makes of its own rows.
    out = pipeline.load_features(UC)
    assert out.groupby("date").size().to_dict() == {d: 2 * 480 for d in ["2025-02-10", *RECENT]}
    want = wide_features_pandas(pd.concat([old, recent]), TAGS, 180, 20)
    assert_same(out.drop(columns="date"), want)


def test_a_backfilled_day_just_before_built_days_rebuilds_its_lookahead_only(spark, line_b):
    from plantops.settings import get_settings

    bronze, features = get_settings().bronze_root, get_settings().features_root / UC
    recent = pd.concat([bronze_day(bronze, day, 50.0, i) for i, day in enumerate(RECENT)])
    build(RECENT)
    before = files(features)
    first_rows = pipeline.load_features(UC, "2025-06-01", "2025-06-02").head(3)

    # 2025-05-31 arrives late and at another level: 2025-06-01 and -02 read it as lookback
    # (lookback_days 2) and are rebuilt with it, in the same range; -03 and -04 are not touched.
    late = bronze_day(bronze, "2025-05-31", 80.0, 42)
    plan = build(["2025-05-31"])
    assert plan == {"ranges": "2025-05-31:2025-06-03", "days": ["2025-05-31"],
                    "lookahead": ["2025-06-01", "2025-06-02"]}
    after = files(features)
    assert list(after) == ["date=2025-05-31", *before]
    for day in ("date=2025-06-01", "date=2025-06-02"):
        assert after[day] and not set(after[day]) & set(before[day]), f"{day} was not rebuilt"
    for day in ("date=2025-06-03", "date=2025-06-04"):
        assert after[day] == before[day], f"{day} was rewritten"

    # The rebuild mattered: the first rolling windows of 2025-06-01 now reach into 2025-05-31, and
    # every day equals the reference over all the bronze.
    rebuilt = pipeline.load_features(UC, "2025-06-01", "2025-06-02").head(3)
    assert (rebuilt["XMEAS_7__rmean"] - first_rows["XMEAS_7__rmean"]).abs().min() > 1.0
    out = pipeline.load_features(UC)
    want = wide_features_pandas(pd.concat([late, recent]), TAGS, 180, 20)
    assert_same(out.drop(columns="date"), want)


def test_one_job_builds_scattered_ranges_and_the_gate_checks_them(spark, line_b):
    """Two triggering runs of days a year apart: one job, two ranges, each read with its own
    lookback; nothing in between is read or written, and the GX gate checks exactly those days."""
    from plantops.settings import get_settings

    bronze = get_settings().bronze_root
    frames = [bronze_day(bronze, day, 50.0, i)
              for i, day in enumerate(["2024-01-02", "2024-01-03", "2025-01-10"])]
    # A day between the ranges that nobody asked for: it must stay unread and unbuilt.
    bronze_day(bronze, "2024-07-01", 50.0, 7)
    plan = build(["2024-01-02", "2025-01-10", "2024-01-03"])
    assert plan["ranges"] == "2024-01-02:2024-01-04,2025-01-10:2025-01-11"
    assert pipeline.built_feature_days(UC) == ["2024-01-02", "2024-01-03", "2025-01-10"]

    checked = pipeline.check_feature_ranges(UC, plan["ranges"])
    assert checked == {"asset": None, "rows": 3 * 2 * 480, "ranges": plan["ranges"],
                       "days": ["2024-01-02", "2024-01-03", "2025-01-10"], "missing": {}}
    assert_same(pipeline.load_features(UC).drop(columns="date"),
                wide_features_pandas(pd.concat(frames), TAGS, 180, 20))


def test_the_gate_passes_a_tag_missing_after_max_gap_and_counts_it(spark, line_b):
    """A tag silent for longer than max_gap is missing by contract: the gate passes the day and
    says how many rows miss it; a null where the contract never has one still fails the gate."""
    from plantops.config import get_use_case
    from plantops.settings import get_settings
    from plantops.stages.validation import validate_features

    frame = bronze_day(get_settings().bronze_root, "2024-01-02", 50.0, 1)
    # reactor_a's XMEAS_9 stops at 06:00: carried until 11:57 (6 h), missing from 12:00 on.
    quiet = (frame["asset"] == "reactor_a") & (frame["tag"] == "XMEAS_9") & (frame["ts"].dt.hour >= 6)
    write_bronze_day(get_settings().bronze_root / UC, "2024-01-02", frame[~quiet])
    build(["2024-01-02"])
    checked = pipeline.check_feature_ranges(UC, "2024-01-02:2024-01-03", asset=None)
    assert checked["rows"] == 2 * 480 and checked["missing"] == {"XMEAS_9": 240}

    features = pipeline.load_features(UC)
    assert validate_features(get_use_case(UC), features).success
    broken = features.assign(XMEAS_7__rstd=features["XMEAS_7__rstd"].where(features.index > 0))
    outcome = validate_features(get_use_case(UC), broken)
    assert not outcome.success and "expect_column_values_to_not_be_null(XMEAS_7__rstd): 1 rows" in outcome.reason()
