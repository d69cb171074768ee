"""The modality contract (:mod:`plantops.modalities.base`), checked for every registered modality
and for a toy third one (``tests/lab_samples.py``: sparse manual lab analyses) that exists only here.

Every modality provides every contract method and the registry resolves it from a use case; the
toy one runs ingest -> features -> train through the contract on a private PLANTOPS_HOME (its
training rows feed a model kind), and the stages' task functions reach it without asking which
modality they have. The DAG factory's landing watch and Spark job, the config's choice of model
kinds and the Plant ML page's evidence come from the contract too, for the toy as for the shipped
ones, and those parse-time parts load no data library. The shipped modalities' pipelines run for
real in tests/test_e2e.py (tags) and tests/test_inspection_pipeline.py (images).
"""

from __future__ import annotations

import inspect
import re
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
    assert cls.spark_job.endswith(".py") and cls.kind_outputs and cls.described
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


# -- the contract's parse-time and page parts: what the DAG factory, the config and the plugin ask --

def _use_case_of(name: str) -> UseCase:
    if name == LabSamples.name:
        return UseCase.model_validate(LAB_USE_CASE)
    found, _ = discover(USE_CASES)
    return next(uc for uc in found.values() if uc.modality == name)


@pytest.mark.parametrize("name", ALL)
def test_every_modality_names_its_landing_job_arguments_and_kinds(name, monkeypatch):
    from plantops import kinds
    from plantops.orchestration import dagfactory

    monkeypatch.setitem(MODALITIES, LabSamples.name, LabSamples)
    use_case = _use_case_of(name)
    modality = modality_of(use_case)
    landing = modality.landing()
    # What the ingest DAG watches is the modality's answer, whatever it is.
    assert dagfactory._watched(use_case) == landing
    if landing is not None:
        folder, patterns = landing
        assert folder and patterns and all(isinstance(p, str) and "*" in p for p in patterns)
    args = modality.spark_args("2026-03-01:2026-03-02")
    assert args[-2:] == ["--ranges", "2026-03-01:2026-03-02"] and all(isinstance(a, str) for a in args)
    assert dagfactory.spark_args(use_case) == modality.spark_args(dagfactory.PLANNED_RANGES)
    # Its kinds exist, and the config refuses every other kind naming the modality's use cases.
    suitable = sorted(n for n, k in kinds.KINDS.items() if k.output in modality.kind_outputs)
    assert use_case.model.kind in suitable
    other = next(n for n in sorted(kinds.KINDS) if n not in suitable)
    raw = {**use_case.model_dump(mode="json", exclude_defaults=True), "model": {"kind": other}}
    with pytest.raises((ConfigError, ValueError), match=rf"model.kind: kind '{other}' does not suit a use case "
                                                        rf"{re.escape(modality.described)}; expected one of "
                                                        rf"{re.escape(str(suitable))}"):
        UseCase.model_validate(raw)


def test_the_shipped_modalities_land_and_build_as_before():
    from plantops.modalities.tags import feature_job_args

    tags, images = _use_case_of("tags"), _use_case_of("images")
    assert modality_of(tags).landing() == (tags.landing.folder, list(tags.landing.patterns))
    assert modality_of(images).landing() == (images.inspection.folder, ["*.manifest.csv", "*.labels.csv"])
    assert modality_of(images).spark_args("R") == ["--use-case", images.id, "--size",
                                                   str(images.inspection.input_size), "--ranges", "R"]
    args = modality_of(tags).spark_args("R")
    assert args == [*feature_job_args(tags), "--ranges", "R"]
    assert args[args.index("--tags") + 1] == ",".join(tags.tag_names)


def _day(**evidence) -> dict:
    return {"day": "2026-03-02", "asset": None, "run_id": "r", "run_path": "/r", "runs_that_day": 1,
            "branch": "ok", "rule": None, "guardrail": None, "reason": "no drift", "drift_share": 0.1,
            "n_drifted": 0, "n_columns": 2, "drifted_tags": [], "alarm_rate": 0.25, "n_predictions": 4,
            "alarms": 1, "alarm_tags": [], "n_rejected_cells": 0, "rejected_cells": [], "plant_events": [],
            "feedback": [], "report_path": None, "approval": None, "trainings": [], **evidence}


def _view(modality: str, timeline: list[dict]) -> dict:
    return {"use_case": "uc", "plant": "p", "description": "d", "asset": "a", "assets": ["a"], "is_fleet": False,
            "modality": modality, "champion": None, "timeline": timeline, "pending_approvals": [],
            "required_actions_path": "/ra", "quarantined": [], "rejected": [], "scores": None,
            "inspection": {"line": "L1", "day": None, "confusion": None},
            "health": {"available": False, "error": "no db"}}


@pytest.mark.parametrize("name", ALL)
def test_the_plugin_draws_each_modality_with_its_own_pieces(name, monkeypatch):
    """The page's evidence columns, its rate word and its own section come from the modality's page."""
    from plantops.modalities.page import Page
    from tests.test_view import _plugin

    monkeypatch.setitem(MODALITIES, LabSamples.name, LabSamples)
    cls = _class(name)
    pieces = cls.page()
    assert isinstance(pieces, Page) and len(pieces.evidence_headers) == 2
    day = _day(alarm_tags=[{"tag": "<density>", "alarms": 1}], n_rejected_cells=1,
               rejected_cells=[{"cell_id": "c<1>", "run_id": "r", "predicted_class": "1",
                                "defect_probability": 0.9, "heatmap_path": "/plantops/reports/uc/h.png"}])
    cell = pieces.evidence(day)
    assert "<density>" not in cell and "c<1>" not in cell  # escaped
    page = _plugin().render_use_case(_view(name, [day]))
    for header in pieces.evidence_headers:
        assert f"<th>{header}</th>" in page
    assert f"<td class='small'>{cell}</td>" in page
    assert f"{cls.words.output.capitalize()} rate (<span" in page
    assert pieces.section(_view(name, [day])) in page and pieces.chart(_view(name, [day])) in page
    others = [h for m in ALL if m != name for h in _class(m).page().evidence_headers if h not in pieces.evidence_headers]
    assert not [h for h in others if f"<th>{h}</th>" in page]
    # Before the first monitor decision the charts say so too when the modality has no chart of its own.
    empty = _plugin().render_use_case(_view(name, []))
    assert empty.count("No monitor decision yet") == 1 + (pieces.chart(_view(name, [])) == "")


def test_the_parse_time_parts_import_nothing_heavy():
    """landing and spark_args run while DAG files parse: over every shipped use case they load no
    data library."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from plantops.config import discover\n"
            "from plantops.modalities import modality_of\n"
            f"found, _ = discover({str(USE_CASES)!r})\n"
            "for uc in found.values():\n"
            "    m = modality_of(uc); m.landing(); m.spark_args('R'); m.kind_outputs; m.described\n"
            "print(json.dumps(sorted(n for n in ('pandas', 'pyarrow', 'pyspark', 'sklearn', 'mlflow', 'jax', 'sqlalchemy')"
            " if n in sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(USE_CASES.parent), str(USE_CASES.parents[1])])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
