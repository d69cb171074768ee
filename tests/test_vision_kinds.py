"""The classifier kinds of visual inspection (``output == "classifier"``: ``cell_texture_svm``,
``cell_cnn``) through the kind contract, on real elpv solar-cell images.

``tests/test_kinds.py`` runs the contract over the tabular kinds (detectors, regressions); this
module is the contract for every registered classifier kind: build and fit, score (class, defect
probability, reject), evaluate on held-out cells, gate, save and load through a real MLflow store,
and parameter errors named by field. The data: 160 real cells (40 per class, half mono, half poly,
the first in ``cell_id`` order) at 30 x 30, the image-feature rows as the feature job writes them
(:func:`plantops.image_features.downsample`), 40 of them held out by
:func:`plantops.splits.holdout_mask`. The CNN trains 3 epochs: the point is the contract, not
the accuracy (``bench/vision.py`` measures that on the published split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from plantops.config import ConfigError, UseCase, load_use_case
from plantops.kinds import KINDS, get_kind, kind_of, trusted_types
from plantops.kinds.base import CLASS_PROBABILITIES, ImageSplit
from plantops.splits import holdout_mask

CLASSIFIERS = sorted(k for k, kind in KINDS.items() if kind.output == "classifier")
SIZE = 30
PER_CLASS = 40
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "cell_texture_svm": {},
    "cell_cnn": {"epochs": 3, "filters": [8, 16], "batch_size": 16, "tta": True},
    "cell_ensemble": {"cnn_epochs": 2, "cnn_filters": [8, 16]},
    "cell_pretrained": {"cv_folds": 3},
}
USE_CASE: dict[str, Any] = {
    "id": "pv_cells",
    "plant": "EL inspection line of solar-cell modules (elpv test subset)",
    "inspection": {"folder": "pv_cells", "line": "el_line_1", "input_size": SIZE},
    "model": {"kind": "cell_texture_svm", "params": {}},
    "approvers": [{"id": "qe1", "name": "Quality engineer (test)"}],
}

classifiers = pytest.mark.parametrize("name", CLASSIFIERS)


def test_both_vision_kinds_are_registered_classifiers():
    assert CLASSIFIERS == ["cell_cnn", "cell_ensemble", "cell_pretrained", "cell_texture_svm"]


def _rows(size: int) -> pd.DataFrame:
    from plantops.image_features import downsample, image_stats
    from plantops.sources import elpv

    cells = elpv.labels().sort_values("cell_id")
    picked = pd.concat([group.groupby("module_type").head(PER_CLASS // 2)
                        for _, group in cells.groupby("label", sort=True)]).sort_values("cell_id")
    records = []
    for cell in picked.itertuples(index=False):
        image = elpv.read(cell.file)
        records.append({"cell_id": cell.cell_id, "module_type": cell.module_type, "label": cell.label,
                        "defect_probability": cell.defect_probability, **image_stats(image),
                        "size": size, "pixels": downsample(image, size).ravel()})
    return pd.DataFrame.from_records(records).reset_index(drop=True)


@dataclass(frozen=True)
class Case:
    use_case: UseCase
    kind: Any
    data: ImageSplit
    model: Any
    scored: pd.DataFrame  # kind.score(model, data.holdout)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return _rows(SIZE)


@pytest.fixture(scope="module")
def embedding_home(tmp_path_factory) -> Any:
    """cell_pretrained caches its embeddings under PLANTOPS_HOME: a private one for the module."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("vision_home")
        patch.setenv("PLANTOPS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def cases(rows, embedding_home):
    held = holdout_mask(rows).to_numpy()
    data = ImageSplit(rows[~held], rows[held])
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in built:
            use_case = UseCase.model_validate(
                {**USE_CASE, "model": {**USE_CASE["model"], "kind": name, "params": FAST_PARAMS[name]}})
            kind = get_kind(use_case)
            model = kind.fit(kind.build(), data.fit)
            built[name] = Case(use_case, kind, data, model, kind.score(model, data.holdout))
        return built[name]

    return get


def test_the_subset_is_balanced_and_the_split_stratified(rows):
    held = holdout_mask(rows)
    assert len(rows) == 4 * PER_CLASS and held.sum() == PER_CLASS
    assert rows["label"].value_counts().to_dict() == {k: PER_CLASS for k in range(4)}
    assert rows.loc[held, "label"].value_counts().to_dict() == {k: PER_CLASS // 4 for k in range(4)}
    assert {len(p) for p in rows["pixels"]} == {SIZE * SIZE}


@classifiers
def test_build_fit_and_score(cases, name):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    case = cases(name)
    kind, model, scored, holdout = case.kind, case.model, case.scored, case.data.holdout
    assert kind.output == "classifier"
    estimator = kind.build()
    assert isinstance(estimator, kind.estimator_class()) and kind.build() is not estimator
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    check_is_fitted(model)
    assert model.size_ == SIZE and list(model.columns_) == ["pixels", "size"]
    assert kind_of(case.use_case, model).name == name
    for key, value in kind.log_params(model).items():
        assert isinstance(value, (str, int, float, bool)), (key, value)

    assert scored.index.equals(holdout.index)
    proba = scored[[f"p_class_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (scored["predicted_class"].to_numpy() == proba.argmax(axis=1)).all()
    np.testing.assert_allclose(scored["defect_probability"], proba[:, 2] + proba[:, 3], atol=1e-12)
    np.testing.assert_allclose(scored["expected"], proba @ np.asarray(CLASS_PROBABILITIES), atol=1e-12)
    # The reject threshold: the kind's, or the one the model chose on its fit cells (cell_pretrained).
    threshold = getattr(model, "reject_threshold_", kind.params.reject_threshold)
    assert kind.threshold(model) == threshold and 0 < threshold < 1
    np.testing.assert_allclose(scored["score"], scored["defect_probability"] / threshold)
    assert (scored["alarm"].to_numpy() == (scored["score"].to_numpy() > 1.0)).all()
    assert scored["residual"].isna().all()
    # Rows of a multiple of the model's side are reduced to it: the same cells at 60 x 60 score as at 30 x 30
    # (up to float32 rounding of the block means).
    from plantops.image_features import downsample
    from plantops.sources import elpv

    files = elpv.labels().set_index("cell_id").loc[holdout["cell_id"].head(8), "file"]
    larger = holdout.head(8).assign(size=60, pixels=[downsample(elpv.read(f), 60).ravel() for f in files])
    again = kind.score(model, larger)
    np.testing.assert_allclose(again["defect_probability"], scored["defect_probability"].head(8), atol=2e-3)
    # Shuffled rows come back on their own index with the same verdicts.
    shuffled = holdout.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(kind.score(model, shuffled).loc[scored.index], scored, atol=1e-6)


@classifiers
def test_rows_the_model_cannot_read_are_refused_with_the_reason(cases, name):
    case = cases(name)
    rows = case.data.holdout.head(3)
    with pytest.raises(ValueError, match="not a multiple"):
        case.kind.score(case.model, rows.assign(size=20, pixels=[np.zeros(400, np.float32)] * 3))
    broken = rows.copy()
    broken["pixels"] = [rows["pixels"].iloc[0], np.zeros(10, np.float32), rows["pixels"].iloc[2]]
    with pytest.raises(ValueError, match=f"cell {rows['cell_id'].iloc[1]}.*has 10 values"):
        case.kind.score(case.model, broken)
    with pytest.raises(ValueError, match="'label'"):
        case.kind.fit(case.kind.build(), rows.drop(columns=["label", "defect_probability"]))


@classifiers
def test_evaluate_on_held_out_cells(cases, name):
    case = cases(name)
    kind, scored, holdout = case.kind, case.scored, case.data.holdout
    result = kind.evaluate(case.model, case.data)
    truth = holdout["label"].to_numpy()
    predicted = scored["predicted_class"].to_numpy()
    rejected = scored["alarm"].to_numpy() == 1
    assert result["n_holdout"] == PER_CLASS and result["n_fit"] == 3 * PER_CLASS
    assert result["n_holdout_defective"] == PER_CLASS // 2
    confusion = np.asarray(result["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum(axis=1).tolist() == [PER_CLASS // 4] * 4
    assert result["accuracy"] == pytest.approx((predicted == truth).mean())
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / PER_CLASS)
    recalls = [(predicted[truth == k] == k).mean() for k in range(4)]
    assert [result["recall"][str(k)] for k in range(4)] == pytest.approx(recalls)
    assert result["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert result["defect_recall"] == pytest.approx(rejected[truth >= 2].mean()) == result["detection_rate"]
    assert result["false_reject_rate"] == pytest.approx(rejected[truth < 2].mean()) == result["far"]
    assert sorted(result["detection_rates"]) == ["class_2", "class_3"]
    if name == "cell_texture_svm":
        # 120 balanced fit cells at 30 x 30 already separate the classes well beyond chance (0.25).
        assert result["accuracy"] >= 0.45, result
    # The same through a held-out frame, and NaN where there is nothing to measure.
    assert kind.evaluate(case.model, holdout)["accuracy"] == result["accuracy"]
    empty = kind.evaluate(case.model, ImageSplit(case.data.fit, holdout.iloc[:0]))
    assert math.isnan(empty["accuracy"]) and math.isnan(empty["defect_recall"]) and empty["n_holdout"] == 0
    good_only = kind.evaluate(case.model, holdout[holdout["label"] < 2])
    assert math.isnan(good_only["defect_recall"]) and good_only["n_holdout_defective"] == 0
    # A stricter operating point rejects fewer cells (cell_pretrained chooses its own on the fit cells).
    if hasattr(case.model, "reject_threshold_"):
        assert result["reject_threshold"] == case.model.reject_threshold_
        return
    strict = get_kind(case.use_case.model_copy(update={"model": case.use_case.model.model_copy(
        update={"params": {**FAST_PARAMS[name], "reject_threshold": 0.95}})}))
    assert strict.evaluate(case.model, case.data)["false_reject_rate"] <= result["false_reject_rate"]


def _evaluation(accuracy: float, recall: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "defect_recall": recall, "false_reject_rate": 0.1}


def test_gate_refuses_a_degenerate_model_even_as_the_first_champion(cases):
    kind = cases("cell_texture_svm").kind
    # 100 held-out cells, 57 of class 0: a model calling 96 of them class 0 scores 0.61 accuracy.
    one_class = [[57, 0, 0, 0], [10, 0, 0, 0], [4, 0, 0, 0], [25, 0, 0, 4]]
    evaluation = {**_evaluation(0.61, 0.14), "balanced_accuracy": 0.3, "confusion": one_class}
    promoted, reason = kind.gate(evaluation, None, None)
    assert not promoted and reason.startswith("degenerate model refused: one class predicted for 96.0%"), reason
    assert not kind.gate(evaluation, _evaluation(0.5, 0.1), "1")[0]
    # Classes spread out but no better than chance: refused on balanced accuracy (<= 0.25 + 0.05).
    spread = {**_evaluation(0.61, 0.5), "balanced_accuracy": 0.30, "top_class_share": 0.7}
    promoted, reason = kind.gate(spread, None, None)
    assert not promoted and "balanced accuracy 0.3000 <= chance 1/4 + 0.05 = 0.3000" in reason, reason
    # Just above both limits: an ordinary first champion.
    fine = {**_evaluation(0.61, 0.5), "balanced_accuracy": 0.31, "top_class_share": 0.95}
    assert kind.gate(fine, None, None) == (True, "no champion to compare with")
    # evaluate() reports the share the guard reads.
    case = cases("cell_texture_svm")
    real = kind.evaluate(case.model, case.data)
    counts = np.bincount(case.scored["predicted_class"], minlength=4)
    assert real["top_class_share"] == pytest.approx(counts.max() / counts.sum())


@classifiers
def test_gate_promotes_on_accuracy_without_losing_defect_recall(cases, name):
    case = cases(name)
    kind = case.kind
    real = kind.evaluate(case.model, case.data)
    refused = kind.degenerate(real)
    if refused is None:
        assert kind.gate(real, None, None) == (True, "no champion to compare with")
        promoted, reason = kind.gate(real, None, "3")
        assert promoted and "v3 cannot score" in reason
    else:  # a 3-epoch CNN on 120 cells may well be degenerate: then never promoted
        assert kind.gate(real, None, None) == (False, refused)

    challenger = _evaluation(0.84, 0.90)
    promoted, reason = kind.gate(challenger, _evaluation(0.82, 0.90), "1")
    assert promoted and reason == ("four-class accuracy 0.8400 > champion v1 0.8200 at defect recall "
                                   "0.9000 >= 0.9000"), reason
    promoted, reason = kind.gate(challenger, _evaluation(0.80, 0.92), "1")
    assert not promoted and reason.startswith("defect recall 0.9000 below champion v1 0.9200"), reason
    promoted, reason = kind.gate(challenger, _evaluation(0.86, 0.85), "2")
    assert not promoted and reason == "four-class accuracy 0.8400 not above champion v2 0.8600", reason
    promoted, reason = kind.gate(challenger, _evaluation(0.84, 0.85), "2")
    assert promoted and "equal to champion v2" in reason and "0.9000 > 0.8500" in reason, reason
    promoted, reason = kind.gate(_evaluation(math.nan, math.nan), _evaluation(0.8, 0.8), "1")
    assert not promoted and "lacks labelled cells" in reason
    promoted, reason = kind.gate(_evaluation(0.9, math.nan), _evaluation(0.8, 0.8), "1")
    assert not promoted and "lacks defective cells" in reason
    # Today's normal operation does not overrule a classifier's gate: labels do.
    today = {"since": "2026-03-28T07:30:00+00:00", "rows": 120, "champion_far": 0.5}
    assert not kind.gate(challenger, _evaluation(0.86, 0.85), "2", today)[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from plantops.stages import registry

    home = tmp_path_factory.mktemp("vision_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANTOPS_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        registry.configure()
    return home / "mlflow.db"


@classifiers
def test_saved_and_loaded_through_mlflow_scores_the_same(cases, name, plantops_home, store):
    import shutil

    import mlflow
    import mlflow.sklearn

    from plantops.stages import registry

    case = cases(name)
    shutil.copy(store, plantops_home / "mlflow.db")
    client = registry.configure()
    experiment = client.create_experiment(
        f"test_vision_{name}", artifact_location=(plantops_home / "mlartifacts" / "vision").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(case.model, name="model", serialization_format="skops",
                                        skops_trusted_types=trusted_types(),
                                        pip_requirements=["scikit-learn", "numpy", "pandas", "skops"])
    registered = mlflow.register_model(info.model_uri, "pv_cells")
    loaded = registry.load_version("pv_cells", registered.version)
    assert type(loaded) is type(case.model) and "_net_cache" not in loaded.__dict__
    again = kind_of(case.use_case, loaded)
    assert again.name == name and again.params == case.kind.params
    pd.testing.assert_frame_equal(again.score(loaded, case.data.holdout), case.scored)


@classifiers
def test_wrong_params_name_the_field(cases, name, tmp_path):
    from pydantic import ValidationError

    case = cases(name)
    good = case.use_case.model_dump(mode="json")

    def refused(params: dict[str, Any]) -> str:
        with pytest.raises(ValidationError) as err:
            UseCase.model_validate({**good, "model": {**good["model"], "params": params}})
        return str(err.value)

    assert "model.params.no_such_param" in refused({"no_such_param": 1})
    assert "model.params.reject_threshold" in refused({"reject_threshold": 1.5})
    assert "model.params.defective_from" in refused({"defective_from": 0})
    side = "svm_size" if name == "cell_ensemble" else "size"
    text = refused({side: 64})  # 64 does not divide the 300-pixel image
    assert f"model.params.{side}" in text and "75" in text, text
    for field in case.kind.params_model.model_fields:
        assert f"model.params.{field}" in refused({field: {"not": "a value"}})
    if name == "cell_cnn":
        assert "model.params.epochs" in refused({"epochs": 0})
        assert "model.params.class_weight" in refused({"class_weight": "inverse"})
        assert "model.params.shift" in refused({"shift": 0.3})
    elif name == "cell_ensemble":
        assert "model.params.cnn_weight" in refused({"cnn_weight": 1.5})
        assert "model.params.cnn_size" in refused({"cnn_size": 64})
    elif name == "cell_pretrained":
        assert "model.params.views" in refused({"views": 3})
        assert "model.params.defect_recall_target" in refused({"defect_recall_target": 0})
        assert "model.params.C" in refused({"C": 0})
    else:
        assert "model.params.C" in refused({"C": -1})
        assert "model.params.vlad_clusters" in refused({"vlad_clusters": -1})
        assert "model.params.vlad_cells.0" in refused({"vlad_cells": [1]})

    path = tmp_path / "pv_cells.yaml"
    path.write_text(yaml.safe_dump({**good, "model": {**good["model"], "params": {"reject_threshold": 2}}},
                                   sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    assert str(err.value).startswith(str(path)) and "model.params.reject_threshold" in str(err.value)


def test_the_ensemble_is_the_weighted_mean_of_its_two_members(cases):
    case = cases("cell_ensemble")
    model, holdout = case.model, case.data.holdout
    # Both members at the rows' own side (None); the CNN trained the ensemble's 2 epochs.
    assert (model.svm_.size_, model.cnn_.size_, model.size_) == (SIZE, SIZE, SIZE)
    assert model.cnn_.epochs == 2 and len(model.cnn_.history_) == 2
    svm = model.svm_.predict_proba(holdout)
    cnn = model.cnn_.predict_proba(holdout)
    np.testing.assert_allclose(model.predict_proba(holdout), 0.5 * svm + 0.5 * cnn, atol=1e-12)
    np.testing.assert_allclose(case.scored[[f"p_class_{k}" for k in range(4)]].to_numpy(), 0.5 * svm + 0.5 * cnn,
                               atol=1e-12)
    # The weight moves the mean to one member: 0 is the SVM alone, 1 the CNN alone.
    model.set_params(cnn_weight=0.0)
    try:
        np.testing.assert_allclose(model.predict_proba(holdout), svm, atol=1e-12)
        model.set_params(cnn_weight=1.0)
        np.testing.assert_allclose(model.predict_proba(holdout), cnn, atol=1e-12)
    finally:
        model.set_params(cnn_weight=0.5)


def test_the_svm_reads_its_vlad_components_beside_the_texture_features(cases):
    case = cases("cell_texture_svm")
    model = case.model
    # 30 x 30: the descriptor cells of 10 and 8 pixels of the 300 image are both 1 pixel, raised to 2.
    assert model.vlad_scales_ == [2] and len(model.vlad_centres_) == 1
    assert model.vlad_centres_[0].shape == (64, 128)
    components = model.vlad_pca_.n_components_
    assert model.n_features_ == model.n_texture_features_ + components
    assert model.features(case.data.holdout).shape == (len(case.data.holdout), model.n_features_)
    assert case.kind.log_params(model)["vlad_cells"] == "2"
    # Without VLAD words the features are the texture features alone.
    plain = type(model)(vlad_clusters=0).fit(case.data.fit, case.kind.classes(case.data.fit))
    assert plain.n_features_ == model.n_texture_features_ and plain.vlad_centres_ == []


def test_cnn_augmentation_shifts_within_the_reflected_border_and_jitters_within_bounds():
    from plantops.kinds._cell_cnn_model import _augment

    batch = np.random.default_rng(0).normal(size=(6, 20, 20)).astype(np.float32)
    assert _augment(batch, 0.0, 0.0, np.random.default_rng(1)) is batch
    shifted = _augment(batch, 0.1, 0.0, np.random.default_rng(1))  # up to 2 pixels each way
    padded = np.pad(batch, ((0, 0), (2, 2), (2, 2)), mode="reflect")
    for i in range(len(batch)):
        crops = [padded[i, dy:dy + 20, dx:dx + 20] for dy in range(5) for dx in range(5)]
        assert sum(np.array_equal(shifted[i], c) for c in crops) >= 1
    jittered = _augment(batch, 0.0, 0.2, np.random.default_rng(1))
    # Per image an affine map a x + b with a in [0.8, 1.2] and b in [-0.2, 0.2].
    for i in range(len(batch)):
        a, b = np.polyfit(batch[i].ravel(), jittered[i].ravel(), 1)
        assert 0.8 <= a <= 1.2 and -0.2 <= b <= 0.2
