"""The per-image features of visual inspection, as numpy computes them: the reference the Spark job
(``spark_jobs/build_image_features.py``) must equal, and what a model reads when it is given an
image rather than a feature row.

``pixels``: the model input, the image reduced to ``size`` x ``size`` by the mean of each block of
``300 / size`` pixels on a side, divided by 255 (float32, row-major). Statistics for monitoring: the
mean, spread and range of the 0..255 values, their 1st and 99th percentiles, and the shares of dark
(<= 5) and saturated (>= 250) pixels, which a camera or lighting change moves first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DARK_AT = 5
SATURATED_AT = 250
STATS = ("mean", "std", "min", "max", "p01", "p99", "dark_share", "saturated_share")


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H x W, uint8) as ``size`` x ``size`` block means scaled to 0..1 (float32)."""
    import numpy as np

    height, width = image.shape
    if height % size or width % size:
        raise ValueError(f"model input size {size} must divide the image's {height}x{width}")
    blocks = image.reshape(size, height // size, size, width // size).astype(np.float64)
    return (blocks.mean(axis=(1, 3)) / 255.0).astype(np.float32)


def image_stats(image: np.ndarray) -> dict[str, float]:
    """The monitoring statistics of one image (0..255 values), as named in :data:`STATS`."""
    import numpy as np

    values = image.astype(np.float64).ravel()
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p01": float(np.percentile(values, 1)),
        "p99": float(np.percentile(values, 99)),
        "dark_share": float((values <= DARK_AT).mean()),
        "saturated_share": float((values >= SATURATED_AT).mean()),
    }
