"""One plant day of one asset through the features stage: warm Spark Connect vs spark-submit vs DuckDB.

    python -m bench.warm [--port 28700] [--runs 3] [--work DIR]

Replays two TEP days (the day and its lookback day) into a throw-away PLANTOPS_HOME, ingests them,
then times, each as a fresh process from start to exit:

- ``warm``: ``python spark_jobs/build_features.py ... --remote sc://...`` against a Spark Connect
  server started once beforehand (its start is reported apart), ``--runs`` times (the first run
  after a server start also pays the server's first planning and code generation);
- ``forked``: the same client as the executors run the task: forked from a parent that preloaded
  the task libraries (plantops.orchestration.preload), the job's module loaded fresh in the fork;
- ``spark_submit``: the same job through ``spark-submit --master local[2]`` with the DAG's conf;
- ``duckdb``: ``python -m bench.engines duckdb`` over the same two bronze days (its process start
  included).

The arguments are the features DAG's (``dagfactory.spark_args``) for the one day. Prints one JSON
object; no budget is asserted here (the bench table in bench/run.py is the place for verdicts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _timed(cmd: list[str], env: dict[str, str], log_path: Path) -> float:
    began = time.monotonic()
    with open(log_path, "ab") as out:
        subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, cwd=REPO)
    return round(time.monotonic() - began, 2)


def warm_features_day(work: Path, port: int, runs: int = 3) -> dict[str, Any]:
    """Measure one TEP plant day (one asset) warm, via spark-submit and in DuckDB; see the module doc."""
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["PLANTOPS_HOME"] = str(home)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "include"), str(REPO),
                                                                       os.environ.get("PYTHONPATH")])),
           "PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "GX_ANALYTICS_ENABLED": "false"}
    from plantops.config import get_use_case
    from plantops.environments import sparkconnect
    from plantops.modalities.tags import feature_job_args
    from plantops.orchestration.dagfactory import SPARK_CONF
    from plantops.settings import get_settings
    from plantops.sources import replay
    from plantops.stages import pipeline

    use_case = get_use_case("tep_reactor")
    lookback, day = replay.HISTORY[-2:]
    for episode in (lookback, day):
        replay.replay_episode(use_case, episode)
    start, end = str(day.day), str(day.day + timedelta(days=1))
    pipeline.ingest(use_case.id, str(lookback.day), end, "bench-warm")
    args = [*feature_job_args(use_case), "--ranges", f"{start}:{end}"]
    bronze = get_settings().bronze_root / use_case.id
    log_path = work / "warm.log"
    result: dict[str, Any] = {"day": start, "asset": use_case.historian.asset, "tags": len(use_case.tag_names),
                              "bronze_days_read": sorted(p.name for p in bronze.glob("date=*"))}

    began = time.monotonic()
    server = sparkconnect.start(port, folder=work / "spark-connect")
    result["server_start_s"] = round(time.monotonic() - began, 2)
    try:
        job = [PYTHON, str(REPO / "spark_jobs" / "build_features.py"), *args, "--remote", server.url]
        result["warm_s"] = [_timed(job, env, log_path) for _ in range(runs)]
        # As the executors run the task: forked from a parent that preloaded the task libraries
        # (the LocalExecutor's scheduler, a Celery worker), the job's module loaded fresh.
        forked = subprocess.run([PYTHON, "-m", "bench.warm", "--forked", json.dumps([*args, "--remote", server.url]),
                                 "--runs", str(runs)], env=env, capture_output=True, text=True, check=True, cwd=REPO)
        result["forked_s"] = json.loads(forked.stdout.strip().splitlines()[-1])
    finally:
        sparkconnect.stop(server.folder)
    conf = [arg for key, value in SPARK_CONF.items() for arg in ("--conf", f"{key}={value}")]
    submit = [str(Path(PYTHON).parent / "spark-submit"), "--master", "local[2]", *conf,
              str(REPO / "spark_jobs" / "build_features.py"), *args]
    result["spark_submit_s"] = _timed(submit, env, log_path)
    duck_out = work / "duckdb-out"
    shutil.rmtree(duck_out, ignore_errors=True)
    duck = [PYTHON, "-m", "bench.engines", "duckdb", "--input", str(bronze), "--output", str(duck_out),
            "--tags", ",".join(use_case.tag_names), "--bucket-seconds", str(use_case.features.bucket_seconds),
            "--rolling-buckets", str(use_case.features.rolling_buckets)]
    result["duckdb_s"] = _timed(duck, env, log_path)
    best_warm = min(result["warm_s"][1:] or result["warm_s"])
    result["warm_vs_duckdb"] = round(best_warm / result["duckdb_s"], 2)
    result["forked_vs_duckdb"] = round(min(result["forked_s"]) / result["duckdb_s"], 2)
    result["spark_submit_vs_warm"] = round(result["spark_submit_s"] / best_warm, 1)
    return result


def forked_runs(job_args: list[str], runs: int) -> list[float]:
    """Preload the task libraries, then time ``runs`` forks that each load the job's module and run
    its ``main`` (as plantops.orchestration.operators.SparkJob does in the task process)."""
    import importlib.util

    from plantops.orchestration.preload import preload

    preload()
    times = []
    for _ in range(runs):
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                spec = importlib.util.spec_from_file_location("plantops_job", REPO / "spark_jobs" / "build_features.py")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                code = module.main(job_args)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status:
            raise RuntimeError(f"the forked job failed (wait status {status})")
        times.append(round(time.monotonic() - began, 2))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.warm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=28700)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--forked", metavar="JOB_ARGS_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.forked:
        print(json.dumps(forked_runs(json.loads(args.forked), args.runs)))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="plantops-warm-"))
    print(json.dumps(warm_features_day(work, args.port, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
