"""What the "Plant ML" view shows, as plain dicts: champions, the monitor's days, approvals,
quarantine, pipeline health and the latest scored day (of a visual inspection line: the latest
inspection day's verdicts, its rejected cells with their heat maps and the inspectors' late labels,
and what the champion confuses).

Read from the decision store (champion, decisions, approvals, feedback), the historian's
predictions table (an inspection line: its ``inspection_verdicts`` and ``inspection_labels``, and
the confusion record each version's training copied under ``reports/<uc>/confusion/``), the
landing ledger and quarantine folder, and Airflow's metadata DB (run states, paused DAGs).
MLflow is not called: the train decisions hold what the view needs (version, MLflow run id,
held-out metrics, why it was promoted), and importing and querying MLflow per page would cost
seconds where the page must answer within one. The champion is the
``champion_version`` of the newest train decision, i.e. what the last training left in place; an
alias moved by hand in MLflow shows after the next training.

Every function returns JSON-able dicts (the plugin renders them, ``/plantops/view/...json`` serves
them as they are). Links are paths on the Airflow api-server (same origin as the UI), so they work
whatever host name the browser used.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from plantops.config import ConfigError, discover, get_use_case
from plantops.modalities import modality_of
from plantops.modalities.images import Images
from plantops.modalities.tags import Tags
from plantops.settings import get_settings

if TYPE_CHECKING:
    from plantops.config import UseCase

log = logging.getLogger(__name__)

# How many monitored days the timeline shows, and how many decision rows are read for them.
DAYS = 14
_ROWS = 400
# Held-out metrics shown side by side (the rest, per fault, stay in MLflow).
HEADLINE = Tags.headline
# A classifier's (visual inspection): its detection_rate is its defect recall, shown under that name.
CLASSIFIER_HEADLINE = Images.headline
STAGES = ("ingest", "features", "train", "score", "monitor", "feedback")
TOP = 5


def _segment(value: object) -> str:
    # Run ids carry ':' and '+' (manual__2026-01-01T00:00:00+00:00).
    return quote(str(value), safe="")


def run_path(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (the React UI's route, as :func:`notify.ui_link` uses)."""
    return f"/dags/{_segment(dag_id)}/runs/{_segment(run_id)}"


def required_actions_path(dag_id: str | None = None, run_id: str | None = None) -> str:
    """The Required Actions page: of one run, or every one still awaiting an answer."""
    if dag_id and run_id:
        return run_path(dag_id, run_id) + "/required_actions"
    return "/required_actions?response_received=false"


def mlflow_run_link(run_id: str | None) -> str | None:
    """The MLflow UI page of a run when the tracking URI is an http(s) server, else None (a local
    SQLite store has no UI to link: the view shows the run id)."""
    uri = get_settings().mlflow_tracking_uri
    if not run_id or not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/runs/{_segment(run_id)}"


def report_path(use_case_id: str, payload: dict[str, Any]) -> str | None:
    """The drift report's path on the plugin (``/plantops/reports/...``), from where the monitor wrote it."""
    written = payload.get("report_path") or (payload.get("drift") or {}).get("report_path")
    if not written:
        return None
    from pathlib import Path

    root = (get_settings().reports_root / use_case_id).resolve()
    try:
        relative = Path(written).resolve().relative_to(root)
    except ValueError:
        return None
    return f"/plantops/reports/{_segment(use_case_id)}/" + "/".join(_segment(p) for p in relative.parts)


# -- champion ------------------------------------------------------------------------------------

def metrics_table(metrics: dict[str, float], headline: tuple[str, ...] = HEADLINE) -> dict[str, dict[str, float]]:
    """Split the train result's flat metrics into {evaluation: {metric: value}}: the model's plain
    keys under ``model``, each baseline's or compared kind's prefixed keys under its name."""
    table: dict[str, dict[str, float]] = {}
    # Longest name first: "cell_cnn_balanced_accuracy" is cell_cnn's balanced_accuracy, not the
    # accuracy of an evaluation called "cell_cnn_balanced".
    suffixes = sorted(headline, key=len, reverse=True)
    for key, value in metrics.items():
        if key in headline:
            table.setdefault("model", {})[key] = value
            continue
        for name in suffixes:
            prefix = key.removesuffix("_" + name)
            # detection_rate_<fault> is the model's own per-fault rate, not an evaluation called detection_rate.
            if prefix != key and not prefix.startswith(("detection_rate", "detection_delay")):
                table.setdefault(prefix, {})[name] = value
                break
    return dict(sorted(table.items(), key=lambda kv: (kv[0] != "model", kv[0])))


def champion(rows: list[dict[str, Any]], headline: tuple[str, ...] = HEADLINE) -> dict[str, Any] | None:
    """The champion as the newest train decision left it, with the decision that promoted it
    (``headline``: the held-out metrics shown, :data:`CLASSIFIER_HEADLINE` for an inspection line)."""
    trains = [r for r in rows if r["kind"] == "train"]
    if not trains:
        return None
    newest = trains[0]["payload"].get("result") or {}
    version = newest.get("champion_version")
    if version is None:
        return None
    promoting = next((r for r in trains if r["branch"] == "promoted"
                      and str((r["payload"].get("result") or {}).get("version")) == str(version)), None)
    out: dict[str, Any] = {"version": str(version), "registered_model": newest.get("registered_model"),
                           "model_kind": newest.get("model_kind"), "promoted_at": None, "reason": None,
                           "trigger": None, "approved_by": None, "reference_start": None, "train_run_id": None,
                           "train_run_path": None, "mlflow_run_id": None, "mlflow_link": None,
                           "metrics": metrics_table(newest.get("champion_metrics") or {}, headline),
                           "last_training": {"at": trains[0]["created_at"].isoformat(), "branch": trains[0]["branch"],
                                             "version": newest.get("version"), "reason": trains[0]["reason"]}}
    if promoting is not None:
        result, payload = promoting["payload"]["result"], promoting["payload"]
        dag_id = f"{promoting['use_case']}__train"
        out.update(promoted_at=promoting["created_at"].isoformat(), reason=result.get("reason"),
                   trigger=payload.get("trigger"), approved_by=payload.get("approved_by"),
                   reference_start=payload.get("reference_start"), train_run_id=promoting["dag_run_id"],
                   train_run_path=run_path(dag_id, promoting["dag_run_id"]), mlflow_run_id=result.get("run_id"),
                   mlflow_link=mlflow_run_link(result.get("run_id")),
                   # Held-out metrics of the champion beside its baselines, as measured when it won.
                   metrics=metrics_table(result.get("metrics") or {}, headline))
    return out


# -- the monitor's days --------------------------------------------------------------------------

def _day_of(value: str | None) -> str:
    return (value or "")[:10]


def _feedback_of_day(rows: list[dict[str, Any]], day: str) -> list[dict[str, Any]]:
    """Feedback decisions whose window overlaps the day (ISO strings compare as times)."""
    end = (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")
    out = []
    for r in rows:
        p = r["payload"]
        if r["kind"] == "feedback" and str(p.get("ts_start", "")) < end and str(p.get("ts_end", "")) > day:
            out.append({"kind": r["branch"], "author": p.get("author"), "comment": p.get("comment"),
                        "tag": p.get("tag"), "ts_start": p.get("ts_start"), "ts_end": p.get("ts_end")})
    return out


def heatmap_path(use_case_id: str, cell: dict[str, Any]) -> str | None:
    """A rejected cell's heat map as a path on the plugin, whichever way the record names it: a
    ``heatmap_path``, a ``heatmap_url`` (the api-server's base URL is dropped: the page links on its
    own origin, whatever host the browser used) or the verdict's ``heatmap`` (relative to PLANTOPS_HOME)."""
    from urllib.parse import urlsplit

    from plantops.modalities.images.scoring import served_path

    for key in ("heatmap_path", "heatmap_url"):
        value = cell.get(key)
        if value:
            path = urlsplit(str(value)).path
            return path if path.startswith(f"/plantops/reports/{_segment(use_case_id)}/") else None
    return served_path(use_case_id, cell.get("heatmap"))


def _class_name(value: Any) -> Any:
    """A predicted class as the inspectors name it ("0", "1/3", "2/3", "1"); an index is translated."""
    from plantops.modalities.images.scoring import CLASS_NAMES

    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(CLASS_NAMES):
        return CLASS_NAMES[value]
    return value


def _rejected_cell(use_case_id: str, cell: dict[str, Any]) -> dict[str, Any]:
    return {"cell_id": cell.get("cell_id"), "run_id": cell.get("run_id"),
            "predicted_class": _class_name(cell.get("predicted_class")),
            "defect_probability": cell.get("defect_probability"), "heatmap_path": heatmap_path(use_case_id, cell)}


def timeline(use_case_id: str, rows: list[dict[str, Any]], days: int = DAYS) -> list[dict[str, Any]]:
    """One entry per judged day, newest day first: the newest monitor decision of that day with its
    evidence, the approval that answered it and the trainings it led to."""
    monitor_dag = f"{use_case_id}__monitor"
    by_day: dict[str, list[dict[str, Any]]] = {}
    for r in rows:  # newest first
        if r["kind"] == "monitor" and r["payload"].get("day"):
            by_day.setdefault(_day_of(r["payload"]["day"]), []).append(r)
    answers = {(r["dag_run_id"], r["asset"]): r for r in rows if r["kind"] == "approval"}
    trainings: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "train" and r["payload"].get("monitor_run_id"):
            result = r["payload"].get("result") or {}
            trainings.setdefault(r["payload"]["monitor_run_id"], []).append({
                "run_id": r["dag_run_id"], "run_path": run_path(f"{use_case_id}__train", r["dag_run_id"]),
                "branch": r["branch"], "version": result.get("version"), "reason": r["reason"]})
    out = []
    for day in sorted(by_day, reverse=True)[:days]:
        r = by_day[day][0]
        p = r["payload"]
        rate, n = p.get("alarm_rate"), p.get("n_predictions") or 0
        drift = p.get("drift") or {}
        scores, shifts = drift.get("column_scores") or {}, drift.get("shift_sd") or {}
        answer = answers.get((r["dag_run_id"], r["asset"]))
        approval = None
        if r["branch"] == "approval" or answer is not None:
            approval = {"pending": answer is None,
                        "required_actions_path": required_actions_path(monitor_dag, r["dag_run_id"])}
            if answer is not None:
                ap = answer["payload"]
                approval.update(branch=answer["branch"], reason=answer["reason"],
                                chosen=(ap.get("chosen_options") or [None])[0],
                                by=(ap.get("responded_by") or {}).get("name") or (ap.get("responded_by") or {}).get("id"),
                                at=ap.get("responded_at"))
        out.append({
            "day": day,
            "asset": p.get("asset"),
            "run_id": r["dag_run_id"],
            "run_path": run_path(monitor_dag, r["dag_run_id"]),
            "decided_at": r["created_at"].isoformat(),
            "runs_that_day": len(by_day[day]),
            "branch": r["branch"],
            "rule": p.get("rule"),
            "guardrail": p.get("guardrail"),
            "reason": r["reason"],
            "drift_share": p.get("drift_share"),
            "n_drifted": drift.get("n_drifted"),
            "n_columns": drift.get("n_columns"),
            "drifted_tags": [{"tag": t, "score": scores.get(t), "shift_sd": shifts.get(t)}
                             for t in (drift.get("drifted_columns") or p.get("drifted_columns") or [])[:TOP]],
            "alarm_rate": rate,
            "n_predictions": n,
            "alarms": None if rate is None else int(round(rate * n)),
            # An inspection line's monitor records no alarm tags; it names its rejected cells instead.
            "alarm_tags": [{"tag": t.get("tag"), "alarms": t.get("alarms")} for t in (p.get("alarm_tags") or [])[:TOP]],
            "n_rejected_cells": len(p.get("rejected_cells") or []),
            "rejected_cells": [_rejected_cell(use_case_id, c) for c in (p.get("rejected_cells") or [])[:TOP]],
            "plant_events": [{"ts": e.get("ts"), "kind": e.get("kind"), "author": e.get("author"),
                              "description": e.get("description")} for e in p.get("plant_events") or []],
            "feedback": _feedback_of_day(rows, day),
            "champion_version": p.get("champion_version"),
            "report_path": report_path(use_case_id, p),
            "approval": approval,
            "trainings": trainings.get(r["dag_run_id"], []),
        })
    return out


def pending_approvals(use_case_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Monitor decisions that asked an engineer and have no recorded answer yet, oldest first."""
    answered = {(r["dag_run_id"], r["asset"]) for r in rows if r["kind"] == "approval"}
    dag_id = f"{use_case_id}__monitor"
    return [{"day": _day_of(r["payload"].get("day")), "asset": r["payload"].get("asset"), "run_id": r["dag_run_id"],
             "asked_at": r["created_at"].isoformat(), "rule": r["payload"].get("rule"), "reason": r["reason"],
             "required_actions_path": required_actions_path(dag_id, r["dag_run_id"])}
            for r in reversed(rows)
            if r["kind"] == "monitor" and r["branch"] == "approval" and (r["dag_run_id"], r["asset"]) not in answered]


# -- predictions ---------------------------------------------------------------------------------

# -- landing -------------------------------------------------------------------------------------

def rejected(use_case_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ledger rows of files that lost rows or values to the quality gates, or were quarantined."""
    from plantops.sources.landing import rows_of

    rows = [r for r in rows_of(use_case_id)
            if r["status"] == "quarantined" or (r.get("rows_rejected") or 0) > 0 or (r.get("values_rejected") or 0) > 0]
    out = []
    for r in reversed(rows[-limit:]):
        processed = r.get("processed_at")
        out.append({"file": r["name"], "status": r["status"], "reason": r.get("reason"),
                    "processed_at": processed.isoformat() if hasattr(processed, "isoformat") else processed,
                    "rows_in": r.get("rows_in"), "rows_rejected": r.get("rows_rejected"),
                    "values_rejected": r.get("values_rejected"), "rejected_values": r.get("rejected_values") or {},
                    "run_id": r.get("dag_run_id")})
    return out


# -- pipeline health -----------------------------------------------------------------------------

def health(use_case: UseCase) -> dict[str, Any]:
    """Per stage DAG: paused or not, last successful run, last run's state, queued and running
    runs, and why a queued run cannot start (a paused DAG, or its max_active_runs taken). Read from
    Airflow's metadata DB through its ORM (the api-server's own session); if it cannot be read
    (no Airflow DB in this process), says so instead of failing the page."""
    try:
        import sqlalchemy as sa
        from airflow.models.dag import DagModel
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
    except Exception as exc:  # noqa: BLE001 - the view works without Airflow, health then says why
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "dags": []}
    ids = [use_case.dag_id(s) for s in STAGES]
    dags = []
    try:
        with create_session() as session:
            models = {m.dag_id: m for m in session.scalars(sa.select(DagModel).where(DagModel.dag_id.in_(ids)))}
            counts = {(d, str(s)): n for d, s, n in session.execute(
                sa.select(DagRun.dag_id, DagRun.state, sa.func.count()).where(DagRun.dag_id.in_(ids))
                .group_by(DagRun.dag_id, DagRun.state))}
            for dag_id in ids:
                model = models.get(dag_id)
                ok = session.execute(
                    sa.select(DagRun.run_id, DagRun.end_date).where(DagRun.dag_id == dag_id, DagRun.state == "success")
                    .order_by(DagRun.end_date.desc()).limit(1)).first()
                last = session.execute(
                    sa.select(DagRun.run_id, DagRun.state, DagRun.run_after).where(DagRun.dag_id == dag_id)
                    .order_by(DagRun.run_after.desc()).limit(1)).first()
                oldest_queued = session.execute(
                    sa.select(DagRun.run_id, DagRun.queued_at).where(DagRun.dag_id == dag_id, DagRun.state == "queued")
                    .order_by(DagRun.queued_at).limit(1)).first()
                queued, running = counts.get((dag_id, "queued"), 0), counts.get((dag_id, "running"), 0)
                stuck = None
                if queued and model is not None and model.is_paused:
                    stuck = "the DAG is paused: its queued runs cannot start until it is unpaused"
                elif queued and model is not None and running >= (model.max_active_runs or 0) > 0:
                    stuck = f"max_active_runs ({model.max_active_runs}) taken by running runs"
                dags.append({
                    "dag_id": dag_id, "path": f"/dags/{_segment(dag_id)}", "known": model is not None,
                    "paused": None if model is None else bool(model.is_paused),
                    "last_success": None if ok is None else {
                        "run_id": ok.run_id, "end": ok.end_date.isoformat() if ok.end_date else None,
                        "path": run_path(dag_id, ok.run_id)},
                    "last_run": None if last is None else {"run_id": last.run_id, "state": str(last.state),
                                                          "path": run_path(dag_id, last.run_id)},
                    "queued": queued, "running": running, "failed": counts.get((dag_id, "failed"), 0),
                    "oldest_queued": None if oldest_queued is None else {
                        "run_id": oldest_queued.run_id,
                        "since": oldest_queued.queued_at.isoformat() if oldest_queued.queued_at else None},
                    "stuck": stuck,
                })
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("pipeline health of %s: the Airflow metadata DB could not be read: %s", use_case.id, exc)
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "dags": []}
    return {"available": True, "error": None, "dags": dags,
            "paused": [d["dag_id"] for d in dags if d["paused"]],
            "queued": sum(d["queued"] for d in dags), "stuck": [d["dag_id"] for d in dags if d["stuck"]]}


# -- pages ---------------------------------------------------------------------------------------

def _decision_asset(use_case: UseCase, asset: str) -> str | None:
    return asset if use_case.is_fleet else None


def _rows(use_case: UseCase, asset: str) -> list[dict[str, Any]]:
    from plantops.stages import decisions

    return decisions.latest(use_case.id, limit=_ROWS, asset=_decision_asset(use_case, asset))


def use_cases() -> dict[str, Any]:
    """Every use case that loads, and the broken ones with their error."""
    good, bad = discover(get_settings().use_cases_dir)
    return {"good": good, "broken": {stem: str(err) for stem, err in bad.items()}}


def index(readable: Callable[[str], bool] | None = None, broken: bool = True) -> dict[str, Any]:
    """Per use case and asset: champion version, the last monitor decision, and pipeline health;
    only the use cases ``readable`` admits (default: all), and the broken files only with ``broken``."""
    found = use_cases()
    entries = []
    for use_case in found["good"].values():
        if readable is not None and not readable(use_case.id):
            continue
        h = health(use_case)
        for asset in use_case.assets:
            rows = _rows(use_case, asset)
            champ = champion(rows)
            last = next((r for r in rows if r["kind"] == "monitor"), None)
            entries.append({
                "use_case": use_case.id, "plant": use_case.plant, "asset": asset, "is_fleet": use_case.is_fleet,
                "path": f"/plantops/view/{_segment(use_case.id)}" + (f"?asset={_segment(asset)}" if use_case.is_fleet else ""),
                "champion_version": None if champ is None else champ["version"],
                "last_decision": None if last is None else {
                    "day": _day_of(last["payload"].get("day")), "branch": last["branch"], "reason": last["reason"],
                    "at": last["created_at"].isoformat(), "report_path": report_path(use_case.id, last["payload"])},
                "pending_approvals": len(pending_approvals(use_case.id, rows)),
                "health": {"available": h["available"], "paused": h.get("paused", []), "queued": h.get("queued", 0),
                           "stuck": h.get("stuck", []), "error": h["error"]},
            })
    return {"use_cases": entries, "broken": found["broken"] if broken else {}}


def use_case_view(use_case_id: str, asset: str | None = None, days: int = DAYS) -> dict[str, Any]:
    """Everything the page of one use case (and one asset of a fleet) shows."""
    from plantops.sources import landing

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    if asset not in use_case.assets:
        raise ConfigError(f"use case {use_case_id}: {asset!r} is not one of its assets {list(use_case.assets)}")
    rows = _rows(use_case, asset)
    days_ = timeline(use_case.id, rows, days)
    modality = modality_of(use_case)
    champ = champion(rows, modality.headline)
    return {
        "use_case": use_case.id, "plant": use_case.plant, "description": use_case.description,
        "asset": asset, "assets": list(use_case.assets), "is_fleet": use_case.is_fleet,
        "modality": modality.name,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "champion": champ,
        "timeline": days_,
        "pending_approvals": pending_approvals(use_case.id, rows),
        "required_actions_path": required_actions_path(),
        "quarantined": landing.quarantined(use_case.id),
        "rejected": rejected(use_case.id) if use_case.landing else [],
        "health": health(use_case),
        # The modality's pieces: a scored day of tags under "scores", an inspection line's under "inspection".
        **modality.view(asset, champ and champ["version"]),
    }
