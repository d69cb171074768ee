"""Tag training rows: an asset's feature rows, its labels (lab results, confirmed faults, feedback)
and the monitor windows whose alarms stand unchallenged (kept out of the fit as upsets)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import NoFeatures, TrainingRows
from plantops.units import parse_duration, utc_day

if TYPE_CHECKING:
    from plantops.config import UseCase


def suspect_windows(use_case: UseCase, asset: str | None = None) -> list[dict[str, Any]]:
    """Label rows (``upset``) for the monitor windows whose alarms stand unchallenged: judged an
    upset, or put to an engineer who refused to retrain (the model is right) or did not answer.
    Training keeps them out of its fit and its held-out normal rows; a normal label from people
    (false-alarm feedback, the lab) overrides them."""
    from plantops.stages import decisions
    from plantops.stages.training import UPSET

    window = parse_duration(use_case.monitoring.window)
    rows = decisions.latest(use_case.id, limit=1000, asset=decisions.decision_asset(use_case, asset))
    newest: dict[tuple[str, str], dict] = {}
    for r in rows:  # newest first: the last word on each window counts
        day, who = r["payload"].get("day"), r["payload"].get("asset") or (asset or use_case.assets[0])
        if day and r["kind"] in ("monitor", "approval"):
            newest.setdefault((who, day), r)
    return [{"asset": who, "start_ts": utc_day(day), "end_ts": utc_day(day) + window, "label": UPSET,
             "source": "monitor"}
            for (who, day), r in sorted(newest.items())
            if (asset is None or who == asset) and r["branch"] in ("upset", "refused", "timed_out")]


def training_rows(use_case: UseCase, asset: str | None) -> TrainingRows:
    """Every feature row of the asset (or the use case) and the labels of its assets."""
    import pandas as pd

    from plantops.modalities.tags.features import load_features
    from plantops.sources import historian

    features = load_features(use_case.id, asset=asset)
    if features.empty:
        raise NoFeatures(f"no features for {use_case.id}/{asset} yet: run {use_case.id}__features first")
    labels = historian.read_labels_of(use_case.assets if asset is None else (asset,),
                                       conn_id=use_case.historian_conn)
    suspects = suspect_windows(use_case, asset)
    if suspects:
        labels = pd.concat([labels, pd.DataFrame(suspects)], ignore_index=True)
    return TrainingRows(features, labels)


def train(use_case: UseCase, rows: TrainingRows, reference_start: datetime | None, run_tags: dict[str, str],
          asset: str | None) -> dict[str, Any]:
    """Fit, register and judge the kind on the rows (:func:`plantops.stages.training.train_and_register`)."""
    from plantops.stages.training import train_and_register

    end = rows.features["ts"].max() + timedelta(seconds=use_case.features.bucket_seconds)
    return train_and_register(use_case, rows.features, rows.labels, end=end, reference_start=reference_start,
                              run_tags=run_tags, asset=asset)
