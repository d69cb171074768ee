"""The model-kind contract: what training, the promotion gate, scoring, monitoring and explanations
ask of a model, and nothing else.

A kind is one module in :mod:`plantops.kinds` with a :class:`ModelKind` subclass. It names its
parameter block (a pydantic model: ``model.params`` in the use case's YAML, checked with the file
and field named on error) and its estimator class; the estimator is a scikit-learn-style object
(``fit``, ``score_samples``, ``predict``, ``contributions``, fitted ``columns_``, ``mean_``,
``scale_``) whose state is plain arrays, so MLflow saves it with skops. The base class gives every
kind, from those few pieces:

- ``score``: per row an anomaly score (1.0 = alarm threshold) and the alarm, plus the expected
  value and residual for a kind that predicts a target;
- ``tag_contributions``: per row and tag, the tag's non-negative part of the score, which the
  explanations (per version, per alarm, per monitor window) rank;
- ``evaluate`` and ``gate``: held-out metrics on the same rows for challenger, champion and
  baselines, and the rule that promotes;
- ``drift_columns``: the columns the monitor compares with the champion's reference sample.

The modules that use a kind never ask which kind they have: they call these methods. Kind modules
import only the light core at import time (DAG parsing validates ``model.params``); numpy, pandas
and scikit-learn are imported inside the methods.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from plantops.features import base_columns, feature_columns

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase

# Rows from the fault onset to the first of this many consecutive alarms: the detection delay.
CONSECUTIVE_ALARMS = 3


class KindParams(BaseModel):
    """Base of every kind's parameter block (``model.params``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def far_limit(target: float) -> float:
    """The false-alarm rate a challenger may show on held-out normal rows: 1.5x the target, plus
    half a point for the sampling noise of a few hundred autocorrelated rows."""
    return target * 1.5 + 0.005


class ModelKind:
    """One kind of model behind the contract (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # "detector": the score is an anomaly statistic; "regression": it is a residual of a predicted target.
    output: ClassVar[Literal["detector", "regression"]] = "detector"
    params_model: ClassVar[type[KindParams]] = KindParams
    # Dotted path of the estimator class: skops loads only classes it is told to trust.
    estimator: ClassVar[str]

    def __init__(self, use_case: UseCase, params: KindParams | None = None) -> None:
        self.use_case = use_case
        if params is None:
            params = self.params_model.model_validate(
                use_case.model.params if use_case.model.kind == self.name else {})
        self.params = params

    # -- what each kind provides ----------------------------------------------------------------

    def build(self) -> Any:
        """A new, unfitted estimator configured from the use case."""
        raise NotImplementedError

    def baselines(self) -> dict[str, Any]:
        """Classic references fitted on the same rows and evaluated beside the model (unfitted)."""
        return {}

    def drift_columns(self) -> list[str]:
        """The feature columns drift is measured on (default: every tag's per-bucket mean)."""
        return base_columns(self.use_case.tag_names)

    def log_params(self, model: Any) -> dict[str, Any]:
        """Kind-specific fitted facts for the MLflow run's parameters."""
        return {}

    # -- shared behaviour -------------------------------------------------------------------------

    @classmethod
    def estimator_class(cls) -> type:
        module, _, name = cls.estimator.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def fit(self, estimator: Any, rows: pd.DataFrame) -> Any:
        return estimator.fit(rows)

    def context_rows(self, model: Any) -> int:
        """Rows before the first row to score that a temporal model needs to be warm."""
        return int(getattr(model, "context_rows_", 0) or 0)

    @staticmethod
    def model_input(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """The columns the model reads, plus ``asset`` and ``ts`` (temporal kinds restart at gaps)."""
        keys = [c for c in ("asset", "ts") if c in rows.columns]
        return rows[keys + [c for c in model.columns_ if c not in keys]]

    def score(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row (index of ``rows``): ``score`` (1.0 = threshold), ``alarm`` (0/1), and for a
        regression kind ``expected`` and ``residual`` of its target (NaN otherwise)."""
        import numpy as np
        import pandas as pd

        X = self.model_input(model, rows)
        scores = np.asarray(model.score_samples(X), dtype=float)
        out = pd.DataFrame({"score": scores, "alarm": (scores > 1.0).astype(int)}, index=rows.index)
        out["expected"] = np.nan
        out["residual"] = np.nan
        if hasattr(model, "predict_expected"):
            out["expected"] = model.predict_expected(X)
            out["residual"] = model.residuals(X)
        return out

    def tag_contributions(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row and tag, the tag's part of the score: the estimator's per-column contributions
        summed over the tag's columns (``<tag>``, ``<tag>__rmean``, ``<tag>__rstd``)."""
        parts = model.contributions(self.model_input(model, rows))
        return by_tag(parts[[c for c in parts.columns if c in model.columns_]].clip(lower=0))

    def evaluate(self, model: Any, data: Any) -> dict[str, Any]:
        """Held-out metrics on ``data`` (:class:`plantops.stages.training.TrainingData`): the
        false-alarm rate on held-out normal rows, the detection rate and delay per fault label
        and their unweighted means (each fault counts once), NaN where the held-out set has no
        rows of that kind. A regression kind adds its target's errors on the held-out normal rows.

        The model scores the whole series (``data.series``) in time order, so a temporal model sees
        each held-out row with its history, as it would in the plant."""
        import numpy as np

        scored = self.score(model, data.series) if len(data.series) else None
        alarm = None if scored is None else scored["alarm"]
        normal = data.holdout_normal.index
        far = float(alarm.loc[normal].mean()) if len(normal) else math.nan
        rates: dict[str, float] = {}
        delays: dict[str, float] = {}
        faults = data.holdout_faults
        if len(faults):
            for label, rows in faults.groupby("label", sort=True):
                hits = alarm.loc[rows.index].to_numpy()
                rates[str(label)] = float(hits.mean())
                delays[str(label)] = _median_delay(rows, hits, self.use_case.features.bucket_seconds)
        finite_delays = [d for d in delays.values() if not math.isnan(d)]
        result = {
            "far": far,
            "detection_rate": float(np.mean(list(rates.values()))) if rates else math.nan,
            "detection_rates": rates,
            "detection_delay": float(np.median(finite_delays)) if finite_delays else math.nan,
            "detection_delays": delays,
            "n_fit": len(data.fit),
            "n_holdout_normal": len(normal),
            "n_holdout_faults": len(faults),
        }
        if self.output == "regression":
            result.update(self.regression_errors(model, data.holdout_normal) if len(normal)
                          else {"rmse": math.nan, "mae": math.nan})
        return result

    def regression_errors(self, model: Any, rows: pd.DataFrame) -> dict[str, float]:
        """RMSE and MAE of the predicted target on ``rows`` (finite residuals)."""
        import numpy as np

        residual = np.asarray(model.residuals(self.model_input(model, rows)), dtype=float)
        residual = residual[np.isfinite(residual)]
        if not len(residual):
            return {"rmse": math.nan, "mae": math.nan}
        return {"rmse": float(np.sqrt(np.mean(residual**2))), "mae": float(np.mean(np.abs(residual)))}

    def gate(self, challenger: dict[str, Any], champion: dict[str, Any] | None,
             champion_version: str | None, new_normal: dict[str, Any] | None = None) -> tuple[bool, str]:
        """Promote the challenger over the champion? Both were evaluated on the same held-out rows.
        Without a champion, or with one that cannot score today's features, the challenger wins.
        ``new_normal`` (``since``, ``rows``, ``champion_far``): the champion on the held-out normal
        rows of today's plant, those after a declared reference start or confirmed normal since the
        champion was trained. Beyond the false-alarm limit there it is no longer valid and loses to a
        challenger within the limit on all held-out normal rows, however their detection rates
        compare; otherwise the kind's :meth:`compare` decides."""
        if champion_version is None:
            return True, "no champion to compare with"
        if champion is None:
            return True, f"champion v{champion_version} cannot score the current features"
        limit = far_limit(self.use_case.model.false_alarm_rate)
        far = challenger.get("far", math.nan)
        if new_normal is not None and new_normal["champion_far"] > limit and not math.isnan(far) and far <= limit:
            # Today's normal operation (after a declared new reference, or confirmed normal by people
            # since the champion was trained) is the ground truth: a model that false-alarms on it no
            # longer describes the plant.
            return True, (f"champion v{champion_version} is no longer valid: false-alarm rate "
                          f"{new_normal['champion_far']:.4f} on {new_normal['rows']} held-out normal rows since "
                          f"{new_normal['since']} > limit {limit:.4f}; challenger {far:.4f} on all held-out normal "
                          f"rows <= {limit:.4f}")
        return self.compare(challenger, champion, champion_version, limit)

    def compare(self, challenger: dict[str, Any], champion: dict[str, Any], champion_version: str,
                limit: float) -> tuple[bool, str]:
        """Detectors: within the false-alarm limit and a higher mean detection rate (ties broken by a
        shorter median detection delay)."""
        target = self.use_case.model.false_alarm_rate
        far, rate = challenger["far"], challenger["detection_rate"]
        if math.isnan(far):
            return False, "held-out set lacks normal-labelled rows: nothing to compare on"
        if far > limit:
            return False, f"false-alarm rate {far:.4f} above the limit {limit:.4f} (target {target})"
        if math.isnan(rate):
            return False, "held-out set lacks fault-labelled rows: nothing to compare on"
        best = champion.get("detection_rate", math.nan)
        if math.isnan(best) or rate > best:
            return True, (f"detection rate {rate:.4f} > champion v{champion_version} {best:.4f} "
                          f"at false-alarm rate {far:.4f} <= {limit:.4f}")
        delay, best_delay = challenger.get("detection_delay", math.nan), champion.get("detection_delay", math.nan)
        if rate == best and not math.isnan(delay) and not math.isnan(best_delay) and delay < best_delay:
            return True, (f"detection rate {rate:.4f} equal to champion v{champion_version}, median delay "
                          f"{delay:g} < {best_delay:g} buckets")
        return False, f"detection rate {rate:.4f} not above champion v{champion_version} {best:.4f}"


class RegressionKind(ModelKind):
    """A kind that predicts a target tag from its drivers; the residual is the anomaly score."""

    output: ClassVar[Literal["detector", "regression"]] = "regression"

    def compare(self, challenger: dict[str, Any], champion: dict[str, Any], champion_version: str,
                limit: float) -> tuple[bool, str]:
        """Within the false-alarm limit (or no worse than the champion's rate on the same rows) and
        a lower held-out RMSE of the target; labelled faults, where they exist, must not be detected
        less."""
        target = self.use_case.model.false_alarm_rate
        far, rmse = challenger["far"], challenger.get("rmse", math.nan)
        if math.isnan(far) or math.isnan(rmse):
            return False, "held-out set lacks normal rows with the target: nothing to compare on"
        champion_far, best = champion.get("far", math.nan), champion.get("rmse", math.nan)
        allowed = max(limit, champion_far) if not math.isnan(champion_far) else limit
        if far > allowed:
            return False, f"false-alarm rate {far:.4f} above {allowed:.4f} (limit {limit:.4f}, target {target})"
        rate, best_rate = challenger["detection_rate"], champion.get("detection_rate", math.nan)
        if not math.isnan(rate) and not math.isnan(best_rate) and rate < best_rate:
            return False, f"detection rate {rate:.4f} below champion v{champion_version} {best_rate:.4f}"
        if math.isnan(best) or rmse < best:
            return True, (f"held-out RMSE {rmse:.4g} < champion v{champion_version} {best:.4g} "
                          f"at false-alarm rate {far:.4f} <= {allowed:.4f}")
        return False, f"held-out RMSE {rmse:.4g} not below champion v{champion_version} {best:.4g}"


def _median_delay(rows: pd.DataFrame, alarms: Sequence[int], bucket_seconds: int) -> float:
    """Median over the label's episodes (runs of rows without a gap) of the rows from the episode's
    first row to the first of :data:`CONSECUTIVE_ALARMS` consecutive alarms; an episode never
    detected counts as its length."""
    import numpy as np
    import pandas as pd

    ts = pd.to_datetime(rows["ts"], utc=True).to_numpy()
    assets = rows["asset"].to_numpy() if "asset" in rows.columns else np.zeros(len(rows))
    alarms = np.asarray(alarms)
    gap = np.timedelta64(int(bucket_seconds * 3), "s")
    breaks = np.r_[True, (np.diff(ts) > gap) | (assets[1:] != assets[:-1])]
    episodes = np.cumsum(breaks)
    delays = []
    for k in np.unique(episodes):
        hits = alarms[episodes == k]
        run = np.convolve(hits, np.ones(CONSECUTIVE_ALARMS, dtype=int), mode="valid")
        first = np.flatnonzero(run == CONSECUTIVE_ALARMS)
        delays.append(float(first[0]) if len(first) else float(len(hits)))
    return float(np.median(delays)) if delays else math.nan


def by_tag(per_column: pd.DataFrame) -> pd.DataFrame:
    """Per-column parts summed per tag (``<tag>``, ``<tag>__rmean`` and ``<tag>__rstd`` are one tag)."""
    return per_column.T.groupby(lambda col: col.split("__")[0], sort=False).sum().T


def whole_row(use_case: UseCase) -> tuple[str, ...]:
    return tuple(feature_columns(use_case.tag_names))
