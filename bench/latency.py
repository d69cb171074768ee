"""Landing-to-bronze latency under ``airflow standalone`` (bench figure ``latency``).

From a file's rename into the landing folder (NiFi's PutFile: dot-name, then rename) to its
validated rows in bronze, with the event-driven ingest (``LandingFileTrigger`` on the landing
asset's ``AssetWatcher``, ``tep_reactor__ingest`` scheduled on that asset). ``bench.run`` drives
it: a private PLANTOPS_HOME, ``airflow db migrate``, the TEP history replayed into that home, then
``airflow standalone``; the history's own landed files are the first (warm-up) run, then N
analyzer files are landed one at a time and the bronze folder is polled for each.

Child commands (run in the standalone's environment, so the home is the bench's private one):

    python -m bench.latency replay              # plantops.sources.replay.replay_history into $PLANTOPS_HOME
    python -m bench.latency land --index I      # land one analyzer file; prints its rename time
    python -m bench.latency imports             # what a fresh ingest task process imports, timed
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.latency")

DAG_ID = "tep_reactor__ingest"
USE_CASE = "tep_reactor"
LANDING_ASSET = f"{USE_CASE}.landing"
# Analyzer files are dated after the replayed history and the demo's live days.
FIRST_DAY = date(2026, 4, 1)
# Variables of another tier that would point the private home's standalone at shared state.
FOREIGN_VARS = ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_HISTORIAN_READ_URL", "PLANTOPS_STATE_URL",
                "MLFLOW_TRACKING_URI", "PLANTOPS_MLFLOW_ARTIFACTS", "AIRFLOW_HOME", "AIRFLOW_CONFIG")


def standalone_env(home: Path, api_port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The embedded tier's settings for ``home``; the log servers on ports next to the API's.

    Airflow's defaults (8793 worker logs, 8794 triggerer logs) are taken whenever another Airflow
    runs on the machine (a test stack): a second one would fail to serve its logs.
    """
    from plantops.environments import localenv

    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if k not in FOREIGN_VARS and not k.startswith("AIRFLOW__")}
    env.update(localenv.airflow_env(home, api_port=api_port))
    env.update(
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(api_port + 1),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(api_port + 2),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        PLANTOPS_API_PORT=str(api_port),
    )
    return env


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def bronze_path(home: Path, name: str, day: date) -> Path:
    """Where ingest writes a landed file's rows: ``storage.write_bronze`` with ``landing-<stem>``."""
    return home / "bronze" / USE_CASE / f"date={day:%Y-%m-%d}" / f"landing-{Path(name).stem}.parquet"


def file_name(index: int) -> tuple[str, date]:
    day = FIRST_DAY + timedelta(days=index)
    return f"{USE_CASE}_analyzers_{day:%Y%m%d}.parquet", day


# -- a small REST client (SimpleAuthManager token, timeouts on every call) ------------------------


class Api:
    def __init__(self, base_url: str, user: str, password: str, timeout: float = 15.0) -> None:
        self.base = base_url.rstrip("/")
        self.user, self.password, self.timeout = user, password, timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text

    def token(self) -> str:
        if self._token is None:
            status, body = self._request("POST", "/auth/token",
                                         {"username": self.user, "password": self.password}, auth=False)
            if status not in (200, 201):
                raise RuntimeError(f"POST /auth/token: {status} {body}")
            self._token = body["access_token"]
        return self._token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, out = self._request(method, path, body)
        if status == 401:
            self._token = None
            status, out = self._request(method, path, body)
        return status, out

    def health(self) -> dict | None:
        try:
            status, body = self._request("GET", "/api/v2/monitor/health", auth=False)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return body if status == 200 and isinstance(body, dict) else None

    def active_runs(self) -> int:
        status, body = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?state=queued&state=running&limit=1")
        if status != 200:
            raise RuntimeError(f"list runs: {status} {body}")
        return int(body["total_entries"])

    def queued_events(self) -> int:
        """Asset events waiting for the next run (the DAG has max_active_runs=1)."""
        status, body = self.call("GET", f"/api/v2/dags/{DAG_ID}/assets/queuedEvents")
        return int(body.get("total_entries", 0)) if status == 200 and isinstance(body, dict) else 0

    def idle(self) -> bool:
        return self.active_runs() == 0 and self.queued_events() == 0

    def runs_since(self, since: datetime) -> list[dict]:
        status, body = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?order_by=-id&limit=20")
        if status != 200:
            raise RuntimeError(f"list runs: {status} {body}")
        return [r for r in body["dag_runs"] if r.get("queued_at") and _ts(r["queued_at"]) >= since]

    def task_instance(self, run_id: str) -> dict | None:
        status, body = self.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}"
                                         "/taskInstances")
        if status != 200 or not body.get("task_instances"):
            return None
        return body["task_instances"][0]

    def landing_events_since(self, since: datetime) -> list[dict]:
        status, body = self.call("GET", f"/api/v2/assets/events?name_pattern={LANDING_ASSET}"
                                        "&order_by=-timestamp&limit=50")
        if status != 200:
            return []
        return sorted((e for e in body["asset_events"] if _ts(e["timestamp"]) >= since),
                      key=lambda e: e["timestamp"])


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; a timeout names what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(interval_s)


# -- the standalone process group ---------------------------------------------------------------


@dataclass
class Standalone:
    """``airflow standalone`` in its own session, so that stopping it ends every component and task."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; its children may still be in the group.
            time.sleep(1)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
        self.proc = None


def start_healthy(standalone: "Standalone", env: dict[str, str], timeout_s: float) -> "Api":
    """Start ``airflow standalone`` and wait until its scheduler and triggerer report healthy;
    returns an API client logged in as eng1."""
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    api = Api(env["AIRFLOW__API__BASE_URL"], "eng1", passwords["eng1"])
    standalone.start()

    def healthy() -> bool:
        if not standalone.alive():
            raise RuntimeError(f"airflow standalone exited: see {standalone.log_path}")
        health = api.health() or {}
        return all((health.get(c) or {}).get("status") == "healthy" for c in ("scheduler", "triggerer"))

    wait_for("standalone healthy", healthy, timeout_s, 2.0)
    return api


# -- the measurement ----------------------------------------------------------------------------


@dataclass
class FileLatency:
    name: str
    day: str
    renamed_at: str
    latency_s: float | None
    rows: int | None = None
    breakdown: dict[str, float | None] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None
    landing_events: int | None = None  # asset events from the watcher after the rename
    runs_after_rename: int | None = None  # ingest runs queued after the rename (one is needed)


def breakdown(renamed: datetime, seen: datetime | None, event: dict | None, run: dict | None,
              ti: dict | None) -> dict[str, float | None]:
    """Seconds from the rename to each step Airflow records, then to the bronze file."""
    def since(value: str | datetime | None) -> float | None:
        if value is None:
            return None
        moment = _ts(value) if isinstance(value, str) else value
        return round((moment - renamed).total_seconds(), 2)

    return {
        "asset_event": since(event and event.get("timestamp")),  # trigger fired (poll + triggerer)
        "run_queued": since(run and run.get("queued_at")),  # scheduler created the asset-triggered run
        "task_queued": since(ti and ti.get("queued_when")),  # scheduler handed the task to the executor
        "task_started": since(ti and ti.get("start_date")),  # the task process reported running
        "bronze_written": since(seen),
        "task_ended": since(ti and ti.get("end_date")),
    }


def summarize(files: list[FileLatency], limit_s: float) -> dict[str, Any]:
    """Median and spread of the measured latencies; every file must have arrived for a verdict."""
    measured = [f.latency_s for f in files if f.latency_s is not None]
    steps: dict[str, float | None] = {}
    for key in ("asset_event", "run_queued", "task_queued", "task_started", "bronze_written", "task_ended"):
        values = [f.breakdown.get(key) for f in files if f.breakdown.get(key) is not None]
        steps[key] = round(statistics.median(values), 2) if values else None
    return {
        "files": len(files),
        "arrived": len(measured),
        "latency_s": [f.latency_s for f in files],
        "median_s": round(statistics.median(measured), 2) if measured else None,
        "min_s": round(min(measured), 2) if measured else None,
        "max_s": round(max(measured), 2) if measured else None,
        "median_steps_s": steps,
        "limit_s": limit_s,
        "met": bool(measured) and len(measured) == len(files) and statistics.median(measured) <= limit_s,
    }


def measure_file(api: Api, home: Path, index: int, land: Callable[[int], dict], timeout_s: float) -> FileLatency:
    """Land one file, wait for its bronze rows and for its run to end; Airflow's timings per step."""
    import pyarrow.parquet as pq

    name, day = file_name(index)
    target = bronze_path(home, name, day)
    landed = land(index)
    renamed = datetime.fromtimestamp(landed["renamed_at"], timezone.utc)
    seen_at: float | None = None
    error = None
    deadline = time.time() + timeout_s
    quarantined = home / "quarantine" / USE_CASE
    while time.time() < deadline:
        if target.exists():
            seen_at = time.time()
            break
        if quarantined.exists() and any(p.name.startswith(Path(name).stem) for p in quarantined.rglob("*")):
            error = "quarantined"
            break
        time.sleep(0.1)
    else:
        error = f"no bronze file within {timeout_s:.0f} s"
    rows = pq.read_metadata(target).num_rows if seen_at is not None else None
    seen = datetime.fromtimestamp(seen_at, timezone.utc) if seen_at is not None else None
    # Let the run finish, so the next file starts from an idle DAG (max_active_runs=1).
    try:
        wait_for(f"{DAG_ID} idle after {name}", api.idle, timeout_s, 1.0)
    except TimeoutError as exc:
        error = error or str(exc)
    # The run that wrote the file: its task was running when the bronze file appeared. (The
    # trigger fires again while a file waits in the landing folder, so a run queued before the
    # rename, from an earlier file's repeated event, can be the one that ingests it.)
    runs = api.runs_since(renamed - timedelta(seconds=timeout_s))
    tis = {r["dag_run_id"]: api.task_instance(r["dag_run_id"]) for r in runs}

    def wrote(run: dict) -> bool:
        ti = tis.get(run["dag_run_id"]) or {}
        return (seen is not None and ti.get("start_date") is not None and _ts(ti["start_date"]) <= seen
                and (ti.get("end_date") is None or _ts(ti["end_date"]) >= seen))

    run = next((r for r in runs if wrote(r)), None)
    ti = tis.get(run["dag_run_id"]) if run else None
    events = api.landing_events_since(renamed)
    result = FileLatency(
        name=name, day=str(day), renamed_at=renamed.isoformat(timespec="milliseconds"),
        latency_s=round(seen_at - landed["renamed_at"], 2) if seen_at is not None else None, rows=rows,
        breakdown=breakdown(renamed, seen, events[0] if events else None, run, ti),
        run_id=run["dag_run_id"] if run else None, error=error,
        landing_events=len(events), runs_after_rename=len([r for r in runs if _ts(r["queued_at"]) >= renamed]),
    )
    log.info("latency: %s %s s (%s)", name, result.latency_s, result.breakdown)
    return result


# -- child commands -----------------------------------------------------------------------------


def cmd_replay(_: argparse.Namespace) -> dict:
    from plantops.config import get_use_case
    from plantops.sources.replay import replay_history

    t0 = time.perf_counter()
    done = replay_history(get_use_case(USE_CASE))
    return {"days": len(done), "landed": sum(1 for d in done if d["landed"]), "seconds": time.perf_counter() - t0}


def cmd_land(args: argparse.Namespace) -> dict:
    """One analyzer file of normal operation (a TEP d00_te half-day pair), landed as NiFi does."""
    from plantops.config import get_use_case
    from plantops.sources.replay import Episode, episode_frame, land_file

    use_case = get_use_case(USE_CASE)
    name, day = file_name(args.index)
    frame = episode_frame(Episode(day, 0, True, offset=480 * (args.index % 2)))
    analyzers = [t.name for t in use_case.tags_from("landing")]
    path = land_file(use_case, frame[["ts", *analyzers]], name)
    renamed_at = time.time()  # land_file returns right after its os.replace
    return {"name": name, "path": path, "renamed_at": renamed_at, "rows": len(frame)}


def cmd_imports(_: argparse.Namespace) -> dict:
    """What a fresh ingest task process pays before its first landed row: the imports, timed."""
    out = {}
    for module in ("airflow.sdk", "pandas", "pyarrow.parquet", "plantops.stages.pipeline", "great_expectations"):
        t0 = time.perf_counter()
        __import__(module)
        out[module] = round(time.perf_counter() - t0, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="bench.latency")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("replay")
    land = sub.add_parser("land")
    land.add_argument("--index", type=int, required=True)
    sub.add_parser("imports")
    args = parser.parse_args(argv)
    runners = {"replay": cmd_replay, "land": cmd_land, "imports": cmd_imports}
    print(json.dumps(runners[args.command](args)))  # the last stdout line is the result (bench.measure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
