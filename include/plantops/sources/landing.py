"""The NiFi landing zone: scan completed files, read them, a ledger, quarantine with a reason, release.

NiFi's PutFile writes under a dot-prefixed temporary name and renames when done, so hidden files
and ``*.tmp``/``*.part`` names are never read. Every file is keyed in the ledger by name, size and
SHA-256: the same bytes again, under this name or another (NiFi re-sends a file after a timeout
under a new name), are a no-op, recorded as a ``duplicate`` of the file that brought them first; a
corrected file under the same name supersedes the earlier one, and the ledger says so. Files are
moved, never deleted: to the archive once ingested, to quarantine (beside a ``.reason.json``) when
they fail.

Each file is read as the landing source whose pattern it matches says (parquet, csv or jsonl; see
"Landed files" in docs/configuration.md). A file no source claims is left where it is (NiFi may still be
writing under a name the use case will claim) and recorded once as ``ignored``.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.engine import Engine

from plantops.config import LandedFileSource
from plantops.settings import get_settings
from plantops.storage import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

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
    # ingested | quarantined | superseded | released | duplicate | ignored (matches no landing source)
    Column("status", String(16), nullable=False),
    # Rows of the file: written = with at least one value in bronze, rejected = with none.
    Column("rows_in", Integer),
    Column("rows_written", Integer),
    Column("rows_rejected", Integer),
    Column("reason", Text),
    Column("dag_run_id", String(255)),
    Column("stored_at", Text),
    Column("processed_at", DateTime, nullable=False),
    # Added after the first release: ADDED_COLUMNS below adds them to an existing table.
    Column("values_in", Integer),  # tag values (cells) of the file: values_in = written + rejected
    Column("values_written", Integer),
    Column("values_rejected", Integer),
    Column("rejected_values", Text),  # JSON {tag: {reason: count}}, one reason per rejected value
    Column("duplicate_of", String(255)),  # status duplicate: the name the same bytes were first processed under
)
ADDED_COLUMNS = ("values_in", "values_written", "values_rejected", "rejected_values", "duplicate_of")

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

    return db.engine(get_settings().state_url, metadata, added={ledger: ADDED_COLUMNS})


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


def sources_matching(name: str, sources: tuple[LandedFileSource, ...]) -> list[LandedFileSource]:
    """The sources whose pattern matches a file name (case-sensitive, as the folder's glob)."""
    return [s for s in sources if fnmatch.fnmatchcase(name, s.pattern)]


def batch_key(name: str) -> str:
    """What a landed file's bronze and rejected-value files are named after: the stem of a
    ``.parquet`` file (as before other formats were read), the whole name of any other, so that
    ``a.csv`` and ``a.parquet`` never share one bronze file."""
    path = Path(name)
    return path.stem if path.suffix == ".parquet" else path.name


class UnreadableFile(ValueError):
    """The file cannot be read or decoded as its source says; it is quarantined with this reason."""


class TruncatedFile(UnreadableFile):
    """The file ends mid-record: NiFi may still be writing it, or the transfer broke. No value of it
    is read (half a line is no value, and a cut cell would lock the full file's value out of bronze);
    ``offset`` is where the cut record starts, ``size`` the file's size."""

    def __init__(self, message: str, offset: int, size: int) -> None:
        super().__init__(message)
        self.offset, self.size = offset, size


# A parquet file starts and ends with this marker; the footer (the schema) sits just before the end.
PARQUET_MAGIC = b"PAR1"
_TAIL_CHUNK = 1 << 16


def _last_line(path: Path, size: int) -> tuple[int, bytes, bool]:
    """Where the file's last non-empty line starts, its bytes, and whether a line end follows it
    (read backwards in chunks: a large file's head is never read for this)."""
    tail, position = b"", size
    with path.open("rb") as handle:
        while position > 0:
            step = min(_TAIL_CHUNK, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
            stripped = tail.rstrip(b"\r\n")  # trailing line ends and blank lines are no line
            if b"\n" in stripped:
                break
    stripped = tail.rstrip(b"\r\n")
    cut = stripped.rfind(b"\n") + 1
    return position + cut, stripped[cut:], len(stripped) < len(tail)


def cut_record(path: Path, source: LandedFileSource) -> tuple[int, str] | None:
    """Whether the file ends mid-record, as bytes tell it before any parser does: ``(offset, why)``
    for a csv or jsonl whose last line has no line end or (csv) fewer fields than the header, or a
    parquet file without its closing marker (the footer never came); None for a complete file."""
    size = path.stat().st_size
    if size == 0:
        return None  # an empty file is unreadable, not cut
    if source.format == "parquet":
        with path.open("rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, size - 4))
            tail = handle.read(4)
        if head == PARQUET_MAGIC and (size < 12 or tail != PARQUET_MAGIC):
            return size, "the parquet footer is missing (the file does not end with its closing PAR1)"
        return None
    if "\n".encode(source.encoding) != b"\n":
        return None  # a two-byte encoding (UTF-16): the byte scan below would misread it
    offset, line, ended = _last_line(path, size)
    if not ended:
        return offset, "the last line has no line end"
    if source.format == "csv":
        with path.open("rb") as handle:
            header = handle.readline(_TAIL_CHUNK * 16)
        if offset == 0:
            return None  # the header is the only line: no row to cut
        have, want = (_field_count(raw.decode(source.encoding, errors="replace"), source.delimiter)
                      for raw in (line, header))
        if have < want:
            return offset, f"the last line has {have} of the header's {want} fields"
    return None


def _field_count(line: str, delimiter: str) -> int:
    import csv

    return len(next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter), []))


def _looks_complete(path: Path, source: LandedFileSource, offset: int) -> bool:
    """Whether the unended last line would parse whole (a csv row with the header's field count, a
    JSON object): a file written without its final line end rather than cut."""
    with path.open("rb") as handle:
        header = handle.readline(_TAIL_CHUNK * 16)
        handle.seek(offset)
        line = handle.read().decode(source.encoding, errors="replace")
    if source.format == "jsonl":
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False
    if offset == 0:
        return False
    return (_field_count(line, source.delimiter)
            == _field_count(header.decode(source.encoding, errors="replace"), source.delimiter))


def check_complete(path: Path, source: LandedFileSource, where: str) -> None:
    """Raise :class:`TruncatedFile` when the file ends mid-record (see :func:`cut_record`)."""
    cut = cut_record(path, source)
    if cut is None:
        return
    offset, why = cut
    size = path.stat().st_size
    message = (f"unreadable {source.format} ({where}): truncated at byte {offset} of {size}: {why}; NiFi may "
               "still be writing the file or the transfer broke, so none of its values was read. Land the "
               "complete file again (its bytes differ, so it is taken as a new file)")
    if source.format != "parquet" and _looks_complete(path, source, offset):
        # A cut inside the last cell keeps the field count, so "parses whole" is no proof: say so.
        message += ("; its last line parses whole, as a line cut inside its last cell also does: if the "
                    "export really ends there, end its last line in quarantine (echo >> <file>) and release "
                    "it (python -m plantops.cli release <use case> <file>)")
    raise TruncatedFile(message, offset, size)


def read_landed(path: Path, source: LandedFileSource, use_case_id: str | None = None) -> pd.DataFrame:
    """The file as a frame, its cells as they came: csv cells are text (the number parse and the
    raw text of a rejected value come from the text), jsonl values as JSON has them. A file that
    does not decode names the byte and the ``encoding`` to set on the source (in ``<use_case_id>.yaml``)."""
    import pandas as pd

    # A UTF-8 file from a Windows tool starts with a byte-order mark; without utf-8-sig it would
    # become part of the first column's name.
    encoding = "utf-8-sig" if codecs.lookup(source.encoding).name == "utf-8" else source.encoding
    where = f"source {source.name}" + ("" if source.format == "parquet" else f", encoding {source.encoding}")
    # A cut file is refused before it is parsed: a parser reads a cut last cell (-0.36 of -0.3609)
    # as a value, or a short row as empty cells.
    check_complete(path, source, where)
    try:
        if source.format == "parquet":
            return pd.read_parquet(path)
        if source.format == "csv":
            frame = pd.read_csv(path, sep=source.delimiter, encoding=encoding, dtype=str, keep_default_na=False,
                                na_filter=False, engine="c")
            return frame.rename(columns=lambda c: str(c).strip())
        return _read_jsonl(path, encoding)
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is unreadable as configured
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableFile(f"unreadable {source.format} ({where}): {text}"
                             + _decode_hint(exc, source, use_case_id)) from exc


def _decode_hint(exc: BaseException, source: LandedFileSource, use_case_id: str | None) -> str:
    """What to change when the bytes are not the source's encoding: a PI or Excel export on a
    Windows host is usually latin-1 / cp1252, and the codec's message alone does not say so."""
    error: BaseException | None = exc
    while error is not None and not isinstance(error, UnicodeDecodeError):
        error = error.__cause__ or error.__context__
    if error is None:
        return ""
    yaml = str(get_settings().use_cases_dir / f"{use_case_id}.yaml") if use_case_id else "the use case's YAML"
    suggest = "cp1252" if codecs.lookup(source.encoding).name in ("latin-1", "iso8859-1") else "latin-1"
    other = "latin-1" if suggest == "cp1252" else "cp1252"
    return (f"; the file is not {source.encoding} at byte offset {error.start}: set `encoding: {suggest}` "
            f"(or {other}) on landing source {source.name} in {yaml}, then release the file")


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    """One JSON object per line; numbers parsed by Python (exact), blank lines skipped."""
    import pandas as pd

    records = []
    with path.open(encoding=encoding, newline="") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"line {number}: expected a JSON object, got {type(record).__name__}")
            # A nested value is no measurement: kept as its JSON text, it is rejected as such.
            records.append({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in record.items()})
    # object columns: a null stays None (its raw text is 'null', not a float NaN's 'nan')
    return pd.DataFrame.from_records(records).astype(object).where(lambda f: f.notna(), None)


def record_ignored(use_case: str, landed: LandedFile, reason: str, dag_run_id: str) -> tuple[int, bool]:
    """Note a file that matches no landing source, once per (name, sha256): it stays in the folder,
    and a run that finds the same bytes again adds no ledger row. Returns (ledger id, new)."""
    query = (select(ledger.c.id).where(ledger.c.use_case == use_case, ledger.c.name == landed.name,
                                       ledger.c.sha256 == landed.sha256, ledger.c.status == "ignored")
             .order_by(ledger.c.id))
    with state_engine().connect() as conn:
        seen = conn.execute(query).scalar()
    if seen is not None:
        return int(seen), False
    return _record(use_case, landed, "ignored", {}, reason, dag_run_id, landed.path), True


def already_processed(use_case: str, landed: LandedFile) -> dict | None:
    """The ledger row under which exactly these bytes were processed before, under any name.

    The bytes decide, not the name: NiFi re-sends a file under a new name after a timeout. A file
    released from quarantine since is taken again (the engineer may have fixed the use case instead
    of the file); rows of superseded files and of earlier duplicates do not count.
    """
    query = (select(ledger).where(ledger.c.use_case == use_case, ledger.c.sha256 == landed.sha256)
             .order_by(ledger.c.id.desc()))
    with state_engine().connect() as conn:
        for row in conn.execute(query):
            if row.status == "released":
                return None
            if row.status in ("ingested", "quarantined"):
                return dict(row._mapping)
    return None


def _record(use_case: str, landed: LandedFile, status: str, counts: dict, reason: str,
            dag_run_id: str, stored_at: Path, duplicate_of: str | None = None) -> int:
    rejected_values = counts.get("rejected_values")
    with state_engine().begin() as conn:
        if status == "ingested":
            # A corrected file under the same name replaces the rows of the earlier one.
            conn.execute(
                update(ledger)
                .where(ledger.c.use_case == use_case, ledger.c.name == landed.name, ledger.c.status == "ingested",
                       ledger.c.sha256 != landed.sha256)
                .values(status="superseded", reason=f"superseded by sha256 {landed.sha256[:12]}")
            )
        result = conn.execute(insert(ledger).values({
            "use_case": use_case, "name": landed.name, "size": landed.size, "sha256": landed.sha256,
            "status": status, "rows_in": counts.get("rows_in"), "rows_written": counts.get("rows_written"),
            "rows_rejected": counts.get("rows_rejected"), "reason": reason, "dag_run_id": dag_run_id,
            "stored_at": str(stored_at), "processed_at": datetime.now(timezone.utc).replace(tzinfo=None),
            "values_in": counts.get("values_in"), "values_written": counts.get("values_written"),
            "values_rejected": counts.get("values_rejected"),
            "rejected_values": None if rejected_values is None else json.dumps(rejected_values, sort_keys=True),
            "duplicate_of": duplicate_of,
        }))
        return int(result.inserted_primary_key[0])


def _unique_target(folder: Path, name: str, sha256: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if target.exists():
        target = folder / f"{Path(name).stem}.{sha256[:12]}{Path(name).suffix}"
    return target


def archive(use_case: str, landed: LandedFile, counts: dict, dag_run_id: str, reason: str = "ok") -> Path:
    target = _unique_target(get_settings().archive_root / use_case, landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    _record(use_case, landed, "ingested", counts, reason, dag_run_id, target)
    return target


def skip_duplicate(use_case: str, landed: LandedFile, previous: dict, dag_run_id: str) -> int:
    """The same bytes landed again (under any name): no new rows; the copy is archived so the
    watcher stops firing, and the ledger records it as a duplicate of the file ``previous`` names.
    Returns the copy's own ledger id (the original's is ``previous['id']``)."""
    target = _unique_target(get_settings().archive_root / use_case / "duplicates", landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    reason = (f"same bytes as {previous['name']!r}, {previous['status']} "
              f"(ledger id {previous['id']}, sha256 {landed.sha256[:12]})")
    ledger_id = _record(use_case, landed, "duplicate", {}, reason, dag_run_id, target, duplicate_of=previous["name"])
    log.info("%s: %s; archived the copy at %s (ledger id %d)", landed.name, reason, target, ledger_id)
    return ledger_id


def quarantine(use_case: str, landed: LandedFile, reason: str, counts: dict, dag_run_id: str,
               details: dict | None = None) -> Path:
    """Move the file, untouched, to quarantine and write its reason beside it (with ``details``, e.g.
    ``{"problem": "truncated", "offset": ...}``, for a reader that acts on the kind of problem)."""
    target = _unique_target(get_settings().quarantine_root / use_case, landed.name, landed.sha256)
    shutil.move(str(landed.path), target)
    atomic_write_json(target.with_name(target.name + ".reason.json"), {
        "file": landed.name, "sha256": landed.sha256, "size": landed.size, "reason": reason,
        "counts": counts, "dag_run_id": dag_run_id, "quarantined_at": datetime.now(timezone.utc).isoformat(),
        **(details or {}),
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
        mark_released(reason_file)
    record_release(use_case, landed, "released from quarantine", target)
    return target


def mark_released(reason_file: Path) -> Path:
    """Keep a released item's reason file as ``*.reason.json.released``: off the quarantine list
    (which reads ``*.reason.json``), still on disk."""
    return reason_file.rename(reason_file.with_name(reason_file.name + ".released"))


def record_release(use_case: str, landed: LandedFile, reason: str, stored_at: Path, dag_run_id: str = "manual") -> int:
    """Note that a person put these bytes back in line: the next ingest takes them again
    (see :func:`already_processed`)."""
    return _record(use_case, landed, "released", {}, reason, dag_run_id, stored_at)


def quarantined(use_case: str) -> list[dict]:
    """Files waiting in quarantine, with what :func:`quarantine` wrote beside each (a reason file
    that cannot be read says so instead of hiding the file); an inspection run's rejected images
    are listed under their run's folder (``inspections/<run>/<file>``), with the full message."""
    folder = get_settings().quarantine_root / use_case
    out = []
    for path in sorted(folder.glob("*.reason.json")) + sorted(folder.glob("inspections/*/*.reason.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            data = {"reason": f"unreadable reason file: {exc}"}
        name = str(path.relative_to(folder)).removesuffix(".reason.json")
        out.append({"file": name, "reason": data.get("message") or data.get("reason"),
                    "quarantined_at": data.get("quarantined_at"), "run_id": data.get("dag_run_id"),
                    "counts": data.get("counts")})
    return out


def rows_of(use_case: str) -> list[dict]:
    """Every ledger row of the use case, oldest first; ``rejected_values`` parsed back into a dict."""
    query = select(ledger).where(ledger.c.use_case == use_case).order_by(ledger.c.id)
    with state_engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        if row["rejected_values"] is not None:
            row["rejected_values"] = json.loads(row["rejected_values"])
    return rows
