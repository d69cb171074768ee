"""``mspm_pca``: multivariate statistical process monitoring with PCA (Kresta, MacGregor & Marlin
1991) over the whole wide feature row (``<tag>``, ``<tag>__rmean``, ``<tag>__rstd``).

Hotelling's T² inside the PCA model and Q (SPE) outside it, with empirical limits on out-of-fold
statistics; see :mod:`plantops.kinds._pca_monitor`. Its classic baseline is the textbook monitor on
the per-bucket tag means only. Explanations are the exact contribution plot: each feature's part
of T² (complete decomposition, negative parts counted as zero) and of Q, each divided by its
control limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from plantops.features import base_columns
from plantops.kinds.base import KindParams, ModelKind, by_tag, whole_row

if TYPE_CHECKING:
    import pandas as pd


class Params(KindParams):
    explained_variance: float = Field(default=0.9, gt=0, lt=1)
    calibration_folds: int = Field(default=2, ge=2, le=10)


class MspmPca(ModelKind):
    name = "mspm_pca"
    summary = "PCA T²/Q monitor over values, rolling means and rolling standard deviations"
    params_model = Params
    estimator = "plantops.kinds._pca_monitor.PCAMonitor"

    def _monitor(self, columns: tuple[str, ...]) -> Any:
        from plantops.kinds._pca_monitor import PCAMonitor

        return PCAMonitor(columns=columns, explained_variance=self.params.explained_variance,
                          false_alarm_rate=self.use_case.model.false_alarm_rate,
                          calibration_folds=self.params.calibration_folds)

    def build(self) -> Any:
        return self._monitor(whole_row(self.use_case))

    def baselines(self) -> dict[str, Any]:
        return {"baseline": self._monitor(tuple(base_columns(self.use_case.tag_names)))}

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"explained_variance": self.params.explained_variance, "n_components": model.n_components_,
                "calibration_folds": model.calibration_folds, "t2_limit": model.t2_limit_, "q_limit": model.q_limit_}

    def tag_contributions(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        parts = model.contributions(rows[list(model.columns_)])
        return by_tag(parts["t2"].clip(lower=0) / model.t2_limit_ + parts["q"] / model.q_limit_)
