"""Conflicts and corrections: a later landed value that differs from bronze's for one (asset, tag,
ts, source).

Historians re-send corrected values (PI's replace mode). Bronze never holds two rows for one key,
so a differing later value is neither written beside bronze's nor dropped: it is a **conflict**,
kept in the state DB (``bronze_conflicts``) with both values and both files. ``cli conflicts <uc>``
lists them; ``cli correct <uc> <file>`` replaces bronze's values with that file's, and a source
with ``on_conflict: replace`` does so at ingest. Either way the row becomes the audit record: who
(``--by`` or the OS user; ``on_conflict: replace`` for the automatic path), when, the old and new
value and both files.

A replaced value is rewritten in place in the bronze file that held it (value, quality and
``batch`` = the correcting file): one atomic rename per (day, file), so bronze never holds the key
twice nor loses it, whatever instant a task dies. The corrected days wait (``announced_run`` NULL)
until the next ingest run claims them: its bronze event names them, so ``<uc>__features`` plans and
rebuilds them as any changed day, and its features event fires.
"""

from __future__ import annotations

import getpass
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import (Column, DateTime, Float, Integer, MetaData, String, Table, Text, UniqueConstraint, and_,
                        insert, select, update)

from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

metadata = MetaData()
conflicts = Table(
    "bronze_conflicts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("use_case", String(64), nullable=False, index=True),
    Column("asset", String(128), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("ts", String(40), nullable=False),  # ISO 8601 UTC: the same text on SQLite and PostgreSQL
    Column("day", String(10), nullable=False),
    Column("source", String(32), nullable=False),
    Column("bronze_value", Float),  # bronze's value when the conflict was found; the replaced one once corrected
    Column("bronze_file", String(255), nullable=False),
    Column("new_value", Float),
    Column("new_quality", String(16), nullable=False),
    Column("new_raw", Text),  # the value as the later file wrote it
    Column("new_file", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # open | replaced
    Column("detected_at", DateTime, nullable=False),
    Column("detected_run", String(255)),
    Column("corrected_by", String(255)),
    Column("corrected_at", DateTime),
    Column("corrected_how", String(32)),  # cli correct | on_conflict: replace
    Column("announced_run", String(255)),  # the ingest run whose bronze event named the corrected day
    # A rerun of the same file (a retried task) finds its conflicts here instead of adding them again.
    UniqueConstraint("use_case", "asset", "tag", "ts", "source", "new_file", name="uq_bronze_conflict"),
)
OPEN, REPLACED = "open", "replaced"
BY_SOURCE = "on_conflict: replace"


def state_engine() -> Engine:
    from plantops import db

    return db.engine(get_settings().state_url, metadata)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _iso(ts: Any) -> str:
    import pandas as pd

    return pd.Timestamp(ts).tz_convert("UTC").isoformat()


def record(use_case_id: str, found: pd.DataFrame, new_file: str, run_id: str) -> list[int]:
    """Keep each conflict (columns asset, tag, ts, source, bronze_value, bronze_file, new_value,
    new_quality, new_raw) once per (key, new file); the ids of the rows, new or found again."""
    ids = []
    with state_engine().begin() as conn:
        for row in found.itertuples(index=False):
            ts = _iso(row.ts)
            where = and_(conflicts.c.use_case == use_case_id, conflicts.c.asset == row.asset,
                         conflicts.c.tag == row.tag, conflicts.c.ts == ts, conflicts.c.source == row.source,
                         conflicts.c.new_file == new_file)
            seen = conn.execute(select(conflicts.c.id).where(where)).scalar()
            if seen is None:
                seen = conn.execute(insert(conflicts).values(
                    use_case=use_case_id, asset=row.asset, tag=row.tag, ts=ts, day=ts[:10], source=row.source,
                    bronze_value=_float(row.bronze_value), bronze_file=row.bronze_file,
                    new_value=_float(row.new_value), new_quality=row.new_quality, new_raw=row.new_raw,
                    new_file=new_file, status=OPEN, detected_at=_now(), detected_run=run_id,
                )).inserted_primary_key[0]
            ids.append(int(seen))
    if ids:
        log.warning("%s: %d value(s) of %s differ from bronze's (conflicts %s..%s)", use_case_id, len(ids), new_file,
                    min(ids), max(ids))
    return ids


def _float(value: Any) -> float | None:
    import math

    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def listed(use_case_id: str, status: str | None = OPEN, new_file: str | None = None) -> list[dict]:
    """The conflicts of a use case (open ones by default; ``status=None``: every one, with the
    audit fields of those replaced), oldest first."""
    query = select(conflicts).where(conflicts.c.use_case == use_case_id).order_by(conflicts.c.id)
    if status is not None:
        query = query.where(conflicts.c.status == status)
    if new_file is not None:
        query = query.where(conflicts.c.new_file == new_file)
    with state_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def replace(use_case_id: str, ids: list[int], by: str, how: str) -> list[dict]:
    """Put the later value of each conflict in ``ids`` into bronze in place of bronze's, and make
    each conflict its audit record (who, when, how, the value replaced). Rerun-safe: a value bronze
    holds already (a task killed after the bronze write) is only recorded."""
    import pandas as pd

    from plantops.storage import atomic_write_parquet

    with state_engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(conflicts).where(conflicts.c.id.in_(ids)))]
    rows = [r for r in rows if r["status"] == OPEN and r["use_case"] == use_case_id]
    if not rows:
        return []
    root = get_settings().bronze_root / use_case_id
    old: dict[int, float | None] = {}
    for day in sorted({r["day"] for r in rows}):
        wanted = pd.DataFrame([r for r in rows if r["day"] == day])
        wanted["ts"] = pd.to_datetime(wanted["ts"], utc=True).astype("datetime64[ns, UTC]")
        for path in sorted((root / f"date={day}").glob("landing-*.parquet")):
            frame = pd.read_parquet(path)
            ts = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
            key = pd.DataFrame({"asset": frame["asset"], "tag": frame["tag"], "ts": ts, "source": frame["source"],
                                "position": range(len(frame))})
            hit = key.merge(wanted[["id", "asset", "tag", "ts", "source", "new_value", "new_quality", "new_file"]],
                            on=["asset", "tag", "ts", "source"], how="inner")
            if hit.empty:
                continue
            positions = hit["position"].to_numpy()
            for conflict_id, value in zip(hit["id"], frame["value"].to_numpy()[positions]):
                old[int(conflict_id)] = _float(value)
            frame.loc[positions, "value"] = hit["new_value"].to_numpy(dtype=float)
            frame.loc[positions, "quality"] = hit["new_quality"].to_numpy()
            frame.loc[positions, "batch"] = hit["new_file"].to_numpy()
            # One rename per (day, file): a reader sees the file before or after, never half of it.
            atomic_write_parquet(frame, path)
    missing = [r["id"] for r in rows if r["id"] not in old]
    if missing:
        # Bronze no longer holds the key (the earlier file was superseded since): nothing to replace.
        log.warning("%s: conflicts %s: bronze no longer holds their key; left open", use_case_id, missing)
    done = [r for r in rows if r["id"] in old]
    now = _now()
    with state_engine().begin() as conn:
        for r in done:
            conn.execute(update(conflicts).where(conflicts.c.id == r["id"], conflicts.c.status == OPEN).values(
                status=REPLACED, bronze_value=old[r["id"]], corrected_by=by, corrected_at=now, corrected_how=how,
                announced_run=None))
    _drop_rejected_records(use_case_id, done)
    log.info("%s: %d bronze value(s) replaced (%s, by %s)", use_case_id, len(done), how, by)
    return [
        {**r, "status": REPLACED, "bronze_value": old[r["id"]], "corrected_by": by, "corrected_at": now,
         "corrected_how": how} for r in done]


def _drop_rejected_records(use_case_id: str, done: list[dict]) -> None:
    """A replaced value is in bronze now: its rejected-value record (the conflict reason) goes, so
    the rejected share counts it no longer."""
    import pandas as pd

    from plantops.sources.landing import batch_key
    from plantops.storage import atomic_write_parquet

    folder = get_settings().quarantine_root / use_case_id / "rows"
    for new_file in sorted({r["new_file"] for r in done}):
        path = folder / f"{batch_key(new_file)}.parquet"
        if not path.exists():
            continue
        frame = pd.read_parquet(path)
        ts = pd.to_datetime(frame["ts"], utc=True).map(lambda t: t.isoformat())
        gone = {(r["asset"], r["tag"], r["ts"]) for r in done if r["new_file"] == new_file}
        keep = [(a, t, s) not in gone for a, t, s in zip(frame["asset"], frame["tag"], ts)]
        if all(keep):
            continue
        if any(keep):
            atomic_write_parquet(frame[keep].reset_index(drop=True), path)
        else:
            path.unlink()


def correct(use_case_id: str, new_file: str, by: str | None = None) -> dict:
    """``cli correct``: every open conflict the file brought replaces bronze's value; what was done
    and which days the next ingest run announces to the features."""
    by = by or getpass.getuser()
    pending = listed(use_case_id, OPEN, new_file)
    if not pending:
        known = sorted({c["new_file"] for c in listed(use_case_id, OPEN)})
        raise ValueError(f"no open conflict of {new_file!r} in {use_case_id}"
                         + (f"; files with open conflicts: {', '.join(known)}" if known else "; none is open"))
    done = replace(use_case_id, [c["id"] for c in pending], by, "cli correct")
    return {"file": new_file, "replaced": len(done), "left_open": len(pending) - len(done), "by": by,
            "at": done[0]["corrected_at"] if done else None, "days": sorted({c["day"] for c in done}),
            "features": f"rebuilt for these days after the next ingest run (its schedule, or now: "
                        f"python -m plantops.cli ingest {use_case_id})"}


def claim_days(use_case_id: str, run_id: str) -> list[str]:
    """The days of replaced values no ingest run announced yet, claimed for ``run_id`` (a retry of
    the run claims the same days again, so its bronze event is the same)."""
    with state_engine().begin() as conn:
        conn.execute(update(conflicts).where(conflicts.c.use_case == use_case_id, conflicts.c.status == REPLACED,
                                             conflicts.c.announced_run.is_(None)).values(announced_run=run_id))
        days = conn.execute(select(conflicts.c.day).distinct().where(
            conflicts.c.use_case == use_case_id, conflicts.c.announced_run == run_id)).scalars().all()
    return sorted(days)
