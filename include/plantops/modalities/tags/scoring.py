"""Tag scoring: one day of an asset's feature rows (with warm-up rows for a temporal kind), the
predictions written to the historian side."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantops.config import UseCase

log = logging.getLogger(__name__)


def score(use_case: UseCase, kind: Any, model: Any, version: str, day: str, asset: str, name: str) -> dict[str, Any]:
    """Score the day's rows of ``asset``; a temporal kind gets the rows before the day as warm-up, not rescored."""
    from plantops.modalities.tags.features import load_features
    from plantops.sources import historian
    from plantops.stages.scoring import score_frame

    end = (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")
    context = kind.context_rows(model)
    first = day
    if context:
        bucket_days = context * use_case.features.bucket_seconds / 86400
        first = (datetime.fromisoformat(day) - timedelta(days=max(1, int(bucket_days) + 1))).strftime("%Y-%m-%d")
    features = load_features(use_case.id, first, end, asset)
    if features.empty:
        log.warning("%s: no features for %s on %s: nothing to score", use_case.id, asset, day)
        return {"day": day, "asset": asset, "rows": 0, "alarms": 0, "model_version": version}
    warm = int((features["date"] < day).sum())
    features = features.iloc[max(0, warm - context):]
    predictions = score_frame(kind, model, features, version, context=min(context, warm), model_name=name)
    written = historian.write_predictions(predictions, conn_id=use_case.historian_conn)
    alarms = int(predictions["alarm"].sum())
    log.info("scored %s rows of %s/%s with champion %s v%s (%s): %s alarms", written, asset, day, name, version,
             kind.name, alarms)
    return {"day": day, "asset": asset, "rows": written, "alarms": alarms, "model_version": version,
            "model_kind": kind.name}
