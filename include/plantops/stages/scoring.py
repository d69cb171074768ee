"""Batch scoring with the champion through the kind contract: score, alarm flag, model version,
for a regression kind the expected target and its residual, and per alarm the top contributing tags
with their values against the model's reference (see :mod:`plantops.stages.explain`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TOP_TAGS = 3


def top_tags(kind: Any, model: Any, X: pd.DataFrame, k: int = TOP_TAGS, per_tag: pd.DataFrame | None = None) -> list[str]:
    """Per row, the k tags that contribute most to the alarm, each with its value against the
    model's reference (:func:`plantops.stages.explain.alarm_explanations`), as compact JSON lists."""
    from plantops.stages.explain import alarm_explanations

    return [json.dumps(row, separators=(",", ":"), allow_nan=False)
            for row in alarm_explanations(kind, model, X, k, per_tag=per_tag)]


def score_frame(kind: Any, model: Any, features: pd.DataFrame, version: str, context: int = 0,
                model_name: str | None = None) -> pd.DataFrame:
    """Score ``features`` (one or more assets, sorted by asset and time); the first ``context`` rows
    of each asset only warm a temporal model up and are not returned."""
    import pandas as pd

    rows = features.sort_values(["asset", "ts"]).reset_index(drop=True)
    scored = kind.score(model, rows)
    keep = rows.groupby("asset").cumcount().to_numpy() >= context
    frame = pd.DataFrame({
        "asset": rows["asset"].to_numpy(),
        "ts": rows["ts"].to_numpy(),
        "model_version": str(version),
        "model_name": model_name,
        "score": scored["score"].to_numpy(),
        "threshold": 1.0,
        "alarm": scored["alarm"].to_numpy().astype(int),
        "expected": scored["expected"].to_numpy(),
        "residual": scored["residual"].to_numpy(),
    })
    frame["top_tags"] = None
    alarmed = (frame["alarm"].to_numpy() == 1) & keep
    if alarmed.any():
        # Contributions over the whole series (a temporal kind's charts need the history), read at the alarms.
        per_tag = kind.tag_contributions(model, rows).loc[alarmed]
        frame.loc[alarmed, "top_tags"] = top_tags(kind, model, rows.loc[alarmed], per_tag=per_tag)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame[keep].reset_index(drop=True)
