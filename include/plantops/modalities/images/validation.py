"""Great Expectations 1.x suites for landed inspection images: the manifest rows and the images.

Two suites over the same rows (one per image of an inspection run that passed the decode checks
of :mod:`plantops.modalities.images.ingest`), in the pattern of :mod:`plantops.stages.validation`:
each returns a :class:`~plantops.stages.validation.ValidationOutcome` naming every failed
expectation and the rows that broke it, so ingest rejects those rows with the expectation as their
reason and reports the failure in its result.

- ``<uc>.inspection_manifest``: the manifest's columns; ids, line, camera and capture time
  present; ``module_type`` mono or poly; ``captured_at`` inside the run's day (UTC).
- ``<uc>.inspection_images``: width and height, mode, mean and spread of the 0..255 values in the
  ranges :class:`ImageChecks` gives, and, when inspectors' labels are present, the defect
  probability one of 0, 1/3, 2/3, 1.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any

from plantops.config import ImageChecks

if TYPE_CHECKING:
    import pandas as pd

    from plantops.stages.validation import ValidationOutcome

log = logging.getLogger(__name__)

MODULE_TYPES = ("mono", "poly")
# The defect probabilities inspectors give (elpv: 0, 1/3, 2/3, 1), compared at 4 decimals because
# a csv carries 0.3333333.
LABEL_DOMAIN = (0.0, 0.3333, 0.6667, 1.0)
ID_COLUMNS = ("file_name", "cell_id", "module_id", "line", "camera_id")


def _outcome(name: str, frame: pd.DataFrame, expectations: list[Any], structural: set[str]) -> ValidationOutcome:
    from plantops.stages import validation

    return validation._run(name, frame, expectations, validation.STRUCTURAL | structural)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def validate_manifest(use_case_id: str, frame: pd.DataFrame, run_day: date,
                      labels: bool = False) -> ValidationOutcome:
    """Manifest rows: ``captured_at`` parsed (UTC, NaT where it was not a zoned ISO time), other
    columns as text with empty cells as null."""
    import great_expectations as gx

    from plantops.sources.elpv_replay import LABEL_COLUMN, MANIFEST_COLUMNS

    ex = gx.expectations
    start, end = day_bounds(run_day)
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(column_set=[*MANIFEST_COLUMNS, *([LABEL_COLUMN] if labels else [])],
                                        exact_match=True),
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        *(ex.ExpectColumnValuesToNotBeNull(column=c) for c in (*ID_COLUMNS, "module_type", "captured_at")),
        ex.ExpectColumnValuesToBeInSet(column="module_type", value_set=list(MODULE_TYPES)),
        ex.ExpectColumnValuesToBeBetween(column="captured_at", min_value=start, max_value=end, strict_max=True),
    ]
    return _outcome(f"{use_case_id}.inspection_manifest", frame, expectations, set())


def validate_images(use_case_id: str, frame: pd.DataFrame, checks: ImageChecks | None = None) -> ValidationOutcome:
    """Per-image properties: ``width``, ``height``, ``mode``, ``mean``, ``std`` and, when the
    column is there (inspectors' labels), ``defect_probability``."""
    import great_expectations as gx

    checks = checks or ImageChecks()
    ex = gx.expectations
    expectations: list[Any] = [
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        ex.ExpectColumnValuesToBeBetween(column="width", min_value=checks.width, max_value=checks.width),
        ex.ExpectColumnValuesToBeBetween(column="height", min_value=checks.height, max_value=checks.height),
        ex.ExpectColumnValuesToBeInSet(column="mode", value_set=[checks.mode]),
        ex.ExpectColumnValuesToBeBetween(column="mean", min_value=checks.min_mean, max_value=checks.max_mean),
        ex.ExpectColumnValuesToBeBetween(column="std", min_value=checks.min_std),
        ex.ExpectColumnValuesToNotBeNull(column="mean"),
    ]
    if "defect_probability" in frame.columns:
        frame = frame.assign(defect_probability=frame["defect_probability"].astype(float).round(4))
        expectations.append(ex.ExpectColumnValuesToBeInSet(column="defect_probability", value_set=list(LABEL_DOMAIN)))
    return _outcome(f"{use_case_id}.inspection_images", frame, expectations, set())


def validate_image_features(use_case_id: str, frame: pd.DataFrame, size: int, expected_rows: int) -> ValidationOutcome:
    """The feature gate of an inspection use case, over one day's image-feature rows: one row per
    image bronze accepted (``expected_rows``), ids and capture time present, the statistics in
    their ranges and every model input ``size`` x ``size`` values in 0..1."""
    import great_expectations as gx
    import numpy as np

    from plantops.image_features import STATS

    pixels = [np.asarray(p, dtype=float) for p in frame["pixels"]] if "pixels" in frame.columns else []
    frame = frame.drop(columns=["pixels"], errors="ignore").assign(
        pixels_length=[len(p) for p in pixels],
        pixels_min=[float(p.min()) if len(p) else np.nan for p in pixels],
        pixels_max=[float(p.max()) if len(p) else np.nan for p in pixels])
    ex = gx.expectations
    expectations: list[Any] = [
        ex.ExpectTableRowCountToEqual(value=expected_rows),
        *(ex.ExpectColumnValuesToNotBeNull(column=c) for c in ("run_id", "cell_id", "captured_at", *STATS)),
        *(ex.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=255)
          for c in ("mean", "std", "min", "max", "p01", "p99")),
        *(ex.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in ("dark_share", "saturated_share")),
        ex.ExpectColumnValuesToBeBetween(column="pixels_length", min_value=size * size, max_value=size * size),
        ex.ExpectColumnValuesToBeBetween(column="pixels_min", min_value=0, max_value=1),
        ex.ExpectColumnValuesToBeBetween(column="pixels_max", min_value=0, max_value=1),
        ex.ExpectCompoundColumnsToBeUnique(column_list=["run_id", "cell_id"]),
    ]
    return _outcome(f"{use_case_id}.image_features", frame, expectations, {"expect_table_row_count_to_equal"})
