"""The typed functions that the DAG tasks call, one per task, so every task body stays a few lines.

Each function takes plain values (ids, ISO dates, run ids) and returns a JSON-able dict for XCom.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
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


# -- ingest ---------------------------------------------------------------------------------------

def ingest(use_case_id: str, start: str, end: str, run_id: str) -> dict[str, Any]:
    """Every landed file plus the historian window [start, end); returns counts and the days written.

    The historian window is widened to cover the days of the files this run ingested, so a day's
    bronze holds both sources whichever arrived last (a late analyzer file, a file that woke an
    event-driven run). Those days are read back from the ledger, so a retry of the run finds the
    same window although its files are archived by then.
    """
    from plantops.stages.ingest import ingest_historian, ingest_landed

    use_case = get_use_case(use_case_id)
    landed = ingest_landed(use_case, run_id)
    windows = historian_windows(_day(start), _day(end), landed_days(use_case_id, run_id))
    batches = [ingest_historian(use_case, lo, hi, run_id) for lo, hi in windows]
    days = {day for batch in batches for day in batch.get("days", {})}
    for item in landed["files"]:
        days.update(item.get("days", {}))
    quarantined = [f for f in landed["files"] if f["status"] == "quarantined"]
    return {
        "use_case": use_case_id,
        "days": sorted(days),
        "historian": {
            **{key: sum(b[key] for b in batches) for key in ("rows_in", "rows_written", "rows_rejected")},
            "windows": [f"{lo.isoformat()}/{hi.isoformat()}" for lo, hi in windows],
            "reason": "; ".join(str(b["reason"]) for b in batches),
        },
        "files": landed["files"],
        "quarantined_files": len(quarantined),
    }


def historian_windows(start: datetime, end: datetime, days: list[str]) -> list[tuple[datetime, datetime]]:
    """[start, end) plus whole days, merged into as few contiguous windows as possible."""
    spans = sorted([(start, end), *((_day(d), _day(d) + timedelta(days=1)) for d in days)])
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def landed_days(use_case_id: str, run_id: str) -> list[str]:
    """The bronze days of the files this run ingested (across its tries)."""
    from sqlalchemy import select

    from plantops.sources.landing import ledger, state_engine

    query = select(ledger.c.name).where(ledger.c.use_case == use_case_id, ledger.c.dag_run_id == run_id,
                                        ledger.c.status == "ingested")
    with state_engine().connect() as conn:
        stems = {Path(name).stem for (name,) in conn.execute(query)}
    root = get_settings().bronze_root / use_case_id
    return sorted({p.parent.name.removeprefix("date=") for stem in stems
                   for p in root.glob(f"date=*/landing-{stem}.parquet")})


# -- features -------------------------------------------------------------------------------------

def feature_window(days: list[str]) -> dict[str, str]:
    """The smallest [start, end) date range covering the given days."""
    if not days:
        raise ValueError("no days to build features for: the triggering ingest wrote nothing")
    ordered = sorted(days)
    end = (datetime.fromisoformat(ordered[-1]) + timedelta(days=1)).strftime("%Y-%m-%d")
    return {"start": ordered[0], "end": end}


class NoFeatures(FileNotFoundError):
    """No feature day exists yet (a fresh installation before its first ingest)."""


def load_features(use_case_id: str, start: str | None = None, end: str | None = None,
                  asset: str | None = None) -> pd.DataFrame:
    """Feature rows of [start, end) (ISO days), of one asset or all, sorted by asset and time."""
    import pandas as pd

    root = get_settings().features_root / use_case_id
    if not root.exists():
        raise NoFeatures(f"no features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    filters = [("asset", "==", asset)] if asset else []
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


def check_features(use_case_id: str, start: str, end: str, asset: str | None = None) -> dict[str, Any]:
    """The GX gate on the feature table (of one asset, or all): fails the task, naming what broke,
    when the gate fails. An asset without features in the window is reported, not failed (a
    turbine whose SCADA link was down that day)."""
    from plantops.stages.validation import validate_features

    use_case = get_use_case(use_case_id)
    frame = load_features(use_case_id, start, end, asset)
    if asset and frame.empty:
        log.warning("%s: no feature rows for asset %s in [%s, %s)", use_case_id, asset, start, end)
        return {"asset": asset, "rows": 0, "start": start, "end": end, "days": []}
    outcome = validate_features(use_case, frame)
    if not outcome.success:
        raise ValueError(f"feature gate failed for {use_case_id}{'/' + asset if asset else ''} "
                         f"[{start}, {end}): {outcome.reason()}")
    return {"asset": asset, "rows": len(frame), "start": start, "end": end,
            "days": sorted(frame["date"].unique().tolist())}


# -- train ----------------------------------------------------------------------------------------

def decision_asset(use_case: Any, asset: str | None) -> str | None:
    """The asset a decision is recorded under: the asset in a fleet, none for a one-asset use case."""
    return asset if use_case.is_fleet else None


def training_assets(use_case_id: str, asset: str | None = None) -> list[str]:
    """What one train run trains: the named asset, or every registered model of the use case
    (each asset of a per-asset fleet; '' for the one model of a single asset or a pooled fleet)."""
    use_case = get_use_case(use_case_id)
    keys = [a or "" for a in use_case.model_assets()]
    if asset:
        if asset not in use_case.assets:
            raise ValueError(f"{use_case_id}: {asset!r} is not one of its assets {list(use_case.assets)}")
        return [asset] if asset in keys else [""]
    return keys


def train(use_case_id: str, run_id: str, reference_start: str | None = None, reason: str = "scheduled",
          git_commit: str = "unknown", provenance: dict[str, str] | None = None,
          asset: str | None = None) -> dict[str, Any]:
    """Train the model of ``asset`` (a per-asset fleet) or the use case's one model."""
    from plantops.sources import historian
    from plantops.stages import decisions
    from plantops.stages.training import train_and_register

    use_case = get_use_case(use_case_id)
    asset = asset or None
    features = load_features(use_case_id, asset=asset)
    if features.empty:
        raise NoFeatures(f"no features for {use_case_id}/{asset} yet: run {use_case_id}__features first")
    labels = historian.read_labels_of(use_case.assets if asset is None else (asset,))
    end = features["ts"].max() + timedelta(seconds=use_case.features.bucket_seconds)
    result = train_and_register(
        use_case, features, labels, end=end,
        reference_start=_day(reference_start) if reference_start else None,
        run_tags={"airflow_run_id": run_id, "git_commit": git_commit, "trigger_reason": reason, **(provenance or {})},
        asset=asset,
    )
    decisions.record(use_case_id, run_id, "train", "promoted" if result["promoted"] else "kept_champion",
                     result["reason"], {"result": result, "reference_start": reference_start, "trigger": reason,
                      "asset": asset, **(provenance or {})}, asset=decision_asset(use_case, asset))
    return result


# -- score ----------------------------------------------------------------------------------------

class NoChampion(LookupError):
    """Nothing to score with yet: the first training has not promoted a model."""


def score(use_case_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """Score one day of one asset's features with its champion and write the predictions to the
    historian side. A temporal kind gets the rows before the day as warm-up, not rescored."""
    from plantops.kinds import kind_of
    from plantops.sources import historian
    from plantops.stages import registry
    from plantops.stages.scoring import score_frame

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    day = day or latest_feature_day(use_case_id)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")
    champion = registry.champion(name)
    if champion is None:
        raise NoChampion(f"{name} has no champion model yet: run {use_case_id}__train first")
    version = champion[0]
    model = registry.load_version(name, version)  # by number: the alias may move meanwhile
    kind = kind_of(use_case, model)
    context = kind.context_rows(model)
    first = day
    if context:
        bucket_days = context * use_case.features.bucket_seconds / 86400
        first = (datetime.fromisoformat(day) - timedelta(days=max(1, int(bucket_days) + 1))).strftime("%Y-%m-%d")
    features = load_features(use_case_id, first, end, asset)
    if features.empty:
        log.warning("%s: no features for %s on %s: nothing to score", use_case_id, asset, day)
        return {"day": day, "asset": asset, "rows": 0, "alarms": 0, "model_version": version}
    warm = int((features["date"] < day).sum())
    features = features.iloc[max(0, warm - context):]
    predictions = score_frame(kind, model, features, version, context=min(context, warm))
    written = historian.write_predictions(predictions)
    alarms = int(predictions["alarm"].sum())
    log.info("scored %s rows of %s/%s with champion %s v%s (%s): %s alarms", written, asset, day, name, version,
             kind.name, alarms)
    return {"day": day, "asset": asset, "rows": written, "alarms": alarms, "model_version": version,
            "model_kind": kind.name}


# -- monitor --------------------------------------------------------------------------------------

def assess(use_case_id: str, run_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """All monitor signals for one asset's day, its plant events, retrain history, and the
    policy's decision (recorded per asset in a fleet)."""
    from plantops.kinds import get_kind
    from plantops.sources import historian
    from plantops.stages import decisions, registry
    from plantops.stages.explain import alarm_tag_summary
    from plantops.stages.feedback import since_last_monitor
    from plantops.stages.ingest import rejected_share
    from plantops.stages.monitoring import PlantEvent, compute_drift, decide

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    monitoring = use_case.monitoring
    day = day or latest_feature_day(use_case_id)
    start = _day(day)
    end = start + parse_duration(monitoring.window)
    current = load_features(use_case_id, day, end.strftime("%Y-%m-%d"), asset)
    reference = registry.load_reference(name)
    run_folder = run_id.replace(":", "_").replace("+", "_")
    report_name = f"{run_folder}/{asset}/drift.html" if use_case.is_fleet else f"{run_folder}/drift.html"
    report = get_settings().reports_root / use_case_id / report_name
    columns = [c for c in get_kind(use_case).drift_columns() if c in reference.columns]
    drift = compute_drift(reference, current, columns, monitoring.drift, report)
    lookback = parse_duration(monitoring.plant_event_lookback)
    events = [
        PlantEvent(kind=e["kind"], ts=e["ts"], asset=e["asset"], description=e["description"], author=e["author"])
        for e in historian.read_plant_events(asset, start - lookback, end)
    ]
    champion = registry.champion(name)
    predictions = historian.read_predictions(asset, start, end)
    alarm_rate = float(predictions["alarm"].mean()) if len(predictions) else None
    performance = performance_check(use_case_id, end, asset)
    quality = rejected_share(use_case, start, end)
    history = retrain_history(use_case_id, start, asset)
    decision = decide(
        drift, events, window_start=start, window_end=end, asset=asset, lookback=lookback,
        policy=monitoring.policy, alarm_rate=alarm_rate, performance=performance, rejected_share=quality,
        history=history,
    )
    residual = predictions["residual"].dropna() if "residual" in predictions else []
    record = {
        "day": day,
        "asset": asset,
        "registered_model": name,
        "branch": decision.branch,
        "reason": decision.reason,
        "signals": [sig.to_record() for sig in decision.signals],
        "guardrail": decision.guardrail,
        "drift_share": drift.drift_share,
        "drifted_columns": list(drift.drifted_columns)[:10],
        "report_path": drift.report_path,
        # Served by the plantops plugin of the Airflow api-server (login required).
        "report_url": f"{os.environ.get('AIRFLOW__API__BASE_URL', 'http://localhost:8080')}"
                      f"/plantops/reports/{use_case_id}/{report_name}",
        "plant_events": [e.to_record() for e in decision.events],
        "champion_version": champion[0] if champion else None,
        "alarm_rate": alarm_rate,
        "n_predictions": int(len(predictions)),
        "mean_residual": float(residual.mean()) if len(residual) else None,
        "performance": None if performance is None else performance.__dict__,
        "performance_note": "not applicable: no labels (lab results, confirmed faults, feedback) have arrived "
                            "for this asset in the lookback" if performance is None else None,
        "rejected_share": quality,
        "history": {"last_request": str(history.last_request) if history.last_request else None,
                    "pending": history.pending, "recent_requests": history.recent_requests},
        "thresholds": {**monitoring.drift.model_dump(), "policy": monitoring.policy.model_dump()},
        "drift": drift.to_record(),
        # Which tags the window's alarms named (their per-alarm explanations), most often first.
        "alarm_tags": alarm_tag_summary(predictions.loc[predictions["alarm"] == 1, "top_tags"])
        if len(predictions) else [],
        # Read before this run's own record is stored: "since" means since the previous monitor run.
        "feedback": since_last_monitor(use_case_id, run_id),
    }
    decisions.record(use_case_id, run_id, "monitor", decision.branch, decision.reason, record,
                     asset=decision_asset(use_case, asset))
    record["approval_body"] = approval_body(use_case_id, record, drift)
    return record


def performance_check(use_case_id: str, end: datetime, asset: str | None = None):
    """The champion's predictions in the performance lookback against the labels that have arrived.
    None where no label has arrived: performance is then not applicable, and the record says so."""
    import pandas as pd

    from plantops.sources import historian
    from plantops.stages import registry
    from plantops.stages.monitoring import PerformanceCheck

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    start = end - parse_duration(use_case.monitoring.policy.performance.lookback)
    predictions = historian.read_predictions(asset, start, end)
    labels = historian.read_labels(asset)
    if predictions.empty or labels.empty:
        return None
    label = pd.Series("", index=predictions.index)
    for row in labels.itertuples(index=False):
        label[(predictions["ts"] >= row.start_ts) & (predictions["ts"] < row.end_ts)] = row.label
    faults, normal = label.str.startswith("fault"), label == "normal"
    expected = registry.champion_metric(use_case.model_name(asset), "detection_rate")
    return PerformanceCheck(
        n_labelled=int(faults.sum() + normal.sum()),
        detection_rate=float(predictions.loc[faults, "alarm"].mean()) if faults.any() else None,
        far=float(predictions.loc[normal, "alarm"].mean()) if normal.any() else None,
        expected_detection_rate=expected,
    )


def retrain_history(use_case_id: str, window_start: datetime, asset: str | None = None):
    """Retrain requests (automatic, or approved by an engineer) from the decision store, in plant
    time, for one asset of a fleet (or the use case)."""
    from plantops.stages import decisions
    from plantops.stages.monitoring import RetrainHistory

    use_case = get_use_case(use_case_id)
    guard = use_case.monitoring.policy.guardrails
    rows = decisions.latest(use_case_id, limit=500, asset=decision_asset(use_case, asset))
    requests = [
        (_day(r["payload"]["day"]), r["created_at"]) for r in rows
        if r["payload"].get("day") and ((r["kind"] == "monitor" and r["branch"] == "retrain")
                                        or (r["kind"] == "approval" and r["branch"].startswith("retrain")))
    ]
    trains = [r["created_at"] for r in rows if r["kind"] == "train"]
    last_train = max(trains) if trains else None
    earlier = [day for day, _ in requests if day < window_start]
    period = parse_duration(guard.period)
    return RetrainHistory(
        last_request=max(earlier) if earlier else None,
        pending=any(last_train is None or created > last_train for _, created in requests),
        recent_requests=sum(1 for day in earlier if day >= window_start - period),
    )


def approval_body(use_case_id: str, record: dict[str, Any], drift: Any) -> str:
    """The markdown a process engineer reads in the approval task."""
    lines = [
        f"**{use_case_id}**{' / asset **' + record['asset'] + '**' if record.get('asset') else ''}, "
        f"window {record['day']}: {record['reason']}",
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
    lines += [f"- {e['ts']} {e['kind']} by {e['author']}: {e['description']}" for e in record["plant_events"]] or ["- none"]
    lines += ["", "Tags named most often by the window's alarm explanations:"]
    if record.get("alarm_tags"):
        lines += ["", "| tag | alarms naming it | alarms it led | median shift (sd) |", "|---|---|---|---|"]
        for t in record["alarm_tags"]:
            shift = "n/a" if t["median_shift_sd"] is None else f"{t['median_shift_sd']:+.1f}"
            lines.append(f"| {t['tag']} | {t['alarms']} | {t['first']} | {shift} |")
    else:
        lines.append("- no alarms")
    lines += ["", "Process-engineer feedback since the previous monitor run:"]
    lines += [
        f"- {f['created_at'][:16]} **{f['kind']}** {f['ts_start'][:16]}..{f['ts_end'][:16]}"
        f"{' on ' + f['tag'] if f['tag'] else ''} by {f['author']}: {' '.join(f['comment'].split())}"
        for f in record.get("feedback") or []
    ] or ["- none"]
    perf = record.get("performance") or {}
    alarm = record["alarm_rate"]
    lines += ["", f"Champion: version {record['champion_version']}; alarm rate in the window: "
              f"{'n/a' if alarm is None else f'{alarm:.0%}'}; on labelled data: detection "
              f"{perf.get('detection_rate', 'n/a')}, false alarms {perf.get('far', 'n/a')} "
              f"({perf.get('n_labelled', 0)} labelled rows)",
              "", f"Drift report: [{record['report_url']}]({record['report_url']})",
              "", "Retraining now learns the changed plant as normal. Choose a new reference window to train "
              "only on data after the change; refuse if the model is still valid (a reason is required). "
              "Without an answer the safe default applies: no retraining."]
    return "\n".join(lines)


def _run_suffix(use_case: Any, asset: str) -> str:
    """Train runs a monitor run triggers are named per asset in a fleet (one run per asset)."""
    return f"__{asset}" if use_case.is_fleet else ""


def retrain_requests(use_case_id: str, run_id: str, assessments: list[dict]) -> list[dict]:
    """TriggerDagRunOperator kwargs (run id, conf) for each asset whose monitor branch is retrain."""
    use_case = get_use_case(use_case_id)
    return [{"trigger_run_id": f"retrain__{run_id}{_run_suffix(use_case, x['asset'])}",
             "conf": {"reason": f"retrain requested by {run_id}: {x['reason']}"[:500], "monitor_run_id": run_id,
                      **({"asset": x["asset"]} if use_case.is_fleet else {})}}
            for x in assessments if x["branch"] == "retrain"]


def approval_requests(use_case_id: str, assessments: list[dict]) -> list[dict]:
    """The approval task's subject and body for each asset whose monitor branch is approval."""
    use_case = get_use_case(use_case_id)
    return [{"subject": f"{use_case_id}{' / ' + x['asset'] if use_case.is_fleet else ''}, {x['day']}: "
                        "retrain after a plant change?",
             "body": x["approval_body"]}
            for x in assessments if x["branch"] == "approval"]


def approved_trainings(use_case_id: str, run_id: str, asked: list[dict], answers: list[dict]) -> list[dict]:
    """Record each approval's answer (``answers[i]`` answers ``asked[i]``) and return the
    TriggerDagRunOperator kwargs of the trainings the engineers approved. A refusal without a reason
    is recorded as such; no answer (the timeout's safe default) as ``timed_out``."""
    from plantops.stages.monitoring import APPROVAL_OPTIONS, SAFE_DEFAULT

    use_case = get_use_case(use_case_id)
    timeout = use_case.monitoring.approval_timeout
    triggers = []
    for assessment, answer in zip(asked, answers, strict=True):
        chosen = (answer.get("chosen_options") or [SAFE_DEFAULT])[0]
        branch = APPROVAL_OPTIONS.get(chosen, "refused")
        params = answer.get("params_input") or {}
        who = (answer.get("responded_by_user") or {}).get("id", "")
        if branch == "refused" and who and not params.get("reason"):
            log.warning("%s: %s refused without a reason; recorded as such", use_case_id, who)
            answer = {**answer, "params_input": {**params, "reason": f"refused by {who} (no reason given)"}}
        stored = record_answer(use_case_id, run_id, answer, branch, assessment["day"], timeout,
                               decision_asset(use_case, assessment["asset"]))
        if stored["branch"] not in ("retrain_now", "retrain_new_reference"):
            continue
        conf = {"monitor_run_id": run_id, "approved_by": who, "approval_reason": params.get("reason", ""),
                **({"asset": assessment["asset"]} if use_case.is_fleet else {})}
        if stored["branch"] == "retrain_new_reference":
            events = assessment.get("plant_events") or []
            conf["reference_start"] = params.get("reference_start") or (events[-1]["ts"] if events else assessment["day"])
            conf["reason"] = f"approved with a new reference window in {run_id}"
            prefix = "reference"
        else:
            conf["reason"] = f"approved by a process engineer in {run_id}"
            prefix = "approved"
        triggers.append({"trigger_run_id": f"{prefix}__{run_id}{_run_suffix(use_case, assessment['asset'])}",
                         "conf": conf})
    return triggers


def record_answer(use_case_id: str, run_id: str, answer: dict[str, Any], branch: str, day: str,
                  timeout: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """Store who answered the approval, when and what, in the decision store (under ``asset``: the
    asset of a fleet, None for a one-asset use case). No answer (the response timeout applied the
    safe default) is recorded as such, with a warning."""
    from plantops.stages import decisions

    params = answer.get("params_input") or {}
    responder = answer.get("responded_by_user")
    payload = {
        "day": day,
        "asset": asset,
        "chosen_options": answer.get("chosen_options"),
        "responded_by": responder,
        "responded_at": answer.get("responded_at"),
        "params_input": params,
        "timed_out": responder is None,
    }
    if responder is None:
        reason = f"no answer within {timeout or 'the response timeout'}: safe default, no retraining"
        log.warning("%s: approval in %s timed out; %s", use_case_id, run_id, reason)
        branch = "timed_out"
    else:
        reason = params.get("reason") or f"{branch} chosen by {responder.get('name') or responder.get('id')}"
    decisions.record(use_case_id, run_id, "approval", branch, reason, payload, asset=asset)
    return {**payload, "branch": branch, "reason": reason}
