"""``normal_behaviour``: a regression that predicts a target tag from its drivers (for a wind
turbine: power from wind speed, direction and air temperature, the turbine's own power curve);
the residual is the anomaly score, with limits set on out-of-fold residuals.

See :mod:`plantops.kinds._normal_behaviour_model` for the model (a penalised spline power curve on
density-corrected wind speed with direction and temperature corrections) and its scoring (the
instantaneous standardised residual and its trailing 24 h weighted mean). Its classic baseline is
the IEC 61400-12 binned power curve on wind speed alone, fitted on the same rows. Explanations say
which residual (the target's part equals the score) and which driver lies outside the range or
sector density it was fitted on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from plantops.kinds.base import KindParams, RegressionKind


class Params(KindParams):
    target: str
    drivers: tuple[str, ...] = Field(min_length=1)
    angular_drivers: tuple[str, ...] = ()
    density_temperature: str | None = None
    calibration_folds: int = Field(default=3, ge=2, le=10)
    bin_width: float = Field(default=0.5, gt=0)
    cut_in: float | None = 3.0
    idle_level: float | None = 5.0
    smoothing: str | None = "24h"
    smoothing_min_rows: int = Field(default=72, ge=1)
    alarm_side: Literal["low", "high", "both"] = "low"

    @field_validator("smoothing")
    @classmethod
    def _smoothing(cls, value: str | None) -> str | None:
        if value is not None:
            from plantops.units import parse_duration

            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _drivers(self) -> Params:
        if self.target in self.drivers:
            raise ValueError(f"target {self.target!r} cannot also be a driver")
        stray = [d for d in (*self.angular_drivers, *([self.density_temperature] if self.density_temperature else []))
                 if d not in self.drivers]
        if stray:
            raise ValueError(f"angular_drivers and density_temperature must be among the drivers, got {stray}")
        return self


class NormalBehaviour(RegressionKind):
    name = "normal_behaviour"
    summary = "target predicted from its drivers (a power curve); the residual is the anomaly score"
    params_model = Params
    estimator = "plantops.kinds._normal_behaviour_model.NormalBehaviourModel"

    def _model(self, regression: str) -> Any:
        from plantops.kinds._normal_behaviour_model import NormalBehaviourModel

        p = self.params
        return NormalBehaviourModel(
            target=p.target, drivers=p.drivers, false_alarm_rate=self.use_case.model.false_alarm_rate,
            calibration_folds=p.calibration_folds, angular_drivers=p.angular_drivers,
            density_temperature=p.density_temperature, regression=regression, bin_width=p.bin_width,
            cut_in=p.cut_in, idle_level=p.idle_level, smoothing=p.smoothing,
            smoothing_min_rows=p.smoothing_min_rows, alarm_side=p.alarm_side,
        )

    def build(self) -> Any:
        return self._model("ridge")

    def baselines(self) -> dict[str, Any]:
        return {"binned_curve": self._model("binned")}

    def context_rows(self, model: Any) -> int:
        """The trailing smoothing window's rows: a day is scored with the day before it."""
        from plantops.units import parse_duration

        smoothing = getattr(model, "smoothing", None)
        if not smoothing:
            return 0
        return int(parse_duration(smoothing).total_seconds() // self.use_case.features.bucket_seconds)

    def drift_columns(self) -> list[str]:
        return [self.params.target, *self.params.drivers]

    def regression_errors(self, model: Any, rows: Any) -> dict[str, float]:
        """On the rows the model calls normal operation (producing or becalmed, target measured):
        a stopped turbine's zero power is a fact for the monitor, not a regression error."""
        errors = model.evaluate_regression(self.model_input(model, rows))
        return {"rmse": errors["rmse"], "mae": errors["mae"], "r2": errors["r2"]}

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"target": self.params.target, "drivers": ",".join(self.params.drivers),
                "n_trimmed": getattr(model, "n_trimmed_", None)}
