"""Real wind SCADA (La Haute Borne, from the openoa wheel) and the normal-behaviour model.

Fast (about 20 s): the data are read once, the features built once, eight small fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import wind_nbm
from plantops.features import feature_columns, wide_features_pandas
from plantops.kinds._normal_behaviour_model import NormalBehaviourModel
from plantops.sources import scada

TRUSTED = ["plantops.kinds._normal_behaviour_model.NormalBehaviourModel"]
# Held-out (2015) alarm-rate tolerance on normal-operation rows outside icing conditions: the limits
# are out-of-fold quantiles of one year (2014), and the year-to-year shift of the residual (its
# spread is 10-30 % larger in 2015) is not in them; the held-out rows also keep real events the
# conservative quality rules do not flag (e.g. R80790, 29-31 March and 20-22 November 2015). The
# bench measures 0.8-2.0 % per turbine (1.4 % mean), and 1.15 % with monthly refits.
FAR_TOLERANCE_EACH = 2.5
FAR_TOLERANCE_MEAN = 2.0


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return scada.load()


@pytest.fixture(scope="module")
def q(frame) -> pd.DataFrame:
    return scada.quality(frame)


@pytest.fixture(scope="module")
def long(frame, q) -> pd.DataFrame:
    return scada.long_rows(frame, q)


@pytest.fixture(scope="module")
def features(long) -> pd.DataFrame:
    return wide_features_pandas(long, list(scada.TAGS), wind_nbm.BUCKET_SECONDS, wind_nbm.ROLLING_BUCKETS)


@pytest.fixture(scope="module")
def fitted(features) -> dict:
    out = {}
    for turbine in scada.TURBINES:
        rows = features[features["asset"] == turbine]
        fit, held = rows[rows["ts"] < wind_nbm.FIT_END], rows[rows["ts"] >= wind_nbm.FIT_END]
        out[turbine] = {
            "fit": fit,
            "held": held,
            "nbm": wind_nbm.make_model().fit(fit),
            "binned": wind_nbm.make_model(regression="binned").fit(fit),
        }
    return out


@pytest.fixture(scope="module")
def faulty() -> pd.DataFrame:
    return wind_nbm.faulty_features()


# -- the data ---------------------------------------------------------------------------------


def test_data_loads_with_turbines_columns_and_span(frame):
    assert scada.data_path().name == "la_haute_borne.zip"
    assert list(frame.columns) == ["asset", "ts", *scada.TAGS]
    assert tuple(sorted(frame["asset"].unique())) == scada.TURBINES
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].min() == pd.Timestamp(scada.START) and frame["ts"].max() == pd.Timestamp(scada.END)
    assert len(frame) == 420_432 and scada.duplicates_dropped() == 48
    assert (frame.groupby("asset").size() == 105_108).all()
    assert not frame.duplicated(["asset", "ts"]).any()
    assert frame.equals(frame.sort_values(["asset", "ts"]))

    part = scada.load("R80711", start="2015-03-01", end="2015-03-02")
    assert len(part) == 144 and set(part["asset"]) == {"R80711"}
    part.loc[0, "P_avg"] = -1e9  # a copy: the cached frame is untouched
    assert scada.load("R80711", start="2015-03-01", end="2015-03-02").loc[0, "P_avg"] != -1e9
    with pytest.raises(ValueError, match="unknown turbines"):
        scada.load("R99999")


def test_descriptions_assets_and_licence_come_from_the_wheel():
    table = scada.read_descriptions().set_index("Variable_name")
    for tag in scada.TAGS:
        row = table.loc[tag.removesuffix("_avg")]
        assert scada.UNITS[tag] == row["Unit_long_name"]
        assert scada.DESCRIPTIONS[tag].lower() == row["Variable_long_name"].replace("_", " ").lower()
    assets = scada.read_assets()
    assert tuple(sorted(assets["Wind_turbine_name"])) == scada.TURBINES
    assert (assets["Rated_power"] == scada.RATED_POWER_KW).all()
    text = scada.licence_text()
    assert "ENGIE" in text and "Open License version 2.0" in text


# -- data quality -----------------------------------------------------------------------------


def _constructed() -> pd.DataFrame:
    """One turbine, 60 slots of plausible operation with one case of each reason."""
    n = 60
    ts = pd.date_range("2015-01-01", periods=n, freq="10min", tz="UTC")
    i = np.arange(n)
    ws = 7.0 + 0.3 * np.sin(i / 3.0) + 0.001 * i
    frame = pd.DataFrame({
        "asset": "T1",
        "ts": ts,
        "Ba_avg": -1.0,
        "P_avg": scada.expected_power(ws) * (1 + 0.02 * np.cos(i)),
        "Ws_avg": ws,
        "Va_avg": 2.0 * np.sin(i),
        "Ot_avg": 10.0 + 0.05 * np.sin(i / 2.0) + 0.001 * i,
        "Ya_avg": 180.0,
        "Wa_avg": 180.0 + 2.0 * np.sin(i),
    })
    frame.loc[0:19, "Ot_avg"] = 5.0  # stuck temperature: 20 >= 18 samples
    frame.loc[25, ["Ot_avg", "Ws_avg", "P_avg"]] = [-1.0, 8.0, 100.0]  # icing: cold, low power
    frame.loc[27, ["Ba_avg", "Ws_avg", "P_avg"]] = [12.0, 10.0, 600.0]  # curtailment: pitched, low power
    frame.loc[29, ["Ws_avg", "P_avg"]] = [8.0, 0.0]  # stopped in wind, pitch at fine
    frame.loc[31, "Ot_avg"] = -273.2  # impossible
    frame.loc[33, scada.TAGS] = np.nan  # an empty row
    frame.loc[40:49, ["Ws_avg", "P_avg"]] = [0.0, -1.0]  # calm: rest values repeat, not stuck
    frame = frame.drop(index=[36, 37])  # two absent slots
    return frame


def test_quality_flags_on_a_constructed_frame():
    frame = _constructed()
    q = scada.quality(frame)
    assert q.index.equals(frame.index)
    reason = {tag: q[f"{tag}__reason"] for tag in scada.TAGS}
    assert (reason["Ot_avg"].loc[0:19] == "stuck").all() and reason["Ot_avg"].loc[20:24].isna().all()
    assert (q["Ot_avg__quality"].loc[0:19] == "bad").all()
    assert reason["P_avg"][25] == "icing" and q["P_avg__quality"][25] == "questionable"
    assert reason["P_avg"][27] == "curtailment" and reason["P_avg"][29] == "stopped"
    assert reason["Ot_avg"][31] == "out_of_range" and q["Ot_avg__quality"][31] == "bad"
    assert all(reason[tag][33] == "missing" for tag in scada.TAGS)
    assert reason["Ws_avg"].loc[40:49].isna().all() and reason["P_avg"].loc[40:49].isna().all()
    # Ya_avg is constant for 58 samples, below its 144-sample rule; pitch has no stuck rule.
    assert reason["Ya_avg"].drop(index=33).isna().all() and reason["Ba_avg"].drop(index=33).isna().all()
    flagged = {(t, i) for t in scada.TAGS for i in reason[t].dropna().index}
    expected = ({("Ot_avg", i) for i in range(20)} | {("P_avg", 25), ("P_avg", 27), ("P_avg", 29), ("Ot_avg", 31)}
                | {(t, 33) for t in scada.TAGS})
    assert flagged == expected  # every other value stays good

    shuffled = frame.sample(frac=1.0, random_state=0)
    assert scada.quality(shuffled).loc[frame.index].equals(q)

    gaps = scada.gaps(frame)
    assert gaps[["samples"]].to_dict("list") == {"samples": [1, 2]}
    assert gaps["start"].tolist() == [frame["ts"][33], frame["ts"][35] + pd.Timedelta(minutes=10)]


def test_quality_on_the_real_data_counts_add_up_and_nothing_is_dropped(frame, q, long):
    counts = scada.reason_counts(q)
    totals = counts.sum()
    for reason in scada.REASONS:
        assert totals[reason] > 0, reason
    assert (counts[["good", *scada.REASONS]].sum(axis=1) == counts["values"]).all()
    assert (counts["values"] == 105_108).all()
    for tag in scada.TAGS:
        values = frame[tag]
        quality, reason = q[f"{tag}__quality"], q[f"{tag}__reason"]
        assert ((quality == "good") == reason.isna()).all()
        assert ((reason == "missing") == values.isna()).all()
    assert len(long) == len(frame) * len(scada.TAGS)
    assert long["value"].notna().sum() == frame[list(scada.TAGS)].notna().sum().sum()
    assert set(long["quality"]) <= set(scada.QUALITIES)
    assert (long["quality"] == "good").sum() == totals["good"]
    within = long[long["quality"] != "bad"]
    for tag, (low, high) in scada.RANGES.items():
        v = within.loc[within["tag"] == tag, "value"]
        assert v.between(low, high).all(), tag

    summary = scada.quality_summary(frame, q)
    assert list(summary.index) == list(scada.TURBINES)
    assert (summary["gaps"] > 0).all() and summary.loc["R80721", "longest_gap"] >= pd.Timedelta(days=5)
    assert np.allclose(summary[[f"{r}_share" for r in ("good", *scada.REASONS)]].sum(axis=1), 1.0)


# -- the normal-behaviour model ---------------------------------------------------------------


def test_features_are_the_project_contract(features):
    assert list(features.columns) == ["asset", "ts", *feature_columns(list(scada.TAGS))]


def test_nbm_beats_the_binned_power_curve_on_held_out_rmse(fitted):
    for turbine, f in fitted.items():
        nbm, binned = f["nbm"].evaluate_regression(f["held"]), f["binned"].evaluate_regression(f["held"])
        assert set(nbm) == {"rmse", "mae", "r2", "n"} and nbm["n"] > 40_000
        assert nbm["rmse"] < 0.97 * binned["rmse"], (turbine, nbm, binned)
        assert nbm["mae"] < binned["mae"] and nbm["r2"] > binned["r2"] > 0.97


def test_nbm_meets_its_false_alarm_target_on_held_out_data(fitted):
    rates = []
    for turbine, f in fitted.items():
        model = f["nbm"]
        rate = wind_nbm.held_alarm_rates(model, f["held"])["held_alarm_rate_no_icing"]
        assert rate <= FAR_TOLERANCE_EACH * model.false_alarm_rate, (turbine, rate)
        fit_rate = model.predict(f["fit"])[model.normal_rows(f["fit"])].mean()
        assert fit_rate <= model.false_alarm_rate * 1.5, (turbine, fit_rate)  # in-sample, after OOF limits
        rates.append(rate)
    assert np.mean(rates) <= FAR_TOLERANCE_MEAN * fitted["R80711"]["nbm"].false_alarm_rate


def test_nbm_detects_the_injected_underperformance(fitted, faulty):
    nbm_rates, binned_rates = [], []
    for turbine, f in fitted.items():
        bad = faulty[faulty["asset"] == turbine]
        nbm = wind_nbm.detection(f["nbm"], bad, f["held"])
        binned = wind_nbm.detection(f["binned"], bad, f["held"])
        assert nbm["affected_rows"] > 1000
        assert nbm["detection_rate"] >= 3 * nbm["same_rows_without_fault"], (turbine, nbm)
        assert nbm["detection_rate"] > binned["detection_rate"], (turbine, nbm, binned)
        assert nbm["first_alarm_day"] is not None and nbm["first_alarm_day"] <= 7
        nbm_rates.append(nbm["detection_rate"])
        binned_rates.append(binned["detection_rate"])
    assert np.mean(nbm_rates) >= 1.5 * np.mean(binned_rates)


def test_an_alarm_is_explained_by_the_target_residual_first(fitted, faulty):
    f = fitted["R80736"]
    model = f["nbm"]
    bad = faulty[faulty["asset"] == "R80736"]
    parts = model.contributions(bad)
    assert list(parts.columns) == model.columns_ == ["P_avg", "Ws_avg", "Wa_avg", "Ot_avg"]
    assert parts.index.equals(bad.index) and (parts.to_numpy() >= 0).all()
    alarms = model.predict(bad) == 1
    assert alarms.sum() > 100
    top = parts[alarms].idxmax(axis=1)
    assert (top == "P_avg").mean() >= 0.95
    assert parts.loc[bad.index[np.argmax(model.score_samples(bad))]].idxmax() == "P_avg"
    assert np.allclose(parts["P_avg"], model.score_samples(bad))
    # A driver outside what the model was fitted on says so; inside, its part is 0.
    row = bad[model.scorable(bad)].iloc[[0]].copy()
    assert (model.contributions(row)[["Ws_avg", "Ot_avg"]] == 0).all(axis=None)
    row["Ws_avg"], row["Ot_avg"] = 30.0, 44.0
    assert (model.contributions(row)[["Ws_avg", "Ot_avg"]] > 1).all(axis=None)


def test_attributes_and_unscorable_rows(fitted):
    f = fitted["R80711"]
    model, held = f["nbm"], f["held"].iloc[:2000].copy()
    assert model.columns_ == ["P_avg", "Ws_avg", "Wa_avg", "Ot_avg"] and model.n_features_in_ == 4
    assert model.mean_.shape == model.scale_.shape == (4,) and (model.scale_ > 0).all()
    assert model.key_columns_ == ["asset", "ts"] and model.bucket_seconds_ == 600
    held.iloc[10, held.columns.get_loc("Ws_avg")] = np.nan
    held.iloc[11, held.columns.get_loc("P_avg")] = np.nan
    held.iloc[13, held.columns.get_loc("P_avg")] = held.iloc[12, held.columns.get_loc("P_avg")]  # carried forward
    ok = model.scorable(held)
    assert not ok[[10, 11, 13]].any() and ok[[0, 1, 2, 12]].all()
    scores = model.score_samples(held)
    assert (scores[~ok] == 0).all() and (model.predict(held)[~ok] == 0).all() and np.isfinite(scores).all()
    assert np.isnan(model.predict_expected(held)[10]) and np.isnan(model.residuals(held)[11])


def test_fit_is_robust_to_values_removed_upstream(fitted):
    """Non-good values arrive as NaN or as carried-forward copies: the fit must not learn them."""
    f = fitted["R80721"]
    fit = f["fit"].copy()
    rng = np.random.default_rng(0)
    col = fit.columns.get_loc("P_avg")
    nan_rows = rng.choice(len(fit), size=len(fit) // 20, replace=False)
    fit.iloc[nan_rows, col] = np.nan
    # A 2-hour stop every 3 days, carried forward as the last good value (what the features do).
    starts = range(100, len(fit) - 12, 432)
    for start in starts:
        fit.iloc[start + 1:start + 13, col] = fit.iloc[start, col]
    model = wind_nbm.make_model().fit(fit)
    # Rows missing the target or a driver: the NaN put in here, and the real ones the features
    # carry (a tag silent for longer than features.max_gap, e.g. R80721's stuck Ot_avg in June 2014).
    assert model.n_dropped_missing_ == fit[model.columns_].isna().any(axis=1).sum() >= len(nan_rows)
    copies = np.concatenate([np.arange(start + 1, start + 13) for start in starts])
    assert not model.scorable(fit)[copies].any()
    clean, damaged = f["nbm"].evaluate_regression(f["held"]), model.evaluate_regression(f["held"])
    assert damaged["rmse"] < 1.01 * clean["rmse"]


def test_skops_round_trip(fitted):
    import skops.io as sio

    f = fitted["R80790"]
    for name in ("nbm", "binned"):
        model = f[name]
        data = sio.dumps(model)
        assert sio.get_untrusted_types(data=data) == TRUSTED
        loaded = sio.loads(data, trusted=TRUSTED)
        assert isinstance(loaded, NormalBehaviourModel) and loaded.get_params() == model.get_params()
        held = f["held"].iloc[:5000]
        assert np.array_equal(loaded.score_samples(held), model.score_samples(held))
        assert loaded.contributions(held).equals(model.contributions(held))


def test_rows_without_keys_are_one_asset_in_order(fitted):
    """The scoring stage may pass only ``columns_``: the rows are then one asset, one bucket apart."""
    f = fitted["R80711"]
    held = f["held"].iloc[:3000]
    model = f["nbm"]
    bare = held[model.columns_]
    assert np.array_equal(model.scorable(bare), model.scorable(held))
    stats, bare_stats = model.statistics(held), model.statistics(bare)
    assert np.allclose(stats["instant"], bare_stats["instant"])
    complete = held["ts"].diff().dt.total_seconds().fillna(600).eq(600).all()
    if complete:
        assert np.allclose(stats["smoothed"], bare_stats["smoothed"])
    assert np.corrcoef(stats["smoothed"], bare_stats["smoothed"])[0, 1] > 0.95


def test_bad_parameters_are_refused(fitted):
    fit = fitted["R80711"]["fit"]
    for params, match in (
        ({"false_alarm_rate": 0.7}, "false_alarm_rate"),
        ({"calibration_folds": 1}, "calibration_folds"),
        ({"regression": "forest"}, "regression"),
        ({"drivers": ("P_avg", "Ws_avg")}, "target"),
    ):
        with pytest.raises(ValueError, match=match):
            NormalBehaviourModel(**params).fit(fit)
