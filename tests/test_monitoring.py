"""Drift on real TEP windows through Evidently, the ok/upset/retrain/approval policy, the decision store."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops.stages import decisions
from plantops.config import Drift, get_use_case
from plantops.features import base_columns
from plantops.stages.monitoring import (
    Confirmation,
    DriftResult,
    PerformanceCheck,
    PlantEvent,
    RetrainHistory,
    compute_drift,
    decide,
)
from plantops.sources.tep import FAULT_ONSET_TEST, FAULT_ROOT_TAGS, TAGS, load_run

COLUMNS = base_columns(TAGS)
# Calibrated on TEP (see the monitoring module docstring): a normal day stays at <= 15 % drifted
# tags, strong faults reach >= 54 %. The 0.1 column threshold flags a normal day (56 %).
CALIBRATED = get_use_case("tep_reactor").monitoring.drift
assert CALIBRATED == Drift(method="wasserstein", column_threshold=0.5, share_threshold=0.3)
DAY = 480  # 3-minute samples


def _frame(values: np.ndarray) -> pd.DataFrame:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame = pd.DataFrame(values, columns=list(TAGS))
    frame.insert(0, "ts", pd.date_range(start, periods=len(values), freq="3min"))
    frame.insert(0, "asset", "tep_reactor")
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """Normal operation: the training run and the first half of the normal test run."""
    return _frame(np.vstack([load_run(0, test=False), load_run(0, test=True)[:DAY]]))


@pytest.fixture(scope="module")
def normal_drift(reference: pd.DataFrame) -> DriftResult:
    """A held-out normal day (second half of the normal test run)."""
    return compute_drift(reference, _frame(load_run(0, test=True)[DAY:]), COLUMNS, CALIBRATED, None)


@pytest.fixture(scope="module")
def fault_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports") / "tep_reactor" / "2024-01-02" / "drift.html"


@pytest.fixture(scope="module")
def fault_drift(reference: pd.DataFrame, fault_report: Path) -> DriftResult:
    """Fault 1 (A/C feed ratio step): a day whose fault starts at sample 160."""
    assert FAULT_ONSET_TEST < DAY
    return compute_drift(reference, _frame(load_run(1, test=True)[:DAY]), COLUMNS, CALIBRATED, fault_report)


# --- drift on real data -------------------------------------------------------------------------


def test_normal_day_is_not_drift(normal_drift: DriftResult) -> None:
    assert normal_drift.n_columns == 52
    assert not normal_drift.drifted, normal_drift.summary()
    assert normal_drift.drift_share < CALIBRATED.share_threshold / 2
    assert normal_drift.report_path is None


def test_fault_day_is_drift_and_names_the_moved_tags(fault_drift: DriftResult) -> None:
    assert fault_drift.drifted, fault_drift.summary()
    assert fault_drift.drift_share >= 0.5
    assert fault_drift.n_drifted == len(fault_drift.drifted_columns)
    assert set(FAULT_ROOT_TAGS[1]) <= set(fault_drift.drifted_columns)
    scores = [fault_drift.column_scores[c] for c in fault_drift.drifted_columns]
    assert scores == sorted(scores, reverse=True)
    # Fault 1 raises the A/C ratio: the A feed goes up, the A-and-C feed stream comes down.
    assert fault_drift.shift_sd["XMEAS_1"] > 3
    assert fault_drift.shift_sd["XMEAS_4"] < -3
    assert "XMEAS_1" in fault_drift.summary()


def test_fault_report_is_written_atomically_with_the_tags(
    fault_drift: DriftResult, fault_report: Path
) -> None:
    assert fault_drift.report_path == str(fault_report.resolve())
    html = fault_report.read_text(encoding="utf-8")
    assert "XMEAS_1" in html and "XMV_11" in html
    assert [p.name for p in fault_report.parent.iterdir()] == ["drift.html"]  # no temp file left


def test_drift_record_is_strict_json(fault_drift: DriftResult) -> None:
    record = json.loads(json.dumps(fault_drift.to_record(), allow_nan=False))
    assert record["drifted"] is True
    assert record["share_threshold"] == CALIBRATED.share_threshold
    assert len(record["column_scores"]) == 52


def test_empty_tag_is_skipped_not_fatal_and_p_value_methods_sort_ascending(reference: pd.DataFrame) -> None:
    cols = ["XMEAS_1", "XMEAS_4", "XMEAS_9", "XMEAS_23"]
    current = _frame(load_run(1, test=True)[:DAY])
    current["XMEAS_23"] = np.nan  # analyzer feed down for the day
    result = compute_drift(reference, current, cols, Drift(method="ks", column_threshold=0.05), None)
    assert result.skipped_columns == ("XMEAS_23",)
    assert result.n_columns == 3
    assert result.score_is_p_value
    scores = [result.column_scores[c] for c in result.drifted_columns]
    assert scores == sorted(scores)
    with pytest.raises(ValueError, match="XMEAS_99"):
        compute_drift(reference, current, [*cols, "XMEAS_99"], CALIBRATED, None)


def _preset_drift(reference: pd.DataFrame, current: pd.DataFrame, drift: Drift) -> dict:
    """The computation before issue #6: Evidently's DataDriftPreset over every row, as the oracle."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from plantops.stages.monitoring import _parse_snapshot

    definition = DataDefinition(numerical_columns=COLUMNS)
    preset = DataDriftPreset(columns=COLUMNS, method=drift.method, threshold=drift.column_threshold,
                             drift_share=drift.share_threshold)
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(current[COLUMNS], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[COLUMNS], data_definition=definition),
    )
    scores, verdicts, count, share = _parse_snapshot(snapshot.dict(), COLUMNS)
    return {"scores": scores, "drifted": {c for c in COLUMNS if verdicts[c]}, "count": count, "share": share}


@pytest.mark.parametrize("fault", [1, 4])
def test_per_tag_metrics_decide_exactly_as_the_drift_preset(reference: pd.DataFrame, fault: int) -> None:
    """Issue #6 replaced DataDriftPreset by one ValueDrift per tag: same scores, tags and share."""
    current = _frame(load_run(fault, test=True)[:DAY])
    want = _preset_drift(reference, current, CALIBRATED)
    got = compute_drift(reference, current, COLUMNS, CALIBRATED, None)
    assert set(got.drifted_columns) == want["drifted"]
    assert (got.n_drifted, got.drift_share) == (want["count"], want["share"])
    assert got.drifted == (want["share"] >= CALIBRATED.share_threshold)
    assert got.column_scores == pytest.approx(want["scores"], rel=1e-12, abs=0)
    if fault == 1:
        assert got.drifted and want["share"] >= 0.5


# --- policy -------------------------------------------------------------------------------------

WINDOW_START = datetime(2024, 1, 2, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(days=1)


def _drift(drifted: bool, share: float | None = None, top: float | None = None) -> DriftResult:
    share = share if share is not None else (0.62 if drifted else 0.06)
    top = top if top is not None else (12.0 if drifted else 0.4)
    return DriftResult(
        drift_share=share,
        drifted=drifted,
        n_columns=52,
        n_drifted=round(share * 52),
        column_scores={"XMEAS_1": top, "XMEAS_9": math.nan},
        drifted_columns=("XMEAS_1",) if drifted else (),
        method="wasserstein",
        report_path=None,
        shift_sd={"XMEAS_1": 12.0},
        column_threshold=0.5,
        share_threshold=0.3,
    )


def _event(hours_after_start: float, asset: str = "tep_reactor") -> PlantEvent:
    return PlantEvent(
        kind="setpoint_change",
        ts=WINDOW_START + timedelta(hours=hours_after_start),
        asset=asset,
        description="reactor pressure setpoint 2705 -> 2650 kPa",
        author="operator.kim",
    )


@pytest.mark.parametrize(
    ("drifted", "events", "lookback_h", "branch"),
    [
        (False, [], 0, "ok"),
        (False, [_event(3)], 0, "ok"),
        (True, [], 0, "retrain"),
        (True, [_event(-30)], 0, "retrain"),  # the day before, outside the lookback
        (True, [_event(30)], 0, "retrain"),  # after the window
        (True, [_event(3, asset="other_unit")], 0, "retrain"),  # another asset
        (True, [_event(3)], 0, "approval"),
        (True, [_event(-5)], 6, "approval"),  # just before the window, within the lookback
    ],
)
def test_policy_branches(drifted: bool, events: list[PlantEvent], lookback_h: int, branch: str) -> None:
    decision = decide(
        _drift(drifted),
        events,
        WINDOW_START,
        WINDOW_END,
        asset="tep_reactor",
        lookback=timedelta(hours=lookback_h),
    )
    assert decision.branch == branch
    record = json.loads(json.dumps(decision.to_record(), allow_nan=False))
    assert record["branch"] == branch and record["reason"] == decision.reason
    if branch != "ok":
        assert len(record["plant_events"]) == (1 if branch == "approval" else 0)


def test_policy_reasons_explain_the_decision() -> None:
    assert decide(_drift(False), []).reason.startswith("no drift")
    retrain = decide(_drift(True), []).reason
    assert "XMEAS_1 +12.0 sd" in retrain and "retrain" in retrain
    approval = decide(_drift(True), [_event(3)], WINDOW_START, WINDOW_END).reason
    assert "operator.kim" in approval and "setpoint_change" in approval and "blindly" in approval


POLICY = get_use_case("tep_reactor").monitoring.policy
DAY_BEFORE = WINDOW_START - timedelta(days=1)
FIVE_DAYS_BEFORE = WINDOW_START - timedelta(days=5)


UPSET_SINCE_YESTERDAY = RetrainHistory(upset_since=DAY_BEFORE)
UPSET_FOR_TWO_DAYS = RetrainHistory(upset_since=DAY_BEFORE - timedelta(days=1))
FEEDBACK = Confirmation(false_alarms=300, by=("feedback",))


# One row per rule of the policy (docs/monitoring-policy.md): the inputs, the branch, the rule
# whose action was taken, the guardrail that changed it, and every rule that fired.
@pytest.mark.parametrize(
    ("case", "inputs", "branch", "rule", "guardrail", "signals"),
    [
        ("no drift", {"drift": _drift(False)}, "ok", None, None, []),
        ("mild drift", {"drift": _drift(False, share=0.2)}, "ok", "mild_drift", None, ["mild_drift"]),
        # Upset: the champion alarms on what it was trained to detect.
        ("the champion alarms on a drifted day", {"drift": _drift(True), "alarm_rate": 0.7}, "upset", "upset", None,
         ["upset"]),
        ("the champion alarms, no drift", {"drift": _drift(False), "alarm_rate": 0.6}, "upset", "upset", None,
         ["upset"]),
        ("alarms at the false-alarm budget are no upset", {"drift": _drift(False), "alarm_rate": 0.05}, "ok", None,
         None, []),
        ("upset since yesterday", {"drift": _drift(True), "alarm_rate": 0.7, "history": UPSET_SINCE_YESTERDAY},
         "upset", "upset", None, ["upset"]),
        ("upset for a third day: a new normal?",
         {"drift": _drift(True), "alarm_rate": 0.7, "history": UPSET_FOR_TWO_DAYS},
         "approval", "persistent_upset", None, ["persistent_upset"]),
        ("a confirmed fault stays an upset however long",
         {"drift": _drift(True), "alarm_rate": 0.7, "history": UPSET_FOR_TWO_DAYS,
          "confirmation": Confirmation(confirmed_fault="fault_feedback")},
         "upset", "upset", None, ["upset"]),
        # Staleness: people say the alarms are false, labels show a drop, or the model is blind.
        ("alarms people labelled false", {"drift": _drift(True), "alarm_rate": 0.7, "confirmation": FEEDBACK},
         "retrain", "false_alarms", None, ["false_alarms"]),
        ("a few alarms labelled false are the budget",
         {"drift": _drift(False), "alarm_rate": 0.7, "confirmation": Confirmation(false_alarms=3, by=("lab",))},
         "upset", "upset", None, ["upset"]),
        ("drift the champion does not alarm on", {"drift": _drift(True), "alarm_rate": 0.01}, "retrain",
         "unexplained_drift", None, ["unexplained_drift"]),
        ("one loop far off, no alarms", {"drift": _drift(False, share=0.04, top=4.7), "alarm_rate": 0.0},
         "retrain", "unexplained_drift", None, ["unexplained_drift"]),
        ("late labels, performance drop, no data drift",
         {"drift": _drift(False), "performance": PerformanceCheck(120, 0.35, 0.01, 0.78)},
         "retrain", "performance", None, ["performance"]),
        ("late labels, too few to judge",
         {"drift": _drift(False), "performance": PerformanceCheck(10, 0.0, 0.5, 0.78)}, "ok", None, None, []),
        ("late labels, false alarms", {"drift": _drift(False), "performance": PerformanceCheck(200, None, 0.2, None)},
         "retrain", "performance", None, ["performance"]),
        # Plant change: any upset or retrain while an operator changed the plant.
        ("drift with a plant event", {"drift": _drift(True), "events": [_event(3)]}, "approval", "plant_change",
         None, ["unexplained_drift"]),
        ("an upset during a plant change", {"drift": _drift(True), "alarm_rate": 0.7, "events": [_event(3)]},
         "approval", "plant_change", None, ["upset"]),
        ("false alarms during a plant change", {"drift": _drift(True), "alarm_rate": 0.7, "events": [_event(3)],
                                               "confirmation": FEEDBACK},
         "approval", "plant_change", None, ["false_alarms"]),
        ("a plant event that moved nothing", {"drift": _drift(False), "events": [_event(3)]}, "ok", None, None, []),
        # Guardrails on automatic retraining.
        ("cooldown active", {"drift": _drift(True), "history": RetrainHistory(last_request=DAY_BEFORE)},
         "ok", "unexplained_drift", "cooldown", ["unexplained_drift"]),
        ("cooldown over", {"drift": _drift(True), "history": RetrainHistory(last_request=FIVE_DAYS_BEFORE)},
         "retrain", "unexplained_drift", None, ["unexplained_drift"]),
        ("a retrain is pending", {"drift": _drift(True), "history": RetrainHistory(pending=True)},
         "ok", "unexplained_drift", "pending", ["unexplained_drift"]),
        ("retrain cap reached", {"drift": _drift(True), "history": RetrainHistory(recent_requests=3)},
         "approval", "unexplained_drift", "cap", ["unexplained_drift"]),
        ("bad sensor data", {"drift": _drift(True), "rejected_share": 0.2}, "approval", "quality", None,
         ["unexplained_drift", "quality"]),
    ],
)
def test_policy_table(case, inputs, branch, rule, guardrail, signals) -> None:
    decision = decide(
        inputs["drift"], inputs.get("events", []), WINDOW_START, WINDOW_END, asset="tep_reactor",
        policy=POLICY, alarm_rate=inputs.get("alarm_rate"), performance=inputs.get("performance"),
        rejected_share=inputs.get("rejected_share"), history=inputs.get("history"),
        confirmation=inputs.get("confirmation"),
    )
    assert decision.branch == branch, (case, decision.reason)
    assert decision.rule == rule, (case, decision.reason)
    assert decision.guardrail == guardrail, case
    assert [s.name for s in decision.signals] == signals, case
    assert json.loads(json.dumps(decision.to_record(), allow_nan=False))["rule"] == rule


def test_every_rule_action_comes_from_the_yaml() -> None:
    """A site that wants upsets retrained (or plant changes only notified) says so in its YAML."""
    rules = POLICY.rules.model_copy(update={"upset": "retrain", "plant_change": "notify"})
    policy = POLICY.model_copy(update={"rules": rules})
    inputs = {"policy": policy, "alarm_rate": 0.7}
    assert decide(_drift(True), [], WINDOW_START, WINDOW_END, **inputs).branch == "retrain"
    changed = decide(_drift(True), [_event(3)], WINDOW_START, WINDOW_END, **inputs)
    assert (changed.branch, changed.rule) == ("upset", "plant_change")
    assert "operator.kim" in changed.reason


def test_an_ok_day_of_drift_the_policy_ignores_says_so_not_that_the_model_is_stale() -> None:
    """wind_fleet's weather moves its drivers every day (rules.unexplained_drift: none): its ok
    decisions report the drift without claiming the champion no longer sees the plant."""
    from plantops.config import get_use_case

    wind = get_use_case("wind_fleet").monitoring.policy
    ok = decide(_drift(True), [], WINDOW_START, WINDOW_END, policy=wind, alarm_rate=0.01)
    assert (ok.branch, ok.rule) == ("ok", "unexplained_drift")
    assert "no longer sees the plant" not in ok.reason
    assert "reported only: this use case's policy takes no action on unexplained drift" in ok.reason
    acted = decide(_drift(True), [], WINDOW_START, WINDOW_END, policy=POLICY, alarm_rate=0.01)
    assert acted.branch == "retrain" and "it no longer sees the plant" in acted.reason


def test_plant_event_naive_time_is_utc_and_kind_is_checked() -> None:
    event = PlantEvent("maintenance", datetime(2024, 1, 2, 8), "tep_reactor", "pump swap", "eng1")
    assert event.ts.tzinfo is UTC
    assert PlantEvent.from_record(event.to_record()) == event
    with pytest.raises(ValueError, match="kind"):
        PlantEvent("set point; drop", datetime(2024, 1, 2), "tep_reactor", "", "")


# --- decision store -----------------------------------------------------------------------------


@pytest.fixture
def store(plantops_home: Path):
    yield plantops_home
    decisions.reset_engines()


def test_record_is_idempotent_per_run_and_kind(store: Path) -> None:
    first = decisions.record("tep_reactor", "run_1", "monitor", "retrain", "drift", {"drift_share": 0.6})
    again = decisions.record("tep_reactor", "run_1", "monitor", "approval", "drift + event", {"x": math.nan})
    other = decisions.record("tep_reactor", "run_1", "train", "promote", "better", {})
    assert again == first and other != first
    rows = decisions.for_run("tep_reactor", "run_1")
    assert [(r["kind"], r["branch"]) for r in rows] == [("monitor", "approval"), ("train", "promote")]
    assert rows[0]["payload"] == {"x": None}
    assert rows[0]["created_at"].tzinfo is not None


def test_latest_is_newest_first_filtered_and_durable(store: Path) -> None:
    for i in range(3):
        decisions.record("tep_reactor", f"run_{i}", "monitor", "ok", f"day {i}", {"i": i})
    decisions.record("tep_reactor", "run_1", "approval", "approved", "eng1 approved", {})
    decisions.record("other_case", "run_9", "monitor", "ok", "", {})
    monitor = decisions.latest("tep_reactor", kind="monitor")
    assert [r["dag_run_id"] for r in monitor] == ["run_2", "run_1", "run_0"]
    assert [r["kind"] for r in decisions.latest("tep_reactor", limit=1)] == ["approval"]

    decisions.reset_engines()  # a new process / scheduler restart: only the file remains
    assert (store / "plantops.db").exists()
    rows = decisions.latest("tep_reactor", kind="monitor")
    assert [r["payload"]["i"] for r in rows] == [2, 1, 0]


def test_record_rejects_unknown_kind(store: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        decisions.record("tep_reactor", "run_1", "whatever", "ok", "", {})
