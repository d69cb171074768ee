"""The elpv solar-cell electroluminescence images (Deitsch et al.), read from the installed
``elpv-dataset`` wheel.

Nothing is downloaded: 2,624 cell images (300x300, 8-bit greyscale PNG) from 44 modules ship in
the package with ``labels.csv`` (image path, defect probability from expert inspectors, module
type). The probability is one of 0, 1/3, 2/3 and 1; the four values are the four classes the
published figures are measured on (Deitsch et al. 2019, "Automatic classification of defective
photovoltaic module cells in electroluminescence images": 1,968 cells for training, 656 held out;
hand-crafted features + SVM 82.44 %, a fine-tuned VGG-19 88.42 %). The data carries no module id,
so the held-out split (:func:`plantops.splits.holdout_mask`, the one training uses too) is stratified
by class and module type, as the published one was.

Data licence: CC BY-NC-SA 4.0 (the package's code: Apache-2.0). The images stay in the package;
the repository holds none of them.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from plantops.kinds.base import CLASS_PROBABILITIES
from plantops.kinds.base import class_index as class_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SIZE = 300  # every cell image is SIZE x SIZE, mode "L"
PROBABILITIES = CLASS_PROBABILITIES  # the four classes, by index
MODULE_TYPES = ("mono", "poly")
LICENCE = "CC BY-NC-SA 4.0 (images and labels); the elpv-dataset package's code is Apache-2.0"
PUBLISHED_ACCURACY = {"svm": 0.8244, "cnn": 0.8842}  # Deitsch et al. 2019, four classes, 656 held-out cells


class ElpvMissing(RuntimeError):
    pass


@lru_cache(maxsize=1)
def data_dir() -> Path:
    """``elpv_dataset/data`` inside the installed wheel (``labels.csv`` and ``images/``)."""
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ElpvMissing("the elpv-dataset package is not installed (requirements.txt pins 1.0.0.post1; "
                          "run `make install`)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "labels.csv").is_file():
        raise ElpvMissing(f"{folder / 'labels.csv'} is missing: a broken elpv-dataset install")
    return folder


@lru_cache(maxsize=1)
def _labels() -> pd.DataFrame:
    import pandas as pd

    folder = data_dir()
    raw = pd.read_csv(folder / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "module_type"])
    cell_id = raw["path"].str.extract(r"(cell\d+)\.png$", expand=False)
    if cell_id.isna().any():
        raise ValueError(f"{folder / 'labels.csv'}: unexpected image paths {raw['path'][cell_id.isna()].tolist()[:3]}")
    return pd.DataFrame({
        "cell_id": cell_id,
        "file": [str(folder / p) for p in raw["path"]],
        "defect_probability": raw["probability"].astype(float),
        "label": [class_of(p) for p in raw["probability"]],
        "module_type": raw["module_type"].astype(str),
    })


def labels() -> pd.DataFrame:
    """One row per cell, in the package's order: ``cell_id`` (``cell0001``...), ``file`` (absolute
    path of its PNG), ``defect_probability``, ``label`` (class index 0..3), ``module_type``."""
    return _labels().copy()


def read(file: str | Path) -> np.ndarray:
    """A cell image as a (300, 300) uint8 array."""
    import numpy as np
    from PIL import Image

    with Image.open(file) as image:
        return np.asarray(image.convert("L") if image.mode != "L" else image, dtype=np.uint8)


def exposure(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """The same cell under another camera exposure: ``gain * value + offset``, clipped to 0..255
    (what a changed camera gain or lighting does to an EL image on the line)."""
    import numpy as np

    return np.clip(np.rint(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8)
