"""The typed functions that the DAG tasks call, one per task, so every task body stays a few lines.

Each function takes plain values (ids, ISO dates, run ids) and returns a JSON-able dict for XCom.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from plantops.config import get_use_case, parse_duration
from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _day(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        stamp = value
    else:
        stamp = datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)


def days_between(start: datetime, end: datetime) -> list[str]:
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    out, day = [], first
    while day < end:
        out.append(day.strftime("%Y-%m-%d"))
        day += timedelta(days=1)
    return out


# -- ingest ---------------------------------------------------------------------------------------

def ingest(use_case_id: str, start: str, end: str, run_id: str) -> dict[str, Any]:
    """Historian window [start, end) plus every landed file; returns counts and the days written."""
    from plantops.ingest import ingest_historian, ingest_landed

    use_case = get_use_case(use_case_id)
    hist = ingest_historian(use_case, _day(start), _day(end), run_id)
    landed = ingest_landed(use_case, run_id)
    days = set(hist.get("days", {}))
    for item in landed["files"]:
        days.update(item.get("days", {}))
    quarantined = [f for f in landed["files"] if f["status"] == "quarantined"]
    return {
        "use_case": use_case_id,
        "days": sorted(days),
        "historian": {k: v for k, v in hist.items() if k != "days"},
        "files": landed["files"],
        "quarantined_files": len(quarantined),
    }


# -- features -------------------------------------------------------------------------------------

def feature_window(days: list[str]) -> dict[str, str]:
    """The smallest [start, end) date range covering the given days."""
    if not days:
        raise ValueError("no days to build features for: the triggering ingest wrote nothing")
    ordered = sorted(days)
    end = (datetime.fromisoformat(ordered[-1]) + timedelta(days=1)).strftime("%Y-%m-%d")
    return {"start": ordered[0], "end": end}


def load_features(use_case_id: str, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    import pandas as pd

    root = get_settings().features_root / use_case_id
    if not root.exists():
        raise FileNotFoundError(f"no features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    filters = []
    if start:
        filters.append(("date", ">=", start))
    if end:
        filters.append(("date", "<", end))
    frame = pd.read_parquet(root, filters=filters or None)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["date"] = frame["date"].astype(str)
    return frame.sort_values(["asset", "ts"]).reset_index(drop=True)


def latest_feature_day(use_case_id: str) -> str:
    days = sorted(p.name.removeprefix("date=") for p in (get_settings().features_root / use_case_id).glob("date=*"))
    if not days:
        raise FileNotFoundError(f"no feature partitions for {use_case_id}")
    return days[-1]


def check_features(use_case_id: str, start: str, end: str) -> dict[str, Any]:
    """The GX gate on the feature table: fails the task, naming what broke, when the gate fails."""
    from plantops.validation import validate_features

    use_case = get_use_case(use_case_id)
    frame = load_features(use_case_id, start, end)
    outcome = validate_features(use_case, frame)
    if not outcome.success:
        raise ValueError(f"feature gate failed for {use_case_id} [{start}, {end}): {outcome.reason()}")
    return {"rows": len(frame), "start": start, "end": end, "days": sorted(frame["date"].unique().tolist())}


# -- train ----------------------------------------------------------------------------------------

def train(use_case_id: str, run_id: str, reference_start: str | None = None, reason: str = "scheduled",
          git_commit: str = "unknown") -> dict[str, Any]:
    from plantops import decisions, historian
    from plantops.training import train_and_register

    use_case = get_use_case(use_case_id)
    features = load_features(use_case_id)
    labels = historian.read_labels(use_case.historian.asset)
    end = features["ts"].max() + timedelta(seconds=use_case.features.bucket_seconds)
    result = train_and_register(
        use_case, features, labels, end=end,
        reference_start=_day(reference_start) if reference_start else None,
        run_tags={"airflow_run_id": run_id, "git_commit": git_commit, "trigger_reason": reason},
    )
    decisions.record(use_case_id, run_id, "train", "promoted" if result["promoted"] else "kept_champion",
                     result["reason"], {"result": result, "reference_start": reference_start, "trigger": reason})
    return result


# -- score ----------------------------------------------------------------------------------------

def score(use_case_id: str, day: str | None = None) -> dict[str, Any]:
    """Score one day of features with the champion and write predictions to the historian side."""
    from plantops import historian, registry
    from plantops.scoring import score_frame

    use_case = get_use_case(use_case_id)
    day = day or latest_feature_day(use_case_id)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")
    features = load_features(use_case_id, day, end)
    champion = registry.champion(use_case_id)
    if champion is None:
        raise LookupError(f"{use_case_id} has no champion model yet: run {use_case_id}__train first")
    version = champion[0]
    model = registry.load_version(use_case_id, version)  # by number: the alias may move meanwhile
    predictions = score_frame(model, features, version)
    written = historian.write_predictions(predictions)
    alarms = int(predictions["alarm"].sum())
    log.info("scored %s rows of %s with champion v%s: %s alarms", written, day, version, alarms)
    return {"day": day, "rows": written, "alarms": alarms, "model_version": version}


# -- monitor --------------------------------------------------------------------------------------

def assess(use_case_id: str, run_id: str, day: str | None = None) -> dict[str, Any]:
    """Drift of the day against the champion's reference, plant events, the policy's decision."""
    from plantops import decisions, historian, registry
    from plantops.features import base_columns
    from plantops.monitoring import PlantEvent, compute_drift, decide

    use_case = get_use_case(use_case_id)
    day = day or latest_feature_day(use_case_id)
    start = _day(day)
    end = start + parse_duration(use_case.monitoring.window)
    current = load_features(use_case_id, day, end.strftime("%Y-%m-%d"))
    reference = registry.load_reference(use_case_id)
    run_folder = run_id.replace(":", "_").replace("+", "_")
    report = get_settings().reports_root / use_case_id / run_folder / "drift.html"
    drift = compute_drift(reference, current, base_columns(use_case.tag_names), use_case.monitoring.drift, report)
    lookback = parse_duration(use_case.monitoring.plant_event_lookback)
    asset = use_case.historian.asset
    events = [
        PlantEvent(kind=e["kind"], ts=e["ts"], asset=e["asset"], description=e["description"], author=e["author"])
        for e in historian.read_plant_events(asset, start - lookback, end)
    ]
    decision = decide(drift, events, window_start=start, window_end=end, asset=asset, lookback=lookback)
    champion = registry.champion(use_case_id)
    predictions = historian.read_predictions(asset, start, end)
    record = {
        "day": day,
        "branch": decision.branch,
        "reason": decision.reason,
        "drift_share": drift.drift_share,
        "drifted_columns": list(drift.drifted_columns)[:10],
        "report_path": drift.report_path,
        # Served by the plantops plugin of the Airflow api-server (login required).
        "report_url": f"{os.environ.get('AIRFLOW__API__BASE_URL', 'http://localhost:8080')}"
                      f"/plantops/reports/{use_case_id}/{run_folder}/drift.html",
        "plant_events": [e.to_record() for e in decision.events],
        "champion_version": champion[0] if champion else None,
        "alarm_rate": float(predictions["alarm"].mean()) if len(predictions) else None,
        "thresholds": use_case.monitoring.drift.model_dump(),
        "drift": drift.to_record(),
    }
    decisions.record(use_case_id, run_id, "monitor", decision.branch, decision.reason, record)
    record["approval_body"] = approval_body(use_case_id, record, drift)
    return record


def approval_body(use_case_id: str, record: dict[str, Any], drift: Any) -> str:
    """The markdown a process engineer reads in the approval task."""
    lines = [
        f"**{use_case_id}**: data drift on {record['day']} while the plant was changed.",
        "",
        f"Drifted share of tags: **{record['drift_share']:.0%}** "
        f"(threshold {record['thresholds']['share_threshold']:.0%}, method {record['thresholds']['method']}).",
        "",
        "| tag | drift score | shift (sd) |",
        "|---|---|---|",
    ]
    for col, score, shift in drift.top(8):
        lines.append(f"| {col} | {score:.3f} | {shift:+.1f} |")
    lines += ["", "Plant events in the window:"]
    lines += [f"- {e['ts']} {e['kind']} by {e['author']}: {e['description']}" for e in record["plant_events"]]
    lines += ["", f"Champion: version {record['champion_version']}; alarm rate in the window: "
              f"{record['alarm_rate'] if record['alarm_rate'] is not None else 'n/a'}",
              "", f"Drift report: [{record['report_url']}]({record['report_url']})",
              "", "Retraining now learns the changed plant as normal. Choose a new reference window to train "
              "only on data after the change; refuse if the model is still valid (a reason is required)."]
    return "\n".join(lines)


def record_answer(use_case_id: str, run_id: str, answer: dict[str, Any], branch: str) -> dict[str, Any]:
    """Store who answered the approval, when and what, in the decision store."""
    from plantops import decisions

    params = answer.get("params_input") or {}
    payload = {
        "chosen_options": answer.get("chosen_options"),
        "responded_by": answer.get("responded_by_user"),
        "responded_at": str(answer.get("responded_at")),
        "params_input": params,
    }
    reason = params.get("reason") or f"{branch} chosen by {payload['responded_by']}"
    decisions.record(use_case_id, run_id, "approval", branch, reason, payload)
    return payload
