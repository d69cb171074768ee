"""The one held-out definition (training, benchmark and tests): stratified by class and module type,
deterministic and independent of the rows' order, with seeded variants for repeated splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plantops import splits
from plantops.sources import elpv


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    return elpv.labels()


def test_the_fixed_split_holds_out_656_cells_stratified_by_class_and_module_type(cells):
    held = splits.holdout_mask(cells)
    assert int(held.sum()) == 656  # 1,968 / 656, as in Deitsch et al. 2019
    per = cells[held].groupby(["label", "module_type"]).size()
    total = cells.groupby(["label", "module_type"]).size()
    # Every stratum within one cell of its exact quarter (the rare 2/3 class included).
    assert ((per - total * 0.25).abs() <= 1).all(), pd.concat([per, total], axis=1)
    assert per.loc[2].sum() in (26, 27)
    # Within a stratum, the held-out cells are exactly those of lowest sha256(cell_id).
    stratum = cells[(cells["label"] == 2) & (cells["module_type"] == "mono")]
    keys = stratum["cell_id"].map(splits.cell_rank_key)
    assert set(stratum["cell_id"][held[stratum.index]]) == set(stratum["cell_id"][keys.rank() <= per.loc[(2, "mono")]])


def test_the_split_does_not_depend_on_row_order_or_index(cells):
    held = splits.holdout_mask(cells)
    shuffled = cells.sample(frac=1, random_state=7)
    assert splits.holdout_mask(shuffled).sort_index().equals(held)
    renumbered = shuffled.reset_index(drop=True)
    again = splits.holdout_mask(renumbered)
    assert set(renumbered["cell_id"][again]) == set(cells["cell_id"][held])


def test_seeded_splits_differ_from_the_fixed_one_and_are_stratified_too(cells):
    fixed = splits.holdout_mask(cells)
    seen = []
    for seed in range(5):
        held = splits.holdout_mask(cells, seed=seed)
        assert int(held.sum()) == 656 and splits.holdout_mask(cells, seed=seed).equals(held)
        per = cells[held].groupby(["label", "module_type"]).size()
        assert ((per - cells.groupby(["label", "module_type"]).size() * 0.25).abs() <= 1).all()
        assert (held & fixed).sum() < 250  # about a quarter of a quarter overlaps, not the same cells
        seen.append(frozenset(cells["cell_id"][held]))
    assert len(set(seen)) == 5


def test_quotas_add_up_and_stay_within_one_cell():
    sizes = np.array([1, 2, 3, 50, 178, 402, 7])
    quota = splits.quotas(sizes, 0.25)
    assert quota.sum() == round(sizes.sum() * 0.25) and (np.abs(quota - sizes * 0.25) < 1).all()
    assert splits.quotas(np.array([4, 8]), 0.25).tolist() == [1, 2]


def test_a_grown_set_moves_only_boundary_cells_and_missing_columns_are_named(cells):
    full = splits.holdout_mask(cells)
    half = cells.iloc[::2]
    moved = (splits.holdout_mask(half) != full[half.index]).sum()
    assert moved < 0.03 * len(half), moved
    with pytest.raises(ValueError, match=r"needs the columns \['module_type'\]"):
        splits.holdout_mask(cells.drop(columns="module_type"))
    with pytest.raises(ValueError, match="one row per cell_id"):
        splits.holdout_mask(pd.concat([cells.head(3), cells.head(1)]))
