"""Training, evaluation and champion/challenger promotion of a use case's fault detector.

One call of :func:`train_and_register` is one training run:

1. :func:`select_training_data` splits the wide features into the fit window and a held-out set.
   The held-out set depends on the features and the labels only, never on the fit window, so a
   champion trained weeks ago and today's challenger are judged on exactly the same rows.
2. The shipped detector and the textbook baseline (:mod:`plantops.detectors`) are fitted on the
   same rows and evaluated side by side: false-alarm rate on held-out normal operation, detection
   rate per labelled fault.
3. The detector is logged to MLflow (experiment and registered model named after the use case),
   with its reference sample for drift monitoring, and gets the alias ``challenger``.
4. The current ``champion`` is scored on the same held-out rows. The challenger takes the alias
   only if it detects more faults without exceeding the false-alarm budget (or if there is no
   champion). The decision and its reason are tagged on the run and on the model version.
5. Every registered version is explained (:mod:`plantops.explain`): which tags drive its alarms
   on the held-out fault rows, as artifacts of its run and a ``top_tags`` version tag.

Reruns are safe: a version tagged with the same ``airflow_run_id`` is returned, not duplicated;
one whose decision was interrupted is decided on rerun instead of being registered again.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from plantops.config import UseCase
    from plantops.detectors import PCAMonitor

log = logging.getLogger(__name__)

NORMAL = "normal"
RUN_ID_TAG = "airflow_run_id"
HOLDOUT_QUANTILE = 0.7
REFERENCE_ROWS = 5000
# The evaluation of a model that could not be evaluated: every metric undefined.
_EMPTY: dict[str, Any] = {"far": math.nan, "detection_rate": math.nan, "detection_rates": {}}


@dataclass(frozen=True)
class TrainingData:
    """Rows of the wide feature frame (``asset``, ``ts``, features), split for one training run.

    ``fit``: the fit window minus fault-labelled and held-out rows. ``holdout_normal``: the last
    30 % (in time) of the rows labelled normal. ``holdout_faults``: the rows inside fault labels,
    with their ``label`` column.
    """

    fit: pd.DataFrame
    holdout_normal: pd.DataFrame
    holdout_faults: pd.DataFrame


def _utc(value: Any) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _label_of_rows(features: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """The label of each feature row ('' when unlabelled). Intervals are [start_ts, end_ts) of
    the label's asset; a missing end_ts means the label is still open. Faults win over normal,
    so a row under both never counts as normal operation."""
    import pandas as pd

    out = pd.Series("", index=features.index, dtype=object)
    if labels.empty:
        return out
    ts = pd.to_datetime(features["ts"], utc=True)
    starts = pd.to_datetime(labels["start_ts"], utc=True)
    ends = pd.to_datetime(labels["end_ts"], utc=True)
    order = (labels["label"] != NORMAL).astype(int).to_numpy()  # normal first, faults overwrite
    for i in sorted(range(len(labels)), key=lambda k: order[k]):
        inside = (features["asset"] == labels["asset"].iloc[i]) & (ts >= starts.iloc[i])
        if not pd.isna(ends.iloc[i]):
            inside &= ts < ends.iloc[i]
        out[inside] = str(labels["label"].iloc[i])
    return out


def select_training_data(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    end: pd.Timestamp,
    train_days: int,
    reference_start: pd.Timestamp | None = None,
    warmup: pd.Timedelta | None = None,
) -> TrainingData:
    """Split wide features into fit rows and a held-out set (see :class:`TrainingData`).

    Fit rows: ``end - train_days <= ts < end``, outside every fault label, not held out, and at or
    after ``reference_start`` when given (after a process change, older normal data describes a
    plant that no longer exists). Unlabelled rows count as normal operation.

    Rows within ``warmup`` after the start of a labelled period are left out of everything: their
    rolling windows still reach into the previous state, so they belong to neither.
    """
    import pandas as pd

    if warmup is not None and warmup > pd.Timedelta(0) and len(labels):
        ts_all = pd.to_datetime(features["ts"], utc=True)
        settling = pd.Series(False, index=features.index)
        for start in pd.to_datetime(labels["start_ts"], utc=True):
            settling |= (ts_all >= start) & (ts_all < start + warmup)
        features = features[~settling]

    missing = {"asset", "start_ts", "end_ts", "label"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels lack columns {sorted(missing)}")
    ts = pd.to_datetime(features["ts"], utc=True)
    label = _label_of_rows(features, labels)
    is_fault = (label != "") & (label != NORMAL)
    is_normal = label == NORMAL

    cutoff = ts[is_normal].quantile(HOLDOUT_QUANTILE) if is_normal.any() else None
    holdout_normal = is_normal & (ts >= cutoff) if cutoff is not None else pd.Series(False, index=ts.index)

    end = _utc(end)
    fit = (ts >= end - pd.Timedelta(days=train_days)) & (ts < end) & ~is_fault & ~holdout_normal
    if reference_start is not None:
        fit &= ts >= _utc(reference_start)

    def rows(mask: pd.Series) -> pd.DataFrame:
        return features[mask].sort_values(["asset", "ts"]).reset_index(drop=True)

    faults = features[is_fault].assign(label=label[is_fault])
    return TrainingData(
        fit=rows(fit),
        holdout_normal=rows(holdout_normal),
        holdout_faults=faults.sort_values(["asset", "ts"]).reset_index(drop=True),
    )


def evaluate(model: PCAMonitor, data: TrainingData) -> dict[str, Any]:
    """Held-out performance: false-alarm rate on normal rows, detection rate per fault label and
    their unweighted mean (each fault counts once, however long its labelled episode). NaN when
    the held-out set has no rows of that kind."""
    import numpy as np

    far = float(model.predict(data.holdout_normal).mean()) if len(data.holdout_normal) else math.nan
    rates: dict[str, float] = {}
    if len(data.holdout_faults):
        alarms = model.predict(data.holdout_faults)
        by_label = data.holdout_faults["label"].to_numpy()
        rates = {str(lab): float(alarms[by_label == lab].mean()) for lab in sorted(set(by_label))}
    return {
        "far": far,
        "detection_rate": float(np.mean(list(rates.values()))) if rates else math.nan,
        "detection_rates": rates,
        "n_fit": len(data.fit),
        "n_holdout_normal": len(data.holdout_normal),
        "n_holdout_faults": len(data.holdout_faults),
    }


def _metric_key(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def _flat_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """MLflow metrics of one evaluation; undefined (NaN) values are left out, not logged as NaN."""
    flat = {f"{prefix}far": result["far"], f"{prefix}detection_rate": result["detection_rate"]}
    for label, rate in result["detection_rates"].items():
        flat[f"{prefix}detection_rate_{_metric_key(label)}"] = rate
    return {k: float(v) for k, v in flat.items() if v is not None and not math.isnan(v)}


def _pip_requirements() -> list[str]:
    # Pinned explicitly: MLflow would otherwise infer them by loading the model in a subprocess,
    # which costs ~20 s per training on a small worker.
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "numpy", "pandas", "skops")]


def _experiment_id(client: MlflowClient, use_case: UseCase) -> str:
    from plantops.settings import get_settings

    experiment = client.get_experiment_by_name(use_case.id)
    if experiment is not None:
        return experiment.experiment_id
    root = get_settings().mlflow_artifact_root
    # A tracking server chooses (and serves) the artifact location itself.
    location = f"{root.rstrip('/')}/{use_case.id}" if root else None
    return client.create_experiment(use_case.id, artifact_location=location)


def _log_and_register(
    client: MlflowClient,
    use_case: UseCase,
    detector: PCAMonitor,
    baseline: PCAMonitor,
    evaluations: dict[str, dict[str, Any]],
    data: TrainingData,
    window: tuple[pd.Timestamp, pd.Timestamp],
    reference_start: pd.Timestamp | None,
    run_tags: dict[str, str],
) -> tuple[str, str]:
    """One MLflow run with params, side-by-side metrics, the model and its reference sample."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    from plantops.registry import CHALLENGER, REFERENCE_ARTIFACT, TRUSTED_TYPES

    X = data.fit[detector.columns_]
    with mlflow.start_run(experiment_id=_experiment_id(client, use_case), tags=run_tags) as run:
        mlflow.log_params({
            "use_case": use_case.id,
            "model_kind": use_case.model.kind,
            "explained_variance": use_case.model.explained_variance,
            "false_alarm_rate": use_case.model.false_alarm_rate,
            "n_components": detector.n_components_,
            "calibration_folds": detector.calibration_folds,
            "baseline_n_components": baseline.n_components_,
            "n_features": detector.n_features_in_,
            "bucket": use_case.features.bucket,
            "rolling_buckets": use_case.features.rolling_buckets,
            "train_days": use_case.model.train_days,
            "fit_start": window[0].isoformat(),
            "fit_end": window[1].isoformat(),
            "reference_start": "none" if reference_start is None else _utc(reference_start).isoformat(),
        })
        mlflow.log_metrics({
            **_flat_metrics(evaluations["detector"]),
            **_flat_metrics(evaluations["baseline"], prefix="baseline_"),
            "n_fit_rows": len(data.fit),
            "n_holdout_normal": len(data.holdout_normal),
            "n_holdout_faults": len(data.holdout_faults),
            "t2_limit": detector.t2_limit_,
            "q_limit": detector.q_limit_,
        })
        info = mlflow.sklearn.log_model(
            detector,
            name="model",
            signature=infer_signature(X, detector.score_samples(X)),
            input_example=X.head(5),
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=_pip_requirements(),
        )
        # An evenly spaced sample keeps the whole fit window's spread (daily cycles, grade
        # changes) in the drift reference, which the last N rows would not.
        step = np.linspace(0, len(X) - 1, min(len(X), REFERENCE_ROWS)).astype(int)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            X.iloc[np.unique(step)].reset_index(drop=True).to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        # The version is created with its tags in one call (one transaction in the tracking
        # store): a version without its airflow_run_id tag would be invisible to a retry's
        # idempotency check, and the retry would register a second one.
        registered = mlflow.register_model(info.model_uri, use_case.id, tags={**run_tags, "use_case": use_case.id})
        run_id = run.info.run_id
    version = str(registered.version)
    from plantops import registry

    with registry.promotion_lock(use_case.id):  # the store's alias upsert is not atomic: two trainings race on it
        client.set_registered_model_alias(use_case.id, CHALLENGER, version)
    log.info("use case %s: registered version %s (run %s) as %s", use_case.id, version, run_id, CHALLENGER)
    return version, run_id


def _decide(
    use_case: UseCase,
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    champion_version: str | None,
) -> tuple[bool, str]:
    target = use_case.model.false_alarm_rate
    far_limit = target * 1.5 + 0.005
    if champion_version is None:
        return True, "no champion to compare with"
    if champion is None:
        return True, f"champion v{champion_version} cannot score the current features"
    far, rate, best = challenger["far"], challenger["detection_rate"], champion["detection_rate"]
    if math.isnan(rate) or math.isnan(far):
        return False, "held-out set lacks fault-labelled or normal-labelled rows: nothing to compare on"
    if far > far_limit:
        return False, f"false-alarm rate {far:.4f} above the limit {far_limit:.4f} (target {target})"
    if math.isnan(best) or rate > best:
        return True, (
            f"detection rate {rate:.4f} > champion v{champion_version} {best:.4f} "
            f"at false-alarm rate {far:.4f} <= {far_limit:.4f}"
        )
    return False, f"detection rate {rate:.4f} not above champion v{champion_version} {best:.4f}"


def _decide_and_record(
    client: MlflowClient,
    use_case: UseCase,
    version: str,
    run_id: str,
    evaluations: dict[str, dict[str, Any]],
    data: TrainingData,
) -> dict[str, Any]:
    """Score the champion on the same held-out rows, move the alias if the challenger wins, and
    record the decision. The ``decision`` version tag is written last: its presence marks a
    training run as complete for the idempotency check."""
    from plantops import registry

    # Compare and move the alias under one lock: two trainings finishing together must not both
    # promote, and the alias must never land on a version that lost to the current champion.
    with registry.promotion_lock(use_case.id):
        before = registry.champion(use_case.id)
        champion_eval: dict[str, Any] | None = None
        if before is not None and before[0] == version:
            # A rerun after the alias moved but before the decision was tagged.
            promoted, reason = True, "already champion (decision completed on rerun)"
        else:
            if before is not None:
                try:
                    champion_eval = evaluate(registry.load_version(use_case.id, before[0]), data)
                except (KeyError, ValueError) as exc:
                    log.warning("champion v%s cannot score the current features: %s", before[0], exc)
            promoted, reason = _decide(
                use_case, evaluations["detector"], champion_eval, None if before is None else before[0]
            )
        if promoted:
            registry.set_alias(use_case.id, registry.CHAMPION, version)
    champion_version = version if promoted or before is None else before[0]
    metrics = {
        **_flat_metrics(evaluations["detector"]),
        **_flat_metrics(evaluations["baseline"], prefix="baseline_"),
    }
    champion_metrics = _flat_metrics(evaluations["detector"] if promoted else champion_eval or _EMPTY)
    for key, value in _flat_metrics(champion_eval or _EMPTY, prefix="previous_champion_").items():
        client.log_metric(run_id, key, value)
    decision = "promoted" if promoted else "kept_champion"
    result = {
        "version": version,
        "run_id": run_id,
        "promoted": promoted,
        "reason": reason,
        "metrics": metrics,
        "champion_version": champion_version,
        "champion_metrics": champion_metrics,
    }
    client.log_dict(run_id, {
        "target_far": use_case.model.false_alarm_rate,
        "far_limit": use_case.model.false_alarm_rate * 1.5 + 0.005,
        "detector": _jsonable(evaluations["detector"]),
        "baseline": _jsonable(evaluations["baseline"]),
        "previous_champion": None if before is None else {
            "version": before[0], "evaluation": None if champion_eval is None else _jsonable(champion_eval)
        },
        "decision": decision,
        "result": result,
    }, "comparison.json")
    for key, value in {"decision": decision, "reason": reason, "champion_version": champion_version}.items():
        client.set_tag(run_id, key, value)
    client.set_model_version_tag(use_case.id, version, "reason", reason)
    client.set_model_version_tag(use_case.id, version, "decision", decision)
    log.info("use case %s: version %s %s: %s", use_case.id, version, decision, reason)
    return result


def _jsonable(evaluation: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: undefined rates become null."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return None if isinstance(value, float) and math.isnan(value) else value

    return clean(evaluation)


def _stored_result(version: Any) -> dict[str, Any]:
    """The result recorded by the run that registered ``version`` (its decision, as made)."""
    import mlflow.artifacts

    stored = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/comparison.json")
    return stored["result"]


def train_and_register(
    use_case: UseCase,
    features: pd.DataFrame,
    labels: pd.DataFrame,
    end: pd.Timestamp,
    reference_start: pd.Timestamp | None = None,
    run_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train, log, register and (maybe) promote. Returns {version, run_id, promoted, reason,
    metrics, champion_version, champion_metrics}; see the module docstring."""
    import pandas as pd

    from plantops import explain, registry
    from plantops.detectors import build_baseline, build_detector

    # Data first: a window too short to train on fails before anything touches MLflow.
    end = _utc(end)
    window = (end - pd.Timedelta(days=use_case.model.train_days), end)
    warmup = pd.Timedelta(seconds=use_case.features.bucket_seconds * use_case.features.rolling_buckets)
    data = select_training_data(features, labels, end, use_case.model.train_days, reference_start, warmup)
    minimum = use_case.model.min_train_rows
    if len(data.fit) < minimum:
        since = "" if reference_start is None else f", at or after reference_start {_utc(reference_start)}"
        raise ValueError(
            f"use case {use_case.id}: only {len(data.fit)} training rows in "
            f"[{window[0]}, {window[1]}){since} "
            f"outside fault labels and the held-out normal rows; model.min_train_rows is {minimum}. "
            "Wait for more history, widen model.train_days or move reference_start back."
        )

    client = registry.configure()
    tags = {str(k): str(v) for k, v in (run_tags or {}).items()}
    existing = None
    if tags.get(RUN_ID_TAG):
        existing = registry.version_by_run_tag(use_case.id, RUN_ID_TAG, tags[RUN_ID_TAG])
    if existing is not None and existing.tags.get("decision"):
        log.info("use case %s: %s=%s already registered as version %s; not training again",
                 use_case.id, RUN_ID_TAG, tags[RUN_ID_TAG], existing.version)
        return _stored_result(existing)

    baseline = build_baseline(use_case).fit(data.fit)
    if existing is None:
        detector = build_detector(use_case).fit(data.fit)
    else:
        log.warning("use case %s: version %s of %s=%s has no decision (interrupted run); deciding now",
                    use_case.id, existing.version, RUN_ID_TAG, tags[RUN_ID_TAG])
        detector = registry.load_version(use_case.id, existing.version)
    evaluations = {"detector": evaluate(detector, data), "baseline": evaluate(baseline, data)}
    log.info("use case %s: detector %s / baseline %s", use_case.id,
             _flat_metrics(evaluations["detector"]), _flat_metrics(evaluations["baseline"]))

    if existing is None:
        version, run_id = _log_and_register(
            client, use_case, detector, baseline, evaluations, data, window, reference_start, tags
        )
    else:
        version, run_id = str(existing.version), existing.run_id
    if existing is None or not existing.tags.get(explain.TOP_TAGS_TAG):
        # Before the decision tag, so a version is only ever complete with its explanation.
        explain.log_model_explanation(client, use_case, version, run_id, detector, data)
    return _decide_and_record(client, use_case, version, run_id, evaluations, data)
