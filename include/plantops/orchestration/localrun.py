"""`python -m plantops.cli run <uc> <stage>`: the use case's real DAGs, run now on the embedded tier.

Each stage is one run of the DAG the scheduler runs (``<uc>__features``, ``__train``, ``__score``,
``__monitor``), executed in this process with ``dag.test()`` against the home's metadata DB (the
localenv settings; migrated once, when it is not), as `make demo` and the e2e tests do. So the
tasks, their params, XComs, asset events and the decision store are the scheduler's, and every run
shows in the UI of `make up` afterwards. What Airflow and Spark print goes to a log file under the
home; what each stage did comes back as rows (JSON lines on the command line).

A monitor run that asks an engineer parks at ``request_approval`` (awaiting input): ``dag.test()``
would wait for the answer forever, so the run is left waiting in the metadata DB and the row says
who may answer it and where.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from plantops.config import UseCase

log = logging.getLogger(__name__)

STAGES = ("features", "train", "score", "monitor")
# `run ... monitor` exits with this when the decision waits for an engineer's answer.
APPROVAL_PENDING_EXIT_CODE = 3


class RunError(RuntimeError):
    """A stage cannot run, or its DAG run failed: the message says why and what to do."""


def stage_days(stage: str, start: date | None, end: date | None, built: list[str]) -> list[str | None]:
    """The days one stage runs for: features take the range as one run (None: the DAG's own
    choice); score and monitor one run per built feature day in [start, end), else the newest."""
    if stage in ("features", "train"):
        return [None]
    if start is None:
        return [built[-1]] if built else [None]
    days = [d for d in built if start.isoformat() <= d < end.isoformat()]
    if not days:
        raise RunError(f"{stage}: no feature day in [{start}, {end}) (built: "
                       f"{', '.join(built[-3:]) or 'none'}{', ...' if len(built) > 3 else ''})")
    return days


class LocalRunner:
    """Runs a use case's stages through its DAGs in this process; one instance per command."""

    def __init__(self, use_case: UseCase, log_file: Path, out: TextIO) -> None:
        self.use_case = use_case
        self.log_file = log_file
        self.out = out  # the terminal: rows are printed as each stage ends
        self.dags: dict[str, Any] = {}

    def prepare(self) -> None:
        """A migrated metadata DB (the localenv settings are applied already) and the use case's DAGs."""
        with _output_to(self.log_file):  # Airflow logs at import and while migrating
            self._prepare()

    def _prepare(self) -> None:
        import subprocess
        import sys

        from plantops.orchestration.dagfactory import build_all

        if not _migrated():
            log.info("migrating the Airflow metadata DB at %s", os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
            with self.log_file.open("a") as sink:
                subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=sink,
                               stderr=sink)
        from plantops.orchestration import tasklogs

        tasklogs.install()  # dag.test() writes no task log files: the UI of `make up` would have none
        self.dags = build_all(dag_id=self.use_case.dag_id("features"))

    def run(self, stage: str, start: date | None = None, end: date | None = None) -> tuple[list[dict], int]:
        """Run one stage (or ``all``: features, train, score, monitor in order); rows and exit code."""
        from plantops.stages.pipeline import built_feature_days

        rows: list[dict] = []
        for name in STAGES if stage == "all" else (stage,):
            days = stage_days(name, start, end, built_feature_days(self.use_case.id))
            for day in days:
                row = self.run_stage(name, day, start, end)
                rows.append(row)
                print(_json(row), file=self.out, flush=True)
                if row.get("pending_approval"):
                    return rows, APPROVAL_PENDING_EXIT_CODE
        return rows, 0

    def run_stage(self, stage: str, day: str | None, start: date | None, end: date | None) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if stage == "features" and start is not None:
            conf = {"start": start.isoformat(), "end": end.isoformat()}
        elif stage == "train":
            conf = {"reason": "cli run"}
        elif day is not None:
            conf = {"day": day}
        dag = self.dags[self.use_case.dag_id(stage)]
        began = datetime.now(timezone.utc)
        watcher = _ApprovalWatcher(dag.dag_id, began) if stage == "monitor" else None
        pending = False
        try:
            with _output_to(self.log_file):
                dr = dag.test(run_conf={**_defaults(dag), **conf}, logical_date=began)
        except KeyboardInterrupt:
            if watcher is None or not watcher.fired:
                raise
            pending = True
        finally:
            if watcher is not None:
                watcher.stop()
        run_id = watcher.run_id if pending else dr.run_id
        if pending:
            return self.monitor_row(run_id, pending=True)
        if str(dr.state) != "success":
            failed = sorted({ti.task_id for ti in dr.get_task_instances() if str(ti.state) == "failed"})
            raise RunError(f"{dag.dag_id} run {dr.run_id} ended {dr.state} (failed: {', '.join(failed) or 'none'}): "
                           f"{_last_error(self.log_file) or 'see the log'}; log {self.log_file}")
        return getattr(self, f"{stage}_row")(run_id)

    # -- what each stage did -----------------------------------------------------------------
    def features_row(self, run_id: str) -> dict[str, Any]:
        published = _xcom(self.use_case.dag_id("features"), run_id, "publish_features") or {}
        window = _xcom(self.use_case.dag_id("features"), run_id, "plan_window") or {}
        return {"stage": "features", "run_id": run_id, "days_built": published.get("days", []),
                "lookahead": window.get("lookahead", []), "rows": published.get("rows", 0)}

    def train_row(self, run_id: str) -> dict[str, Any]:
        from plantops.stages import decisions

        trained = [r for r in decisions.for_run(self.use_case.id, run_id) if r["kind"] == "train"]
        if not trained:  # train_model skipped: no features yet
            return {"stage": "train", "run_id": run_id, "trained": [],
                    "reason": f"nothing to train on: run {self.use_case.id} features first"}
        return {"stage": "train", "run_id": run_id, "trained": [{
            "asset": r["payload"].get("asset"),
            "registered_model": r["payload"]["result"].get("registered_model"),
            "version": r["payload"]["result"].get("version"),
            "decision": r["branch"], "reason": r["reason"]} for r in trained]}

    def score_row(self, run_id: str) -> dict[str, Any]:
        published = _xcom(self.use_case.dag_id("score"), run_id, "publish_predictions")
        if published is None:  # every score_window skipped: no champion yet
            return {"stage": "score", "run_id": run_id, "rows_scored": 0,
                    "reason": f"no champion yet: run {self.use_case.id} train first"}
        return {"stage": "score", "run_id": run_id, "days": published["days"], "rows_scored": published["rows"],
                "alarms": published["alarms"]}

    def monitor_row(self, run_id: str, pending: bool = False) -> dict[str, Any]:
        from plantops.stages import decisions

        judged = [r for r in decisions.for_run(self.use_case.id, run_id) if r["kind"] == "monitor"]
        row: dict[str, Any] = {"stage": "monitor", "run_id": run_id, "decisions": [{
            "asset": r["payload"].get("asset"), "day": r["payload"].get("day"), "decision": r["branch"],
            "rule": r["payload"].get("rule"), "reason": r["reason"]} for r in judged]}
        if pending:
            row["pending_approval"] = {
                "dag_id": self.use_case.dag_id("monitor"), "task_id": "request_approval",
                "assigned": [a.id for a in self.use_case.approvers],
                "answer": "as an assigned engineer in the Airflow UI of this home (make up, "
                          f"{os.environ.get('AIRFLOW__API__BASE_URL', '')}): Browse -> Required Actions; the run "
                          "waits at request_approval in the metadata DB",
            }
        return row


class _ApprovalWatcher:
    """Interrupts the main thread once the DAG's run started at or after ``since`` waits for a
    human answer: ``dag.test()`` polls for it forever, the CLI reports it instead."""

    def __init__(self, dag_id: str, since: datetime) -> None:
        self.dag_id, self.since = dag_id, since
        self.fired = False
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select

        query = (select(TaskInstance.run_id).join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                                                  & (DagRun.run_id == TaskInstance.run_id))
                 .where(TaskInstance.dag_id == self.dag_id, TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                        DagRun.logical_date >= self.since))
        while not self._stop.wait(2):
            with create_session() as session:
                run_id = session.scalars(query).first()
            if run_id is not None:
                self.run_id, self.fired = run_id, True
                _thread.interrupt_main()
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _migrated() -> bool:
    from airflow.utils.db import check_migrations

    try:
        check_migrations(timeout=1)
    except Exception:  # noqa: BLE001 - an empty file, no tables, an old revision: migrate
        return False
    return True


def _defaults(dag: Any) -> dict[str, Any]:
    """Every param's default, given explicitly: dag.test() keeps a run's conf in its tasks' params."""
    import copy

    from airflow.sdk.definitions._internal.types import NOTSET

    return {k: copy.deepcopy(dag.params.get_param(k).value) for k in dag.params.keys()
            if dag.params.get_param(k).value is not NOTSET}


def _xcom(dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=run_id, key="return_value", dag_ids=dag_id,
                                                 task_ids=task_id)).first()
        return None if row is None else XComModel.deserialize_value(row)


def _last_error(log_file: Path) -> str | None:
    """The last task exception in the log, for the error message (the log has the traceback). A
    failed spark-submit only says "Cannot execute: spark-submit ...": the job's own last ERROR
    line says why, so it comes first."""
    lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines()[-2000:]]
    exception = next((line for line in reversed(lines) if ("Exception:" in line or "Error:" in line)
                      and not line.startswith("File ")), None)
    job = next((line for line in reversed(lines) if " ERROR spark_jobs." in line), None)
    if job is not None and exception is not None and "Cannot execute: spark-submit" in exception:
        return job[job.index(" ERROR spark_jobs.") + 7:].split(" [airflow.task")[0][:500]
    return None if exception is None else exception[:500]


@contextlib.contextmanager
def _output_to(log_file: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at the log (Airflow's structlog, Spark's JVM and subprocesses
    write there); the rows go to the terminal through the stream saved before."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)


def _json(row: dict) -> str:
    import json

    return json.dumps(row, default=str)


def parse_range(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    """``--start``/``--end`` as days; both or neither, end after start."""
    if (start is None) != (end is None):
        raise ValueError("give --start and --end together (YYYY-MM-DD, end exclusive)")
    if start is None:
        return None, None
    try:
        first, after = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise ValueError(f"expected --start/--end as YYYY-MM-DD, got {start!r} and {end!r}") from None
    if after <= first:
        raise ValueError(f"--end ({end}) must be after --start ({start}): the range is [start, end)")
    return first, after


def log_path(home: Path) -> Path:
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"cli-run-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.log"

