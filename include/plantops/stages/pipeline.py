"""The typed functions that the DAG tasks call, one per task, so every task body stays a few lines.

Each function takes plain values (ids, ISO dates, run ids) and returns a JSON-able dict for XCom.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from collections.abc import Iterable
from typing import Any

from plantops.config import get_use_case, parse_duration
from plantops.modalities import modality_of
from plantops.modalities.base import FEATURE_PARAMS, NoFeatures, days_between  # noqa: F401 - re-exported
from plantops.settings import get_settings
from plantops.stages.decisions import decision_asset
from plantops.units import utc_day

# Re-exported from the tags modality: where the CLI, the orchestration and the tests found them before.
from plantops.modalities.tags.features import feature_window, load_features  # noqa: E402, F401
from plantops.modalities.tags.ingest import historian_windows, landed_days  # noqa: E402, F401
from plantops.modalities.tags.monitoring import confirm_window, performance_check  # noqa: E402, F401
from plantops.modalities.tags.training import suspect_windows  # noqa: E402, F401

log = logging.getLogger(__name__)


_day = utc_day


# -- ingest ---------------------------------------------------------------------------------------

def ingest(use_case_id: str, start: str, end: str, run_id: str) -> dict[str, Any]:
    """Whatever the use case's modality lands (:meth:`Modality.ingest`: landed files plus the
    historian window [start, end) for tags, inspection runs and labels files for images); returns
    counts and the days written.

    Files quarantined whole are mailed to the operators and recorded in the decision store (kind
    ``quarantine``); the DAG's ``report_quarantine`` task then fails the run (:func:`report_quarantine`).
    """
    use_case = get_use_case(use_case_id)
    result = modality_of(use_case).ingest(run_id, _day(start) if start else None, _day(end) if end else None)
    notified = _tell_quarantined(use_case, run_id, result["days"]) if result["quarantined_files"] else None
    return {"notified": notified, **result}


def _tell_quarantined(use_case: Any, run_id: str, days: Iterable[str]) -> Any:
    """Mail the operators the files the run quarantined whole and record it in the decision store."""
    from plantops.stages import decisions, notify

    listed = quarantined_in_run(use_case.id, run_id)  # the ledger's full reasons, across the run's tries
    notified = notify.send(use_case, "quarantine", f"{len(listed)} landed file(s) quarantined",
                           "\n".join(f"- {f['file']}: {f['reason']}" for f in listed)
                           + "\n\nNothing was lost: fix the file and release it (python -m plantops.cli "
                           f"release {use_case.id} <file>).", notify.ui_link(use_case.dag_id("ingest"), run_id))
    # The operator view: which files of which run wait in quarantine, and why.
    decisions.record(use_case.id, run_id, "quarantine", "files_quarantined",
                     "; ".join(f"{f['file']}: {f['reason']}" for f in listed)[:2000],
                     {"files": listed, "days_written": sorted(days)})
    return notified


class FilesQuarantined(RuntimeError):
    """Landed files of the run were quarantined whole: the run must not end green."""


def quarantined_in_run(use_case_id: str, run_id: str) -> list[dict[str, str]]:
    """The files the run quarantined whole, with the ledger's reason, in the order they were processed."""
    from sqlalchemy import select

    from plantops.sources.landing import ledger, state_engine

    query = (select(ledger.c.name, ledger.c.reason).where(
        ledger.c.use_case == use_case_id, ledger.c.dag_run_id == run_id, ledger.c.status == "quarantined")
        .order_by(ledger.c.id))
    with state_engine().connect() as conn:
        return [{"file": name, "reason": reason or ""} for name, reason in conn.execute(query)]


def report_quarantine(use_case_id: str, run_id: str) -> list[dict[str, str]]:
    """Raise :class:`FilesQuarantined`, naming each file and its reason, when the run quarantined a
    whole file. Read from the landing ledger, so the answer holds however the ingest ran (in
    process, in a pod, over retries)."""
    files = quarantined_in_run(use_case_id, run_id)
    if files:
        raise FilesQuarantined(
            f"{use_case_id}: {len(files)} landed file(s) quarantined in run {run_id}: "
            + "; ".join(f"{f['file']}: {f['reason'].rstrip('.')}" for f in files)
            + f". Fix each file and release it (python -m plantops.cli release {use_case_id} <file>); "
            "the run's other files were ingested.")
    return files


# -- features -------------------------------------------------------------------------------------

def plan_features(use_case_id: str, days: list[str]) -> dict[str, Any]:
    """What ``<uc>__features`` builds for the changed ``days`` (:meth:`Modality.feature_plan`: the
    days a change rebuilds, with the modality's lookback). ``ranges`` is the job's ``--ranges``
    argument; ``lookahead`` names the built days rebuilt because a changed day is in their lookback."""
    return modality_of(get_use_case(use_case_id)).feature_plan(days)


class NothingToBuild(ValueError):
    """A features run without days: no asset event, no params, and no bronze day without features."""


def built_feature_days(use_case_id: str) -> list[str]:
    """The days that have a feature partition, oldest first (:meth:`Modality.built_feature_days`)."""
    return modality_of(get_use_case(use_case_id)).built_feature_days()


def bronze_days(use_case_id: str) -> list[str]:
    """The days that have bronze, oldest first (:meth:`Modality.bronze_days`)."""
    return modality_of(get_use_case(use_case_id)).bronze_days()


def unbuilt_days(use_case_id: str) -> list[str]:
    """The bronze days without features yet: what a features run without params or events builds.
    Raises :class:`NothingToBuild` naming the params when there are none (no bronze yet, or every
    bronze day built: a rebuild names its days)."""
    modality = modality_of(get_use_case(use_case_id))
    have = modality.bronze_days()
    built = set(modality.built_feature_days())
    todo = [d for d in have if d not in built]
    if todo:
        return todo
    if not have:
        raise NothingToBuild(f"{use_case_id} has no bronze yet: ingest first (python -m plantops.cli ingest "
                             f"{use_case_id} --day YYYY-MM-DD), or name the days to build: {FEATURE_PARAMS}")
    raise NothingToBuild(f"every bronze day of {use_case_id} ({have[0]}..{have[-1]}) has features: to rebuild "
                         f"days, name them: {FEATURE_PARAMS}")


def latest_feature_day(use_case: Any) -> str:
    """The newest day with features (:meth:`Modality.built_feature_days`)."""
    days = modality_of(use_case).built_feature_days()
    if not days:
        uc = use_case.id
        raise NoFeatures(f"no feature partitions for {uc}: build them first ({uc}__features, "
                         f"params {FEATURE_PARAMS}, or python -m plantops.cli run {uc} features)")
    return days[-1]


def check_features(use_case_id: str, start: str, end: str, asset: str | None = None) -> dict[str, Any]:
    """The GX gate over one range [start, end): :func:`check_feature_ranges` of it."""
    return {**check_feature_ranges(use_case_id, f"{start}:{end}", asset), "start": start, "end": end}


def check_feature_ranges(use_case_id: str, ranges: str, asset: str | None = None) -> dict[str, Any]:
    """The GX gate on the feature rows of the day ranges (``START:END[,START:END...]``, as the
    feature job takes them) of one asset, or all (:meth:`Modality.check_features`): fails the task,
    naming what broke, when the gate fails."""
    from plantops.features import format_ranges, parse_ranges

    use_case = get_use_case(use_case_id)
    spans = [(start.isoformat(), end.isoformat()) for start, end in parse_ranges(ranges)]
    return {**modality_of(use_case).check_features(spans, asset), "ranges": format_ranges(spans)}


# -- train ----------------------------------------------------------------------------------------

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
    from plantops.stages import decisions, registry

    use_case = get_use_case(use_case_id)
    asset = asset or None
    inherited = None
    if not reference_start:
        # A new normal an engineer declared stays in force until another is declared: later
        # trainings (nightly, stale model) start from it too, and are judged on the plant after it.
        reference_start = inherited = registry.champion_reference_start(use_case.model_name(asset))
    run_tags = {"airflow_run_id": run_id, "git_commit": git_commit, "trigger_reason": reason, **(provenance or {})}
    modality = modality_of(use_case)
    result = modality.train(modality.training_rows(asset), _day(reference_start) if reference_start else None,
                            run_tags, asset)
    decisions.record(use_case_id, run_id, "train", "promoted" if result["promoted"] else "kept_champion",
                     result["reason"], {"result": result, "reference_start": reference_start, "trigger": reason,
                      "reference_inherited": inherited is not None, "asset": asset, **(provenance or {})},
                     asset=decision_asset(use_case, asset))
    if result["promoted"]:
        from plantops.stages import notify

        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result["champion_metrics"].items()
                            if k in ("far", "detection_rate", "detection_delay", "rmse", "accuracy", "defect_recall"))
        notify.send(use_case, "promotion", f"{result['registered_model']} v{result['version']} is the new champion",
                    f"Trigger: {reason}.\n\nWhy: {result['reason']}.\n\nHeld-out metrics: {metrics or 'none'}."
                    + (f"\n\nNew reference from {reference_start}." if reference_start else ""),
                    notify.ui_link(use_case.dag_id("train"), run_id))
    return result


# -- score ----------------------------------------------------------------------------------------

class NoChampion(LookupError):
    """Nothing to score with yet: the first training has not promoted a model."""


def score(use_case_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """Score one day of one asset's features with its champion and write the predictions to the
    historian side (:meth:`Modality.score`: for tags a temporal kind gets the rows before the day as
    warm-up, not rescored; an inspection line's verdicts per cell)."""
    from plantops.kinds import kind_of
    from plantops.stages import registry

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    day = day or latest_feature_day(use_case)
    champion = registry.champion(name)
    if champion is None:
        raise NoChampion(f"{name} has no champion model yet: run {use_case_id}__train first")
    version = champion[0]
    model = registry.load_version(name, version)  # by number: the alias may move meanwhile
    kind = kind_of(use_case, model)
    return modality_of(use_case).score(kind, model, version, day, asset, name)


# -- monitor --------------------------------------------------------------------------------------

def assess(use_case_id: str, run_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """All monitor signals for one asset's day (an inspection line's day), its plant events, retrain
    history, and the policy's decision (recorded per asset in a fleet)."""
    from plantops.sources import historian
    from plantops.stages import decisions, registry
    from plantops.stages.monitoring import PlantEvent, compute_drift, decide

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    monitoring = use_case.monitoring
    day = day or latest_feature_day(use_case)
    start = _day(day)
    end = start + parse_duration(monitoring.window)
    reference = registry.load_reference(name)
    modality = modality_of(use_case)
    evidence = modality.evidence(asset, name, run_id, day, start, end)
    report, report_url = report_location(use_case, run_id, asset)
    columns = [c for c in evidence["columns"] if c in reference.columns]
    drift = compute_drift(reference, evidence["current"], columns, monitoring.drift, report)
    lookback = parse_duration(monitoring.plant_event_lookback)
    events = [
        PlantEvent(kind=e["kind"], ts=e["ts"], asset=e["asset"], description=e["description"], author=e["author"])
        for e in historian.read_plant_events(asset, start - lookback, end, conn_id=use_case.historian_conn)
    ]
    champion = registry.champion(name)
    reference_start = registry.champion_reference_start(name)
    if reference_start is not None:
        # A change at or before the champion's declared reference start was answered by it: the
        # champion was trained on the plant after it.
        answered = _day(reference_start)
        events = [e for e in events if e.ts > answered]
    history = retrain_history(use_case, start, asset)
    performance, confirmation = evidence["performance"], evidence["confirmation"]
    decision = decide(
        drift, events, window_start=start, window_end=end, asset=asset, lookback=lookback,
        policy=monitoring.policy, alarm_rate=evidence["alarm_rate"], performance=performance,
        rejected_share=evidence["rejected_share"], history=history, confirmation=confirmation,
    )
    record = {
        "day": day,
        "asset": asset,
        "registered_model": name,
        "branch": decision.branch,
        "reason": decision.reason,
        "signals": [sig.to_record() for sig in decision.signals],
        "rule": decision.rule,
        "guardrail": decision.guardrail,
        "confirmation": {"false_alarms": confirmation.false_alarms, "confirmed_fault": confirmation.confirmed_fault,
                         "by": list(confirmation.by)},
        "drift_share": drift.drift_share,
        "drifted_columns": list(drift.drifted_columns)[:10],
        "report_path": drift.report_path,
        "report_url": report_url,
        "plant_events": [e.to_record() for e in decision.events],
        "champion_version": champion[0] if champion else None,
        "champion_reference_start": reference_start,
        "alarm_rate": evidence["alarm_rate"],
        "performance": None if performance is None else performance.__dict__,
        "rejected_share": evidence["rejected_share"],
        "history": {"last_request": str(history.last_request) if history.last_request else None,
                    "pending": history.pending, "recent_requests": history.recent_requests,
                    "upset_since": str(history.upset_since) if history.upset_since else None},
        "thresholds": {**monitoring.drift.model_dump(), "policy": monitoring.policy.model_dump()},
        "drift": drift.to_record(),
        **evidence["record"],
    }
    decisions.record(use_case_id, run_id, "monitor", decision.branch, decision.reason, record,
                     asset=decision_asset(use_case, asset))
    record["approval_body"] = approval_body(use_case, record, drift)
    return record


def report_location(use_case: Any, run_id: str, asset: str) -> tuple[Any, str]:
    """Where a monitor run writes its drift report, and its URL on the plantops plugin of the
    Airflow api-server (login required)."""
    run_folder = run_id.replace(":", "_").replace("+", "_")
    name = f"{run_folder}/{asset}/drift.html" if use_case.is_fleet else f"{run_folder}/drift.html"
    return (get_settings().reports_root / use_case.id / name,
            f"{os.environ.get('AIRFLOW__API__BASE_URL', 'http://localhost:8080')}/plantops/reports/{use_case.id}/{name}")


def retrain_history(use_case: Any, window_start: datetime, asset: str | None = None):
    """Retrain requests (automatic, or approved by an engineer) from the decision store, in plant
    time, for one asset of a fleet (or the use case)."""
    from plantops.stages import decisions
    from plantops.stages.monitoring import RetrainHistory

    guard = use_case.monitoring.policy.guardrails
    rows = decisions.latest(use_case.id, limit=500, asset=decision_asset(use_case, asset))
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
        upset_since=upset_since(rows, window_start, parse_duration(use_case.monitoring.window)),
    )


def upset_since(rows: list[dict], window_start: datetime, window: timedelta) -> datetime:
    """Where the run of upset windows that this window would continue began: the earliest of the
    adjoining earlier windows whose newest monitor decision was an upset (or a persistent upset
    put to an engineer), else this window's own start."""
    newest: dict[datetime, dict] = {}
    for r in rows:  # newest first
        if r["kind"] == "monitor" and r["payload"].get("day"):
            newest.setdefault(_day(r["payload"]["day"]), r)
    since = window_start
    while (r := newest.get(since - window)) is not None and (
            r["branch"] == "upset" or r["payload"].get("rule") == "persistent_upset"):
        since -= window
    return since


def approval_body(use_case: Any, record: dict[str, Any], drift: Any) -> str:
    """The markdown a process engineer reads in the approval task. It opens with who may answer:
    Airflow's form shows enabled buttons to every user and refuses a non-assigned one only on
    submit (403), so the body says it before anyone fills anything in. The modality names its
    rows and adds its evidence (:meth:`Modality.approval_lines`)."""
    modality = modality_of(use_case)
    words = modality.words
    lines = [
        "> **Answered only by the assigned process engineers: "
        + ", ".join(f"{a.name} (`{a.id}`)" for a in use_case.approvers)
        + ".** Anyone else is refused when submitting.",
        "",
        f"**{use_case.id}**{' / asset **' + record['asset'] + '**' if record.get('asset') else ''}, "
        f"window {record['day']}: {record['reason']}",
        "",
        f"Drifted share of {words.drifted}: **{record['drift_share']:.0%}** "
        f"(threshold {record['thresholds']['share_threshold']:.0%}, method {record['thresholds']['method']}).",
        "",
        f"| {words.column} | drift score | shift (sd) |",
        "|---|---|---|",
    ]
    for col, score, shift in drift.top(8):
        lines.append(f"| {col} | {score:.3f} | {shift:+.1f} |")
    lines += ["", "Plant events in the window:"]
    lines += [f"- {e['ts']} {e['kind']} by {e['author']}: {e['description']}" for e in record["plant_events"]] or ["- none"]
    lines += modality.approval_lines(record)
    alarm = record["alarm_rate"]
    labelled = modality.labelled_line(record.get("performance"))
    lines += ["", f"Champion: version {record['champion_version']}; {words.output} rate in the "
              f"window: {'n/a (nothing scored)' if alarm is None else f'{alarm:.0%}'}; {labelled}",
              "", f"Drift report: [{record['report_url']}]({record['report_url']})",
              "", f"*Retrain now* learns {words.scope}. *Retrain from a new reference window* declares "
              "the state from `reference_start` on (empty: the newest plant event, else the window's start) the "
              "new normal: the model is trained, and judged against the champion, on data after it. *Refuse* if "
              "the model is still valid (give a reason: the only field a refusal needs): the window's "
              f"{words.outputs} stand and it stays out of training. Without an answer the safe "
              "default applies: no retraining."]
    return "\n".join(lines)


def _run_suffix(use_case: Any, asset: str) -> str:
    """Train runs a monitor run triggers are named per asset in a fleet (one run per asset)."""
    return f"__{asset}" if use_case.is_fleet else ""


def retrain_requests(use_case_id: str, run_id: str, assessments: list[dict]) -> list[dict]:
    """TriggerDagRunOperator kwargs (run id, conf) for each asset whose monitor branch is retrain."""
    use_case = get_use_case(use_case_id)
    return [{"trigger_run_id": f"retrain__{run_id}{_run_suffix(use_case, x['asset'])}",
             "conf": {"reason": f"retrain requested by {run_id}: {x['reason']}"[:500], "monitor_run_id": run_id,
                      **({"asset": x["asset"]} if use_case.is_fleet else {})},
             "note": run_note(use_case, x, f"stale model: retrain asked by monitor run {run_id}")}
            for x in assessments if x["branch"] == "retrain"]


def run_note(use_case: Any, assessment: dict, text: str) -> str:
    """The note a triggered run carries in the UI's run list: the day judged (and asset), and why."""
    return f"{_subject(use_case, assessment)}: {text}"


def _subject(use_case: Any, assessment: dict) -> str:
    return f"{use_case.id}{' / ' + assessment['asset'] if use_case.is_fleet else ''}, {assessment['day']}"


# The approval's question, by the guardrail or rule that sent the window to an engineer.
QUESTIONS = {
    "plant_change": "retrain after a plant change?",
    "persistent_upset": "a lasting upset: the new normal?",
    "cap": "another retrain past the cap?",
    "quality": "retrain on data the quality gates rejected?",
}


def approval_requests(use_case_id: str, assessments: list[dict]) -> list[dict]:
    """The approval task's subject and body for each asset whose monitor branch is approval."""
    use_case = get_use_case(use_case_id)
    return [{"subject": f"{_subject(use_case, x)}: "
                        f"{QUESTIONS.get(x.get('guardrail') or x.get('rule'), 'retrain?')}",
             "body": x["approval_body"]}
            for x in assessments if x["branch"] == "approval"]


def upset_alerts(use_case_id: str, run_id: str, assessments: list[dict]) -> list[dict]:
    """The operators' alert (subject, body, link) for each asset whose monitor branch is upset
    (:meth:`Modality.alert` says what the model flagged)."""
    from plantops.stages import notify

    use_case = get_use_case(use_case_id)
    modality = modality_of(use_case)
    return [{"asset": x["asset"], **modality.alert(x, _subject(use_case, x)),
             "link": notify.ui_link(use_case.dag_id("monitor"), run_id)}
            for x in assessments if x["branch"] == "upset"]


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
        # The user name: FAB records its numeric user id as "id"; both auth managers give the name.
        responder = answer.get("responded_by_user") or {}
        who = responder.get("name") or responder.get("id", "")
        if branch == "refused" and who and not params.get("reason"):
            log.warning("%s: %s refused without a reason; recorded as such", use_case_id, who)
            answer = {**answer, "params_input": {**params, "reason": f"refused by {who} (no reason given)"}}
        stored = record_answer(use_case_id, run_id, answer, branch, assessment["day"], timeout,
                               decision_asset(use_case, assessment["asset"]))
        if stored["branch"] == "timed_out":
            from plantops.stages import notify

            notify.send(use_case, "timeout", f"{_subject(use_case, assessment)}: no answer within {timeout}",
                        f"{stored['reason']}.\n\nThe monitor asked: {assessment['reason']}",
                        notify.ui_link(use_case.dag_id("monitor"), run_id))
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
                         "conf": conf, "note": run_note(use_case, assessment, f"{stored['branch']} approved by "
                                                        f"{who or 'an engineer'} in monitor run {run_id}")})
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
