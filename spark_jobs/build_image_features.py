"""Build the image features of one visual-inspection use case from its bronze images (PySpark job).

Reads the accepted images of the given days (``bronze/<use_case>/images/day=YYYY-MM-DD/*.png``,
decoded by Spark's built-in ``image`` source) with their inspection rows
(``bronze/<use_case>/inspections/day=YYYY-MM-DD/*.parquet``) and writes one row per image to
``features/<use_case>/images/day=YYYY-MM-DD/``: the inspection columns, the monitoring statistics of
the 0..255 values and the model input ``pixels`` (the ``size`` x ``size`` block means / 255), equal
to :mod:`plantops.image_features`, the numpy reference.

Column expressions only, no Python UDF: the decoded bytes (``image.data``, one byte per pixel) are
read as ISO-8859-1 text, whose code points are the byte values, and ``split(text, '')`` +
``ascii()`` turn them into an int array in one linear pass (see :func:`pixel_values`). The block
means are two passes of ``aggregate`` over that array (row sums of each block column, then the
block rows), the statistics are integer sums, counts and the sorted array (``sort_array``: native;
``array_sort`` compares through an interpreted lambda), exact as numpy computes them.
Each array is computed once per image: it is bound as a lambda variable
(``element_at(transform(array(<expr>), p -> ...), 1)``) rather than repeated in every expression
that reads it.

The write replaces exactly the day partitions it produces, atomically per day (the staging folder,
swap and sweep of :mod:`spark_jobs.jobkit`, shared with ``build_features.py``); days without
images are left as they are.

    spark-submit --master 'local[2]' spark_jobs/build_image_features.py \\
        --use-case pv_cells --days 2024-05-01,2024-05-02 --size 60
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from datetime import date, timedelta

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from plantops.config import IDENTIFIER
from plantops.features import parse_ranges
from plantops.image_features import DARK_AT, SATURATED_AT
from plantops.settings import get_settings
from spark_jobs.jobkit import absolute, run_job, write_partitions

log = logging.getLogger(__name__)

PARTITION = "day"
LOCK_FILE = ".build_image_features.lock"
DEFAULT_SIZE = 60
META = ("run_id", "cell_id", "module_id", "module_type", "line", "camera_id", "captured_at", "sha256")
STATS = ("mean", "std", "min", "max", "p01", "p99", "dark_share", "saturated_share")
COLUMNS = (*META, *STATS, "size", "pixels")


class NoDataError(RuntimeError):
    """None of the requested days has an image in bronze: nothing would be written."""


def pixel_values(data: str = "data") -> str:
    """SQL of the pixel values (array<int>, row-major) of the 8-bit greyscale bytes ``data``.

    ISO-8859-1 maps every byte to the code point of the same value, ``split(s, '')`` cuts a string
    into its characters in one pass and ``ascii`` returns a character's code point. Measured on
    real cells against ``conv(hex(substring(data, i, 1)), 16, 10)`` per byte and ``conv`` of 6-byte
    chunks plus shifts: 14 ms per 300x300 image here, against 1.4 s and 0.2 s (a lambda that reads
    ``data`` once per pixel is evaluated interpreted, ~16 us a call).
    """
    return f"transform(split(decode({data}, 'ISO-8859-1'), ''), c -> ascii(c))"


def _percentile(q: float) -> str:
    """numpy's default (linear) percentile of the sorted array ``s`` of ``n`` values, to the bit:
    the same virtual index and the same two-sided interpolation as numpy's ``_lerp``."""
    h = f"({q!r}D * (n - 1))"
    lo = f"cast(floor({h}) as int)"
    a, b, t = f"s[{lo}]", f"s[least({lo} + 1, n - 1)]", f"({h} - floor({h}))"
    return f"if({t} >= 0.5, {b} - ({b} - {a}) * (1 - {t}), {a} + ({b} - {a}) * {t})"


def features_expr(size: int, data: str = "data", height: str = "height", width: str = "width") -> Column:
    """One struct per image: the :data:`STATS` (double) and ``pixels`` (array<float>, size*size).

    ``size`` must divide ``height`` and ``width`` (checked by the job before this runs).
    """
    s = int(size)
    kh, kw = f"({height} div {s})", f"({width} div {s})"
    # Sum of each block column in each image row: the j-th run of kw pixels (row j div S, block
    # column j mod S) starts at j * kw because a row is S runs long.
    runs = f"transform(sequence(0, {height} * {s} - 1), j -> aggregate(slice(p, j * {kw} + 1, {kw}), 0L, (a, x) -> a + x))"
    # Then block (r, c) adds the kh runs below each other: runs[(r * kh + dy) * S + c].
    blocks = (
        f"transform(sequence(0, {s * s - 1}), b -> cast(aggregate(sequence(0, {kh} - 1), 0L, "
        f"(a, dy) -> a + r[((b div {s}) * {kh} + dy) * {s} + b % {s}]) / ({kh} * {kw}) / 255D as float))"
    )
    # Integer sums are exact; numpy's mean is the exact sum / n as well, and its std differs from
    # sqrt(n * sumsq - sum^2) / n by rounding only (~1e-13). Each 90,000-element lambda pass costs
    # ~10 ms an image here, so passes are shared: the total is the sum of the runs, and one pass
    # counts dark pixels in the low and saturated ones in the high 32 bits of a long.
    stats = (
        "named_struct("
        "'mean', total / n, "
        "'std', sqrt(cast(n * sumsq - total * total as double)) / n, "
        "'min', cast(s[0] as double), "
        "'max', cast(s[n - 1] as double), "
        f"'p01', cast({_percentile(0.01)} as double), "
        f"'p99', cast({_percentile(0.99)} as double), "
        f"'dark_share', (counts % {1 << 32}L) / n, "
        f"'saturated_share', (counts div {1 << 32}L) / n, "
        f"'pixels', {blocks})"
    )

    def bind(name: str, value: str, body: str) -> str:
        # A lambda variable holds the value once per image; repeating the expression instead
        # would evaluate it again at each use (higher-order functions escape common
        # subexpression elimination).
        return f"element_at(transform(array({value}), {name} -> {body}), 1)"

    counts = f"aggregate(p, 0L, (a, x) -> a + if(x <= {DARK_AT}, 1L, 0L) + if(x >= {SATURATED_AT}, {1 << 32}L, 0L))"
    body = bind("s", "sort_array(p)", bind("n", "size(p)", bind("r", runs, bind(
        "total", "aggregate(r, 0L, (a, x) -> a + x)", bind(
            "sumsq", "aggregate(p, 0L, (a, x) -> a + x * x)", bind("counts", counts, stats))))))
    return F.expr(bind("p", pixel_values(data), body))


def open_images(spark: SparkSession, root: str, days: list[str]) -> DataFrame:
    """The decoded images of ``days`` under ``root`` (``day=YYYY-MM-DD/*.png``): ``day``, ``file``
    (the file name), ``height``, ``width``, ``n_channels``, ``data``. Only those day folders are
    listed and read."""
    raw = spark.read.format("image").load(root)
    # Partition type inference makes `day` a date; the string compares equal for both and still
    # prunes folders.
    day = F.col(PARTITION).cast("string")
    image = F.col("image")
    return raw.filter(day.isin(days)).select(
        day.alias(PARTITION),
        F.element_at(F.split(image["origin"], "/"), -1).alias("file"),
        image["height"].alias("height"),
        image["width"].alias("width"),
        image["nChannels"].alias("n_channels"),
        image["data"].alias("data"),
    )


def open_inspections(spark: SparkSession, root: str, days: list[str]) -> DataFrame:
    """The inspection rows of ``days`` (bronze), with ``day`` as a string and ``file`` (the PNG's name)."""
    try:
        raw = spark.read.parquet(root)
    except AnalysisException as exc:
        raise NoDataError(f"no inspection parquet under {root} ({exc.getCondition()})") from exc
    missing = [c for c in (*META, "image", "width", "height", PARTITION) if c not in raw.columns]
    if missing:
        raise ValueError(f"{root}: inspection rows lack columns {missing} (expected day=YYYY-MM-DD folders)")
    day = F.col(PARTITION).cast("string")
    return raw.filter(day.isin(days)).select(
        *META, F.col("width").cast("int").alias("width"), F.col("height").cast("int").alias("height"),
        day.alias(PARTITION), F.element_at(F.split("image", "/"), -1).alias("file"))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def run(spark: SparkSession, args: argparse.Namespace) -> dict[str, int]:
    """Decode, reduce and write the days in one write. Returns counts; raises NoDataError when no
    day has an image, ValueError when ``--size`` does not fit the images."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    bronze = f"{args.bronze.rstrip('/')}"
    days = [d.isoformat() for d in args.days]
    rows = open_inspections(spark, f"{bronze}/inspections", days)

    # One small aggregate of the inspection rows: which days have images, and of which sizes.
    shapes = rows.groupBy(PARTITION, "height", "width").count().collect()
    per_day: dict[str, int] = {}
    for shape in shapes:
        per_day[shape[PARTITION]] = per_day.get(shape[PARTITION], 0) + int(shape["count"])
    misfit = sorted({(int(r["height"]), int(r["width"])) for r in shapes
                     if int(r["height"]) % args.size or int(r["width"]) % args.size})
    if misfit:
        height, width = misfit[0]
        raise ValueError(
            f"--size {args.size} does not divide the {height}x{width} images of {args.use_case} "
            f"(in {bronze}/inspections); the model input side must divide the image side, e.g. one of "
            f"{[d for d in _divisors(height) if width % d == 0]}")
    empty = [d for d in days if d not in per_day]
    if not per_day:
        raise NoDataError(f"no inspection images of {args.use_case} on {', '.join(days)} under {bronze}")
    if empty:
        log.warning("no inspection images on %s under %s: those days are left as they are", ", ".join(empty), bronze)
    written = sorted(per_day)

    images = open_images(spark, f"{bronze}/images", written)
    bad = Observation("undecodable")
    features = (
        images
        .observe(bad, F.count(F.when((F.col("n_channels") != 1) | F.col("data").isNull()
                                     | (F.length("data") != F.col("height") * F.col("width")), 1)).alias("bad"))
        # Only single-channel rows reach the reduction; a bad one is counted above and fails the run.
        .filter((F.col("n_channels") == 1) & (F.length("data") == F.col("height") * F.col("width")))
        .select(PARTITION, "file", features_expr(args.size).alias("f"))
    )
    seen_out = Observation("image_features_out")
    # The inspection rows are small (a few KB per day): broadcast them, so the images are reduced
    # where they are read and only the feature rows are shuffled (to one file per day).
    table = (
        features.join(F.broadcast(rows.drop("width", "height")), [PARTITION, "file"], "inner")
        .select(*META, *(F.col(f"f.{name}").alias(name) for name in STATS),
                F.lit(args.size).alias("size"), F.col("f.pixels").alias("pixels"), PARTITION)
        .observe(seen_out, F.count(F.lit(1)).alias("rows"))
        .repartition(PARTITION)
        # The day first: the writer needs rows ordered by its partition column and would otherwise
        # re-sort by the day alone, losing the capture order within each file.
        .sortWithinPartitions(PARTITION, "captured_at", "cell_id")
    )
    expected = sum(per_day.values())

    def complete() -> None:
        # Every inspection row has its image and every image one row: else publish nothing.
        out, undecodable = int(seen_out.get["rows"]), int(bad.get["bad"])
        if undecodable or out != expected:
            raise RuntimeError(
                f"{args.use_case}: {expected} inspection rows on {', '.join(written)} but {out} feature rows "
                f"({undecodable} images not 8-bit greyscale or undecodable) under {bronze}: an image is missing, "
                "doubled or broken in bronze; nothing was published")

    write_partitions(table, args.output, PARTITION, spark, args.remote, LOCK_FILE, before_publish=complete)
    return {"images": expected, "days": len(written)}


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected the model input side as a positive integer that divides the image side, got {text!r}")
    return value


def _day_list(text: str) -> list[date]:
    try:
        days = sorted({date.fromisoformat(d.strip()) for d in text.split(",") if d.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected ISO days YYYY-MM-DD[,YYYY-MM-DD...], got {text!r}") from exc
    if not days:
        raise argparse.ArgumentTypeError("expected at least one day")
    return days


def _ranges(text: str) -> list[date]:
    try:
        ranges = parse_ranges(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return [start + timedelta(days=i) for start, end in ranges for i in range((end - start).days)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_image_features", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--use-case", required=True, help="the use case id (bronze/<id>/ in, features/<id>/images/ out)")
    add("--days", type=_day_list, default=None, help="YYYY-MM-DD[,YYYY-MM-DD...]: the inspection days to build")
    add("--ranges", type=_ranges, default=None, help="START:END[,START:END...]: day ranges [START, END) instead")
    add("--size", type=_size, default=DEFAULT_SIZE, help=f"side S of the model input (default {DEFAULT_SIZE})")
    add("--home", default=None, help="PLANTOPS_HOME (default: the environment's, as plantops.settings reads it)")
    add("--master", default=None, help="Spark master; default: spark-submit's, else local[*]")
    add("--remote", default=None, metavar="sc://HOST:PORT",
        help="run on this Spark Connect server (a new client session, released at the end)")
    args = parser.parse_args(argv)
    if not re.match(IDENTIFIER, args.use_case):
        parser.error(f"--use-case must match {IDENTIFIER}, got {args.use_case!r}")
    if (args.days is None) == (args.ranges is None):
        parser.error("give the days to build: either --days D[,D...] or --ranges START:END[,...]")
    args.days = args.days if args.days is not None else args.ranges
    if args.master and args.remote:
        parser.error("give either --master or --remote, not both")
    home = get_settings().home if args.home is None else args.home
    # Absolute: a Spark Connect server resolves relative paths against its own working directory.
    args.bronze = absolute(f"{home}/bronze/{args.use_case}")
    args.output = absolute(f"{home}/features/{args.use_case}/images")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    counts = run_job("build_image_features", args, run, NoDataError)
    if counts is None:
        return 1
    log.info("build_image_features: %d images of %d days at size %d -> %s in %.1f s",
             counts["images"], counts["days"], args.size, args.output, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
