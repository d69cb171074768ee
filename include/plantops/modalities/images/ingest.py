"""Ingest landed inspection runs: every image and every manifest row judged, the good ones to bronze.

A run lands as ``<landing>/<folder>/<run_id>/*.png`` plus ``<landing>/<folder>/<run_id>.manifest.csv``
(:mod:`plantops.sources.elpv_replay` describes the columns). The manifest comes last under NiFi's
rule, so a run folder without a complete manifest is left alone: its images are never read.

Each item of a run is judged: a manifest row with its image, a row whose image never came
(``missing_image``) and an image no row names (``missing_row``). An image is decoded fully with
Pillow (``load()``) and checked in this order, the first failing check being its reason:
``undecodable`` (no PNG, or Pillow cannot decode it), ``truncated`` (the PNG ends before its IEND
chunk, or its pixel data is cut), ``wrong_size``, ``wrong_mode``, ``saturated``, ``blank`` (the
thresholds are :class:`ImageChecks`); a second row naming an already listed file or cell is a
``duplicate_row``. The rows left go through the two GX suites of
:mod:`plantops.modalities.images.validation`; a row an expectation flags is rejected as
``invalid_row`` (manifest suite) or ``invalid_image`` (image suite), naming the expectation, and
the failures are in the result. Last, an image whose pixels (SHA-256 of the decoded pixel bytes)
are already in bronze from another run, or earlier in this run, is a ``duplicate`` of that cell.

Accepted images are copied byte-for-byte to ``bronze/<uc>/images/day=D/<cell_id>-<sha12>.png``
and listed in ``bronze/<uc>/inspections/day=D/<run_id>.parquet`` (atomic; the columns are
VISION's), ``D`` being the run's day: the UTC date most of its rows were captured on (a row
captured on another day fails the manifest suite). The landed originals move to
``archive/<uc>/inspections/<run_id>/``; each rejected image to
``quarantine/<uc>/inspections/<run_id>/`` beside ``<file>.reason.json`` (a row without its image
leaves only the reason file, holding the row). Nothing is deleted. The manifest is archived last,
with its ledger record (:mod:`plantops.sources.landing`), which counts every item:
``rows_in`` = manifest rows + images without a row = ``rows_written`` (accepted) +
``rows_rejected``, with ``rejected_values`` = ``{"images": {reason: count}}``.

Reruns: the same manifest bytes again (NiFi re-sent the run) are a ledger ``duplicate``: the copy
and its images are archived under ``archive/<uc>/duplicates/``, bronze is not touched. A run
interrupted before its manifest was archived is judged again from wherever its files were moved
to, and writes the same bronze files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantops.settings import get_settings
from plantops.modalities.images.validation import ImageChecks

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from plantops.stages.validation import ValidationOutcome

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REASONS = ("undecodable", "truncated", "wrong_size", "wrong_mode", "saturated", "blank", "missing_image",
           "missing_row", "duplicate_row", "invalid_row", "invalid_image", "duplicate")
BRONZE_COLUMNS = ("run_id", "cell_id", "module_id", "module_type", "line", "camera_id", "captured_at", "image",
                  "sha256", "width", "height")

__all__ = ["ImageChecks", "ingest_inspections", "judge_image", "complete_runs", "release_item", "release_run"]


class BadImage(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


@dataclass
class Image:
    """A decoded image that passed the decode checks."""

    pixels: np.ndarray
    width: int
    height: int
    mode: str
    sha256: str  # of the decoded pixel bytes
    mean: float
    std: float
    saturated_share: float


def judge_image(data: bytes, checks: ImageChecks | None = None) -> Image:
    """Decode ``data`` fully and check it; raises :class:`BadImage` with the reason code."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageFile, UnidentifiedImageError

    checks = checks or ImageChecks()
    if not data.startswith(PNG_SIGNATURE):
        raise BadImage("undecodable", f"not a PNG (starts with {data[:8]!r})")
    # The PNG's last chunk is IEND (length 0, type, CRC): its absence is a cut file even when
    # Pillow could fill the pixels from what arrived.
    if len(data) < 12 + len(PNG_SIGNATURE) or data[-8:-4] != b"IEND":
        raise BadImage("truncated", f"the PNG ends after {len(data)} bytes without its IEND chunk")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global some library may have set: it would pad a cut image silently
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to judge images with it")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.load()
            width, height, mode = image.width, image.height, image.mode
            pixels = np.asarray(image)
    except UnidentifiedImageError as exc:
        raise BadImage("undecodable", f"Pillow cannot identify it: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow says "image file is truncated" when the compressed pixel data ends early.
        code = "truncated" if "truncat" in str(exc).lower() else "undecodable"
        raise BadImage(code, f"{type(exc).__name__}: {exc}") from None
    if (width, height) != (checks.width, checks.height):
        raise BadImage("wrong_size", f"{width}x{height}, expected {checks.width}x{checks.height}")
    if mode != checks.mode:
        raise BadImage("wrong_mode", f"mode {mode}, expected {checks.mode}")
    values = pixels.astype(np.float64)
    share = float((pixels >= checks.saturated_at).mean())
    std = float(values.std())
    if share >= checks.max_saturated_share:
        raise BadImage("saturated", f"{share:.1%} of the pixels >= {checks.saturated_at} "
                                    f"(at most {checks.max_saturated_share:.0%})")
    if std < checks.min_std:
        raise BadImage("blank", f"near-constant frame: std {std:.2f} < {checks.min_std} (mean {values.mean():.1f})")
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    return Image(pixels, width, height, mode, digest, float(values.mean()), std, share)


@dataclass
class Item:
    """One thing a run is accountable for: a manifest row (with or without its image) or an
    image without a row."""

    name: str  # the image's file name in the run folder
    row: dict | None  # the manifest row, as text; None for an image no row names
    position: int | None  # row number in the manifest (0-based)
    path: Path | None = None  # where the image is now; None when it never landed
    data: bytes | None = None
    image: Image | None = None
    reason: str | None = None  # a code of REASONS; None while accepted
    detail: str = ""
    file_sha256: str | None = None


def manifests(folder: str) -> list[Path]:
    from plantops.sources import landing
    from plantops.sources.elpv_replay import MANIFEST_SUFFIX

    root = landing.landing_dir(folder)
    if not root.exists():
        return []
    found = [p for p in root.glob(f"*{MANIFEST_SUFFIX}") if p.is_file() and landing.is_complete_name(p.name)]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def complete_runs(folder: str) -> list[str]:
    """The inspection runs whose manifest has landed completely, oldest first."""
    from plantops.sources.elpv_replay import MANIFEST_SUFFIX

    return [p.name.removesuffix(MANIFEST_SUFFIX) for p in manifests(folder)]


def incomplete_runs(folder: str) -> list[str]:
    """Run folders in the landing folder whose manifest has not (completely) arrived."""
    from plantops.sources import landing

    root = landing.landing_dir(folder)
    done = set(complete_runs(folder))
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and landing.is_complete_name(p.name)
                  and p.name not in done)


def ingest_inspections(use_case_id: str, folder: str, run_id: str, checks: ImageChecks | None = None) -> dict:
    """Every complete inspection run in the landing folder ``folder``: judged, bronze, quarantine,
    archive, ledger. ``run_id`` is the orchestrator's run id (recorded in the ledger); each
    inspection run's id is its manifest's name. Returns ``{"runs": [...], "incomplete": [...]}``,
    one entry per run with its counts, rejected items by reason and GX's failures."""
    from plantops.sources import landing

    checks = checks or ImageChecks()
    results = []
    for manifest in manifests(folder):
        landed = landing.LandedFile(manifest, manifest.stat().st_size, landing.sha256_of(manifest))
        previous = landing.already_processed(use_case_id, landed)
        if previous:
            results.append(_duplicate_run(use_case_id, folder, landed, previous, run_id))
            continue
        results.append(_ingest_run(use_case_id, folder, landed, run_id, checks))
    waiting = incomplete_runs(folder)
    if waiting:
        log.info("%s: inspection runs still landing (no complete manifest yet), not read: %s", use_case_id, waiting)
    return {"runs": results, "incomplete": waiting}


def _run_of(landed: Any) -> str:
    from plantops.sources.elpv_replay import MANIFEST_SUFFIX

    return landed.name.removesuffix(MANIFEST_SUFFIX)


def _duplicate_run(use_case_id: str, folder: str, landed: Any, previous: dict, run_id: str) -> dict:
    """The same manifest bytes again: the copy and its images are archived, bronze is untouched."""
    from plantops.sources import landing

    inspection = _run_of(landed)
    images = _landed_images(folder, inspection)
    target = get_settings().archive_root / use_case_id / "duplicates" / inspection
    for path in images:
        _move(path, target, path.name)
    _rmdir_if_empty(landing.landing_dir(folder) / inspection)
    ledger_id = landing.skip_duplicate(use_case_id, landed, previous, run_id)
    return {"run_id": inspection, "manifest": landed.name, "status": "duplicate", "duplicate_of": previous["name"],
            "ledger_id": ledger_id, "duplicate_of_ledger_id": previous["id"], "images_archived": len(images)}


def _landed_images(folder: str, inspection: str) -> list[Path]:
    from plantops.sources import landing

    root = landing.landing_dir(folder) / inspection
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and landing.is_complete_name(p.name))


def _places(use_case_id: str, inspection: str) -> dict[str, Path]:
    settings = get_settings()
    return {"archive": settings.archive_root / use_case_id / "inspections" / inspection,
            "quarantine": settings.quarantine_root / use_case_id / "inspections" / inspection}


def _read_manifest(path: Path) -> pd.DataFrame:
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    return frame.rename(columns=lambda c: str(c).strip())


def _parse_time(text: str) -> datetime | None:
    """A zoned ISO 8601 time as UTC; None for anything else (a naive time is not guessed)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return None if value.tzinfo is None else value.astimezone(timezone.utc)


def _ingest_run(use_case_id: str, folder: str, landed: Any, run_id: str, checks: ImageChecks) -> dict:
    from plantops.sources import landing
    from plantops.sources.elpv_replay import LABEL_COLUMN, MANIFEST_COLUMNS

    inspection = _run_of(landed)
    places = _places(use_case_id, inspection)
    try:
        manifest = _read_manifest(landed.path)
    except Exception as exc:  # noqa: BLE001 - whatever pandas says, the manifest is unreadable
        return _quarantine_run(use_case_id, folder, landed, run_id, f"unreadable manifest csv: {exc}")
    columns = list(manifest.columns)
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    unexpected = [c for c in columns if c not in (*MANIFEST_COLUMNS, LABEL_COLUMN)]
    if missing or unexpected:
        return _quarantine_run(use_case_id, folder, landed, run_id,
                               f"manifest columns: missing {missing}, unexpected {unexpected}; expected "
                               f"{', '.join(MANIFEST_COLUMNS)} (optional: {LABEL_COLUMN})")
    labels = LABEL_COLUMN in columns
    items = _items(folder, inspection, manifest, places)
    for item in items:
        _judge(item, checks)
    _mark_duplicate_rows(items)
    run_day = _run_day(items)
    outcomes = _validate(use_case_id, items, labels, run_day, checks)
    _mark_duplicates(use_case_id, inspection, [i for i in items if i.reason is None])
    accepted = [i for i in items if i.reason is None]
    bronze = _write_bronze(use_case_id, inspection, run_day, accepted) if accepted else None
    if labels and accepted:
        _store_manifest_labels(accepted)
    for item in items:
        _file_away(use_case_id, inspection, item, places, run_id)
    _rmdir_if_empty(landing.landing_dir(folder) / inspection)
    rejected = Counter(i.reason for i in items if i.reason is not None)
    counts = {"rows_in": len(items), "rows_written": len(accepted), "rows_rejected": sum(rejected.values()),
              "rejected_values": {"images": dict(sorted(rejected.items()))}}
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
    summary = ", ".join(f"{n} {code}" for code, n in sorted(rejected.items()))
    reason = f"{len(accepted)} of {len(items)} accepted" + (f"; rejected: {summary}" if summary else "")
    failures = [f"{o.suite}: {f}" for o in outcomes.values() for f in o.failures]
    landing.archive(use_case_id, landed, counts, run_id, reason)
    rows = sum(1 for i in items if i.row is not None)
    log.log(logging.WARNING if rejected else logging.INFO, "%s: inspection run %s: %s", use_case_id, inspection, reason)
    return {
        "run_id": inspection, "manifest": landed.name, "status": "ingested", "day": None if run_day is None else
        run_day.isoformat(), "rows": rows, "orphan_images": len(items) - rows, "items": len(items),
        "accepted": len(accepted), "rejected": counts["rows_rejected"],
        "rejected_by_reason": dict(sorted(rejected.items())),
        "rejected_items": {i.name: {"reason": i.reason, "detail": i.detail} for i in items if i.reason is not None},
        "bronze": None if bronze is None else str(bronze), "validation": _validation_summary(outcomes),
        "validation_failures": failures,
    }


def _items(folder: str, inspection: str, manifest: pd.DataFrame, places: dict[str, Path]) -> list[Item]:
    """A row per manifest row, then the images no row names; each image looked up in the landing
    folder, else where an interrupted earlier attempt of this run moved it."""
    images = {p.name: p for p in _landed_images(folder, inspection)}
    items: list[Item] = []
    named: set[str] = set()
    for position, row in enumerate(manifest.to_dict("records")):
        name = str(row["file_name"]).strip()
        item = Item(name=name or f"(row {position + 2})", row=row, position=position)
        item.path = images.get(name) if name else None
        if item.path is None and name:
            earlier = [p / name for p in places.values() if (p / name).is_file()]
            item.path = earlier[0] if earlier else None
        named.add(name)
        items.append(item)
    items += [Item(name=name, row=None, position=None, path=path) for name, path in images.items() if name not in named]
    return items


def _judge(item: Item, checks: ImageChecks) -> None:
    if item.row is None:
        item.reason, item.detail = "missing_row", "no row of the manifest names this image"
        return
    if item.path is None:
        item.reason, item.detail = "missing_image", (f"manifest row {item.position + 2} names {item.name!r}, "
                                                     "which did not land")
        return
    item.data = item.path.read_bytes()
    item.file_sha256 = hashlib.sha256(item.data).hexdigest()
    try:
        item.image = judge_image(item.data, checks)
    except BadImage as exc:
        item.reason, item.detail = exc.code, exc.detail


def _run_day(items: list[Item]) -> date | None:
    """The UTC day most rows were captured on (ties: the earliest)."""
    days = Counter(t.date() for i in items if i.row is not None
                   and (t := _parse_time(str(i.row.get("captured_at", "")))) is not None)
    if not days:
        return None
    return sorted(days.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _mark_duplicate_rows(items: list[Item]) -> None:
    """A row naming a file or a cell an earlier row of the manifest named: the later one goes."""
    seen: dict[str, dict[str, int]] = {"file": {}, "cell": {}}
    for item in items:
        if item.row is None:
            continue
        keys = {"file": item.name, "cell": str(item.row.get("cell_id", "")).strip()}
        for what, key in keys.items():
            if not key:
                continue
            if key in seen[what] and item.reason is None:
                item.reason = "duplicate_row"
                item.detail = f"{what} {key!r} already listed in row {seen[what][key] + 2}"
            seen[what].setdefault(key, item.position)


def _validate(use_case_id: str, items: list[Item], labels: bool, run_day: date | None,
              checks: ImageChecks) -> dict[str, ValidationOutcome]:
    """The GX suites over the rows still accepted; a row an expectation flags is rejected, naming it."""
    import pandas as pd

    from plantops.sources.elpv_replay import LABEL_COLUMN, MANIFEST_COLUMNS
    from plantops.modalities.images import validation as iv

    candidates = [i for i in items if i.reason is None]
    if not candidates:
        return {}
    if run_day is None:
        for item in candidates:
            item.reason, item.detail = "invalid_row", "no row of the run has a valid captured_at (zoned ISO 8601)"
        return {}
    rows = pd.DataFrame([{c: (str(i.row.get(c, "")).strip() or None) for c in MANIFEST_COLUMNS} for i in candidates],
                        columns=list(MANIFEST_COLUMNS))
    rows["captured_at"] = pd.to_datetime([_parse_time(str(i.row.get("captured_at", ""))) for i in candidates],
                                         utc=True)
    props = pd.DataFrame({
        "width": [i.image.width for i in candidates], "height": [i.image.height for i in candidates],
        "mode": [i.image.mode for i in candidates], "mean": [i.image.mean for i in candidates],
        "std": [i.image.std for i in candidates],
    })
    if labels:
        props["defect_probability"] = pd.to_numeric(pd.Series([str(i.row.get(LABEL_COLUMN, "")).strip()
                                                               for i in candidates]), errors="coerce")
    outcomes = {"manifest": iv.validate_manifest(use_case_id, rows, run_day),
                "images": iv.validate_images(use_case_id, props, checks)}
    for name, code in (("manifest", "invalid_row"), ("images", "invalid_image")):
        outcome = outcomes[name]
        if not outcome.success:
            log.warning("%s: GX suite %s failed: %s", use_case_id, outcome.suite, outcome.reason())
        for position in sorted(outcome.bad_rows):
            item = candidates[position]
            if item.reason is None:
                item.reason, item.detail = code, f"{outcome.suite}: {outcome.row_reasons.get(position)}"
        if outcome.structural:
            # A failure GX cannot pin on rows (the table as a whole): no row of the run is accepted.
            for item in candidates:
                if item.reason is None:
                    item.reason, item.detail = code, f"{outcome.suite}: {outcome.reason()}"
    return outcomes


def _validation_summary(outcomes: dict[str, ValidationOutcome]) -> dict:
    return {name: {"suite": o.suite, "success": o.success, "evaluated": o.evaluated, "failures": list(o.failures)}
            for name, o in outcomes.items()}


def _bronze_shas(use_case_id: str, inspection: str) -> dict[str, tuple[str, str]]:
    """sha256 -> (cell_id, run_id) of every image in bronze from other runs."""
    import pandas as pd

    found: dict[str, tuple[str, str]] = {}
    root = get_settings().bronze_root / use_case_id / "inspections"
    for path in sorted(root.glob("day=*/*.parquet")):
        if path.stem == inspection:
            continue  # this run's own earlier version: rewritten below
        frame = pd.read_parquet(path, columns=["run_id", "cell_id", "sha256"])
        for run, cell, sha in frame.itertuples(index=False):
            found.setdefault(sha, (cell, run))
    return found


def _mark_duplicates(use_case_id: str, inspection: str, candidates: list[Item]) -> None:
    known = _bronze_shas(use_case_id, inspection)
    for item in candidates:
        if item.reason is not None:
            continue
        sha = item.image.sha256
        if sha in known:
            cell, run = known[sha]
            item.reason, item.detail = "duplicate", f"duplicate of {cell} in {run}"  # the message is this
        else:
            known[sha] = (str(item.row["cell_id"]).strip(), inspection)


def _write_bronze(use_case_id: str, inspection: str, day: date, accepted: list[Item]) -> Path:
    import pandas as pd

    from plantops.storage import atomic_write_bytes, atomic_write_parquet

    base = get_settings().bronze_root / use_case_id
    records = []
    for item in accepted:
        row = {k: str(v).strip() for k, v in item.row.items()}
        relative = Path("images") / f"day={day.isoformat()}" / f"{row['cell_id']}-{item.image.sha256[:12]}.png"
        target = base / relative
        if not (target.is_file() and target.read_bytes() == item.data):
            atomic_write_bytes(target, item.data)  # byte-for-byte as landed
        records.append({
            "run_id": inspection, "cell_id": row["cell_id"], "module_id": row["module_id"],
            "module_type": row["module_type"], "line": row["line"], "camera_id": row["camera_id"],
            "captured_at": _parse_time(row["captured_at"]), "image": relative.as_posix(),
            "sha256": item.image.sha256, "width": item.image.width, "height": item.image.height,
        })
    frame = pd.DataFrame.from_records(records, columns=list(BRONZE_COLUMNS))
    frame["captured_at"] = pd.to_datetime(frame["captured_at"], utc=True).astype("datetime64[us, UTC]")
    frame = frame.astype({"width": "int32", "height": "int32"})
    path = base / "inspections" / f"day={day.isoformat()}" / f"{inspection}.parquet"
    atomic_write_parquet(frame, path)
    return path


def _store_manifest_labels(accepted: list[Item]) -> int:
    """Labels that came with the run (a manifest with ``defect_probability``) go to the
    historian's inspection labels of each row's line, given at capture time by ``manifest``."""
    from plantops.sources import inspections

    by_line: dict[str, list[dict]] = {}
    for item in accepted:
        row = {k: str(v).strip() for k, v in item.row.items()}
        if row.get("defect_probability", "") not in ("", "nan"):
            by_line.setdefault(row["line"], []).append({
                "cell_id": row["cell_id"], "defect_probability": float(row["defect_probability"]),
                "inspector": "manifest", "labelled_at": _parse_time(row["captured_at"])})
    return sum(inspections.write_labels(line, rows) for line, rows in by_line.items())


def _file_away(use_case_id: str, inspection: str, item: Item, places: dict[str, Path], run_id: str) -> None:
    """Move the landed image where it belongs; a rejected item gets its reason file."""
    from plantops.storage import atomic_write_json

    where = places["archive"] if item.reason is None else places["quarantine"]
    stored = _move(item.path, where, item.name) if item.path is not None else None
    if item.reason is None:
        return
    reason_file = (stored or where / item.name).with_name((stored or where / item.name).name + ".reason.json")
    atomic_write_json(reason_file, {
        "file": item.name, "run_id": inspection, "reason": item.reason, "detail": item.detail,
        "message": item.detail if item.detail.startswith(item.reason) else f"{item.reason}: {item.detail}",
        "row": item.row, "manifest_row": None if item.position is None else item.position + 2,
        "file_sha256": item.file_sha256,
        "pixel_sha256": None if item.image is None else item.image.sha256,
        "stored_at": None if stored is None else str(stored), "dag_run_id": run_id,
        "quarantined_at": datetime.now(timezone.utc).isoformat(),
    })


def _move(path: Path, folder: Path, name: str) -> Path:
    """Move ``path`` into ``folder`` as ``name``; another file already there keeps its name and
    this one gets its content hash added (nothing is overwritten)."""
    target = folder / name
    if path.resolve() == target.resolve():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        target = folder / f"{Path(name).stem}.{digest}{Path(name).suffix}"
    shutil.move(str(path), target)
    return target


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only when empty: a file NiFi is still writing stays, with its folder
    except OSError:
        pass


def _quarantine_run(use_case_id: str, folder: str, landed: Any, run_id: str, reason: str) -> dict:
    """A manifest that cannot be read as one: it and its run's images go to quarantine, untouched."""
    from plantops.sources import landing
    from plantops.storage import atomic_write_json

    inspection = _run_of(landed)
    where = _places(use_case_id, inspection)["quarantine"]
    images = _landed_images(folder, inspection)
    for path in images:
        stored = _move(path, where, path.name)
        atomic_write_json(stored.with_name(stored.name + ".reason.json"), {
            "file": path.name, "run_id": inspection, "reason": "batch_quarantined",
            "detail": f"its manifest {landed.name} was quarantined: {reason}", "dag_run_id": run_id,
            "quarantined_at": datetime.now(timezone.utc).isoformat(),
        })
    _rmdir_if_empty(landing.landing_dir(folder) / inspection)
    counts = {"rows_in": len(images), "rows_written": 0, "rows_rejected": len(images),
              "rejected_values": {"images": {"batch_quarantined": len(images)}} if images else {}}
    landing.quarantine(use_case_id, landed, reason, counts, run_id)
    return {"run_id": inspection, "manifest": landed.name, "status": "quarantined", "reason": reason,
            "items": len(images), "accepted": 0, "rejected": len(images)}


def quarantined_items(use_case_id: str) -> list[dict]:
    """Every rejected inspection item waiting in quarantine, with its reason file's content."""
    root = get_settings().quarantine_root / use_case_id / "inspections"
    out = []
    for path in sorted(root.glob("*/*.reason.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            out.append({"file": path.name.removesuffix(".reason.json"), "reason": f"unreadable reason file: {exc}"})
    return out


def release_item(use_case_id: str, folder: str, item: str, image: Path | None = None,
                 run_id: str = "manual") -> Path:
    """Land a rejected inspection item again, as a run of its own: the operator's way back in.

    ``item`` is the file as the quarantine list names it (``inspections/<run>/<file>``, or
    ``<run>/<file>``). The image is ``image`` (a fixed or re-captured file) or else the quarantined
    one (when a check was wrong about it). It lands as NiFi lands a run, under ``<run>-r<sha8>``
    (``sha8``: of the image's bytes): the image, then a one-row manifest holding the item's
    original manifest row, for the next ingest to judge like any other. The reason file is kept,
    renamed ``*.reason.json.released``; a bad original stays in quarantine beside it (nothing is deleted).
    The ledger records the release. Refused, with what to do instead: an image no manifest row
    named (``missing_row``: land it in a run with its row), a ``duplicate`` (its pixels are in
    bronze already), an item of a quarantined run (release the run's fixed manifest), and a
    ``missing_image`` without ``image``."""
    from plantops.sources import elpv_replay, landing

    parts = Path(item).parts
    parts = parts[1:] if parts and parts[0] == "inspections" else parts
    if len(parts) != 2:
        raise ValueError(f"{item!r}: name a rejected image as the quarantine list does, inspections/<run>/<file>")
    inspection, name = parts
    where = _places(use_case_id, inspection)["quarantine"]
    reason_file = where / f"{name}.reason.json"
    if not reason_file.is_file():
        raise FileNotFoundError(f"no rejected item {name!r} of run {inspection!r} for {use_case_id} in {where}")
    reason = json.loads(reason_file.read_text())
    code, row = reason.get("reason"), reason.get("row")
    if code == "batch_quarantined":
        raise ValueError(f"{name}: its run's manifest was quarantined ({reason.get('detail')}); release the "
                         f"fixed manifest {inspection}{elpv_replay.MANIFEST_SUFFIX} and its images come back with it")
    if code == "duplicate":
        raise ValueError(f"{name}: {reason.get('message')}: its pixels are in bronze already, nothing to release")
    if not row:
        raise ValueError(f"{name}: {code}: no manifest row names this image; "
                         "land it again in a run whose manifest lists it")
    source = Path(image) if image is not None else where / name
    if not source.is_file():
        raise FileNotFoundError(f"{name}: {code}: no image to release"
                                f"{'' if image is None else f' ({image} is not a file)'}; pass the fixed image")
    data = source.read_bytes()
    file_name = str(row["file_name"]).strip()
    new_run = f"{inspection}-r{hashlib.sha256(data).hexdigest()[:8]}"
    root = landing.landing_dir(folder)
    manifest = root / f"{new_run}{elpv_replay.MANIFEST_SUFFIX}"
    if manifest.exists() or (root / new_run).exists():
        raise FileExistsError(f"{manifest} is already in the landing folder: released before and not yet ingested")
    if image is None:
        _move(source, root / new_run, file_name)
    else:
        elpv_replay.put_file(root / new_run, file_name, data)
    labels = elpv_replay.LABEL_COLUMN in row and str(row[elpv_replay.LABEL_COLUMN]).strip() != ""
    elpv_replay.put_file(root, manifest.name, elpv_replay.manifest_bytes([row], labels=labels))
    landing.mark_released(reason_file)
    released = landing.LandedFile(manifest, manifest.stat().st_size, landing.sha256_of(manifest))
    landing.record_release(use_case_id, released, f"released {inspection}/{name} ({code}) as run {new_run}",
                           manifest, run_id)
    log.info("%s: released %s/%s (%s) as inspection run %s", use_case_id, inspection, name, code, new_run)
    return manifest


def release_run(use_case_id: str, folder: str, manifest_name: str) -> Path:
    """A quarantined run's fixed manifest back to the landing folder, its images first (they were
    quarantined with it, untouched), the manifest last, as NiFi would land them."""
    from plantops.sources import elpv_replay, landing

    inspection = manifest_name.removesuffix(elpv_replay.MANIFEST_SUFFIX)
    if inspection == manifest_name:
        raise ValueError(f"{manifest_name!r}: not an inspection manifest (*{elpv_replay.MANIFEST_SUFFIX})")
    if not (get_settings().quarantine_root / use_case_id / manifest_name).is_file():
        raise FileNotFoundError(f"no quarantined manifest {manifest_name!r} for {use_case_id}")
    if (landing.landing_dir(folder) / manifest_name).exists():
        raise FileExistsError(f"{manifest_name} is already in the landing folder {landing.landing_dir(folder)}")
    where = _places(use_case_id, inspection)["quarantine"]
    for reason_file in sorted(where.glob("*.reason.json")):
        if json.loads(reason_file.read_text()).get("reason") != "batch_quarantined":
            continue
        path = where / reason_file.name.removesuffix(".reason.json")
        if path.is_file():
            _move(path, landing.landing_dir(folder) / inspection, path.name)
        landing.mark_released(reason_file)
    return landing.release(use_case_id, manifest_name, folder)


# -- inspectors' labels ---------------------------------------------------------------------------


def ingest_labels(use_case_id: str, folder: str, line: str, run_id: str) -> list[dict]:
    """Every completely landed ``*.labels.csv`` (inspectors' labels, often a day after the run:
    columns ``cell_id``, ``defect_probability``, ``inspector``, ``labelled_at``) into the
    historian's ``inspection_labels`` of ``line``; a labels file is taken whole or quarantined whole
    (a wrong column or a value outside 0, 1/3, 2/3, 1 names the row). The same bytes again are a
    ledger duplicate; a corrected label replaces the earlier one."""
    import pandas as pd

    from plantops.sources import inspections, landing
    from plantops.sources.elpv_replay import LABEL_FILE_COLUMNS, LABELS_SUFFIX

    root = landing.landing_dir(folder)
    files = sorted(p for p in root.glob(f"*{LABELS_SUFFIX}") if p.is_file() and landing.is_complete_name(p.name)) \
        if root.exists() else []
    results = []
    for path in files:
        landed = landing.LandedFile(path, path.stat().st_size, landing.sha256_of(path))
        previous = landing.already_processed(use_case_id, landed)
        if previous:
            landing.skip_duplicate(use_case_id, landed, previous, run_id)
            results.append({"file": path.name, "status": "duplicate", "labels": 0})
            continue
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            missing = [c for c in LABEL_FILE_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"labels columns: missing {missing}; expected {', '.join(LABEL_FILE_COLUMNS)}")
            rows = []
            for number, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
                at = _parse_time(row["labelled_at"])
                if at is None or not row["cell_id"] or not row["inspector"]:
                    raise ValueError(f"line {number}: cell_id, inspector and an ISO labelled_at are required")
                rows.append({**row, "labelled_at": at})
            written = inspections.write_labels(line, rows)
        except ValueError as exc:
            landing.quarantine(use_case_id, landed, str(exc), {"rows_in": 0}, run_id)
            results.append({"file": path.name, "status": "quarantined", "reason": str(exc), "labels": 0})
            continue
        landing.archive(use_case_id, landed, {"rows_in": len(rows), "rows_written": written, "rows_rejected": 0},
                        run_id, f"{written} labels")
        results.append({"file": path.name, "status": "ingested", "labels": written})
    return results
