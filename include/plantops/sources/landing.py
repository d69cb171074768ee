"""The NiFi landing zone: scan completed files, a ledger, quarantine with a reason, release.

NiFi's PutFile writes under a dot-prefixed temporary name and renames when done, so hidden files
and ``*.tmp``/``*.part`` names are never read. Every file is keyed in the ledger by name, size and
SHA-256: landing the same bytes again is a no-op; a corrected file under the same name supersedes
the earlier one, and the ledger says so. Files are moved, never deleted: to the archive once
ingested, to quarantine (beside a ``.reason.json``) when they fail.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Engine

from plantops.settings import get_settings
from plantops.storage import atomic_write_json

log = logging.getLogger(__name__)

metadata = MetaData()
ledger = Table(
    "landing_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("use_case", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # ingested | quarantined | superseded | released
    Column("rows_in", Integer),
    Column("rows_written", Integer),
    Column("rows_rejected", Integer),
    Column("reason", Text),
    Column("dag_run_id", String(255)),
    Column("stored_at", Text),
    Column("processed_at", DateTime, nullable=False),
)

# What the landing watcher has announced: one asset event per completed file version (name, size,
# modification time), kept in the state DB so a restarted triggerer does not announce it again.
announced = Table(
    "landing_announced",
    metadata,
    Column("directory", String(512), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("size", Integer, primary_key=True),
    Column("mtime_ns", String(24), primary_key=True),
    Column("announced_at", DateTime, nullable=False),
)

INCOMPLETE_SUFFIXES = (".tmp", ".part", ".filepart", ".partial")


def not_yet_announced(directory: str, files: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """The (name, size, mtime_ns) of ``files`` the watcher has not announced yet."""
    if not files:
        return []
    with state_engine().connect() as conn:
        seen = {(r.name, int(r.size), int(r.mtime_ns)) for r in conn.execute(
            select(announced).where(announced.c.directory == directory,
                                    announced.c.name.in_([name for name, _, _ in files])))}
    return [f for f in files if f not in seen]


def mark_announced(directory: str, files: list[tuple[str, int, int]]) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with state_engine().begin() as conn:
        for name, size, mtime_ns in files:
            conn.execute(insert(announced).values(directory=directory, name=name, size=size, mtime_ns=str(mtime_ns),
                                                  announced_at=now))


@dataclass(frozen=True)
class LandedFile:
    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def state_engine() -> Engine:
    from plantops import db

    return db.engine(get_settings().state_url, metadata)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete_name(name: str) -> bool:
    return not name.startswith(".") and not name.endswith(INCOMPLETE_SUFFIXES)


def landing_dir(folder: str) -> Path:
    return get_settings().landing_root / folder


def scan(folder: str, pattern: str = "*") -> list[LandedFile]:
    """Completed files in the landing folder, oldest first."""
    root = landing_dir(folder)
    if not root.exists():
        return []
    paths = [p for p in root.glob(pattern) if p.is_file() and is_complete_name(p.name)]
    paths.sort(key=lambda p: (p.stat().st_mtime, p.name))
    return [LandedFile(p, p.stat().st_size, sha256_of(p)) for p in paths]


def lookup(use_case: str, name: str) -> list[dict]:
    query = select(ledger).where(ledger.c.use_case == use_case, ledger.c.name == name).order_by(ledger.c.id)
    with state_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def already_processed(use_case: str, landed: LandedFile) -> dict | None:
    """The ledger row for exactly these bytes under this name, if they were processed before."""
    for row in reversed(lookup(use_case, landed.name)):
        if row["sha256"] == landed.sha256 and row["status"] in ("ingested", "quarantined"):
            return row
    return None


def _record(use_case: str, landed: LandedFile, status: str, counts: dict[str, int], reason: str,
            dag_run_id: str, stored_at: Path) -> None:
    with state_engine().begin() as conn:
        if status == "ingested":
            # A corrected file under the same name replaces the rows of the earlier one.
            conn.execute(
                update(ledger)
                .where(ledger.c.use_case == use_case, ledger.c.name == landed.name, ledger.c.status == "ingested",
                       ledger.c.sha256 != landed.sha256)
                .values(status="superseded", reason=f"superseded by sha256 {landed.sha256[:12]}")
            )
        conn.execute(insert(ledger), [{
            "use_case": use_case, "name": landed.name, "size": landed.size, "sha256": landed.sha256,
            "status": status, "rows_in": counts.get("rows_in"), "rows_written": counts.get("rows_written"),
            "rows_rejected": counts.get("rows_rejected"), "reason": reason, "dag_run_id": dag_run_id,
            "stored_at": str(stored_at), "processed_at": datetime.now(timezone.utc).replace(tzinfo=None),
        }])


def _unique_target(folder: Path, name: str, sha256: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists():
        target = folder / f"{Path(name).stem}.{sha256[:12]}{Path(name).suffix}"
    return target


def archive(use_case: str, landed: LandedFile, counts: dict[str, int], dag_run_id: str, reason: str = "ok") -> Path:
    target = _unique_target(get_settings().archive_root / use_case, landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    _record(use_case, landed, "ingested", counts, reason, dag_run_id, target)
    return target


def skip_duplicate(use_case: str, landed: LandedFile, previous: dict) -> Path:
    """The same bytes landed again: no new rows; the copy is archived so the watcher stops firing."""
    target = _unique_target(get_settings().archive_root / use_case / "duplicates", landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    log.info("%s was already %s (ledger id %s); archived the copy at %s", landed.name, previous["status"],
             previous["id"], target)
    return target


def quarantine(use_case: str, landed: LandedFile, reason: str, counts: dict[str, int], dag_run_id: str) -> Path:
    """Move the file, untouched, to quarantine and write its reason beside it."""
    target = _unique_target(get_settings().quarantine_root / use_case, landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    atomic_write_json(target.with_name(target.name + ".reason.json"), {
        "file": landed.name, "sha256": landed.sha256, "size": landed.size, "reason": reason,
        "counts": counts, "dag_run_id": dag_run_id, "quarantined_at": datetime.now(timezone.utc).isoformat(),
    })
    _record(use_case, landed, "quarantined", counts, reason, dag_run_id, target)
    log.warning("quarantined %s: %s", landed.name, reason)
    return target


def release(use_case: str, name: str, folder: str) -> Path:
    """Put a fixed quarantined file back in line: it returns to the landing folder for the next ingest."""
    source = get_settings().quarantine_root / use_case / name
    if not source.exists():
        raise FileNotFoundError(f"no quarantined file {name!r} for {use_case} in {source.parent}")
    target = landing_dir(folder) / name
    if target.exists():
        raise FileExistsError(f"{target} already exists in the landing folder; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    landed = LandedFile(source, source.stat().st_size, sha256_of(source))
    shutil.move(str(source), target)
    reason_file = source.with_name(source.name + ".reason.json")
    if reason_file.exists():
        reason_file.rename(reason_file.with_name(reason_file.name + ".released"))
    _record(use_case, landed, "released", {}, "released from quarantine", "manual", target)
    return target


def rows_of(use_case: str) -> list[dict]:
    query = select(ledger).where(ledger.c.use_case == use_case).order_by(ledger.c.id)
    with state_engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
