"""The modality contract (:mod:`plantops.modalities.base`), checked for every registered modality
and for a toy third one (``tests/lab_samples.py``: sparse manual lab analyses) that exists only here.

Every modality provides every contract method and the registry resolves it from a use case; the
toy one runs ingest -> features -> train through the contract on a private PLANTOPS_HOME (its
training rows feed a model kind), and the stages' task functions reach it without asking which
modality they have. The shipped modalities' pipelines run for real in tests/test_e2e.py (tags) and
tests/test_inspection_pipeline.py (images).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops.config import ConfigError, UseCase, discover
from plantops.modalities import MODALITIES, UnknownModality, modality_of, register
from plantops.modalities.base import CONTRACT, Modality, Words

from lab_samples import LabSamples

USE_CASES = Path(__file__).resolve().parents[1] / "include" / "use_cases"

LAB_USE_CASE = {
    "id": "lab_line",
    "plant": "Polymer plant, QC lab",
    "modality": "lab_samples",
    "landing": {"folder": "lab_line", "pattern": "*.csv"},
    "tags": [{"name": "viscosity", "description": "melt viscosity (Pa s)", "source": "landing", "min": 0, "max": 500},
             {"name": "density", "description": "density (g/cm3)", "source": "landing", "min": 0.5, "max": 1.5}],
    "features": {"bucket": "1h", "rolling_buckets": 4, "lookback_days": 0},
    "model": {"kind": "mspm_pca", "params": {"explained_variance": 0.9}, "train_days": 30},
    "approvers": [{"id": "eng1", "name": "QC engineer (test)"}],
}


@pytest.fixture
def lab(monkeypatch):
    """The toy modality registered (for this test only) and a use case of it."""
    monkeypatch.setitem(MODALITIES, LabSamples.name, LabSamples)
    return UseCase.model_validate(LAB_USE_CASE)


ALL = sorted([*MODALITIES, LabSamples.name])


def _class(name: str) -> type[Modality]:
    return LabSamples if name == LabSamples.name else MODALITIES[name]


@pytest.mark.parametrize("name", ALL)
def test_every_modality_provides_the_whole_contract(name):
    cls = _class(name)
    assert cls.name == name and cls.summary and isinstance(cls.words, Words) and cls.headline
    assert cls.spark_job.endswith(".py")
    for method in CONTRACT:
        own = getattr(cls, method)
        assert own is not getattr(Modality, method), f"{name} does not implement {method}"
        assert list(inspect.signature(own).parameters) == list(inspect.signature(getattr(Modality, method)).parameters), method


def test_the_registry_resolves_every_shipped_use_case_to_its_modality():
    found, broken = discover(USE_CASES)
    assert found and not broken
    by = {uc.id: modality_of(uc) for uc in found.values()}
    for uc in found.values():
        assert by[uc.id].name == ("images" if uc.inspection is not None else "tags") == uc.modality
        assert by[uc.id].use_case is uc
    assert {m.name for m in by.values()} == set(MODALITIES) == {"tags", "images"}


def test_a_registered_modality_is_resolved_and_an_unknown_one_named(lab, monkeypatch):
    assert isinstance(modality_of(lab), LabSamples)
    assert register(LabSamples) is LabSamples
    with pytest.raises((ConfigError, ValueError), match="unknown modality 'nope'.*lab_samples"):
        UseCase.model_validate({**LAB_USE_CASE, "modality": "nope"})
    with pytest.raises(ValueError, match="'images' goes with an 'inspection' section"):
        UseCase.model_validate({**LAB_USE_CASE, "modality": "images"})
    monkeypatch.delitem(MODALITIES, LabSamples.name)
    with pytest.raises(UnknownModality, match="lab_samples"):
        modality_of(lab)


def _land(home, name: str, rows: list[tuple]) -> None:
    folder = home / "landing" / "lab_line"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["sample_id", "ts", "analyte", "value"]).to_csv(folder / name, index=False)


def test_the_toy_modality_runs_ingest_features_and_train_through_the_contract(lab, plantops_home):
    rng = np.random.default_rng(7)
    days = [f"2026-03-{d:02d}" for d in range(1, 8)]
    for day in days:  # a sample every 20 minutes: viscosity and density that move together
        rows = []
        for k in range(72):
            v = 200 + rng.normal(0, 5)
            ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=20 * k)
            rows += [(f"{day}-{k}", ts.isoformat(), "viscosity", v),
                     (f"{day}-{k}", ts.isoformat(), "density", 0.9 + (v - 200) / 1000 + rng.normal(0, 0.001))]
        _land(plantops_home, f"batch-{day}.csv", rows)
    _land(plantops_home, "typo.csv", [("x", "not a time", "viscosty", "abc")])
    modality = modality_of(lab)

    ingested = modality.ingest("manual__1", pd.Timestamp(days[0], tz="UTC"), pd.Timestamp(days[-1], tz="UTC"))
    assert ingested["days"] == days and ingested["quarantined_files"] == 1
    assert modality.bronze_days() == days and modality.built_feature_days() == []
    plan = modality.feature_plan(ingested["days"])
    assert plan["days"] == days and plan["lookahead"] == [] and plan["ranges"].startswith("2026-03-01:2026-03-02,")
    modality.build_features(plan["days"])
    assert modality.built_feature_days() == days
    gate = modality.check_features([(days[0], "2026-03-08")], None)
    assert gate["rows"] > 100 and gate["days"] == days

    rows = modality.training_rows(None)
    assert {"viscosity", "density"} <= set(rows.features.columns) and rows.labels.empty
    result = modality.train(rows, None, {"airflow_run_id": "manual__1"}, None)
    assert result["fit_rows"] > 50 and 0 <= result["metrics"]["far"] <= 0.2
    from plantops.kinds import get_kind

    scored = modality.score(get_kind(lab), result["model"], "1", days[-1], lab.assets[0], lab.id)
    assert scored["rows"] > 0 and scored["model_kind"] == "mspm_pca"


def test_the_task_functions_reach_the_toy_modality_without_asking_which_it_is(lab, plantops_home, monkeypatch):
    """pipeline's ingest, plan_features and approval body call the contract: the toy's answers come back."""
    from plantops.stages import pipeline

    monkeypatch.setattr(pipeline, "get_use_case", lambda use_case_id: lab)
    _land(plantops_home, "b.csv", [("s1", "2026-03-02T08:00:00+00:00", "viscosity", 210.0)])
    result = pipeline.ingest("lab_line", "2026-03-02", "2026-03-03", "manual__2")
    assert result["days"] == ["2026-03-02"] and result["notified"] is None and result["files"][0]["accepted"] == 1
    assert pipeline.bronze_days("lab_line") == ["2026-03-02"]
    assert pipeline.plan_features("lab_line", ["2026-03-02"])["ranges"] == "2026-03-02:2026-03-03"

    from plantops.stages.monitoring import DriftResult

    drift = DriftResult(drift_share=0.5, drifted=True, n_columns=2, n_drifted=1, column_scores={"density": 3.0},
                        drifted_columns=("density",), method="wasserstein", report_path=None, shift_sd={"density": 3.0})
    record = {"day": "2026-03-02", "reason": "drift", "drift_share": 0.5, "plant_events": [], "n_predictions": 3,
              "thresholds": {"share_threshold": 0.3, "method": "wasserstein"}, "champion_version": "1",
              "alarm_rate": None, "report_url": "http://x/r.html", "performance": None}
    body = pipeline.approval_body(lab, record, drift)
    assert "Drifted share of analytes: **50%**" in body and "| analyte | drift score |" in body
    assert "Lab samples in the window: 3." in body and "not applicable (the lab labels nothing)" in body
