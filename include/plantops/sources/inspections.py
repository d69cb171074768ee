"""Where inspectors and the monitor read visual inspection results: the model's verdict per cell and
the inspectors' labels, two tables on the historian side beside ``predictions`` and ``labels``.

- ``inspection_verdicts``: one row per (line, run, cell): the class the champion predicted, its
  defect probability, the score against the line's reject threshold (1.0 = reject), whether the
  cell is rejected, the model version, and where its heat map is (rejected cells). Scoring a run
  again replaces that run's rows (rerun-safe).
- ``inspection_labels``: an inspector's defect probability per (line, cell) (0, 1/3, 2/3 or 1)
  and when it was given. Labels come late (the day after the inspection run, for a share of the
  cells); a corrected label replaces the earlier one.

``asset`` is the use case's inspection line (its one asset), as in the other historian tables.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from plantops.kinds.base import CLASS_PROBABILITIES, class_index
from plantops.sources.historian import engine, naive_utc, read_frame
from plantops.sources.historian import inspection_labels as labels
from plantops.sources.historian import inspection_verdicts as verdicts

if TYPE_CHECKING:
    import pandas as pd

VERDICT_COLUMNS = ("run_id", "cell_id", "captured_at", "model_version", "predicted_class", "defect_probability",
                   "score", "rejected", "heatmap")


def write_verdicts(asset: str, frame: pd.DataFrame, url: str | None = None) -> int:
    """Replace the verdicts of every inspection run in ``frame`` (columns :data:`VERDICT_COLUMNS`)."""
    if frame.empty:
        return 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [{
        "asset": asset, "run_id": str(r.run_id), "cell_id": str(r.cell_id), "captured_at": naive_utc(r.captured_at),
        "model_version": str(r.model_version), "predicted_class": int(r.predicted_class),
        "defect_probability": float(r.defect_probability), "score": float(r.score), "rejected": int(r.rejected),
        "heatmap": r.heatmap if isinstance(r.heatmap, str) else None, "scored_at": now,
    } for r in frame[list(VERDICT_COLUMNS)].itertuples(index=False)]
    with engine(url).begin() as conn:
        conn.execute(delete(verdicts).where(verdicts.c.asset == asset,
                                            verdicts.c.run_id.in_(sorted({r["run_id"] for r in rows}))))
        conn.execute(insert(verdicts), rows)
    return len(rows)


def read_verdicts(asset: str, start: datetime, end: datetime, url: str | None = None) -> pd.DataFrame:
    """The verdicts on cells captured in [start, end), oldest first."""
    query = (select(verdicts)
             .where(verdicts.c.asset == asset, verdicts.c.captured_at >= naive_utc(start),
                    verdicts.c.captured_at < naive_utc(end))
             .order_by(verdicts.c.captured_at, verdicts.c.cell_id))
    return read_frame(query, ("captured_at", "scored_at"), url)


def write_labels(asset: str, rows: list[dict[str, Any]], url: str | None = None) -> int:
    """Upsert inspectors' labels: dicts with ``cell_id``, ``defect_probability`` (0, 1/3, 2/3 or
    1), ``inspector`` and ``labelled_at``. A label outside the four values is refused, naming the cell."""
    clean = []
    for row in rows:
        try:
            nearest = CLASS_PROBABILITIES[class_index(float(row["defect_probability"]))]
        except ValueError as exc:
            raise ValueError(f"cell {row['cell_id']}: {exc}") from None
        clean.append({"asset": asset, "cell_id": str(row["cell_id"]), "defect_probability": nearest,
                      "inspector": str(row["inspector"]), "labelled_at": naive_utc(row["labelled_at"])})
    if not clean:
        return 0
    with engine(url).begin() as conn:
        conn.execute(delete(labels).where(labels.c.asset == asset,
                                          labels.c.cell_id.in_([r["cell_id"] for r in clean])))
        conn.execute(insert(labels), clean)
    return len(clean)


def read_labels(asset: str, url: str | None = None) -> pd.DataFrame:
    """Every inspector label of the line: cell_id, defect_probability, inspector, labelled_at."""
    query = select(labels).where(labels.c.asset == asset).order_by(labels.c.cell_id)
    return read_frame(query, ("labelled_at",), url)
