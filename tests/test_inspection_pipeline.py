"""An inspection use case through the stage functions its DAGs call, on real elpv cells: NiFi lands
two inspection runs (the first labelled by the inspectors in its manifest, the second with a
truncated image), ingest, the Spark image features and their gate, training, and the champion's
verdicts with heat maps written back for the inspectors and the monitor."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from plantops.sources import elpv, elpv_replay, inspections
from plantops.stages import pipeline
from tests.inspection_support import private_line

UC, FOLDER, LINE, SIZE = "pv_line", "pv_line_el", "L1", 30


@pytest.fixture(scope="module")
def line(tmp_path_factory, spark):
    """A private home and use-case folder with the inspection use case, two runs landed."""
    root = tmp_path_factory.mktemp("inspection_pipeline")
    with private_line(root, {
        "id": UC, "plant": "EL inspection line (test)", "approvers": [{"id": "qe1", "name": "QE"}],
        "inspection": {"folder": FOLDER, "line": LINE, "input_size": SIZE},
        "model": {"kind": "cell_texture_svm", "min_train_rows": 60, "params": {"reject_threshold": 0.5}},
    }):
        cells = elpv.labels().sort_values("cell_id")
        labelled = pd.concat([g.head(30) for _, g in cells.groupby("label", sort=True)])["cell_id"].tolist()
        fresh = cells[~cells["cell_id"].isin(labelled)].iloc[::97].head(12)["cell_id"].tolist()
        elpv_replay.land_run(FOLDER, "r-1", labelled, line=LINE, labels=True,
                             start=datetime(2026, 4, 1, 6, tzinfo=timezone.utc))
        elpv_replay.land_run(FOLDER, "r-2", fresh, line=LINE, faults=["truncated"],
                             start=datetime(2026, 4, 2, 6, tzinfo=timezone.utc))
        yield {"root": root, "labelled": labelled, "fresh": fresh}


def test_landed_runs_become_verdicts_with_heat_maps(line):
    from spark_jobs.build_image_features import main as build

    ingested = pipeline.ingest(UC, "2026-04-02T00:00:00+00:00", "2026-04-03T00:00:00+00:00", "ingest-1")
    assert ingested["days"] == ["2026-04-01", "2026-04-02"]
    assert ingested["images"] == {"items": 132, "accepted": 131, "rejected": 1}
    assert len(inspections.read_labels(LINE)) == 120  # the manifest's labels of the accepted cells

    plan = pipeline.plan_features(UC, ingested["days"])
    assert plan["ranges"] == "2026-04-01:2026-04-02,2026-04-02:2026-04-03" and plan["lookahead"] == []
    assert build(["--use-case", UC, "--size", str(SIZE), "--ranges", plan["ranges"]]) == 0
    gate = pipeline.check_feature_ranges(UC, plan["ranges"])
    assert gate["rows"] == 131 and gate["days"] == ingested["days"]

    trained = pipeline.train(UC, "train-1")
    assert trained["promoted"] and trained["model_kind"] == "cell_texture_svm", trained
    assert 0 <= trained["metrics"]["accuracy"] <= 1

    scored = pipeline.score(UC, "2026-04-02")
    assert scored["rows"] == 11 and scored["runs"] == ["r-2"] and scored["model_version"] == "1"
    verdicts = inspections.read_verdicts(LINE, datetime(2026, 4, 2, tzinfo=timezone.utc),
                                         datetime(2026, 4, 3, tzinfo=timezone.utc))
    assert len(verdicts) == 11 and set(verdicts["cell_id"]) < set(line["fresh"])
    assert int(verdicts["rejected"].sum()) == scored["alarms"]
    home = line["root"] / "home"
    for row in verdicts.itertuples():
        assert (row.heatmap is not None) == bool(row.rejected)
        if row.heatmap:
            assert (home / row.heatmap).is_file()
    # Scoring the day again replaces its verdicts.
    assert pipeline.score(UC, "2026-04-02")["rows"] == 11
    assert len(inspections.read_verdicts(LINE, datetime(2026, 4, 2, tzinfo=timezone.utc),
                                         datetime(2026, 4, 3, tzinfo=timezone.utc))) == 11
