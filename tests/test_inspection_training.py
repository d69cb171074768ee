"""Training a visual inspection use case: labelled cells, the fixed held-out quarter, the classifier
and the kinds it is compared with side by side in one MLflow run, the gate and the registry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import mlflow
import pandas as pd
import pytest

from plantops import splits
from plantops.config import UseCase
from plantops.modalities.images import training as it

SIZE = 30
USE_CASE = {
    "id": "pv_cells", "plant": "EL inspection line (test)", "approvers": [{"id": "qe1", "name": "QE"}],
    "inspection": {"folder": "pv_cells", "line": "el_line_1", "input_size": SIZE},
    "model": {"kind": "cell_texture_svm", "min_train_rows": 60, "compare_with": ["cell_cnn"],
              "params": {}},
}
START = datetime(2026, 3, 24, 6, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """160 real cells (40 per class), as the feature job writes them, captured a minute apart."""
    from plantops.image_features import downsample, image_stats
    from plantops.sources import elpv

    cells = elpv.labels().sort_values("cell_id")
    picked = pd.concat([g.head(40) for _, g in cells.groupby("label", sort=True)]).sort_values("cell_id")
    rows = []
    for i, cell in enumerate(picked.itertuples(index=False)):
        image = elpv.read(cell.file)
        rows.append({"run_id": f"run-{i // 40}", "cell_id": cell.cell_id, "module_type": cell.module_type,
                     "captured_at": START + timedelta(minutes=i), **image_stats(image), "size": SIZE,
                     "pixels": downsample(image, SIZE).ravel()})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def labels(features) -> pd.DataFrame:
    from plantops.sources import elpv

    known = elpv.labels().set_index("cell_id")["defect_probability"]
    return pd.DataFrame({"cell_id": features["cell_id"], "defect_probability": known[features["cell_id"]].to_numpy()})


def use_case(**model) -> UseCase:
    return UseCase.model_validate({**USE_CASE, "model": {**USE_CASE["model"], **model}})


def test_the_held_out_quarter_is_fixed_per_cell(features, labels):
    cells = it.labelled_cells(features, labels)
    first = it.split(cells)
    assert set(first.fit["cell_id"]).isdisjoint(first.holdout["cell_id"])
    # The one split of plantops.splits: a quarter of every class and module type, whatever the order.
    assert len(first.holdout) == len(cells) // 4
    assert first.holdout.groupby("label").size().tolist() == [10, 10, 10, 10]
    assert set(it.split(cells.sample(frac=1, random_state=3)).holdout["cell_id"]) == set(first.holdout["cell_id"])
    assert set(first.holdout["cell_id"]) == set(cells["cell_id"][splits.holdout_mask(cells)])
    # Unlabelled cells are left out; a re-inspected cell counts once, with its newest image.
    again = features.iloc[:1].assign(captured_at=START + timedelta(days=1), run_id="run-again")
    rows = it.labelled_cells(pd.concat([features, again]), labels.iloc[1:].pipe(lambda f: pd.concat([f, labels.iloc[:1]])))
    assert len(rows) == len(features) and rows.set_index("cell_id").loc[features["cell_id"].iloc[0], "run_id"] == "run-again"
    assert len(it.labelled_cells(features, labels.iloc[10:])) == len(features) - 10


def test_train_registers_compares_side_by_side_and_promotes_once(plantops_home, features, labels):
    from plantops.stages import registry

    # The SVM with its default parameters (fast, and not degenerate on these cells: the gate refuses a
    # degenerate first champion); the CNN beside it trains 2 short epochs (the point is the flow).
    uc = use_case(kind="cell_texture_svm", compare_with=["cell_cnn"],
                  compare_params={"cell_cnn": {"epochs": 2, "filters": [8, 16], "batch_size": 16, "tta": False}})
    first = it.train_inspection(uc, features, labels, run_tags={"airflow_run_id": "train-1"})
    assert first["promoted"] and first["reason"] == "no champion to compare with" and first["version"] == "1"
    for key in ("accuracy", "defect_recall", "cell_cnn_accuracy", "cell_cnn_defect_recall",
                "recall_class_3"):
        assert key in first["metrics"], (key, first["metrics"])
    assert registry.champion("pv_cells")[0] == "1"
    run = mlflow.get_run(first["run_id"])
    assert run.data.params["model_kind"] == "cell_texture_svm" and run.data.params["compared_with"] == "cell_cnn"
    held = it.split(it.labelled_cells(features, labels)).holdout
    assert run.data.metrics["n_holdout"] == len(held)
    confusions = mlflow.tracking.MlflowClient().get_model_version("pv_cells", "1").tags["confusions"]
    assert "predicted" in confusions or "no confusion" in confusions, confusions
    assert (plantops_home / "reports" / "pv_cells" / "confusion" / "v1.json").is_file()
    reference = registry.load_reference("pv_cells")
    assert {"mean", "std", "saturated_share", "defect_probability", "predicted_class"} <= set(reference.columns)

    # The same Airflow run again: no second version.
    assert it.train_inspection(uc, features, labels, run_tags={"airflow_run_id": "train-1"})["version"] == "1"
    # Another run: the same model on the same held-out cells is not better than the champion.
    second = it.train_inspection(uc, features, labels, run_tags={"airflow_run_id": "train-2"})
    assert second["version"] == "2" and not second["promoted"], second
    assert "not above champion v1" in second["reason"], second["reason"]
    assert registry.champion("pv_cells")[0] == "1"


def test_a_degenerate_first_model_is_not_promoted_and_the_record_says_why(plantops_home, features, labels):
    from plantops.stages import registry

    # A head regularised to nothing and unweighted, on labels where class 0 is the majority (the
    # split holds out a quarter of each class, so the fit cells are as skewed): every cell gets class 0.
    uc = use_case(kind="cell_pretrained", compare_with=[],
                  params={"C": 1e-7, "class_weight": "none", "cv_folds": 3})
    skewed = labels[(labels["defect_probability"] == 0) | (labels.index % 2 == 0)]
    result = it.train_inspection(uc, features, skewed, run_tags={"airflow_run_id": "train-degenerate"})
    assert not result["promoted"] and result["reason"].startswith("degenerate model refused: "), result["reason"]
    assert result["degenerate"] == {"model": result["reason"]}
    assert registry.champion("pv_cells") is None
    run = mlflow.get_run(result["run_id"])
    assert run.data.tags["decision"] == "kept_champion" and run.data.tags["reason"] == result["reason"]


def test_too_few_labels_is_a_clear_error(plantops_home, features, labels):
    with pytest.raises(it.NotEnoughLabels, match=r"model pv_cells: \d+ labelled cells to fit on \(classes \[0, 1, 2, 3\], \d+ more held out\); model.min_train_rows is 500"):
        it.train_inspection(use_case(min_train_rows=500, compare_with=[]), features, labels)
    after = START + timedelta(minutes=150)
    with pytest.raises(it.NotEnoughLabels, match="captured at or after 2026-03-24 08:30:00"):
        it.train_inspection(use_case(compare_with=[]), features, labels, reference_start=after)
