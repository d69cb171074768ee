"""Scoring an inspection run and explaining it: the verdict per cell, a heat map per rejected cell,
and per model version which classes it confuses.

- :func:`score_inspections`: the champion's verdict on each image-feature row (one row per cell, the
  columns of :func:`plantops.sources.inspections.write_verdicts`); ``rejected`` is the kind's alarm
  (defect probability above the line's reject threshold). Each rejected cell gets a heat map,
  ``$PLANTOPS_HOME/reports/<uc>/heatmaps/v<version>/<run_id>/<cell_id>.png``, its path relative to
  ``PLANTOPS_HOME`` in ``heatmap``. Scoring a run again replaces that run's heat maps of the version.
- :func:`occlusion_maps`: the heat map is occlusion sensitivity (Zeiler and Fergus 2014), which
  needs nothing of a model but ``predict_proba`` and so explains both kinds alike (the texture SVM
  has no gradient): a square patch slides over the model input (the row's ``pixels``); per
  position, the drop of the defect probability when the patch is hidden (filled with the median of
  its neighbourhood) is recorded, and each pixel's heat is the mean drop of the patches covering
  it. All occluded copies of a few cells go to the model in one ``predict_proba`` call. It finds
  evidence up to about the patch's size (a fifth of the side); a dark area larger than the patch is
  only partly hidden by any one patch and its map is weak and diffuse.
- :func:`log_confusion`: per version, the held-out confusion matrix (counts and row-normalised) as
  ``explanations/confusion.json`` and ``explanations/confusion.png`` in the version's MLflow run
  (beside :func:`plantops.stages.explain.log_model_explanation`'s artifacts), a version tag
  ``confusions`` with :func:`confusion_text`, and a copy under ``reports/<uc>/confusion/`` that the
  operator view and the approval read without calling MLflow.
- :func:`inspection_report` and :func:`report_markdown`: one inspection day for an operator view or
  an approval body: counts per predicted class, rejected cells with links to their heat maps (served
  by the plantops plugin under ``/plantops/reports/``, as the drift reports are), the model
  version(s) and the version's confusions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from plantops.settings import get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from plantops.config import UseCase

log = logging.getLogger(__name__)

HEATMAP_DIR = "heatmaps"
CONFUSION_DIR = "confusion"
ARTIFACT_DIR = "explanations"
CONFUSION_ARTIFACT = f"{ARTIFACT_DIR}/confusion.json"
CONFUSION_PLOT = f"{ARTIFACT_DIR}/confusion.png"
CONFUSIONS_TAG = "confusions"
CLASS_NAMES = ("0", "1/3", "2/3", "1")  # the inspectors' defect probabilities, class by class
# Heat map image: the cell at HEATMAP_SIDE x HEATMAP_SIDE (the original 300 x 300 resolution), a
# caption strip below it.
HEATMAP_SIDE = 300
CAPTION_HEIGHT = 16
# Occlusion: the patch is a fifth of the side and moves by two thirds of itself, 7 x 7 = 49 positions
# at any side that 15 divides; the texture SVM then costs about 0.4 s per cell at 60 x 60 on one core.
PATCH_SHARE = 5
# At most this many occluded copies per predict_proba call (a few cells at a time).
BATCH_COPIES = 256
TOP_CONFUSIONS = 3


def _safe(value: object) -> str:
    """A path segment from a run or cell id (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._=-]", "_", str(value)).strip(".") or "_"


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def _base_url() -> str:
    return os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080").rstrip("/")


def heatmap_dir(use_case_id: str, version: str | int, run_id: str) -> Path:
    """Where the heat maps of one run scored by one model version go."""
    return get_settings().reports_root / use_case_id / HEATMAP_DIR / f"v{version}" / _safe(run_id)


def served_path(use_case_id: str, relative: str | None) -> str | None:
    """A file under ``reports/<uc>/`` (path relative to PLANTOPS_HOME, as in the verdicts) as a path
    on the plantops plugin (``/plantops/reports/<uc>/...``); None when it lies elsewhere."""
    if not relative:
        return None
    parts = Path(relative).parts
    if len(parts) < 3 or parts[0] != get_settings().reports_root.name or parts[1] != use_case_id:
        return None
    return f"/plantops/reports/{_segment(use_case_id)}/" + "/".join(_segment(p) for p in parts[2:])


# -- heat maps ------------------------------------------------------------------------------------

def occlusion_grid(side: int, patch: int | None = None, stride: int | None = None) -> tuple[int, list[int]]:
    """(patch, top-left offsets along one axis): the last offset ends at the edge, so every pixel
    is covered."""
    patch = max(1, int(patch or round(side / PATCH_SHARE)))
    stride = max(1, int(stride or round(patch * 2 / 3)))
    offsets = list(range(0, side - patch + 1, stride))
    if offsets[-1] != side - patch:
        offsets.append(side - patch)
    return patch, offsets


def occlusion_maps(kind: Any, model: Any, rows: pd.DataFrame, patch: int | None = None,
                   stride: int | None = None) -> list[np.ndarray]:
    """Per row, an (S, S) map of the drop in defect probability when the region is hidden (the
    mean over the patches covering each pixel; negative where hiding it raises the probability).

    A hidden region is filled with the median of its neighbourhood (a window of twice the patch):
    a dark spot or crack smaller than the patch disappears, while the cell's dark edges, corners
    and busbars, wider than the patch, stay as they are (a flat grey square over them would read
    as "a dark region removed" and light up every edge). Each call to the model gets the
    original and every occluded copy of a few cells (at most :data:`BATCH_COPIES` images)."""
    import numpy as np
    import pandas as pd
    from scipy import ndimage

    from plantops.kinds._cell_images import row_size

    if not len(rows):
        return []
    side = row_size(rows)
    patch, offsets = occlusion_grid(side, patch, stride)
    positions = [(y, x) for y in offsets for x in offsets]
    copies = len(positions) + 1
    per_call = max(1, BATCH_COPIES // copies)
    coverage = np.zeros((side, side))
    for y, x in positions:
        coverage[y:y + patch, x:x + patch] += 1
    maps: list[np.ndarray] = []
    for start in range(0, len(rows), per_call):
        chunk = rows.iloc[start:start + per_call]
        batch = []
        for pixels in chunk["pixels"]:
            image = np.asarray(pixels, dtype=np.float32).reshape(side, side)
            fill = ndimage.median_filter(image, size=2 * patch + 1, mode="nearest")
            batch.append(image.ravel())
            for y, x in positions:
                hidden = image.copy()
                hidden[y:y + patch, x:x + patch] = fill[y:y + patch, x:x + patch]
                batch.append(hidden.ravel())
        frame = pd.DataFrame({"size": side, "pixels": batch})
        defect = kind.score(model, frame)["defect_probability"].to_numpy(dtype=float).reshape(len(chunk), copies)
        for probabilities in defect:
            heat = np.zeros((side, side))
            for (y, x), p in zip(positions, probabilities[1:]):
                heat[y:y + patch, x:x + patch] += probabilities[0] - p
            maps.append(heat / coverage)
    return maps


def render_heatmap(pixels: Any, heat: np.ndarray, path: Path, caption: str = "") -> Path:
    """The cell in grey with the heat (positive part, scaled to its maximum) as a red overlay,
    ``HEATMAP_SIDE`` square, a caption strip below; written atomically as PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    side = heat.shape[0]
    grey = Image.fromarray(np.clip(np.asarray(pixels, dtype=np.float64).reshape(side, side) * 255, 0, 255)
                           .astype(np.uint8)).resize((HEATMAP_SIDE, HEATMAP_SIDE), Image.NEAREST)
    top = float(heat.max())
    level = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    alpha = np.asarray(Image.fromarray((level * 255).astype(np.uint8)).resize((HEATMAP_SIDE, HEATMAP_SIDE),
                                                                               Image.BILINEAR), dtype=np.float64)
    alpha = 0.65 * alpha / 255.0
    g = np.asarray(grey, dtype=np.float64)
    rgb = np.stack([g * (1 - alpha) + 255 * alpha, g * (1 - alpha), g * (1 - alpha)], axis=-1)
    canvas = Image.new("RGB", (HEATMAP_SIDE, HEATMAP_SIDE + CAPTION_HEIGHT), "white")
    canvas.paste(Image.fromarray(rgb.round().astype(np.uint8)), (0, 0))
    if caption:
        ImageDraw.Draw(canvas).text((3, HEATMAP_SIDE + 2), caption[:60], fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        canvas.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def score_inspections(use_case: UseCase | str, kind: Any, model: Any, version: str | int,
                      features: pd.DataFrame) -> pd.DataFrame:
    """The verdicts on image-feature rows (one per cell; ``run_id``, ``cell_id``, ``captured_at``,
    ``pixels``, ``size``): the columns of :data:`plantops.sources.inspections.VERDICT_COLUMNS`, in
    the rows' order. ``rejected`` is the kind's alarm; each rejected cell's heat map is written
    and its path (relative to PLANTOPS_HOME) is its ``heatmap`` (None for the others). The runs'
    earlier heat maps of this version are removed first, so a rescored run keeps only its current
    rejects. ``attrs["heatmap_seconds_per_cell"]`` is the mean time of a heat map."""
    import pandas as pd

    from plantops.sources.inspections import VERDICT_COLUMNS

    use_case_id = use_case if isinstance(use_case, str) else use_case.id
    missing = [c for c in ("run_id", "cell_id", "captured_at", "pixels") if c not in features.columns]
    if missing:
        raise ValueError(f"inspection feature rows lack {missing}; got {list(features.columns)}")
    if features.empty:
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    rows = features.reset_index(drop=True)
    groups = rows.groupby("size", sort=False).groups if "size" in rows.columns else {None: rows.index}
    scored = pd.concat([kind.score(model, rows.loc[index]) for index in groups.values()]).loc[rows.index]
    verdicts = pd.DataFrame({
        "run_id": rows["run_id"].astype(str), "cell_id": rows["cell_id"].astype(str),
        "captured_at": pd.to_datetime(rows["captured_at"], utc=True), "model_version": str(version),
        "predicted_class": scored["predicted_class"].astype(int), "defect_probability": scored["defect_probability"],
        "score": scored["score"], "rejected": scored["alarm"].astype(int), "heatmap": None,
    }, index=rows.index).astype({"heatmap": object})
    home = get_settings().home
    for run_id in verdicts["run_id"].unique():
        shutil.rmtree(heatmap_dir(use_case_id, version, run_id), ignore_errors=True)
    rejected = verdicts.index[verdicts["rejected"] == 1]
    started = time.perf_counter()
    for index in [g.intersection(rejected) for g in groups.values()]:
        if not len(index):
            continue
        for i, heat in zip(index, occlusion_maps(kind, model, rows.loc[index])):
            v = verdicts.loc[i]
            path = heatmap_dir(use_case_id, version, v.run_id) / f"{_safe(v.cell_id)}.png"
            caption = (f"{v.cell_id} v{version}: class {CLASS_NAMES[int(v.predicted_class)]}, "
                       f"p(defect) {v.defect_probability:.2f}, max drop {max(heat.max(), 0):.2f}")
            render_heatmap(rows.at[i, "pixels"], heat, path, caption)
            verdicts.at[i, "heatmap"] = path.relative_to(home).as_posix()
    seconds = time.perf_counter() - started
    verdicts = verdicts[list(VERDICT_COLUMNS)]
    verdicts.attrs["heatmap_seconds_per_cell"] = seconds / len(rejected) if len(rejected) else 0.0
    log.info("%s: %d cells scored with v%s (%s), %d rejected, heat maps in %.2f s (%.3f s per cell)", use_case_id,
             len(verdicts), version, getattr(kind, "name", "?"), len(rejected), seconds,
             verdicts.attrs["heatmap_seconds_per_cell"])
    return verdicts


# -- confusions per version -----------------------------------------------------------------------

def confusions(confusion: Any, top: int | None = TOP_CONFUSIONS) -> list[dict[str, Any]]:
    """The off-diagonal cells of a confusion matrix (rows the true class, columns the predicted),
    largest share of the true class's cells first (a rare defective class mistaken half the time
    ranks above a common class mistaken a tenth of the time, though it has fewer cells), then by
    count, then by true class. Empty cells are left out."""
    import numpy as np

    counts = np.asarray(confusion, dtype=int)
    support = counts.sum(axis=1)
    entries = [
        {"true": CLASS_NAMES[t], "predicted": CLASS_NAMES[p], "cells": int(counts[t, p]), "of": int(support[t]),
         "share": float(counts[t, p] / support[t])}
        for t in range(counts.shape[0]) for p in range(counts.shape[1]) if t != p and counts[t, p]
    ]
    entries.sort(key=lambda e: (-e["share"], -e["cells"], CLASS_NAMES.index(e["true"])))
    return entries if top is None else entries[:top]


def confusion_text(confusion: Any, top: int = TOP_CONFUSIONS) -> str:
    """The largest confusions as one line: ``"3/5 cells of class 2/3 predicted 1/3 (60%); ..."``."""
    import numpy as np

    entries = confusions(confusion, top)
    total = int(np.asarray(confusion).sum())
    if not entries:
        return f"no confusions on {total} held-out cells"
    return "; ".join(f"{e['cells']}/{e['of']} cells of class {e['true']} predicted {e['predicted']} "
                     f"({e['share']:.0%})" for e in entries)


def confusion_record(confusion: Any) -> dict[str, Any]:
    """Counts, row-normalised shares, the ranked confusions and their text."""
    import numpy as np

    counts = np.asarray(confusion, dtype=int)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.full(counts.shape, np.nan), where=support > 0)
    return {
        "classes": list(CLASS_NAMES),
        "counts": counts.tolist(),
        "row_normalised": [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in shares],
        "accuracy": round(float(np.trace(counts) / counts.sum()), 4) if counts.sum() else None,
        "n_cells": int(counts.sum()),
        "confusions": confusions(counts, None),
        "text": confusion_text(counts),
        "how_to_read": "rows: the inspectors' class (defect probability), columns: the predicted class; "
                       "row_normalised: the share of the true class's held-out cells; confusions are "
                       "ranked by that share.",
    }


def _plot_confusion(record: dict[str, Any], path: Path, title: str) -> None:
    """The row-normalised matrix as a heat map with the counts written in; Agg canvas, no pyplot."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shares = np.array([[np.nan if v is None else v for v in row] for row in record["row_normalised"]], dtype=float)
    fig = Figure(figsize=(4.6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t, row in enumerate(record["counts"]):
        for p, count in enumerate(row):
            ax.text(p, t, str(count), ha="center", va="center", fontsize=9,
                    color="white" if (shares[t, p] or 0) > 0.5 else "black")
    names = record["classes"]
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class (defect probability)")
    ax.set_ylabel("inspectors' class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.savefig(path, dpi=90)


def confusion_file(use_case_id: str, version: str | int) -> Path:
    """The local copy of a version's confusion record (read by :func:`inspection_report`)."""
    return get_settings().reports_root / use_case_id / CONFUSION_DIR / f"v{version}.json"


def log_confusion(client: MlflowClient, use_case: UseCase, name: str, kind: Any, version: str | int,
                  run_id: str, model: Any, data: Any, confusion: Any = None) -> dict[str, Any]:
    """Which classes one version confuses on its held-out cells (``data``: an ImageSplit or the
    held-out rows; ``confusion``: the 4 x 4 counts when the caller evaluated already, e.g.
    ``kind.evaluate(...)["confusion"]``). Logs ``explanations/confusion.json`` and
    ``explanations/confusion.png`` in the version's run, sets the version tag ``confusions``,
    writes the record and the PNG to ``reports/<uc>/confusion/v<version>.{json,png}``, and
    returns the record (its ``text``: the ranked confusions for the approval body)."""
    started = time.perf_counter()
    if confusion is None:
        confusion = kind.evaluate(model, data)["confusion"]
    record = confusion_record(confusion)
    record.update({"use_case": use_case.id, "registered_model": name, "model_version": str(version),
                   "model_kind": getattr(kind, "name", None), "basis": "holdout"})
    target = confusion_file(use_case.id, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / Path(CONFUSION_PLOT).name
        _plot_confusion(record, plot, f"{name} v{version}: held-out confusions ({record['n_cells']} cells)")
        client.log_artifact(run_id, str(plot), artifact_path=ARTIFACT_DIR)
        shutil.copyfile(plot, target.with_suffix(".png"))
        path = Path(tmp) / Path(CONFUSION_ARTIFACT).name
        path.write_text(json.dumps(record, indent=1, allow_nan=False))
        client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".json")
        os.close(fd)
        shutil.copyfile(path, partial)
        os.replace(partial, target)
    client.set_model_version_tag(name, str(version), CONFUSIONS_TAG, record["text"][:4900])
    client.log_metric(run_id, "confusion_seconds", time.perf_counter() - started)
    log.info("model %s v%s confusions on %d held-out cells: %s", name, version, record["n_cells"], record["text"])
    return record


# -- one inspection day for the operator and the approval -----------------------------------------

def inspection_report(use_case: UseCase, day: str, asset: str | None = None,
                      url: str | None = None) -> dict[str, Any]:
    """One day of verdicts (cells captured on ``day``, UTC; ``asset``: by default the use
    case's inspection line): ``cells``, ``rejected_count``,
    ``by_class`` (cells per predicted class, every class named), ``model_versions``, ``rejected``
    (run, cell, class, defect probability, ``heatmap`` relative to PLANTOPS_HOME, ``heatmap_path``
    on the plugin, ``heatmap_url`` with the api-server's base URL), and ``confusions`` per version
    (the text of :func:`log_confusion`'s record, None where the version has none)."""
    from plantops.sources.inspections import read_verdicts

    use_case_id = use_case.id
    # The verdicts are kept per inspection line (the historian tables' asset).
    asset = asset or use_case.assets[0]
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    frame = read_verdicts(asset, start, start + timedelta(days=1), url)
    versions = sorted({str(v) for v in frame["model_version"]}, key=lambda v: (len(v), v)) if len(frame) else []
    counts = frame["predicted_class"].astype(int).value_counts() if len(frame) else {}
    rejected = []
    for r in frame[frame["rejected"] == 1].sort_values(["defect_probability", "cell_id"],
                                                        ascending=[False, True]).itertuples(index=False):
        path = served_path(use_case_id, r.heatmap)
        rejected.append({
            "run_id": r.run_id, "cell_id": r.cell_id, "captured_at": r.captured_at.isoformat(),
            "model_version": str(r.model_version), "predicted_class": CLASS_NAMES[int(r.predicted_class)],
            "defect_probability": round(float(r.defect_probability), 4), "heatmap": r.heatmap,
            "heatmap_path": path, "heatmap_url": _base_url() + path if path else None,
        })
    confusion = {}
    for version in versions:
        target = confusion_file(use_case_id, version)
        confusion[version] = json.loads(target.read_text())["text"] if target.is_file() else None
    return {
        "use_case": use_case_id, "asset": asset, "day": day, "cells": int(len(frame)),
        "rejected_count": len(rejected),
        "by_class": {name: int(counts.get(k, 0)) for k, name in enumerate(CLASS_NAMES)},
        "model_versions": versions, "rejected": rejected, "confusions": confusion,
    }


def report_markdown(report: dict[str, Any], max_cells: int = 20) -> str:
    """The report as Markdown for an approval body or a mail: counts per class, the rejected cells
    with links to their heat maps (at most ``max_cells``, the most probable defects first), and what
    each version confuses."""
    lines = [f"**Inspection {report['day']}** ({report['asset']}): {report['cells']} cells, "
             f"{report['rejected_count']} rejected, model version "
             f"{', '.join('v' + v for v in report['model_versions']) or 'none'}.", "",
             "Predicted class (defect probability): "
             + ", ".join(f"{name}: {n}" for name, n in report["by_class"].items()) + "."]
    if report["rejected"]:
        lines += ["", "| cell | run | class | p(defect) | heat map |", "|---|---|---|---|---|"]
        for r in report["rejected"][:max_cells]:
            heat = f"[heat map]({r['heatmap_url']})" if r["heatmap_url"] else "none"
            lines.append(f"| {r['cell_id']} | {r['run_id']} | {r['predicted_class']} | "
                         f"{r['defect_probability']:.2f} | {heat} |")
        if len(report["rejected"]) > max_cells:
            lines.append(f"| ... {len(report['rejected']) - max_cells} more | | | | |")
    for version, text in report["confusions"].items():
        lines += ["", f"v{version} confuses on its held-out cells: {text or 'not recorded'}."]
    return "\n".join(lines)


def score(use_case: UseCase, kind: Any, model: Any, version: str, day: str) -> dict[str, Any]:
    """An inspection day: the champion's verdict per cell (a heat map per rejected cell) written to
    the historian side under the line, where inspectors and the monitor read them."""
    from plantops.modalities.images.features import load_image_features
    from plantops.sources import inspections

    features = load_image_features(use_case.id, [day])
    verdicts = score_inspections(use_case, kind, model, version, features)
    written = inspections.write_verdicts(use_case.inspection.line, verdicts)
    rejected = int(verdicts["rejected"].sum()) if len(verdicts) else 0
    log.info("scored %s cells of %s on %s with v%s (%s): %s rejected", written, use_case.inspection.line, day,
             version, kind.name, rejected)
    return {"day": day, "asset": use_case.assets[0], "rows": written, "alarms": rejected, "model_version": version,
            "model_kind": kind.name, "runs": sorted(verdicts["run_id"].unique().tolist()) if len(verdicts) else []}
