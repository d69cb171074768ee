"""The one held-out definition of the visual inspection line: training, the benchmark and the tests
hold out the same cells.

Within each stratum (by default the inspectors' class and the cell's module type) the cells are
ranked by the SHA-256 of their id and the lowest ``share`` of them are held out (rounded per stratum so the total is ``share`` of all
cells rounded, :func:`quotas`). So the split is
deterministic, independent of the rows' order, and every class and module type is held out in the
same proportion (to one cell per stratum): on all 2,624 elpv cells a 25 % share holds out 656
cells, as Deitsch et al. 2019 did. ``seed`` gives the further splits of the benchmark's repeated
measurement (the rank of ``sha256(f"{seed}:{cell_id}")``); ``seed=None`` is the fixed split.

A rank is relative to the cells present: when more cells arrive, a cell whose hash lies near its
stratum's 25 % boundary can change sides (a per-cell hash threshold would not, but holds out a
binomial share of a small stratum, possibly none of the rare 2/3 class). Between two trainings on a
grown set, the cells that moved are few and at the boundary; the champion and challenger are both
judged on the newer split.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

HOLDOUT_SHARE = 0.25
STRATA = ("label", "module_type")


def cell_rank_key(cell_id: str, seed: int | None = None) -> str:
    """The hex SHA-256 a cell is ranked by within its stratum (``seed``: a further split's)."""
    text = str(cell_id) if seed is None else f"{int(seed)}:{cell_id}"
    return hashlib.sha256(text.encode()).hexdigest()


def holdout_mask(cells: pd.DataFrame, share: float = HOLDOUT_SHARE, seed: int | None = None,
                 by: Iterable[str] = STRATA) -> pd.Series:
    """True for the held-out cells (aligned with ``cells``' index): per stratum of the ``by``
    columns, its :func:`quotas` of cells of lowest :func:`cell_rank_key`. ``cells``
    needs ``cell_id`` (unique) and the ``by`` columns."""
    import pandas as pd

    by = list(by)
    missing = [c for c in ("cell_id", *by) if c not in cells.columns]
    if missing:
        raise ValueError(f"the held-out split needs the columns {missing}; got {list(cells.columns)}")
    if not 0 <= share <= 1:
        raise ValueError(f"share must be within 0..1, got {share}")
    if not cells["cell_id"].is_unique:
        raise ValueError("the held-out split needs one row per cell_id")
    stratum = [""] * len(cells)
    for column in by:
        stratum = [f"{s}/{v}" for s, v in zip(stratum, cells[column].astype(str), strict=True)]
    frame = pd.DataFrame({"key": [cell_rank_key(c, seed) for c in cells["cell_id"]],
                          "cell_id": cells["cell_id"].astype(str).to_numpy(), "stratum": stratum},
                         index=cells.index).sort_values(["key", "cell_id"])
    rank = frame.groupby("stratum", sort=False).cumcount()
    sizes = frame.groupby("stratum").size()  # sorted by stratum: quotas' tie-break is order-free
    quota = pd.Series(quotas(sizes.to_numpy(), share), index=sizes.index)
    held = rank < frame["stratum"].map(quota)
    return held.reindex(cells.index)


def quotas(sizes: np.ndarray, share: float) -> np.ndarray:
    """Held-out cells per stratum: ``share`` of each, rounded so that they add up to
    ``round(share * total)`` (largest remainders first; equal remainders: the larger stratum, then
    the first). Each stratum's quota is within one cell of its exact share."""
    sizes = np.asarray(sizes, dtype=np.int64)
    exact = sizes * float(share)
    quota = np.floor(exact).astype(np.int64)
    extra = int(np.floor(sizes.sum() * float(share) + 0.5)) - int(quota.sum())
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - quota[i]), -sizes[i], i))
    quota[order[:max(extra, 0)]] += 1
    return quota


def describe(share: float = HOLDOUT_SHARE, by: Iterable[str] = STRATA) -> str:
    """The rule as a run parameter records it."""
    return f"lowest {share:.0%} of sha256(cell_id) per {'/'.join(by)}"
