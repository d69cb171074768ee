"""Task logs for the runs ``dag.test()`` makes (``make demo``), readable in the Airflow UI.

Under a scheduler each task runs in a supervised process that writes its log file, which the
api-server reads. ``dag.test()`` runs tasks inside its own process and writes no file, so after
``make demo`` every task's log page in ``make up`` said "Log file not found". :func:`install`
registers a task listener in that process: while a task runs, the process's log records go, as
JSON lines (the shape Airflow's log reader parses), to the file the UI looks for
(``[logging] base_log_folder`` / ``log_filename_template``).

Only the demo (and the tests that drive it) install it: under a scheduler the supervisor writes
the file itself, and a second writer would double every line.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_open: dict[tuple, logging.Handler] = {}


class _JsonLines(logging.Handler):
    """One JSON object per record: timestamp, level, event, logger (Airflow's task-log fields)."""

    def __init__(self, path: Path) -> None:
        super().__init__(level=logging.INFO)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = path.open("a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
            if record.exc_info:
                event += "\n" + logging.Formatter().formatException(record.exc_info)
            line = {"timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                    "level": record.levelname.lower(), "event": event, "logger": record.name}
            self._stream.write(json.dumps(line, default=str) + "\n")
            self._stream.flush()
        except Exception:  # noqa: BLE001 - a log line must never fail the task
            self.handleError(record)

    def close(self) -> None:
        self._stream.close()
        super().close()


def log_path(ti: Any) -> Path:
    """Where Airflow's file task handler reads this try's log."""
    from airflow.configuration import conf
    from jinja2 import Template

    template = conf.get("logging", "log_filename_template")
    return Path(conf.get("logging", "base_log_folder")) / Template(template).render(ti=ti, try_number=ti.try_number)


def _key(ti: Any) -> tuple:
    return ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number


def _start(ti: Any) -> None:
    try:
        handler = _JsonLines(log_path(ti))
    except Exception as exc:  # noqa: BLE001 - no log file is no reason to fail the task
        log.warning("no task log file for %s: %s", ti.task_id, exc)
        return
    _note(handler, logging.INFO,
          f"{ti.task_id} started in the dag.test() process (log by plantops.orchestration.tasklogs)")
    logging.getLogger().addHandler(handler)
    _open[_key(ti)] = handler


def _note(handler: logging.Handler, level: int, text: str) -> None:
    handler.emit(logging.LogRecord("airflow.task", level, "", 0, text, None, None))


def _end(ti: Any, outcome: str, error: Any = None) -> None:
    handler = _open.pop(_key(ti), None)
    if handler is None:
        return
    _note(handler, logging.INFO if error is None else logging.ERROR,
          f"{ti.task_id} {outcome}" + ("" if error is None else f": {error}"))
    logging.getLogger().removeHandler(handler)
    handler.close()


class _Listener:
    """Airflow task-instance listener hooks (the spec's names and arguments)."""

    from airflow.sdk._shared.listeners import hookimpl

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        _start(task_instance)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        _end(task_instance, "succeeded")

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        _end(task_instance, "failed", error or "no error given")

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        _end(task_instance, "skipped")


_LISTENER = _Listener()


def install() -> None:
    """Write task log files for the tasks this process runs with ``dag.test()`` (idempotent)."""
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    if not manager.pm.is_registered(_LISTENER):
        manager.add_listener(_LISTENER)
