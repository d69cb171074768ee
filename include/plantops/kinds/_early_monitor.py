"""Early fault detection: EWMA-filtered PCA statistics plus per-tag residual and dynamics charts.

:class:`EarlyFaultMonitor` is built for the faults a Shewhart-type PCA monitor (one row, one
T²/Q test, see :mod:`plantops.kinds.mspm_pca`) sees late or not at all: small steps, slow drifts,
and faults that change only the variability or the dynamics of a few tags. Each row is
standardised with the normal-operation mean and standard deviation, split by a PCA model (the
fewest components explaining ``explained_variance``) into whitened scores ``u`` and residuals
``r``, and four exponentially weighted moving averages (EWMA, weight ``ewma_lambda`` on the new
row, restarted at the normal steady state at every asset change or time gap) are watched:

``t2``
    MEWMA T² (Lowry et al. 1992) of the scores: ``sum_a ũ_a² / var(ũ_a)``, ``ũ = EWMA(u)``. A
    mean shift of size δ inside the correlation model adds up over rows while the noise averages
    out (for independent rows the EWMA's standard deviation is ``sqrt(λ/(2-λ))`` of the raw one,
    a third for λ = 0.2), so a step of one standard deviation or less crosses the limit within a
    few rows instead of being lost in single-row noise.
``q``
    The same for the residuals, normalised per column: ``sum_j r̃_j² / var(r̃_j)``, ``r̃ =
    EWMA(r)``: a small step that breaks the normal correlation structure.
``residual``
    A per-column EWMA of the squared residual, ``v_j = EWMA(r_j²)`` (an EWMA mean-square chart,
    MacGregor & Harris 1993), started at its normal level; the statistic is the largest
    standardised excess ``max_j max(v_j - mean_j, 0)² / var_j`` (upper-sided: a tag that moves
    less than normal is the ``dynamics`` chart's job). It rises with extra variance on a
    tag (random-variation faults, oscillations) and with a bias on it (``v_j`` tends to ``b²`` plus
    the normal level); both often touch one or two tags only, and summed over all columns (as Q
    sums) their signal drowns in the other columns' noise, while the maximum does not.
``dynamics``
    A per-column EWMA of the squared first difference (the row-to-row increment, scaled by its
    normal root mean square), on a log scale with a floor ``frozen_floor``: ``h_j = log(EWMA(
    Δz_j²) + floor)``, statistic ``max_j (h_j - mean_j)² / var_j``. It reacts to a change of the
    autocorrelation or of the movement of a tag in both directions, including a valve or sensor
    that freezes (its increments fall to zero, the log drops far below its normal band; on a
    linear scale a drop of the variance to zero moves the statistic by less than normal noise).
    The floor, a share of the normal increment variance, keeps a frozen tag's value finite.

The four statistics, each divided by its control limit, are combined into one score, their
maximum; 1.0 is the alarm threshold.

Calibration. The limits are empirical, as in :class:`~plantops.kinds._pca_monitor.PCAMonitor`: the
``1 - false_alarm_rate`` quantile of *out-of-fold* statistics. The fit rows (in time order) are
cut into ``calibration_folds`` contiguous blocks; each block is scored by a model (mean, scale,
PCA, EWMA normalisers) fitted on the other blocks, with the filters running over the block as they
would on new data; the model is then refitted on all rows. Per-channel quantiles come first, then
one common factor scales all four limits so that the union of the alarms, not each chart alone,
fires on ``false_alarm_rate`` of the out-of-fold rows. EWMA statistics are strongly
autocorrelated and are sensitive to the small level offsets between two stretches of normal
operation; in-sample limits ignore both and alarm far too often on new normal data, while limits
from a model that never saw the block carry that offset in. Two halves (on TEP: one normal
simulation scored by a model of the other) kept the alarm rate near target on later normal data.

Filter order. The filters need rows in time order. When ``X`` has a ``ts`` column (datetimes or
epoch seconds) rows are taken per ``asset`` (when present) in ``ts`` order, and the state
restarts at an asset change or where consecutive rows are more than ``max_gap_seconds`` apart
(default: three times the median spacing seen in ``fit``); results come back in ``X``'s row
order. Without ``ts``, ``X`` is one contiguous series in its row order (restarting at an ``asset``
change if that column exists). A restart sets every filter to its normal steady state, so the
first rows after it are scored as if the history were normal; ``context_rows_`` is how many rows a
caller should prepend (and drop the scores of) for the initial state to weigh less than 0.01 % at the
first row it cares about.

Missing values never raise. A missing standardised value is "at the normal mean" *given the
rest of the row*: its conditional mean given the row's observed values under the normal-operation
correlation matrix (regression on the known values), which is the normal mean itself when nothing
else in the row is known; its own residual and its increments count as normal ones. Plain mean
imputation (PCAMonitor's rule) is not enough here: the other tags still follow the process, so a
tag pinned at its mean leaves a residual the per-tag chart is built to see (on TEP, XMEAS_7
missing for 100 held-out rows alarmed on 98 of them; with the conditional mean, on none).

Why it is early on TEP (fit on normal runs, faults 1..21 held out, 1 % target): the pipeline's
rolling features (``<tag>__rmean``/``__rstd`` over 20 buckets) are themselves filters, but a
rolling window reacts fully only once it is full, and a PCA over them models the slow drifts of
normal operation as large eigen-directions. The EWMAs here work on the per-bucket values (the
recommended ``columns`` for TEP are the 52 base tags), react from the first faulty row, and the
per-tag residual and dynamics charts catch the random-variation faults (10, 16, 19, 20) and the
stuck valve of fault 21 that the sum-of-squares statistics dilute. In ``bench/detectors.py``
(fit on d00 + the first half of d00_te, all 21 test runs) it had a mean detection rate of 0.84
against 0.78 for the shipped detector (PCA over the wide row) and a median detection delay of 7
samples against 21, at its own limits (held-out false-alarm rate 0.019 against 0.000); with both
thresholds set to alarm on the same 1 % of held-out normal rows, 0.83 against 0.81 and 8 against
19 samples.

Fitted state is numpy arrays and plain Python values only (saved with skops through MLflow).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import lfilter
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# One BLAS thread: the matrices are small and a multi-threaded BLAS on a busy 2-core box is slower.
_BLAS = {"limits": 1, "user_api": "blas"}
# A column whose normal-operation spread is below this is treated as constant (see PCAMonitor).
_MIN_STD = 1e-8
# A normaliser (variance of a filtered channel) below this means the channel is constant for that
# column (a constant tag, or a residual the PCA model explains completely): its term is left out.
_MIN_VAR = 1e-12
# Added to the diagonal of the correlation matrix used to impute missing values (a constant or
# collinear column would make a block singular).
_RIDGE = 1e-3
# context_rows_: prepend enough rows for the initial (restart) state to weigh less than this.
_WARM_WEIGHT = 1e-4

CHANNELS = ("t2", "q", "residual", "dynamics")


class EarlyFaultMonitor(BaseEstimator):
    """EWMA-filtered PCA T²/Q plus per-tag residual and dynamics charts (see the module docstring).

    Parameters
    ----------
    columns:
        Feature columns to monitor, in order. ``None`` takes every numeric column seen in ``fit``
        (except ``ts``). For TEP the 52 base tags (per-bucket means) are recommended.
    explained_variance:
        Keep the fewest principal components whose cumulative explained variance reaches this.
    ewma_lambda:
        EWMA weight of the newest row, in (0, 1]. 0.2 is the classic choice (Lucas & Saccucci
        1990; Montgomery): sensitive to shifts of about one standard deviation, memory ~10 rows.
    false_alarm_rate:
        Target share of normal-operation rows that alarm; sets the control limits.
    calibration_folds:
        Contiguous time blocks for the out-of-fold statistics behind the limits (>= 2).
    frozen_floor:
        Floor added to the normalised increment variance before its log in the ``dynamics``
        chart, as a share of its normal level: increments far below ``frozen_floor`` of normal
        all look equally "frozen".
    max_gap_seconds:
        Restart the filters where consecutive rows of an asset are further apart than this.
        ``None``: three times the median spacing seen in ``fit``.
    """

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        explained_variance: float = 0.95,
        ewma_lambda: float = 0.2,
        false_alarm_rate: float = 0.01,
        calibration_folds: int = 2,
        frozen_floor: float = 0.01,
        max_gap_seconds: float | None = None,
    ) -> None:
        self.columns = columns
        self.explained_variance = explained_variance
        self.ewma_lambda = ewma_lambda
        self.false_alarm_rate = false_alarm_rate
        self.calibration_folds = calibration_folds
        self.frozen_floor = frozen_floor
        self.max_gap_seconds = max_gap_seconds

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: object = None) -> EarlyFaultMonitor:
        with threadpool_limits(**_BLAS):
            return self._fit(X)

    def _fit(self, X: pd.DataFrame) -> EarlyFaultMonitor:
        if not 0 < self.explained_variance <= 1:
            raise ValueError(f"explained_variance must be in (0, 1], got {self.explained_variance}")
        if not 0 < self.ewma_lambda <= 1:
            raise ValueError(f"ewma_lambda must be in (0, 1], got {self.ewma_lambda}")
        if not 0 < self.false_alarm_rate < 0.5:
            raise ValueError(f"false_alarm_rate must be in (0, 0.5), got {self.false_alarm_rate}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.calibration_folds}")
        if not self.frozen_floor > 0:
            raise ValueError(f"frozen_floor must be positive, got {self.frozen_floor}")
        if self.columns is not None:
            columns = list(self.columns)
        else:
            columns = [c for c in X.select_dtypes("number").columns if c != "ts"]
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"fit data lacks monitored columns: {missing[:10]}")
        if len(X) < max(20, 10 * self.calibration_folds):
            raise ValueError(f"EarlyFaultMonitor needs at least 20 rows to fit, got {len(X)}")

        self.columns_ = columns
        self.n_features_in_ = len(columns)
        self.feature_names_in_ = np.asarray(columns, dtype=object)
        if self.max_gap_seconds is not None:
            self.max_gap_seconds_ = float(self.max_gap_seconds)
        else:
            self.max_gap_seconds_ = _default_gap(X)
        lam = self.ewma_lambda
        # Rows until the restart state's weight (1-λ)^n is below _WARM_WEIGHT, plus one for the
        # first difference of the dynamics chart.
        self.context_rows_ = 1 + (
            0 if lam >= 1 else int(math.ceil(math.log(_WARM_WEIGHT) / math.log(1 - lam)))
        )

        order, starts = _time_order(X, self.max_gap_seconds_)
        values = X[columns].to_numpy(dtype=float)[order]
        self.n_fit_rows_ = int(len(values))

        state = self._fit_state(values, starts, n_components=None)
        for key, value in state.items():
            setattr(self, f"{key}_", value)
        self.n_components_ = int(self.components_.shape[1])

        if "ts" in X.columns:
            # Calibration blocks are contiguous in time across assets, not asset by asset.
            chronological = np.argsort(_seconds(X["ts"])[order], kind="stable")
        else:
            chronological = np.arange(len(values))
        stats = self._oof_statistics(values, starts, chronological)
        level = 1 - self.false_alarm_rate
        per_channel = np.array([max(float(np.quantile(s, level)), 1e-12) for s in stats.T])
        factor = float(np.quantile(np.max(stats / per_channel, axis=1), level))
        self.limits_ = per_channel * factor
        self.channels_ = list(CHANNELS)
        log.info(
            "EarlyFaultMonitor fitted: %d rows, %d columns, %d components, limits %s",
            self.n_fit_rows_, self.n_features_in_, self.n_components_,
            dict(zip(CHANNELS, np.round(self.limits_, 3).tolist())),
        )
        return self

    def _fit_state(
        self, values: np.ndarray, starts: np.ndarray, n_components: int | None
    ) -> dict[str, np.ndarray]:
        """Standardisation, PCA and the normal level and spread of every filtered channel."""
        complete = np.isfinite(values).all(axis=1)
        if complete.sum() < 10:
            raise ValueError(f"EarlyFaultMonitor needs at least 10 complete rows, got {complete.sum()}")
        # Rows with a gap say nothing reliable about the correlation structure: the mean, scale and
        # PCA come from complete rows; the filters then run over all rows, gaps imputed.
        base = values[complete]
        mean = base.mean(axis=0)
        scale = base.std(axis=0, ddof=1)
        scale = np.where(scale > _MIN_STD, scale, 1.0)
        z0 = (base - mean) / scale
        _, singular, vt = np.linalg.svd(z0, full_matrices=False)
        eigenvalues = singular**2 / max(len(z0) - 1, 1)
        if n_components is None:
            share = np.cumsum(eigenvalues) / max(eigenvalues.sum(), 1e-12)
            n_components = int(np.searchsorted(share, self.explained_variance - 1e-12) + 1)
        n_components = max(1, min(n_components, len(eigenvalues)))

        # The correlation matrix of the fit rows (ridged so that every block is invertible):
        # missing values are imputed by regression on the row's known ones.
        covariance = (z0.T @ z0) / max(len(z0) - 1, 1) + _RIDGE * np.eye(z0.shape[1])
        components = vt[:n_components].T.copy()
        eigenvalues = np.maximum(eigenvalues[:n_components], 1e-12)

        finite = np.isfinite(values)
        z = _fill((values - mean) / scale, finite, covariance)
        _, r = _project(z, components, eigenvalues)
        diff = _increments(z, finite, starts, None)
        diff_scale = np.sqrt(np.nanmean(diff**2, axis=0)) if len(diff) > 1 else np.ones(z.shape[1])
        diff_scale = np.where(np.isfinite(diff_scale) & (diff_scale > _MIN_STD), diff_scale, 1.0)
        resid_sq_mean = np.mean((r**2)[complete], axis=0)

        state = {
            "mean": mean, "scale": scale, "components": components, "eigenvalues": eigenvalues,
            "covariance": covariance, "diff_scale": diff_scale, "resid_sq_mean": resid_sq_mean,
        }
        raw = self._filtered(values, starts, state)
        state["score_var"] = _floor(raw["t2"].var(axis=0))
        state["resid_var"] = _floor(raw["q"].var(axis=0))
        state["residual_mean"] = raw["residual"].mean(axis=0)
        state["residual_var"] = _floor(raw["residual"].var(axis=0))
        state["dynamics_mean"] = raw["dynamics"].mean(axis=0)
        state["dynamics_var"] = _floor(raw["dynamics"].var(axis=0))
        return state

    def _oof_statistics(
        self, values: np.ndarray, starts: np.ndarray, chronological: np.ndarray
    ) -> np.ndarray:
        """(rows, channels) statistics of every fit row from a model that did not see its block
        (``calibration_folds`` contiguous blocks of ``chronological``, the rows in time order)."""
        n = len(values)
        parts = []
        for block in np.array_split(chronological, self.calibration_folds):
            block = np.sort(block)
            keep = np.ones(n, dtype=bool)
            keep[block] = False
            state = self._fit_state(values[keep], _subset_starts(starts, keep), self.n_components_)
            inside = np.zeros(n, dtype=bool)
            inside[block] = True
            parts.append(self._channel_stats(values[block], _subset_starts(starts, inside), state)[0])
        return np.concatenate(parts)

    # -- the filters --------------------------------------------------------------------------

    def _filtered(
        self, values: np.ndarray, starts: np.ndarray, state: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The EWMA-filtered channels, each started at its normal steady state at every restart.

        Missing values: the standardised value is its conditional mean given the row's observed
        values (the normal mean, 0, when nothing is observed; see :func:`_fill`), so the scores
        use what the other tags say; a missing entry's own residual and increment count as normal
        ones (0 residual, the normal mean square, a normal increment): a dead sensor alone does not
        alarm.
        """
        lam = self.ewma_lambda
        finite = np.isfinite(values)
        z = _fill((values - state["mean"]) / state["scale"], finite, state["covariance"])
        u, r = _project(z, state["components"], state["eigenvalues"])
        p = z.shape[1]
        diff = _increments(z, finite, starts, state["diff_scale"])
        sq = np.where(np.isnan(diff), 1.0, diff**2)
        return {
            "t2": _ewma(u, lam, starts, np.zeros(u.shape[1])),
            "q": _ewma(np.where(finite, r, 0.0), lam, starts, np.zeros(p)),
            "residual": _ewma(np.where(finite, r**2, state["resid_sq_mean"]), lam, starts,
                              state["resid_sq_mean"]),
            "dynamics": np.log(_ewma(sq, lam, starts, np.ones(p)) + self.frozen_floor),
        }

    def _channel_terms(
        self, values: np.ndarray, starts: np.ndarray, state: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Per-channel non-negative terms: normalised scores (t2, k columns) or per-column terms."""
        raw = self._filtered(values, starts, state)
        return {
            "t2": _ratio(raw["t2"], np.sqrt(state["score_var"])),  # w: T² = sum of w²
            "q": _ratio(raw["q"] ** 2, state["resid_var"]),
            # Upper-sided: a residual smaller than normal is no fault sign (a frozen tag is the
            # dynamics chart's job).
            "residual": _ratio(np.maximum(raw["residual"] - state["residual_mean"], 0.0) ** 2,
                               state["residual_var"]),
            "dynamics": _ratio((raw["dynamics"] - state["dynamics_mean"]) ** 2, state["dynamics_var"]),
        }

    def _channel_stats(
        self, values: np.ndarray, starts: np.ndarray, state: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        terms = self._channel_terms(values, starts, state)
        stats = np.column_stack([
            np.sum(terms["t2"] ** 2, axis=1),
            np.sum(terms["q"], axis=1),
            np.max(terms["residual"], axis=1) if values.shape[1] else np.zeros(len(values)),
            np.max(terms["dynamics"], axis=1) if values.shape[1] else np.zeros(len(values)),
        ])
        return stats, terms

    # -- scoring ------------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        keys = ("mean", "scale", "components", "eigenvalues", "covariance", "diff_scale", "resid_sq_mean",
                "score_var", "resid_var", "residual_mean", "residual_var", "dynamics_mean",
                "dynamics_var")
        return {key: getattr(self, f"{key}_") for key in keys}

    def _values(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks monitored columns: {missing[:10]}")
        order, starts = _time_order(X, self.max_gap_seconds_)
        return X[self.columns_].to_numpy(dtype=float)[order], starts, order

    def _scored(self, X: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Statistics divided by their limits, terms (both in time order) and the order used."""
        values, starts, order = self._values(X)
        with threadpool_limits(**_BLAS):
            stats, terms = self._channel_stats(values, starts, self._state())
        return stats / self.limits_, terms, order

    def statistics(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each chart's statistic divided by its control limit, per row (index of ``X``)."""
        import pandas as pd

        ratios, _, order = self._scored(X)
        out = np.empty_like(ratios)
        out[order] = ratios
        return pd.DataFrame(out, index=X.index, columns=list(CHANNELS))

    def score_samples(self, X: pd.DataFrame) -> np.ndarray:
        """Anomaly score per row: the largest chart statistic over its limit; 1.0 alarms."""
        ratios, _, order = self._scored(X)
        out = np.empty(len(ratios))
        out[order] = ratios.max(axis=1) if len(ratios) else ratios[:, 0]
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the row alarms (score above 1.0), else 0."""
        return (self.score_samples(X) > 1.0).astype(int)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Non-negative per-column parts of each row's score (index of ``X``, columns ``columns_``).

        The parts are those of the chart that sets the row's score (the largest statistic over
        its limit), divided by that chart's limit, so that each row sums to its score:

        - ``t2``: with ``w`` the normalised EWMA scores (T² = Σ w²), the parts are ``(P w)²``,
          the squares of ``w`` mapped back onto the columns by the loadings ``P``; they sum to
          T² because ``P`` has orthonormal columns. This is the decomposition of the quadratic
          form through its symmetric square root (Alcala & Qin 2011), never negative;
        - ``q``: the per-column normalised squared EWMA residuals, which sum to the statistic;
        - ``residual``, ``dynamics``: the per-column standardised deviations whose maximum is
          the statistic, rescaled to sum to it (the ranking of the columns is unchanged).

        Summing a tag's columns (``<tag>``, ``<tag>__rmean``, ``<tag>__rstd``) ranks the tags.
        """
        import pandas as pd

        ratios, terms, order = self._scored(X)
        n, p = len(ratios), self.n_features_in_
        parts = np.zeros((n, p))
        which = ratios.argmax(axis=1) if n else np.zeros(0, dtype=int)
        with threadpool_limits(**_BLAS):
            for index, channel in enumerate(CHANNELS):
                rows = which == index
                if not rows.any():
                    continue
                if channel == "t2":
                    part = (terms["t2"][rows] @ self.components_.T) ** 2
                else:
                    part = terms[channel][rows]
                total = part.sum(axis=1, keepdims=True)
                target = ratios[rows, index][:, None]
                parts[rows] = np.divide(part * target, total, out=np.zeros_like(part), where=total > 0)
        out = np.empty_like(parts)
        out[order] = parts
        return pd.DataFrame(out, index=X.index, columns=self.columns_)


# -- helpers ------------------------------------------------------------------------------------


def _fill(z: np.ndarray, finite: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """Missing standardised values replaced by their conditional mean given the row's observed
    ones under a Gaussian model with the fit rows' covariance ``S`` (regression on the known
    values): ``ẑ_m = S_mo S_oo⁻¹ z_o``. With nothing observed that is the normal mean, 0. One
    solve per pattern of missing columns."""
    z = np.where(finite, z, 0.0)
    incomplete = ~finite.all(axis=1)
    if not incomplete.any():
        return z
    rows = np.flatnonzero(incomplete)
    patterns, inverse = np.unique(finite[rows], axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for index, observed in enumerate(patterns):
        if not observed.any():
            continue  # nothing observed: stays at the normal mean
        at = rows[inverse == index]
        known = covariance[np.ix_(observed, observed)]
        coef = np.linalg.solve(known, covariance[np.ix_(observed, ~observed)])
        z[np.ix_(at, ~observed)] = z[np.ix_(at, observed)] @ coef
    return z


def _floor(variance: np.ndarray) -> np.ndarray:
    return np.where(variance > _MIN_VAR, variance, 0.0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` per column; 0 for a column whose normaliser is degenerate (a
    constant channel: a constant tag, or a residual the PCA model explains completely)."""
    ok = np.broadcast_to(denominator > _MIN_VAR, numerator.shape)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=ok)


def _project(
    z: np.ndarray, components: np.ndarray, eigenvalues: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whitened principal scores and residuals of standardised rows."""
    scores = z @ components
    residual = z - scores @ components.T
    return scores / np.sqrt(eigenvalues), residual


def _increments(
    z: np.ndarray, finite: np.ndarray, starts: np.ndarray, diff_scale: np.ndarray | None
) -> np.ndarray:
    """Row-to-row change of the standardised values (scaled by ``diff_scale`` when given); NaN at
    a restart and where either end is missing."""
    diff = np.full(z.shape, np.nan)
    if len(z) > 1:
        ok = finite[1:] & finite[:-1] & ~starts[1:, None]
        diff[1:] = np.where(ok, z[1:] - z[:-1], np.nan)
    if diff_scale is not None:
        diff = diff / diff_scale
    return diff


def _ewma(x: np.ndarray, lam: float, starts: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """EWMA down the rows, ``y_t = lam x_t + (1 - lam) y_{t-1}``, with ``y = x0`` before every row
    where ``starts`` is true (the first row always starts)."""
    out = np.empty_like(x, dtype=float)
    if len(x) == 0:
        return out
    bounds = np.r_[np.flatnonzero(starts), len(x)]
    if bounds[0] != 0:
        bounds = np.r_[0, bounds]
    zi = ((1 - lam) * np.asarray(x0, dtype=float))[None, :]
    for s, e in zip(bounds[:-1], bounds[1:]):
        out[s:e], _ = lfilter([lam], [1.0, -(1 - lam)], x[s:e], axis=0, zi=zi)
    return out


def _seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps as float seconds (datetimes of any resolution or time zone, or numbers)."""
    import pandas as pd

    if ts.dtype.kind in "iuf":
        return ts.to_numpy(dtype=float)
    stamps = pd.to_datetime(ts, utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)


def _time_order(X: pd.DataFrame, max_gap: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The row order the filters run in and where they restart (bool per row in that order)."""
    n = len(X)
    assets = X["asset"].astype(str).to_numpy() if "asset" in X.columns else None
    if "ts" in X.columns:
        ts = _seconds(X["ts"])
        keys = (ts,) if assets is None else (ts, assets)
        order = np.lexsort(keys)  # by asset, then time; stable for equal keys
        ts = ts[order]
    else:
        order, ts = np.arange(n), None
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    if assets is not None and n > 1:
        a = assets[order]
        starts[1:] |= a[1:] != a[:-1]
    if ts is not None and max_gap is not None and n > 1:
        with np.errstate(invalid="ignore"):
            starts[1:] |= ~(np.diff(ts) <= max_gap)  # a gap, or a missing timestamp
    return order, starts


def _subset_starts(starts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Restarts of the kept rows: the original ones, plus wherever rows were cut out in between."""
    index = np.flatnonzero(keep)
    sub = starts[index].copy()
    if len(index):
        sub[0] = True
        sub[1:] |= np.diff(index) > 1
    return sub


def _default_gap(X: pd.DataFrame) -> float | None:
    """Three times the median positive spacing of consecutive rows of an asset, or None."""
    if "ts" not in X.columns or len(X) < 2:
        return None
    order, starts = _time_order(X, None)
    ts = _seconds(X["ts"])[order]
    steps = np.diff(ts)[~starts[1:]]
    steps = steps[np.isfinite(steps) & (steps > 0)]
    return float(3 * np.median(steps)) if len(steps) else None
