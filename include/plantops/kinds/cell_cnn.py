"""``cell_cnn``: a small CNN trained from scratch on the CPU (Keras 3 on JAX) over the image-feature
rows' pixels (a classifier kind: four inspector classes, a defect probability against the line's
reject threshold).

Why Keras 3 on JAX: nothing pretrained can be downloaded, so the network is small and trained on
two cores; PyTorch's default wheel pulls multi-GB CUDA packages on this machine, TensorFlow's CPU
build is several times heavier, jax[cpu] is a small wheel. See
:mod:`plantops.kinds._cell_cnn_model` for the network, its training (symmetry augmentation, class
weights, no batch normalisation, cosine schedule, best epoch on an internal validation split) and
its storage (weights as numpy arrays; the Keras model is rebuilt on load). Keras and JAX are
imported only when a model is built, fitted or loaded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plantops.kinds.base import ClassifierKind, ClassifierParams


class Params(ClassifierParams):
    # None: the rows' own side; a smaller side reduces larger rows by block means.
    size: Literal[50, 60, 75, 100, 150, 300] | None = None
    filters: tuple[int, ...] = Field(default=(16, 32, 64, 96), min_length=1, max_length=6)
    dense_dropout: float = Field(default=0.3, ge=0, lt=1)
    epochs: int = Field(default=30, ge=1, le=500)
    batch_size: int = Field(default=32, ge=1, le=1024)
    learning_rate: float = Field(default=2e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    class_weight: Literal["balanced", "sqrt", "none"] = "sqrt"
    validation_share: float = Field(default=0.15, ge=0, lt=0.5)
    tta: bool = True
    # Augmentation beyond flips and quarter turns: random shift (share of the side), contrast and
    # brightness jitter of the standardised image.
    shift: float = Field(default=0.0, ge=0, le=0.25)
    jitter: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0


class CellCnn(ClassifierKind):
    name = "cell_cnn"
    summary = "a small CNN from scratch on the CPU (Keras 3 on JAX), symmetry augmentation, best epoch kept"
    params_model = Params
    estimator = "plantops.kinds._cell_cnn_model.CellCNN"

    def build(self) -> Any:
        from plantops.kinds._cell_cnn_model import CellCNN

        return CellCNN(**self.params.model_dump())

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"input_size": int(model.size_), "best_epoch": int(model.best_epoch_),
                "train_seconds": float(model.train_seconds_)}
