"""A small CNN for solar-cell EL images, trained from scratch on the CPU with Keras 3 on JAX.

Why Keras 3 on JAX: no pretrained weights can be downloaded here, so the network is small and
trained from scratch on two cores. PyTorch's default wheel pulls multi-GB CUDA packages on this
machine, and TensorFlow's CPU build is several times heavier than jax[cpu] (a ~100 MB wheel
with XLA); Keras 3 gives the standard layers, optimisers and schedules over JAX, and its weights
are plain numpy arrays, which is what the registry stores (skops, no pickle).

The network (no batch normalisation: on elpv a batch-normalised CNN collapsed to 27 % after 15
epochs when its running statistics diverged from the batches', see /work/shared/FACTS.md):

- input: the image standardised per cell (minus its mean, over its spread), so a change of camera
  gain or offset does not change the input (the monitor sees those in the image statistics);
- ``len(filters)`` blocks of two 3x3 convolutions (ReLU, He initialisation) and a 2x2 max pool,
  then global average pooling (a defect counts wherever it lies), dropout and a 4-way softmax;
- AdamW with a cosine learning-rate decay after a one-epoch warm-up, cross-entropy with class
  weights (``class_weight``: ``"balanced"``, ``"sqrt"`` of it, or ``"none"``);
- every epoch sees each fit image under a random one of the 8 symmetries of the square (flips and
  quarter turns: a cell's class does not depend on its orientation);
- ``validation_share`` of the fit rows (stratified) are held back; the weights of the epoch with
  the best validation accuracy (the lower loss on a tie) are kept, so a late divergence costs
  nothing;
- optionally (``shift``, ``jitter``; off by default) each epoch also shifts every fit image by up
  to ``shift`` of its side (reflected at the border: the cell's edge pattern continues) and
  scales and offsets its standardised values by up to ``jitter`` (contrast and brightness);
- prediction averages the class probabilities over the 8 symmetries (``tta``).

Seeds are fixed (``keras.utils.set_random_seed``): the same rows and parameters give the same
weights on the same machine. The fitted state is the architecture's parameters and the weights as
a list of numpy arrays; the Keras model is rebuilt from them on first use after loading.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from plantops.kinds._cell_images import COLUMNS, dihedral, row_size, stack

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

N_CLASSES = 4
_PREDICT_BATCH = 256


def _keras() -> Any:
    # Keras reads its backend once, at import: JAX unless the environment chose another.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras


def _standardise(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    mean = flat.mean(axis=1)[:, None, None]
    spread = np.maximum(flat.std(axis=1), 1e-3)[:, None, None]
    return ((images - mean) / spread).astype(np.float32)


class CellCNN(ClassifierMixin, BaseEstimator):
    """A small from-scratch CNN over image-feature rows (see the module docstring).

    Parameters
    ----------
    size:
        Input side (rows of a multiple of it are reduced by block means); ``None``: the fit rows'.
    filters:
        Filters of each convolution block (two 3x3 convolutions and a 2x2 max pool each).
    dense_dropout:
        Dropout before the softmax.
    epochs, batch_size, learning_rate, weight_decay:
        Training length and AdamW settings (cosine decay to 1 % of ``learning_rate``).
    class_weight:
        ``"balanced"`` (n / (4 n_k)), ``"sqrt"`` (its square root: rare classes count more without
        trading much accuracy on the common ones) or ``"none"``.
    shift, jitter:
        Training augmentation beyond the symmetries: the largest random shift as a share of the
        side, and the largest random contrast factor change and brightness offset (0: none).
    validation_share:
        Share of the fit rows held back to choose the best epoch (0: keep the last epoch).
    tta:
        Average predictions over the 8 symmetries of the square.
    defective_from, reject_threshold:
        The kind's operating point (kept so a champion of this kind is rebuilt with its own).
    seed:
        Keras, numpy and the validation split.
    """

    def __init__(self, size: int | None = None, filters: Sequence[int] = (16, 32, 64, 96),
                 dense_dropout: float = 0.3, epochs: int = 30, batch_size: int = 32, learning_rate: float = 2e-3,
                 weight_decay: float = 1e-4, class_weight: str = "sqrt", validation_share: float = 0.15,
                 tta: bool = True, shift: float = 0.0, jitter: float = 0.0, defective_from: float = 2 / 3,
                 reject_threshold: float = 0.4,
                 seed: int = 0) -> None:
        self.size = size
        self.filters = filters
        self.dense_dropout = dense_dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.validation_share = validation_share
        self.tta = tta
        self.shift = shift
        self.jitter = jitter
        self.defective_from = defective_from
        self.reject_threshold = reject_threshold
        self.seed = seed

    # -- the network ----------------------------------------------------------------------------

    def _build(self, size: int) -> Any:
        keras = _keras()
        from keras import layers

        inputs = keras.Input((size, size, 1))
        x = inputs
        for n in self.filters:
            for _ in range(2):
                x = layers.Conv2D(int(n), 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(float(self.dense_dropout))(x)
        outputs = layers.Dense(N_CLASSES, activation="softmax")(x)
        return keras.Model(inputs, outputs)

    def _net(self) -> Any:
        """The Keras model with the fitted weights, rebuilt on first use after loading."""
        net = self.__dict__.get("_net_cache")
        if net is None:
            net = self._build(self.size_)
            net.set_weights([np.asarray(w) for w in self.weights_])
            self.__dict__["_net_cache"] = net
        return net

    def __getstate__(self) -> dict[str, Any]:
        # The Keras model is a cache of weights_: never serialised.
        state = super().__getstate__()
        state.pop("_net_cache", None)
        return state

    # -- scikit-learn API -------------------------------------------------------------------------

    def fit(self, rows: pd.DataFrame, classes: np.ndarray) -> CellCNN:
        keras = _keras()

        y = np.asarray(classes, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise ValueError(f"fit rows hold only class {np.unique(y).tolist()}: a classifier needs two or more")
        self.__dict__.pop("_net_cache", None)
        self.size_ = int(self.size or row_size(rows))
        if self.size_ < 2 ** len(self.filters):
            raise ValueError(f"size {self.size_} is too small for {len(self.filters)} pooling blocks "
                             f"(needs >= {2 ** len(self.filters)})")
        images = _standardise(stack(rows, self.size_))
        self.columns_ = list(COLUMNS)
        keras.utils.set_random_seed(int(self.seed))
        rng = np.random.default_rng(int(self.seed))
        train, val = _split(y, float(self.validation_share), rng)
        counts = np.bincount(y[train], minlength=N_CLASSES).astype(float)
        weights = np.where(counts > 0, len(train) / (N_CLASSES * np.maximum(counts, 1)), 0.0)
        if self.class_weight == "sqrt":
            weights = np.sqrt(weights)
        elif self.class_weight == "none":
            weights = (counts > 0).astype(float)
        self.class_weights_ = weights

        net = self._build(self.size_)
        steps = max(1, int(np.ceil(len(train) / int(self.batch_size))))
        total = steps * int(self.epochs)
        warmup = min(steps, total // 2)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=float(self.learning_rate) / 10, decay_steps=max(total - warmup, 1), alpha=0.01,
            warmup_target=float(self.learning_rate), warmup_steps=warmup)
        net.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=float(self.weight_decay)),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history: list[dict[str, float]] = []
        best: tuple[float, float] | None = None
        best_weights = net.get_weights()
        self.best_epoch_ = int(self.epochs)
        started = time.perf_counter()
        for epoch in range(int(self.epochs)):
            turns = rng.integers(0, 8, size=len(train))
            batch = np.empty_like(images[train])
            for k in range(8):
                picked = turns == k
                batch[picked] = dihedral(images[train][picked], k)
            batch = _augment(batch, float(self.shift), float(self.jitter), rng)
            fitted = net.fit(batch[..., None], y[train], batch_size=int(self.batch_size), epochs=1, shuffle=True, verbose=0,
                             class_weight={k: float(w) for k, w in enumerate(weights)})
            record = {"epoch": epoch + 1, "loss": float(fitted.history["loss"][-1]),
                      "accuracy": float(fitted.history["accuracy"][-1])}
            if len(val):
                proba = net.predict(images[val][..., None], batch_size=_PREDICT_BATCH, verbose=0)
                record["val_accuracy"] = float((proba.argmax(axis=1) == y[val]).mean())
                record["val_loss"] = float(-np.mean(np.log(np.maximum(proba[np.arange(len(val)), y[val]], 1e-7))))
                key = (record["val_accuracy"], -record["val_loss"])
                if best is None or key > best:
                    best, best_weights, self.best_epoch_ = key, net.get_weights(), epoch + 1
            record["seconds"] = round(time.perf_counter() - started, 1)
            history.append(record)
            log.info("CellCNN epoch %d/%d: %s", epoch + 1, self.epochs, record)
        if len(val):
            net.set_weights(best_weights)
        self.weights_ = [np.asarray(w) for w in net.get_weights()]
        self.history_ = history
        self.n_train_, self.n_validation_ = int(len(train)), int(len(val))
        self.train_seconds_ = round(time.perf_counter() - started, 1)
        self.classes_ = np.arange(N_CLASSES)
        self.__dict__["_net_cache"] = net
        log.info("CellCNN fitted: %d cells at %dx%d, best epoch %d of %d, %.0f s", len(y), self.size_, self.size_,
                 self.best_epoch_, self.epochs, self.train_seconds_)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 4) class probabilities, averaged over the 8 symmetries with ``tta``."""
        if not len(rows):
            return np.zeros((0, N_CLASSES))
        images = _standardise(stack(rows, self.size_))
        net = self._net()
        views = range(8) if self.tta else range(1)
        proba = np.mean([net.predict(np.ascontiguousarray(dihedral(images, k))[..., None],
                                     batch_size=_PREDICT_BATCH, verbose=0) for k in views], axis=0)
        return proba.astype(np.float64)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(rows).argmax(axis=1)


def _augment(batch: np.ndarray, shift: float, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Each image shifted by up to ``shift`` x its side (reflect-padded, then cropped back) and its
    values scaled by 1 +- ``jitter`` and offset by +- ``jitter``; the batch itself when both are 0."""
    n, side = batch.shape[0], batch.shape[-1]
    pad = int(round(shift * side))
    if pad > 0:
        padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
        batch = np.stack([padded[i, dy[i]:dy[i] + side, dx[i]:dx[i] + side] for i in range(n)])
    if jitter > 0:
        scale = 1 + rng.uniform(-jitter, jitter, size=(n, 1, 1))
        batch = (batch * scale + rng.uniform(-jitter, jitter, size=(n, 1, 1))).astype(np.float32)
    return batch


def _split(y: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, validation) indices; a class with fewer than 2 rows stays in train."""
    train, val = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_val = int(round(share * len(idx))) if len(idx) >= 2 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))
