"""Training, evaluation and champion/challenger promotion of a use case's fault detector.

One call of :func:`train_and_register` is one training run:

1. :func:`select_training_data` splits the wide features into the fit window and a held-out set.
   The held-out set depends on the features, the labels and the reference start only, never on the
   fit window, so a champion trained weeks ago and today's challenger are judged on exactly the
   same rows.
2. The use case's model kind (:mod:`plantops.kinds`, ``model.kind``), the kind's classic baselines
   and the kinds named in ``model.compare_with`` are fitted on the same rows and evaluated side by
   side through the kind contract: false-alarm rate on held-out normal operation, detection rate and
   delay per labelled fault, and for a regression kind its target's held-out errors.
3. The model is logged to MLflow (experiment and registered model named after the use case),
   with its reference sample for drift monitoring, and gets the alias ``challenger``.
4. The current ``champion`` is scored on the same held-out rows. The challenger takes the alias
   only if it detects more faults without exceeding the false-alarm budget (or if there is no
   champion), or if the champion is no longer valid: beyond the false-alarm limit on today's
   normal rows (after the reference start, or confirmed normal since it was trained; see
   :meth:`plantops.kinds.base.ModelKind.gate`). The decision and its reason are tagged on the run and on the model version.
5. Every registered version is explained (:mod:`plantops.stages.explain`): which tags drive its alarms
   on the held-out fault rows, as artifacts of its run and a ``top_tags`` version tag.

Reruns are safe: a version tagged with the same ``airflow_run_id`` is returned, not duplicated;
one whose decision was interrupted is decided on rerun instead of being registered again.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantops.kinds.base import TrainingData, far_limit  # noqa: F401 - TrainingData re-exported

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from plantops.config import UseCase
    from plantops.kinds.base import ModelKind

log = logging.getLogger(__name__)

NORMAL = "normal"
# Windows the monitor judged an upset: suspected faults, kept out of fit and held-out normal rows
# until someone labels them (normal, or a fault).
UPSET = "upset"
_PRECEDENCE = {UPSET: 0, NORMAL: 1}  # applied in this order; any other label (a fault) last
MODEL = "model"  # the evaluation of the trained model, beside its baselines and comparisons
RUN_ID_TAG = "airflow_run_id"
HOLDOUT_QUANTILE = 0.7
REFERENCE_ROWS = 5000
# Held-out normal rows of today's plant needed before a champion's false alarms there make it invalid.
MIN_NEW_NORMAL_ROWS = 50
# The evaluation of a model that could not be evaluated: every metric undefined.
_EMPTY: dict[str, Any] = {"far": math.nan, "detection_rate": math.nan, "detection_rates": {}}


def _utc(value: Any) -> pd.Timestamp:
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _label_of_rows(features: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """The label of each feature row ('' when unlabelled). Intervals are [start_ts, end_ts) of
    the label's asset; a missing end_ts means the label is still open. Normal overwrites a
    suspected upset (people confirmed it), faults overwrite both, so a row under a fault label
    never counts as normal operation."""
    import pandas as pd

    out = pd.Series("", index=features.index, dtype=object)
    if labels.empty:
        return out
    ts = pd.to_datetime(features["ts"], utc=True)
    starts = pd.to_datetime(labels["start_ts"], utc=True)
    ends = pd.to_datetime(labels["end_ts"], utc=True)
    order = [_PRECEDENCE.get(str(label), 2) for label in labels["label"]]
    for i in sorted(range(len(labels)), key=lambda k: order[k]):
        out[_inside(features, ts, labels["asset"].iloc[i], starts.iloc[i], ends.iloc[i])] = str(labels["label"].iloc[i])
    return out


def _inside(features: pd.DataFrame, ts: pd.Series, asset: str, start: pd.Timestamp, end: Any) -> pd.Series:
    import pandas as pd

    inside = (features["asset"] == asset) & (ts >= start)
    return inside & (ts < end) if not pd.isna(end) else inside


def select_training_data(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    end: pd.Timestamp,
    train_days: int,
    reference_start: pd.Timestamp | None = None,
    warmup: pd.Timedelta | None = None,
) -> TrainingData:
    """Split wide features into fit rows and a held-out set (see :class:`TrainingData`).

    Normal operation is what people labelled normal (lab results, false-alarm feedback); without
    any normal label, every unlabelled row. Each normal period keeps its last 30 % (in time) for
    the held-out set, so every state the plant was confirmed normal in is both learned and tested.

    After ``reference_start`` (a new normal declared by a process engineer) older rows describe a
    plant that no longer exists: normal operation is then every row at or after it outside fault
    and upset labels, its last 30 % held out, and nothing before it is fitted or held out as normal.
    The fault library (every fault label) stays, so the gate still sees what the model detects.

    Fit rows: ``end - train_days <= ts < end``, normal operation or unlabelled, not held out.
    Rows labelled ``upset`` (windows the monitor judged an upset, no one confirmed normal) are in
    neither set: a suspected fault must not be learned as normal. Rows within ``warmup`` after the
    start of a labelled period or of the reference are left out of everything: their rolling
    windows still reach into the previous state.
    """
    import pandas as pd

    series = features.sort_values(["asset", "ts"]).reset_index(drop=True)
    features = series
    missing = {"asset", "start_ts", "end_ts", "label"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels lack columns {sorted(missing)}")
    if warmup is not None and warmup > pd.Timedelta(0):
        starts = list(pd.to_datetime(labels["start_ts"], utc=True)) if len(labels) else []
        if reference_start is not None:
            starts.append(_utc(reference_start))
        ts_all = pd.to_datetime(features["ts"], utc=True)
        settling = pd.Series(False, index=features.index)
        for start in starts:
            settling |= (ts_all >= start) & (ts_all < start + warmup)
        features = features[~settling]

    ts = pd.to_datetime(features["ts"], utc=True)
    label = _label_of_rows(features, labels)
    is_fault = ~label.isin(["", NORMAL, UPSET])
    usable = ~is_fault & (label != UPSET)
    end = _utc(end)
    holdout_normal = pd.Series(False, index=ts.index)
    if reference_start is not None:
        is_normal = usable & (ts >= _utc(reference_start))
        periods = [is_normal]
    elif (label == NORMAL).any():
        is_normal = label == NORMAL
        periods = [is_normal & _inside(features, ts, row.asset, _utc(row.start_ts),
                                       row.end_ts if pd.isna(row.end_ts) else _utc(row.end_ts))
                   for row in labels[labels["label"] == NORMAL].itertuples(index=False)]
    else:
        # No normal labels at all (e.g. a fleet without lab confirmation): unlabelled rows count
        # as normal operation, and the newest of them are held out.
        is_normal = label == ""
        periods = [is_normal]
    for period in periods:
        if period.any():
            holdout_normal |= period & (ts >= ts[period].quantile(HOLDOUT_QUANTILE))

    fit = (ts >= end - pd.Timedelta(days=train_days)) & (ts < end) & usable & ~holdout_normal
    if reference_start is not None:
        fit &= ts >= _utc(reference_start)

    return TrainingData(
        fit=features[fit],
        holdout_normal=features[holdout_normal],
        holdout_faults=features[is_fault].assign(label=label[is_fault]),
        series=series,
    )


def _metric_key(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", label)


def _flat_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """MLflow metrics of one evaluation; undefined (NaN) values are left out, not logged as NaN."""
    flat = {f"{prefix}{key}": result[key] for key in ("far", "detection_rate", "detection_delay", "rmse", "mae",
                                                    "accuracy", "balanced_accuracy", "defect_recall",
                                                    "false_reject_rate")
            if key in result}
    for label, recall in result.get("recall", {}).items():  # a classifier's recall per class
        flat[f"{prefix}recall_class_{_metric_key(label)}"] = recall
    for label, rate in result["detection_rates"].items():
        flat[f"{prefix}detection_rate_{_metric_key(label)}"] = rate
    for label, delay in result.get("detection_delays", {}).items():
        flat[f"{prefix}detection_delay_{_metric_key(label)}"] = delay
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
    try:
        return client.create_experiment(use_case.id, artifact_location=location)
    except Exception:  # noqa: BLE001 - a fleet's per-asset trainings race to create it
        experiment = client.get_experiment_by_name(use_case.id)
        if experiment is None:
            raise
        return experiment.experiment_id


def _side_by_side(evaluations: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The model's metrics plain, every other evaluation's with its name as prefix."""
    metrics: dict[str, float] = {}
    for name, result in evaluations.items():
        metrics.update(_flat_metrics(result, prefix="" if name == MODEL else f"{name}_"))
    return metrics


def _log_and_register(
    client: MlflowClient,
    use_case: UseCase,
    name: str,
    kind: ModelKind,
    model: Any,
    evaluations: dict[str, dict[str, Any]],
    params: dict[str, Any],
    metrics: dict[str, float],
    reference: pd.DataFrame,
    run_tags: dict[str, str],
    example: pd.DataFrame | None = None,
) -> tuple[str, str]:
    """One MLflow run with params, side-by-side metrics, the model (with a signature from
    ``example`` when given) and its drift reference sample; registered as ``challenger``."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from plantops import kinds
    from plantops.stages.registry import CHALLENGER, REFERENCE_ARTIFACT

    with mlflow.start_run(experiment_id=_experiment_id(client, use_case), run_name=name, tags=run_tags) as run:
        mlflow.log_params({
            "use_case": use_case.id,
            "registered_model": name,
            "model_kind": kind.name,
            "compared_with": ",".join(k for k in evaluations if k != MODEL) or "none",
            **{f"param_{k}": v for k, v in kind.params.model_dump().items()},
            **{k: v for k, v in kind.log_params(model).items() if v is not None},
            **params,
        })
        mlflow.log_metrics({**_side_by_side(evaluations), **metrics})
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=None if example is None else infer_signature(example, model.score_samples(example)),
            input_example=None if example is None else example.head(5),
            serialization_format="skops",
            skops_trusted_types=kinds.trusted_types(),
            pip_requirements=_pip_requirements(),
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
            reference.reset_index(drop=True).to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        # The version is created with its tags in one call (one transaction in the tracking
        # store): a version without its airflow_run_id tag would be invisible to a retry's
        # idempotency check, and the retry would register a second one.
        registered = mlflow.register_model(info.model_uri, name, tags={
            **run_tags, "use_case": use_case.id, "model_kind": kind.name})
        run_id = run.info.run_id
    version = str(registered.version)
    from plantops.stages import registry

    with registry.promotion_lock(name):  # the store's alias upsert is not atomic: two trainings race on it
        client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("model %s: registered version %s (run %s) as %s", name, version, run_id, CHALLENGER)
    return version, run_id


def _log_tag_model(client: MlflowClient, use_case: UseCase, name: str, kind: ModelKind, model: Any,
                   evaluations: dict[str, dict[str, Any]], data: TrainingData,
                   window: tuple[pd.Timestamp, pd.Timestamp], reference_start: pd.Timestamp | None,
                   run_tags: dict[str, str]) -> tuple[str, str]:
    """:func:`_log_and_register` for a model of tags: its fit window and feature settings."""
    import numpy as np

    X = data.fit[list(model.columns_)]
    # An evenly spaced sample keeps the whole fit window's spread (daily cycles, grade changes) in
    # the drift reference, which the last N rows would not. It holds the model's columns and the
    # kind's drift columns.
    columns = list(dict.fromkeys([*model.columns_, *kind.drift_columns()]))
    step = np.unique(np.linspace(0, len(X) - 1, min(len(X), REFERENCE_ROWS)).astype(int))
    params = {
        "false_alarm_rate": use_case.model.false_alarm_rate,
        "n_features": len(model.columns_),
        "bucket": use_case.features.bucket,
        "rolling_buckets": use_case.features.rolling_buckets,
        "train_days": use_case.model.train_days,
        "fit_start": window[0].isoformat(),
        "fit_end": window[1].isoformat(),
        "reference_start": "none" if reference_start is None else _utc(reference_start).isoformat(),
    }
    metrics = {"n_fit_rows": len(data.fit), "n_holdout_normal": len(data.holdout_normal),
               "n_holdout_faults": len(data.holdout_faults)}
    return _log_and_register(client, use_case, name, kind, model, evaluations, params, metrics,
                             data.fit[columns].iloc[step], run_tags, example=X)


def _decide_and_record(
    client: MlflowClient,
    use_case: UseCase,
    name: str,
    kind: ModelKind,
    version: str,
    run_id: str,
    evaluations: dict[str, dict[str, Any]],
    data: TrainingData,
    reference_start: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """Score the champion on the same held-out rows, move the alias if the challenger wins, and
    record the decision. The ``decision`` version tag is written last: its presence marks a
    training run as complete for the idempotency check."""
    from plantops.kinds import UnknownKind, kind_of
    from plantops.stages import registry

    # Compare and move the alias under one lock: two trainings finishing together must not both
    # promote, and the alias must never land on a version that lost to the current champion.
    with registry.promotion_lock(name):
        before = registry.champion(name)
        champion_eval: dict[str, Any] | None = None
        new_normal: dict[str, Any] | None = None
        if before is not None and before[0] == version:
            # A rerun after the alias moved but before the decision was tagged.
            promoted, reason = True, "already champion (decision completed on rerun)"
        else:
            if before is not None:
                try:
                    # The champion may be of another kind than the YAML names now: judged by its own.
                    champion_model = registry.load_version(name, before[0])
                    champion_kind = kind_of(use_case, champion_model)
                    champion_eval = champion_kind.evaluate(champion_model, data)
                    if champion_kind.output != "classifier":  # inspectors' labels judge a classifier
                        new_normal = _on_new_normal(client, champion_kind, champion_model, before[1], data,
                                                    reference_start)
                except (KeyError, ValueError, UnknownKind) as exc:
                    log.warning("champion v%s cannot score the current features: %s", before[0], exc)
            promoted, reason = kind.gate(evaluations[MODEL], champion_eval, None if before is None else before[0],
                                         new_normal)
        if promoted:
            registry.set_alias(name, registry.CHAMPION, version)
    # No champion at all when the first challenger was refused (a degenerate classifier).
    champion_version = version if promoted else (before[0] if before is not None else None)
    metrics = _side_by_side(evaluations)
    champion_metrics = _flat_metrics(evaluations[MODEL] if promoted else champion_eval or _EMPTY)
    for key, value in _flat_metrics(champion_eval or _EMPTY, prefix="previous_champion_").items():
        client.log_metric(run_id, key, value)
    decision = "promoted" if promoted else "kept_champion"
    result = {
        "version": version,
        "run_id": run_id,
        "registered_model": name,
        "model_kind": kind.name,
        "promoted": promoted,
        "reason": reason,
        "metrics": metrics,
        "champion_version": champion_version,
        "champion_metrics": champion_metrics,
    }
    refused = {label: e["degenerate"] for label, e in evaluations.items() if e.get("degenerate")}
    if refused:  # classifiers: the models the gate would refuse as degenerate, and why
        result["degenerate"] = refused
    client.log_dict(run_id, {
        "target_far": use_case.model.false_alarm_rate,
        "far_limit": far_limit(use_case.model.false_alarm_rate),
        **{key: _jsonable(value) for key, value in evaluations.items()},
        "previous_champion": None if before is None else {
            "version": before[0], "evaluation": None if champion_eval is None else _jsonable(champion_eval),
            "on_new_normal": new_normal,
        },
        "decision": decision,
        "result": result,
    }, "comparison.json")
    for key, value in {"decision": decision, "reason": reason, "champion_version": champion_version or "none"}.items():
        client.set_tag(run_id, key, value)
    client.set_model_version_tag(name, version, "reason", reason)
    client.set_model_version_tag(name, version, "decision", decision)
    log.info("model %s: version %s %s: %s", name, version, decision, reason)
    return result


def _on_new_normal(client: MlflowClient, kind: ModelKind, model: Any, run_id: str, data: TrainingData,
                   reference_start: pd.Timestamp | None) -> dict[str, Any] | None:
    """The champion's false-alarm rate on the held-out normal rows of today's plant: after the
    reference start when there is one, else those after the end of the champion's own fit window
    (normal operation people confirmed since it was trained). None with fewer than
    :data:`MIN_NEW_NORMAL_ROWS` such rows: too few to overrule the usual comparison."""
    import pandas as pd

    if reference_start is not None:
        since = _utc(reference_start)
    else:
        fit_end = client.get_run(run_id).data.params.get("fit_end")
        if not fit_end:
            return None
        since = _utc(fit_end)
    rows = data.holdout_normal[pd.to_datetime(data.holdout_normal["ts"], utc=True) >= since]
    if len(rows) < MIN_NEW_NORMAL_ROWS:
        return None
    subset = TrainingData(data.fit, rows, data.holdout_faults.iloc[:0], data.series)
    return {"since": since.isoformat(), "rows": len(rows), "champion_far": float(kind.evaluate(model, subset)["far"])}


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


def _registered_by_this_run(name: str, tags: dict[str, str]) -> Any:
    """The version this Airflow run registered already (a retry), else None. One with a decision
    is complete (its stored result is returned); one without was interrupted (decided now)."""
    from plantops.stages import registry

    existing = registry.version_by_run_tag(name, RUN_ID_TAG, tags[RUN_ID_TAG]) if tags.get(RUN_ID_TAG) else None
    if existing is not None and existing.tags.get("decision"):
        log.info("model %s: %s=%s already registered as version %s; not training again",
                 name, RUN_ID_TAG, tags[RUN_ID_TAG], existing.version)
    elif existing is not None:
        log.warning("model %s: version %s of %s=%s has no decision (interrupted run); deciding now",
                    name, existing.version, RUN_ID_TAG, tags[RUN_ID_TAG])
    return existing


def evaluate_side_by_side(use_case: UseCase, kind: ModelKind, model: Any, data: Any) -> dict[str, dict[str, Any]]:
    """The model's held-out evaluation, then the kind's classic baselines and the kinds named in
    ``model.compare_with``, each fitted on the same rows and evaluated on the same held-out rows."""
    from plantops.kinds import get_kind

    evaluations = {MODEL: kind.evaluate(model, data)}
    others = [(label, kind, est) for label, est in kind.baselines().items()]
    for other_name in use_case.model.compare_with:
        if other_name != kind.name:
            other = get_kind(use_case, other_name)
            others.append((other_name, other, other.build()))
    for label, owner, estimator in others:
        if label not in evaluations:
            evaluations[label] = owner.evaluate(owner.fit(estimator, data.fit), data)
    return evaluations


def train_and_register(
    use_case: UseCase,
    features: pd.DataFrame,
    labels: pd.DataFrame,
    end: pd.Timestamp,
    reference_start: pd.Timestamp | None = None,
    run_tags: dict[str, str] | None = None,
    asset: str | None = None,
) -> dict[str, Any]:
    """Train, log, register and (maybe) promote the registered model of ``asset`` (a per-asset
    fleet) or of the use case. Returns {version, run_id, promoted, reason, metrics,
    champion_version, champion_metrics, ...}; see the module docstring."""
    import pandas as pd

    from plantops.kinds import get_kind
    from plantops.stages import explain, registry

    name = use_case.model_name(asset)
    kind = get_kind(use_case)
    # Data first: a window too short to train on fails before anything touches MLflow.
    end = _utc(end)
    window = (end - pd.Timedelta(days=use_case.model.train_days), end)
    warmup = pd.Timedelta(seconds=use_case.features.bucket_seconds * use_case.features.rolling_buckets)
    data = select_training_data(features, labels, end, use_case.model.train_days, reference_start, warmup)
    minimum = use_case.model.min_train_rows
    if len(data.fit) < minimum:
        since = "" if reference_start is None else f", at or after reference_start {_utc(reference_start)}"
        raise ValueError(
            f"model {name}: only {len(data.fit)} training rows in "
            f"[{window[0]}, {window[1]}){since} "
            f"outside fault labels and the held-out normal rows; model.min_train_rows is {minimum}. "
            "Wait for more history, widen model.train_days or move reference_start back."
        )

    client = registry.configure()
    tags = {str(k): str(v) for k, v in (run_tags or {}).items()}
    if asset is not None:
        tags["asset"] = asset
    existing = _registered_by_this_run(name, tags)
    if existing is not None and existing.tags.get("decision"):
        return _stored_result(existing)
    model = kind.fit(kind.build(), data.fit) if existing is None else registry.load_version(name, existing.version)
    evaluations = evaluate_side_by_side(use_case, kind, model, data)
    log.info("model %s (%s): %s", name, kind.name,
             {k: _flat_metrics(v) for k, v in evaluations.items()})

    if existing is None:
        version, run_id = _log_tag_model(
            client, use_case, name, kind, model, evaluations, data, window, reference_start, tags
        )
    else:
        version, run_id = str(existing.version), existing.run_id
    if existing is None or not existing.tags.get(explain.TOP_TAGS_TAG):
        # Before the decision tag, so a version is only ever complete with its explanation.
        explain.log_model_explanation(client, use_case, name, kind, version, run_id, model, data)
    return _decide_and_record(client, use_case, name, kind, version, run_id, evaluations, data, reference_start)
