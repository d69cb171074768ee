"""A whole ``tep_reactor__monitor`` DAG run on the embedded tier (bench figure ``monitor``).

The DAG runs as ``make demo`` runs it: ``dag.test()`` in-process on a SQLite Airflow metadata DB,
MLflow on SQLite, local files (``plantops.demo.Demo.run``). ``bench.run`` drives it from a private
PLANTOPS_HOME (wiped first): ``airflow db migrate``, then one fresh process per phase, so that
each timed monitor run starts in a cold interpreter as a task process would (nothing of the
preparation is imported or cached in it):

    python -m bench.monitor prepare            # replay the TEP history; ingest, features, train, score 2026-03-24
    python -m bench.monitor time --day D       # time dag.test(run_conf={"day": D}) of the monitor DAG
    python -m bench.monitor live --episode upset   # replay a live day; ingest, features, score it

Each child writes its result as JSON to ``--out`` (and prints it as its last stdout line). The
normal day's branch is ``no_action``; the drifting live day's is ``trigger_retrain``, whose
TriggerDagRunOperator only queues the train run (not executed here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.monitor")

USE_CASE = "tep_reactor"
DAG_ID = f"{USE_CASE}__monitor"
NORMAL_DAY = "2026-03-24"
BRANCHES = ("no_action", "trigger_retrain", "request_approval")
# Calls inside assess_drift timed in the child, so the table can say where the task's time goes.
ASSESS_PARTS = (("plantops.stages.pipeline", "load_features"), ("plantops.stages.registry", "load_reference"),
                ("plantops.stages.monitoring", "compute_drift"), ("plantops.stages.pipeline", "performance_check"))


# -- the child (runs in the private home; Airflow imported only after localenv.apply) ----------------


def _demo(home: Path):
    """A Demo on ``home`` with its DAGs built, without the api-server (no approval is answered)."""
    from plantops.environments import localenv

    localenv.apply(home)
    from plantops.demo import Demo

    demo = Demo(home, home / "bench-monitor.log")
    demo.build_dags()
    return demo


def _timed_parts() -> dict[str, list[float]]:
    """Wrap the calls of ASSESS_PARTS with timers (assess imports them at call time)."""
    import importlib

    spent: dict[str, list[float]] = {}
    for module_name, name in ASSESS_PARTS:
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            began = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent.setdefault(_name, []).append(time.perf_counter() - began)

        setattr(module, name, timed)
    return spent


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def time_monitor(home: Path, day: str) -> dict[str, Any]:
    from datetime import datetime, timezone

    began = time.perf_counter()
    demo = _demo(home)
    setup_s = time.perf_counter() - began
    evidently_warm = "evidently" in sys.modules
    spent = _timed_parts()
    dag = demo.dags[DAG_ID]
    t0 = time.perf_counter()
    dr = dag.test(run_conf={"day": day}, logical_date=datetime.now(timezone.utc))
    wall = time.perf_counter() - t0
    tis = sorted(dr.get_task_instances(), key=lambda ti: (ti.start_date is None, ti.start_date or 0))
    tasks = {ti.task_id: {"state": str(ti.state), "seconds": _seconds(ti.start_date, ti.end_date)} for ti in tis}
    states = {k: v["state"] for k, v in tasks.items()}
    branch = next((b for b in BRANCHES if states.get(b) == "success"), None)
    task_sum = sum(v["seconds"] or 0.0 for v in tasks.values())

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        queued_train = session.scalar(select(func.count()).select_from(DagRun).where(
            DagRun.dag_id == f"{USE_CASE}__train", DagRun.state == "queued"))
    return {
        "day": day,
        "state": str(dr.state),
        "branch": branch,
        "wall_s": round(wall, 3),
        "run_s": _seconds(dr.start_date, dr.end_date),
        "tasks": tasks,
        "task_sum_s": round(task_sum, 3),
        "airflow_overhead_s": round(wall - task_sum, 3),
        "assess_parts_s": {k: round(sum(v), 3) for k, v in spent.items()},
        "evidently_imported_before": evidently_warm,
        "process_setup_s": round(setup_s, 3),
        "queued_train_runs": queued_train,
    }


def prepare(home: Path) -> dict[str, Any]:
    """The demo's step 1 up to (not including) the monitor: history, first champion, scores."""
    steps: dict[str, float] = {}
    demo = _demo(home)
    from plantops.sources import replay
    from plantops.config import get_use_case

    use_case = get_use_case(USE_CASE)
    for name, call in (
        ("replay_history", lambda: replay.replay_history(use_case)),
        ("ingest_features", lambda: demo.pipeline("2026-03-01T00:00:00+00:00", "2026-03-25T00:00:00+00:00")),
        ("train", lambda: demo.run("train", {"reason": "first model"})),
        ("score", lambda: demo.run("score", {"day": NORMAL_DAY})),
    ):
        t0 = time.perf_counter()
        call()
        steps[name] = round(time.perf_counter() - t0, 1)
    return {"steps_s": steps}


def live(home: Path, episode: str) -> dict[str, Any]:
    demo = _demo(home)
    from plantops.sources import replay
    from plantops.config import get_use_case

    t0 = time.perf_counter()
    day = demo.live(get_use_case(USE_CASE), replay.LIVE[episode])
    return {"day": day, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(prog="bench.monitor")
    parser.add_argument("command", choices=("prepare", "time", "live"))
    parser.add_argument("--day", default=NORMAL_DAY)
    parser.add_argument("--episode", default="upset")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    home = Path(os.environ["PLANTOPS_HOME"])
    if args.command == "prepare":
        result = prepare(home)
    elif args.command == "live":
        result = live(home, args.episode)
    else:
        result = time_monitor(home, args.day)
    args.out.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return 0


# -- the parent's side: the verdict and its explanation (no Airflow) -------------------------------------


def split_text(run: dict[str, Any]) -> str:
    """'assess_drift 14.2 s (compute_drift 8.1 s, ...), choose_branch 0.4 s, ...; Airflow 3.1 s'."""
    parts = []
    for task_id, rec in run["tasks"].items():
        if rec["seconds"] is None or rec["state"] == "skipped":
            continue
        text = f"{task_id} {rec['seconds']:.1f} s"
        if task_id == "assess_drift" and run.get("assess_parts_s"):
            inner = ", ".join(f"{k} {v:.1f} s" for k, v in run["assess_parts_s"].items())
            text += f" ({inner})"
        parts.append(text)
    return f"{', '.join(parts)}; outside the tasks (dag.test scheduling, DB) {run['airflow_overhead_s']:.1f} s"


def check_run(run: dict[str, Any], expected_branch: str) -> str | None:
    """Why the run does not count, or None."""
    if run.get("state") != "success":
        return f"the run ended {run.get('state')}"
    if run.get("branch") != expected_branch:
        return f"branch {run.get('branch')}, expected {expected_branch}"
    return None


if __name__ == "__main__":
    sys.exit(main())
