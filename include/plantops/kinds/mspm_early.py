"""``mspm_early``: a detector built for early and subtle process faults.

EWMA-filtered PCA statistics (MEWMA T² and a residual EWMA) plus per-tag charts of the residual's
mean square and of the row-to-row dynamics, on the per-bucket tag means; see
:mod:`plantops.kinds._early_monitor`. Small steps add up over rows instead of drowning in one
row's noise, and faults that change only a tag's variability or autocorrelation (random
variation, sticking or frozen valves) show in the per-tag charts, which a sum over all columns
hides. Compared side by side with ``mspm_pca`` and the textbook PCA monitor in every training run
and in ``python -m bench.detectors`` (TEP test runs, the table in docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from plantops.features import base_columns
from plantops.kinds.base import KindParams, ModelKind


class Params(KindParams):
    explained_variance: float = Field(default=0.95, gt=0, lt=1)
    # EWMA weight of the newest row: 0.2 is the classic choice (Lucas & Saccucci 1990).
    ewma_lambda: float = Field(default=0.2, gt=0, le=1)
    calibration_folds: int = Field(default=2, ge=2, le=10)
    frozen_floor: float = Field(default=0.01, gt=0, lt=1)
    # Restart the filters where rows are further apart; default three buckets.
    max_gap: str | None = None


class MspmEarly(ModelKind):
    name = "mspm_early"
    summary = "EWMA PCA (MEWMA T², residual EWMA) with per-tag residual and dynamics charts"
    params_model = Params
    estimator = "plantops.kinds._early_monitor.EarlyFaultMonitor"

    def build(self) -> Any:
        from plantops.units import parse_duration
        from plantops.kinds._early_monitor import EarlyFaultMonitor

        gap = self.params.max_gap
        return EarlyFaultMonitor(
            columns=tuple(base_columns(self.use_case.tag_names)),
            explained_variance=self.params.explained_variance,
            ewma_lambda=self.params.ewma_lambda,
            false_alarm_rate=self.use_case.model.false_alarm_rate,
            calibration_folds=self.params.calibration_folds,
            frozen_floor=self.params.frozen_floor,
            max_gap_seconds=None if gap is None else parse_duration(gap).total_seconds(),
        )

    def baselines(self) -> dict[str, Any]:
        from plantops.kinds.mspm_pca import MspmPca, Params as PcaParams

        # The same explained variance, so the comparison is between the methods, not their settings.
        pca = MspmPca(self.use_case, PcaParams(explained_variance=self.params.explained_variance))
        return {"mspm_pca": pca.build(), **pca.baselines()}

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"explained_variance": self.params.explained_variance, "ewma_lambda": model.ewma_lambda,
                "n_components": getattr(model, "n_components_", None), "context_rows": model.context_rows_}
