"""Normal-behaviour model (NBM): predict a target from its drivers, alarm on the residual.

Written for wind-turbine SCADA (target ``P_avg``, drivers wind speed, wind direction, outdoor
temperature; see :mod:`plantops.sources.scada`), general enough for any target that is a smooth
function of one main driver with corrections by the others.

The regression
--------------
A penalised additive model fitted by ridge least squares on a fixed basis, all in numpy:

    expected = f(v) + sum_k g_k(v) * x_k + sum_a sum_h g_ah(v) * (sin h*a, cos h*a)

- ``v`` is the main driver (``curve_driver``, default the first driver: wind speed). With
  ``density_temperature`` set it is normalised to the reference air density at constant pressure,
  ``v * (288.15 K / T)^(1/3)`` (IEC 61400-12-1's normalisation; the SCADA has no pressure, and at a
  fixed site the pressure varies by ~2 % against ~15 % for temperature);
- ``f`` is the power curve: piecewise-linear hat functions on knots every ``bin_width`` (0.5 m/s,
  the IEC bin) with a second-difference penalty (a P-spline), so sparse bins at high wind borrow
  from their neighbours instead of following their noise;
- ``g_k`` are corrections, varying with ``v`` on a coarse basis (knots at quantiles of ``v``), for
  every other linear driver (temperature, standardised) and ``harmonics`` sine/cosine pairs of each
  angular driver (direction: wakes of the neighbouring turbines and the terrain change the nacelle
  anemometer's reading by sector). Varying with ``v`` lets a correction vanish above rated, where
  the power is flat whatever the density or the direction.

Why this and not gradient boosting: on La Haute Borne (fit 2014, held out 2015, per turbine) it
was at least as accurate as ``HistGradientBoostingRegressor`` on the same drivers (held-out RMSE
42-63 kW against 44-66 kW) and beat the binned power curve by 6-15 % (``bench/wind_nbm.py``), fits
50k rows in under a second on one BLAS thread (boosting took 18-33 s on the two-core box),
extrapolates flat instead of in steps, and its state is a handful of float arrays: skops loads it
with one trusted type (this class). Rolling columns (``Ws_avg__rstd`` as a turbulence proxy,
``Ws_avg__rmean``) and the hour of day (a stability proxy) were tried and gained < 1.5 % RMSE, so
only the base columns are read.

Fit rows: plausibly normal operation
------------------------------------
1. target and drivers finite (the count dropped is logged, and kept as ``n_dropped_missing_``);
2. target not carried forward: the feature contract fills a bucket without good values with the
   last good one, so a target equal to the previous bucket's (same asset) is a stale copy, not a
   measurement (a real 10-minute mean power repeats in 0.01 % of production rows; wind speed, at
   0.01 m/s resolution, in 0.9 %, so drivers are not tested this way);
3. producing or becalmed: ``v < cut_in`` or ``target > idle_level``. A turbine idle in wind is
   stopped or curtailed, which the model must not learn as normal;
4. robust trimming: after a first fit, rows whose residual is beyond ``trim`` robust standard
   deviations (at that wind speed) are left out and the model refitted, up to three fits. This
   takes out derating, icing and stops that the data-quality rules did not flag.

Scoring
-------
The residual ``r = actual - expected`` is standardised by its spread at that wind speed,
``z = r / sigma(v)`` (sigma: robust, 1.4826 x median absolute deviation of out-of-fold residuals
per 1 m/s bin, interpolated, floored at 1 % of the target's 99th percentile: at La Haute Borne
about 20 kW at idle and 50-65 kW on the steep part of the curve). Two statistics:

- instantaneous: ``-z`` for ``alarm_side="low"`` (the default: a power deficit; power above the
  curve is not a turbine fault but a low wind reading, and at La Haute Borne the turbines made
  0.3-3.5 % more energy in 2015 than the 2014 model expects, which a two-sided alarm reports for
  months), ``|z|`` for ``"both"``, ``z`` for ``"high"``;
- smoothed: over the trailing ``smoothing`` (24 h) of the asset's scorable rows, at least
  ``smoothing_min_rows`` of them (else 0), ``sum(r) / sum(sigma)``: a sigma-weighted mean of ``z``,
  so idle and rated rows, where a loss cannot show, weigh little. A persistent deficit of a few
  percent (a pitch offset, a dirty blade) alarms though every single row stays inside the noise.
  Rows are ordered by ``asset`` and ``ts``; without those columns (the scoring stage may pass only
  ``columns_``) they are taken as one asset in the given order, ``bucket_seconds_`` apart. Score a
  day with the previous day prepended, or the first ``smoothing_min_rows`` rows have no smoothed
  statistic.

The limits are the ``1 - false_alarm_rate`` quantiles of the *out-of-fold* statistics of the fit
rows (steps 1-3: the rows the false-alarm rate is promised on): the fit rows are cut into
``calibration_folds`` contiguous time blocks, each is scored by a model fitted on the others (so
seasonal extrapolation is in the limits), and the model is then refitted on all. As in
:class:`plantops.kinds._pca_monitor.PCAMonitor`, both limits are scaled by one common factor so that
the union of the two alarms meets the rate. ``score_samples`` is
``max(stat_inst / limit_inst, stat_smooth / limit_smooth)``: 1.0 is the threshold. Rows that are
not :meth:`scorable` (target or a driver missing, or the target carried forward) score 0 and never
alarm.

What it achieves on La Haute Borne (``bench/wind_nbm.py``; fit 2014, held out 2015): held-out alarm
rate 1.4-2.7 % on normal rows against the 1 % target (0.8-2.0 % outside icing conditions; 1.15 %
when refitted monthly on the trailing year: one year's out-of-fold limits miss the year-to-year
shift), and an 8 % partial-load loss injected for a month alarms on 19-40 % of the affected rows
against 10-16 % for the binned power curve with the same calibration.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_BLAS = {"limits": 1, "user_api": "blas"}
_T_REF_K = 288.15  # IEC reference air density's temperature at constant pressure
_MAD = 1.4826  # median absolute deviation -> standard deviation for Gaussian noise
_SECTORS = 36  # 10-degree sectors for the density of angular drivers


class NormalBehaviourModel(BaseEstimator):
    """Normal-behaviour model of ``target`` given ``drivers``; residual-based alarms.

    Parameters
    ----------
    target, drivers:
        Base feature columns (``<tag>``) of the wide rows: the predicted one and its causes. For a
        wind turbine ``"P_avg"`` from ``("Ws_avg", "Wa_avg", "Ot_avg")``. Controller outputs
        (pitch, yaw error) are deliberately not drivers: a fault or a curtailment acts through them.
    false_alarm_rate:
        Target share of normal-operation rows that alarm.
    calibration_folds:
        Contiguous time blocks for out-of-fold statistics (>= 2).
    curve_driver:
        The driver on the fine basis (default: the first driver).
    angular_drivers:
        Drivers in degrees, modelled by ``harmonics`` sine/cosine pairs.
    density_temperature:
        A driver in °C by which ``curve_driver`` is density-normalised; ``None``: none.
    regression:
        ``"ridge"`` (the model above) or ``"binned"``: the IEC 61400-12 method of bins, the mean
        target per ``bin_width`` bin of the raw curve driver, linear between the bins' mean
        driver values (the classic baseline, no corrections).
    bin_width, alpha, harmonics, correction_knots:
        Curve knot spacing; ridge penalty (relative to the mean squared basis); direction
        harmonics; number of coarse knots for the corrections.
    cut_in, idle_level, trim:
        Normal-operation fit filter (see the module docstring); ``None`` disables the first two.
    smoothing, smoothing_min_rows, alarm_side:
        Window of the smoothed residual (a pandas offset, e.g. ``"24h"``; ``None``: instantaneous
        only), rows needed in it, and which side alarms (``"both"``, ``"low"``, ``"high"``).

    Attributes (after ``fit``)
    --------------------------
    columns_, n_features_in_, feature_names_in_:
        The columns read from ``X``: ``[target, *drivers]``.
    key_columns_, bucket_seconds_:
        Row keys seen in fit (``asset``, ``ts``) and the usual row spacing, for the smoothed
        statistic and the carried-forward test.
    mean_, scale_:
        Mean and standard deviation of ``columns_`` over the normal-operation fit rows.
    limit_instant_, limit_smoothed_, sigma_knots_, sigma_:
        Alarm limits (in units of sigma) and the residual spread by curve-driver value.
    n_fit_rows_, n_trimmed_, n_dropped_missing_, oof_rmse_:
        Normal-operation rows used, trimmed outliers, rows without target/drivers, and the
        out-of-fold RMSE of the regression.
    """

    def __init__(
        self,
        target: str = "P_avg",
        drivers: Sequence[str] = ("Ws_avg", "Wa_avg", "Ot_avg"),
        false_alarm_rate: float = 0.01,
        calibration_folds: int = 3,
        curve_driver: str | None = None,
        angular_drivers: Sequence[str] = ("Wa_avg",),
        density_temperature: str | None = "Ot_avg",
        regression: str = "ridge",
        bin_width: float = 0.5,
        alpha: float = 0.01,
        harmonics: int = 2,
        correction_knots: int = 8,
        cut_in: float | None = 3.0,
        idle_level: float | None = 5.0,
        trim: float = 4.0,
        smoothing: str | None = "24h",
        smoothing_min_rows: int = 72,
        alarm_side: str = "low",
    ) -> None:
        self.target = target
        self.drivers = drivers
        self.false_alarm_rate = false_alarm_rate
        self.calibration_folds = calibration_folds
        self.curve_driver = curve_driver
        self.angular_drivers = angular_drivers
        self.density_temperature = density_temperature
        self.regression = regression
        self.bin_width = bin_width
        self.alpha = alpha
        self.harmonics = harmonics
        self.correction_knots = correction_knots
        self.cut_in = cut_in
        self.idle_level = idle_level
        self.trim = trim
        self.smoothing = smoothing
        self.smoothing_min_rows = smoothing_min_rows
        self.alarm_side = alarm_side

    # -- row selection ------------------------------------------------------------------------

    def _read(self, X: pd.DataFrame, columns: list[str]) -> np.ndarray:
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks the columns {missing}")
        return X[columns].to_numpy(dtype=float)

    def _keys(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(seconds since the epoch, asset) per row. Without ``ts`` the rows are taken in their
        order, one bucket (``bucket_seconds_``, learned in fit) apart; without ``asset`` as one asset."""
        n = len(X)
        if "ts" in X.columns:
            seconds = _epoch_seconds(X["ts"])
        else:
            seconds = np.arange(n, dtype=np.int64) * int(getattr(self, "bucket_seconds_", 1))
        assets = X["asset"].astype(str).to_numpy() if "asset" in X.columns else np.full(n, "", dtype=object)
        return seconds, assets

    def _carried_forward(self, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """Rows whose target equals the previous row of the same asset (in ts order)."""
        if len(X) < 2:
            return np.zeros(len(X), dtype=bool)
        seconds, assets = self._keys(X)
        order = np.lexsort((seconds, assets))
        ys, a = y[order], assets[order]
        same = np.zeros(len(order), dtype=bool)
        same[1:] = (ys[1:] == ys[:-1]) & (a[1:] == a[:-1])
        out = np.empty(len(order), dtype=bool)
        out[order] = same
        return out

    def scorable(self, X: pd.DataFrame) -> np.ndarray:
        """True where the target and every driver are present and the target is not a carried-forward copy."""
        y = self._read(X, [self.target])[:, 0]
        d = self._read(X, list(self.drivers))
        ok = np.isfinite(y) & np.isfinite(d).all(axis=1)
        return ok & ~self._carried_forward(X, y)

    def normal_rows(self, X: pd.DataFrame) -> np.ndarray:
        """Scorable rows of plausibly normal operation (producing, or below cut-in): the fit rows
        before trimming, and the rows the false-alarm rate is promised on."""
        ok = self.scorable(X)
        y = self._read(X, [self.target])[:, 0]
        v = self._read(X, [self._curve_name()])[:, 0]
        producing = np.ones(len(X), dtype=bool)
        if self.idle_level is not None:
            with np.errstate(invalid="ignore"):
                producing = y > self.idle_level
                if self.cut_in is not None:
                    producing |= v < self.cut_in
        return ok & producing

    def _curve_name(self) -> str:
        return self.curve_driver if self.curve_driver is not None else next(iter(self.drivers))

    # -- basis --------------------------------------------------------------------------------

    def _curve_variable(self, D: np.ndarray) -> np.ndarray:
        names = list(self.drivers)
        v = D[:, names.index(self._curve_name())]
        if self.regression == "ridge" and self.density_temperature is not None:
            t = D[:, names.index(self.density_temperature)] + 273.15
            with np.errstate(invalid="ignore", divide="ignore"):
                v = v * np.cbrt(_T_REF_K / np.where(t > 150, t, np.nan))
        return v

    def _basis(self, D: np.ndarray, knots: np.ndarray, coarse: np.ndarray,
               lin_mean: np.ndarray, lin_scale: np.ndarray) -> np.ndarray:
        v = self._curve_variable(D)
        parts = [_hats(v, knots)]
        if len(self._linear_names()) or len(self._angular_names()):
            c = _hats(v, coarse)
            names = list(self.drivers)
            for k, name in enumerate(self._linear_names()):
                x = (D[:, names.index(name)] - lin_mean[k]) / lin_scale[k]
                parts.append(c * x[:, None])
            for name in self._angular_names():
                a = np.deg2rad(D[:, names.index(name)])
                for h in range(1, self.harmonics + 1):
                    parts.append(c * np.sin(h * a)[:, None])
                    parts.append(c * np.cos(h * a)[:, None])
        return np.hstack(parts)

    def _linear_names(self) -> list[str]:
        angular = set(self.angular_drivers or ())
        return [d for d in self.drivers if d != self._curve_name() and d not in angular]

    def _angular_names(self) -> list[str]:
        return [d for d in self.drivers if d in set(self.angular_drivers or ()) and d != self._curve_name()]

    def _penalty(self, n_fine: int, n_coarse: int, n_blocks: int) -> np.ndarray:
        d2 = np.diff(np.eye(n_fine), 2, axis=0)
        blocks = [d2.T @ d2]
        d1 = np.diff(np.eye(n_coarse), 1, axis=0)
        for _ in range(n_blocks):
            blocks.append(d1.T @ d1 + 0.1 * np.eye(n_coarse))
        size = sum(b.shape[0] for b in blocks)
        out = np.zeros((size, size))
        o = 0
        for b in blocks:
            out[o:o + len(b), o:o + len(b)] = b
            o += len(b)
        return out

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: object = None) -> NormalBehaviourModel:
        with threadpool_limits(**_BLAS):
            return self._fit(X)

    def _check_params(self) -> None:
        if not 0 < self.false_alarm_rate < 0.5:
            raise ValueError(f"false_alarm_rate must be in (0, 0.5), got {self.false_alarm_rate}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.calibration_folds}")
        if self.regression not in ("ridge", "binned"):
            raise ValueError(f"regression must be 'ridge' or 'binned', got {self.regression!r}")
        if self.alarm_side not in ("both", "low", "high"):
            raise ValueError(f"alarm_side must be 'both', 'low' or 'high', got {self.alarm_side!r}")
        if not list(self.drivers):
            raise ValueError("drivers must name at least one column")
        if self.target in self.drivers:
            raise ValueError(f"the target {self.target!r} cannot also be a driver")
        if self.curve_driver is not None and self.curve_driver not in self.drivers:
            raise ValueError(f"curve_driver {self.curve_driver!r} is not a driver")
        if self.density_temperature is not None and self.density_temperature not in self.drivers:
            raise ValueError(f"density_temperature {self.density_temperature!r} is not a driver")

    def _fit(self, X: pd.DataFrame) -> NormalBehaviourModel:
        self._check_params()
        columns = [self.target, *self.drivers]
        values = self._read(X, columns)
        self.bucket_seconds_ = _bucket_seconds(X)
        self.key_columns_ = [c for c in ("asset", "ts") if c in X.columns]
        finite = np.isfinite(values).all(axis=1)
        normal = self.normal_rows(X)
        n_missing = int((~finite).sum())
        log.info(
            "NormalBehaviourModel.fit: %d rows, %d dropped with missing target/drivers, "
            "%d carried forward or not in normal operation (idle in wind)",
            len(values), n_missing, int((finite & ~normal).sum()),
        )
        if normal.sum() < max(50, 10 * self.calibration_folds):
            raise ValueError(f"NormalBehaviourModel needs at least 50 normal-operation rows, got {int(normal.sum())}")
        vals = values[normal]
        y, D = vals[:, 0], vals[:, 1:]
        seconds, assets = self._keys(X)
        seconds, assets = seconds[normal], assets[normal]

        self.columns_ = columns
        self.n_features_in_ = len(columns)
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.mean_ = vals.mean(axis=0)
        scale = vals.std(axis=0, ddof=1)
        self.scale_ = np.where(scale > 1e-8, scale, 1.0)
        self.n_fit_rows_ = len(y)
        self.n_dropped_missing_ = n_missing

        # Driver ranges and densities, for the explanations.
        self.driver_low_ = np.quantile(D, 0.005, axis=0)
        self.driver_high_ = np.quantile(D, 0.995, axis=0)
        sector_share = []
        for j, name in enumerate(self.drivers):
            if name in set(self.angular_drivers or ()):
                s = _sector(D[:, j])
                sector_share.append(np.bincount(s, minlength=_SECTORS) / len(s))
            else:
                sector_share.append(np.full(_SECTORS, np.nan))
        self.sector_share_ = np.vstack(sector_share)

        # Model on all rows, out-of-fold residuals for the spread and the limits.
        state, self.n_trimmed_ = self._fit_regression(y, D)
        self._set_model(state)
        r_oof = y - self._predict_with(state, D)  # in-sample, only kept for a fold that cannot be held out
        edges = np.quantile(seconds, np.linspace(0, 1, self.calibration_folds + 1))
        fold = np.clip(np.searchsorted(edges, seconds, side="right") - 1, 0, self.calibration_folds - 1)
        for k in range(self.calibration_folds):
            held = fold == k
            if held.all() or not held.any():
                continue
            state, _ = self._fit_regression(y[~held], D[~held])
            r_oof[held] = y[held] - self._predict_with(state, D[held])
        v = self._curve_variable(D)
        self.sigma_knots_, self.sigma_ = _binned_spread(v, r_oof, floor=self._sigma_floor(y))
        sigma = np.interp(v, self.sigma_knots_, self.sigma_)
        z = r_oof / sigma
        inst = self._side(z)
        smooth = self._smoothed(r_oof, sigma, seconds, assets) if self.smoothing is not None else np.zeros_like(z)
        smooth = self._side(smooth)
        level = 1 - self.false_alarm_rate
        inst_q = max(float(np.quantile(inst, level)), 1e-9)
        if self.smoothing is not None:
            smooth_q = max(float(np.quantile(smooth, level)), 1e-9)
            factor = float(np.quantile(np.maximum(inst / inst_q, smooth / smooth_q), level))
        else:
            smooth_q, factor = np.inf, 1.0
        self.limit_instant_ = inst_q * factor
        self.limit_smoothed_ = smooth_q * factor
        self.oof_rmse_ = float(np.sqrt(np.mean(r_oof**2)))
        log.info(
            "NormalBehaviourModel fitted (%s): %d rows, %d trimmed, OOF RMSE %.4g, limits %.3g / %.3g",
            self.regression, self.n_fit_rows_, self.n_trimmed_, self.oof_rmse_,
            self.limit_instant_, self.limit_smoothed_,
        )
        return self

    def _sigma_floor(self, y: np.ndarray) -> float:
        # A bin where the target hardly moves (idle) would otherwise make rounding noise huge.
        return max(1e-2 * float(np.quantile(np.abs(y), 0.99)), 1e-9)

    def _fit_regression(self, y: np.ndarray, D: np.ndarray) -> tuple[tuple, int]:
        """Fit with robust trimming: (state, a tuple of arrays; rows trimmed)."""
        keep = np.ones(len(y), dtype=bool)
        v = self._curve_variable(D)
        for _ in range(3):
            state, used = self._solve(y[keep], D[keep]), keep
            r = y - self._predict_with(state, D)
            knots, spread = _binned_spread(v[keep], r[keep], floor=self._sigma_floor(y))
            keep = np.abs(r) <= self.trim * np.interp(v, knots, spread)
            if (keep == used).all():
                break
        return state, int((~used).sum())

    def _solve(self, y: np.ndarray, D: np.ndarray) -> tuple:
        v = self._curve_variable(D)
        if self.regression == "binned":
            b = np.floor(v / self.bin_width).astype(np.int64)
            _, inverse, counts = np.unique(b, return_inverse=True, return_counts=True)
            centres = np.bincount(inverse, weights=v) / counts
            means = np.bincount(inverse, weights=y) / counts
            return ("binned", centres, means)
        lo = np.floor(np.min(v) / self.bin_width) * self.bin_width
        hi = np.ceil(np.max(v) / self.bin_width) * self.bin_width
        knots = np.arange(lo, hi + self.bin_width / 2, self.bin_width)
        if len(knots) < 3:
            knots = np.linspace(lo, lo + 2 * self.bin_width, 3)
        coarse = np.unique(np.quantile(v, np.r_[0, np.linspace(0.1, 0.9, max(self.correction_knots - 3, 1)), 0.99, 1]))
        if len(coarse) < 2:
            coarse = np.array([lo, hi if hi > lo else lo + 1.0])
        names = list(self.drivers)
        lin = self._linear_names()
        lin_mean = np.array([D[:, names.index(n)].mean() for n in lin]) if lin else np.zeros(0)
        lin_scale = np.array([max(D[:, names.index(n)].std(), 1e-8) for n in lin]) if lin else np.zeros(0)
        B = self._basis(D, knots, coarse, lin_mean, lin_scale)
        n_blocks = len(lin) + 2 * self.harmonics * len(self._angular_names())
        P = self._penalty(len(knots), len(coarse), n_blocks)
        gram = B.T @ B / len(y)
        scale = max(float(np.trace(gram)) / gram.shape[0], 1e-12)
        coef = np.linalg.solve(gram + self.alpha * scale * P + 1e-10 * scale * np.eye(len(P)), B.T @ y / len(y))
        return ("ridge", knots, coarse, lin_mean, lin_scale, coef, float(np.min(y)), float(np.max(y)))

    def _predict_with(self, state: tuple, D: np.ndarray) -> np.ndarray:
        v = self._curve_variable(D)
        if state[0] == "binned":
            _, centres, means = state
            return np.interp(v, centres, means)
        _, knots, coarse, lin_mean, lin_scale, coef, y_min, y_max = state
        return np.clip(self._basis(D, knots, coarse, lin_mean, lin_scale) @ coef, y_min, y_max)

    def _set_model(self, state: tuple) -> None:
        # Kept as plain attributes (arrays and floats) so that skops needs no extra trusted types.
        if state[0] == "binned":
            self.bin_centres_, self.bin_means_ = state[1], state[2]
            self.knots_ = self.coarse_knots_ = self.coef_ = None
        else:
            (_, self.knots_, self.coarse_knots_, self.linear_mean_, self.linear_scale_,
             self.coef_, self.target_min_, self.target_max_) = state
            self.bin_centres_ = self.bin_means_ = None

    def _state(self) -> tuple:
        if self.regression == "binned":
            return ("binned", self.bin_centres_, self.bin_means_)
        return ("ridge", self.knots_, self.coarse_knots_, self.linear_mean_, self.linear_scale_,
                self.coef_, self.target_min_, self.target_max_)

    # -- statistics ---------------------------------------------------------------------------

    def _side(self, z: np.ndarray) -> np.ndarray:
        if self.alarm_side == "low":
            return np.maximum(-z, 0.0)
        if self.alarm_side == "high":
            return np.maximum(z, 0.0)
        return np.abs(z)

    def _smoothed(self, r: np.ndarray, sigma: np.ndarray, seconds: np.ndarray, assets: np.ndarray) -> np.ndarray:
        """Per asset over the trailing ``smoothing``: ``sum(r) / sum(sigma)`` (0 where fewer than
        ``smoothing_min_rows`` rows). A sigma-weighted mean of ``z``: rows where the target hardly
        moves (idle, rated) weigh little, the steep part of the curve, where a loss shows, much."""
        import pandas as pd

        window = int(pd.Timedelta(self.smoothing).total_seconds())
        out = np.zeros(len(r))
        order = np.lexsort((seconds, assets))
        a, s, rr, ss = assets[order], seconds[order], r[order], sigma[order]
        bounds = np.flatnonzero(np.r_[True, a[1:] != a[:-1], True])
        result = np.zeros(len(r))
        for start, stop in itertools.pairwise(bounds):
            ts = s[start:stop]
            r_sum = np.r_[0.0, np.cumsum(rr[start:stop])]
            s_sum = np.r_[0.0, np.cumsum(ss[start:stop])]
            left = np.searchsorted(ts, ts - window, side="right")
            idx = np.arange(len(ts))
            n = idx + 1 - left
            mean = (r_sum[idx + 1] - r_sum[left]) / (s_sum[idx + 1] - s_sum[left])
            result[start:stop] = np.where(n >= self.smoothing_min_rows, mean, 0.0)
        out[order] = result
        return out

    def _z(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z, instantaneous statistic, smoothed statistic); 0 on rows that are not scorable."""
        ok = self.scorable(X)
        z = np.zeros(len(X))
        r = np.zeros(len(X))
        sigma = np.ones(len(X))
        if ok.any():
            D = self._read(X, list(self.drivers))[ok]
            y = self._read(X, [self.target])[ok, 0]
            with threadpool_limits(**_BLAS):
                expected = self._predict_with(self._state(), D)
            v = self._curve_variable(D)
            r[ok] = y - expected
            sigma[ok] = np.interp(v, self.sigma_knots_, self.sigma_)
            z[ok] = r[ok] / sigma[ok]
            bad = ok & ~np.isfinite(z)  # e.g. an impossible temperature: no density, no expectation
            ok &= ~bad
            z[bad] = r[bad] = 0.0
            sigma[bad] = 1.0
        inst = np.where(ok, self._side(z), 0.0)
        smooth = np.zeros(len(X))
        if self.smoothing is not None and ok.any():
            seconds, assets = self._keys(X)
            smooth[ok] = self._side(self._smoothed(r[ok], sigma[ok], seconds[ok], assets[ok]))
        return z, inst, smooth

    # -- public API ---------------------------------------------------------------------------

    def predict_expected(self, X: pd.DataFrame) -> np.ndarray:
        """Expected target per row (NaN where a driver is missing)."""
        D = self._read(X, list(self.drivers))
        out = np.full(len(X), np.nan)
        ok = np.isfinite(D).all(axis=1)
        if ok.any():
            with threadpool_limits(**_BLAS):
                out[ok] = self._predict_with(self._state(), D[ok])
        return out

    def residuals(self, X: pd.DataFrame) -> np.ndarray:
        """Actual minus expected target (NaN where either is missing)."""
        return self._read(X, [self.target])[:, 0] - self.predict_expected(X)

    def statistics(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per row: expected, residual, z, both statistics, their limits, scorable (index of ``X``)."""
        import pandas as pd

        z, inst, smooth = self._z(X)
        expected = self.predict_expected(X)
        return pd.DataFrame(
            {
                "expected": expected,
                "residual": self._read(X, [self.target])[:, 0] - expected,
                "z": z,
                "instant": inst,
                "smoothed": smooth,
                "limit_instant": self.limit_instant_,
                "limit_smoothed": self.limit_smoothed_,
                "scorable": self.scorable(X),
            },
            index=X.index,
        )

    def score_samples(self, X: pd.DataFrame) -> np.ndarray:
        """``max(instant / limit, smoothed / limit)``: 1.0 is the alarm threshold; 0 where not scorable."""
        _, inst, smooth = self._z(X)
        return np.maximum(inst / self.limit_instant_, smooth / self.limit_smoothed_)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the row alarms (score above 1.0), else 0."""
        return (self.score_samples(X) > 1.0).astype(int)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Non-negative parts per row, columns ``columns_`` (target, then drivers), index of ``X``.

        - target: the residual's part of the score, ``max(instant / limit, smoothed / limit)``
          (equal to the score: the residual is what alarms; >= 1 on an alarm);
        - a linear driver: how far its value lies outside the central 99 % of the fitted values,
          in fitted standard deviations (``scale_``); 0 inside;
        - an angular driver: how rare its 10° sector was in the fit, ``log10(expected share /
          observed share)`` floored at 0 (0 for any sector holding at least 1/72 of the rows,
          about 2.5 for one in a thousand rows' share, capped at 6 for a sector never seen).

        A large driver part says the expected value is an extrapolation there, so the residual
        (and the alarm) deserve less trust; it never raises the score.
        """
        import pandas as pd

        score = self.score_samples(X)
        D = self._read(X, list(self.drivers))
        parts = {self.target: score}
        angular = set(self.angular_drivers or ())
        for j, name in enumerate(self.drivers):
            x = D[:, j]
            if name in angular:
                share = self.sector_share_[j][_sector(np.nan_to_num(x))]
                with np.errstate(divide="ignore"):
                    rarity = np.log10((0.5 / _SECTORS) / np.maximum(share, 1e-6))
                part = np.clip(rarity, 0.0, 6.0)
            else:
                s = self.scale_[j + 1]
                part = np.maximum(np.maximum(self.driver_low_[j] - x, x - self.driver_high_[j]), 0.0) / s
            parts[name] = np.where(np.isfinite(x), part, 0.0)
        return pd.DataFrame(parts, index=X.index)[self.columns_]

    def evaluate_regression(self, X: pd.DataFrame) -> dict[str, float]:
        """RMSE, MAE, R² and row count of the expected target on ``X``'s normal-operation rows."""
        rows = self.normal_rows(X)
        y = self._read(X, [self.target])[rows, 0]
        r = y - self.predict_expected(X)[rows]
        n = len(y)
        if n == 0:
            return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": 0}
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        return {
            "rmse": float(np.sqrt(np.mean(r**2))),
            "mae": float(np.mean(np.abs(r))),
            "r2": float(1 - np.sum(r**2) / ss_tot) if ss_tot > 0 else float("nan"),
            "n": n,
        }


# -- helpers ----------------------------------------------------------------------------------


def _hats(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear hat basis on ``knots`` (flat beyond the ends; NaN rows stay NaN)."""
    out = np.zeros((len(x), len(knots)))
    finite = np.isfinite(x)
    xc = np.clip(np.where(finite, x, knots[0]), knots[0], knots[-1])
    idx = np.clip(np.searchsorted(knots, xc, side="right") - 1, 0, len(knots) - 2)
    w = (xc - knots[idx]) / (knots[idx + 1] - knots[idx])
    rows = np.arange(len(x))
    out[rows, idx] = 1 - w
    out[rows, idx + 1] += w
    out[~finite] = np.nan
    return out


def _binned_spread(v: np.ndarray, r: np.ndarray, floor: float, width: float = 1.0,
                   min_rows: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Robust spread (1.4826 MAD) of ``r`` per ``width`` bin of ``v``: (bin centres, spreads).

    Bins with fewer than ``min_rows`` rows take the nearest populated bin's value (through the
    interpolation); the spread is floored at ``floor``."""
    ok = np.isfinite(v) & np.isfinite(r)
    v, r = v[ok], r[ok]
    b = np.floor(v / width).astype(np.int64)
    centres, spreads = [], []
    for bin_id in np.unique(b):
        sel = b == bin_id
        if sel.sum() < min_rows:
            continue
        rr = r[sel]
        centres.append(float(v[sel].mean()))
        spreads.append(_MAD * float(np.median(np.abs(rr - np.median(rr)))))
    if not centres:
        spread = _MAD * float(np.median(np.abs(r - np.median(r)))) if len(r) else floor
        return np.array([0.0, 1.0]), np.array([max(spread, floor)] * 2)
    if len(centres) == 1:
        centres.append(centres[0] + width)
        spreads.append(spreads[0])
    return np.asarray(centres), np.maximum(np.asarray(spreads), floor)


def _bucket_seconds(X: pd.DataFrame) -> int:
    """The rows' usual spacing per asset (median positive step of ``ts``), 1 without ``ts``."""
    if "ts" not in X.columns or len(X) < 2:
        return 1
    seconds = _epoch_seconds(X["ts"])
    assets = X["asset"].astype(str).to_numpy() if "asset" in X.columns else np.full(len(X), "", dtype=object)
    order = np.lexsort((seconds, assets))
    steps = np.diff(seconds[order])[assets[order][1:] == assets[order][:-1]]
    steps = steps[steps > 0]
    return int(np.median(steps)) if len(steps) else 1


def _sector(degrees: np.ndarray) -> np.ndarray:
    return (np.floor(np.mod(degrees, 360.0) / (360.0 / _SECTORS)).astype(np.int64)) % _SECTORS


def _epoch_seconds(ts) -> np.ndarray:
    """Whole seconds since the epoch, from datetimes (naive = UTC) or numbers (taken as seconds)."""
    import pandas as pd

    ts = pd.Series(ts) if not isinstance(ts, pd.Series) else ts
    if ts.dtype.kind in "iuf":
        return ts.to_numpy().astype(np.int64)
    ts = pd.to_datetime(ts)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy().astype("datetime64[s]").astype(np.int64)
