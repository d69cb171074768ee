"""The texture SVM and the from-scratch CNN together: their class probabilities averaged.

The two see a cell differently: the SVM hand-crafted statistics at a high resolution (dark areas,
thin dark lines, micro-texture), the CNN learned filters at a low one. Their errors are partly
independent, so the weighted mean of their class probabilities is right more often than either
(measured on elpv: ``bench/vision.py``, docs/benchmarks.md). Both members are fitted on the same
rows, each at its own side (rows of a multiple of a member's side are reduced to it); the weight is
fixed in advance (``cnn_weight``, 0.5 by default: no tuning on the held-out cells).

The fitted state is the two fitted members, each stored as its own kind stores it (skops trusts the
three classes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from plantops.kinds._cell_images import COLUMNS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

N_CLASSES = 4


class CellEnsemble(ClassifierMixin, BaseEstimator):
    """``cnn_weight`` x the CNN's class probabilities + (1 - ``cnn_weight``) x the SVM's.

    Parameters
    ----------
    svm_size, cnn_size:
        Each member's input side (``None``: the fit rows' own).
    svm_C, svm_vlad_clusters:
        The SVM's penalty and VLAD words (0: its texture features alone; its other parameters keep
        ``cell_texture_svm``'s defaults).
    cnn_filters, cnn_epochs:
        The CNN's convolution blocks and training length (the rest: ``cell_cnn``'s defaults).
    cnn_weight:
        Weight of the CNN's probabilities in the mean (0: the SVM alone, 1: the CNN alone).
    defective_from, reject_threshold:
        The kind's operating point (kept so a champion of this kind is rebuilt with its own).
    seed:
        Both members' seeds.
    """

    def __init__(self, svm_size: int | None = None, cnn_size: int | None = None, svm_C: float = 30.0,
                 svm_vlad_clusters: int = 64, cnn_filters: Sequence[int] = (16, 32, 64, 96),
                 cnn_epochs: int = 30, cnn_weight: float = 0.5,
                 defective_from: float = 2 / 3, reject_threshold: float = 0.4, seed: int = 0) -> None:
        self.svm_size = svm_size
        self.cnn_size = cnn_size
        self.svm_C = svm_C
        self.svm_vlad_clusters = svm_vlad_clusters
        self.cnn_filters = cnn_filters
        self.cnn_epochs = cnn_epochs
        self.cnn_weight = cnn_weight
        self.defective_from = defective_from
        self.reject_threshold = reject_threshold
        self.seed = seed

    def members(self) -> tuple[BaseEstimator, BaseEstimator]:
        """The two unfitted members with this ensemble's parameters."""
        from plantops.kinds._cell_cnn_model import CellCNN
        from plantops.kinds._cell_texture_model import CellTextureSVM

        shared = {"defective_from": self.defective_from, "reject_threshold": self.reject_threshold, "seed": self.seed}
        return (CellTextureSVM(size=self.svm_size, C=self.svm_C, vlad_clusters=self.svm_vlad_clusters,
                               **shared),
                CellCNN(size=self.cnn_size, filters=tuple(self.cnn_filters), epochs=self.cnn_epochs, **shared))

    def fit(self, rows: pd.DataFrame, classes: np.ndarray) -> CellEnsemble:
        svm, cnn = self.members()
        started = time.perf_counter()
        self.svm_ = svm.fit(rows, classes)
        svm_seconds = time.perf_counter() - started
        self.cnn_ = cnn.fit(rows, classes)
        # The smallest side the ensemble reads: each member reduces rows of a multiple of its own.
        self.size_ = int(math.lcm(int(self.svm_.size_), int(self.cnn_.size_)))
        self.columns_ = list(COLUMNS)
        self.classes_ = np.arange(N_CLASSES)
        self.train_seconds_ = round(time.perf_counter() - started, 1)
        log.info("CellEnsemble fitted: SVM at %d (%.0f s), CNN at %d (best epoch %d), %.0f s in all",
                 self.svm_.size_, svm_seconds, self.cnn_.size_, self.cnn_.best_epoch_, self.train_seconds_)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 4) the weighted mean of the members' class probabilities."""
        if not len(rows):
            return np.zeros((0, N_CLASSES))
        w = float(self.cnn_weight)
        proba = np.zeros((len(rows), N_CLASSES))
        if w < 1.0:
            proba += (1.0 - w) * self.svm_.predict_proba(rows)
        if w > 0.0:
            proba += w * self.cnn_.predict_proba(rows)
        return proba

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(rows).argmax(axis=1)


__all__ = ["CellEnsemble"]
