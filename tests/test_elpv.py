"""The elpv solar-cell images come from the installed wheel (the held-out split: tests/test_splits.py)."""

from __future__ import annotations

import numpy as np
import pytest

from plantops.sources import elpv


def test_labels_are_the_packages_2624_cells_in_four_classes():
    cells = elpv.labels()
    assert len(cells) == 2624 and cells["cell_id"].is_unique
    assert cells["label"].value_counts().sort_index().tolist() == [1508, 295, 106, 715]
    assert cells["module_type"].value_counts().to_dict() == {"poly": 1550, "mono": 1074}
    image = elpv.read(cells["file"].iloc[0])
    assert image.shape == (elpv.SIZE, elpv.SIZE) and image.dtype == np.uint8


def test_class_of_and_exposure():
    assert [elpv.class_of(p) for p in (0, 0.3333333, 0.6666667, 1.0)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not one of"):
        elpv.class_of(0.5)
    image = np.array([[0, 100, 200]], dtype=np.uint8)
    assert elpv.exposure(image, 1.5, 10).tolist() == [[10, 160, 255]]
