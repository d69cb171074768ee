"""Monitor runs name the day they judge: a DagRun note, set by an Airflow listener in the scheduler.

Airflow names a monitor run itself (``asset_triggered__<ts>`` when the score DAG's predictions
trigger it, ``manual__<ts>`` or ``scheduled__<ts>`` otherwise); the day it judges is only in the
triggering asset events or the run's conf. The run list shows a run's note, so the note carries it:

- when the run starts (``on_dag_run_running``): ``tep_reactor, 2026-03-28: judging`` from the
  run's ``day`` param, else the newest day in the asset events that triggered it;
- when it ends (``on_dag_run_success`` / ``on_dag_run_failed``): the day and branch each asset's
  assessment returned, e.g. ``tep_reactor, 2026-03-28: approval (plant_change)``.

Why a listener and not the monitor's own tasks: tasks run on the Task SDK, which has no call to
write their run's note (only the public REST API does, which would give every task a user's
credentials), while a listener registered by the plugin runs inside the scheduler, where the
run is a row in the scheduler's own session: the note is written in the same transaction as the
state change, for runs triggered by assets, by people in the UI, over REST or by the schedule.
``dag.test()`` (the embedded demo) creates its runs already running, so only the end note applies
there. A user's own note (one with an author) is never overwritten.

Listeners must not break the scheduler: every hook catches and logs its errors.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)

MONITOR_SUFFIX = "__monitor"


def use_case_of(dag_id: str) -> str | None:
    """The use case of a monitor DAG id (``<use_case>__monitor``), else None."""
    return dag_id[: -len(MONITOR_SUFFIX)] if dag_id.endswith(MONITOR_SUFFIX) else None


def start_note(use_case: str, conf: dict | None, event_days: Iterable[str]) -> str:
    """The note of a monitor run that has just started: the day it will judge."""
    day = (conf or {}).get("day") or max(event_days, default=None)
    return f"{use_case}, {day}: judging" if day else f"{use_case}: judging the newest feature day"


def end_note(use_case: str, assessments: list[dict]) -> str | None:
    """The note of a finished monitor run: the day judged and each asset's branch (None: no assessment)."""
    done = [a for a in assessments if isinstance(a, dict) and a.get("day")]
    if not done:
        return None
    fleet = len({a.get("asset") for a in done}) > 1
    by_day: dict[str, list[str]] = {}
    for a in sorted(done, key=lambda a: (a["day"], str(a.get("asset")))):
        why = a.get("guardrail") or a.get("rule")
        branch = f"{a.get('branch')}{f' ({why})' if why and why != a.get('branch') else ''}"
        by_day.setdefault(a["day"], []).append(f"{a['asset']} {branch}" if fleet else branch)
    return "; ".join(f"{use_case}, {day}: {', '.join(parts)}" for day, parts in by_day.items())


def _ours(dag_run: Any, use_case: str) -> bool:
    """Whether the run's note may be (re)written: none yet, or one this listener wrote (no author)."""
    note = dag_run.dag_run_note
    return note is None or (note.user_id is None and str(note.content or "").startswith(use_case))


def _event_days(dag_run: Any) -> list[str]:
    days: set[str] = set()
    for event in getattr(dag_run, "consumed_asset_events", None) or []:
        days.update((event.extra or {}).get("days", []))
    return sorted(days)


def _assessments(dag_run: Any) -> list[dict]:
    from sqlalchemy.orm import object_session

    from airflow.models.xcom import XComModel

    session = object_session(dag_run)
    if session is None:
        return []
    query = XComModel.get_many(run_id=dag_run.run_id, key="return_value", task_ids="assess_drift",
                               dag_ids=dag_run.dag_id)
    values = [XComModel.deserialize_value(row) for row in session.scalars(query)]
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


def note_started(dag_run: Any) -> None:
    use_case = use_case_of(dag_run.dag_id)
    if use_case is None or not _ours(dag_run, use_case):
        return
    dag_run.note = start_note(use_case, dag_run.conf, _event_days(dag_run))


def note_finished(dag_run: Any) -> None:
    use_case = use_case_of(dag_run.dag_id)
    if use_case is None or not _ours(dag_run, use_case):
        return
    note = end_note(use_case, _assessments(dag_run))
    if note:
        dag_run.note = note[:1000]


class MonitorRunNotes:
    """The listener object the plugin registers (Airflow calls the hook methods by name)."""

    def _safely(self, what: Any, dag_run: Any) -> None:
        try:
            what(dag_run)
        except Exception:  # a listener error must never stop the scheduler
            log.exception("could not write the note of %s %s", getattr(dag_run, "dag_id", "?"),
                          getattr(dag_run, "run_id", "?"))


def _hooks() -> MonitorRunNotes:
    from airflow.listeners import hookimpl

    class Hooks(MonitorRunNotes):
        @hookimpl
        def on_dag_run_running(self, dag_run: Any, msg: str) -> None:
            self._safely(note_started, dag_run)

        @hookimpl
        def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
            self._safely(note_finished, dag_run)

        @hookimpl
        def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
            self._safely(note_finished, dag_run)

    return Hooks()


def listener() -> MonitorRunNotes:
    """The listener instance for ``AirflowPlugin.listeners``."""
    return _hooks()
