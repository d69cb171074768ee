"""Tag ingest: every landed tag file plus the historian window, widened to the landed files' days."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from plantops.settings import get_settings
from plantops.units import utc_day

if TYPE_CHECKING:
    from plantops.config import UseCase


def historian_windows(start: datetime, end: datetime, days: list[str]) -> list[tuple[datetime, datetime]]:
    """[start, end) plus whole days, merged into as few contiguous windows as possible."""
    spans = sorted([(start, end), *((utc_day(d), utc_day(d) + timedelta(days=1)) for d in days)])
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def landed_days(use_case_id: str, run_id: str) -> list[str]:
    """The bronze days of the files this run ingested (across its tries)."""
    from sqlalchemy import select

    from plantops.sources.landing import batch_key, ledger, state_engine

    query = select(ledger.c.name).where(ledger.c.use_case == use_case_id, ledger.c.dag_run_id == run_id,
                                        ledger.c.status == "ingested")
    with state_engine().connect() as conn:
        stems = {batch_key(name) for (name,) in conn.execute(query)}
    root = get_settings().bronze_root / use_case_id
    return sorted({p.parent.name.removeprefix("date=") for stem in stems
                   for p in root.glob(f"date=*/landing-{stem}.parquet")})


def ingest(use_case: UseCase, run_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """Every landed file plus the historian window [start, end), widened to cover the days of the
    files this run ingested (read back from the ledger, so a retry finds the same window although
    its files are archived by then). A use case without historian tags does not touch the historian."""
    from plantops.stages import corrections
    from plantops.stages.ingest import ingest_historian, ingest_landed

    landed = ingest_landed(use_case, run_id)
    windows = []
    if use_case.tags_from("historian"):
        windows = historian_windows(start, end, landed_days(use_case.id, run_id))
    batches = [ingest_historian(use_case, lo, hi, run_id) for lo, hi in windows]
    days = {day for batch in batches for day in batch.get("days", {})}
    for item in landed["files"]:
        days.update(item.get("days", {}))
    # Days whose bronze values were replaced (`cli correct`, or a source's on_conflict: replace in
    # this run): this run's bronze event names them, so the features plan rebuilds them.
    corrected = corrections.claim_days(use_case.id, run_id)
    days.update(corrected)
    quarantined = [f for f in landed["files"] if f["status"] == "quarantined"]
    return {
        "use_case": use_case.id,
        "days": sorted(days),
        "historian": {
            **{key: sum(b[key] for b in batches) for key in ("rows_in", "rows_written", "rows_rejected")},
            "windows": [f"{lo.isoformat()}/{hi.isoformat()}" for lo, hi in windows],
            "reason": "; ".join(str(b["reason"]) for b in batches) if windows else "no historian tags",
        },
        "files": landed["files"],
        "corrected_days": corrected,
        "quarantined_files": len(quarantined),
    }
