"""Training and champion/challenger promotion on real TEP data and a real (sqlite) MLflow store.

The plant history is built from the Braatz TEP runs, one segment after another in 3-minute
buckets, each segment's features computed on its own (the runs are separate simulations, so a
rolling window must not span two of them):

    fault test runs (2 days each, labelled normal before sample 160, fault_NN after)
    | a 1-day gap (empty; the contaminated history fills it with unlabelled faults 4 and 11)
    | d00.dat (unlabelled normal) | d00_te.dat (labelled normal)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plantops.config import get_use_case
from plantops.features import wide_features_pandas
from plantops.sources.tep import FAULT_ONSET_TEST, SAMPLE_SECONDS, TAGS, load_run

FAULTS = (1, 2, 4, 6, 7, 11, 14)
START = pd.Timestamp("2024-01-01", tz="UTC")
GAP_ROWS = 480


@pytest.fixture(scope="module")
def use_case():
    return get_use_case("tep_reactor")


def _segment(values: np.ndarray, first: int, asset: str, rolling: int) -> pd.DataFrame:
    """Wide features of one run placed at bucket index ``first``; the first ``rolling`` rows are
    dropped because their rolling statistics cover less than a full window."""
    n = len(values)
    ts = START + pd.to_timedelta((first + np.arange(n)) * SAMPLE_SECONDS, unit="s")
    long = pd.DataFrame(values, columns=list(TAGS)).assign(ts=ts).melt(
        id_vars="ts", var_name="tag", value_name="value"
    )
    long = long.assign(asset=asset, quality="good")
    wide = wide_features_pandas(long, list(TAGS), SAMPLE_SECONDS, rolling)
    return wide.iloc[rolling:]


def _at(index: int) -> pd.Timestamp:
    return START + pd.Timedelta(seconds=index * SAMPLE_SECONDS)


@pytest.fixture(scope="module")
def history(use_case):
    """Clean features, contaminated features, labels and the training end."""
    asset, rolling = use_case.historian.asset, use_case.features.rolling_buckets
    parts, labels, at = [], [], 0
    for fault in FAULTS:
        run = load_run(fault, True)
        parts.append(_segment(run, at, asset, rolling))
        labels.append((asset, _at(at), _at(at + FAULT_ONSET_TEST), "normal"))
        labels.append((asset, _at(at + FAULT_ONSET_TEST), _at(at + len(run)), f"fault_{fault:02d}"))
        at += len(run)
    gap_at, at = at, at + GAP_ROWS
    for test in (False, True):
        run = load_run(0, test)
        parts.append(_segment(run, at, asset, rolling))
        if test:
            labels.append((asset, _at(at), _at(at + len(run)), "normal"))
        at += len(run)
    clean = pd.concat(parts, ignore_index=True)
    # Reactor cooling-water trouble (faults 4 and 11) nobody labelled, inside the fit window: a
    # model fitted on it learns those faults as normal operation.
    dirt = [_segment(load_run(f, False)[: GAP_ROWS // 2], gap_at + i * GAP_ROWS // 2, asset, rolling)
            for i, f in enumerate((4, 11))]
    dirty = pd.concat([clean, *dirt], ignore_index=True).sort_values("ts", ignore_index=True)
    label_frame = pd.DataFrame(labels, columns=["asset", "start_ts", "end_ts", "label"])
    return {"clean": clean, "dirty": dirty, "labels": label_frame, "end": _at(at)}


def test_holdout_is_the_same_whatever_the_fit_window(history, use_case):
    from plantops.stages.training import select_training_data

    a = select_training_data(history["clean"], history["labels"], history["end"], 14)
    b = select_training_data(history["dirty"], history["labels"], history["end"] - pd.Timedelta(days=1), 3)
    # Same rows; the index is each call's own series (the dirty history has more rows).
    pd.testing.assert_frame_equal(a.holdout_normal.reset_index(drop=True), b.holdout_normal.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.holdout_faults.reset_index(drop=True), b.holdout_faults.reset_index(drop=True))
    assert set(a.holdout_faults["label"]) == {f"fault_{f:02d}" for f in FAULTS}
    assert not a.fit["ts"].isin(a.holdout_normal["ts"]).any()
    assert not a.fit["ts"].isin(a.holdout_faults["ts"]).any()
    assert a.fit["ts"].min() >= history["end"] - pd.Timedelta(days=14)


def _rows(days: int) -> pd.DataFrame:
    ts = pd.date_range("2026-03-01", periods=days * 480, freq="3min", tz="UTC")
    return pd.DataFrame({"asset": "tep_reactor", "ts": ts, "XMEAS_1": range(len(ts))})


def _labels(*rows: tuple[str, str, str]) -> pd.DataFrame:
    frame = pd.DataFrame([("tep_reactor", pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC"), label)
                          for a, b, label in rows], columns=["asset", "start_ts", "end_ts", "label"])
    return frame


def test_every_normal_period_is_learned_and_tested_and_upsets_are_neither():
    from plantops.stages.training import select_training_data

    labels = _labels(("2026-03-01", "2026-03-02", "normal"), ("2026-03-03", "2026-03-04", "fault_01"),
                     ("2026-03-04", "2026-03-05", "upset"), ("2026-03-05", "2026-03-06", "upset"),
                     ("2026-03-05", "2026-03-06", "normal"))  # false-alarm feedback on an upset day
    data = select_training_data(_rows(6), labels, pd.Timestamp("2026-03-07", tz="UTC"), 14)
    day = lambda frame: set(frame["ts"].dt.day)  # noqa: E731
    # The last 30 % of each normal period is held out; the first 70 % of each is fitted.
    assert day(data.holdout_normal) == {1, 5} and day(data.fit) == {1, 2, 5, 6}
    for d in (1, 5):
        held = data.holdout_normal[data.holdout_normal["ts"].dt.day == d]
        assert len(held) == 144 and held["ts"].min() == pd.Timestamp(f"2026-03-0{d} 16:48", tz="UTC")
    assert day(data.holdout_faults) == {3} and set(data.holdout_faults["label"]) == {"fault_01"}
    # The upset nobody confirmed normal (day 4) is in no set; the one labelled normal (day 5) is normal.
    assert 4 not in day(data.fit) | day(data.holdout_normal) | day(data.holdout_faults)


def test_a_new_reference_defines_normal_and_keeps_the_fault_library():
    from plantops.stages.training import select_training_data

    labels = _labels(("2026-03-01", "2026-03-02", "normal"), ("2026-03-02", "2026-03-03", "fault_07"),
                     ("2026-03-05", "2026-03-06", "upset"))
    reference = pd.Timestamp("2026-03-04 06:00", tz="UTC")
    data = select_training_data(_rows(6), labels, pd.Timestamp("2026-03-07", tz="UTC"), 14, reference,
                                warmup=pd.Timedelta(hours=1))
    settled = reference + pd.Timedelta(hours=1)
    normal = pd.concat([data.fit, data.holdout_normal])
    # Only rows after the reference (and its warm-up), outside the upset day, are normal operation.
    assert normal["ts"].min() == settled and 5 not in set(normal["ts"].dt.day)
    assert len(data.holdout_normal) == pytest.approx(0.3 * len(normal), abs=2)
    assert data.holdout_normal["ts"].min() > data.fit["ts"].max()
    assert set(data.holdout_faults["label"]) == {"fault_07"}


def test_detector_beats_pca_baseline_at_the_same_false_alarm_rate(history, use_case):
    from plantops.kinds.mspm_pca import MspmPca, Params
    from plantops.stages.training import select_training_data

    days = use_case.model.train_days
    data = select_training_data(history["clean"], history["labels"], history["end"], days)
    kind = MspmPca(use_case, Params(explained_variance=0.95))
    detector = kind.build().fit(data.fit)
    baseline = kind.baselines()["baseline"].fit(data.fit)
    ours, base = kind.evaluate(detector, data), kind.evaluate(baseline, data)
    target = use_case.model.false_alarm_rate
    # At its own control limits: no more false alarms than the promotion budget allows, or than
    # the textbook monitor raises on the same rows (the held-out tail is one simulation's drift).
    assert ours["far"] <= max(target * 1.5 + 0.005, base["far"] + 0.01)
    assert ours["detection_rate"] >= base["detection_rate"]
    # The same comparison with each model's threshold set so both alarm on exactly the same share
    # of held-out normal rows: a gain bought with extra false alarms would show here.
    matched = {}
    for name, model in (("ours", detector), ("base", baseline)):
        threshold = np.quantile(model.score_samples(data.holdout_normal), 1 - target)
        alarms = model.score_samples(data.holdout_faults) > threshold
        labels = data.holdout_faults["label"].to_numpy()
        matched[name] = np.mean([alarms[labels == lab].mean() for lab in set(labels)])
    assert matched["ours"] >= matched["base"]
    # Fault 11 (random variation of the reactor cooling water temperature) is where rolling
    # statistics matter: the per-bucket means alone miss a large share of it.
    assert ours["detection_rates"]["fault_11"] > base["detection_rates"]["fault_11"] + 0.1


def test_first_model_becomes_champion(plantops_home, history, use_case):
    from mlflow import MlflowClient

    from plantops.stages import registry
    from plantops.stages.training import train_and_register

    result = train_and_register(use_case, history["clean"], history["labels"], history["end"],
                                run_tags={"airflow_run_id": "first", "git_commit": "abc123"})
    assert result["promoted"] and result["champion_version"] == result["version"]
    assert registry.champion(use_case.id) == (result["version"], result["run_id"])
    assert result["metrics"]["detection_rate"] >= result["metrics"]["baseline_detection_rate"]

    run = MlflowClient().get_run(result["run_id"])
    assert run.data.tags["git_commit"] == "abc123" and run.data.tags["decision"] == "promoted"
    assert {"detection_rate", "far", "baseline_detection_rate", "baseline_far",
            "detection_rate_fault_11"} <= set(run.data.metrics)
    experiment = MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == use_case.id and experiment.artifact_location.endswith(f"/{use_case.id}")

    model = registry.load_champion(use_case.id)
    normal = history["clean"].tail(50)
    assert model.predict(normal).mean() < 0.5
    reference = registry.load_reference(use_case.id)
    assert list(reference.columns) == list(model.columns_) and len(reference) > 500


def test_contaminated_challenger_is_not_promoted(plantops_home, history, use_case):
    from mlflow import MlflowClient

    from plantops.stages import registry
    from plantops.stages.training import train_and_register

    first = train_and_register(use_case, history["clean"], history["labels"], history["end"],
                               run_tags={"airflow_run_id": "clean"})
    second = train_and_register(use_case, history["dirty"], history["labels"], history["end"],
                                run_tags={"airflow_run_id": "dirty"})
    assert second["version"] != first["version"]
    assert not second["promoted"], second["reason"]
    assert second["champion_version"] == first["version"]
    assert registry.champion(use_case.id)[0] == first["version"]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(use_case.id, "challenger").version) == second["version"]
    tags = client.get_model_version(use_case.id, second["version"]).tags
    assert tags["decision"] == "kept_champion" and tags["airflow_run_id"] == "dirty"
    # The champion was scored on the challenger's held-out rows, not taken from its own run.
    assert second["champion_metrics"]["detection_rate"] > second["metrics"]["detection_rate"]
    assert second["metrics"]["detection_rate_fault_04"] < 0.5 < second["champion_metrics"]["detection_rate_fault_04"]


def test_same_airflow_run_registers_one_version(plantops_home, history, use_case):
    from mlflow import MlflowClient

    from plantops.stages.training import train_and_register

    args = (use_case, history["clean"], history["labels"], history["end"])
    first = train_and_register(*args, run_tags={"airflow_run_id": "retry"})
    again = train_and_register(*args, run_tags={"airflow_run_id": "retry"})
    assert again == first
    # A retry after a crash between registering and deciding finishes the decision instead.
    client = MlflowClient()
    client.delete_model_version_tag(use_case.id, first["version"], "decision")
    resumed = train_and_register(*args, run_tags={"airflow_run_id": "retry"})
    assert resumed["version"] == first["version"] and resumed["promoted"]
    assert client.get_model_version(use_case.id, first["version"]).tags["decision"] == "promoted"
    assert len(client.search_model_versions(f"name = '{use_case.id}'")) == 1


def test_too_little_data_is_refused(plantops_home, history, use_case):
    from plantops.stages.training import train_and_register

    late_start = history["end"] - pd.Timedelta(hours=3)
    with pytest.raises(ValueError, match=r"only \d+ training rows .*min_train_rows is 200"):
        train_and_register(use_case, history["clean"], history["labels"], history["end"],
                           reference_start=late_start)
