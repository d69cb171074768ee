"""What the monitor DAG does with each asset's decision: the train runs it requests, the approval
tasks it opens, and what it records and triggers for each engineer's answer (per asset in a fleet)."""

from __future__ import annotations

from plantops.stages import decisions
from plantops.stages.pipeline import approval_requests, approved_trainings, retrain_requests

FLEET = "wind_fleet"


def _assessment(asset: str, branch: str, **extra) -> dict:
    return {"asset": asset, "branch": branch, "day": "2014-06-16", "reason": f"{branch} because",
            "approval_body": f"body of {asset}", "plant_events": [], **extra}


def test_a_retrain_is_requested_for_exactly_the_assets_that_need_one():
    assessed = [_assessment("R80711", "ok"), _assessment("R80736", "retrain"), _assessment("R80790", "approval")]
    (request,) = retrain_requests(FLEET, "manual__1", assessed)
    assert request["trigger_run_id"] == "retrain__manual__1__R80736"
    assert request["conf"]["asset"] == "R80736" and request["conf"]["monitor_run_id"] == "manual__1"
    # A one-asset use case keeps its run ids and conf without an asset.
    (single,) = retrain_requests("tep_reactor", "manual__2", [_assessment("tep_reactor", "retrain")])
    assert single["trigger_run_id"] == "retrain__manual__2" and "asset" not in single["conf"]


def test_each_approval_names_its_asset_day_and_question():
    assessed = [_assessment("R80711", "approval", rule="plant_change"), _assessment("R80736", "ok"),
                _assessment("R80790", "approval", rule="persistent_upset"),
                _assessment("R80721", "approval", rule="unexplained_drift", guardrail="cap")]
    changed, lasting, capped = approval_requests(FLEET, assessed)
    assert changed == {"subject": "wind_fleet / R80711, 2014-06-16: retrain after a plant change?",
                       "body": "body of R80711"}
    assert lasting["subject"] == "wind_fleet / R80790, 2014-06-16: a lasting upset: the new normal?"
    assert capped["subject"] == "wind_fleet / R80721, 2014-06-16: another retrain past the cap?"


def test_an_upset_alerts_the_operators_of_that_asset_only():
    from plantops.stages.pipeline import upset_alerts

    assessed = [_assessment("R80711", "ok"),
                _assessment("R80736", "upset", alarm_rate=0.62, report_url="http://x/report.html",
                            alarm_tags=[{"tag": "P_avg", "alarms": 80}])]
    (alert,) = upset_alerts(FLEET, "manual__3", assessed)
    assert alert["asset"] == "R80736" and alert["subject"] == ("wind_fleet / R80736, 2014-06-16: upset, the model "
                                                               "alarms on 62% of the window")
    assert "P_avg (80 alarms)" in alert["body"] and "http://x/report.html" in alert["body"]
    assert alert["link"].endswith("/dags/wind_fleet__monitor/runs/manual__3")


def test_answers_are_recorded_per_asset_and_only_approvals_train(plantops_home):
    event = {"ts": "2014-06-16T00:00:00+00:00", "kind": "maintenance"}
    asked = [_assessment("R80711", "approval", plant_events=[event]), _assessment("R80721", "approval"),
             _assessment("R80736", "approval"), _assessment("R80790", "approval")]
    eng = {"id": "eng1", "name": "eng1"}
    answers = [
        {"chosen_options": ["Retrain from a new reference window"], "params_input": {"reason": "new pitch"},
         "responded_by_user": eng},
        {"chosen_options": ["Refuse: model still valid"], "params_input": {}, "responded_by_user": eng},
        {"chosen_options": ["Refuse: model still valid"], "params_input": {}, "responded_by_user": None},
        {"chosen_options": ["Retrain now"], "params_input": {"reason": "blade cleaned"}, "responded_by_user": eng},
    ]
    triggers = approved_trainings(FLEET, "manual__3", asked, answers)
    assert [t["trigger_run_id"] for t in triggers] == ["reference__manual__3__R80711", "approved__manual__3__R80790"]
    # An empty reference start defaults to the plant event that sent the asset to approval.
    assert triggers[0]["conf"]["reference_start"] == event["ts"] and triggers[0]["conf"]["asset"] == "R80711"
    assert triggers[1]["conf"] == {"monitor_run_id": "manual__3", "approved_by": "eng1", "asset": "R80790",
                                   "approval_reason": "blade cleaned",
                                   "reason": "approved by a process engineer in manual__3"}
    stored = {r["asset"]: r for r in decisions.for_run(FLEET, "manual__3")}
    assert {a: r["branch"] for a, r in stored.items()} == {
        "R80711": "retrain_new_reference", "R80721": "refused", "R80736": "timed_out", "R80790": "retrain_now"}
    assert stored["R80721"]["reason"] == "refused by eng1 (no reason given)"


def test_the_approval_body_shows_numbers_or_says_why_there_are_none():
    from plantops.stages.monitoring import DriftResult
    from plantops.config import get_use_case
    from plantops.stages.pipeline import approval_body

    drift = DriftResult(drift_share=0.6, drifted=True, n_columns=2, n_drifted=1, column_scores={"XMV_4": 7.9},
                        drifted_columns=("XMV_4",), method="wasserstein", report_path=None, shift_sd={"XMV_4": 7.9})
    record = {"asset": None, "day": "2026-03-28", "reason": "plant change", "drift_share": 0.6,
              "thresholds": {"share_threshold": 0.3, "method": "wasserstein"}, "plant_events": [], "alarm_tags": [],
              "feedback": [], "champion_version": "2", "alarm_rate": 0.74, "report_url": "http://x/r.html",
              "performance": None}
    body = approval_body(get_use_case("tep_reactor"), record, drift)
    assert "alarm rate in the window: 74%" in body and "None" not in body
    # who may answer comes first: the form does not tell a non-assigned user before submit
    assert body.splitlines()[0] == ("> **Answered only by the assigned process engineers: Process engineer (demo) "
                                    "(`eng1`).** Anyone else is refused when submitting.")
    assert "not applicable (no lab results or feedback labels" in body
    labelled = {**record, "performance": {"n_labelled": 480, "detection_rate": None, "far": 0.43,
                                          "expected_detection_rate": 0.85}}
    body = approval_body(get_use_case("tep_reactor"), labelled, drift)
    assert "on 480 labelled rows: detection n/a (no fault-labelled rows), false alarms 43%" in body
    assert "None" not in body
