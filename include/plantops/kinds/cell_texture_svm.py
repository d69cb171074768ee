"""``cell_texture_svm``: hand-crafted texture features of a solar-cell EL image and an RBF SVM, the
classic baseline of visual inspection (a classifier kind: image-feature rows, four inspector
classes, a defect probability against the line's reject threshold).

See :mod:`plantops.kinds._cell_texture_model` for the features (intensity, dark regions, local
binary patterns, gradient orientations, thin dark lines, spectral bands), the VLAD encoding of dense
SIFT-like descriptors and the calibrated SVM.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from plantops.kinds.base import ClassifierKind, ClassifierParams


class Params(ClassifierParams):
    # None: the rows' own side; a smaller side reduces larger rows by block means.
    size: Literal[50, 60, 75, 100, 150, 300] | None = None
    C: float = Field(default=30.0, gt=0)
    gamma: float | Literal["scale"] = "scale"
    lbp_radii: tuple[int, ...] = Field(default=(1, 2, 4), min_length=1)
    orientation_bins: int = Field(default=12, ge=4, le=64)
    calibration_folds: int = Field(default=3, ge=2, le=10)
    # VLAD of dense SIFT-like descriptors (0 clusters: the texture features alone); cells in pixels
    # of the 300 x 300 image.
    vlad_clusters: int = Field(default=64, ge=0, le=1024)
    vlad_cells: tuple[Annotated[int, Field(ge=2, le=100)], ...] = Field(default=(10, 8), min_length=1,
                                                                       max_length=4)
    vlad_components: int = Field(default=128, ge=1, le=2048)
    seed: int = 0


class CellTextureSvm(ClassifierKind):
    name = "cell_texture_svm"
    summary = ("texture features (LBP, gradient orientations, dark regions, spectrum) and a VLAD encoding of "
               "dense SIFT-like descriptors, an RBF SVM")
    params_model = Params
    estimator = "plantops.kinds._cell_texture_model.CellTextureSVM"

    def build(self) -> Any:
        from plantops.kinds._cell_texture_model import CellTextureSVM

        return CellTextureSVM(**self.params.model_dump())

    def log_params(self, model: Any) -> dict[str, Any]:
        return {"input_size": int(model.size_), "n_texture_features": int(model.n_texture_features_),
                "n_features": int(model.n_features_),
                # the descriptor cells' sides at the input size ("" without VLAD)
                "vlad_cells": ",".join(str(c) for c in (model.vlad_scales_ if model.vlad_centres_ else [])),
                "n_support_vectors": int(model.svc_.n_support_.sum())}
