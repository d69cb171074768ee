"""The model-kind contract (:mod:`plantops.kinds.base`), checked for every registered kind.

Every test is parametrised over ``sorted(KINDS)``, so a kind added to the registry is tested here
without touching this file. Each kind runs on data that suits it, built once per module:

- detectors (``output == "detector"``): real TEP runs (Braatz data from the bibmon wheel) as the
  pipeline's feature contract builds them (3-minute buckets, 20-bucket rolling window, each run's
  first 20 rows dropped): test fault runs 1, 4 and 11 (labelled normal before sample 160,
  ``fault_NN`` after), a one-day gap, ``d00`` (unlabelled normal) and ``d00_te`` (labelled normal);
- regression kinds: ``wind_fleet``'s ``train_days`` (three weeks) of one La Haute Borne turbine's
  SCADA (from the openoa wheel) through the historian's quality rules and the feature contract
  (10-minute buckets, 6-bucket window), with a 15 % partial-load power loss injected into the last
  five days' raw power and labelled.

Both go through :func:`plantops.stages.training.select_training_data` as training does, so the
fit, held-out normal and held-out fault rows are exactly the training stage's.

Classifier kinds (``output == "classifier"``: image rows, four inspector classes) have their own
contract suite on real solar-cell images, ``tests/test_vision_kinds.py``, parametrised over every
registered classifier kind in the same way.
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

from plantops.config import ConfigError, UseCase, get_use_case, load_use_case
from plantops.features import feature_columns, wide_features_pandas
from plantops.kinds import KINDS, get_kind, kind_of, trusted_types
from plantops.kinds.base import far_limit

USE_CASES = Path(__file__).resolve().parents[1] / "include" / "use_cases"

# Parameters per kind (``model.params``). A new kind not listed runs with its defaults; a new
# regression kind with a target and its drivers (add it here if it needs more).
WIND_PARAMS = {
    "target": "P_avg",
    "drivers": ["Ws_avg", "Wa_avg", "Ot_avg"],
    "angular_drivers": ["Wa_avg"],
    "density_temperature": "Ot_avg",
}
KIND_PARAMS: dict[str, dict[str, Any]] = {
    "mspm_pca": {"explained_variance": 0.9},
    "mspm_early": {"explained_variance": 0.95, "ewma_lambda": 0.2},
    "normal_behaviour": WIND_PARAMS,
}
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "detector": {},
    "regression": {"target": "P_avg", "drivers": ["Ws_avg", "Wa_avg", "Ot_avg"]},
}

# Held-out normal rows: the share that may alarm. The promotion limit is 1.5 x target + 0.5 %
# (2 % here); a few hundred autocorrelated held-out rows of one simulation or six weeks of one
# turbine get a wider tolerance.
HELD_OUT_FAR_TOLERANCE = 0.05
TOP = 5  # a documented root tag is among the top TOP tags of an alarm

# -- TEP ------------------------------------------------------------------------------------------
TEP_FAULTS = (1, 4, 11)
TEP_START = pd.Timestamp("2024-01-01", tz="UTC")
TEP_GAP_ROWS = 480

# -- wind -----------------------------------------------------------------------------------------
TURBINE = "R80711"
WIND_START = pd.Timestamp("2014-06-01", tz="UTC")
WIND_MAX_DAYS = 42  # the data span the use case's train_days, at most this
WIND_FAULT_DAYS = 5
WIND_LOSS = 0.15
WIND_LABEL = "underperformance"
WIND_USE_CASE: dict[str, Any] = {
    "id": "wind_fleet",
    "plant": "La Haute Borne wind farm (ENGIE open data)",
    "description": "Normal-behaviour power curves of the four Senvion MM82 turbines",
    "historian": {"assets": [TURBINE]},
    "features": {"bucket": "10min", "rolling_buckets": 6, "lookback_days": 1},
    "model": {"kind": "normal_behaviour", "params": WIND_PARAMS, "false_alarm_rate": 0.01, "train_days": 21},
    "approvers": [{"id": "eng1", "name": "Wind site engineer (test)"}],
}


@dataclass(frozen=True)
class History:
    """Wide feature rows of one use case's plant, their labels and where training ends."""

    features: pd.DataFrame
    labels: pd.DataFrame
    end: pd.Timestamp
    asset: str | None  # the fleet asset trained on; None for a single-asset use case


@dataclass(frozen=True)
class Case:
    name: str
    use_case: UseCase
    kind: Any
    history: History
    data: Any  # TrainingData
    model: Any
    scored: pd.DataFrame  # kind.score(model, data.series)


def _with_kind(base: UseCase, name: str, params: dict[str, Any]) -> UseCase:
    """``base`` with ``model.kind``/``model.params`` replaced, and accepted by config validation."""
    copy = base.model_copy(update={"model": base.model.model_copy(update={"kind": name, "params": params})})
    validated = UseCase.model_validate(copy.model_dump())  # model_copy does not validate
    assert validated == copy
    return validated


def _tep_history(use_case: UseCase) -> History:
    from plantops.sources.tep import FAULT_ONSET_TEST, SAMPLE_SECONDS, TAGS, load_run

    assert use_case.features.bucket_seconds == SAMPLE_SECONDS
    asset, rolling = use_case.historian.asset, use_case.features.rolling_buckets

    def at(index: int) -> pd.Timestamp:
        return TEP_START + pd.Timedelta(seconds=index * SAMPLE_SECONDS)

    def segment(values: np.ndarray, first: int) -> pd.DataFrame:
        ts = at(first) + pd.to_timedelta(np.arange(len(values)) * SAMPLE_SECONDS, unit="s")
        long = pd.DataFrame(values, columns=list(TAGS)).assign(ts=ts).melt(
            id_vars="ts", var_name="tag", value_name="value").assign(asset=asset, quality="good")
        # Each run is its own simulation: its rolling windows start afresh and are full from row `rolling`.
        return wide_features_pandas(long, list(TAGS), SAMPLE_SECONDS, rolling).iloc[rolling:]

    parts, labels, position = [], [], 0
    for fault in TEP_FAULTS:
        run = load_run(fault, True)
        parts.append(segment(run, position))
        labels.append((asset, at(position), at(position + FAULT_ONSET_TEST), "normal"))
        labels.append((asset, at(position + FAULT_ONSET_TEST), at(position + len(run)), f"fault_{fault:02d}"))
        position += len(run)
    position += TEP_GAP_ROWS
    for test in (False, True):
        run = load_run(0, test)
        parts.append(segment(run, position))
        if test:
            labels.append((asset, at(position), at(position + len(run)), "normal"))
        position += len(run)
    features = pd.concat(parts, ignore_index=True)
    return History(features, pd.DataFrame(labels, columns=["asset", "start_ts", "end_ts", "label"]),
                   at(position), None)


def _wind_base() -> UseCase:
    path = USE_CASES / "wind_fleet.yaml"
    return load_use_case(path) if path.exists() else UseCase.model_validate(_wind_dict())


def _wind_dict() -> dict[str, Any]:
    from plantops.sources import scada

    tags = [{"name": t, "description": scada.DESCRIPTIONS[t], "unit": scada.UNITS[t],
             "min": scada.RANGES[t][0], "max": scada.RANGES[t][1]} for t in scada.TAGS]
    return {**WIND_USE_CASE, "tags": tags}


def _wind_history(use_case: UseCase) -> History:
    from bench.wind_nbm import loss_share
    from plantops.sources import scada

    turbine = use_case.assets[0]
    # The fit window (train_days before the end) covers the whole span, as a daily training would.
    end = WIND_START + pd.Timedelta(days=min(use_case.model.train_days, WIND_MAX_DAYS))
    fault_start = end - pd.Timedelta(days=WIND_FAULT_DAYS)
    raw = scada.load(turbine, start=WIND_START, end=end)
    hit = (raw["ts"] >= fault_start).to_numpy()
    # A pitch misalignment: power lost in partial load, none at rated (bench/wind_nbm.py's fault).
    raw.loc[hit, "P_avg"] *= 1 - loss_share(raw.loc[hit, "Ws_avg"].to_numpy(), WIND_LOSS)
    long = scada.long_rows(raw, scada.quality(raw))
    features = wide_features_pandas(long, list(use_case.tag_names), use_case.features.bucket_seconds,
                                    use_case.features.rolling_buckets)
    labels = pd.DataFrame([(turbine, fault_start, end, WIND_LABEL)],
                          columns=["asset", "start_ts", "end_ts", "label"])
    return History(features, labels, end, turbine)


@pytest.fixture(scope="module")
def cases():
    """Per kind name, its :class:`Case`; built on first use and kept for the module."""
    from plantops.stages.training import select_training_data

    histories: dict[str, tuple[UseCase, History]] = {}
    built: dict[str, Case] = {}

    def history(output: str) -> tuple[UseCase, History]:
        if output not in histories:
            base = get_use_case("tep_reactor") if output == "detector" else _wind_base()
            histories[output] = (base, _tep_history(base) if output == "detector" else _wind_history(base))
        return histories[output]

    def get(name: str) -> Case:
        if name not in built:
            output = KINDS[name].output
            base, hist = history(output)
            if base.model.kind == name:
                params = dict(base.model.params)
            else:
                params = KIND_PARAMS.get(name, DEFAULT_PARAMS[output])
            use_case = _with_kind(base, name, params)
            kind = get_kind(use_case)
            features = use_case.features
            warmup = pd.Timedelta(seconds=features.bucket_seconds * features.rolling_buckets)
            data = select_training_data(hist.features, hist.labels, hist.end, use_case.model.train_days,
                                        warmup=warmup)
            model = kind.fit(kind.build(), data.fit)
            built[name] = Case(name, use_case, kind, hist, data, model, kind.score(model, data.series))
        return built[name]

    return get


TABULAR = sorted(k for k, kind in KINDS.items() if kind.output in ("detector", "regression"))
kinds = pytest.mark.parametrize("name", TABULAR)


def test_every_kind_has_a_contract_suite():
    """Tabular kinds here; classifier kinds in tests/test_vision_kinds.py."""
    outputs = {name: kind.output for name, kind in KINDS.items()}
    assert set(outputs.values()) <= {"detector", "regression", "classifier"}, outputs
    assert sorted(TABULAR + [k for k, o in outputs.items() if o == "classifier"]) == sorted(KINDS)


def _fault_labels(case: Case) -> list[str]:
    return sorted(set(case.data.holdout_faults["label"]))


def _root_fault(case: Case) -> tuple[str, tuple[str, ...]]:
    """A held-out TEP fault whose root-cause tags are documented (fault 4 first, then 1)."""
    from plantops.sources.tep import FAULT_ROOT_TAGS

    labels = _fault_labels(case)
    for fault in (4, 1, *sorted(FAULT_ROOT_TAGS)):
        if f"fault_{fault:02d}" in labels:
            return f"fault_{fault:02d}", FAULT_ROOT_TAGS[fault]
    pytest.fail(f"no held-out fault with documented root tags among {labels}")


# -- 1. build and fit ---------------------------------------------------------------------------


@kinds
def test_build_is_unfitted_and_fit_reads_feature_columns(cases, name):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    case = cases(name)
    kind, model = case.kind, case.model
    assert kind.name == name and kind.output in ("detector", "regression")
    estimator = kind.build()
    assert isinstance(estimator, kind.estimator_class())
    assert kind.build() is not estimator  # a new estimator every time
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)
    for label, baseline in kind.baselines().items():
        assert isinstance(label, str) and label
        with pytest.raises(NotFittedError):
            check_is_fitted(baseline)

    assert isinstance(model, kind.estimator_class())
    check_is_fitted(model)
    columns = list(model.columns_)
    assert columns and len(set(columns)) == len(columns)
    assert np.shape(model.mean_) == np.shape(model.scale_) == (len(columns),)
    assert np.isfinite(model.mean_).all() and (np.asarray(model.scale_) > 0).all()
    contract = set(feature_columns(case.use_case.tag_names))
    assert set(columns) <= contract, sorted(set(columns) - contract)
    assert set(columns) <= set(case.data.fit.columns)
    # What training logs as MLflow params of the run: plain values.
    for key, value in kind.log_params(model).items():
        assert isinstance(key, str) and isinstance(value, (str, int, float, bool, type(None))), (key, value)
    # The model is recognised as its kind, from the estimator alone (how champions are loaded).
    assert kind_of(case.use_case, model).name == name


# -- 2. score -------------------------------------------------------------------------------------


@kinds
def test_score_columns_alarms_and_rates(cases, name):
    case = cases(name)
    kind, model, data, scored = case.kind, case.model, case.data, case.scored
    assert {"score", "alarm", "expected", "residual"} <= set(scored.columns)
    assert scored.index.equals(data.series.index)
    score = scored["score"].to_numpy(dtype=float)
    assert np.isfinite(score).all()
    assert (scored["alarm"].to_numpy() == (score > 1.0).astype(int)).all()
    if kind.output == "regression":
        target = kind.params.target
        finite = scored["expected"].notna()
        assert finite.mean() > 0.9
        actual = data.series[target]
        ok = finite & actual.notna()
        np.testing.assert_allclose(scored.loc[ok, "residual"], actual[ok] - scored.loc[ok, "expected"],
                                   atol=1e-9)
    else:
        assert scored["expected"].isna().all() and scored["residual"].isna().all()

    normal_rate = scored.loc[data.holdout_normal.index, "alarm"].mean()
    fault_rate = scored.loc[data.holdout_faults.index, "alarm"].mean()
    assert len(data.holdout_normal) > 100 and len(data.holdout_faults) > 100
    assert normal_rate <= HELD_OUT_FAR_TOLERANCE, normal_rate
    assert fault_rate >= max(5 * normal_rate, 0.1), (fault_rate, normal_rate)
    if kind.output == "detector":
        assert fault_rate >= 0.5, fault_rate

    # Rows come back on their own index whatever order they are passed in (temporal kinds order
    # them by asset and time themselves).
    shuffled = data.series.sample(frac=1.0, random_state=0)
    again = kind.score(model, shuffled)
    assert again.index.equals(shuffled.index)
    pd.testing.assert_frame_equal(again.loc[scored.index], scored)


# -- 3. evaluate and gate -------------------------------------------------------------------------


@kinds
def test_evaluate_reports_every_metric_and_nan_where_nothing_to_measure(cases, name):
    from plantops.stages.training import TrainingData

    case = cases(name)
    kind, model, data, scored = case.kind, case.model, case.data, case.scored
    result = kind.evaluate(model, data)
    keys = {"far", "detection_rate", "detection_rates", "detection_delay", "detection_delays",
            "n_fit", "n_holdout_normal", "n_holdout_faults"}
    assert keys <= set(result)
    if kind.output == "regression":
        assert {"rmse", "mae"} <= set(result)
        assert 0 < result["mae"] <= result["rmse"] < math.inf
        errors = kind.regression_errors(model, data.holdout_normal)
        assert (result["rmse"], result["mae"]) == pytest.approx((errors["rmse"], errors["mae"]))
        # A prediction worth the name: far better than the target's own spread on those rows.
        assert result["rmse"] < 0.5 * data.holdout_normal[kind.params.target].std()
    assert (result["n_fit"], result["n_holdout_normal"], result["n_holdout_faults"]) == (
        len(data.fit), len(data.holdout_normal), len(data.holdout_faults))
    assert result["far"] == pytest.approx(scored.loc[data.holdout_normal.index, "alarm"].mean())
    labels = _fault_labels(case)
    assert sorted(result["detection_rates"]) == labels == sorted(result["detection_delays"])
    for label in labels:
        rows = data.holdout_faults.index[data.holdout_faults["label"] == label]
        assert result["detection_rates"][label] == pytest.approx(scored.loc[rows, "alarm"].mean())
        assert 0 <= result["detection_delays"][label] <= len(rows)
    assert result["detection_rate"] == pytest.approx(np.mean(list(result["detection_rates"].values())))
    assert result["detection_delay"] == pytest.approx(np.median(list(result["detection_delays"].values())))

    no_faults = TrainingData(data.fit, data.holdout_normal, data.holdout_faults.iloc[:0], data.series)
    quiet = kind.evaluate(model, no_faults)
    assert quiet["far"] == pytest.approx(result["far"]) and quiet["n_holdout_faults"] == 0
    assert math.isnan(quiet["detection_rate"]) and math.isnan(quiet["detection_delay"])
    assert quiet["detection_rates"] == {} and quiet["detection_delays"] == {}

    no_normal = TrainingData(data.fit, data.holdout_normal.iloc[:0], data.holdout_faults, data.series)
    blind = kind.evaluate(model, no_normal)
    assert math.isnan(blind["far"]) and blind["n_holdout_normal"] == 0
    assert blind["detection_rates"] == pytest.approx(result["detection_rates"])
    if kind.output == "regression":
        assert math.isnan(blind.get("rmse", math.nan)) and math.isnan(blind.get("mae", math.nan))


def _evaluation(far: float, rate: float, delay: float, rmse: float) -> dict[str, Any]:
    return {"far": far, "detection_rate": rate, "detection_rates": {"fault_x": rate},
            "detection_delay": delay, "detection_delays": {"fault_x": delay},
            "rmse": rmse, "mae": 0.8 * rmse, "n_fit": 1000, "n_holdout_normal": 300, "n_holdout_faults": 300}


@kinds
def test_gate_promotes_and_refuses(cases, name):
    case = cases(name)
    kind = case.kind
    target = case.use_case.model.false_alarm_rate
    limit = far_limit(target)
    real = kind.evaluate(case.model, case.data)

    promoted, reason = kind.gate(real, None, None)
    assert promoted and reason
    promoted, _ = kind.gate(real, None, "3")  # a champion that cannot score today's features
    assert promoted

    # Better on every metric than `worse`, worse on every metric than `better`; all within the limit.
    challenger = _evaluation(far=target / 2, rate=0.8, delay=5.0, rmse=50.0)
    worse = _evaluation(far=target / 2, rate=0.6, delay=9.0, rmse=60.0)
    better = _evaluation(far=target / 2, rate=0.9, delay=3.0, rmse=40.0)
    promoted, reason = kind.gate(challenger, worse, "1")
    assert promoted, reason
    promoted, reason = kind.gate(challenger, better, "1")
    assert not promoted and reason
    noisy = {**challenger, "far": 2 * limit}
    promoted, reason = kind.gate(noisy, worse, "1")
    assert not promoted and reason
    blind = {**challenger, "far": math.nan}
    promoted, _ = kind.gate(blind, worse, "1")
    assert not promoted
    # A champion that false-alarms on today's normal rows is no longer valid: it loses to a valid
    # challenger even one that detects less; two invalid models are compared as usual.
    today = {"since": "2026-03-28T07:30:00+00:00", "rows": 120, "champion_far": 3 * limit}
    promoted, reason = kind.gate(challenger, better, "1", today)
    assert promoted and "no longer valid" in reason and "since 2026-03-28T07:30" in reason, reason
    promoted, reason = kind.gate(noisy, better, "1", today)  # two invalid models: compared as usual
    assert not promoted and "no longer valid" not in reason
    promoted, _ = kind.gate(challenger, better, "1", {**today, "champion_far": target})  # still valid
    assert not promoted


# -- 4. tag contributions -------------------------------------------------------------------------


@kinds
def test_tag_contributions_rank_the_tags_that_explain_alarms(cases, name):
    case = cases(name)
    kind, model, data, scored = case.kind, case.model, case.data, case.scored
    tags = set(case.use_case.tag_names)
    # Over the whole series (a temporal model needs the history), read at the rows of interest.
    per_tag = kind.tag_contributions(model, data.series)
    assert per_tag.index.equals(data.series.index)
    assert set(per_tag.columns) <= tags and len(set(per_tag.columns)) == len(per_tag.columns)
    values = per_tag.to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all()
    rows = data.holdout_faults
    subset = kind.tag_contributions(model, rows)
    assert subset.index.equals(rows.index) and set(subset.columns) <= tags
    assert (subset.to_numpy(dtype=float) >= 0).all()

    if kind.output == "regression":
        target = kind.params.target
        alarmed = scored["alarm"] == 1
        assert alarmed.sum() >= 20
        assert (per_tag[alarmed].idxmax(axis=1) == target).mean() >= 0.95
    else:
        label, roots = _root_fault(case)
        fault_rows = rows.index[rows["label"] == label]
        alarmed = fault_rows[scored.loc[fault_rows, "alarm"].to_numpy() == 1]
        assert len(alarmed) >= 20, (label, len(alarmed))
        parts = per_tag.loc[alarmed]
        top = parts.apply(lambda row: set(row.nlargest(TOP).index), axis=1)
        share = top.apply(lambda names: bool(names & set(roots))).mean()
        assert share >= 0.5, (label, roots, share)
        leading = list(parts.mean().nlargest(TOP).index)
        assert set(leading) & set(roots), (label, roots, leading)


# -- 5 and 6. MLflow round trip, training stage and its drift reference ----------------------------


@kinds
def test_drift_columns_are_feature_columns(cases, name):
    case = cases(name)
    columns = case.kind.drift_columns()
    assert columns and len(set(columns)) == len(columns)
    assert set(columns) <= set(case.history.features.columns)
    assert set(columns) <= set(feature_columns(case.use_case.tag_names))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store with its schema migrated (~5 s, 10-15 s on a busy box): each
    test copies it into its private PLANTOPS_HOME instead of migrating a new one."""
    from plantops.stages import registry

    home = tmp_path_factory.mktemp("empty_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLANTOPS_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        registry.configure()
    return home / "mlflow.db"


@kinds
def test_saved_and_loaded_through_mlflow_and_trained_by_the_training_stage(cases, name, plantops_home,
                                                                           empty_store):
    import shutil

    import mlflow
    import mlflow.sklearn

    from plantops.stages import registry
    from plantops.stages.training import train_and_register

    case = cases(name)
    kind, model, data = case.kind, case.model, case.data
    shutil.copy(empty_store, plantops_home / "mlflow.db")
    client = registry.configure()
    experiment = client.create_experiment(
        f"test_kinds_{name}", artifact_location=(plantops_home / "mlartifacts" / "test_kinds").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="skops",
                                        skops_trusted_types=trusted_types(),
                                        pip_requirements=["scikit-learn", "numpy", "pandas", "skops"])
    loaded = mlflow.sklearn.load_model(info.model_uri)
    assert type(loaded) is type(model)
    again = kind_of(case.use_case, loaded)
    assert again.name == name and again.params == kind.params
    pd.testing.assert_frame_equal(again.score(loaded, data.series), case.scored)
    pd.testing.assert_frame_equal(again.tag_contributions(loaded, data.holdout_faults),
                                  kind.tag_contributions(model, data.holdout_faults))

    # The training stage end to end: fit, evaluate beside the baselines, log, register, promote.
    hist = case.history
    result = train_and_register(case.use_case, hist.features, hist.labels, hist.end, asset=hist.asset,
                                run_tags={"airflow_run_id": f"test_kinds_{name}"})
    assert result["promoted"] and result["model_kind"] == name, result["reason"]
    registered = case.use_case.model_name(hist.asset)
    assert result["registered_model"] == registered
    champion = registry.load_version(registered, result["version"])
    assert kind_of(case.use_case, champion).name == name
    reference = registry.load_reference(registered)
    drift = kind.drift_columns()
    assert list(reference.columns) == list(dict.fromkeys([*champion.columns_, *drift]))
    assert 0 < len(reference) <= len(data.fit)
    # The reference sample is made of fit rows.
    fit_values = data.fit[list(reference.columns)].round(9)
    sample = reference.round(9)
    assert len(sample.merge(fit_values.drop_duplicates(), how="inner")) == len(sample)


# -- 7. configuration errors ----------------------------------------------------------------------

_WRONG = {"not": "a value of this field"}


@kinds
def test_wrong_params_name_the_field_and_unknown_kind_lists_kinds(cases, name, tmp_path):
    from pydantic import ValidationError

    case = cases(name)
    good = case.use_case.model_dump(mode="json")
    params = good["model"]["params"]
    fields = case.kind.params_model.model_fields

    def refused(new_params: dict[str, Any]) -> str:
        data = {**good, "model": {**good["model"], "params": new_params}}
        with pytest.raises(ValidationError) as err:
            UseCase.model_validate(data)
        return str(err.value)

    text = refused({**params, "no_such_param": 1})
    assert "model.params.no_such_param" in text
    for field, info in fields.items():
        text = refused({**params, field: _WRONG})
        assert f"model.params.{field}" in text, text
        if info.is_required():
            text = refused({k: v for k, v in params.items() if k != field})
            assert f"model.params.{field}" in text and "required" in text, text
    if "target" in fields:
        text = refused({**params, "target": "NoSuchTag"})
        assert "model.params" in text and "NoSuchTag" in text, text

    # The same through a YAML file: the file is named too, and the good file loads unchanged.
    path = tmp_path / f"{case.use_case.id}.yaml"
    path.write_text(yaml.safe_dump(good, sort_keys=False))
    assert load_use_case(path) == case.use_case
    field = next(iter(fields), None)
    bad = {**params, field: _WRONG} if field else {**params, "no_such_param": 1}
    path.write_text(yaml.safe_dump({**good, "model": {**good["model"], "params": bad}}, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    text = str(err.value)
    assert text.startswith(str(path)) and f"model.params.{field or 'no_such_param'}" in text, text

    unknown = {**good, "model": {**good["model"], "kind": "no_such_kind"}}
    path.write_text(yaml.safe_dump(unknown, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    text = str(err.value)
    assert "model.kind" in text and "no_such_kind" in text and all(k in text for k in KINDS), text


# -- 8. temporal context --------------------------------------------------------------------------


@kinds
def test_context_rows_make_a_window_score_like_the_whole_series(cases, name):
    """Scoring a batch (a day) with ``context_rows`` rows of history prepended gives the rows the
    scores and alarms they have in the continuous series; a kind without context needs none."""
    case = cases(name)
    kind, model, series, scored = case.kind, case.model, case.data.series, case.scored
    context = kind.context_rows(model)
    assert isinstance(context, int) and context >= 0
    n = 100
    # Windows ending at the series' last row and at the last held-out fault row (inside a fault).
    ends = sorted({len(series), series.index.get_loc(case.data.holdout_faults.index.max()) + 1})
    for end in ends:
        whole = scored.iloc[end - n:end]
        alone = kind.score(model, series.iloc[end - n:end])
        warm = kind.score(model, series.iloc[max(0, end - n - context):end]).iloc[-n:]
        assert warm.index.equals(whole.index) and alone.index.equals(whole.index)
        if context == 0:
            pd.testing.assert_frame_equal(alone, whole)
        # Exact for a kind whose memory is a window of rows (normal_behaviour's 24 h); a filter
        # restarted at the normal state keeps (1 - lambda)^context of the restart in the first rows
        # (mspm_early: under 1 %, up to a few % of the score where the fault state was large at the
        # context's start), so: the same alarms but for a row at the threshold, the first rows
        # closer than without history, and equal scores once the history reaches twice the context.
        assert (warm["alarm"] != whole["alarm"]).sum() <= 1
        error, error_alone = (warm["score"] - whole["score"]).abs(), (alone["score"] - whole["score"]).abs()
        assert error.max() <= error_alone.max() + 1e-9
        np.testing.assert_allclose(warm["score"].iloc[context:], whole["score"].iloc[context:],
                                   rtol=1e-3, atol=1e-9)
        others = [c for c in whole.columns if c not in ("score", "alarm")]
        pd.testing.assert_frame_equal(warm[others], whole[others])
