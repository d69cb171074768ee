"""Drift monitoring and the policy that turns drift into a decision.

:func:`compute_drift` compares a current window of the wide feature table with a reference window
through Evidently (0.7 API: a ``Report`` of one ``ValueDrift`` per tag), column by column, on the base tag
columns only (the per-bucket means; rolling features would double-count the same movement). It
returns a :class:`DriftResult`: the share of drifted tags, each tag's score, and which way each
tag moved (``shift_sd``: mean shift in reference standard deviations), so an engineer sees at once
which tags moved and where to. The Evidently HTML report is written next to it for people, opening
with a summary table (drifted tags first, with their scores and shifts).

:func:`decide` is the policy, pure and data-driven, in three families of named rules (the use
case's ``monitoring.policy.rules`` gives each its action):

- *upset*: the champion alarms on the window and nobody confirmed the alarms false. The model is
  doing its job: operators are told (``upset``), nothing is retrained. An upset lasting longer
  than ``upset.persist`` without a confirmed fault asks a process engineer whether it is a new
  normal (``persistent_upset``).
- *staleness*: alarms inside periods people labelled normal (``false_alarms``), a performance
  drop on delayed labels (``performance``), or drift the champion does not alarm on
  (``unexplained_drift``): the model no longer describes the plant; retrain, within the guardrails.
- *plant change*: an operator changed the plant in the window (setpoint change, maintenance, part
  swap, recipe change): any upset or retrain goes to a process engineer (``plant_change``),
  because automatic retraining would learn the new plant state blindly.

Calibration on TEP (Braatz data, 480-sample days): the process is strongly autocorrelated, so a
day of normal operation differs from the reference more than i.i.d. tests expect. With the
normalised Wasserstein distance and a column threshold of 0.1 a normal day already has 56 % of its
tags "drifted"; a column threshold of 0.5 (half a reference standard deviation of distribution
shift) leaves normal days at <= 15 % and flags the strong faults (1, 2, 5, 6, 7, 8, 12, 13, 18) at
>= 54 %. Faults that move one control loop only (4, 11, 14) cannot reach a share threshold: they
show as one or two tags with very large scores (see ``max_score``).
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import Drift, Policy

log = logging.getLogger(__name__)

Branch = Literal["ok", "upset", "retrain", "approval"]
# The branch each action of the policy leads to.
BRANCH_OF = {"none": "ok", "notify": "upset", "retrain": "retrain", "approval": "approval"}

# The approval form's options and the branch each answer records; the safe default applies on timeout.
APPROVAL_OPTIONS = {
    "Retrain now": "retrain_now",
    "Retrain from a new reference window": "retrain_new_reference",
    "Refuse: model still valid": "refused",
}
SAFE_DEFAULT = "Refuse: model still valid"

# Operator interventions that change the plant itself (the historian's EVENT_KINDS). Open-ended on
# purpose (sites name their own), but these are the kinds the approval flow and the demo know.
PLANT_EVENT_KINDS = ("setpoint_change", "maintenance", "part_swap", "recipe_change", "camera_change", "lighting_change")

# Evidently's normed Wasserstein divides by max(std, 0.001); shift_sd uses the same floor so that a
# tag's score and its shift are on the same scale.
_STD_FLOOR = 0.001
# How many of the most drifted tags a reason string names: enough to point an engineer somewhere.
_REASON_TOP = 5


@dataclass(frozen=True)
class DriftResult:
    """One drift check: the verdict, its inputs and per-tag attribution.

    ``column_scores`` holds Evidently's raw score per tag: a distance for distance methods
    (wasserstein, psi, jensenshannon, ...: higher is more drift) or a p-value for tests (ks, t_test,
    ...: lower is more drift, ``score_is_p_value``). ``drifted_columns`` is ordered most drifted
    first either way. ``shift_sd`` is (mean(current) - mean(reference)) / std(reference) per tag.
    """

    drift_share: float
    drifted: bool
    n_columns: int
    n_drifted: int
    column_scores: dict[str, float]
    drifted_columns: tuple[str, ...]
    method: str
    report_path: str | None
    shift_sd: dict[str, float] = field(default_factory=dict)
    column_threshold: float = 0.0
    share_threshold: float = 0.0
    score_is_p_value: bool = False
    skipped_columns: tuple[str, ...] = ()
    n_reference: int = 0
    n_current: int = 0

    @property
    def max_score(self) -> float:
        """The single most drifted tag's score (a distance; for p-value methods the smallest p)."""
        values = [v for v in self.column_scores.values() if not math.isnan(v)]
        if not values:
            return math.nan
        return min(values) if self.score_is_p_value else max(values)

    def top(self, n: int = _REASON_TOP) -> list[tuple[str, float, float]]:
        """The n most drifted tags as (tag, score, shift_sd)."""
        return [
            (col, self.column_scores[col], self.shift_sd.get(col, math.nan))
            for col in self.drifted_columns[:n]
        ]

    def summary(self) -> str:
        """One line for logs and reason strings."""
        text = (
            f"{self.n_drifted} of {self.n_columns} tags drifted ({self.drift_share:.0%}; "
            f"{self.method}, column threshold {self.column_threshold:g}, share threshold "
            f"{self.share_threshold:.0%})"
        )
        if self.drifted_columns:
            moved = ", ".join(f"{col} {shift:+.1f} sd" for col, _, shift in self.top())
            text += f"; most drifted: {moved}"
        return text

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict for the decision store and XCom."""
        return {
            "drift_share": _finite(self.drift_share),
            "drifted": self.drifted,
            "n_columns": self.n_columns,
            "n_drifted": self.n_drifted,
            "method": self.method,
            "column_threshold": self.column_threshold,
            "share_threshold": self.share_threshold,
            "score_is_p_value": self.score_is_p_value,
            "max_score": _finite(self.max_score),
            "drifted_columns": list(self.drifted_columns),
            "column_scores": {k: _finite(v) for k, v in self.column_scores.items()},
            "shift_sd": {k: _finite(v) for k, v in self.shift_sd.items()},
            "skipped_columns": list(self.skipped_columns),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "report_path": self.report_path,
        }


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    drift: Drift,
    report_path: Path | None = None,
) -> DriftResult:
    """Per-tag drift of ``current`` against ``reference`` with Evidently, and the share verdict.

    ``columns`` are the tags to compare (normally ``features.base_columns(tags)``). A tag with no
    values in either window is skipped (named in ``skipped_columns``) rather than failing the
    whole check: a missing analyzer feed must not hide drift in the other tags. The HTML report is
    written atomically to ``report_path`` when given, opening with :func:`summary_html` (the verdict
    and every tag's score and shift, drifted tags first) above Evidently's per-tag panels.

    The report holds one Evidently ``ValueDrift`` per tag (the configured method and column
    threshold); the drifted count and share are counted from their verdicts, as Evidently's
    ``DriftedColumnsCount`` counts them. ``DataDriftPreset`` gives the same scores, verdicts and
    share but computes every tag's drift three times (for its count, its per-tag metrics and its
    summary table) and builds plotly widgets for each: ~3x slower at 100k + 100k rows. Every row
    is compared: sampling (tried: evenly spaced rows, a fifth of each window) flips tags that score
    near the column threshold.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    missing = sorted(set(columns) - set(reference.columns) | set(columns) - set(current.columns))
    if missing:
        raise ValueError(f"drift columns missing from the data: {missing}")
    ref = reference[list(columns)].apply(_numeric)
    cur = current[list(columns)].apply(_numeric)
    skipped = tuple(c for c in columns if ref[c].notna().sum() == 0 or cur[c].notna().sum() == 0)
    used = [c for c in columns if c not in skipped]
    if skipped:
        log.warning("drift: %d tags have no data in a window and are skipped: %s", len(skipped), skipped)
    if not used:
        raise ValueError("drift: no column has data in both the reference and the current window")

    definition = DataDefinition(numerical_columns=used)
    report = Report(
        [ValueDrift(column=c, method=drift.method, threshold=drift.column_threshold) for c in used],
        # The per-column tests carry Evidently's own drifted/not verdict, whatever the method's
        # direction (distance or p-value).
        include_tests=True,
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur[used], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[used], data_definition=definition),
    )
    scores, verdicts, count, share = _parse_snapshot(snapshot.dict(), used)

    p_value = _is_p_value(scores, verdicts, drift.column_threshold)
    drifted_cols = sorted(
        (c for c in used if verdicts[c]), key=lambda c: scores[c] if p_value else -scores[c]
    )
    shift = _shift_sd(ref[used], cur[used])

    result = DriftResult(
        drift_share=share,
        drifted=share >= drift.share_threshold,
        n_columns=len(used),
        n_drifted=count,
        column_scores=scores,
        drifted_columns=tuple(drifted_cols),
        method=drift.method,
        report_path=None,
        shift_sd=shift,
        column_threshold=drift.column_threshold,
        share_threshold=drift.share_threshold,
        score_is_p_value=p_value,
        skipped_columns=skipped,
        n_reference=len(ref),
        n_current=len(cur),
    )
    if report_path is not None:
        saved = _save_html_atomic(snapshot, Path(report_path), summary_html(result))
        result = dataclasses.replace(result, report_path=str(saved))
    log.info("drift: %s -> %s", result.summary(), "DRIFT" if result.drifted else "no drift")
    return result


def summary_html(result: DriftResult) -> str:
    """The section that opens the drift report: the verdict, then every tag with its score and shift,
    drifted tags first (most drifted first), so nobody scrolls through one panel per tag to find them."""
    esc = html.escape
    verdict = "DRIFT" if result.drifted else "no drift"
    drifted = set(result.drifted_columns)
    others = sorted((c for c in result.column_scores if c not in drifted),
                    key=lambda c: (math.isnan(result.column_scores[c]),
                                   result.column_scores[c] if result.score_is_p_value else -result.column_scores[c]))
    rows = []
    for col in [*result.drifted_columns, *others]:
        score, shift = result.column_scores.get(col, math.nan), result.shift_sd.get(col, math.nan)
        mark = "drifted" if col in drifted else ""
        style = " style='background:#fed7d7'" if mark else ""
        rows.append(f"<tr{style}><td>{esc(col)}</td><td>{mark}</td><td style='text-align:right'>{score:.3f}</td>"
                    f"<td style='text-align:right'>{shift:+.2f}</td></tr>")
    skipped = (f"<p>Skipped (no data in a window): {esc(', '.join(result.skipped_columns))}</p>"
               if result.skipped_columns else "")
    direction = "p-value: lower is more drift" if result.score_is_p_value else "distance: higher is more drift"
    return (
        '<section id="plantops-summary" style="font:14px/1.4 sans-serif;margin:16px;padding:12px;'
        'border:1px solid #cbd5e0;background:#fff">'
        f"<h2 style='margin-top:0'>Drift summary: {verdict}</h2>"
        f"<p><b>{result.n_drifted} of {result.n_columns} tags drifted ({result.drift_share:.0%})</b>; the verdict "
        f"needs {result.share_threshold:.0%}. Method {esc(result.method)} ({direction}), column threshold "
        f"{result.column_threshold:g}; {result.n_reference} reference rows, {result.n_current} current rows. "
        "Shift: the change of the tag's mean in reference standard deviations.</p>" + skipped
        + '<table style="border-collapse:collapse" border="1" cellpadding="3"><tr><th>tag</th><th>verdict</th>'
        "<th>score</th><th>shift (sd)</th></tr>" + "".join(rows) + "</table>"
        "<p>Evidently's panel for each tag follows.</p></section>"
    )


def _inject_summary(document: str, summary: str) -> str:
    """``summary`` right after the report's opening body tag (at the top if it has none)."""
    opening = re.search(r"<body[^>]*>", document, flags=re.IGNORECASE)
    if opening is None:
        return summary + document
    return document[:opening.end()] + summary + document[opening.end():]


def _numeric(series: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").astype("float64")


def _parse_snapshot(
    data: dict[str, Any], columns: Sequence[str]
) -> tuple[dict[str, float], dict[str, bool], int, float]:
    """Scores, per-column verdicts, drifted count and share from ``Snapshot.dict()``.

    The count and share come from a ``DriftedColumnsCount`` metric when the report has one (as
    ``DataDriftPreset`` reports do), else from the per-column verdicts over ``columns``: the
    number of drifted columns and that number over all of them, as ``DriftedColumnsCount``
    computes it.
    """
    scores: dict[str, float] = {}
    count: int | None = None
    share: float | None = None
    for metric in data["metrics"]:
        params = metric.get("config", {})
        kind = params.get("type", "")
        if kind.endswith(":ValueDrift"):
            scores[params["column"]] = float(metric["value"])
        elif kind.endswith(":DriftedColumnsCount"):
            count = int(metric["value"]["count"])
            share = float(metric["value"]["share"])
    verdicts: dict[str, bool] = {}
    for test in data["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift"):
            verdicts[params["column"]] = _status(test["status"]) == "FAIL"
    absent = [c for c in columns if c not in scores or c not in verdicts]
    if absent or not columns:
        raise RuntimeError(f"unexpected Evidently result: no drift score/verdict for {absent or 'any column'}")
    if count is None or share is None:
        count = sum(verdicts[c] for c in columns)
        share = count / len(columns)
    return scores, verdicts, count, share


def _status(status: Any) -> str:
    return str(getattr(status, "value", status)).upper()


def _is_p_value(scores: dict[str, float], verdicts: dict[str, bool], threshold: float) -> bool:
    """Whether low scores mean drift, read off Evidently's own verdicts rather than a method list
    (its docstrings call the normed Wasserstein a p-value; it is a distance)."""
    as_distance = sum(verdicts[c] == (scores[c] >= threshold) for c in scores)
    as_p_value = sum(verdicts[c] == (scores[c] < threshold) for c in scores)
    return as_p_value > as_distance


def _shift_sd(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for col in ref.columns:
        # ddof=0 matches Evidently's np.std normalisation of the Wasserstein distance.
        std = max(float(ref[col].std(ddof=0)), _STD_FLOOR)
        out[col] = (float(cur[col].mean()) - float(ref[col].mean())) / std
    return out


def _save_html_atomic(snapshot: Any, path: Path, summary: str | None = None) -> Path:
    """Write the report (opening with ``summary`` when given) beside its final name, then rename: a
    reader never sees half a file."""
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # save_html ignores Path objects silently (it only writes when given a str).
        snapshot.save_html(str(tmp))
        if not tmp.exists():
            raise RuntimeError(f"Evidently did not write the report to {tmp}")
        if summary:
            tmp.write_text(_inject_summary(tmp.read_text(encoding="utf-8"), summary), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("drift report written to %s", path)
    return path


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _as_utc(ts: datetime) -> datetime:
    """Naive datetimes are taken as UTC (historian and SQLite hand them back without a zone)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlantEvent:
    """An operator intervention on the plant, as recorded by operations (e-logbook, MES, UI)."""

    kind: str
    ts: datetime
    asset: str
    description: str
    author: str

    def __post_init__(self) -> None:
        if not self.kind or not self.kind.replace("_", "").isalnum():
            raise ValueError(
                f"plant event kind must be a word such as {PLANT_EVENT_KINDS}, got {self.kind!r}"
            )
        object.__setattr__(self, "ts", _as_utc(self.ts))

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ts": self.ts.isoformat(),
            "asset": self.asset,
            "description": self.description,
            "author": self.author,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PlantEvent:
        ts = record["ts"]
        return cls(
            kind=record["kind"],
            ts=datetime.fromisoformat(ts) if isinstance(ts, str) else ts,
            asset=record["asset"],
            description=record.get("description", ""),
            author=record.get("author", ""),
        )


@dataclass(frozen=True)
class Signal:
    """One reason to act: which check fired, how badly, and what the policy asks for."""

    name: str  # the rule: upset | persistent_upset | false_alarms | performance | unexplained_drift | ...
    level: str  # mild | severe
    action: str  # none | notify | retrain | approval
    detail: str

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "action": self.action, "detail": self.detail}


@dataclass(frozen=True)
class PerformanceCheck:
    """The champion against delayed labels (lab results, confirmed faults) in the lookback."""

    n_labelled: int
    detection_rate: float | None  # alarms on fault-labelled rows
    far: float | None  # alarms on normal-labelled rows
    expected_detection_rate: float | None  # the champion's held-out detection rate at training


@dataclass(frozen=True)
class Confirmation:
    """What people said about the window itself: alarms inside periods labelled normal (false-alarm
    feedback, lab results) and whether a fault was confirmed in it (lab label, feedback)."""

    false_alarms: int = 0
    confirmed_fault: str | None = None  # the label that confirmed it, e.g. fault_feedback
    by: tuple[str, ...] = ()  # sources of the normal labels (feedback, lab)


@dataclass(frozen=True)
class RetrainHistory:
    """What the guardrails and the upset rules need, in plant time (the monitored windows)."""

    last_request: datetime | None = None  # window start of the last retrain request
    pending: bool = False  # a retrain was requested and no training has finished since
    recent_requests: int = 0  # retrain requests within the guardrail period before this window
    upset_since: datetime | None = None  # start of the run of upset windows that ends at this one


@dataclass(frozen=True)
class Decision:
    """What the monitor decided and why, with the evidence it decided on."""

    branch: Branch
    reason: str
    drift: DriftResult
    events: tuple[PlantEvent, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    signals: tuple[Signal, ...] = ()
    guardrail: str | None = None  # the guardrail that changed the outcome, if any
    rule: str | None = None  # the rule whose action was taken (a signal name, or plant_change)

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict: the payload of the decision store row."""
        return {
            "branch": self.branch,
            "reason": self.reason,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "drift": self.drift.to_record(),
            "plant_events": [e.to_record() for e in self.events],
            "signals": [sig.to_record() for sig in self.signals],
            "guardrail": self.guardrail,
            "rule": self.rule,
        }


def events_in_window(
    events: Iterable[PlantEvent],
    window_start: datetime,
    window_end: datetime,
    asset: str | None = None,
    lookback: timedelta = timedelta(0),
) -> list[PlantEvent]:
    """Events on ``asset`` (all assets when None) from ``window_start - lookback`` to ``window_end``.

    The lookback reaches before the window because a change made shortly before it moves the data
    inside it (the process takes hours to settle).
    """
    start = _as_utc(window_start) - lookback
    end = _as_utc(window_end)
    hits = [e for e in events if start <= e.ts <= end and (asset is None or e.asset == asset)]
    return sorted(hits, key=lambda e: e.ts)


_RANK = {"none": 0, "notify": 1, "retrain": 2, "approval": 3}


def signals_of(
    drift: DriftResult,
    policy: Policy,
    alarm_rate: float | None = None,
    performance: PerformanceCheck | None = None,
    rejected_share: float | None = None,
    confirmation: Confirmation | None = None,
    upset_for: timedelta | None = None,
) -> list[Signal]:
    """Every rule that fired, each with the action the use case's policy assigns to it.

    ``upset_for``: how long the plant has been upset up to the end of this window, were this window
    an upset too (None: no earlier upset window adjoins it).
    """
    from plantops.config import parse_duration

    rules, out = policy.rules, []
    confirmation = confirmation or Confirmation()
    alarming = alarm_rate is not None and alarm_rate > policy.upset.max_alarm_rate
    single = not drift.score_is_p_value and drift.max_score >= policy.levels.single_tag_score
    if (drift.drifted or single) and not alarming:
        detail = drift.summary()
        if single and not drift.drifted:
            detail += f"; one tag alone moved past {policy.levels.single_tag_score:g}"
        rate = "no predictions" if alarm_rate is None else f"alarm rate {alarm_rate:.0%}"
        # Where the policy acts on it, drift the champion misses means a stale model; where it does
        # not (wind: the weather moves the drivers every day), it is only reported, and saying the
        # model "no longer sees the plant" on every ok day would cry wolf.
        verdict = ("it no longer sees the plant" if rules.unexplained_drift != "none" else
                   "reported only: this use case's policy takes no action on unexplained drift "
                   "(rules.unexplained_drift: none)")
        out.append(Signal("unexplained_drift", "severe", rules.unexplained_drift,
                          f"{detail}; the champion does not alarm on it ({rate}): {verdict}"))
    elif not (drift.drifted or single) and drift.drift_share >= policy.levels.mild_share:
        out.append(Signal("mild_drift", "mild", rules.mild_drift, drift.summary()))
    if confirmation.false_alarms >= policy.upset.min_false_alarms:
        out.append(Signal("false_alarms", "severe", rules.false_alarms,
                          f"{confirmation.false_alarms} alarms in periods labelled normal "
                          f"(by {', '.join(confirmation.by) or 'labels'}): the champion is stale"))
    elif alarming:
        detail = f"alarm rate {alarm_rate:.0%} > {policy.upset.max_alarm_rate:.0%}"
        if drift.drifted or single:
            detail += f"; {drift.summary()}"
        persist = parse_duration(policy.upset.persist)
        if confirmation.confirmed_fault:
            out.append(Signal("upset", "severe", rules.upset,
                              f"{detail}; confirmed as {confirmation.confirmed_fault}"))
        elif upset_for is not None and upset_for > persist:
            out.append(Signal("persistent_upset", "severe", rules.persistent_upset,
                              f"{detail}; upset for {_hours(upset_for)} (> {policy.upset.persist}) without a "
                              "confirmed fault: is this the plant's new normal?"))
        else:
            out.append(Signal("upset", "severe", rules.upset, detail))
    perf = policy.performance
    if performance is not None and performance.n_labelled >= perf.min_labelled_rows:
        problems = []
        if (performance.detection_rate is not None and performance.expected_detection_rate is not None
                and performance.expected_detection_rate - performance.detection_rate > perf.max_detection_drop):
            problems.append(f"detection rate {performance.detection_rate:.0%} on labelled faults, "
                            f"{performance.expected_detection_rate:.0%} expected")
        if performance.far is not None and performance.far > perf.max_far:
            problems.append(f"false-alarm rate {performance.far:.0%} on labelled normal rows > {perf.max_far:.0%}")
        if problems:
            out.append(Signal("performance", "severe", rules.performance,
                              f"{'; '.join(problems)} ({performance.n_labelled} labelled rows)"))
    if rejected_share is not None and rejected_share > policy.quality.max_rejected_share:
        out.append(Signal("quality", "severe", rules.quality,
                          f"{rejected_share:.1%} of rows rejected by the GX gates "
                          f"> {policy.quality.max_rejected_share:.0%}"))
    return out


def _hours(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:g}d" if hours >= 24 and hours % 24 == 0 else f"{hours:g}h"


def decide(
    drift: DriftResult,
    plant_events: list[PlantEvent],
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    asset: str | None = None,
    lookback: timedelta = timedelta(0),
    *,
    policy: Policy | None = None,
    alarm_rate: float | None = None,
    performance: PerformanceCheck | None = None,
    rejected_share: float | None = None,
    history: RetrainHistory | None = None,
    confirmation: Confirmation | None = None,
) -> Decision:
    """ok | upset | retrain | approval from the monitor's signals, what people confirmed, the
    operators' plant events and the retrain history.

    The strongest action any rule asks for wins (none < notify < retrain < approval). An upset or a
    retrain becomes the ``plant_change`` rule's action (an approval) when an operator changed the
    plant in the window: automatic retraining would learn the new plant state blindly, and alarms
    after a change may be its new normal. Guardrails on automatic retraining: no second request
    while one is pending, none within the cooldown after the last one, and past the cap per period
    a person decides. Without a window every given event counts (the caller already selected them).
    """
    from plantops.config import Policy, parse_duration

    policy = policy or Policy()
    history = history or RetrainHistory()
    if window_start is not None and window_end is not None:
        events = events_in_window(plant_events, window_start, window_end, asset, lookback)
    else:
        events = sorted((e for e in plant_events if asset is None or e.asset == asset), key=lambda e: e.ts)
    bounds = {
        "window_start": _as_utc(window_start) if window_start else None,
        "window_end": _as_utc(window_end) if window_end else None,
    }
    upset_for = None
    if history.upset_since is not None and bounds["window_end"] is not None:
        upset_for = bounds["window_end"] - _as_utc(history.upset_since)
    signals = tuple(signals_of(drift, policy, alarm_rate, performance, rejected_share, confirmation, upset_for))
    action = max((sig.action for sig in signals), key=_RANK.__getitem__, default="none")
    fired = "; ".join(f"{sig.name}: {sig.detail}" for sig in signals)

    rule = next((sig.name for sig in signals if sig.action == action), None)

    def done(branch_action: str, reason: str, guardrail: str | None = None) -> Decision:
        return Decision(BRANCH_OF[branch_action], reason, drift, tuple(events), signals=signals,
                        guardrail=guardrail, rule=rule, **bounds)

    if action == "none":
        reason = f"no action: {fired}." if signals else f"no drift: {drift.summary()}."
        if events:
            reason += f" {len(events)} plant event(s) in the window did not move the data enough to matter."
        return done("none", reason)
    if events and action in ("notify", "retrain"):
        listed = "; ".join(
            f"{e.kind} on {e.asset} at {e.ts:%Y-%m-%d %H:%M}Z by {e.author}: {e.description}" for e in events
        )
        change = (f"{fired}. An operator changed the plant in the window ({listed}): the alarms may be its new "
                  "normal, and automatic retraining would learn the new state blindly")
        action, rule = policy.rules.plant_change, "plant_change"
        if action == "approval":
            return done("approval", f"{change}: a process engineer must decide.")
        if action == "none":
            return done("none", f"{change}; the policy takes no action on plant changes.")
        fired = change
    if action == "approval":
        return done("approval", f"{fired}. The policy asks a process engineer to decide.")
    if action == "notify":
        return done("notify", f"{fired}. The champion detects it, as it was trained to: operators are "
                              "told and nothing is retrained (an upset is not a new normal).")
    guard = policy.guardrails
    if history.pending:
        return done("none", f"{fired}. A retrain is already pending; not requesting another.", "pending")
    start = bounds["window_start"]
    cooldown = parse_duration(guard.cooldown)
    if history.last_request is not None and start is not None and start - _as_utc(history.last_request) < cooldown:
        return done("none", f"{fired}. Cooldown: the last retrain was requested for the window of "
                            f"{_as_utc(history.last_request):%Y-%m-%d %H:%M}Z, less than {guard.cooldown} ago.",
                    "cooldown")
    if history.recent_requests >= guard.max_retrains:
        return done("approval", f"{fired}. {history.recent_requests} retrains within {guard.period}: "
                                f"the cap ({guard.max_retrains}) is reached, a process engineer decides.", "cap")
    return done("retrain", f"stale model: {fired}. No operator changed the plant in the window, so the process "
                           "itself moved away from what the champion learned: retrain on recent data.")
