"""The monitor of a visual inspection line: the policy every use case has
(:func:`plantops.stages.monitoring.decide`), fed with what an inspection line measures.

- **Drift**: the image statistics of the window's cells (a camera or lighting change moves them
  first) and the champion's outputs on them (defect probability, predicted class), against the
  champion's reference sample (its fit cells' statistics and its outputs on them), with Evidently.
- **Alarm rate**: the share of the window's cells the champion rejected. A bad batch of cells is an
  upset: quality is told, nothing is retrained.
- **Confirmation** (the inspectors' labels of the window's cells, which come a day late): rejected
  cells the inspectors call functional are false rejects (the ``false_alarms`` rule: a stale model);
  a rejected cell they call defective confirms the batch.
- **Performance**: the champion's verdicts in the performance lookback against the labels that have
  arrived: defect recall against its held-out defect recall (``max_detection_drop``), and the
  false-reject rate on cells labelled functional (``max_far``).
- **Data quality**: the share of the window's images ingest rejected (kept in quarantine, with reasons).
- **Plant events** on the line (``camera_change``, ``lighting_change``, ...): a retrain becomes an
  approval by the line's quality engineer (a new camera is a new normal only if a person says so).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import NoFeatures, rate
from plantops.settings import get_settings
from plantops.units import parse_duration

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase

log = logging.getLogger(__name__)

OUTPUTS = ("defect_probability", "predicted_class")  # the champion's outputs, monitored beside the image statistics
TOP_CELLS = 10  # rejected cells (with heat maps) named in the record and the approval


def window_cells(use_case: UseCase, features: pd.DataFrame | None, start: datetime, end: datetime) -> pd.DataFrame:
    """The window's image-feature rows (of ``features``, the window's days) with the champion's
    verdicts on them (``defect_probability``, ``predicted_class``, ``rejected``, ``model_version``;
    NaN for a cell not scored yet)."""
    import pandas as pd

    from plantops.sources import inspections

    if features is None or features.empty:
        features = pd.DataFrame(columns=["run_id", "cell_id", "captured_at"])
    inside = (features["captured_at"] >= pd.Timestamp(start)) & (features["captured_at"] < pd.Timestamp(end))
    verdicts = inspections.read_verdicts(use_case.assets[0], start, end)
    keep = ["run_id", "cell_id", "model_version", "rejected", *OUTPUTS]
    return features[inside].drop(columns=["pixels"], errors="ignore").merge(
        verdicts[keep], on=["run_id", "cell_id"], how="left").reset_index(drop=True)


def defective(kind: Any, probabilities: pd.Series) -> pd.Series:
    """Whether the inspectors' defect probabilities put each cell in a defective class of ``kind``."""
    from plantops.kinds.base import class_index

    classes = set(kind.defective_classes())
    return probabilities.map(lambda p: class_index(float(p)) in classes).astype(bool)


def labelled(verdicts: pd.DataFrame, labels: pd.DataFrame, kind: Any) -> pd.DataFrame:
    """Verdicts of cells the inspectors have labelled, with ``defective`` (their verdict) beside ``rejected``."""
    if verdicts.empty or labels.empty:
        return verdicts.iloc[0:0].assign(defective=[])
    known = labels[["cell_id", "defect_probability"]].rename(columns={"defect_probability": "label_probability"})
    joined = verdicts.dropna(subset=["rejected"]).merge(known, on="cell_id", how="inner")
    return joined.assign(defective=defective(kind, joined["label_probability"]), rejected=joined["rejected"].astype(int))


def confirmation(cells: pd.DataFrame, labels: pd.DataFrame, kind: Any) -> Any:
    """What the inspectors said about the window's rejects: false rejects (cells rejected and
    labelled functional) and whether any reject was confirmed defective."""
    from plantops.stages.monitoring import Confirmation

    rows = labelled(cells, labels, kind)
    rejected = rows[rows["rejected"] == 1]
    false_rejects = int((~rejected["defective"]).sum())
    confirmed = bool(rejected["defective"].any())
    return Confirmation(false_alarms=false_rejects, by=("inspectors",) if false_rejects else (),
                        confirmed_fault="defect_confirmed_by_inspectors" if confirmed else None)


def performance(use_case: UseCase, name: str, end: datetime, kind: Any) -> Any:
    """The champion's verdicts in the performance lookback against the inspectors' labels; None
    where no labelled cell was scored by it."""
    from plantops.sources import inspections
    from plantops.stages import registry
    from plantops.stages.monitoring import PerformanceCheck

    line = use_case.assets[0]
    start = end - parse_duration(use_case.monitoring.policy.performance.lookback)
    verdicts = inspections.read_verdicts(line, start, end)
    champion = registry.champion(name)
    if champion is not None and len(verdicts):
        # The champion is judged on its own verdicts, not on those of the models before it.
        verdicts = verdicts[verdicts["model_version"].astype(str) == champion[0]]
    rows = labelled(verdicts, inspections.read_labels(line), kind)
    if rows.empty:
        return None
    bad, good = rows[rows["defective"]], rows[~rows["defective"]]
    return PerformanceCheck(
        n_labelled=len(rows),
        detection_rate=float(bad["rejected"].mean()) if len(bad) else None,
        far=float(good["rejected"].mean()) if len(good) else None,
        expected_detection_rate=registry.champion_metric(name, "defect_recall"),
    )


def rejected_image_share(use_case: UseCase, start: datetime, end: datetime) -> float | None:
    """Share of the window's landed images that ingest rejected (their runs' day in the window)."""
    import pandas as pd

    from plantops.modalities.images.ingest import quarantined_items

    days = {(start + timedelta(days=k)).date().isoformat() for k in range(max(1, (end - start).days))}
    bronze = get_settings().bronze_root / use_case.id / "inspections"
    run_day, accepted = {}, 0
    for path in bronze.glob("day=*/*.parquet"):
        day = path.parent.name.removeprefix("day=")
        run_day[path.stem] = day
        if day in days:
            accepted += len(pd.read_parquet(path, columns=["cell_id"]))
    rejected = 0
    for item in quarantined_items(use_case.id):
        captured = (item.get("row") or {}).get("captured_at")
        day = run_day.get(item.get("run_id")) or (str(captured)[:10] if captured else None)
        rejected += day in days
    total = accepted + rejected
    return None if total == 0 else rejected / total


def _cell_line(cell: dict[str, Any], markdown: bool) -> str:
    """One rejected cell as a list item, with its heat map's link (a markdown link, or the URL for a mail)."""
    link = cell.get("heatmap_url")
    if link:
        link = f" — [heat map]({link})" if markdown else f", heat map {link}"
    return (f"- {cell['cell_id']} (run {cell['run_id']}): class {cell['predicted_class']}, defect probability "
            f"{cell['defect_probability']:.2f}{link or ''}")


def approval_lines(record: dict[str, Any]) -> list[str]:
    """The inspection part of the approval body: the rejected cells with their heat maps, what the
    inspectors' labels say, and which classes the champion confuses."""
    lines = ["", f"Rejected cells of the window (most probable defects first, {len(record['rejected_cells'])} shown):"]
    lines += [_cell_line(c, markdown=True) for c in record["rejected_cells"]] or ["- none"]
    counts = ", ".join(f"{k} {v}" for k, v in (record.get("by_class") or {}).items())
    lines += ["", f"Cells per predicted class: {counts or 'none scored'}."]
    confirmed = record["confirmation"]
    lines += [f"Inspectors' labels so far: {confirmed['false_alarms']} rejected cell(s) labelled functional"
              + ("; a reject confirmed defective." if confirmed["confirmed_fault"] else ".")]
    if record.get("confusion"):
        lines += ["", f"The champion's confusions on its held-out cells: {record['confusion']}"]
    return lines


def alert_body(record: dict[str, Any]) -> str:
    """The quality team's mail for an upset line: the reason and the rejected cells with heat maps."""
    cells = "\n".join(_cell_line(c, markdown=False) for c in record["rejected_cells"]) or "- none"
    return (f"{record['reason']}\n\nRejected cells:\n{cells}\n\nDrift report: {record['report_url']}\n\n"
            "If these rejects are false, the inspectors' labels of the cells tell the model (a labels file in the "
            "line's landing folder); the next monitor run retrains it on them.")



def evidence(use_case: UseCase, name: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
    """What the monitor weighs for an inspection line's window: the cells' image statistics and the
    champion's outputs on them, its reject rate, the inspectors' late labels and the images ingest
    rejected; the rejected cells with their heat maps."""
    from plantops.image_features import STATS
    from plantops.kinds import get_kind
    from plantops.modalities.base import days_between
    from plantops.modalities.images.features import load_image_features
    from plantops.modalities.images.scoring import inspection_report
    from plantops.sources import inspections
    from plantops.stages import registry

    kind = get_kind(use_case)
    try:
        features = load_image_features(use_case.id, days_between(start.isoformat(), end.isoformat()))
    except NoFeatures:
        features = None
    cells = window_cells(use_case, features, start, end)
    scored = cells.dropna(subset=["rejected"])
    perf = performance(use_case, name, end, kind)
    report = inspection_report(use_case, day)
    champion = registry.champion(name)
    return {
        "current": cells,
        "columns": [*STATS, *OUTPUTS],
        "alarm_rate": float(scored["rejected"].mean()) if len(scored) else None,
        "performance": perf,
        "rejected_share": rejected_image_share(use_case, start, end),
        "confirmation": confirmation(scored, inspections.read_labels(use_case.assets[0]), kind),
        "record": {
            "n_predictions": int(len(scored)),
            "n_cells": int(len(cells)),
            "performance_note": "not applicable: no inspector label has arrived for a cell the champion scored "
                                "in the lookback" if perf is None else None,
            "alarm_tags": [],
            "rejected_cells": report["rejected"][:TOP_CELLS],
            "by_class": report["by_class"],
            "confusion": report["confusions"].get(champion[0]) if champion else None,
            "feedback": [],
        },
    }


def labelled_line(perf: dict[str, Any] | None) -> str:
    if perf is None:
        return "on labelled cells: not applicable (no inspector label yet for a cell it scored)"
    return (f"on {perf['n_labelled']} cells the inspectors labelled: defect recall "
            f"{rate(perf['detection_rate'], 'n/a (no defective cell)')} (held out at training: "
            f"{rate(perf['expected_detection_rate'], 'n/a')}), false rejects "
            f"{rate(perf['far'], 'n/a (no functional cell)')}")


def alert(x: dict[str, Any], subject: str) -> dict[str, str]:
    """The quality team's upset alert: the reject rate and the rejected cells with heat maps."""
    share = "n/a" if x.get("alarm_rate") is None else f"{x['alarm_rate']:.0%}"
    return {"subject": f"{subject}: upset, the model rejects {share} of the cells", "body": alert_body(x)}
