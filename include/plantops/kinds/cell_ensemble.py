"""``cell_ensemble``: ``cell_texture_svm`` and ``cell_cnn`` fitted on the same rows, their class
probabilities averaged (a classifier kind: four inspector classes, a defect probability against the
line's reject threshold).

A third, separately named option beside the two kinds it combines: the gate compares it with them
like any other kind, and a use case that wants one model keeps naming one. See
:mod:`plantops.kinds._cell_ensemble_model`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plantops.kinds.base import ClassifierKind, ClassifierParams

Side = Literal[50, 60, 75, 100, 150, 300]


class Params(ClassifierParams):
    # None: the rows' own side; a smaller side reduces larger rows by block means.
    svm_size: Side | None = None
    cnn_size: Side | None = None
    svm_C: float = Field(default=30.0, gt=0)
    svm_vlad_clusters: int = Field(default=64, ge=0, le=1024)
    cnn_filters: tuple[int, ...] = Field(default=(16, 32, 64, 96), min_length=1, max_length=6)
    cnn_epochs: int = Field(default=30, ge=1, le=500)
    cnn_weight: float = Field(default=0.5, ge=0, le=1)
    seed: int = 0


class CellEnsemble(ClassifierKind):
    name = "cell_ensemble"
    summary = "cell_texture_svm and cell_cnn on the same rows, their class probabilities averaged"
    params_model = Params
    estimator = "plantops.kinds._cell_ensemble_model.CellEnsemble"

    def build(self) -> Any:
        from plantops.kinds._cell_ensemble_model import CellEnsemble as Estimator

        return Estimator(**self.params.model_dump())

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"input_size": int(model.size_), "svm_input_size": int(model.svm_.size_),
                "cnn_input_size": int(model.cnn_.size_), "cnn_best_epoch": int(model.cnn_.best_epoch_),
                "train_seconds": float(model.train_seconds_)}
