"""Batch scoring with the champion: score, alarm flag, model version and, per alarm, the top
contributing tags with their values against the model's reference (see :mod:`plantops.explain`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TOP_TAGS = 3


def tag_contributions(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    """Per row and tag, the share of the alarm statistic: T² and Q contributions, each scaled by its
    control limit (negative T² parts, which pull against the alarm, count as zero), summed over the
    tag's features (value, rolling mean, rolling std)."""
    parts = model.contributions(X)
    combined = parts["t2"].clip(lower=0) / model.t2_limit_ + parts["q"] / model.q_limit_
    return combined.T.groupby(lambda col: col.split("__")[0], sort=False).sum().T


def top_tags(model: Any, X: pd.DataFrame, k: int = TOP_TAGS) -> list[str]:
    """Per row, the k tags that contribute most to the alarm, each with its value against the
    model's reference (:func:`plantops.explain.alarm_explanations`), as compact JSON lists."""
    from plantops.explain import alarm_explanations

    return [json.dumps(row, separators=(",", ":"), allow_nan=False) for row in alarm_explanations(model, X, k)]


def score_frame(model: Any, features: pd.DataFrame, version: str) -> pd.DataFrame:
    import pandas as pd

    X = features[list(model.columns_)]
    scores = model.score_samples(X)
    alarms = model.predict(X)
    frame = pd.DataFrame({
        "asset": features["asset"].to_numpy(),
        "ts": features["ts"].to_numpy(),
        "model_version": str(version),
        "score": scores,
        "threshold": 1.0,
        "alarm": alarms.astype(int),
    })
    frame["top_tags"] = None
    if frame["alarm"].any():
        alarmed = frame["alarm"].to_numpy() == 1
        frame.loc[alarmed, "top_tags"] = top_tags(model, X[alarmed])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
