"""End to end on the embedded tier: the real DAGs, run with dag.test() against one metadata DB,
an `airflow api-server` for the approvals, real Spark, MLflow, GX and Evidently on TEP data.

The scenario follows `make demo`: history -> first champion -> a normal day (no action) -> a fault
(an upset: operators mailed, no retrain) -> alarms the engineer labels false (a stale model,
retrained and promoted) -> a transient after maintenance (approval, refused) -> a plant change
declared the new normal (approval, retrain from the change, promoted; the alarm rate falls back).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from plantops.stages import decisions, registry
from plantops.sources import replay
from plantops.config import get_use_case
from plantops.demo import USE_CASE, Demo
from plantops.kinds.base import far_limit

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
    assert set(frame["model_name"]) == {get_use_case(USE_CASE).model_name(USE_CASE)}  # the registered model
    assert frame["alarm"].mean() < 0.1  # a normal day: few alarms


def test_normal_day_takes_no_action(demo):
    assert demo.monitor("2026-03-24") == "no_action"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["branch"] == "ok" and record["payload"]["drift_share"] < 0.3


def _mail(demo, event: str) -> list[dict]:
    return [m for m in demo.mails() if m["event"] == event and m["use_case"] == USE_CASE]


def test_a_detected_fault_is_an_upset_operators_are_told_and_nothing_is_retrained(demo):
    assert demo.monitor(demo.live(get_use_case(USE_CASE), replay.LIVE["upset"])) == "alert_operators"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["branch"] == "upset" and record["payload"]["rule"] == "upset"
    assert record["payload"]["alarm_rate"] > 0.2 and "XMEAS_1" in record["payload"]["drifted_columns"][:5]
    assert demo.run_triggered() == []  # no retrain queued
    (mail,) = _mail(demo, "upset")
    assert mail["to"] == "control-room@eastman-demo.example" and "2026-03-25: upset" in mail["subject"]


def test_alarms_labelled_false_make_a_stale_model_that_is_retrained_and_promoted(demo):
    use_case = get_use_case(USE_CASE)
    day = demo.live(use_case, replay.LIVE["stale"])
    # Without the engineer's word the alarms on the hot day would be an upset; with it, staleness.
    demo.feedback(day, "false_alarm", "hot day: cooling water follows the cooling tower; product on spec")
    assert demo.monitor(day) == "trigger_retrain"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["payload"]["rule"] == "false_alarms" and record["payload"]["confirmation"]["by"] == ["feedback"]
    (queued,) = demo.run_triggered()
    train = decisions.latest(USE_CASE, kind="train")[0]
    assert train["branch"] == "promoted" and "no longer valid" in train["reason"], train["reason"]
    assert registry.champion(USE_CASE)[0] == "2"
    # The upset day (fault 1) was kept out of the fit: the new model still alarms on it.
    from plantops.stages.pipeline import suspect_windows

    assert [str(w["start_ts"].date()) for w in suspect_windows(get_use_case(USE_CASE))] == ["2026-03-25"]
    first, mail = _mail(demo, "promotion")  # the first model, then this one
    assert mail["to"] == "mlops@plantops.example" and "v2 is the new champion" in mail["subject"]
    assert "v1 is the new champion" in first["subject"]


def test_a_refusal_needs_and_keeps_a_reason_and_queues_no_training(demo):
    demo.approve(demo.live(get_use_case(USE_CASE), replay.LIVE["maintenance"]), "Refuse: model still valid",
                 {"reason": "analyzer recalibration transient", "reference_start": ""})
    record = decisions.latest(USE_CASE, kind="approval")[0]
    assert record["branch"] == "refused" and record["reason"] == "analyzer recalibration transient"
    assert record["payload"]["responded_by"]["id"] == "eng1" and record["payload"]["day"] == "2026-03-27"
    assert demo.run_triggered() == []


def test_a_declared_new_normal_takes_effect_and_the_alarm_rate_falls_back(demo):
    from plantops.sources import historian

    use_case = get_use_case(USE_CASE)
    day = demo.live(use_case, replay.LIVE["plant_change"])
    assert day == "2026-03-28"
    # The engineer leaves reference_start empty: it defaults to the plant event.
    answer = demo.approve(day, "Retrain from a new reference window",
                          {"reason": "setpoint change is permanent", "reference_start": ""})
    assert answer["unassigned"] == 403 and "not a respondent" in answer["unassigned_message"]
    assert "2026-03-28: retrain after a plant change?" in answer["subject"]
    monitor = decisions.latest(USE_CASE, kind="monitor")[0]
    assert monitor["branch"] == "approval" and monitor["payload"]["rule"] == "plant_change"
    # The lookback (1 day) reaches yesterday's analyzer maintenance too; the newest event is the change.
    assert [e["kind"] for e in monitor["payload"]["plant_events"]] == ["maintenance", "setpoint_change"]
    approval = decisions.latest(USE_CASE, kind="approval")[0]
    assert approval["branch"] == "retrain_new_reference" and approval["payload"]["responded_by"]["id"] == "eng1"
    (queued,) = demo.run_triggered()
    assert queued["conf"]["reference_start"] == "2026-03-28T07:30:00+00:00"
    assert queued["conf"]["approved_by"] == "eng1"
    train = decisions.latest(USE_CASE, kind="train")[0]
    assert train["payload"]["reference_start"] == "2026-03-28T07:30:00+00:00"
    # Judged on today's plant: held-out rows after the change, where the old champion false-alarms.
    assert train["branch"] == "promoted" and "no longer valid" in train["reason"], train["reason"]
    version = registry.configure().get_model_version(USE_CASE, registry.champion(USE_CASE)[0])
    assert str(version.version) == "3" and version.tags["approved_by"] == "eng1"
    assert version.tags["approval_reason"] == "setpoint change is permanent"
    # The next day of the new state alarms at the target rate again. The declared change is behind
    # the champion's reference start, so it sends nothing to approval; the model's short reference
    # (16 hours of the new state) still reads as drift, and the retrain it asks for waits for the
    # cooldown after the approved one.
    assert demo.monitor(demo.live(use_case, replay.LIVE["new_normal"])) == "no_action"
    record = decisions.latest(USE_CASE, kind="monitor")[0]
    assert record["payload"]["plant_events"] == [] and record["payload"]["rule"] != "plant_change"
    assert record["payload"]["champion_reference_start"] == "2026-03-28T07:30:00+00:00"
    rate = historian.read_predictions(use_case.historian.asset, replay.LIVE["new_normal"].start,
                                      replay.LIVE["new_normal"].start + timedelta(days=1))["alarm"].mean()
    assert rate <= far_limit(use_case.model.false_alarm_rate), rate
    asked = _mail(demo, "approval")
    assert [m["to"] for m in asked] == ["eng1@eastman-demo.example"] * 2
    assert ["2026-03-27" in asked[0]["subject"], "2026-03-28" in asked[1]["subject"]] == [True, True], asked
    # The nightly training that follows starts from the declared reference too, not from the old plant.
    demo.run("train", {"reason": "nightly"})
    nightly = decisions.latest(USE_CASE, kind="train")[0]
    assert nightly["payload"]["reference_start"] == "2026-03-28T07:30:00+00:00", nightly["payload"]
    assert nightly["payload"]["reference_inherited"] is True


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
