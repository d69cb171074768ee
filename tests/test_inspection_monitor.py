"""The monitor of an inspection line, one branch per test, on real elpv cells landed as NiFi lands
them: ingest, image features, the champion's verdicts and the monitor's decision (pipeline.assess,
as the monitor DAG calls it) with the decision store, the registry and the historian tables.

The days of the line, in test order: 04-01 labelled history (the first champion); 04-02 a normal
day (no action); 04-03 an unrecorded exposure change (the champion does not see it: retrain);
04-04 a batch of defective cells (an upset), then the inspectors' labels calling its rejects
functional (false rejects: retrain); 04-05 the exposure change again, with a lighting change on
record (approval); 04-07 a run full of bad images (data quality: approval); 04-08 a normal day
(past the lighting change's lookback) whose missed defects the inspectors report (performance:
retrain).

Feature partitions are written with the numpy reference of the Spark job
(:func:`tests.inspection_support.write_image_features`): the Spark job itself is tested in test_image_features.py and
test_inspection_pipeline.py; here the monitor is."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from plantops.sources import elpv, elpv_replay, historian, inspections
from plantops.stages import pipeline
from tests.inspection_support import private_line, write_image_features

UC, FOLDER, LINE, SIZE = "pv_watch", "pv_watch_el", "EL2", 30
POLICY = {
    # elpv's cells are ~31 % defective (the small test model rejects ~20-30 % of a normal day, ~55 %
    # of a batch of fully defective cells): a batch is an upset above 45 % rejects.
    "upset": {"max_alarm_rate": 0.45, "min_false_alarms": 3},
    "performance": {"min_labelled_rows": 10, "max_far": 0.3},
    "guardrails": {"cooldown": "1h"},
}


def at(day: int, hour: int = 6) -> datetime:
    return datetime(2026, 4, day, hour, tzinfo=timezone.utc)


def land_and_score(run: str, cells: list[str], day: int, **kwargs) -> dict:
    """NiFi lands the run; ingest, features and the champion's verdicts follow."""
    elpv_replay.land_run(FOLDER, run, cells, line=LINE, start=at(day), **kwargs)
    ingested = pipeline.ingest(UC, "", "", f"ingest-{run}")
    day_text = at(day).date().isoformat()
    assert ingested["days"] == [day_text]
    write_image_features(UC, SIZE, [day_text])
    return {"ingested": ingested, "scored": pipeline.score(UC, day_text)}


def retrain(run: str) -> dict:
    """The train run the monitor triggers (no scheduler here): it ends the pending request."""
    return pipeline.train(UC, run, reason=f"retrain requested by {run}")


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """A private home and use case; 04-01's labelled history trained into the first champion."""
    root = tmp_path_factory.mktemp("inspection_monitor")
    with private_line(root, {
        "id": UC, "plant": "EL inspection line (test)", "approvers": [{"id": "qe1", "name": "Quality engineer"}],
        "inspection": {"folder": FOLDER, "line": LINE, "input_size": SIZE},
        "model": {"kind": "cell_texture_svm", "min_train_rows": 60, "params": {"reject_threshold": 0.5}},
        "monitoring": {"policy": POLICY},
    }):
        cells = elpv.labels().sort_values("cell_id").reset_index(drop=True)
        history = cells.iloc[::12]  # 219 cells in elpv's proportions of classes and module types
        rest = cells.drop(history.index)
        elpv_replay.land_run(FOLDER, "r-01", history["cell_id"].tolist(), line=LINE, labels=True, start=at(1))
        pipeline.ingest(UC, "", "", "ingest-r-01")
        write_image_features(UC, SIZE, ["2026-04-01"])
        first = pipeline.train(UC, "train-1", reason="first model")
        assert first["promoted"] and first["version"] == "1", first
        yield {"root": root, "rest": rest, "used": set()}


def sample(line: dict, start: int, n: int = 48, label: int | None = None, step: int = 41) -> list[str]:
    """``n`` cells not landed before (a cell landed again is a duplicate), every ``step``-th."""
    rest = line["rest"][~line["rest"]["cell_id"].isin(line["used"])]
    if label is not None:
        rest = rest[rest["label"] == label]
    chosen = rest.iloc[start::step]["cell_id"].tolist()[:n]
    line["used"].update(chosen)
    return chosen


def test_a_normal_day_takes_no_action(line):
    run = land_and_score("r-02", sample(line, 0), 2)
    assert run["scored"]["rows"] == 48 and run["scored"]["model_version"] == "1"
    record = pipeline.assess(UC, "monitor-0402", "2026-04-02")
    assert record["branch"] == "ok" and record["asset"] == LINE, record["reason"]
    assert not record["drift"]["drifted"] and record["n_cells"] == record["n_predictions"] == 48
    verdicts = inspections.read_verdicts(LINE, at(2, 0), at(3, 0))
    assert record["alarm_rate"] == pytest.approx(verdicts["rejected"].mean())
    assert record["alarm_rate"] < POLICY["upset"]["max_alarm_rate"]
    assert record["performance"] is None and "no inspector label" in record["performance_note"]
    assert record["rejected_share"] == 0.0
    # Every rejected cell named in the record has its heat map on disk, served by the plugin.
    assert len(record["rejected_cells"]) == min(10, int(verdicts["rejected"].sum())) > 0
    home = line["root"] / "home"
    for cell in record["rejected_cells"]:
        assert (home / cell["heatmap"]).is_file()
        assert cell["heatmap_path"] == f"/plantops/reports/{UC}/{cell['heatmap'].split('/', 2)[2]}"


def test_an_unrecorded_exposure_change_is_a_stale_model_retrained(line):
    land_and_score("r-03", sample(line, 7), 3, gain=1.4, offset=10)
    record = pipeline.assess(UC, "monitor-0403", "2026-04-03")
    assert record["branch"] == "retrain" and record["rule"] == "unexplained_drift", record["reason"]
    assert {"mean", "saturated_share"} <= set(record["drifted_columns"])
    assert record["alarm_rate"] < POLICY["upset"]["max_alarm_rate"]  # the champion does not see it
    (request,) = pipeline.retrain_requests(UC, "monitor-0403", [record])
    assert request["trigger_run_id"] == "retrain__monitor-0403"
    retrain("retrain__monitor-0403")


def test_a_batch_of_defective_cells_is_an_upset_the_quality_team_hears_of(line):
    land_and_score("r-04", sample(line, 0, 40, label=3, step=5), 4)
    record = pipeline.assess(UC, "monitor-0404", "2026-04-04")
    assert record["branch"] == "upset" and record["rule"] == "upset", record["reason"]
    assert record["alarm_rate"] > POLICY["upset"]["max_alarm_rate"]
    (alert,) = pipeline.upset_alerts(UC, "monitor-0404", [record])
    assert alert["subject"].startswith(f"{UC}, 2026-04-04: upset, the model rejects")
    first = record["rejected_cells"][0]
    assert f"{first['cell_id']} (run r-04)" in alert["body"] and first["heatmap_url"] in alert["body"]


def test_rejects_the_inspectors_call_functional_make_a_stale_model(line):
    verdicts = inspections.read_verdicts(LINE, at(4, 0), at(5, 0))
    rejected = verdicts.loc[verdicts["rejected"] == 1, "cell_id"].tolist()
    # The inspectors' labels land a day late; they call every reject of the batch functional.
    elpv_replay.land_labels(FOLDER, "r-04", rejected, at(5, 9), overrides={c: 0.0 for c in rejected})
    assert pipeline.ingest(UC, "", "", "ingest-labels-r-04")["labels"][0]["labels"] == len(rejected)
    record = pipeline.assess(UC, "monitor-0404-labels", "2026-04-04")
    assert record["branch"] == "retrain" and record["rule"] == "false_alarms", record["reason"]
    assert record["confirmation"] == {"false_alarms": len(rejected), "confirmed_fault": None, "by": ["inspectors"]}
    retrain("retrain__monitor-0404-labels")


def test_the_exposure_change_on_record_goes_to_the_quality_engineer(line):
    historian.record_plant_event(LINE, at(5, 5), "lighting_change", "EL power supply replaced; exposure re-set",
                                 "ops1")
    land_and_score("r-05", sample(line, 13), 5, gain=1.4, offset=10)
    record = pipeline.assess(UC, "monitor-0405", "2026-04-05")
    assert record["branch"] == "approval" and record["rule"] == "plant_change", record["reason"]
    assert [e["kind"] for e in record["plant_events"]] == ["lighting_change"]
    (asked,) = pipeline.approval_requests(UC, [record])
    assert asked["subject"] == f"{UC}, 2026-04-05: retrain after a plant change?"
    body = asked["body"]
    assert "lighting_change by ops1: EL power supply replaced" in body
    assert "Drifted share of image statistics and model outputs" in body
    assert "| mean |" in body or "| saturated_share |" in body
    assert all(c["heatmap_url"] in body for c in record["rejected_cells"])
    assert "The champion's confusions on its held-out cells" in body


def test_a_run_full_of_bad_images_asks_whether_to_learn_from_it(line):
    faults = ["undecodable", "truncated", "wrong_size", "blank", "saturated", "missing_image", "missing_row"]
    run = land_and_score("r-07", sample(line, 29, 24), 7, faults=faults)
    images = run["ingested"]["images"]
    assert images == {"items": 25, "accepted": 18, "rejected": 7}
    record = pipeline.assess(UC, "monitor-0407", "2026-04-07")
    assert record["rejected_share"] == pytest.approx(7 / 25)
    assert record["branch"] == "approval" and record["rule"] == "quality", record["reason"]
    (asked,) = pipeline.approval_requests(UC, [record])
    assert asked["subject"] == f"{UC}, 2026-04-07: retrain on data the quality gates rejected?"


def test_missed_defects_in_the_late_labels_are_a_performance_drop(line):
    run = land_and_score("r-08", sample(line, 21), 8)
    champion = run["scored"]["model_version"]
    verdicts = inspections.read_verdicts(LINE, at(8, 0), at(9, 0))
    passed = verdicts.loc[verdicts["rejected"] == 0, "cell_id"].tolist()
    # The inspectors find defects in cells the champion passed (they reject nothing it rejected).
    elpv_replay.land_labels(FOLDER, "r-08", passed[:12], at(8, 20), overrides={c: 1.0 for c in passed[:12]})
    pipeline.ingest(UC, "", "", "ingest-labels-r-08")
    record = pipeline.assess(UC, "monitor-0408", "2026-04-08")
    assert record["branch"] == "retrain" and record["rule"] == "performance", record["reason"]
    assert record["champion_version"] == champion
    perf = record["performance"]
    assert perf["detection_rate"] == 0.0 and perf["n_labelled"] >= 12
    assert perf["expected_detection_rate"] > 0.2
    assert record["confirmation"]["false_alarms"] == 0
    retrain("retrain__monitor-0408")
