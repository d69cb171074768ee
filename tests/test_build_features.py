"""The Spark feature job: equal to the pandas reference, and rerun-safe when run as a job."""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantops.sources import tep
from plantops.features import DEFAULT_MAX_GAP_SECONDS, feature_columns, wide_features_pandas
from spark_jobs.build_features import main, parse_args, read_bronze, transform

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def tep_long(tags: list[str]) -> pd.DataFrame:
    """Two assets of real TEP data (normal run, fault 4) as bronze long rows at a 180 s cadence."""
    frames = []
    for asset, (fault, test) in {"reactor_a": (0, False), "reactor_b": (4, True)}.items():
        wide = pd.DataFrame(tep.load_run(fault, test)[:100], columns=list(tep.TAGS))[tags]
        wide["ts"] = T0 + pd.to_timedelta(np.arange(len(wide)) * tep.SAMPLE_SECONDS, unit="s")
        wide["asset"] = asset
        frames.append(wide.melt(id_vars=["asset", "ts"], var_name="tag", value_name="value"))
    long = pd.concat(frames, ignore_index=True)
    long["quality"] = "good"
    long["source"] = "historian"
    return long


def spark_result(spark, long: pd.DataFrame, tags: list[str], bucket_seconds: int, rolling: int,
                 max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS) -> pd.DataFrame:
    out = transform(spark.createDataFrame(long), tags, bucket_seconds, rolling, max_gap_seconds).toPandas()
    # toPandas gives naive timestamps in the session time zone (UTC in the fixture).
    out["ts"] = pd.to_datetime(out["ts"]).dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    return out.sort_values(["asset", "ts"]).reset_index(drop=True)


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal keys; features within rtol 1e-9 plus 1e-9 of the tag's magnitude.

    The absolute part is for pandas, not Spark: its online rolling variance cancels
    catastrophically when the spread is tiny next to the level (TEP analyzers: level ~50, std
    ~1e-3), which leaves ~1e-11 of noise where Spark's per-window recomputation is exact.
    """
    want = want.sort_values(["asset", "ts"]).reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got[["asset", "ts"]], want[["asset", "ts"]], check_dtype=False)
    for column in got.columns[2:]:
        tag = column.split("__")[0]
        scale = max(1.0, float(np.nanmax(np.abs(want[tag].to_numpy(dtype=float)), initial=0.0)))
        np.testing.assert_allclose(
            got[column].to_numpy(dtype=float), want[column].to_numpy(dtype=float),
            rtol=1e-9, atol=1e-9 * scale, equal_nan=True, err_msg=column,
        )


@pytest.mark.parametrize(
    ("bucket_seconds", "rolling", "damaged"),
    [(180, 10, False), (360, 4, True)],
    ids=["use-case-settings", "2-samples-per-bucket-with-holes"],
)
def test_transform_matches_pandas_reference_on_tep(spark, bucket_seconds, rolling, damaged):
    tags = list(tep.TAGS)
    long = tep_long(tags)
    if damaged:
        # Dropped samples and bad-quality values (with absurd readings) exercise the carry-forward
        # and the quality filter on the same real data.
        rng = np.random.default_rng(7)
        long = long[rng.random(len(long)) > 0.15].copy()
        bad = rng.random(len(long)) < 0.1
        long.loc[bad, "quality"] = "bad"
        long.loc[bad, "value"] = 1e9
    want = wide_features_pandas(long, tags, bucket_seconds, rolling)
    got = spark_result(spark, long, tags, bucket_seconds, rolling)
    assert list(got.columns) == ["asset", "ts", *feature_columns(tags)]
    assert len(got) == 2 * 100 * 180 // bucket_seconds
    assert_same(got, want)


def test_bad_quality_is_ignored_and_gaps_are_carried_forward(spark):
    def row(minute: int, tag: str, value: float, quality: str = "good") -> dict:
        return {"asset": "p1", "tag": tag, "ts": T0 + pd.Timedelta(minutes=minute), "value": value,
                "quality": quality, "batch": "b1"}

    long = pd.DataFrame(
        [
            row(0, "X", 1.0), row(1, "X", 3.0), row(2, "X", 500.0, "bad"), row(0, "Y", 10.0),
            row(3, "X", 5.0), row(4, "Y", float("nan")),  # Y missing in bucket 1: carried
            row(6, "X", 7.0, "suspect"), row(7, "Y", 999.0, "bad"),  # bucket 2: no good rows
            row(9, "X", 9.0), row(10, "Y", 20.0), row(9, "OTHER", 1e6),  # tag not asked for
        ]
    )
    got = spark_result(spark, long, ["X", "Y"], 180, 2)

    assert got["ts"].tolist() == [T0, T0 + pd.Timedelta(minutes=3), T0 + pd.Timedelta(minutes=9)]
    assert got["X"].tolist() == [2.0, 5.0, 9.0]
    assert got["Y"].tolist() == [10.0, 10.0, 20.0]
    # The window is 2 buckets of time: at minute 9 it spans buckets 2 and 3, and bucket 2 has no
    # row, so only bucket 3 counts (a window of 2 rows would have reached back to bucket 1).
    assert got["X__rmean"].tolist() == [2.0, 3.5, 9.0]
    assert got["Y__rstd"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert got["Y__rmean"].tolist() == [10.0, 10.0, 20.0]
    assert_same(got, wide_features_pandas(long, ["X", "Y"], 180, 2))


def write_bronze_day(root: Path, day: str, frame: pd.DataFrame, coerce: str | None = None) -> None:
    """Like plantops.storage: pyarrow from pandas, so timestamps are nanoseconds unless coerced."""
    folder = root / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"coerce_timestamps": coerce, "allow_truncated_timestamps": True} if coerce else {}
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "historian.parquet", **kwargs)


@pytest.mark.parametrize("unit", ["ns", "us"])
def test_read_bronze_accepts_nano_and_microsecond_files(spark, tmp_path, unit):
    frame = pd.DataFrame({"asset": ["p1"], "tag": ["X"], "ts": [T0 + pd.Timedelta(seconds=61.5)],
                          "value": [1.0], "quality": ["good"], "source": ["historian"], "batch": ["b1"]})
    write_bronze_day(tmp_path, "2024-03-01", frame, coerce=None if unit == "ns" else "us")
    rows = read_bronze(spark, str(tmp_path), date(2024, 3, 1), date(2024, 3, 2))
    got = rows.toPandas()
    assert got["ts"].tolist() == [pd.Timestamp("2024-03-01 00:01:01.5")]


def two_days_of_bronze(root: Path) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frames = []
    for day in ("2024-03-01", "2024-03-02"):
        ts = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.arange(480) * 180, unit="s")
        day_rows = pd.concat(
            pd.DataFrame({"asset": asset, "tag": tag, "ts": ts, "value": rng.normal(50, 5, len(ts)),
                          "quality": "good", "source": "historian", "batch": f"b-{day}"})
            for asset in ("reactor_a", "reactor_b")
            for tag in ("XMEAS_7", "XMEAS_9")
        )
        write_bronze_day(root, day, day_rows)
        frames.append(day_rows)
    return pd.concat(frames, ignore_index=True)


def job_args(bronze: Path, features: Path, start: str, end: str) -> list[str]:
    return ["--input", str(bronze), "--output", str(features), "--start", start, "--end", end,
            "--lookback-days", "1", "--tags", "XMEAS_7,XMEAS_9", "--bucket-seconds", "180",
            "--rolling-buckets", "10"]


def snapshot(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in folder.glob("*.parquet")}


def test_main_writes_day_partitions_and_a_rerun_replaces_only_its_days(spark, tmp_path):
    bronze, features = tmp_path / "bronze", tmp_path / "features"
    long = two_days_of_bronze(bronze)

    # 2024-02-29 (lookback of the first day) has no bronze folder: that must not fail.
    assert main(job_args(bronze, features, "2024-03-01", "2024-03-03")) == 0
    assert sorted(p.name for p in features.glob("date=*")) == ["date=2024-03-01", "date=2024-03-02"]
    first_day = snapshot(features / "date=2024-03-01")
    second_day = snapshot(features / "date=2024-03-02")
    assert first_day and second_day

    assert main(job_args(bronze, features, "2024-03-02", "2024-03-03")) == 0
    assert snapshot(features / "date=2024-03-01") == first_day
    rewritten = snapshot(features / "date=2024-03-02")
    assert rewritten and not set(rewritten) & set(second_day)

    out = pd.read_parquet(features)
    out["date"] = out["date"].astype(str)
    assert out.groupby("date").size().to_dict() == {"2024-03-01": 2 * 480, "2024-03-02": 2 * 480}
    # The rerun read 03-01 as lookback, so its first buckets of 03-02 have warm windows and match
    # the reference computed over both days.
    want = wide_features_pandas(long, ["XMEAS_7", "XMEAS_9"], 180, 10)
    got = out.drop(columns="date").astype({"ts": "datetime64[ns, UTC]"}).sort_values(["asset", "ts"])
    assert_same(got.reset_index(drop=True), want)


def test_main_fails_clearly_on_a_range_without_data(spark, tmp_path, caplog):
    bronze, features = tmp_path / "bronze", tmp_path / "features"
    two_days_of_bronze(bronze)
    with caplog.at_level(logging.ERROR):
        assert main(job_args(bronze, features, "2024-03-05", "2024-03-07")) == 1
        assert main(job_args(tmp_path / "nowhere", features, "2024-03-01", "2024-03-02")) == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "no good bronze rows" in messages[0] and "2024-03-05" in messages[0]
    assert "no bronze parquet" in messages[1]
    assert not features.exists()


def test_arguments_are_checked_before_spark_starts():
    with pytest.raises(SystemExit):
        parse_args(["--input", "i", "--output", "o", "--start", "2024-03-02", "--end", "2024-03-02",
                    "--tags", "X", "--bucket-seconds", "180", "--rolling-buckets", "10"])
    with pytest.raises(SystemExit):
        parse_args(["--input", "i", "--output", "o", "--start", "2024-03-01", "--end", "2024-03-02",
                    "--tags", "X,X", "--bucket-seconds", "180", "--rolling-buckets", "10"])


def good_rows(asset: str, tag: str, ts: pd.DatetimeIndex, values) -> pd.DataFrame:
    return pd.DataFrame({"asset": asset, "tag": tag, "ts": ts, "value": values, "quality": "good",
                         "source": "historian", "batch": "b1"})


def test_one_asset_with_many_tags_and_different_gaps_equals_pandas_exactly(spark):
    """One asset, eight tags at different cadences: X every 3 min; S silent for 3 h in the middle,
    longer than max_gap (1 h), while the others report; R only every 21 min; B in two bursts; E
    only in the first half hour; H with bad-quality rows; plus a second asset. Values are
    multiples of 1/4, so means and rolling means are exact in both engines and must be equal to
    the bit; the rolling std (pandas' online variance) is compared as in assert_same."""
    ts = T0 + pd.to_timedelta(np.arange(160) * 180, unit="s")  # 8 h of 180 s buckets
    n = len(ts)
    quarter = np.arange(n, dtype=float) / 4
    silent = (ts >= T0 + pd.Timedelta(hours=2)) & (ts < T0 + pd.Timedelta(hours=5))
    bad = pd.DataFrame({"asset": "p1", "tag": "H", "ts": ts[::5], "value": 1e9, "quality": "bad",
                        "source": "historian", "batch": "b1"})
    long = pd.concat([
        good_rows("p1", "X", ts, quarter),
        good_rows("p1", "S", ts[~silent], 100 - quarter[~silent]),
        good_rows("p1", "R", ts[::7], quarter[::7] * 3),
        good_rows("p1", "B", ts[10:20].append(ts[90:95]), np.r_[np.full(10, 2.5), np.full(5, -1.25)]),
        good_rows("p1", "E", ts[:10], np.full(10, 4.0)),
        good_rows("p1", "H", ts[::2], quarter[::2] + 0.5), bad,
        good_rows("p1", "Q", ts[1::3], np.full(len(ts[1::3]), 0.75)),
        good_rows("p1", "Z", ts[-3:], np.full(3, 9.0)),
        good_rows("p2", "X", ts[::4], np.ones(len(ts[::4]))), good_rows("p2", "S", ts[2::4], np.full(len(ts[2::4]), 6.0)),
    ], ignore_index=True)
    tags = ["X", "S", "R", "B", "E", "H", "Q", "Z"]
    got = spark_result(spark, long, tags, 180, 5, max_gap_seconds=3600)
    want = wide_features_pandas(long, tags, 180, 5, max_gap_seconds=3600)
    want = want.sort_values(["asset", "ts"]).reset_index(drop=True)

    # p1 has a row in every bucket (X reports throughout); p2 one where X or S reports.
    assert len(got[got["asset"] == "p1"]) == 160 and len(got[got["asset"] == "p2"]) == 80
    exact = ["asset", "ts", *tags, *(f"{tag}__rmean" for tag in tags)]
    pd.testing.assert_frame_equal(got[exact], want[exact], check_dtype=False, check_exact=True)
    assert_same(got, want)

    p1 = got[got["asset"] == "p1"].set_index("ts")
    # S is silent from 02:00 to 05:00: its 01:57 value is carried through 02:57 (20 buckets), then
    # missing for the 2 h until it reports again; the others keep their rows meanwhile.
    gap = p1.loc[T0 + pd.Timedelta(hours=2):T0 + pd.Timedelta(hours=5, seconds=-1), "S"]
    assert len(gap) == 60 and (gap.iloc[:20] == 100 - 39 / 4).all() and int(gap.isna().sum()) == 40
    # R reports every 21 min (< max_gap): never missing; E's last value (00:27) ends at 01:27.
    assert int(p1["R"].isna().sum()) == 0
    assert int(p1["E"].notna().sum()) == 10 + 20
    # Z only reports in the last 3 buckets: missing before them, constant (std 0) after.
    assert int(p1["Z"].notna().sum()) == 3 and p1["Z__rstd"].eq(0.0).all()


def test_the_window_stage_is_partitioned_by_asset_and_tag(spark, capsys):
    """The windows run per (asset, tag), not per asset: one asset's tags spread over every core
    and executor. A regression to asset-only partitioning (one task per asset) fails here."""
    long = tep_long(["XMEAS_1", "XMEAS_2"])
    features = transform(spark.createDataFrame(long), ["XMEAS_1", "XMEAS_2"], 180, 10)
    features.explain(mode="simple")
    plan = capsys.readouterr().out
    windows = re.findall(r"\bWindow \[.*\], \[([^\]]*)\], \[[^\]]*\]", plan)
    assert len(windows) >= 2, plan  # the carry-forward and the rolling mean/std
    assert {re.sub(r"#\d+", "", spec) for spec in windows} == {"asset, tag"}, plan
    assert re.search(r"Exchange hashpartitioning\(asset#\d+, tag#\d+, \d+\)", plan), plan
