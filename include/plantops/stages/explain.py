"""Explanations a process engineer can check: per model version, and per alarm.

Every model kind says, through the kind contract (:meth:`plantops.kinds.base.ModelKind.tag_contributions`),
which part of a row's score each tag carries: for the PCA T²/Q monitor (``mspm_pca``) the classical
contribution plot rather than a surrogate such as SHAP (each feature column's share of T² and of Q,
each scaled by its control limit and summed over the tag's features; exact and two matrix products),
for ``mspm_early`` the parts of the chart that sets the score, for ``normal_behaviour`` the
target's residual and the drivers that lie outside their fitted range. This module only ranks them.

- Per model version (:func:`log_model_explanation`, called by training for every version it
  registers): each tag's mean share of the alarm statistic over the held-out fault rows, overall
  and per fault label, logged with the version's MLflow run as ``explanations/global.json`` and
  ``explanations/top_tags.png``, and summarised as version tags (``top_tags``: the five tags
  that drive the model's alarms most).
- Per alarm (:func:`alarm_explanations`, called by scoring): the three tags that contributed most,
  each with its current value against the model's reference (the mean and standard deviation of the
  tag's per-bucket value in the fit window), so an engineer can look at the trend of that tag.
- Per monitor window (:func:`alarm_tag_summary`): which tags the window's alarms named most often.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from plantops.config import UseCase
    from plantops.kinds.base import TrainingData

log = logging.getLogger(__name__)

ARTIFACT_DIR = "explanations"
GLOBAL_ARTIFACT = f"{ARTIFACT_DIR}/global.json"
PLOT_ARTIFACT = f"{ARTIFACT_DIR}/top_tags.png"
TOP_TAGS_TAG = "top_tags"
TOP_GLOBAL = 5
TOP_PER_LABEL = 10
TOP_ALARM = 3
PLOT_TAGS = 15


def _num(value: Any, digits: int = 5) -> float | None:
    """A compact JSON number (``digits`` significant digits), None for NaN/inf."""
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def tag_reference(model: Any) -> dict[str, tuple[float, float]]:
    """Per tag, the (mean, standard deviation) of its per-bucket value in the model's fit window:
    the standardisation the model applies to the tag's base column. Tags the model sees only
    through rolling features have no entry."""
    index = {col: i for i, col in enumerate(model.columns_)}
    return {
        col: (float(model.mean_[i]), float(model.scale_[i]))
        for col, i in index.items() if "__" not in col
    }


# -- per model version ----------------------------------------------------------------------------

def _shares(per_tag: pd.DataFrame) -> pd.DataFrame:
    """Each row's contributions as shares of the row's total (a row with none stays at zero)."""
    total = per_tag.sum(axis=1)
    return per_tag.div(total.where(total > 0, 1.0), axis=0)


def global_explanation(kind: Any, model: Any, rows: pd.DataFrame, labels: Sequence[str] | None = None,
                       context: pd.DataFrame | None = None) -> dict[str, Any]:
    """Per tag, its mean share of the alarm statistic over ``rows`` (overall, and per label when
    ``labels`` is given), largest first.

    ``share`` is the mean over rows of the tag's part of the row's contributions, so every row
    weighs the same: averaging raw contributions instead lets the hours after a runaway upset
    (hundreds of control limits, spread over the tags the upset reached) drown the first hours,
    where the root tags lead (TEP fault 6: the A feed ranks 12th by raw mean, 4th by share).
    ``contribution`` is the mean raw contribution, in score units (control limits). With
    ``context`` (the whole series ``rows`` are taken from, same index), a temporal model is run over
    the series in order and read at ``rows``.
    """
    import numpy as np

    source = rows if context is None else context
    if len(rows):
        per_tag = kind.tag_contributions(model, source).loc[rows.index].reset_index(drop=True)
        alarms = kind.score(model, source)["alarm"].loc[rows.index].to_numpy()
    else:
        import pandas as pd

        per_tag, alarms = pd.DataFrame(), np.zeros(0, dtype=int)
    shares = _shares(per_tag)

    def ranked(mask: Any, top: int | None) -> list[dict[str, Any]]:
        share = shares[mask].mean(axis=0).sort_values(ascending=False, kind="stable")
        raw = per_tag[mask].mean(axis=0)
        return [
            {"tag": str(tag), "share": _num(value, 3), "contribution": _num(raw[tag], 4)}
            for tag, value in list(share.items())[:top]
        ]

    overall = ranked(slice(None), None) if len(per_tag) else []
    by_label: dict[str, Any] = {}
    if labels is not None and len(per_tag):
        labels = np.asarray(labels, dtype=object)
        for label in sorted(set(labels)):
            mask = labels == label
            by_label[str(label)] = {
                "n_rows": int(mask.sum()),
                "alarm_share": _num(alarms[mask].mean(), 3),
                "top": ranked(mask, TOP_PER_LABEL),
            }
    return {
        "method": f"{kind.name}_contributions",
        "n_rows": int(len(rows)),
        "alarm_share": _num(alarms.mean(), 3) if len(alarms) else None,
        "top_tags": [e["tag"] for e in overall[:TOP_GLOBAL]],
        "overall": overall,
        "by_label": by_label,
    }


def _basis(data: TrainingData) -> tuple[str, pd.DataFrame, Sequence[str] | None]:
    """The rows a version is explained on: its held-out fault rows; without labelled faults, the
    held-out normal rows (what the model's false alarms look like); at worst its fit rows."""
    if len(data.holdout_faults):
        return "holdout_faults", data.holdout_faults, data.holdout_faults["label"].astype(str).to_numpy()
    if len(data.holdout_normal):
        return "holdout_normal", data.holdout_normal, None
    return "fit", data.fit, None


def log_model_explanation(
    client: MlflowClient,
    use_case: UseCase,
    name: str,
    kind: Any,
    version: str,
    run_id: str,
    model: Any,
    data: TrainingData,
) -> dict[str, Any]:
    """Explain one registered version: ``explanations/global.json`` and ``explanations/top_tags.png``
    in its run, tags ``top_tags``, ``top_tags_by_label``, ``explanation_method`` and
    ``explanation_basis`` on the version, metric ``explanation_seconds`` on the run. Returns the
    explanation (the JSON's content)."""
    started = time.perf_counter()
    basis, rows, labels = _basis(data)
    explanation = global_explanation(kind, model, rows, labels, context=data.series)
    descriptions = {t.name: t.description for t in use_case.tags}
    for entry in explanation["overall"]:
        entry["description"] = descriptions.get(entry["tag"], "")
    explanation.update({
        "use_case": use_case.id,
        "registered_model": name,
        "model_version": str(version),
        "basis": basis,
        "reference": {tag: {"mean": _num(m), "sd": _num(s, 4)} for tag, (m, s) in tag_reference(model).items()},
        "model_kind": kind.name,
        "how_to_read": "share: the tag's mean part (0..1, every row weighs the same) of the row's "
                       f"score as the {kind.name} kind splits it (summed over the tag's value, rolling mean "
                       "and rolling std); tags are ranked by it. contribution: the tag's mean part in "
                       "score units (1.0 = the alarm threshold).",
    })
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / Path(PLOT_ARTIFACT).name
        _plot(explanation, descriptions, plot, f"{name} v{version}")
        client.log_artifact(run_id, str(plot), artifact_path=ARTIFACT_DIR)
        explanation["seconds"] = round(time.perf_counter() - started, 3)
        path = Path(tmp) / Path(GLOBAL_ARTIFACT).name
        path.write_text(json.dumps(explanation, indent=1, allow_nan=False))
        client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
    by_label = ";".join(f"{label}:{entry['top'][0]['tag']}"
                        for label, entry in explanation["by_label"].items() if entry["top"])
    tags = {
        TOP_TAGS_TAG: ",".join(explanation["top_tags"]),
        "top_tags_by_label": by_label[:4900],  # MLflow tag values stop at 5000 characters
        "explanation_method": f"{kind.name}_contributions",
        "explanation_basis": f"{basis} ({explanation['n_rows']} rows)",
    }
    for key, value in tags.items():
        if value:
            client.set_model_version_tag(name, str(version), key, value)
    seconds = time.perf_counter() - started
    client.log_metric(run_id, "explanation_seconds", seconds)
    log.info("model %s v%s explained on %s (%d rows) in %.2f s: top tags %s", name, version, basis,
             explanation["n_rows"], seconds, tags[TOP_TAGS_TAG])
    return explanation


def _plot(explanation: dict[str, Any], descriptions: dict[str, str], path: Path, title: str) -> None:
    """Bars of the top tags overall and, with labels, a heat map of each label's top tags.
    Drawn on an Agg canvas directly: no pyplot, no global backend switch inside a worker."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top = explanation["overall"][:PLOT_TAGS]
    by_label = explanation["by_label"]
    fig = Figure(figsize=(13 if by_label else 7, 6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if by_label else 1, squeeze=False)[0]
    ax = axes[0]
    names = [f"{e['tag']}  {descriptions.get(e['tag'], '')}"[:48] for e in top][::-1]
    ax.barh(names, [e["share"] or 0.0 for e in top][::-1], color="tab:red")
    ax.set_xlabel("mean share of the score (the kind's contributions)")
    ax.set_title(f"{title}: top tags on {explanation.get('basis', 'rows')} ({explanation['n_rows']} rows)",
                 fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    if by_label:
        columns: list[str] = []
        for entry in by_label.values():
            columns += [e["tag"] for e in entry["top"][:3] if e["tag"] not in columns]
        grid = np.array([[next((e["share"] or 0.0 for e in entry["top"] if e["tag"] == c), 0.0)
                          for c in columns] for entry in by_label.values()])
        heat = axes[1].imshow(grid, aspect="auto", cmap="Reds", vmin=0)
        axes[1].set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        axes[1].set_yticks(range(len(by_label)), list(by_label), fontsize=7)
        axes[1].set_title("share of each label's alarm statistic (its top 3 tags)", fontsize=9)
        fig.colorbar(heat, ax=axes[1], shrink=0.8)
    fig.savefig(path, dpi=90)


# -- per alarm ------------------------------------------------------------------------------------

def alarm_explanations(kind: Any, model: Any, X: pd.DataFrame, k: int = TOP_ALARM,
                       per_tag: pd.DataFrame | None = None) -> list[list[dict[str, Any]]]:
    """Per row of ``X``, the ``k`` tags that contributed most, with the tag's value against the
    model's reference: ``{"tag", "contribution" (share of the row's alarm statistic), "value",
    "ref_mean", "ref_sd", "shift_sd" ((value - ref_mean) / ref_sd)}``."""
    import numpy as np

    if per_tag is None:
        per_tag = kind.tag_contributions(model, X)
    values = per_tag.to_numpy()
    shares = _shares(per_tag).to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    names = [str(c) for c in per_tag.columns]
    reference = tag_reference(model)
    base = {tag: X[tag].to_numpy(dtype=float) for tag in names if tag in X.columns}
    out: list[list[dict[str, Any]]] = []
    for row, picks in enumerate(order):
        entries = []
        for j in picks:
            tag = names[j]
            entry: dict[str, Any] = {"tag": tag, "contribution": _num(shares[row, j], 3)}
            if tag in base and tag in reference:
                mean, sd = reference[tag]
                value = base[tag][row]
                entry.update(value=_num(value, 6), ref_mean=_num(mean, 6), ref_sd=_num(sd, 4),
                             shift_sd=_num((value - mean) / sd, 3) if math.isfinite(value) else None)
            entries.append(entry)
        out.append(entries)
    return out


def alarm_tag_summary(top_tags: Iterable[str | None], n: int = TOP_GLOBAL) -> list[dict[str, Any]]:
    """The tags named most often by a window's alarm explanations (the predictions' ``top_tags``):
    ``{"tag", "alarms" (alarms naming it), "first" (alarms it led), "median_shift_sd"}``.
    Older rows that hold a plain list of tag names count too (without shifts)."""
    import numpy as np

    named: Counter[str] = Counter()
    first: Counter[str] = Counter()
    shifts: dict[str, list[float]] = defaultdict(list)
    for text in top_tags:
        if not text:
            continue
        try:
            entries = json.loads(text)
        except (TypeError, ValueError):
            continue
        for rank, entry in enumerate(entries):
            tag = entry.get("tag") if isinstance(entry, dict) else entry
            if not tag:
                continue
            named[tag] += 1
            first[tag] += rank == 0
            shift = entry.get("shift_sd") if isinstance(entry, dict) else None
            if shift is not None:
                shifts[tag].append(float(shift))
    ranked = sorted(named, key=lambda t: (-named[t], -first[t], t))[:n]
    return [
        {"tag": tag, "alarms": named[tag], "first": first[tag],
         "median_shift_sd": _num(np.median(shifts[tag]), 3) if shifts[tag] else None}
        for tag in ranked
    ]
