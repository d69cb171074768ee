"""Verdicts and inspectors' labels on the historian side: rerun-safe, labels checked and corrected."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from plantops import db
from plantops.sources import inspections


@pytest.fixture
def historian(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANTOPS_HISTORIAN_URL", f"sqlite:///{tmp_path / 'historian.db'}")
    monkeypatch.delenv("PLANTOPS_HISTORIAN_READ_URL", raising=False)
    db.reset()
    yield
    db.reset()


def verdict_rows(run_id: str, cells: list[str], version: str = "1") -> pd.DataFrame:
    at = datetime(2026, 3, 24, 8, tzinfo=timezone.utc)
    return pd.DataFrame({
        "run_id": run_id, "cell_id": cells, "captured_at": [at + pd.Timedelta(seconds=i) for i in range(len(cells))],
        "model_version": version, "predicted_class": [0, 3][: len(cells)] + [0] * (len(cells) - 2),
        "defect_probability": 0.1, "score": 0.25, "rejected": 0, "heatmap": None,
    })


def test_verdicts_of_a_rerun_replace_that_run_only(historian):
    assert inspections.write_verdicts("line-2", verdict_rows("run-a", ["c1", "c2", "c3"])) == 3
    assert inspections.write_verdicts("line-2", verdict_rows("run-b", ["c4", "c5"])) == 2
    assert inspections.write_verdicts("line-2", verdict_rows("run-a", ["c1", "c2"], version="2")) == 2
    start, end = datetime(2026, 3, 24, tzinfo=timezone.utc), datetime(2026, 3, 25, tzinfo=timezone.utc)
    frame = inspections.read_verdicts("line-2", start, end)
    assert sorted(zip(frame["run_id"], frame["cell_id"], frame["model_version"])) == [
        ("run-a", "c1", "2"), ("run-a", "c2", "2"), ("run-b", "c4", "1"), ("run-b", "c5", "1")]
    assert inspections.read_verdicts("line-1", start, end).empty


def test_labels_are_upserted_and_checked(historian):
    at = datetime(2026, 3, 25, 9, tzinfo=timezone.utc)
    inspections.write_labels("line-2", [{"cell_id": "c1", "defect_probability": 0.3333333, "inspector": "qa1",
                                         "labelled_at": at},
                                        {"cell_id": "c2", "defect_probability": 1.0, "inspector": "qa1", "labelled_at": at}])
    inspections.write_labels("line-2", [{"cell_id": "c1", "defect_probability": 0.0, "inspector": "qa2", "labelled_at": at}])
    frame = inspections.read_labels("line-2")
    assert frame[["cell_id", "defect_probability", "inspector"]].values.tolist() == [["c1", 0.0, "qa2"], ["c2", 1.0, "qa1"]]
    with pytest.raises(ValueError, match="cell c9: defect probability 0.5 is not one of 0, 1/3, 2/3, 1"):
        inspections.write_labels("line-2", [{"cell_id": "c9", "defect_probability": 0.5, "inspector": "qa1",
                                             "labelled_at": at}])
