"""Batch scoring with the champion: score, alarm flag, model version and the top contributing tags."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TOP_TAGS = 3


def top_tags(model: Any, X: pd.DataFrame, tags: tuple[str, ...], k: int = TOP_TAGS) -> list[str]:
    """Per row, the k tags whose features contribute most to the anomaly statistic, as JSON lists."""
    contributions = model.contributions(X)  # DataFrame: rows x feature columns
    per_tag = contributions.T.groupby(lambda col: col.split("__")[0]).sum().T
    per_tag = per_tag.reindex(columns=[t for t in tags if t in per_tag.columns])
    order = per_tag.to_numpy().argsort(axis=1)[:, ::-1][:, :k]
    names = per_tag.columns.to_numpy()
    return [json.dumps(list(names[row])) for row in order]


def score_frame(model: Any, features: pd.DataFrame, version: str, tags: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    X = features[list(model.columns)]
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
        frame.loc[alarmed, "top_tags"] = top_tags(model, X[alarmed], tags)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
