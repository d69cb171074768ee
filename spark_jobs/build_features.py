"""Build the wide feature table of one use case from its bronze rows (PySpark job).

Reads ``<input>/date=YYYY-MM-DD/*.parquet`` (long rows: asset, tag, ts, value, quality, ...) for
each day range ``[start, end)`` of ``--ranges`` (or the one range ``--start``/``--end``) plus its
own ``lookback_days`` before it, turns them into the wide contract of :mod:`plantops.features`
(per asset and time bucket: ``<tag>``, ``<tag>__rmean``, ``<tag>__rstd``) and writes the buckets
of the ranges to ``<output>/date=YYYY-MM-DD/``.

The lookback days are read only to warm up the carry-forward and the rolling windows; they are
never written. Each range is transformed on its own, so a backfill of an old day lands in a range
of its own and the days between it and today are neither read nor written. The write replaces
exactly the day partitions it produces, so a rerun of a range is idempotent and leaves every
other day alone.

Spark writes every range into one hidden staging folder first and each day folder is then swapped
into place with one atomic rename, so a job killed at any instant leaves each day complete and
either old or new (:mod:`spark_jobs.jobkit`, shared with the image features job).

    spark-submit --master 'local[2]' spark_jobs/build_features.py \\
        --input data/bronze/tep_reactor --output data/features/tep_reactor \\
        --ranges 2024-01-02:2024-01-04,2025-06-01:2025-06-02 --lookback-days 1 \\
        --tags XMEAS_1,XMEAS_2 --bucket-seconds 180 --rolling-buckets 10 --max-gap-seconds 21600
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from datetime import date, datetime, timedelta, timezone

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, TimestampType

from plantops.config import IDENTIFIER
from plantops.features import DEFAULT_MAX_GAP_SECONDS, parse_ranges
from spark_jobs.jobkit import (  # noqa: F401 - STAGING_PREFIX, sweep_staging, publish: this job's API since round 1
    STAGING_PREFIX,
    absolute,
    publish,
    run_job,
    sweep_staging,
    write_partitions,
)

log = logging.getLogger(__name__)

BRONZE_COLUMNS = ("asset", "tag", "ts", "value", "quality")
LOCK_FILE = ".build_features.lock"


class NoDataError(RuntimeError):
    """The requested range has no usable bronze rows: nothing would be written."""


def _good(df: DataFrame, tags: list[str]) -> DataFrame:
    """The rows that count as measurements.

    Null and NaN values are dropped here rather than averaged: pandas' pivot_table skips them, and
    a bucket whose only values were NaN must not exist (it would stop the carry-forward).
    """
    return df.filter(
        (F.col("quality") == "good")
        & F.col("tag").isin(list(tags))
        & F.col("value").isNotNull()
        & ~F.isnan(F.col("value"))
    )


def _epoch(ts: Column) -> Column:
    return F.unix_seconds(ts)


def _utc_day(ts: Column) -> Column:
    """'YYYY-MM-DD' of the UTC day, from epoch seconds: independent of the session time zone."""
    return F.date_from_unix_date(F.floor(_epoch(ts) / 86400).cast("int")).cast("string")


def transform(
    df: DataFrame, tags: list[str], bucket_seconds: int, rolling_buckets: int,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> DataFrame:
    """Bronze long rows -> wide features, numerically equal to ``wide_features_pandas``.

    One row per asset and bucket that has at least one good value of one of ``tags``; ``ts`` is
    the bucket start. Columns: ``asset``, ``ts``, then ``feature_columns(tags)``. A tag's last
    bucket mean is carried forward for at most ``max_gap_seconds``; the rolling windows cover the
    last ``rolling_buckets`` buckets of time, whatever rows there are in them.

    The windows run on long rows partitioned by (asset, tag), so one asset's tags are spread over
    every core and executor (see :func:`_windowed`); the result is made wide afterwards.
    """
    tags = list(tags)
    if not tags:
        raise ValueError("transform needs at least one tag")
    if bucket_seconds < 1 or rolling_buckets < 1:
        raise ValueError(
            f"bucket_seconds and rolling_buckets must be >= 1, got {bucket_seconds}, {rolling_buckets}"
        )
    if max_gap_seconds < bucket_seconds:
        raise ValueError(f"max_gap_seconds ({max_gap_seconds}) must be >= bucket_seconds ({bucket_seconds})")

    epoch = _epoch(F.col("ts"))
    # pmod keeps the arithmetic in integers (the Python Column API has no `div`) and floors like
    # pandas' `//`, so the buckets agree with the reference even before 1970.
    bucket = (epoch - F.pmod(epoch, F.lit(bucket_seconds))).alias("bucket")
    # Aggregate the long rows per (asset, bucket, tag) first: the shuffle then moves one row per
    # tag and bucket instead of every raw point, and the map side combines in parallel.
    per_tag = (
        _good(df, tags)
        .select("asset", "tag", bucket, F.col("value").cast("double").alias("value"))
        .groupBy("asset", "bucket", "tag")
        .agg(F.sum("value").alias("total"), F.count("value").alias("n"))
    )
    # Explicit pivot values: no extra job to discover them, and the column order is the tag order.
    wide = per_tag.groupBy("asset", "bucket").pivot("tag", tags).agg(F.first(F.col("total") / F.col("n")))
    # Back to long rows, now one per (asset, bucket of any tag, tag), null where the tag has no
    # value in that bucket: the rows every tag's windows must see, whichever tag made the bucket.
    grid = wide.unpivot(["asset", "bucket"], tags, "tag", "value")
    windowed = _windowed(grid, bucket_seconds, rolling_buckets, max_gap_seconds)

    # Explicit pivot values again; one row per (asset, bucket, tag), so first() is that row's value.
    back = windowed.groupBy("asset", "bucket").pivot("tag", tags).agg(
        F.first("value").alias("v"), F.first("rmean").alias("rmean"), F.first("rstd").alias("rstd"))
    features: list[Column] = []
    for tag in tags:
        features.append(F.col(f"{tag}_v").alias(tag))
        features.append(F.col(f"{tag}_rmean").alias(f"{tag}__rmean"))
        features.append(F.col(f"{tag}_rstd").alias(f"{tag}__rstd"))
    return back.select("asset", F.timestamp_seconds("bucket").alias("ts"), *features)


def _windowed(grid: DataFrame, bucket_seconds: int, rolling_buckets: int, max_gap_seconds: int) -> DataFrame:
    """Carry-forward and rolling mean/std of long rows (asset, bucket, tag, value), per (asset, tag).

    Partitioning by (asset, tag) rather than by asset makes one asset's 52 tags 52 window
    partitions: with one asset (one plant, the benchmark) the stage is no longer one task.
    """
    ordered = Window.partitionBy("asset", "tag").orderBy("bucket")
    # Carry-forward as pandas does it: the last value so far and the bucket it came from, kept
    # while that bucket is at most max_gap old. This is last(ignorenulls) over
    # rangeBetween(-max_gap, 0), but over a running frame Spark updates per row in O(1); a
    # sliding range frame is recomputed from its whole buffer at every row (360 rows for 6 h of
    # 60 s buckets).
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    last_value = F.last("value", ignorenulls=True).over(so_far)
    seen = F.last(F.when(F.col("value").isNotNull(), F.col("bucket")), ignorenulls=True).over(so_far)
    filled = grid.select(
        "asset", "bucket", "tag", F.when(F.col("bucket") - seen <= max_gap_seconds, last_value).alias("value"))

    # A range of the integer bucket epoch, not a count of rows: a months-long gap between two rows
    # is a gap, so what a row gets never depends on how far back a run read.
    rolling = ordered.rangeBetween(-(rolling_buckets - 1) * bucket_seconds, Window.currentRow)
    # avg and stddev_samp skip nulls, matching pandas' min_periods=1 mean and min_periods=2 std;
    # stddev_samp is null below two values, where the contract says 0.
    return filled.select(
        "asset", "bucket", "tag", "value",
        F.avg("value").over(rolling).alias("rmean"),
        F.coalesce(F.stddev_samp("value").over(rolling), F.lit(0.0)).alias("rstd"),
    )


def open_bronze(spark: SparkSession, root: str) -> DataFrame:
    """Every bronze row under ``root`` (lazily: nothing is scanned until days are picked with
    :func:`bronze_days`), ``ts`` as a Spark timestamp, plus the ``date`` partition as a string.

    Raises NoDataError when the root has no readable parquet at all.
    """
    # pyarrow writes pandas' datetime64[ns] as TIMESTAMP(NANOS), which Spark refuses to read as a
    # timestamp; with this flag such columns arrive as epoch nanoseconds and are converted below.
    # Files with micro/millisecond timestamps are not affected.
    spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    try:
        raw = spark.read.parquet(root)
    except AnalysisException as exc:
        # PATH_NOT_FOUND or UNABLE_TO_INFER_SCHEMA: a root without any bronze file.
        raise NoDataError(f"no bronze parquet under {root} ({exc.getCondition()})") from exc
    missing = [c for c in (*BRONZE_COLUMNS, "date") if c not in raw.columns]
    if missing:
        raise ValueError(f"{root}: bronze rows lack columns {missing} (expected date=YYYY-MM-DD folders)")
    # Partition type inference makes `date` a DateType or, for odd folder names, a string; a
    # string comparison of ISO dates is correct for both and still prunes partitions.
    df = raw.withColumn("date", F.col("date").cast("string"))
    ts_type = raw.schema["ts"].dataType
    if isinstance(ts_type, LongType):
        # Integer `div` (exact, unlike `/` on doubles); F.timestamp_nanos would produce Spark
        # 4.3's experimental nanosecond type, which is disabled by default.
        df = df.withColumn("ts", F.timestamp_micros(F.expr("ts div 1000")))
    elif not isinstance(ts_type, TimestampType):
        raise ValueError(f"{root}: bronze column ts is {ts_type.simpleString()}, expected a timestamp")
    return df.select(*BRONZE_COLUMNS, "date")


def bronze_days(bronze: DataFrame, first_day: date, end_day: date) -> DataFrame:
    """The rows of :func:`open_bronze` in the day partitions [first_day, end_day): Spark lists
    and scans only those folders, and missing days are simply absent."""
    day = F.col("date")
    return bronze.filter((day >= F.lit(first_day.isoformat())) & (day < F.lit(end_day.isoformat()))).select(
        *BRONZE_COLUMNS)


def read_bronze(spark: SparkSession, root: str, first_day: date, end_day: date) -> DataFrame:
    """Bronze rows of the day partitions in [first_day, end_day), ``ts`` as a Spark timestamp."""
    return bronze_days(open_bronze(spark, root), first_day, end_day)


def _iso_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {text!r}") from exc


def _tag_list(text: str) -> list[str]:
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if not tags:
        raise argparse.ArgumentTypeError("expected at least one tag")
    bad = [t for t in tags if not re.match(IDENTIFIER, t)]
    if bad:
        # Tags become column names; anything else would need quoting everywhere downstream.
        raise argparse.ArgumentTypeError(f"tag names must match {IDENTIFIER}, got {bad}")
    dupes = sorted({t for t in tags if tags.count(t) > 1})
    if dupes:
        raise argparse.ArgumentTypeError(f"duplicate tags: {dupes}")
    return tags


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _range_list(text: str) -> list[tuple[date, date]]:
    try:
        return parse_ranges(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_features", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--input", required=True, help="bronze folder of one use case (date=YYYY-MM-DD/*.parquet)")
    add("--output", required=True, help="features folder of the use case")
    add("--ranges", type=_range_list, default=None,
        help="START:END[,START:END...]: day ranges [START, END) to write, each with its own lookback "
             "(instead of --start/--end)")
    add("--start", type=_iso_day, default=None, help="first day to write (inclusive); one range")
    add("--end", type=_iso_day, default=None, help="day after the last one to write (exclusive)")
    add("--lookback-days", type=_non_negative, default=1, help="extra days read to warm up the windows")
    add("--tags", required=True, type=_tag_list, help="comma-separated tag names, in column order")
    add("--bucket-seconds", required=True, type=_positive)
    add("--rolling-buckets", required=True, type=_positive)
    add("--max-gap-seconds", type=_positive, default=DEFAULT_MAX_GAP_SECONDS,
        help="how long a tag's last bucket mean is carried forward before the tag counts as missing")
    add("--master", default=None, help="Spark master; default: spark-submit's, else local[*]")
    # Explicit only, not SPARK_REMOTE: the Airflow connection chooses the engine, and an ambient
    # variable must not silently send a spark-submit'ed or in-test run to another server.
    add("--remote", default=None, metavar="sc://HOST:PORT",
        help="run on this Spark Connect server (a new client session, released at the end) instead of "
             "a local or spark-submit session")
    args = parser.parse_args(argv)
    if args.remote:
        # The server resolves relative paths against its own working directory, not ours.
        args.input, args.output = (absolute(p) for p in (args.input, args.output))
        if args.master:
            parser.error("give either --master or --remote, not both")
    if args.ranges is not None:
        if args.start or args.end:
            parser.error("give either --ranges or --start/--end, not both")
    elif args.start is None or args.end is None:
        parser.error("give the days to write: --ranges START:END[,...] or --start and --end")
    elif args.end <= args.start:
        parser.error(f"--end ({args.end}) must be after --start ({args.start})")
    else:
        args.ranges = [(args.start, args.end)]
    if args.max_gap_seconds < args.bucket_seconds:
        parser.error(f"--max-gap-seconds ({args.max_gap_seconds}) must be >= --bucket-seconds ({args.bucket_seconds})")
    if 86400 % args.bucket_seconds:
        # A bucket straddling midnight is written with the day it starts in but averages rows
        # of the next day, so its value depends on which range's run wrote it last.
        log.warning("--bucket-seconds %d does not divide a day; buckets cross midnight", args.bucket_seconds)
    reach = args.max_gap_seconds + (args.rolling_buckets - 1) * args.bucket_seconds
    if args.lookback_days * 86400 < reach:
        # Then the first hours of a range depend on where the range starts: a day rebuilt alone
        # can differ from the same day built after its predecessor.
        log.warning("--lookback-days %d reads less than max gap + rolling window (%d s) before each range",
                    args.lookback_days, reach)
    return args


def _epoch_seconds(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def _spans(ranges: list[tuple[date, date]]) -> str:
    return ", ".join(f"[{start}, {end})" for start, end in ranges)


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, int]:
    """Read, transform and write the ranges in one write. Returns row counts; raises NoDataError.

    Each range is read with its own lookback and transformed on its own (its windows never see
    another range's rows); the ranges' rows are then written and published together, so one job
    and one staging folder serve a daily run and a backfill of scattered old days alike.
    """
    # The job itself computes buckets and days from epoch seconds and does not depend on the
    # session time zone; UTC keeps anything a person reads off this session (logs, show()) in UTC.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Spark's default INT96 is deprecated and read back by pyarrow as a naive timestamp.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    source = open_bronze(spark, args.input)
    seen_in: list[Observation] = []
    parts: list[DataFrame] = []
    empty: list[tuple[date, date]] = []
    for start, end in args.ranges:
        bronze = bronze_days(source, start - timedelta(days=args.lookback_days), end)
        start_s, end_s = _epoch_seconds(start), _epoch_seconds(end)
        in_range = (_epoch(F.col("ts")) >= start_s) & (_epoch(F.col("ts")) < end_s)
        # A cheap limit-1 probe: a range without good rows would write nothing, and silently
        # succeeding on it would hide a broken upstream ingest.
        if _good(bronze, args.tags).filter(in_range).isEmpty():
            empty.append((start, end))
            continue
        # Observations count during the write itself instead of re-running the plan for count().
        seen_in.append(Observation(f"bronze_in_{len(seen_in)}"))
        bronze = bronze.observe(seen_in[-1], F.count(F.lit(1)).alias("rows"))
        parts.append(
            transform(bronze, args.tags, args.bucket_seconds, args.rolling_buckets, args.max_gap_seconds)
            .filter(in_range))
    if not parts:
        raise NoDataError(
            f"no good bronze rows for the {len(args.tags)} tags in {_spans(args.ranges)} under {args.input}")
    if empty:
        log.warning("no good bronze rows in %s under %s: those days are left as they are",
                    _spans(empty), args.input)

    seen_out = Observation("features_out")
    features = parts[0]
    for part in parts[1:]:
        features = features.unionByName(part)
    features = (
        features
        .withColumn("date", _utc_day(F.col("ts")))
        .observe(seen_out, F.count(F.lit(1)).alias("rows"))
        # One file per day, rows in key order: the readers load whole days per asset.
        .repartition("date")
        .sortWithinPartitions("asset", "ts")
    )
    write_partitions(features, args.output, "date", spark, args.remote, LOCK_FILE)
    return {"rows_in": sum(int(o.get["rows"]) for o in seen_in), "rows_out": int(seen_out.get["rows"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    counts = run_job("build_features", args, run, NoDataError)
    if counts is None:
        return 1
    log.info(
        "build_features: %d bronze rows in (with %d lookback days per range), %d feature rows out for %s -> %s "
        "in %.1f s",
        counts["rows_in"],
        args.lookback_days,
        counts["rows_out"],
        _spans(args.ranges),
        args.output,
        time.monotonic() - began,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
