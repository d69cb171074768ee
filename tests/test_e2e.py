"""End to end on the embedded tier: the real DAGs, run with dag.test() against one metadata DB,
an `airflow api-server` for the approvals, real Spark, MLflow, GX and Evidently on TEP data.

The scenario follows `make demo`: history -> first champion -> a normal day (no action) -> a fault
day (automatic retrain) -> a fault during a recorded plant change (approval: refused with a reason,
then a retrain from a new reference window).
"""

from __future__ import annotations

import pytest

from plantops.stages import decisions, registry
from plantops.sources import replay
from plantops.config import get_use_case
from plantops.demo import USE_CASE, Demo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(airflow_db):
    runner = Demo(airflow_db, airflow_db / "e2e.log")
    try:
        runner.start()
        use_case = get_use_case(USE_CASE)
        replay.replay_history(use_case)
        runner.pipeline("2026-03-01T00:00:00+00:00", "2026-03-25T00:00:00+00:00")
        runner.run("train", {"reason": "first model"})
        runner.run("score", {"day": "2026-03-24"})
        yield runner
    finally:
        runner.stop()  # never leave an api-server behind, even when the set-up failed


def test_first_model_becomes_champion_with_both_models_logged(demo):
    import mlflow

    version, run_id = registry.champion(USE_CASE)
    assert version == "1"
    run = mlflow.get_run(run_id)
    assert run.data.metrics["detection_rate"] >= run.data.metrics["baseline_detection_rate"]
    assert {"far", "baseline_far"} <= set(run.data.metrics)
    (train,) = decisions.latest(USE_CASE, kind="train")
    assert train["branch"] == "promoted"


def test_predictions_are_written_back_with_model_version(demo):
    from plantops.sources import historian

    frame = historian.read_predictions(USE_CASE, replay.HISTORY[-1].start, replay.HISTORY[-1].start.replace(day=25))
    assert len(frame) == 480 and set(frame["model_version"]) == {"1"}
    assert frame["alarm"].mean() < 0.1  # a normal day: few alarms


def test_normal_day_takes_no_action(demo):
    assert demo.monitor("2026-03-24") == "no_action"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["branch"] == "ok" and record["payload"]["drift_share"] < 0.3


def test_fault_day_triggers_a_retrain_that_cannot_promote_a_blind_model(demo):
    assert demo.monitor(demo.live(get_use_case(USE_CASE), replay.LIVE["drift"])) == "trigger_retrain"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["branch"] == "retrain" and record["payload"]["drift_share"] >= 0.3
    assert "XMEAS_1" in record["payload"]["drifted_columns"][:5]  # fault 1: A feed
    (queued,) = demo.run_triggered()
    assert queued["conf"]["reason"].startswith("retrain requested by") and "drift" in queued["conf"]["reason"]
    latest_train = decisions.latest(USE_CASE, kind="train")[0]
    # The retrain learned the fault day as normal; the held-out gate keeps the champion.
    assert latest_train["branch"] == "kept_champion"
    assert registry.champion(USE_CASE)[0] == "1"


def test_plant_change_goes_to_approval_and_a_new_reference_window_retrains_from_the_change(demo):
    day = demo.live(get_use_case(USE_CASE), replay.LIVE["plant_change"])
    assert day == "2026-03-26"
    answer = demo.approve(day, "Retrain from a new reference window",
                          {"reason": "setpoint change is permanent", "reference_start": "2026-03-26T07:30:00+00:00"})
    assert answer["unassigned"] == 403 and "not a respondent" in answer["unassigned_message"]
    monitor = decisions.latest(USE_CASE, kind="monitor")[0]
    assert monitor["branch"] == "approval" and monitor["payload"]["plant_events"][0]["kind"] == "setpoint_change"
    approval = decisions.latest(USE_CASE, kind="approval")[0]
    assert approval["branch"] == "retrain_new_reference" and approval["payload"]["responded_by"]["id"] == "eng1"
    (queued,) = demo.run_triggered()
    assert queued["conf"]["reference_start"] == "2026-03-26T07:30:00+00:00"
    assert queued["conf"]["approved_by"] == "eng1"
    train = decisions.latest(USE_CASE, kind="train")[0]
    assert train["payload"]["reference_start"] == "2026-03-26T07:30:00+00:00"
    # who approved and why is on the model version it produced
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version(USE_CASE, train["payload"]["result"]["version"])
    assert version.tags["approved_by"] == "eng1"
    assert version.tags["approval_reason"] == "setpoint change is permanent"


def test_a_refusal_needs_and_keeps_a_reason_and_queues_no_training(demo):
    demo.approve(demo.live(get_use_case(USE_CASE), replay.LIVE["maintenance"]), "Refuse: model still valid",
                 {"reason": "analyzer recalibration transient", "reference_start": ""})
    record = decisions.latest(USE_CASE, kind="approval")[0]
    assert record["branch"] == "refused" and record["reason"] == "analyzer recalibration transient"
    assert record["payload"]["responded_by"]["id"] == "eng1" and record["payload"]["day"] == "2026-03-27"
    assert demo.run_triggered() == []


def test_reports_and_decisions_are_served_to_logged_in_users_only(demo):
    import requests

    record = decisions.latest(USE_CASE, kind="monitor")[0]
    url = record["payload"]["report_url"]
    assert requests.get(url, timeout=10).status_code == 401
    api = demo.api("ops1")
    resp = requests.get(url, headers={"Authorization": f"Bearer {api.token()}"}, timeout=30)
    assert resp.status_code == 200 and "XMEAS_1" in resp.text
    listed = requests.get(f"{api.base_url}/plantops/decisions/{USE_CASE}", timeout=10,
                          headers={"Authorization": f"Bearer {api.token()}"}).json()
    assert listed[0]["kind"] in {"monitor", "approval", "train"}
