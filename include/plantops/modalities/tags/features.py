"""Tag features: which days a change rebuilds (the lookback), the feature rows, their GX gate."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import NoFeatures, days_between
from plantops.settings import get_settings
from plantops.units import utc_day

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase

log = logging.getLogger(__name__)


def feature_window(days: list[str], built: Iterable[str] = (), lookback_days: int = 0) -> list[dict[str, str]]:
    """The day ranges ``[start, end)`` that rebuild the given changed days: one range per run of
    consecutive days, so days months apart never share a range (nor the days between them).

    A changed day is read as lookback by the next ``lookback_days`` days, so those of them already
    built (in ``built``) are rebuilt too and join the range; days not built yet are left to their
    own run. Nothing else is: a backfill of an old day rebuilds that day and its lookahead only.
    """
    if not days:
        raise ValueError("no days to build features for: the triggering ingest wrote nothing")
    changed = {utc_day(d).date() for d in days}
    have = {utc_day(d).date() for d in built}
    wanted = changed | ({d + timedelta(days=k) for d in changed for k in range(1, lookback_days + 1)} & have)
    ranges: list[dict[str, str]] = []
    for day in sorted(wanted):
        if ranges and ranges[-1]["end"] == day.isoformat():
            ranges[-1]["end"] = (day + timedelta(days=1)).isoformat()
        else:
            ranges.append({"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()})
    return ranges


def built_feature_days(use_case_id: str) -> list[str]:
    """The days that have a feature partition (``date=*``), oldest first."""
    root = get_settings().features_root / use_case_id
    return sorted(p.name.removeprefix("date=") for p in root.glob("date=*") if p.is_dir())


def bronze_days(use_case_id: str) -> list[str]:
    """The days that have bronze (``date=*`` with a parquet file), oldest first."""
    root = get_settings().bronze_root / use_case_id
    return sorted(p.name.removeprefix("date=") for p in root.glob("date=*") if p.is_dir() and any(p.glob("*.parquet")))


def feature_plan(use_case: UseCase, days: Iterable[str]) -> dict[str, Any]:
    """:func:`feature_window` against the feature days that exist, the use case's lookback."""
    from plantops.features import format_ranges

    days = list(days)
    windows = feature_window(days, built_feature_days(use_case.id), use_case.features.lookback_days)
    changed = {utc_day(d).date().isoformat() for d in days}
    rebuilt = [d for w in windows for d in days_between(w["start"], w["end"])]
    plan = {"ranges": format_ranges((w["start"], w["end"]) for w in windows), "days": sorted(changed),
            "lookahead": [d for d in rebuilt if d not in changed]}
    log.info("%s: building features for %s (changed days %s, lookahead %s)", use_case.id, plan["ranges"],
             ", ".join(plan["days"]), ", ".join(plan["lookahead"]) or "none")
    return plan


def load_features(use_case_id: str, start: str | None = None, end: str | None = None,
                  asset: str | None = None) -> pd.DataFrame:
    """Feature rows of [start, end) (ISO days), of one asset or all, sorted by asset and time."""
    import pandas as pd

    root = get_settings().features_root / use_case_id
    if not root.exists():
        raise NoFeatures(f"no features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    filters = [("asset", "==", asset)] if asset else []
    if start:
        filters.append(("date", ">=", start))
    if end:
        filters.append(("date", "<", end))
    frame = pd.read_parquet(root, filters=filters or None)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["date"] = frame["date"].astype(str)
    return frame.sort_values(["asset", "ts"]).reset_index(drop=True)


def check_features(use_case: UseCase, spans: list[tuple[str, str]], asset: str | None = None) -> dict[str, Any]:
    """The GX gate (:func:`plantops.stages.validation.validate_features`) on the feature rows of the
    day ranges of one asset, or all. An asset without features in the ranges is reported, not
    failed (a turbine whose SCADA link was down that day)."""
    import pandas as pd

    from plantops.features import format_ranges
    from plantops.stages.validation import validate_features

    ranges = format_ranges(spans)
    frames = [load_features(use_case.id, start, end, asset) for start, end in spans]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if asset and frame.empty:
        log.warning("%s: no feature rows for asset %s in %s", use_case.id, asset, ranges)
        return {"asset": asset, "rows": 0, "ranges": ranges, "days": [], "missing": {}}
    outcome = validate_features(use_case, frame)
    if not outcome.success:
        raise ValueError(f"feature gate failed for {use_case.id}{'/' + asset if asset else ''} "
                         f"{ranges}: {outcome.reason()}")
    tags = [t for t in use_case.tag_names if t in frame.columns]
    missing = {t: int(n) for t, n in frame[tags].isna().sum().items() if n}
    if missing:
        log.warning("%s%s %s: rows where a tag was silent for longer than features.max_gap (%s), so missing: %s",
                    use_case.id, "/" + asset if asset else "", ranges, use_case.features.max_gap, missing)
    return {"asset": asset, "rows": len(frame), "ranges": ranges,
            "days": sorted(frame["date"].unique().tolist()), "missing": missing}
