"""An inspection line's part of the Plant ML page: the latest scored inspection day, its rejected
cells with their heat maps and the inspectors' late labels, and the champion's confusions
(:mod:`plantops.stages.overview` puts them in the view), and how the page draws them
(:class:`InspectionPage`: a section of its own, the rejected cells of a judged day)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plantops.modalities.page import Page, e, link, num, pct

if TYPE_CHECKING:
    from plantops.config import UseCase

# Rejected cells of the latest inspection day shown with their heat maps (highest defect probability first).
MAX_CELLS = 20
THUMB = 100  # heat-map thumbnails' width: the image (the cell, its caption below) at a third


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


class InspectionPage(Page):
    """The line's latest day in a section of its own; the monitor's days name the rejected cells
    (their heat maps linked) instead of alarm tags."""

    evidence_headers = ("rejects", "rejected cells (heat maps)")

    def section(self, v: dict[str, Any]) -> str:
        return _inspection(v["inspection"])

    def evidence(self, day: dict[str, Any]) -> str:
        cells = ", ".join(link(c["heatmap_path"], f"{c['cell_id']} ({num(c['defect_probability'], '.2f')})", top=False)
                          for c in day["rejected_cells"]) or "&mdash;"
        if day["n_rejected_cells"] > len(day["rejected_cells"]):
            cells += f" and {day['n_rejected_cells'] - len(day['rejected_cells'])} more"
        return cells

    def chart(self, v: dict[str, Any]) -> str:
        return ""  # the scored day is the section above


def _thumb(path: str | None, alt: str) -> str:
    """A heat map as a thumbnail linking to the full image (a new tab), or a dash when there is none."""
    from plantops.modalities.images.scoring import CAPTION_HEIGHT, HEATMAP_SIDE

    if not path:
        return "&mdash;"
    height = round(THUMB * (HEATMAP_SIDE + CAPTION_HEIGHT) / HEATMAP_SIDE)
    return (f'<a href="{e(path)}" target="_blank" rel="noopener"><img src="{e(path)}" alt="{e(alt)}" '
            f'width="{THUMB}" height="{height}" loading="lazy"></a>')


def _inspection(i: dict) -> str:
    """The latest inspection day of the line and the champion's confusions."""
    d = i["day"]
    parts = [f"<h2>Inspection line {e(i['line'])}</h2>"]
    if d is None:
        parts.append("<p>No inspection day scored yet: the line's verdicts appear after its first scoring.</p>")
    else:
        versions = ", ".join("v" + x for x in d["model_versions"]) or "none"
        classes = "".join(f"<th>{e(name)}</th>" for name in d["by_class"])
        counts = "".join(f"<td class='num'>{n}</td>" for n in d["by_class"].values())
        parts.append(
            f"<p>Latest scored day <b>{e(d['day'])}</b>: <b>{d['cells']}</b> cells scored by {e(versions)}"
            f"{' (the champion)' if d['scored_by_champion'] else ''}, <b>{d['rejected_count']}</b> rejected "
            f"({pct(d['rejected_share'])}).</p><table><tr><th>predicted class (defect probability)</th>{classes}"
            f"</tr><tr><td>cells</td>{counts}</tr></table>")
        if d["rejected"]:
            rows = []
            for c in d["rejected"]:
                who = "" if c["inspector"] is None else f"<br><span class='small'>by {e(c['inspector'])}</span>"
                rows.append(
                    f"<tr><td>{e(c['cell_id'])}</td><td class='small'>{e(c['run_id'])}</td>"
                    f"<td class='num'>{e(c['predicted_class'])}</td>"
                    f"<td class='num'>{num(c['defect_probability'], '.2f')}</td>"
                    f"<td class='num'>{e(c['inspector_class'])}{who}</td>"
                    f"<td>{_thumb(c['heatmap_path'], 'heat map of ' + str(c['cell_id']))}</td></tr>")
            more = d["rejected_count"] - d["rejected_shown"]
            label_note = (f"inspectors' labels have arrived for {d['labelled']} of them, the same class as the "
                          f"model's for {d['labels_agree']}" if d["labelled"] else "no inspector's label yet")
            shown = f"the first {d['rejected_shown']} of {d['rejected_count']}" if more > 0 else "all of them"
            parts.append(f"<p class='small'>Rejected cells, the most probable defects first ({shown}); "
                         f"{label_note}. Each heat map shows in red where hiding the cell's pixels lowers the "
                         "defect probability most.</p>")
            parts.append(f"<table><tr><th>cell</th><th>run</th><th>model's class</th><th>p(defect)</th>"
                         f"<th>inspector's class</th><th>heat map</th></tr>{''.join(rows)}</table>")
    parts.append(_confusion(i["confusion"]))
    return "".join(parts)


def _confusion(c: dict | None) -> str:
    """What the champion confuses on its held-out cells: the matrix image and the largest confusions in words."""
    if c is None:
        return "<h3>Confusions</h3><p>No model version yet.</p>"
    head = f"<h3>What v{e(c['version'])} confuses on its held-out cells</h3>"
    if not c["recorded"]:
        return head + f"<p>{e(c['text'] or 'No confusion record for this version.')}</p>"
    top = "".join(f"<li>{e(x['cells'])} of {e(x['of'])} cells of class {e(x['true'])} predicted {e(x['predicted'])} "
                  f"({pct(x['share'])})</li>" for x in c["top"])
    image = "" if not c["image_path"] else (
        f'<p><a href="{e(c["image_path"])}" target="_blank" rel="noopener"><img src="{e(c["image_path"])}" '
        f'alt="held-out confusion matrix of v{e(c["version"])}" width="300" loading="lazy"></a></p>')
    return (head + f"<p>Four-class accuracy {pct(c['accuracy'])} on {e(c['n_cells'])} held-out cells. "
            + (f"Largest confusions (share of the inspectors' class):</p><ul>{top}</ul>" if top
               else "No confusions.</p>") + image)
