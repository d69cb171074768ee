"""Hand-crafted texture features of a solar-cell EL image and an RBF SVM: the classic baseline of
visual inspection (Deitsch et al. 2019's was dense KAZE/SIFT descriptors, VLAD-encoded, and an SVM:
82.44 % four-class accuracy on the 656 held-out elpv cells).

Features (numpy and scipy only), from the image divided by its median (EL brightness varies from
cell to cell and with the camera's exposure; a defect is a region darker *than the rest of the
cell*):

- intensity: percentiles, mean, spread, skewness, kurtosis of the normalised image, the raw mean
  and spread, and the shares of pixels below 30 %, 50 % and 70 % of the median (dark, inactive
  areas);
- dark regions: the cell cut into an 8 x 8 grid, its block means sorted (the darkest blocks first:
  how much of the cell is dark, wherever it is), and the same of the blocks' spreads;
- local binary patterns: rotation-invariant uniform LBP (8 neighbours) at radii 1, 2 and 4 pixels,
  a 10-bin histogram each (micro-texture: grain boundaries of poly cells against crack edges);
- gradients: a 12-bin orientation histogram weighted by magnitude and the magnitude's percentiles
  (cracks are oriented edges; busbars and fingers are the regular ones);
- thin dark lines: the image below its 7-pixel local mean ("black top-hat"), its percentiles and
  the shares beyond fixed depths (cracks are thin lines darker than their surroundings);
- spectrum: the energy of the normalised image in 8 log-spaced radial frequency bands;
- dark areas against the cell's own background (the image below its median over a window of a
  tenth of the side, which keeps the regular busbar/finger pattern and drops cracks and spots): its
  percentiles and the shares beyond fixed depths; large inactive areas: the percentiles of the
  image smoothed over a sixth of its side and the shares below 50/70/85 % of the median;
- local descriptors: the cell cut into 10 x 10 patches, per patch a HOG-like 9-bin orientation
  histogram, intensity, thin-dark-line and dark-area statistics, and over the patches each
  dimension's order statistics (the worst patches, wherever they lie).

The last two groups were chosen by 5-fold cross-validation on the 1,968 fit cells at 150 x 150
(never on the held-out cells): 73.1 % without them, 74.6 % with them (C = 30; C = 3, 10 were
lower). The raw 30 x 30 pixels in an RBF SVM gave 71.6 %, 50 x 50 72.3 %.

Dense local descriptors, VLAD-encoded (what the published SVM used, with SIFT-like descriptors in
place of KAZE): at each of ``vlad_cells`` scales (the side of a descriptor cell in pixels of the
300 x 300 image, 10 and 8 by default), a 4 x 4 grid of cells slid over the cell image one cell at a
time, per cell an 8-bin signed gradient orientation histogram (RootSIFT-normalised: clipped at 0.2,
square root); the descriptors of the fit cells quantised into ``vlad_clusters`` k-means words, each
image's residuals to its words summed per word (intra- and power-normalised), the scales
concatenated and reduced to ``vlad_components`` whitened principal components, which join the
texture features. Chosen by 5-fold cross-validation on the 1,968 fit cells (never on the held-out
cells): at 150 x 150, 74.3 % with the texture features alone, 76.5 % with the VLAD components of
cells 5 and 4 (77.2 % with a 300 x 300 scale in place of the second, not adopted: the model would
need full-resolution rows); at 60 x 60, 72.8 % against 75.6 %. Also tried there and not better:
gradient boosting (scikit-learn's HistGradientBoostingClassifier) on the texture features, alone
(74.8 % at 150) or averaged with the SVM (75.2 %); the module type as a feature or a model per type
(+0.1 to +0.4 points); an ordinal reading (the expected defect probability cut at thresholds fitted
by cross-validation: 72.6 %) and class-bias offsets fitted by nested cross-validation (76.3 %
against 76.7 % without); the published SVM's own best descriptors (KAZE keypoints, VGG descriptors,
VLAD, at 300 x 300; OpenCV contrib, not a dependency): 73.8 % alone, 77.0 % beside these features
against 76.6 % (docs/benchmarks.md, "Model quality").

The classifier: the features standardised, an RBF SVC with balanced class weights (the 2/3 class
has 106 of the 2,624 cells), and its one-against-one decision values calibrated to four class
probabilities by a multinomial logistic regression fitted on *out-of-fold* decision values (3
folds), as Platt scaling does (scikit-learn 1.9 deprecates ``SVC(probability=True)``). The
calibration restores the classes' real frequencies that the balanced weights remove, so the most
probable class maximises accuracy while the SVM's margins still separate the rare classes.

The fitted state is a scaler, an SVC and a logistic regression: scikit-learn estimators skops
trusts by default, so MLflow stores the model with this class as the only extra trusted type.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from plantops.kinds._cell_images import COLUMNS, row_size, stack

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

N_CLASSES = 4
_PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
_GRID = 8
# Patches per side of the local descriptors, and the order statistics taken over the patches.
_LOCAL_GRID = 10
_ORDER = (0, 5, 25, 50, 75, 95, 100)


class CellTextureSVM(ClassifierMixin, BaseEstimator):
    """Texture features + RBF SVM over image-feature rows (see the module docstring).

    Parameters
    ----------
    size:
        The side the features are computed at (rows of a multiple of it are reduced); ``None``:
        the fit rows' own side (300: the full image).
    C, gamma:
        The SVC's penalty and RBF width (``"scale"``: 1 / (n_features x variance)).
    lbp_radii, orientation_bins:
        LBP radii in pixels of the ``size`` image; gradient orientation bins.
    calibration_folds:
        Folds of the out-of-fold decision values the probabilities are calibrated on.
    vlad_clusters, vlad_cells, vlad_components:
        The VLAD encoding of dense local descriptors (0 clusters: none): its k-means words, the
        descriptor cells' sides in pixels of the 300 x 300 image (scaled to ``size``, at least 2,
        duplicates dropped) and the whitened principal components kept.
    defective_from, reject_threshold:
        The kind's operating point (kept so a champion of this kind is rebuilt with its own).
    seed:
        Fold assignment.
    """

    def __init__(self, size: int | None = None, C: float = 30.0, gamma: float | str = "scale",
                 lbp_radii: Sequence[int] = (1, 2, 4), orientation_bins: int = 12, calibration_folds: int = 3,
                 vlad_clusters: int = 64, vlad_cells: Sequence[int] = (10, 8), vlad_components: int = 128,
                 defective_from: float = 2 / 3, reject_threshold: float = 0.4, seed: int = 0) -> None:
        self.size = size
        self.C = C
        self.gamma = gamma
        self.lbp_radii = lbp_radii
        self.orientation_bins = orientation_bins
        self.calibration_folds = calibration_folds
        self.vlad_clusters = vlad_clusters
        self.vlad_cells = vlad_cells
        self.vlad_components = vlad_components
        self.defective_from = defective_from
        self.reject_threshold = reject_threshold
        self.seed = seed

    # -- features -------------------------------------------------------------------------------

    def features(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, n_features) features of the rows' images at ``size_``: the texture features, then
        (once fitted with VLAD words) the whitened principal components of the VLAD encoding."""
        images = stack(rows, getattr(self, "size_", None) or self.size)
        texture = np.stack([self._features(image) for image in images])
        if not getattr(self, "vlad_centres_", None):
            return texture
        return np.hstack([texture, self.vlad_pca_.transform(self._vlad(images))])

    def _scales(self, side: int) -> list[int]:
        """Descriptor cell sides at ``side`` (``vlad_cells`` are in pixels of the 300 image)."""
        cells = [max(2, int(round(c * side / 300))) for c in self.vlad_cells]
        return [c for i, c in enumerate(cells) if c not in cells[:i] and side // c >= 4]

    def _vlad(self, images: np.ndarray) -> np.ndarray:
        """(n, scales x words x 128) VLAD codes of the images with the fitted words."""
        codes = [np.stack([_vlad_code(_dense_descriptors(image, cell), centres) for image in images])
                 for cell, centres in zip(self.vlad_scales_, self.vlad_centres_, strict=True)]
        return np.hstack(codes) / np.sqrt(len(codes))

    def _fit_vlad(self, images: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit the words and the PCA on the fit images; their whitened VLAD components."""
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(self.seed)
        self.vlad_scales_ = self._scales(images.shape[-1])
        self.vlad_centres_ = []
        for cell in self.vlad_scales_:
            descriptors = [_dense_descriptors(image, cell) for image in images]
            # 40 descriptors of each fit cell are enough for the words (k-means on all is slow).
            sample = np.concatenate([d[rng.choice(len(d), min(40, len(d)), replace=False)]
                                     for d in descriptors])
            k = max(2, min(int(self.vlad_clusters), len(sample) // 4))
            words = MiniBatchKMeans(k, random_state=self.seed, n_init=3, batch_size=4096).fit(sample)
            self.vlad_centres_.append(words.cluster_centers_.astype(np.float32))
        if not self.vlad_scales_:
            return np.zeros((len(images), 0))
        codes = self._vlad(images)
        self.vlad_pca_ = PCA(min(int(self.vlad_components), len(images) - 1, codes.shape[1]), whiten=True,
                             random_state=self.seed).fit(codes)
        return self.vlad_pca_.transform(codes)

    def _features(self, image: np.ndarray) -> np.ndarray:
        from scipy import ndimage, stats

        x = image.astype(np.float64)
        median = max(float(np.median(x)), 1e-3)
        z = np.clip(x / median, 0.0, 4.0)
        parts: list[np.ndarray] = []
        flat = z.ravel()
        parts.append(np.percentile(flat, _PERCENTILES))
        parts.append(np.array([flat.mean(), flat.std(), stats.skew(flat), stats.kurtosis(flat),
                               x.mean(), x.std(), *((flat < t).mean() for t in (0.3, 0.5, 0.7))]))
        side = z.shape[0]
        g = _GRID if side % _GRID == 0 else next(d for d in (10, 6, 5, 4, 3, 2, 1) if side % d == 0)
        blocks = z.reshape(g, side // g, g, side // g)
        parts.append(np.sort(blocks.mean(axis=(1, 3)).ravel()))
        parts.append(np.sort(blocks.std(axis=(1, 3)).ravel()))
        for radius in self.lbp_radii:
            parts.append(_lbp_histogram(z, int(radius)))
        smooth = ndimage.gaussian_filter(z, 1.0)
        gy, gx = np.gradient(smooth)
        magnitude = np.hypot(gx, gy)
        angle = np.mod(np.arctan2(gy, gx), np.pi)
        bins = int(self.orientation_bins)
        hist = np.bincount(np.minimum((angle / np.pi * bins).astype(int), bins - 1).ravel(),
                           weights=magnitude.ravel(), minlength=bins)
        parts.append(hist / max(hist.sum(), 1e-12))
        parts.append(np.percentile(magnitude, (50, 90, 99)))
        tophat = np.maximum(ndimage.uniform_filter(z, size=7) - z, 0.0)
        parts.append(np.percentile(tophat, (90, 99, 99.9)))
        parts.append(np.array([(tophat > t).mean() for t in (0.1, 0.2, 0.4)]))
        parts.append(_band_energies(z))
        # Dark areas against the cell's own background: the median over a window wider than a
        # finger gap keeps the busbars' and fingers' regular pattern and drops cracks and spots.
        window = max(3, side // 10) | 1
        dark = np.maximum(ndimage.median_filter(z, size=window) - z, 0.0)
        parts.append(np.percentile(dark, (50, 90, 95, 99, 99.9)))
        parts.append(np.array([(dark > t).mean() for t in (0.05, 0.1, 0.2, 0.3, 0.5)]))
        # Large inactive areas: the cell smoothed over a sixth of its side.
        broad = ndimage.uniform_filter(z, size=max(side // 6, 1))
        parts.append(np.percentile(broad, (1, 5, 10, 25)))
        parts.append(np.array([(broad < t).mean() for t in (0.5, 0.7, 0.85)]))
        parts.append(_local_order_statistics(z, magnitude, angle, tophat, dark))
        return np.concatenate(parts)

    # -- scikit-learn API -------------------------------------------------------------------------

    def fit(self, rows: pd.DataFrame, classes: np.ndarray) -> CellTextureSVM:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        y = np.asarray(classes, dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError(f"fit rows hold only class {present.tolist()}: a classifier needs two or more")
        self.size_ = int(self.size or row_size(rows))
        images = stack(rows, self.size_)
        X = np.stack([self._features(image) for image in images])
        self.n_texture_features_ = X.shape[1]
        self.vlad_centres_ = []
        if int(self.vlad_clusters) > 0:
            X = np.hstack([X, self._fit_vlad(images, y)])
        self.columns_ = list(COLUMNS)
        self.n_features_ = X.shape[1]
        self.mean_, self.scale_ = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-12)
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)

        def svc() -> SVC:
            return SVC(kernel="rbf", C=self.C, gamma=self.gamma, class_weight="balanced",
                       decision_function_shape="ovo", random_state=self.seed)

        # Out-of-fold decision values for the calibration; folds need >= 1 row of each class.
        folds = min(int(self.calibration_folds), int(np.bincount(y)[present].min()))
        oof = np.zeros((len(y), len(present) * (len(present) - 1) // 2))
        if folds >= 2:
            for train, test in StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(Z, y):
                if len(np.unique(y[train])) == len(present):
                    oof[test] = svc().fit(Z[train], y[train]).decision_function(Z[test]).reshape(len(test), -1)
        self.svc_ = svc().fit(Z, y)
        if folds < 2:
            oof = self.svc_.decision_function(Z).reshape(len(y), -1)
        self.calibration_ = LogisticRegression(C=1.0, max_iter=2000).fit(oof, y)
        self.classes_ = np.arange(N_CLASSES)
        log.info("CellTextureSVM fitted: %d cells at %dx%d, %d features, %d support vectors",
                 len(y), self.size_, self.size_, self.n_features_, int(self.svc_.n_support_.sum()))
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 4) class probabilities (0 for a class the fit rows lacked)."""
        if not len(rows):
            return np.zeros((0, N_CLASSES))
        Z = self.scaler_.transform(self.features(rows))
        decision = self.svc_.decision_function(Z).reshape(len(Z), -1)
        proba = np.zeros((len(Z), N_CLASSES))
        proba[:, self.calibration_.classes_] = self.calibration_.predict_proba(decision)
        return proba

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(rows).argmax(axis=1)


# -- texture helpers ----------------------------------------------------------------------------


def _dense_descriptors(image: np.ndarray, cell: int, bins: int = 8, grid: int = 4) -> np.ndarray:
    """SIFT-like dense descriptors of the image divided by its median: ``grid`` x ``grid`` cells of
    ``cell`` pixels, each an 8-bin signed gradient orientation histogram (magnitude-weighted, split
    linearly between the two nearest bins), slid one cell at a time; L2-normalised, clipped at 0.2,
    renormalised and square-rooted (RootSIFT). (n_windows, grid x grid x bins) float32."""
    from scipy import ndimage

    x = image.astype(np.float64)
    z = ndimage.gaussian_filter(x / max(float(np.median(x)), 1e-3), 0.8)
    gy, gx = np.gradient(z)
    magnitude = np.hypot(gx, gy)
    position = np.mod(np.arctan2(gy, gx), 2 * np.pi) / (2 * np.pi) * bins
    low = np.floor(position).astype(int) % bins
    share = position - np.floor(position)
    g = z.shape[0] // cell
    channels = np.zeros((bins, z.shape[0], z.shape[1]))
    for b in range(bins):
        weight = np.where(low == b, 1 - share, 0.0) + np.where((low + 1) % bins == b, share, 0.0)
        channels[b] = magnitude * weight
    cells = channels[:, :g * cell, :g * cell].reshape(bins, g, cell, g, cell).sum(axis=(2, 4))
    n = g - grid + 1
    d = np.concatenate([cells[:, dy:dy + n, dx:dx + n] for dy in range(grid) for dx in range(grid)])
    d = d.reshape(grid * grid * bins, n * n).T
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    d = np.minimum(d, 0.2)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return np.sqrt(d).astype(np.float32)


def _vlad_code(descriptors: np.ndarray, centres: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """VLAD: the residuals of the descriptors to their nearest word, summed per word, each word's
    sum L2-normalised (intra-normalisation), a signed square root, then L2 over the whole code."""
    distances = (centres**2).sum(axis=1)[None, :] - 2.0 * descriptors @ centres.T
    nearest = distances.argmin(axis=1)
    code = np.zeros(centres.shape, dtype=np.float64)
    np.add.at(code, nearest, descriptors - centres[nearest])
    code /= np.maximum(np.linalg.norm(code, axis=1, keepdims=True), 1e-9)
    code = (np.sign(code) * np.abs(code) ** alpha).ravel()
    return code / max(float(np.linalg.norm(code)), 1e-9)


def _lbp_histogram(z: np.ndarray, radius: int) -> np.ndarray:
    """Rotation-invariant uniform LBP (8 neighbours at ``radius``, diagonals at the nearest pixel):
    the number of neighbours at least the centre for uniform patterns (0..8), 9 for the others; a
    10-bin normalised histogram over the interior pixels."""
    r = max(1, radius)
    h, w = z.shape
    centre = z[r:h - r, r:w - r]
    offsets = [(-r, 0), (-r, r), (0, r), (r, r), (r, 0), (r, -r), (0, -r), (-r, -r)]  # circular order
    bits = np.stack([z[r + dy:h - r + dy, r + dx:w - r + dx] >= centre for dy, dx in offsets]).astype(np.int8)
    transitions = np.abs(np.diff(np.concatenate([bits, bits[:1]]), axis=0)).sum(axis=0)
    code = np.where(transitions <= 2, bits.sum(axis=0), 9)
    hist = np.bincount(code.ravel(), minlength=10).astype(np.float64)
    return hist / max(hist.sum(), 1.0)


def _local_order_statistics(z: np.ndarray, magnitude: np.ndarray, angle: np.ndarray, tophat: np.ndarray,
                            dark: np.ndarray, grid: int = _LOCAL_GRID, bins: int = 9) -> np.ndarray:
    """The cell cut into ``grid`` x ``grid`` patches, a descriptor per patch (a 9-bin gradient
    orientation histogram, L2-normalised, as HOG's; the patch's mean, spread and 10th percentile;
    the mean and 90th percentile of the thin dark lines; the mean gradient magnitude; the mean and
    90th percentile of the dark areas), then each descriptor dimension's order statistics over the
    patches (0, 5, 25, 50, 75, 95, 100th percentiles): what the worst patches look like wherever
    they lie, so a turned or mirrored cell gives the same features."""
    c = max(z.shape[0] // grid, 1)
    g = z.shape[0] // c

    def patches(a: np.ndarray) -> np.ndarray:
        return a[:g * c, :g * c].reshape(g, c, g, c).transpose(0, 2, 1, 3).reshape(g * g, c * c)

    mag, th, dk, zz = patches(magnitude), patches(tophat), patches(dark), patches(z)
    b = np.minimum((patches(angle) / np.pi * bins).astype(int), bins - 1)
    hist = np.zeros((g * g, bins))
    np.add.at(hist, (np.repeat(np.arange(g * g), c * c), b.ravel()), mag.ravel())
    hist /= np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-9)
    desc = np.column_stack([hist, zz.mean(axis=1), zz.std(axis=1), np.percentile(zz, 10, axis=1), th.mean(axis=1),
                            np.percentile(th, 90, axis=1), mag.mean(axis=1), dk.mean(axis=1),
                            np.percentile(dk, 90, axis=1)])
    return np.percentile(desc, _ORDER, axis=0).ravel()


def _band_energies(z: np.ndarray, bands: int = 8) -> np.ndarray:
    """log10 of the spectral energy of the mean-free image in ``bands`` log-spaced radial bands."""
    spectrum = np.abs(np.fft.rfft2(z - z.mean())) ** 2
    fy = np.fft.fftfreq(z.shape[0])[:, None]
    fx = np.fft.rfftfreq(z.shape[1])[None, :]
    radius = np.hypot(fy, fx)
    edges = np.r_[0.0, np.geomspace(1.0 / z.shape[0], 0.5 * np.sqrt(2), bands)]
    idx = np.clip(np.searchsorted(edges, radius, side="right") - 1, 0, bands - 1)
    energy = np.bincount(idx.ravel(), weights=spectrum.ravel(), minlength=bands)
    return np.log10(energy / max(spectrum.sum(), 1e-12) + 1e-12)


__all__ = ["CellTextureSVM"]
