"""A whole daily cycle under a scheduler on the embedded tier (bench figure ``cycle``).

One plant day of ``tep_reactor`` from NiFi's rename in the landing folder to the monitor's
decision, event-driven as in production: the landing watcher starts ``__ingest``, its bronze event
``__features``, the features event ``__score``, the predictions event ``__monitor``. Everything
runs under ``airflow standalone`` (LocalExecutor, SQLite, a task process per task) with the warm
Spark Connect server, on a private PLANTOPS_HOME prepared like the demo's history (bench.monitor
prepare: replay, ingest, features, first champion).

Child command (run in the standalone's environment):

    python -m bench.cycle land --out F     # replay the cycle's plant day; writes the rename time
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.cycle")

USE_CASE = "tep_reactor"
STAGES = ("ingest", "features", "score", "monitor")
# A normal day after the demo's history and live days: TEP's normal test run.
CYCLE_DAY = date(2026, 3, 30)


def land(out: Path) -> dict[str, Any]:
    from plantops.config import get_use_case
    from plantops.sources import replay

    episode = replay.Episode(CYCLE_DAY, 0, True, 0)
    began = time.time()
    replayed = replay.replay_episode(get_use_case(USE_CASE), episode)
    result = {"day": str(CYCLE_DAY), "landed_at": time.time(), "replay_s": round(time.time() - began, 1),
              "landed": replayed["landed"]}
    out.write_text(json.dumps(result))
    return result


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def stage_runs(api: Any, since: datetime) -> dict[str, list[dict]]:
    """Each stage's DAG runs queued after ``since``, oldest first."""
    out = {}
    for stage in STAGES:
        dag_id = f"{USE_CASE}__{stage}"
        status, body = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-id&limit=20")
        if status != 200:
            raise RuntimeError(f"list runs of {dag_id}: {status} {body}")
        runs = [r for r in body["dag_runs"] if r.get("queued_at") and _ts(r["queued_at"]) >= since]
        out[stage] = sorted(runs, key=lambda r: r["queued_at"])
    return out


def task_seconds(api: Any, stage: str, run_id: str) -> dict[str, float | None]:
    import urllib.request

    dag_id = f"{USE_CASE}__{stage}"
    status, body = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}"
                                   "/taskInstances?limit=100")
    if status != 200:
        return {}
    out: dict[str, float | None] = {}
    for ti in body["task_instances"]:
        key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
        out[key] = round(ti["duration"], 1) if ti.get("duration") is not None else None
    return out


def summarize(landed_at: float, runs: dict[str, list[dict]], api: Any) -> dict[str, Any]:
    """Seconds from the rename to each stage's run end; the stages' own wall times and task times."""
    start = datetime.fromtimestamp(landed_at, tz=timezone.utc)
    out: dict[str, Any] = {"stages": {}, "states": {}}
    for stage, stage_list in runs.items():
        if not stage_list:
            out["states"][stage] = None
            continue
        run = stage_list[-1]
        out["states"][stage] = run["state"]
        queued, began, ended = _ts(run.get("queued_at")), _ts(run.get("start_date")), _ts(run.get("end_date"))
        out["stages"][stage] = {
            "run_id": run["dag_run_id"],
            "runs": len(stage_list),
            "queued_s": round((queued - start).total_seconds(), 1) if queued else None,
            "ended_s": round((ended - start).total_seconds(), 1) if ended else None,
            "run_s": round((ended - began).total_seconds(), 1) if ended and began else None,
            "tasks_s": task_seconds(api, stage, run["dag_run_id"]),
        }
    monitor = out["stages"].get("monitor") or {}
    out["cycle_s"] = monitor.get("ended_s")
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(prog="bench.cycle")
    parser.add_argument("command", choices=("land",))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(land(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
