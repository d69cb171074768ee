"""Image-feature rows to image arrays, for the classifier kinds (``cell_texture_svm``, ``cell_cnn``).

A row's ``pixels`` is ``size`` x ``size`` block means of the 0..255 image divided by 255, row-major
(:func:`plantops.image_features.downsample`). A model fitted at side ``S`` reads rows of side ``S``
or of any multiple of it: the block means of block means over equal blocks are the block means of
the original image, so reducing a 150 row to 75 gives exactly the 75 row the feature job would
have written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("pixels", "size")


def row_size(rows: pd.DataFrame) -> int:
    """The side of the rows' images (``size``, else the square root of the first row's length)."""
    if not len(rows):
        raise ValueError("no image rows")
    if "size" in rows.columns:
        sizes = set(int(s) for s in rows["size"].unique())
        if len(sizes) != 1:
            raise ValueError(f"image rows of several sizes {sorted(sizes)}: score one size at a time")
        return sizes.pop()
    n = len(rows["pixels"].iloc[0])
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"pixels of length {n} is not a square image and the rows have no 'size' column")
    return side


def stack(rows: pd.DataFrame, size: int | None = None) -> np.ndarray:
    """The rows' images as float32 (n, size, size), reduced by block means to ``size`` when the
    rows are larger (a multiple of it); ``size=None`` keeps the rows' own."""
    if "pixels" not in rows.columns:
        raise ValueError(f"image rows need a 'pixels' column (S*S floats 0..1); got {list(rows.columns)}")
    side = row_size(rows)
    size = side if size is None else int(size)
    if side % size:
        raise ValueError(f"the model reads {size}x{size} images; rows of size {side} are not a multiple of it")
    flat = [np.asarray(p, dtype=np.float32) for p in rows["pixels"]]
    wrong = [i for i, p in enumerate(flat) if p.shape != (side * side,)]
    if wrong:
        at = rows.index[wrong[0]]
        cell = f" (cell {rows['cell_id'].iloc[wrong[0]]})" if "cell_id" in rows.columns else ""
        raise ValueError(f"row {at}{cell}: pixels has {flat[wrong[0]].size} values, expected size*size = {side * side}")
    images = np.stack(flat).reshape(len(flat), side, side)
    if side != size:
        f = side // size
        images = images.reshape(len(flat), size, f, size, f).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
    return images


def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (k = 0..7: k % 4 quarter turns, then a flip for k >= 4)
    on the last two axes. A cell's defect class does not depend on how it lies: a crack or a dark
    area is as harmful turned or mirrored (the busbars then run the other way, as on a cell
    mounted turned)."""
    out = np.rot90(images, k % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if k >= 4 else out
