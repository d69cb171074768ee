"""Child processes of the bench that are not spark-submit: one fresh interpreter per measurement.

    python -m bench.engines duckdb   --input BRONZE --output OUT --tags A,B \
                                     --bucket-seconds 60 --rolling-buckets 20
    python -m bench.engines pandas   (same arguments)
    python -m bench.engines validate --start D --end D [--historian-sample FILE --rows N]
                                     (reads $PLANTOPS_HOME/features/<use case>)
    python -m bench.engines drift    --rows N --report-dir DIR

Each prints one JSON line with its in-process timings. The feature engines compute the contract
of :mod:`plantops.features` (bucket means, carry-forward, rolling mean and sample std) over the
whole input, the same as ``build_features.py --lookback-days 0`` over the input's full range.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from plantops.config import IDENTIFIER

log = logging.getLogger(__name__)

READ_COLUMNS = ["asset", "tag", "ts", "value", "quality"]


def _tags(text: str) -> list[str]:
    tags = [t for t in text.split(",") if t]
    bad = [t for t in tags if not re.match(IDENTIFIER, t)]
    if bad:
        # Tags become quoted SQL identifiers below: only names from the allow-listed pattern.
        raise argparse.ArgumentTypeError(f"tag names must match {IDENTIFIER}, got {bad}")
    return tags


def duckdb_sql(tags: list[str], bucket_seconds: int, rolling_buckets: int) -> tuple[str, list]:
    """The feature query and its bound parameters (the tag names as values; $1 is the input glob).

    Two-stage pivot like Spark's: average per (asset, bucket, tag) first, then spread the small
    result into one column per tag, then the carry-forward and the rolling windows.
    """
    b = int(bucket_seconds)
    preceding = int(rolling_buckets) - 1
    pivot = ",\n".join(f'max(value) FILTER (WHERE tag = ${i + 3}) AS "{t}"' for i, t in enumerate(tags))
    fill = ",\n".join(f'last_value("{t}" IGNORE NULLS) OVER history AS "{t}"' for t in tags)
    feats = ",\n".join(
        f'"{t}", avg("{t}") OVER rolling AS "{t}__rmean", '
        f'coalesce(stddev_samp("{t}") OVER rolling, 0.0) AS "{t}__rstd"'
        for t in tags
    )
    sql = f"""
    WITH good AS (
        SELECT asset, tag, value, CAST(floor(epoch(ts)) AS BIGINT) AS e
        FROM read_parquet($1, hive_partitioning = true)
        WHERE quality = 'good' AND list_contains($2, tag) AND value IS NOT NULL AND NOT isnan(value)
    ),
    means AS (
        SELECT asset, e - (((e % {b}) + {b}) % {b}) AS bucket, tag, avg(value) AS value
        FROM good GROUP BY ALL
    ),
    wide AS (
        SELECT asset, bucket,
        {pivot}
        FROM means GROUP BY asset, bucket
    ),
    filled AS (
        SELECT asset, bucket,
        {fill}
        FROM wide
        WINDOW history AS (
            PARTITION BY asset ORDER BY bucket ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        )
    )
    SELECT asset, to_timestamp(bucket) AS ts,
    {feats},
    CAST(DATE '1970-01-01' + CAST(bucket // 86400 AS INTEGER) AS VARCHAR) AS date
    FROM filled
    WINDOW rolling AS (PARTITION BY asset ORDER BY bucket ROWS BETWEEN {preceding} PRECEDING AND CURRENT ROW)
    """
    return sql, [list(tags), *tags]


def run_duckdb(args: argparse.Namespace) -> dict:
    import duckdb

    began = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {int(args.threads)}")
    sql, params = duckdb_sql(args.tags, args.bucket_seconds, args.rolling_buckets)
    glob = str(Path(args.input) / "date=*" / "*.parquet")
    # COPY cannot take a bound parameter for the query's inputs, so the result goes through a
    # view-less relation: query with parameters, then write the relation partitioned by day.
    rel = con.sql(sql, params=[glob, *params])
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    rel.write_parquet(str(out), partition_by=["date"])
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{_quoted(out)}/*/*.parquet')").fetchone()[0]
    return {"engine": "duckdb", "rows_out": int(rows), "compute_s": time.perf_counter() - began}


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def run_pandas(args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    import pandas as pd

    from plantops.features import wide_features_pandas

    imported = time.perf_counter()
    long = pd.read_parquet(args.input, columns=READ_COLUMNS)
    # pandas 2 keeps parquet's microsecond unit; earlier versions of wide_features_pandas assumed
    # nanoseconds (int64 // 10**9). Converting keeps the baseline right with either version.
    long["ts"] = long["ts"].astype("datetime64[ns, UTC]")
    loaded = time.perf_counter()
    wide = wide_features_pandas(long, args.tags, args.bucket_seconds, args.rolling_buckets)
    del long
    computed = time.perf_counter()
    wide["date"] = wide["ts"].dt.strftime("%Y-%m-%d")
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    wide.to_parquet(out, partition_cols=["date"], index=False)
    done = time.perf_counter()
    return {
        "engine": "pandas",
        "rows_out": len(wide),
        "import_s": imported - began,
        "read_s": loaded - imported,
        "transform_s": computed - loaded,
        "write_s": done - computed,
        "compute_s": done - began,
    }


def run_validate_preloaded(args: argparse.Namespace) -> dict:
    """The feature gate as the executors run it: in a task process forked from a parent that
    preloaded the task libraries (plantops.orchestration.preload, the LocalExecutor's scheduler and
    the Celery workers). The parent never runs the gate; the fork pays everything else."""
    from plantops.orchestration.preload import preload

    began = time.perf_counter()
    preload()
    preloaded = time.perf_counter() - began
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            t0 = time.perf_counter()
            from plantops.stages import pipeline, validation

            validation._context()
            ready = time.perf_counter()
            result = pipeline.check_features(args.use_case, args.start, args.end)
            os.write(write, json.dumps({"import_and_context_s": ready - t0,
                                        "check_features_s": time.perf_counter() - ready,
                                        "feature_rows": result["rows"]}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status or not text:
        raise RuntimeError(f"the forked gate failed (wait status {status})")
    return {**json.loads(text), "preload_s": preloaded}


def run_validate(args: argparse.Namespace) -> dict:
    """The feature gate exactly as the DAG task runs it (pipeline.check_features), cold."""
    if args.preloaded:
        return run_validate_preloaded(args)
    began = time.perf_counter()
    from plantops.stages import pipeline, validation

    validation._context()  # GX import and ephemeral context: what a fresh task process pays first
    ready = time.perf_counter()
    result = pipeline.check_features(args.use_case, args.start, args.end)
    gated = time.perf_counter()
    report = {
        "import_and_context_s": ready - began,
        "check_features_s": gated - ready,
        "feature_rows": result["rows"],
        "feature_days": len(result["days"]),
    }
    if args.historian_sample:
        import pandas as pd

        from plantops.config import get_use_case

        use_case = get_use_case(args.use_case)
        # The historian delivers its own tags only; the landing tags arrive as NiFi files.
        historian_tags = [t.name for t in use_case.tags_from("historian")]
        frame = pd.read_parquet(
            args.historian_sample, columns=READ_COLUMNS, filters=[("tag", "in", historian_tags)]
        )
        frame = frame.head(args.rows)
        t0 = time.perf_counter()
        outcome = validation.validate_historian(use_case, frame)
        report["historian_rows"] = len(frame)
        report["historian_s"] = time.perf_counter() - t0
        report["historian_success"] = outcome.success
        report["historian_failures"] = list(outcome.failures)
    return report


def drift_frames(rows: int, tags: list[str]):
    """Reference and current windows of the base tag columns; a third of the tags shifted by 1 sd."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    mean = rng.uniform(10, 100, len(tags))
    std = rng.uniform(0.5, 5, len(tags))
    reference = pd.DataFrame(rng.normal(mean, std, (rows, len(tags))), columns=tags)
    shift = np.where(np.arange(len(tags)) % 3 == 0, std, 0.0)
    current = pd.DataFrame(rng.normal(mean + shift, std, (rows, len(tags))), columns=tags)
    return reference, current


def preset_drift_share(reference, current, columns: list[str], drift, report: Path) -> float:
    """compute_drift before issue #6: Evidently's DataDriftPreset, its HTML report written."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=columns)
    preset = DataDriftPreset(columns=columns, method=drift.method, threshold=drift.column_threshold,
                             drift_share=drift.share_threshold)
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    snapshot.save_html(str(report))
    metric = next(m for m in snapshot.dict()["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount"))
    return float(metric["value"]["share"])


def run_drift(args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    import evidently  # noqa: F401

    from plantops.config import get_use_case
    from plantops.features import base_columns
    from plantops.stages.monitoring import compute_drift

    imported = time.perf_counter()
    use_case = get_use_case(args.use_case)
    columns = base_columns(use_case.tag_names)
    reference, current = drift_frames(args.rows, columns)
    drift = use_case.monitoring.drift
    t0 = time.perf_counter()
    # A first call on a small slice: Evidently imports its renderers (plotly) lazily on first use.
    compute_drift(reference.head(1_000), current.head(1_000), columns, drift)
    t1 = time.perf_counter()
    result = compute_drift(reference, current, columns, drift)
    t2 = time.perf_counter()
    # As the monitor task calls it: with the HTML report written for people.
    report = Path(args.report_dir) / "drift.html"
    compute_drift(reference, current, columns, drift, report)
    t3 = time.perf_counter()
    # Side by side, the computation compute_drift replaced (issue #6): DataDriftPreset, same rows.
    preset = preset_drift_share(reference, current, columns, drift, Path(args.report_dir) / "preset.html")
    t4 = time.perf_counter()
    return {
        "import_s": imported - began,
        "first_call_1k_rows_s": t1 - t0,
        "drift_s": t2 - t1,
        "drift_with_report_s": t3 - t2,
        "report_mb": report.stat().st_size / 2**20,
        "rows_reference": len(reference),
        "rows_current": len(current),
        "columns": len(columns),
        "drift_share": result.drift_share,
        "preset_with_report_s": t4 - t3,
        "preset_drift_share": preset,
        "expected_share": sum(1 for i in range(len(columns)) if i % 3 == 0) / len(columns),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.engines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("duckdb", "pandas"):
        p = sub.add_parser(name)
        p.add_argument("--input", required=True)
        p.add_argument("--output", required=True)
        p.add_argument("--tags", required=True, type=_tags)
        p.add_argument("--bucket-seconds", type=int, required=True)
        p.add_argument("--rolling-buckets", type=int, required=True)
        p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("validate")
    p.add_argument("--use-case", default="tep_reactor")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--historian-sample", default=None, help="a bronze parquet file to sample")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--preloaded", action="store_true",
                   help="time the gate in a process forked from a parent with the task libraries preloaded")
    p = sub.add_parser("drift")
    p.add_argument("--use-case", default="tep_reactor")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--report-dir", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runners = {"duckdb": run_duckdb, "pandas": run_pandas, "validate": run_validate, "drift": run_drift}
    runner = runners[args.mode]
    print(json.dumps(runner(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
