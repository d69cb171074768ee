"""Land one EL inspection run of solar cells as NiFi would: a batch of PNG images and its manifest.

An inspection run is a batch: ``<landing>/<folder>/<run_id>/<file>.png``, one image per cell, and
``<landing>/<folder>/<run_id>.manifest.csv`` with one row per image: ``file_name`` (the image's
name in the run's folder), ``cell_id``, ``module_id``, ``module_type`` (mono|poly), ``line``,
``camera_id``, ``captured_at`` (ISO 8601, UTC) and, for a batch whose cells were labelled by
inspectors, ``defect_probability``. Every file is written under NiFi's rule (PutFile writes a
dot-prefixed name and renames it when complete) and the manifest is written last: its arrival
completes the batch, and an image without a complete manifest is never read
(:mod:`plantops.modalities.images.ingest`).

Images are the real elpv cells (:mod:`plantops.sources.elpv`), optionally under another camera
exposure (``gain``/``offset``: a changed camera or lighting), re-encoded as 8-bit greyscale PNG.

Module ids: the elpv data carries none (its 2,624 cells come from 44 modules, but which cell
belongs to which module is not published). The replay makes a synthetic, deterministic one:
the cells of a run, in the order given, are grouped 60 to a module (a 6x10 module), named
``<run_id>-M<nn>``. It only groups cells for display and must not be used for a split.

Faults, one option per bad class, for tests and the demo (each is injected on its own cell, in
the order of :data:`FAULTS`, taken from the end of the run so the first cells stay good):
``undecodable`` (bytes that are no image), ``truncated`` (a PNG cut short), ``wrong_size``
(299x300), ``wrong_mode`` (RGB), ``blank`` (a near-constant dark frame: no EL excitation),
``saturated`` (an overexposed frame), ``missing_image`` (a manifest row whose image never lands),
``missing_row`` (an image with no manifest row), ``duplicate`` (the bytes of the run's first image
again, under a new file name and cell id).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.csv"
MANIFEST_COLUMNS = ("file_name", "cell_id", "module_id", "module_type", "line", "camera_id", "captured_at")
LABEL_COLUMN = "defect_probability"  # optional: present when the batch's cells were labelled
LABELS_SUFFIX = ".labels.csv"  # an inspectors' labels file, landed later than its run
LABEL_FILE_COLUMNS = ("cell_id", "defect_probability", "inspector", "labelled_at")
CELLS_PER_MODULE = 60  # synthetic module ids (see the module docstring)
SECONDS_PER_CELL = 2  # the line's camera takes one cell every 2 s
FAULTS = ("undecodable", "truncated", "wrong_size", "wrong_mode", "blank", "saturated",
          "missing_image", "missing_row", "duplicate")


@dataclass(frozen=True)
class Landed:
    run_id: str
    manifest: Path
    folder: Path  # the run's image folder
    rows: int  # manifest rows
    images: int  # image files landed
    faults: dict[str, str]  # fault -> the file name it was injected into


def png_bytes(pixels: np.ndarray) -> bytes:
    """An array (H x W uint8 greyscale, or H x W x 3 RGB) as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def put_file(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as NiFi's PutFile does: under ``.<name>``, renamed to ``name`` when complete."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    return folder / name


def manifest_bytes(rows: list[dict], labels: bool = False) -> bytes:
    columns = list(MANIFEST_COLUMNS) + ([LABEL_COLUMN] if labels else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _faulty(fault: str, pixels: np.ndarray, good: bytes) -> bytes:
    import numpy as np

    if fault == "undecodable":
        return b"this is no image: the camera PC wrote its error log\n" * 20
    if fault == "truncated":
        return good[: len(good) // 2]
    if fault == "wrong_size":
        return png_bytes(np.ascontiguousarray(pixels[:, :299]))  # 299 wide, 300 high
    if fault == "wrong_mode":
        return png_bytes(np.stack([pixels] * 3, axis=-1))
    if fault == "blank":
        # No EL excitation: the sensor's dark level with +-1 of noise.
        noise = np.random.default_rng(12).integers(0, 2, size=pixels.shape)
        return png_bytes((8 + noise).astype(np.uint8))
    if fault == "saturated":
        from plantops.sources import elpv

        return png_bytes(elpv.exposure(pixels, 6.0, 200.0))
    raise ValueError(f"unknown image fault {fault!r}; expected one of {FAULTS}")


def land_run(folder: str, run_id: str, cells: Iterable[str] | None = None, *, line: str = "L1",
             camera_id: str = "EL-CAM-1", start: datetime = datetime(2026, 4, 1, 6, 0, tzinfo=timezone.utc),
             gain: float = 1.0, offset: float = 0.0, faults: Iterable[str] = (), labels: bool = False,
             write_manifest: bool = True) -> Landed:
    """Land one inspection run into the landing folder ``folder`` (under ``$PLANTOPS_HOME/landing/``):
    the images, then the manifest. ``cells`` are elpv cell ids (default: all 2,624 in the package's order);
    ``faults`` names classes of :data:`FAULTS` to inject, one cell each; ``write_manifest=False``
    leaves the batch incomplete, as while NiFi is still landing it."""
    from plantops.sources import elpv
    from plantops.sources.landing import landing_dir

    landing_folder = landing_dir(folder)
    table = elpv.labels().set_index("cell_id")
    chosen = list(table.index) if cells is None else list(cells)
    unknown = [c for c in chosen if c not in table.index]
    if unknown:
        raise ValueError(f"unknown elpv cell ids {unknown[:5]} (expected cellNNNN of the package's labels.csv)")
    faults = list(dict.fromkeys(faults))
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise ValueError(f"unknown faults {bad}; expected some of {FAULTS}")
    image_faults = [f for f in faults if f not in ("missing_row", "duplicate")]
    if len(image_faults) >= len(chosen):
        raise ValueError(f"{len(chosen)} cells cannot carry {len(image_faults)} image faults and stay a batch")
    run_folder = landing_folder / run_id
    start = start.astimezone(timezone.utc)
    rows: list[dict] = []
    blobs: list[tuple[str, bytes]] = []
    for k, cell_id in enumerate(chosen):
        cell = table.loc[cell_id]
        pixels = elpv.read(cell["file"])
        if (gain, offset) != (1.0, 0.0):
            pixels = elpv.exposure(pixels, gain, offset)
        rows.append({
            "file_name": f"{cell_id}.png", "cell_id": cell_id,
            "module_id": f"{run_id}-M{k // CELLS_PER_MODULE + 1:02d}",
            "module_type": cell["module_type"], "line": line, "camera_id": camera_id,
            "captured_at": (start + timedelta(seconds=SECONDS_PER_CELL * k)).isoformat().replace("+00:00", "Z"),
            LABEL_COLUMN: f"{float(cell['defect_probability']):.7g}",
        })
        blobs.append((f"{cell_id}.png", png_bytes(pixels)))
    injected: dict[str, str] = {}
    # Image faults replace the last cells' images, one each; the manifest rows stay as they were.
    for position, fault in zip(range(len(blobs) - 1, -1, -1), [f for f in image_faults if f != "missing_image"]):
        name, good = blobs[position]
        pixels = elpv.read(table.loc[rows[position]["cell_id"], "file"])
        blobs[position] = (name, _faulty(fault, pixels, good))
        injected[fault] = name
    skipped = set()
    if "missing_image" in faults:
        taken = set(injected.values())
        name = next(b[0] for b in reversed(blobs) if b[0] not in taken)
        skipped.add(name)
        injected["missing_image"] = name
    if "duplicate" in faults:
        # NiFi re-sent the first image under a new name; the camera PC gave it a new cell id.
        dup_id = f"{rows[0]['cell_id']}r"
        rows.append({**rows[0], "file_name": f"{dup_id}.png", "cell_id": dup_id,
                     "captured_at": (start + timedelta(seconds=SECONDS_PER_CELL * len(rows))).isoformat()
                     .replace("+00:00", "Z")})
        blobs.append((f"{dup_id}.png", blobs[0][1]))
        injected["duplicate"] = f"{dup_id}.png"
    if "missing_row" in faults:
        # An image the camera saved but the line's MES never listed (a re-shot cell).
        source = table.loc[chosen[0], "file"]
        blobs.append(("unlisted-retake.png", png_bytes(elpv.exposure(elpv.read(source), 0.9, 3.0))))
        injected["missing_row"] = "unlisted-retake.png"
    for name, data in blobs:
        if name not in skipped:
            put_file(run_folder, name, data)
    manifest = landing_folder / f"{run_id}{MANIFEST_SUFFIX}"
    if write_manifest:
        put_file(landing_folder, manifest.name, manifest_bytes(rows, labels))
    log.info("landed inspection run %s: %d images, %d manifest rows%s, faults %s", run_id, len(blobs) - len(skipped),
             len(rows), "" if write_manifest else " (manifest not yet written)", injected or "none")
    return Landed(run_id, manifest, run_folder, len(rows), len(blobs) - len(skipped), injected)


def land_labels(folder: str, name: str, cells: Iterable[str], labelled_at: datetime, *, inspector: str = "insp1",
                overrides: dict[str, float] | None = None) -> Path:
    """Land an inspectors' labels file ``<name>.labels.csv`` (columns :data:`LABEL_FILE_COLUMNS`):
    the elpv experts' defect probability of each cell, or the one ``overrides`` gives (an inspector
    who disagrees), labelled at ``labelled_at`` (UTC; typically the day after the run)."""
    from plantops.sources import elpv
    from plantops.sources.landing import landing_dir

    table = elpv.labels().set_index("cell_id")["defect_probability"]
    overrides = overrides or {}
    at = labelled_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_FILE_COLUMNS)
    for cell_id in cells:
        if cell_id not in overrides and cell_id not in table.index:
            raise ValueError(f"cell {cell_id!r} is not an elpv cell: give its label in overrides")
        probability = float(overrides.get(cell_id, table.get(cell_id)))
        writer.writerow([cell_id, f"{probability:.7g}", inspector, at])
    path = put_file(landing_dir(folder), f"{name}{LABELS_SUFFIX}", buffer.getvalue().encode())
    log.info("landed %s: labels of %d cells by %s", path.name, len(buffer.getvalue().splitlines()) - 1, inspector)
    return path
