"""Image features: one row per accepted cell image (``images/day=*``), no lookback, and their GX gate."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import NoFeatures
from plantops.settings import get_settings
from plantops.units import utc_day

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase


def built_feature_days(use_case_id: str) -> list[str]:
    """The days that have an image-feature partition (``images/day=*``), oldest first."""
    root = get_settings().features_root / use_case_id / "images"
    return sorted(p.name.removeprefix("day=") for p in root.glob("day=*") if p.is_dir())


def bronze_days(use_case_id: str) -> list[str]:
    """The days that have inspection bronze (``inspections/day=*`` with a parquet file), oldest first."""
    root = get_settings().bronze_root / use_case_id / "inspections"
    return sorted(p.name.removeprefix("day=") for p in root.glob("day=*") if p.is_dir() and any(p.glob("*.parquet")))


def feature_plan(days: Iterable[str]) -> dict[str, Any]:
    """An image's features read no other day: one range per changed day, no lookahead."""
    from plantops.features import format_ranges

    changed = sorted({utc_day(d).date().isoformat() for d in days})
    if not changed:
        raise ValueError("no days to build features for: the triggering ingest wrote nothing")
    return {"ranges": format_ranges((d, (utc_day(d) + timedelta(days=1)).date().isoformat()) for d in changed),
            "days": changed, "lookahead": []}


def load_image_features(use_case_id: str, days: Iterable[str] | None = None) -> pd.DataFrame:
    """Image-feature rows of an inspection use case (of ``days``, or every day), with ``day``,
    sorted by capture time."""
    import pandas as pd

    root = get_settings().features_root / use_case_id / "images"
    if not root.is_dir():
        raise NoFeatures(f"no image features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    wanted = None if days is None else sorted(set(days))
    frame = pd.read_parquet(root, filters=[("day", "in", wanted)] if wanted else None)
    frame["day"] = frame["day"].astype(str)
    frame["captured_at"] = pd.to_datetime(frame["captured_at"], utc=True)
    return frame.sort_values(["captured_at", "cell_id"]).reset_index(drop=True)


def check_features(use_case: UseCase, days: list[str]) -> dict[str, Any]:
    """The GX gate of an inspection use case's feature days: each day one row per image its
    bronze holds, statistics in range, model inputs of the configured size; fails naming the day."""
    import pandas as pd

    from plantops.modalities.images.validation import validate_image_features

    bronze = get_settings().bronze_root / use_case.id / "inspections"
    rows = 0
    for day in days:
        expected = sum(len(pd.read_parquet(p, columns=["cell_id"])) for p in sorted((bronze / f"day={day}").glob("*.parquet")))
        if not expected:  # no image accepted that day: nothing built, nothing to check
            continue
        frame = load_image_features(use_case.id, [day])
        outcome = validate_image_features(use_case.id, frame, use_case.inspection.input_size, expected)
        if not outcome.success:
            raise ValueError(f"image feature gate failed for {use_case.id} {day}: {outcome.reason()}")
        rows += len(frame)
    return {"asset": None, "rows": rows, "days": sorted(days), "missing": {}}
