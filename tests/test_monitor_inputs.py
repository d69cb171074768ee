"""The monitor's inputs from the stores: retrain history (guardrails), approval answers, rejected rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from plantops.stages import decisions, pipeline
from plantops.config import get_use_case
from plantops.stages.ingest import rejected_share
from plantops.settings import get_settings
from plantops.storage import atomic_write_parquet, write_bronze

UC = "tep_reactor"
DAY = datetime(2026, 3, 26, tzinfo=UTC)


def test_retrain_history_reads_requests_in_plant_time(plantops_home):
    assert pipeline.retrain_history(get_use_case(UC), DAY) == pipeline.retrain_history(get_use_case(UC), DAY).__class__(upset_since=DAY)
    decisions.record(UC, "m1", "monitor", "retrain", "drift", {"day": "2026-03-25"})
    history = pipeline.retrain_history(get_use_case(UC), DAY)
    assert history.last_request == DAY - timedelta(days=1)
    assert history.pending and history.recent_requests == 1
    decisions.record(UC, "t1", "train", "kept_champion", "not better", {})
    assert not pipeline.retrain_history(get_use_case(UC), DAY).pending
    decisions.record(UC, "m2", "approval", "retrain_new_reference", "ok", {"day": "2026-03-20"})
    decisions.record(UC, "m3", "approval", "refused", "transient", {"day": "2026-03-21"})  # not a request
    history = pipeline.retrain_history(get_use_case(UC), DAY)
    assert history.recent_requests == 2 and history.pending  # the approval came after the last training
    # requests for this window or later do not count for it
    assert pipeline.retrain_history(get_use_case(UC), DAY - timedelta(days=2)).recent_requests == 1


def test_an_upset_run_is_counted_back_over_adjoining_upset_windows(plantops_home):
    for run, day, branch in [("a", "2026-03-22", "upset"), ("b", "2026-03-23", "ok"), ("c", "2026-03-24", "upset"),
                             ("d", "2026-03-25", "upset")]:
        decisions.record(UC, run, "monitor", branch, "", {"day": day})
    assert pipeline.retrain_history(get_use_case(UC), DAY).upset_since == datetime(2026, 3, 24, tzinfo=UTC)
    # A rerun that judged 2026-03-24 again, now ok, ends the run there; the newest word counts.
    decisions.record(UC, "c2", "monitor", "ok", "", {"day": "2026-03-24"})
    assert pipeline.retrain_history(get_use_case(UC), DAY).upset_since == datetime(2026, 3, 25, tzinfo=UTC)
    # A persistent upset put to an engineer continues the run.
    decisions.record(UC, "c3", "monitor", "approval", "", {"day": "2026-03-24", "rule": "persistent_upset"})
    assert pipeline.retrain_history(get_use_case(UC), DAY).upset_since == datetime(2026, 3, 24, tzinfo=UTC)


def test_window_confirmation_counts_alarms_under_normal_labels_and_names_faults():
    ts = pd.date_range(DAY, periods=480, freq="3min", tz="UTC")
    predictions = pd.DataFrame({"ts": ts, "alarm": [1] * 300 + [0] * 180})
    end = DAY + timedelta(days=1)
    labels = pd.DataFrame([
        {"asset": UC, "start_ts": DAY + timedelta(hours=2), "end_ts": DAY + timedelta(hours=4), "label": "normal",
         "source": "feedback"},
        {"asset": UC, "start_ts": DAY - timedelta(days=3), "end_ts": DAY - timedelta(days=2), "label": "normal",
         "source": "lab"},  # another window: not counted
    ])
    labels[["start_ts", "end_ts"]] = labels[["start_ts", "end_ts"]].apply(pd.to_datetime, utc=True)
    seen = pipeline.confirm_window(predictions, labels, DAY, end)
    assert (seen.false_alarms, seen.by, seen.confirmed_fault) == (40, ("feedback",), None)
    fault = labels.iloc[:1].assign(label="fault_feedback", source="feedback")
    assert pipeline.confirm_window(predictions, fault, DAY, end).confirmed_fault == "fault_feedback"
    assert pipeline.confirm_window(predictions, labels.iloc[:0], DAY, end).false_alarms == 0


def test_unchallenged_alarm_windows_are_kept_out_of_training(plantops_home):
    decisions.record(UC, "m1", "monitor", "upset", "alarms", {"day": "2026-03-25", "asset": UC})
    decisions.record(UC, "m2", "monitor", "approval", "event", {"day": "2026-03-26", "asset": UC})
    decisions.record(UC, "m2", "approval", "refused", "transient", {"day": "2026-03-26", "asset": None})
    decisions.record(UC, "m3", "monitor", "approval", "event", {"day": "2026-03-27", "asset": UC})
    decisions.record(UC, "m3", "approval", "retrain_new_reference", "permanent", {"day": "2026-03-27", "asset": None})
    decisions.record(UC, "m4", "monitor", "retrain", "stale", {"day": "2026-03-28", "asset": UC})
    rows = pipeline.suspect_windows(get_use_case(UC))
    assert [(r["asset"], r["start_ts"].day, r["label"]) for r in rows] == [(UC, 25, "upset"), (UC, 26, "upset")]
    assert all(r["end_ts"] - r["start_ts"] == timedelta(days=1) for r in rows)


def test_unanswered_approval_is_recorded_as_the_safe_default(plantops_home):
    answer = {"chosen_options": ["Refuse: model still valid"], "params_input": {"reason": ""},
              "responded_by_user": None, "responded_at": "2026-03-27T07:00:00+00:00"}
    result = pipeline.record_answer(UC, "m9", answer, "refused", "2026-03-26", "1d")
    assert result["branch"] == "timed_out" and "no answer within 1d" in result["reason"]
    (row,) = decisions.latest(UC, kind="approval")
    assert row["branch"] == "timed_out" and row["payload"]["timed_out"] is True


def test_rejected_share_counts_quarantined_values_in_the_window(plantops_home):
    use_case = get_use_case(UC)
    ts = pd.date_range(DAY, periods=10, freq="3min")
    kept = pd.DataFrame({"asset": UC, "tag": "XMEAS_1", "ts": ts, "value": 0.25, "quality": "good",
                         "source": "historian", "batch": "b"})
    write_bronze(get_settings().bronze_root, UC, kept, "historian")
    assert rejected_share(use_case, DAY, DAY + timedelta(days=1)) == 0.0
    rows = pd.DataFrame({"ts": ts[:2], "XMEAS_23": [1e6, 1e6], "XMEAS_24": [1.0, 1.0], "reason": "range"})
    atomic_write_parquet(rows, get_settings().quarantine_root / UC / "rows" / "file.parquet")
    assert rejected_share(use_case, DAY, DAY + timedelta(days=1)) == 4 / 14  # 2 rows x 2 tags
    assert rejected_share(use_case, DAY + timedelta(days=5), DAY + timedelta(days=6)) is None
