"""What the monitor weighs for one asset's window of tags, and how its messages say it: the
features (the kind's drift columns), the champion's predictions and alarms, labels (lab,
feedback), rejected values; the tags the alarms named and the engineers' feedback."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import rate
from plantops.units import parse_duration

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase


def performance_check(use_case: UseCase, end: datetime, asset: str | None = None):
    """The champion's predictions in the performance lookback against the labels that have arrived.
    None where no label has arrived: performance is then not applicable, and the record says so."""
    import pandas as pd

    from plantops.sources import historian
    from plantops.stages import registry
    from plantops.stages.monitoring import PerformanceCheck

    asset = asset or use_case.assets[0]
    start = end - parse_duration(use_case.monitoring.policy.performance.lookback)
    predictions = historian.read_predictions(asset, start, end, conn_id=use_case.historian_conn)
    labels = historian.read_labels(asset, conn_id=use_case.historian_conn)
    champion = registry.champion(use_case.model_name(asset))
    if champion is not None and len(predictions):
        # The champion is judged on its own predictions, not on those of the models before it.
        predictions = predictions[predictions["model_version"].astype(str) == champion[0]]
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


def confirm_window(predictions: pd.DataFrame, labels: pd.DataFrame, start: datetime, end: datetime):
    """What people confirmed about the window: the champion's alarms inside periods labelled normal
    (false-alarm feedback, lab results) and the first fault label overlapping it."""
    import pandas as pd

    from plantops.stages.monitoring import Confirmation

    if labels.empty:
        return Confirmation()
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    overlapping = labels[(labels["start_ts"] < hi) & (labels["end_ts"].isna() | (labels["end_ts"] > lo))]
    alarm_ts = predictions.loc[predictions["alarm"] == 1, "ts"] if len(predictions) else pd.Series(dtype="datetime64[ns, UTC]")
    false_alarms, by = 0, set()
    for row in overlapping[overlapping["label"] == "normal"].itertuples(index=False):
        inside = (alarm_ts >= row.start_ts) & (alarm_ts < row.end_ts if not pd.isna(row.end_ts) else True)
        if inside.any():
            false_alarms += int(inside.sum())
            by.add(str(getattr(row, "source", "") or "labels"))
    faults = overlapping[overlapping["label"].str.startswith("fault")]
    return Confirmation(false_alarms=false_alarms, by=tuple(sorted(by)),
                        confirmed_fault=str(faults["label"].iloc[0]) if len(faults) else None)


def evidence(use_case: UseCase, asset: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The monitor's evidence for one asset's window of tags (see :meth:`Modality.evidence`)."""
    from plantops.kinds import get_kind
    from plantops.modalities.tags.features import load_features
    from plantops.sources import historian
    from plantops.stages.explain import alarm_tag_summary
    from plantops.stages.feedback import since_last_monitor
    from plantops.stages.ingest import rejected_share

    predictions = historian.read_predictions(asset, start, end, conn_id=use_case.historian_conn)
    performance = performance_check(use_case, end, asset)
    residual = predictions["residual"].dropna() if "residual" in predictions else []
    return {
        "current": load_features(use_case.id, day, end.strftime("%Y-%m-%d"), asset),
        "columns": get_kind(use_case).drift_columns(),
        "alarm_rate": float(predictions["alarm"].mean()) if len(predictions) else None,
        "performance": performance,
        "rejected_share": rejected_share(use_case, start, end),
        "confirmation": confirm_window(predictions, historian.read_labels(asset, conn_id=use_case.historian_conn), start, end),
        "record": {
            "n_predictions": int(len(predictions)),
            "mean_residual": float(residual.mean()) if len(residual) else None,
            "performance_note": "not applicable: no labels (lab results, confirmed faults, feedback) have arrived "
                                "for this asset in the lookback" if performance is None else None,
            # Which tags the window's alarms named (their per-alarm explanations), most often first.
            "alarm_tags": alarm_tag_summary(predictions.loc[predictions["alarm"] == 1, "top_tags"])
            if len(predictions) else [],
            # Read before this run's own record is stored: "since" means since the previous monitor run.
            "feedback": since_last_monitor(use_case.id, run_id),
        },
    }


def approval_lines(record: dict[str, Any]) -> list[str]:
    """The tags the window's alarms named, and the engineers' feedback since the previous monitor run."""
    lines = ["", "Tags named most often by the window's alarm explanations:"]
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
    return lines


def labelled_line(perf: dict[str, Any] | None) -> str:
    if perf is None:
        return "on labelled data: not applicable (no lab results or feedback labels in the lookback)"
    return (f"on {perf['n_labelled']} labelled rows: detection "
            f"{rate(perf['detection_rate'], 'n/a (no fault-labelled rows)')}, false alarms "
            f"{rate(perf['far'], 'n/a (no normal-labelled rows)')}")


def alert(use_case: UseCase, x: dict[str, Any], subject: str) -> dict[str, str]:
    """The operators' upset alert of a window of tags: the alarm rate and the tags the alarms name."""
    share = "n/a" if x.get("alarm_rate") is None else f"{x['alarm_rate']:.0%}"
    tags = ", ".join(f"{t['tag']} ({t['alarms']} alarms)" for t in (x.get("alarm_tags") or [])[:5])
    return {"subject": f"{subject}: upset, the model alarms on {share} of the window",
            "body": f"{x['reason']}\n\nTags the alarms name most: {tags or 'none'}.\n\n"
                    f"Drift report: {x['report_url']}\n\nIf these alarms are false, tell the model: submit "
                    f"false_alarm feedback ({use_case.dag_id('feedback')}); the next monitor run retrains it."}
