"""An inspection line's part of the Plant ML page (:mod:`plantops.stages.overview`): the latest
scored inspection day, its rejected cells with their heat maps and the inspectors' late labels,
and the champion's confusions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantops.config import UseCase

# Rejected cells of the latest inspection day shown with their heat maps (highest defect probability first).
MAX_CELLS = 20


def latest_inspection_day(line: str) -> str | None:
    """The UTC day of the newest cell with a verdict on the line, None before the first scoring."""
    from plantops.sources import historian

    table = historian.inspection_verdicts
    newest = historian.newest(table.c.captured_at, table.c.asset == line)
    return None if newest is None else newest.strftime("%Y-%m-%d")


def confusion(use_case_id: str, version: str | None) -> dict[str, Any] | None:
    """What one version confuses on its held-out cells, from the record its training copied under
    ``reports/<uc>/confusion/`` (the train decision holds only the metrics): the image's path on
    the plugin, the ranked confusions and their text; ``recorded`` False when there is no record."""
    import json

    from plantops.modalities.images.scoring import CONFUSION_DIR, _segment, TOP_CONFUSIONS, confusion_file

    if version is None:
        return None
    target = confusion_file(use_case_id, version)
    out: dict[str, Any] = {"version": str(version), "recorded": False, "image_path": None, "text": None,
                           "top": [], "accuracy": None, "n_cells": None}
    try:
        record = json.loads(target.read_text())
    except FileNotFoundError:
        return out
    except (OSError, ValueError) as exc:  # a broken record says so instead of failing the page
        out["text"] = f"unreadable confusion record {target.name}: {exc}"
        return out
    image = target.with_suffix(".png")
    out.update(recorded=True, text=record.get("text"), top=(record.get("confusions") or [])[:TOP_CONFUSIONS],
               accuracy=record.get("accuracy"), n_cells=record.get("n_cells"),
               image_path=(f"/plantops/reports/{_segment(use_case_id)}/{CONFUSION_DIR}/{_segment(image.name)}"
                           if image.is_file() else None))
    return out


def inspection(use_case: UseCase, champion_version: str | None, max_cells: int = MAX_CELLS) -> dict[str, Any]:
    """An inspection line's part of the page: the latest scored inspection day (cells, rejects and
    their share, the versions that scored them, cells per predicted class), its rejected cells with
    the most probable defects first (at most ``max_cells``; heat map as a path on the plugin, the
    inspector's class where a late label arrived), and the champion's confusions."""
    from plantops.kinds.base import class_index
    from plantops.sources.inspections import read_labels
    from plantops.modalities.images.scoring import CLASS_NAMES, inspection_report

    line = use_case.inspection.line
    day = latest_inspection_day(line)
    out: dict[str, Any] = {"line": line, "day": None, "confusion": None}
    if day is not None:
        report = inspection_report(use_case, day, asset=line)
        labels = read_labels(line)
        by_cell = {r.cell_id: r for r in labels.itertuples(index=False)} if len(labels) else {}
        cells = []
        for r in report["rejected"][:max_cells]:
            label = by_cell.get(r["cell_id"])
            inspector_class = None if label is None else CLASS_NAMES[class_index(float(label.defect_probability))]
            cells.append({
                "cell_id": r["cell_id"], "run_id": r["run_id"], "captured_at": r["captured_at"],
                "model_version": r["model_version"], "predicted_class": r["predicted_class"],
                "defect_probability": r["defect_probability"], "heatmap_path": r["heatmap_path"],
                "inspector_class": inspector_class, "inspector": None if label is None else label.inspector,
                "labelled_at": None if label is None else label.labelled_at.isoformat(),
                "agrees": None if label is None else inspector_class == r["predicted_class"]})
        labelled = [c for c in cells if c["inspector_class"] is not None]
        out["day"] = {
            "day": day, "cells": report["cells"], "rejected_count": report["rejected_count"],
            "rejected_share": round(report["rejected_count"] / report["cells"], 4) if report["cells"] else None,
            "model_versions": report["model_versions"],
            "scored_by_champion": champion_version is not None and report["model_versions"] == [str(champion_version)],
            "by_class": report["by_class"], "rejected": cells,
            "rejected_shown": len(cells), "labelled": len(labelled),
            "labels_agree": sum(1 for c in labelled if c["agrees"]),
        }
    # The champion's confusions; before any training is recorded, those of the version that scored the day.
    version = champion_version or (out["day"]["model_versions"][-1] if out["day"] and out["day"]["model_versions"]
                                   else None)
    out["confusion"] = confusion(use_case.id, version)
    return out
