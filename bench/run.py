"""plantops benchmarks: `make bench` runs every figure side by side and writes bench/results.json.

Figures (each its own function below; budgets from the performance issue):

1. ``parsing``    parse dags/ with 1, 10, 100 generated use cases and two wind fleets of 200 turbines
                  (20 fleet use cases of 10, one of 200; ``FLEETS``), fresh interpreter each time:
                  (a) bare ``import airflow.sdk``, (b) dags/plantops_dags.py, (c) Airflow's floor,
                  the same DAG and task counts as EmptyOperators. Budget at the largest count:
                  (b - a) <= 1.5 x (c - a) at 100 use cases and for each fleet, and no heavy
                  module imported while parsing.
2. ``features``   spark_jobs/build_features.py through spark-submit (local[2], the DAG's conf)
                  next to the same features in DuckDB SQL and in pandas
                  (plantops.features.wide_features_pandas) on 10M, 50M, 200M synthetic points.
                  At the largest size the same job also runs on the native stack's standalone
                  cluster (a master and two 1-core workers; started for it when not running).
                  Budgets: Spark <= 6 x DuckDB at the largest size; Spark faster than pandas from
                  50M up with <= 1/4 of its peak memory; Spark time grows no worse than linearly.
3. ``validation`` the GX feature gate (pipeline.check_features, as the DAG task runs it: in a process
                  forked from a parent with the task libraries preloaded, as the LocalExecutor's
                  scheduler and the Celery workers fork them; a fresh interpreter beside it) on the 50M
                  feature table, as a share of Spark's time: <= 10 %.
4. ``drift``      Evidently drift (monitoring.compute_drift, tep_reactor's config, 52 base tags),
                  100k reference and 100k current rows: <= 10 s.
5. ``latency``    landing-to-bronze under ``airflow standalone`` (bench/latency.py): a private
                  PLANTOPS_HOME with the TEP history replayed, ``tep_reactor__ingest`` unpaused and
                  woken by its landing watcher; N analyzer files landed one at a time as NiFi does
                  (dot-file, rename), each timed from its rename to its rows in bronze: median <= 30 s.
6. ``monitor``    a whole ``tep_reactor__monitor`` DAG run on the embedded tier (bench/monitor.py):
                  ``dag.test()`` as ``make demo`` runs it, on a private PLANTOPS_HOME prepared as the
                  demo's history (replay, ingest, features, train, score); the normal day
                  (no_action) and the drifting live day (alert_operators: an upset), each timed in a fresh
                  process with its per-task split: each <= 60 s.
8. ``warm``       one TEP plant day of one asset through the feature job on a warm Spark Connect
                  server (bench/warm.py): as the executors run it (forked from a worker with the task
                  libraries preloaded) and as a fresh client process, beside a cold spark-submit and
                  DuckDB (its process start included): <= 10 s and <= 5 x DuckDB.
9. ``cycle``      a whole daily cycle (ingest, features, score, monitor) of one use case under
                  ``airflow standalone`` on the embedded tier, event-driven from NiFi's rename to the
                  monitor's decision (bench/cycle.py): <= 60 s; the features DAG run in it <= 10 s.
10. ``celery``     50 use cases' monitor runs queued at once on the native stack's two Celery workers
                  (bench/celery_tier.py; needs `make stack-up`): no failed task, the time reported.
11. ``vision``     elpv solar cells (bench/vision.py): cell_texture_svm (150x150 and the demo side),
                  cell_cnn (60x60, 30 epochs and the demo's 12) and cell_ensemble (the two averaged) on
                  the fixed 1968/656 split, held-out four-class accuracy against the published
                  82.44 % (SVM) and 88.42 % (CNN), plus a timed CNN epoch at 150.

Benchmarks are not timed tests: they report raw times and ratios measured in one run.

    python -m bench.run                 # everything (~11-13 min on 2 cores, see docs/benchmarks.md)
    python -m bench.run --quick         # small sizes: a smoke run of every figure (~3 min)
    python -m bench.run --only drift    # one figure (repeatable); other figures' results are kept
    make bench ARGS="--only parsing"    # the same through make (~3 min: the parsing table alone)
    python -m bench.run --only latency  # starts its own airflow standalone (API port $BENCH_LATENCY_PORT)
    python -m bench.run --only monitor  # ~5 min: prepares data/bench/monitor/ as the demo, then times the DAG
    python -m bench.run --only warm     # ~2 min: its own Spark Connect server
    python -m bench.run --only cycle    # ~7 min: its own airflow standalone and Spark Connect server
    python -m bench.run --only celery   # ~28 min on the native stack (make stack-up first)
    BENCH_SCALE=0.1 python -m bench.run --only features   # 1M, 5M, 20M points
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from bench import measure, synth
from bench.measure import Measured
from plantops.environments import localenv
from plantops.config import UseCase, load_use_case

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
USE_CASE_YAML = REPO / "include" / "use_cases" / "tep_reactor.yaml"
FLEET_YAML = REPO / "include" / "use_cases" / "wind_fleet.yaml"
# The parsing figure's wind fleets beside the TEP counts (sites, turbines per site): 20 sites of 10
# turbines as 20 fleet use cases, and the same 200 turbines as one fleet use case.
FLEETS = ((20, 10), (1, 200))
RESULTS = REPO / "bench" / "results.json"
FIGURES = ("parsing", "features", "validation", "drift", "latency", "monitor", "warm", "cycle", "celery",
           "detectors", "wind", "vision")

# The features DAG's SparkSubmitOperator conf (plantops.orchestration.dagfactory.build_features) and the
# issue's job arguments: the job is measured as the DAG runs it.
SPARK_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
}
SPARK_MASTER = "local[2]"
BUCKET_SECONDS = 60
ROLLING_BUCKETS = 20

M = 1_000_000
FULL_SIZES = (10 * M, 50 * M, 200 * M)
QUICK_SIZES = (1 * M, 2 * M)
# pandas' peak memory per long-format point before anything is measured (20M points: ~245 B).
PANDAS_BYTES_PER_POINT = 250
# A run is skipped when its estimated peak exceeds this share of the memory available right
# then, and killed when its measured RSS crosses the cap share: other work shares this machine.
SKIP_SHARE = 0.75
CAP_SHARE = 0.85
# Landing-to-bronze: files per run, the budget, how long one file may take before it counts as lost.
LATENCY_FILES = 5
QUICK_LATENCY_FILES = 2
LATENCY_BUDGET_S = 30.0
LATENCY_TIMEOUT_S = 300.0
# A whole monitor DAG run, embedded tier (issue #6, item 4); a whole daily cycle under a scheduler (#14).
MONITOR_BUDGET_S = 60.0
CYCLE_BUDGET_S = 60.0


@dataclass
class Config:
    quick: bool
    sizes: tuple[int, ...]
    use_case_counts: tuple[int, ...]
    parse_repeats: int
    drift_rows: int
    historian_rows: int
    cache: Path
    logs: Path
    latency_files: int = LATENCY_FILES
    latency_port: int = 28380
    monitor_port: int = 28390
    cycle_port: int = 28395
    celery_port: int = 28291
    celery_runs: int = 50


@dataclass
class Context:
    """What one figure hands to another within a run (Spark's 50M output for the GX gate)."""

    config: Config
    use_case: UseCase
    spark_runs: dict[int, tuple[Measured, synth.Bronze, Path]] = field(default_factory=dict)


# -- helpers ----------------------------------------------------------------------------------------


def points_label(n: int) -> str:
    for unit, div in (("M", M), ("k", 1_000)):
        if n >= div:
            value = n / div
            return f"{value:.0f}{unit}" if abs(value - round(value)) < 0.05 else f"{value:.1f}{unit}"
    return str(n)


def budget(name: str, value: float | None, limit: float, unit: str = "", *, why: str = "",
           higher_is_better: bool = False) -> dict[str, Any]:
    """A budget line: the measured value, the limit, met or not and by how much."""
    if value is None:
        return {"name": name, "value": None, "limit": limit, "unit": unit, "met": None,
                "margin": "not measured", "why": why}
    met = value >= limit if higher_is_better else value <= limit
    if limit == 0:
        margin = "met" if met else f"missed: {value:g}"
    elif met:
        headroom = (value / limit - 1) if higher_is_better else (1 - value / limit)
        margin = f"met, {headroom:.0%} headroom"
    else:
        over = (limit / value) if higher_is_better else (value / limit)
        margin = f"missed by {over:.1f}x" if over >= 1.5 else f"missed by {over - 1:.0%}"
    return {"name": name, "value": value, "limit": limit, "unit": unit, "met": met, "margin": margin,
            "why": why, "higher_is_better": higher_is_better}


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO / "include"), str(REPO), os.environ.get("PYTHONPATH")])
        ),
        PYSPARK_PYTHON=PYTHON,
        PYSPARK_DRIVER_PYTHON=PYTHON,
        GX_ANALYTICS_ENABLED="false",
        MLFLOW_ENABLE_TELEMETRY="false",
        DO_NOT_TRACK="true",
    )
    env.update(extra)
    return env


def available_mb() -> float:
    return psutil.virtual_memory().available / measure.MB


def warm_page_cache(root: Path) -> None:
    """Read every input file once so that no engine pays (or is spared) the first disk read."""
    for path in sorted(root.rglob("*.parquet")):
        with open(path, "rb") as handle:
            while handle.read(16 * measure.MB):
                pass


# -- 1. DAG parsing -----------------------------------------------------------------------------------


def write_use_cases(folder: Path, count: int) -> None:
    """``count`` copies of tep_reactor.yaml, id (and file name) tep_reactor_NNN."""
    folder.mkdir(parents=True, exist_ok=True)
    text = USE_CASE_YAML.read_text()
    if not re.search(r"^id: tep_reactor$", text, flags=re.M):
        raise RuntimeError(f"{USE_CASE_YAML}: no 'id: tep_reactor' line to rewrite")
    for i in range(1, count + 1):
        uc = f"tep_reactor_{i:03d}"
        (folder / f"{uc}.yaml").write_text(re.sub(r"^id: tep_reactor$", f"id: {uc}", text, flags=re.M))


def write_fleets(folder: Path, sites: int, turbines: int) -> None:
    """``sites`` copies of wind_fleet.yaml (id wind_fleet_NN), each with ``turbines`` assets SNNTMM."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load(FLEET_YAML.read_text())
    for s in range(1, sites + 1):
        uc = f"wind_fleet_{s:02d}" if sites > 1 else "wind_fleet"
        spec["id"] = uc
        spec["historian"]["assets"] = [f"S{s:02d}T{t:02d}" if sites > 1 else f"T{t:03d}" for t in range(1, turbines + 1)]
        (folder / f"{uc}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def figure_parsing(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    tmp = Path(tempfile.mkdtemp(prefix="plantops-bench-parse-"))
    # Workloads: N copies of tep_reactor.yaml for each count, then the wind fleets (FLEETS).
    labels = [str(n) for n in cfg.use_case_counts] + [f"fleet_{s}x{t}" for s, t in FLEETS]
    try:
        base = child_env(**localenv.airflow_env(tmp / "home"))
        folders: dict[str, Path] = {}
        for n in cfg.use_case_counts:
            folders[str(n)] = tmp / f"use_cases_{n}"
            write_use_cases(folders[str(n)], n)
        for sites, turbines in FLEETS:
            folders[f"fleet_{sites}x{turbines}"] = tmp / f"fleet_{sites}x{turbines}"
            write_fleets(folders[f"fleet_{sites}x{turbines}"], sites, turbines)

        def run(mode: str, label: str | None = None, shape: Path | None = None) -> Measured:
            env = dict(base, PLANTOPS_USE_CASES=str(folders[label] if label else USE_CASE_YAML.parent))
            cmd = [PYTHON, "-m", "bench.parsing", mode, *([str(shape)] if shape else [])]
            m = measure.run(cmd, env=env, log_path=cfg.logs / f"parse_{mode}_{label or 0}.log", cwd=REPO)
            if not m.ok or not m.output:
                raise RuntimeError(f"parsing child {mode} {label} failed: see {m.log_path}")
            return m

        # Warm-up (discarded): the first interpreter writes Airflow's config into the fresh home,
        # and the factory's runs give the DAG and task counts the floor must reproduce.
        run("bare")
        shapes: dict[str, Path] = {}
        probe: dict[str, dict] = {}
        for label in labels:
            probe[label] = run("factory", label).output
            shapes[label] = tmp / f"shape_{label}.json"
            shapes[label].write_text(json.dumps(probe[label]["shape"]))

        bare: list[Measured] = []
        factory: dict[str, list[Measured]] = {label: [] for label in labels}
        floor: dict[str, list[Measured]] = {label: [] for label in labels}
        # Interleaved repeats: load from other work on the machine hits a, b and c alike.
        for rep in range(cfg.parse_repeats):
            log.info("parsing: repeat %d/%d", rep + 1, cfg.parse_repeats)
            bare.append(run("bare"))
            for label in labels:
                factory[label].append(run("factory", label))
                floor[label].append(run("floor", label, shapes[label]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    a = statistics.median(m.wall_s for m in bare)
    per_label = {}
    for label in labels:
        b = statistics.median(m.wall_s for m in factory[label])
        c = statistics.median(m.wall_s for m in floor[label])
        heavy = sorted({h for m in factory[label] for h in m.output["heavy_modules"]})
        fleet = label.startswith("fleet_")
        sites, turbines = (int(x) for x in label.removeprefix("fleet_").split("x")) if fleet else (int(label), 1)
        per_label[label] = {
            "label": f"{sites} fleet{'s' if sites > 1 else ''} x {turbines} assets" if fleet else label,
            "use_cases": sites,
            "assets": sites * turbines,
            "dags": probe[label]["dags"],
            "tasks": probe[label]["tasks"],
            "config_errors": probe[label]["config_errors"],
            "factory_s": b,
            "floor_s": c,
            "factory_minus_bare_s": b - a,
            "floor_minus_bare_s": c - a,
            "ratio": (b - a) / (c - a) if c > a else None,
            "heavy_modules": heavy,
            "raw": {
                "factory_wall_s": [round(m.wall_s, 3) for m in factory[label]],
                "floor_wall_s": [round(m.wall_s, 3) for m in floor[label]],
                "factory_in_process": [m.output for m in factory[label]],
            },
        }
        for key in ("factory_s", "floor_s", "factory_minus_bare_s", "floor_minus_bare_s", "ratio"):
            if per_label[label][key] is not None:
                per_label[label][key] = round(per_label[label][key], 3)
        log.info("parsing %s: %d DAGs, %d tasks; b-a %.2f s, c-a %.2f s, heavy %s", per_label[label]["label"],
                 probe[label]["dags"], probe[label]["tasks"], b - a, c - a, heavy)

    top = per_label[str(max(cfg.use_case_counts))]
    fleets = [per_label[label] for label in labels if label.startswith("fleet_")]
    bare_heavy = sorted({h for m in bare for h in m.output["heavy_modules"]})
    return {
        "bare_import_s": round(a, 3),
        "bare_wall_s": [round(m.wall_s, 3) for m in bare],
        "bare_heavy_modules": bare_heavy,
        "repeats": cfg.parse_repeats,
        "statistic": "median of the interleaved repeats; wall time of the whole fresh interpreter",
        "by_use_cases": per_label,
        "budgets": [
            budget(f"parse {top['use_cases']} use cases: (b-a)/(c-a)", top["ratio"], 1.5, "x"),
            *(budget(f"parse {rec['label']}: (b-a)/(c-a)", rec["ratio"], 1.5, "x") for rec in fleets),
            budget("heavy modules imported while parsing", len(top["heavy_modules"]), 0, "modules",
                   why=", ".join(top["heavy_modules"]) or "none"),
        ],
    }


# -- 2. feature job -----------------------------------------------------------------------------------


SPARK_STAGE = re.compile(r"(ShuffleMapStage|ResultStage) (\d+) \(.*?\) finished in ([\d.]+) (ms|s)\b")
SPARK_TASKS = re.compile(r"Submitting (\d+) missing tasks from (?:ShuffleMapStage|ResultStage) (\d+)")
SPARK_JOB = re.compile(r"build_features: (\d+) bronze rows in .*?, (\d+) feature rows out .* in ([\d.]+) s")


def spark_log_summary(log_path: str | None) -> dict[str, Any]:
    """Per-stage times and task counts, and the job's own time (without JVM start), from its log."""
    if not log_path:
        return {}
    # Spark's own log is on stderr; the Python driver's (PythonRunner) arrives on stdout.
    files = (Path(log_path), Path(f"{log_path}.out"))
    text = "\n".join(p.read_text(errors="replace") for p in files if p.exists())
    tasks = {int(stage): int(n) for n, stage in SPARK_TASKS.findall(text)}
    stages = [
        {"stage": int(sid), "kind": kind, "tasks": tasks.get(int(sid)),
         "seconds": round(float(value) / (1000 if unit == "ms" else 1), 2)}
        for kind, sid, value, unit in SPARK_STAGE.findall(text)
    ]
    job = SPARK_JOB.search(text)
    return {
        "stages": stages,
        "job_s": float(job.group(3)) if job else None,
        "rows_in": int(job.group(1)) if job else None,
        "rows_out": int(job.group(2)) if job else None,
    }


def run_spark(ctx: Context, requested: int, bronze: synth.Bronze, master: str = SPARK_MASTER,
              extra_conf: dict[str, str] | None = None, label: str = "spark") -> tuple[Measured, Path]:
    """spark_jobs/build_features.py through spark-submit, as the features DAG submits it."""
    out = ctx.config.cache / "out" / f"{label}_{bronze.points}"
    shutil.rmtree(out, ignore_errors=True)
    conf = [arg for key, value in {**SPARK_CONF, **(extra_conf or {})}.items() for arg in ("--conf", f"{key}={value}")]
    cmd = [
        str(SPARK_SUBMIT), "--master", master, *conf, str(REPO / "spark_jobs" / "build_features.py"),
        "--input", str(bronze.root), "--output", str(out),
        "--start", bronze.start.isoformat(), "--end", bronze.end.isoformat(),
        "--tags", ",".join(bronze.tags),
        "--bucket-seconds", str(BUCKET_SECONDS), "--rolling-buckets", str(ROLLING_BUCKETS),
        "--lookback-days", "0",
    ]
    log.info("features: %s %s on %s", label, points_label(bronze.points), master)
    m = measure.run(cmd, env=child_env(SPARK_LOCAL_IP="127.0.0.1"), log_path=ctx.config.logs / f"{label}_{bronze.points}.log",
                    mem_cap_mb=CAP_SHARE * available_mb(), cwd=REPO)
    if label == "spark":
        ctx.spark_runs[requested] = (m, bronze, out)
    return m, out


def run_spark_cluster(ctx: Context, bronze: synth.Bronze, spark_out: Path) -> dict[str, Any]:
    """The same job on the native stack's standalone cluster (a master and two 1-core workers on
    loopback, started here when not running), client deploy mode as the stack's features DAG."""
    from plantops.environments import stack

    started = not stack.spark_master_state()
    if started:
        stack.start_spark()
    try:
        m, out = run_spark(ctx, bronze.points, bronze, master=stack.spark_master_url(),
                           extra_conf={"spark.executor.memory": "2g"}, label="spark_cluster")
    finally:
        if started:
            stack.stop_spark()
    record = engine_record(m, bronze.points) | {"log": spark_log_summary(m.log_path), "workers": stack.SPARK_WORKERS}
    if m.ok:
        record["matches_local"] = compare_outputs(spark_out, out)
    return record


def run_python_engine(ctx: Context, engine: str, bronze: synth.Bronze) -> tuple[Measured, Path]:
    out = ctx.config.cache / "out" / f"{engine}_{bronze.points}"
    cmd = [
        PYTHON, "-m", "bench.engines", engine, "--input", str(bronze.root), "--output", str(out),
        "--tags", ",".join(bronze.tags), "--bucket-seconds", str(BUCKET_SECONDS),
        "--rolling-buckets", str(ROLLING_BUCKETS),
    ]
    log.info("features: %s %s", engine, points_label(bronze.points))
    m = measure.run(cmd, env=child_env(), log_path=ctx.config.logs / f"{engine}_{bronze.points}.log",
                    mem_cap_mb=CAP_SHARE * available_mb(), cwd=REPO)
    return m, out


def compare_outputs(reference: Path, other: Path) -> dict[str, Any]:
    """Same rows, keys and values (relative to max(1, |value|)) as Spark's output."""
    import numpy as np
    import pandas as pd

    def load(path: Path) -> pd.DataFrame:
        frame = pd.read_parquet(path)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[us, UTC]")
        return frame.sort_values(["asset", "ts"]).reset_index(drop=True)

    want, got = load(reference), load(other)
    if len(want) != len(got):
        return {"same": False, "reason": f"{len(got)} rows vs Spark's {len(want)}"}
    cols = [c for c in want.columns if c not in ("asset", "ts", "date")]
    keys_equal = bool((want["ts"] == got["ts"]).all() and (want["asset"] == got["asset"]).all())
    a, b = want[cols].to_numpy(), got[cols].to_numpy()
    nan_equal = bool((np.isnan(a) == np.isnan(b)).all())
    rel = np.nanmax(np.abs(a - b) / np.maximum(1.0, np.abs(a))) if a.size else 0.0
    same = bool(keys_equal and nan_equal and rel < 1e-6)
    return {"same": same, "rows": len(want), "max_rel_diff": float(rel), "keys_equal": keys_equal}


def engine_record(m: Measured, points: int) -> dict[str, Any]:
    rec = m.record()
    rec["points_per_s"] = round(points / m.wall_s) if m.ok else None
    return rec


def figure_features(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    by_size: dict[str, Any] = {}
    pandas_bpp, bpp_source = PANDAS_BYTES_PER_POINT, "default"
    for points in cfg.sizes:
        began = time.perf_counter()
        bronze = synth.bronze(cfg.cache, points, ctx.use_case.tags)
        prepared = time.perf_counter() - began
        warm_page_cache(bronze.root)
        size: dict[str, Any] = {
            "points": bronze.points, "days": bronze.days, "tags": len(bronze.tags),
            "bronze_mb": round(sum(p.stat().st_size for p in bronze.root.rglob("*.parquet")) / measure.MB, 1),
            "prepare_s": round(prepared, 1),
        }
        duck, duck_out = run_python_engine(ctx, "duckdb", bronze)
        size["duckdb"] = engine_record(duck, bronze.points)

        estimate_mb = pandas_bpp * bronze.points / measure.MB
        free_mb = available_mb()
        if estimate_mb > SKIP_SHARE * free_mb:
            reason = (f"skipped: estimated peak {estimate_mb / 1024:.0f} GiB ({pandas_bpp:.0f} B/point, "
                      f"{bpp_source}) > {SKIP_SHARE:.0%} of the {free_mb / 1024:.0f} GiB available")
            log.warning("features: pandas %s %s", points_label(bronze.points), reason)
            size["pandas"] = {"skipped": reason, "estimated_peak_mb": round(estimate_mb)}
            pandas_out = None
        else:
            pd_run, pandas_out = run_python_engine(ctx, "pandas", bronze)
            size["pandas"] = engine_record(pd_run, bronze.points)
            if pd_run.ok:
                # The largest measured run predicts the next size best (fixed costs amortised).
                pandas_bpp = pd_run.peak_rss_mb * measure.MB / bronze.points
                bpp_source = f"as measured at {points_label(bronze.points)}"
            else:
                pandas_out = None
                size["pandas"]["skipped"] = ("killed at the memory cap" if pd_run.killed_at_cap
                                             else f"failed (rc {pd_run.returncode})")

        spark, spark_out = run_spark(ctx, points, bronze)
        size["spark"] = engine_record(spark, bronze.points) | {"log": spark_log_summary(spark.log_path)}
        if spark.ok:
            size["spark"]["startup_s"] = round(spark.wall_s - (size["spark"]["log"].get("job_s") or 0), 1)
            if duck.ok:
                size["duckdb_matches_spark"] = compare_outputs(spark_out, duck_out)
            if pandas_out is not None:
                size["pandas_matches_spark"] = compare_outputs(spark_out, pandas_out)
        if points == max(cfg.sizes) and spark.ok:
            size["spark_cluster"] = run_spark_cluster(ctx, bronze, spark_out)
        by_size[str(bronze.points)] = size
        log.info("features %s: spark %.1f s, duckdb %.1f s, pandas %s", points_label(bronze.points),
                 spark.wall_s, duck.wall_s, size["pandas"].get("wall_s", size["pandas"].get("skipped")))

    return {"by_points": by_size, "budgets": feature_budgets(cfg, by_size),
            "settings": {"master": SPARK_MASTER, "conf": SPARK_CONF, "bucket_seconds": BUCKET_SECONDS,
                         "rolling_buckets": ROLLING_BUCKETS, "duckdb_threads": 2,
                         "spark_driver_memory": "spark-submit default (1g)"}}


def pivot_size(sizes: list[int]) -> int:
    """The issue's 50M when measured, else the middle size."""
    near = [s for s in sizes if abs(s - 50 * M) < 52]
    return near[0] if near else sizes[len(sizes) // 2]


def feature_budgets(cfg: Config, by_size: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = sorted(int(k) for k in by_size)
    big, small = sizes[-1], sizes[0]
    out = []

    def wall(points: int, engine: str) -> float | None:
        rec = by_size[str(points)].get(engine, {})
        return rec.get("wall_s") if rec.get("returncode") == 0 and not rec.get("killed_at_cap") else None

    def peak(points: int, engine: str) -> float | None:
        rec = by_size[str(points)].get(engine, {})
        return rec.get("peak_rss_mb") if rec.get("returncode") == 0 else None

    s, d = wall(big, "spark"), wall(big, "duckdb")
    out.append(budget(f"Spark / DuckDB wall time at {points_label(big)}", s / d if s and d else None, 6, "x"))
    c = wall(big, "spark_cluster")
    out.append(budget(f"Spark on the 2-worker standalone cluster / DuckDB at {points_label(big)}",
                      c / d if c and d else None, 6, "x",
                      why=f"cluster {c:.0f} s vs local[2] {s:.0f} s on the same 2 cores" if c and s else ""))
    for points in [p for p in sizes if p >= pivot_size(sizes)]:
        s, p = wall(points, "spark"), wall(points, "pandas")
        skipped = by_size[str(points)].get("pandas", {}).get("skipped")
        out.append(budget(f"Spark / pandas wall time at {points_label(points)}", s / p if s and p else None,
                          1.0, "x", why=f"pandas {skipped}" if skipped else ""))
        s, p = peak(points, "spark"), peak(points, "pandas")
        out.append(budget(f"Spark / pandas peak RSS at {points_label(points)}", s / p if s and p else None,
                          0.25, "x", why=f"pandas {skipped}" if skipped else ""))
    s_small, s_big = wall(small, "spark"), wall(big, "spark")
    growth = (s_big / s_small) / (big / small) if s_small and s_big and big > small else None
    out.append(budget(f"Spark time growth {points_label(small)} -> {points_label(big)} vs linear",
                      growth, 1.0, "x of linear"))
    return out


# -- 3. validation overhead ----------------------------------------------------------------------------


def figure_validation(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    points = pivot_size(list(cfg.sizes))
    if points not in ctx.spark_runs:
        bronze = synth.bronze(cfg.cache, points, ctx.use_case.tags)
        warm_page_cache(bronze.root)
        run_spark(ctx, points, bronze)
    spark, bronze, out = ctx.spark_runs[points]
    if not spark.ok:
        raise RuntimeError(f"the Spark run at {points_label(points)} failed: see {spark.log_path}")

    # check_features reads $PLANTOPS_HOME/features/<use case>: point a private home at Spark's output.
    home = Path(tempfile.mkdtemp(prefix="plantops-bench-gx-"))
    try:
        (home / "features").mkdir()
        (home / "features" / ctx.use_case.id).symlink_to(out.resolve(), target_is_directory=True)
        sample = next(iter(sorted(bronze.root.glob("date=*/*.parquet"))))
        cmd = [PYTHON, "-m", "bench.engines", "validate", "--use-case", ctx.use_case.id,
               "--start", bronze.start.isoformat(), "--end", bronze.end.isoformat(),
               "--historian-sample", str(sample), "--rows", str(cfg.historian_rows)]
        log.info("validation: GX gates on the %s feature table", points_label(points))
        env = child_env(PLANTOPS_HOME=str(home))
        m = measure.run(cmd, env=env, log_path=cfg.logs / "validation.log", cwd=REPO)
        forked = measure.run([*cmd[:cmd.index("--historian-sample")], "--preloaded"], env=env,
                             log_path=cfg.logs / "validation-preloaded.log", cwd=REPO)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if not m.ok or not m.output:
        raise RuntimeError(f"validation child failed: see {m.log_path}")
    if not forked.ok or not forked.output:
        raise RuntimeError(f"validation child (preloaded) failed: see {forked.log_path}")
    o, f = m.output, forked.output
    # The gate task as the executors run it: forked from a parent that preloaded the task libraries
    # (the LocalExecutor's scheduler, a Celery worker), then check_features. A fresh interpreter
    # (what it cost before the preload) is reported beside it. The historian sample is the ingest's
    # gate, reported beside it but not part of the share.
    gate_s = f["import_and_context_s"] + f["check_features_s"]
    cold_s = o["import_and_context_s"] + o["check_features_s"]
    share = gate_s / spark.wall_s
    return {
        "points": bronze.points,
        "spark_wall_s": round(spark.wall_s, 2),
        "gate_s": round(gate_s, 2),
        "gate_cold_s": round(cold_s, 2),
        "gate_check_only_s": round(o["check_features_s"], 2),
        "share": round(share, 4),
        "share_cold": round(cold_s / spark.wall_s, 4),
        "preload_s": round(f["preload_s"], 1),
        "historian_gate": {
            "rows": o.get("historian_rows"),
            "seconds": round(o.get("historian_s", 0), 2),
            "rows_per_s": round(o["historian_rows"] / o["historian_s"]) if o.get("historian_s") else None,
            "success": o.get("historian_success"),
            "failures": o.get("historian_failures"),
        },
        "child": m.record(),
        "child_preloaded": forked.record(),
        "budgets": [
            budget(f"GX feature gate / Spark job at {points_label(bronze.points)}", share, 0.10, "share",
                   why=f"forked from a preloaded worker: GX context {f['import_and_context_s']:.2f} s, "
                       f"check_features {f['check_features_s']:.1f} s on {f['feature_rows']} rows; in a fresh "
                       f"interpreter {cold_s:.1f} s ({cold_s / spark.wall_s:.0%}), of it GX import + context "
                       f"{o['import_and_context_s']:.1f} s"),
        ],
    }


# -- 4. drift --------------------------------------------------------------------------------------------


def figure_drift(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    reports = Path(tempfile.mkdtemp(prefix="plantops-bench-drift-"))
    try:
        cmd = [PYTHON, "-m", "bench.engines", "drift", "--use-case", ctx.use_case.id,
               "--rows", str(cfg.drift_rows), "--report-dir", str(reports)]
        log.info("drift: %d reference and %d current rows", cfg.drift_rows, cfg.drift_rows)
        m = measure.run(cmd, env=child_env(), log_path=cfg.logs / "drift.log", cwd=REPO)
    finally:
        shutil.rmtree(reports, ignore_errors=True)
    if not m.ok or not m.output:
        raise RuntimeError(f"drift child failed: see {m.log_path}")
    o = m.output
    if abs(o["preset_drift_share"] - o["drift_share"]) > 1e-12:
        raise RuntimeError(f"drift: share {o['drift_share']} differs from DataDriftPreset's {o['preset_drift_share']}")
    return {
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in o.items()},
        "ratio_to_preset": round(o["drift_with_report_s"] / o["preset_with_report_s"], 3),
        "child": m.record(),
        "budgets": [
            budget(f"compute_drift, {o['rows_reference'] // 1000}k + {o['rows_current'] // 1000}k rows, "
                   "with the HTML report (as the monitor)", o["drift_with_report_s"], 10.0, "s",
                   why=f"without the report {o['drift_s']:.1f} s; DataDriftPreset (before #6) in the same "
                       f"run {o['preset_with_report_s']:.1f} s, {o['drift_with_report_s'] / o['preset_with_report_s']:.2f}x "
                       f"of it, same share ({o['preset_drift_share']:.3f}); not counted: Evidently import "
                       f"{o['import_s']:.1f} s and a first 1k-row call {o['first_call_1k_rows_s']:.1f} s"),
        ],
    }


# -- 5. landing-to-bronze latency ----------------------------------------------------------------------


def figure_latency(ctx: Context) -> dict[str, Any]:
    from bench import latency

    cfg = ctx.config
    port = cfg.latency_port
    for p in (port, port + 1, port + 2):
        if not latency.port_free(p):
            raise RuntimeError(f"latency: port {p} is in use; set BENCH_LATENCY_PORT to a free base port")
    home = Path(tempfile.mkdtemp(prefix="plantops-bench-latency-"))
    env = latency.standalone_env(home, port, base=child_env())
    standalone = latency.Standalone(env, cfg.logs / "latency-standalone.log")
    began = time.perf_counter()
    steps: dict[str, float] = {}

    def child(name: str, *args: str) -> dict[str, Any]:
        m = measure.run([PYTHON, *args], env=env, log_path=cfg.logs / f"latency-{name}.log", cwd=REPO)
        if not m.ok:
            raise RuntimeError(f"latency: {' '.join(args)} failed: see {m.log_path}")
        steps[name] = round(m.wall_s, 1)
        return m.output or {}

    try:
        child("migrate", "-m", "airflow", "db", "migrate")
        replayed = child("replay", "-m", "bench.latency", "replay")
        imports = child("imports", "-m", "bench.latency", "imports")
        log.info("latency: airflow standalone on port %d, home %s", port, home)
        t0 = time.perf_counter()
        api = latency.start_healthy(standalone, env, LATENCY_TIMEOUT_S)
        steps["standalone_healthy"] = round(time.perf_counter() - t0, 1)
        latency.wait_for(f"unpause {latency.DAG_ID}",
                         lambda: api.call("PATCH", f"/api/v2/dags/{latency.DAG_ID}", {"is_paused": False})[0] == 200,
                         LATENCY_TIMEOUT_S, 2.0)
        steps["dag_unpaused"] = round(time.perf_counter() - t0, 1)
        # Warm-up: the replayed history's own landed files are the first event-driven run.
        landing = home / "landing" / ctx.use_case.landing.folder

        def backlog_done() -> bool:
            return not any(p.is_file() and not p.name.startswith(".") for p in landing.iterdir()) \
                and api.active_runs() == 0

        latency.wait_for("the replayed files ingested", backlog_done, 2 * LATENCY_TIMEOUT_S, 2.0)
        steps["backlog_ingested"] = round(time.perf_counter() - t0, 1)

        def land(index: int) -> dict[str, Any]:
            return child(f"land-{index}", "-m", "bench.latency", "land", "--index", str(index))

        files = [latency.measure_file(api, home, i, land, LATENCY_TIMEOUT_S) for i in range(cfg.latency_files)]
    finally:
        standalone.stop()
        shutil.rmtree(home, ignore_errors=True)
    summary = latency.summarize(files, LATENCY_BUDGET_S)
    med = summary["median_steps_s"]
    why = (f"median from the rename: asset event {med['asset_event']} s, run queued {med['run_queued']} s, "
           f"task queued {med['task_queued']} s, task running {med['task_started']} s, bronze "
           f"{med['bronze_written']} s; a fresh task process imports great_expectations in "
           f"{imports.get('great_expectations', float('nan')):.1f} s")
    value = summary["median_s"] if summary["arrived"] == summary["files"] else None
    return {
        **summary,
        "per_file": [vars(f) for f in files],
        "setup_s": steps,
        "replayed": replayed,
        "task_imports_s": imports,
        "poke_interval_s": 5.0,
        "standalone_log": str(standalone.log_path),
        "figure_setup_s": round(time.perf_counter() - began, 1),
        "budgets": [
            budget(f"landing-to-bronze latency, median of {summary['files']} files (airflow standalone)",
                   value, LATENCY_BUDGET_S, "s",
                   why=why if value is not None else f"{summary['files'] - summary['arrived']} file(s) never "
                                                     f"reached bronze: {[f.error for f in files if f.error]}"),
        ],
    }


# -- 5b. a whole daily cycle under a scheduler -----------------------------------------------------------


def figure_cycle(ctx: Context) -> dict[str, Any]:
    """One plant day from NiFi's rename to the monitor's decision under ``airflow standalone``
    (bench/cycle.py): ingest, features (warm Spark Connect server), score and monitor, each woken
    by the asset event of the stage before, each task its own process forked from the preloaded
    scheduler."""
    from bench import cycle, latency
    from plantops.environments import sparkconnect

    cfg = ctx.config
    port = cfg.cycle_port
    for p in (port, port + 1, port + 2, port + 3):
        if not latency.port_free(p):
            raise RuntimeError(f"cycle: port {p} is in use; set BENCH_CYCLE_PORT to a free base port")
    home = Path(tempfile.mkdtemp(prefix="plantops-bench-cycle-"))
    base = child_env(PLANTOPS_SPARK_CONNECT_PORT=str(port + 3))
    # The embedded tier points plantops_spark at the home's Connect server while it runs: the
    # environment is computed again once the server is up.
    env = latency.standalone_env(home, port, base=base)
    standalone = latency.Standalone(env, cfg.logs / "cycle-standalone.log")
    steps: dict[str, Any] = {}

    def child(name: str, *args: str) -> dict[str, Any]:
        out = cfg.logs / f"cycle-{name}.json"
        log.info("cycle: %s", name)
        m = measure.run([PYTHON, *args, *(["--out", str(out)] if args[0] == "-m" and args[1].startswith("bench.") else [])],
                        env=env, log_path=cfg.logs / f"cycle-{name}.log", cwd=REPO)
        if not m.ok:
            raise RuntimeError(f"cycle: {' '.join(args)} failed: see {m.log_path}")
        steps[name] = round(m.wall_s, 1)
        return json.loads(out.read_text()) if out.exists() else {}

    began = time.perf_counter()
    server = None
    try:
        child("migrate", "-m", "airflow", "db", "migrate")
        child("prepare", "-m", "bench.monitor", "prepare")
        t0 = time.perf_counter()
        server = sparkconnect.start(port=port + 3, folder=sparkconnect.default_folder(home))
        steps["spark_connect_up"] = round(time.perf_counter() - t0, 1)
        env.update(latency.standalone_env(home, port, base=base))
        if json.loads(env["AIRFLOW_CONN_PLANTOPS_SPARK"])["conn_type"] != "spark_connect":
            raise RuntimeError(f"cycle: plantops_spark does not point at the warm server: {env['AIRFLOW_CONN_PLANTOPS_SPARK']}")
        t0 = time.perf_counter()
        api = latency.start_healthy(standalone, env, LATENCY_TIMEOUT_S)
        for stage in cycle.STAGES:
            dag_id = f"{cycle.USE_CASE}__{stage}"
            latency.wait_for(f"unpause {dag_id}",
                             lambda d=dag_id: api.call("PATCH", f"/api/v2/dags/{d}", {"is_paused": False})[0] == 200,
                             LATENCY_TIMEOUT_S, 2.0)
        steps["standalone_ready"] = round(time.perf_counter() - t0, 1)
        # The scheduler preloads the task libraries before it forks any task (~10-25 s here): let it
        # settle, so the cycle measures the running service, not its start.
        time.sleep(15)

        def idle() -> bool:  # runs the prepared history's asset events may still have queued
            return all(api.call("GET", f"/api/v2/dags/{cycle.USE_CASE}__{s}/dagRuns?state=queued&state=running"
                                       "&limit=1")[1]["total_entries"] == 0 for s in cycle.STAGES)

        latency.wait_for("no run of the cycle's DAGs active", idle, 2 * LATENCY_TIMEOUT_S, 2.0)
        since = datetime.now(timezone.utc)
        landed = child("land", "-m", "bench.cycle", "land")

        def monitor_done() -> dict[str, list[dict]] | None:
            runs = cycle.stage_runs(api, since)
            done = runs["monitor"] and runs["monitor"][-1]["state"] in ("success", "failed")
            return runs if done else None

        runs = latency.wait_for("the day's monitor run", monitor_done, 2 * LATENCY_TIMEOUT_S, 1.0)
        summary = cycle.summarize(landed["landed_at"], runs, api)
    finally:
        standalone.stop()
        if server is not None:
            sparkconnect.stop(server.folder)
        shutil.rmtree(home, ignore_errors=True)
    failed = [s for s, state in summary["states"].items() if state != "success"]
    value = summary["cycle_s"] if not failed else None
    features = summary["stages"].get("features") or {}
    parts = ", ".join(f"{s} ends {v['ended_s']} s (run {v['run_s']} s)" for s, v in summary["stages"].items())
    return {
        **summary,
        "landed": landed,
        "setup_s": steps,
        "standalone_log": str(standalone.log_path),
        "figure_setup_s": round(time.perf_counter() - began, 1),
        "budgets": [
            budget("daily cycle of one use case (ingest, features, score, monitor), embedded tier under a "
                   "scheduler, from the landed file to the monitor's decision", value, CYCLE_BUDGET_S, "s",
                   why=f"from the rename: {parts}" if value is not None else f"stages not successful: {failed}"),
            budget("one plant day of one asset through the features stage, warm (the features DAG run under "
                   "the scheduler: plan, Spark job, GX gate, publish)", features.get("run_s"), 10.0, "s",
                   why=f"tasks: {features.get('tasks_s')}"),
        ],
    }


def figure_warm(ctx: Context) -> dict[str, Any]:
    """One TEP plant day of one asset through the feature job, warm (bench/warm.py), against DuckDB."""
    cfg = ctx.config
    work = Path(tempfile.mkdtemp(prefix="plantops-bench-warm-"))
    try:
        m = measure.run([PYTHON, "-m", "bench.warm", "--port", str(cfg.cycle_port + 4), "--runs", "3", "--work",
                         str(work)], env=child_env(), log_path=cfg.logs / "warm.log", cwd=REPO)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not m.ok or not m.output:
        raise RuntimeError(f"warm: failed, see {m.log_path}")
    o = m.output
    forked, fresh, duck = min(o["forked_s"]), min(o["warm_s"][1:] or o["warm_s"]), o["duckdb_s"]
    why = (f"as the executors run it (forked from a preloaded worker) {forked:.1f} s, a fresh client process "
           f"{fresh:.1f} s (first after the server's start {o['warm_s'][0]:.1f} s), DuckDB {duck:.2f} s incl. its "
           f"process start, cold spark-submit {o['spark_submit_s']:.1f} s; server start {o['server_start_s']:.1f} s")
    return {
        **o,
        "budgets": [
            budget("one plant day of one asset, warm feature job, end to end", forked, 10.0, "s", why=why),
            budget("the same day, warm feature job / DuckDB (each with its process start)", forked / duck, 5.0, "x",
                   why=f"a fresh client process: {fresh / duck:.1f}x"),
        ],
    }


# -- 5c. throughput of the Celery tier ---------------------------------------------------------------------


def figure_celery(ctx: Context) -> dict[str, Any]:
    """N use cases' monitor runs queued at once on the native stack's Celery workers (bench/celery_tier.py)."""
    from bench import celery_tier
    from plantops.environments import stack
    from plantops.stages.approval import AirflowApi

    cfg = ctx.config
    count = cfg.celery_runs
    # Empty databases (as the stack test does): the history is replayed into the stack's historian,
    # and rows another run left for the same asset and days would be second values of each point.
    stack.up(fresh=True)
    home = Path(tempfile.mkdtemp(prefix="plantops-bench-celery-"))
    use_cases = home / "use_cases"
    env = {**stack.airflow_env(home, api_port=cfg.celery_port), "PLANTOPS_USE_CASES": str(use_cases),
           # 50 use cases are 300 DAGs: a parse every few seconds would take a core from the workers.
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
           # Only the monitor DAGs are switched on: the copies' scheduled ingest and train runs would
           # otherwise start with them and compete for the workers.
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    out = cfg.logs / "celery-prepare.json"
    log.info("celery: preparing %d use cases on the stack", count)
    m = measure.run([PYTHON, "-m", "bench.celery_tier", "prepare", "--count", str(count), "--use-cases",
                     str(use_cases), "--out", str(out)],
                    # The history is prepared with the repository's use cases; Airflow then parses the copies only.
                    env=child_env(**{k: v for k, v in env.items() if k != "PLANTOPS_USE_CASES"}),
                    log_path=cfg.logs / "celery-prepare.log",
                    cwd=REPO)
    if not m.ok:
        if (home / "bench-monitor.log").exists():
            shutil.copy(home / "bench-monitor.log", cfg.logs / "celery-prepare-dags.log")
        shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"celery: prepare failed, see {m.log_path} and {cfg.logs / 'celery-prepare-dags.log'}")
    prepared = json.loads(out.read_text())
    services = stack.AirflowServices(env, cfg.logs / "celery-airflow")
    try:
        services.start()
        passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        api = AirflowApi(env["AIRFLOW__API__BASE_URL"], "ops1", passwords["ops1"])
        api.wait_healthy(timeout=300)
        dag_ids = [f"{uc}__monitor" for uc in prepared["use_cases"]]
        registered_s = celery_tier.wait_registered(api, dag_ids, timeout=600)
        log.info("celery: %d monitor runs queued at once", len(dag_ids))
        result = celery_tier.run_all(api, dag_ids, celery_tier.DAY, timeout=3600)
    finally:
        services.stop()
        shutil.rmtree(home, ignore_errors=True)
    ok = result["succeeded"] == result["runs"] and not result["failed_tasks"]
    return {
        **result,
        "prepare": prepared,
        "dags_registered_s": round(registered_s, 1),
        "workers": stack.CELERY_WORKERS,
        "statistic": "wall time from the first of the runs queued at once through the REST API to the last one ended",
        "budgets": [
            budget(f"{result['runs']} use cases' monitor runs queued at once on 2 Celery workers: failed tasks",
                   len(result["failed_tasks"]), 0, "tasks",
                   why=(f"all {result['runs']} runs succeeded in {result['wall_s']:.0f} s "
                        f"({result['wall_s'] / result['runs']:.1f} s per run; tasks per worker "
                        f"{result['tasks_per_host']}; branches {result['branches']})" if ok else
                        f"{result['runs'] - result['succeeded']} runs not successful; failed tasks "
                        f"{result['failed_tasks'][:10]}")),
        ],
    }


# -- 6. a whole monitor DAG run ------------------------------------------------------------------------


def monitor_budgets(runs: dict[str, dict[str, Any]], expected: dict[str, str]) -> list[dict[str, Any]]:
    """One budget line per timed day: the dag.test() wall time against MONITOR_BUDGET_S."""
    from bench import monitor

    out = []
    for label, run in runs.items():
        name = f"whole monitor DAG run, embedded tier, {run['day']} ({expected[label]})"
        problem = monitor.check_run(run, expected[label])
        if problem:
            out.append(budget(name, None, MONITOR_BUDGET_S, "s", why=problem))
        else:
            out.append(budget(name, run["wall_s"], MONITOR_BUDGET_S, "s", why=monitor.split_text(run)))
    return out


def figure_monitor(ctx: Context) -> dict[str, Any]:
    from bench import latency, monitor

    cfg = ctx.config
    home = cfg.cache / "monitor"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    # The embedded tier's settings for the private home (no api-server is started: the port only
    # keeps its URLs off another Airflow's); Airflow is imported in the children, never here.
    env = latency.standalone_env(home, cfg.monitor_port, base=child_env())
    steps: dict[str, Any] = {}

    def child(name: str, *args: str) -> dict[str, Any]:
        out = cfg.logs / f"monitor-{name}.json"
        log.info("monitor: %s", name)
        m = measure.run([PYTHON, *args, *(["--out", str(out)] if args[1] == "bench.monitor" else [])],
                        env=env, log_path=cfg.logs / f"monitor-{name}.log", cwd=REPO)
        if not m.ok:
            raise RuntimeError(f"monitor: {' '.join(args)} failed: see {m.log_path}")
        steps[name] = {"wall_s": round(m.wall_s, 1), "peak_rss_mb": round(m.peak_rss_mb)}
        return json.loads(out.read_text()) if out.exists() else {}

    began = time.perf_counter()
    child("migrate", "-m", "airflow", "db", "migrate")
    prepared = child("prepare", "-m", "bench.monitor", "prepare")
    normal = child("time-normal", "-m", "bench.monitor", "time", "--day", monitor.NORMAL_DAY)
    live_day = child("live-drift", "-m", "bench.monitor", "live", "--episode", "upset")
    drift = child("time-drift", "-m", "bench.monitor", "time", "--day", live_day["day"])
    runs = {"normal": normal, "drift": drift}
    expected = {"normal": "no_action", "drift": "alert_operators"}
    for label, run in runs.items():
        log.info("monitor %s (%s): %.1f s, branch %s; %s", run["day"], label, run["wall_s"], run["branch"],
                 monitor.split_text(run))
    budgets = monitor_budgets(runs, expected)
    return {
        "seconds": {label: run["wall_s"] for label, run in runs.items()},
        "budget_s": MONITOR_BUDGET_S,
        "verdict": {label: b["margin"] for label, b in zip(runs, budgets)},
        "runs": runs,
        "prepare": prepared,
        "live": live_day,
        "children": steps,
        "home": str(home),
        "statistic": "wall time of dag.test() of the monitor DAG, one run per day, each in a fresh process",
        "figure_setup_s": round(time.perf_counter() - began, 1),
        "budgets": budgets,
    }


# -- the table --------------------------------------------------------------------------------------------


def _value(b: dict[str, Any]) -> str:
    if b["value"] is None:
        return "n/a"
    if b["unit"] == "share":
        return f"{b['value']:.1%}"
    if b["unit"] == "s":
        return f"{b['value']:.1f} s"
    if b["unit"] == "modules":
        return f"{b['value']:.0f}"
    return f"{b['value']:.2f}x"


def _limit(b: dict[str, Any]) -> str:
    if b["unit"] == "share":
        return f"<= {b['limit']:.0%}"
    if b["unit"] == "s":
        return f"<= {b['limit']:g} s"
    if b["unit"] == "modules":
        return "none"
    return f"{'>=' if b.get('higher_is_better') else '<='} {b['limit']:g}x"


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per budget, then the feature job's raw figures."""
    lines = ["| figure | measured | budget | verdict |", "|---|---|---|---|"]
    for key in ("dag_parsing", "feature_job", "validation_overhead", "drift", "latency", "monitor", "warm_day",
                "daily_cycle", "celery_tier", "detectors", "wind_nbm", "vision"):
        for b in results.get(key, {}).get("budgets", []):
            if b["met"] is None:
                verdict = f"not measured ({b['why']})" if b.get("why") else "not measured"
            elif b["met"]:
                verdict = b["margin"]
            else:
                verdict = f"**{b['margin']}**" + (f" ({b['why']})" if b.get("why") else "")
            lines.append(f"| {b['name']} | {_value(b)} | {_limit(b)} | {verdict} |")
    parsing = results.get("dag_parsing")
    if parsing:
        lines += ["", "| use cases | DAGs | tasks | parse (b) | floor (c) | b - a | c - a | (b-a)/(c-a) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for rec in parsing["by_use_cases"].values():
            ratio = f"{rec['ratio']:.2f}" if rec["ratio"] is not None else "n/a"
            lines.append(f"| {rec.get('label', rec['use_cases'])} | {rec['dags']} | {rec['tasks']} | "
                         f"{rec['factory_s']:.2f} s | {rec['floor_s']:.2f} s | "
                         f"{rec['factory_minus_bare_s']:.2f} s | "
                         f"{rec['floor_minus_bare_s']:.2f} s | {ratio} |")
        lines.append(f"\n(a) bare `import airflow.sdk`: {parsing['bare_import_s']:.2f} s; median of "
                     f"{parsing['repeats']} interleaved fresh interpreters each.")
    features = results.get("feature_job")
    if features:
        lines += ["", "| points | engine | wall | points/s | peak RSS | same as Spark |",
                  "|---:|---|---:|---:|---:|---|"]
        for size in features["by_points"].values():
            for engine in ("spark", "spark_cluster", "duckdb", "pandas"):
                rec = size.get(engine, {})
                match = rec.get("matches_local", {}) if engine == "spark_cluster" else size.get(f"{engine}_matches_spark", {})
                same = "yes" if match.get("same") else (match.get("reason") or "-")
                same = "" if engine == "spark" else same
                label = points_label(size["points"])
                if not rec:
                    continue
                if rec.get("skipped"):
                    lines.append(f"| {label} | {engine} | - | - | - | {rec['skipped']} |")
                    continue
                pps = f"{rec['points_per_s'] / 1e6:.2f}M" if rec.get("points_per_s") else "failed"
                lines.append(f"| {label} | {engine} | {rec['wall_s']:.1f} s | {pps} | "
                             f"{rec['peak_rss_mb'] / 1024:.2f} GiB | {same} |")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------------


def figure_detectors(ctx: Context) -> dict[str, Any]:
    """Model quality, TEP: mspm_early against mspm_pca and the textbook PCA monitor (bench.detectors)."""
    from bench import detectors

    out = detectors.main(["--json", str(ctx.config.logs / "detectors.json")])
    by = {r["detector"]: r for r in out["results"]}
    early, pca = by["early"], by["mspm_pca"]
    budgets = []
    for mode, label in (("own", "own limits"), ("equal_far", "equal FAR")):
        e, p = early[mode], pca[mode]
        budgets.append(budget(f"TEP mean detection rate, mspm_early / mspm_pca ({label}, 21 faults)",
                              round(e["detection_rate_21"] / p["detection_rate_21"], 3), 1.0, "x",
                              higher_is_better=True,
                              why=f"{e['detection_rate_21']:.3f} vs {p['detection_rate_21']:.3f}; FAR on d00_te "
                                  f"{e['far_d00_te']:.3f} vs {p['far_d00_te']:.3f}"))
        budgets.append(budget(f"TEP median detection delay, mspm_early / mspm_pca ({label})",
                              round(e["median_delay_21"] / p["median_delay_21"], 3), 1.0, "x",
                              why=f"{e['median_delay_21']:g} vs {p['median_delay_21']:g} samples"))
    return {"total_seconds": out["total_seconds"], "results": out["results"], "budgets": budgets}


def figure_wind(ctx: Context) -> dict[str, Any]:
    """Model quality, wind: the normal-behaviour model against the IEC binned power curve (bench.wind_nbm)."""
    from bench import wind_nbm

    out = wind_nbm.main(["--out", str(ctx.config.logs / "wind_nbm.json")])
    nbm, binned = out["mean"]["nbm"], out["mean"]["binned"]
    return {
        "mean": out["mean"], "timings": out["timings"],
        "budgets": [
            budget("La Haute Borne held-out power RMSE, normal_behaviour / binned power curve (4 turbines, 2015)",
                   round(nbm["held_rmse"] / binned["held_rmse"], 3), 1.0, "x",
                   why=f"{nbm['held_rmse']:.1f} vs {binned['held_rmse']:.1f} kW"),
            budget("La Haute Borne injected 8 % loss detected, normal_behaviour / binned power curve",
                   round(nbm["detection_rate"] / binned["detection_rate"], 3), 1.0, "x", higher_is_better=True,
                   why=f"{nbm['detection_rate']:.1%} vs {binned['detection_rate']:.1%} of the loss rows; alarm rate on "
                       f"held-out normal rows {nbm['held_alarm_rate']:.2%} (target 1 %)"),
        ],
    }


def figure_vision(ctx: Context) -> dict[str, Any]:
    """Model quality, visual inspection: cell_texture_svm, cell_cnn and cell_ensemble on the elpv hold-out
    (bench.vision)."""
    from bench import vision

    out = vision.main(["--out", str(ctx.config.logs / "vision.json")])
    published = out["published"]
    budgets = []
    for key, r in out["results"].items():
        reference = published["cnn" if key.startswith("cell_cnn") else "svm"]
        budgets.append(budget(f"elpv held-out four-class accuracy, {key} / published {reference:.2%}",
                              round(r["accuracy"] / reference, 3), 1.0, "x", higher_is_better=True,
                              why=f"{r['accuracy']:.2%} (balanced {r['balanced_accuracy']:.2%}); defect recall "
                                  f"{r['defect_recall']:.2%} at {r['false_reject_rate']:.2%} false rejects; "
                                  f"fit {r['fit_seconds']:.0f} s"))
    return {**out, "budgets": budgets}


RUNNERS: dict[str, tuple[str, Callable[[Context], dict[str, Any]]]] = {
    "parsing": ("dag_parsing", figure_parsing),
    "features": ("feature_job", figure_features),
    "validation": ("validation_overhead", figure_validation),
    "drift": ("drift", figure_drift),
    "latency": ("latency", figure_latency),
    "monitor": ("monitor", figure_monitor),
    "warm": ("warm_day", figure_warm),
    "cycle": ("daily_cycle", figure_cycle),
    "celery": ("celery_tier", figure_celery),
    "detectors": ("detectors", figure_detectors),
    "wind": ("wind_nbm", figure_wind),
    "vision": ("vision", figure_vision),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every figure")
    parser.add_argument("--only", action="append", choices=FIGURES, metavar="FIGURE",
                        help=f"run only this figure (repeatable): {', '.join(FIGURES)}")
    parser.add_argument("--sizes", type=lambda s: tuple(int(float(x) * M) for x in s.split(",")),
                        help="feature job sizes in millions of points, e.g. 10,50,200 "
                             "(default: that times $BENCH_SCALE, or 1,2 with --quick)")
    parser.add_argument("--use-cases", type=lambda s: tuple(int(x) for x in s.split(",")),
                        help="use-case counts for the parsing figure (default 1,10,100; --quick 1,10)")
    parser.add_argument("--repeats", type=int, help="parsing repeats (default 3; --quick 1)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("BENCH_CACHE", REPO / "data" / "bench")),
                        help="where generated data and outputs are kept between runs ($BENCH_CACHE)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    sizes = args.sizes or (QUICK_SIZES if args.quick else tuple(int(s * scale) for s in FULL_SIZES))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Config(
        quick=args.quick,
        sizes=tuple(sorted(sizes)),
        use_case_counts=tuple(sorted(args.use_cases or ((1, 10) if args.quick else (1, 10, 100)))),
        parse_repeats=args.repeats or (1 if args.quick else 3),
        drift_rows=10_000 if args.quick else 100_000,
        historian_rows=10_000 if args.quick else 100_000,
        cache=args.cache.resolve(),
        logs=args.cache.resolve() / "logs" / stamp,
        latency_files=QUICK_LATENCY_FILES if args.quick else LATENCY_FILES,
        latency_port=int(os.environ.get("BENCH_LATENCY_PORT", "28380")),
        monitor_port=int(os.environ.get("BENCH_MONITOR_PORT", "28390")),
        cycle_port=int(os.environ.get("BENCH_CYCLE_PORT", "28395")),
        celery_port=int(os.environ.get("BENCH_CELERY_PORT", "28291")),
        celery_runs=5 if args.quick else 50,
    )


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    cfg = make_config(args)
    cfg.logs.mkdir(parents=True, exist_ok=True)
    figures = [f for f in FIGURES if not args.only or f in args.only]
    ctx = Context(config=cfg, use_case=load_use_case(USE_CASE_YAML))

    results: dict[str, Any] = {}
    if args.only and args.results.exists():
        # Keep the other figures of a run of the same kind; a quick run never mixes with a full one.
        previous = json.loads(args.results.read_text())
        if previous.get("meta", {}).get("quick") == cfg.quick:
            results = previous
    began = time.perf_counter()
    for name in figures:
        key, runner = RUNNERS[name]
        t0 = time.perf_counter()
        results[key] = runner(ctx)
        results[key]["figure_wall_s"] = round(time.perf_counter() - t0, 1)
        results[key]["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.info("%s done in %.0f s", name, time.perf_counter() - t0)
    results["meta"] = {
        **results.get("meta", {}),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "quick": cfg.quick,
        "figures_run": figures,
        "wall_s": round(time.perf_counter() - began, 1),
        "sizes": list(cfg.sizes),
        "use_case_counts": list(cfg.use_case_counts),
        "machine": machine(),
        "logs": str(cfg.logs),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, default=str))
    log.info("results written to %s (%.0f s)", args.results, results["meta"]["wall_s"])
    print(table(results))  # the one print: the table is the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
