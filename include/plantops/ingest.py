"""Ingest: historian window and landed files -> validation -> bronze or quarantine.

Accounting holds for every batch: rows_in == rows_written + rows_rejected. Rejected rows are not
dropped silently: they go to quarantine as a parquet file with a reason per row.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from plantops.config import UseCase
from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LONG_COLUMNS = ["asset", "tag", "ts", "value", "quality", "source", "batch"]


def _split(frame: pd.DataFrame, bad_rows: frozenset[int], row_reasons: dict[int, str]):
    import numpy as np

    mask = np.zeros(len(frame), dtype=bool)
    mask[list(bad_rows)] = True
    rejected = frame[mask].assign(reason=[row_reasons[i] for i in sorted(bad_rows)])
    return frame[~mask], rejected


def _quarantine_rows(use_case: UseCase, rejected: pd.DataFrame, name: str) -> str | None:
    if rejected.empty:
        return None
    from plantops.storage import atomic_write_parquet

    path = get_settings().quarantine_root / use_case.id / "rows" / f"{name}.parquet"
    atomic_write_parquet(rejected.reset_index(drop=True), path)
    return str(path)


def ingest_historian(use_case: UseCase, start: datetime, end: datetime, run_id: str) -> dict:
    """Pull [start, end) from the historian, validate, write bronze per day (rerun-safe)."""
    from plantops import historian, validation
    from plantops.storage import write_bronze

    tags = [t.name for t in use_case.tags_from("historian")]
    frame = historian.read_window(use_case.historian.asset, tags, start, end)
    counts = {"rows_in": len(frame), "rows_written": 0, "rows_rejected": 0}
    if frame.empty:
        log.warning("historian returned no rows for %s in [%s, %s)", use_case.id, start, end)
        return {**counts, "days": {}, "quarantined": None, "reason": "no rows in window"}
    outcome = validation.validate_historian(use_case, frame)
    batch = f"historian:{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    if outcome.structural or (not outcome.success and use_case.landing and use_case.landing.bad_rows == "quarantine"):
        path = _quarantine_rows(use_case, frame.assign(reason=outcome.reason()), batch.replace(":", "_"))
        raise ValueError(f"historian batch {batch} failed validation and was quarantined at {path}: {outcome.reason()}")
    good, rejected = _split(frame, outcome.bad_rows, outcome.row_reasons)
    quarantined = _quarantine_rows(use_case, rejected, batch.replace(":", "_"))
    bronze = good.assign(source="historian", batch=batch)[LONG_COLUMNS]
    days = write_bronze(get_settings().bronze_root, use_case.id, bronze, "historian")
    counts.update(rows_written=sum(days.values()), rows_rejected=len(rejected))
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
    log.info("historian %s: %s (validation: %s)", batch, counts, outcome.reason())
    return {**counts, "days": days, "quarantined": quarantined, "reason": outcome.reason()}


def _read_landed(path) -> pd.DataFrame:
    import pandas as pd

    frame = pd.read_parquet(path)
    if "ts" in frame.columns:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def ingest_landed(use_case: UseCase, run_id: str) -> dict:
    """Every completed landed file: ledger check, validation, bronze or quarantine, then archive."""
    from plantops import landing, validation
    from plantops.storage import write_bronze

    if use_case.landing is None:
        return {"files": []}
    results = []
    for landed in landing.scan(use_case.landing.folder, use_case.landing.pattern):
        previous = landing.already_processed(use_case.id, landed)
        if previous:
            landing.skip_duplicate(use_case.id, landed, previous)
            results.append({"file": landed.name, "status": "duplicate", "ledger_id": previous["id"]})
            continue
        counts = {"rows_in": 0, "rows_written": 0, "rows_rejected": 0}
        try:
            frame = _read_landed(landed.path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is quarantined, not fatal
            landing.quarantine(use_case.id, landed, f"unreadable parquet: {exc}", counts, run_id)
            results.append({"file": landed.name, "status": "quarantined", "reason": "unreadable"})
            continue
        counts["rows_in"] = len(frame)
        outcome = validation.validate_landed(use_case, frame)
        if outcome.structural or (not outcome.success and use_case.landing.bad_rows == "quarantine"):
            counts["rows_rejected"] = len(frame)
            landing.quarantine(use_case.id, landed, outcome.reason(), counts, run_id)
            results.append({"file": landed.name, "status": "quarantined", "reason": outcome.reason(), **counts})
            continue
        good, rejected = _split(frame, outcome.bad_rows, outcome.row_reasons)
        quarantined_rows = _quarantine_rows(use_case, rejected, landed.path.stem)
        long = good.melt(id_vars="ts", var_name="tag", value_name="value").assign(
            asset=use_case.historian.asset, quality="good", source="landing", batch=landed.name
        )[LONG_COLUMNS]
        days = write_bronze(get_settings().bronze_root, use_case.id, long, f"landing-{landed.path.stem}")
        counts.update(rows_written=len(good), rows_rejected=len(rejected))
        assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
        landing.archive(use_case.id, landed, counts, run_id)
        results.append({"file": landed.name, "status": "ingested", "days": days, "rejected_rows_at": quarantined_rows,
                        **counts})
    return {"files": results}


def rejected_share(use_case: UseCase, start: datetime, end: datetime) -> float | None:
    """Share of the window's measurements that the GX gates rejected (rows kept in quarantine),
    counted in tag values: a rejected wide row of a landed file counts once per tag in it."""
    import pandas as pd

    from plantops.storage import read_bronze

    lo, hi = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    rejected = 0
    for path in (get_settings().quarantine_root / use_case.id / "rows").glob("*.parquet"):
        frame = pd.read_parquet(path)
        ts = pd.to_datetime(frame["ts"], utc=True)
        inside = int(((ts >= lo) & (ts < hi)).sum())
        values_per_row = 1 if "tag" in frame.columns else len([c for c in frame.columns if c not in ("ts", "reason")])
        rejected += inside * values_per_row
    kept = read_bronze(get_settings().bronze_root, use_case.id, lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d"))
    total = len(kept) + rejected
    return None if total == 0 else rejected / total
