"""Throughput of the Celery tier (bench figure ``celery``): N use cases' monitor runs queued at once.

On the native stack (PostgreSQL metadata DB and historian, MLflow server, Redis broker, two Celery
workers; `make stack-up` first): a private PLANTOPS_HOME is prepared as the demo's history
(bench.monitor prepare: replay, ingest, features, first champion, scores of the normal day), then
N use cases are made of it: copies of tep_reactor.yaml (ids ``tep_reactor_cNNN``) whose features
folder is the original's and whose champion is a copy of the original's model version in the
MLflow registry. Airflow's services and the Celery workers then parse the N use cases (6 DAGs
each), and one monitor run per use case, for the same normal day, is queued at once through the
REST API. The figure is the time until every run has ended, and how many tasks failed.

Child command (runs with the stack's client environment and the private home):

    python -m bench.celery_tier prepare --count N --use-cases DIR --out F
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.celery_tier")

SOURCE = "tep_reactor"
DAY = "2026-03-24"  # bench.monitor.NORMAL_DAY: scored by prepare, branch no_action


def copy_id(index: int) -> str:
    return f"{SOURCE}_c{index:03d}"


def make_copies(home: Path, folder: Path, count: int) -> list[str]:
    """``count`` use cases sharing the prepared tep_reactor's features and champion."""
    from plantops.stages import registry
    from plantops.settings import REPO_ROOT

    text = (REPO_ROOT / "include" / "use_cases" / f"{SOURCE}.yaml").read_text()
    if not re.search(rf"^id: {SOURCE}$", text, flags=re.M):
        raise RuntimeError(f"{SOURCE}.yaml: no 'id: {SOURCE}' line to rewrite")
    client = registry.configure()
    champion = client.get_model_version_by_alias(SOURCE, registry.CHAMPION)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(1, count + 1):
        uc = copy_id(i)
        (folder / f"{uc}.yaml").write_text(re.sub(rf"^id: {SOURCE}$", f"id: {uc}", text, flags=re.M))
        features = home / "features" / uc
        if not features.exists():
            features.symlink_to(home / "features" / SOURCE, target_is_directory=True)
        copied = client.copy_model_version(f"models:/{SOURCE}/{champion.version}", uc)
        client.set_registered_model_alias(uc, registry.CHAMPION, copied.version)
        ids.append(uc)
    return ids


def prepare(home: Path, folder: Path, count: int) -> dict[str, Any]:
    from bench import monitor

    import subprocess
    import sys

    from plantops.environments import localenv

    began = time.perf_counter()
    # The history runs with dag.test() on the embedded tier's SQLite metadata DB of the home (the
    # stack's own Airflow, on PostgreSQL, only runs the monitor runs later).
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env={**os.environ, **localenv.airflow_env(home)},
                   check=True, capture_output=True)
    prepared = monitor.prepare(home)
    t0 = time.perf_counter()
    ids = make_copies(home, folder, count)
    return {"use_cases": ids, "prepare_s": round(t0 - began, 1), "copies_s": round(time.perf_counter() - t0, 1),
            "steps_s": prepared["steps_s"]}


def _get(api: Any, path: str, **params: Any) -> dict:
    resp = api.request("GET", path, params=params)
    resp.raise_for_status()
    return resp.json()


def wait_registered(api: Any, dag_ids: list[str], timeout: float) -> float:
    """Until the dag-processor has registered every DAG; returns the seconds waited."""
    began = time.monotonic()
    while True:
        found: set[str] = set()
        offset = 0
        while True:
            page = _get(api, "/dags", dag_id_pattern=f"{SOURCE}_c", limit=100, offset=offset)
            found |= {d["dag_id"] for d in page["dags"]}
            offset += 100
            if offset >= page["total_entries"]:
                break
        if set(dag_ids) <= found:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{len(set(dag_ids) - found)} of {len(dag_ids)} DAGs not registered in {timeout:.0f} s")
        time.sleep(3)


def run_all(api: Any, dag_ids: list[str], day: str, timeout: float) -> dict[str, Any]:
    """Unpause, queue one run per DAG at once, wait for all to end; times and failed tasks."""
    for dag_id in dag_ids:
        resp = api.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        if resp.status_code != 200:
            raise RuntimeError(f"unpause {dag_id}: {resp.status_code} {resp.text}")
    began = time.monotonic()
    runs = {}
    for dag_id in dag_ids:
        resp = api.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"day": day}})
        if resp.status_code != 200:
            raise RuntimeError(f"trigger {dag_id}: {resp.status_code} {resp.text}")
        runs[dag_id] = resp.json()["dag_run_id"]
    queued_s = time.monotonic() - began
    states: dict[str, str] = {}
    while True:
        for dag_id, run_id in runs.items():
            if states.get(dag_id) in ("success", "failed"):
                continue
            states[dag_id] = _get(api, f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if all(s in ("success", "failed") for s in states.values()):
            break
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"runs not ended after {timeout:.0f} s: "
                               f"{sum(s not in ('success', 'failed') for s in states.values())} of {len(runs)}")
        time.sleep(3)
    wall = time.monotonic() - began
    failed_tasks, hosts, branches = [], {}, {}
    for dag_id, run_id in runs.items():
        for ti in _get(api, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]:
            if ti["state"] in ("failed", "upstream_failed"):
                failed_tasks.append(f"{dag_id}.{ti['task_id']}")
            if ti.get("hostname"):
                hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
            if ti["task_id"] in ("no_action", "alert_operators", "trigger_retrain", "request_approval") \
                    and ti["state"] == "success":
                branches[ti["task_id"]] = branches.get(ti["task_id"], 0) + 1
    return {"runs": len(runs), "queue_s": round(queued_s, 1), "wall_s": round(wall, 1),
            "succeeded": sum(s == "success" for s in states.values()), "failed_tasks": failed_tasks,
            "tasks_per_host": hosts, "branches": branches}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(prog="bench.celery_tier")
    parser.add_argument("command", choices=("prepare",))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--use-cases", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = prepare(Path(os.environ["PLANTOPS_HOME"]), args.use_cases, args.count)
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
