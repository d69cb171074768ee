"""Build each use case's DAGs from its YAML: ingest -> features -> score -> monitor, train, and feedback.

The DAGs are connected by assets (bronze, features, predictions) so each stage runs when its
input is fresh. Parsing imports only the Task SDK, the operators and the use-case schema: every
heavy library is imported inside the task that needs it.

With ``execution: kubernetes`` a use case's heavy tasks (ingest_sources, build_features,
check_features, train_model, score_window, assess_drift) run as pods and a SparkApplication
(:mod:`plantops.orchestration.kube`); only then is the cncf.kubernetes provider imported.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param
from airflow.sdk import task as sdk_task

from plantops.config import ConfigError, UseCase, discover, parse_duration
from plantops.modalities import modality_of
from plantops.settings import REPO_ROOT, get_settings

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "train", "score", "monitor", "feedback")
ALLOWED_TAGS = frozenset({"plantops", *STAGES, "config-error"})
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

STAGE_DOCS = {
    "ingest": "Pulls the historian window of the data interval and every file NiFi completed in the landing "
              "folder, validates both with Great Expectations and writes bronze parquet by date. Bad files go "
              "to quarantine with a reason; rejected rows are kept beside them. Runs daily and when a file lands. "
              "A run that quarantined a whole file fails in `report_quarantine`, naming the files and reasons "
              "(the good files' days still go on to the features).",
    "features": "Runs `spark_jobs/build_features.py` with spark-submit over the days the ingest wrote, one range "
                "per run of consecutive days plus the built days that read them as lookback (resampling, "
                "rolling means and standard deviations per tag), then the GX feature gate.",
    "train": "Trains the fault detector and the PCA T²/Q baseline on the same data, logs both to MLflow, "
             "registers a version with alias `challenger` and promotes it to `champion` only when it beats "
             "the champion on the same held-out data. Nightly, or on demand from the monitor.",
    "score": "Scores the newest feature day with the champion and writes score, alarm flag, model version "
             "and the top contributing tags back to the historian side.",
    "monitor": "Evidently drift of the newest day against the champion's training reference, plant events "
               "from the historian side, and the policy's decision: nothing, an automatic retrain, or an "
               "approval by the process engineers. Every decision is written to the decision store.",
    "feedback": "Manual trigger for process engineers: mark an alarm or its explanation as wrong (false alarm, "
                "wrong tag, known plant change) or right (confirmed fault) for a time window, with a comment. "
                "Stored in the `feedback` table of the state DB and, except for a wrong tag, as a label period "
                "for training (`normal` or `fault_feedback`); the next monitor run lists it.",
}


def task(python_callable: Any = None, **kwargs: Any) -> Any:
    """``airflow.sdk.task``, the function's signature read once (``__signature__``, which
    ``inspect.signature`` returns as it is): the Task SDK reads it about five times per task."""
    def signed(function: Any) -> Any:
        function.__signature__ = inspect.signature(function)
        return function

    if python_callable is None:
        decorate = sdk_task(**kwargs)
        return lambda function: decorate(signed(function))
    return sdk_task(signed(python_callable), **kwargs)


def on_failure(context: dict[str, Any]) -> None:
    """One place for failure alerts: a log line, and mail to the use case's ``failure`` audience."""
    from plantops.stages.notify import failure_callback

    ti = context.get("task_instance")
    log.error("plantops task failed: %s.%s run %s: %s", getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"),
              context.get("run_id"), context.get("exception"))
    failure_callback(context)


def default_args(use_case: UseCase) -> dict[str, Any]:
    return {
        "owner": use_case.owner,
        "retries": 2,
        # Read from the environment (not a Variable): parse-time safe, and short on the embedded tier.
        "retry_delay": timedelta(seconds=int(os.environ.get("PLANTOPS_RETRY_DELAY_SECONDS", "120"))),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=1),
        "on_failure_callback": on_failure,
    }


def assets(use_case: UseCase) -> dict[str, Asset]:
    home = get_settings()
    watched = _watched(use_case)
    return {
        "landing": Asset(
            name=f"{use_case.id}.landing",
            uri=(home.landing_root / watched[0]).as_uri() if watched else f"file:///{use_case.id}/landing",
            watchers=[AssetWatcher(name=f"{use_case.id}_landing_watcher", trigger=_landing_trigger(*watched))]
            if watched else [],
        ),
        "bronze": Asset(name=f"{use_case.id}.bronze", uri=(home.bronze_root / use_case.id).as_uri()),
        "features": Asset(name=f"{use_case.id}.features", uri=(home.features_root / use_case.id).as_uri()),
        "model": Asset(name=f"{use_case.id}.model", uri=f"models:/{use_case.id}"),
        "predictions": Asset(name=f"{use_case.id}.predictions", uri=f"historian://predictions/{use_case.id}"),
    }


def _watched(use_case: UseCase) -> tuple[str, list[str]] | None:
    """The landing folder NiFi fills for the use case and the names that complete a delivery, as
    its modality says (the landed files' patterns; an inspection run's manifest and a labels file)."""
    return modality_of(use_case).landing()


def _landing_trigger(folder: str, patterns: list[str]):
    from plantops.orchestration.triggers import LandingFileTrigger

    return LandingFileTrigger(directory=str(get_settings().landing_root / folder), pattern=patterns)


def _on_kubernetes(use_case: UseCase):
    """plantops.orchestration.kube for a Kubernetes use case, else None: the kubernetes client is imported only here."""
    if use_case.execution != "kubernetes":
        return None
    from plantops.orchestration import kube

    return kube


class StageDAG(DAG):
    """A DAG hashed by its dag_id alone.

    The Task SDK hashes the DAG at every dependency it sets (each ``>>`` and XCom edge), and
    ``DAG.__hash__`` hashes the schedule: an Asset's hash is a JSON dump of its fields, a third of a
    second at 100 use cases. ``DAG.__eq__`` compares dag_id among its fields, so equal DAGs still
    hash alike; nothing else of the DAG changes."""

    def __hash__(self) -> int:
        return hash((DAG, self.dag_id))


@contextmanager
def _dag(use_case: UseCase, stage: str, schedule: Any, params: dict[str, Param] | None = None,
         **kwargs: Any) -> Iterator[DAG]:
    """The stage's DAG, as a ``with`` block; its ``params`` are attached when the block ends.

    Given to ``DAG(params=...)``, the Task SDK validates every Param against its JSON schema (the
    metaschema check included) when the DAG is made and again each time the DAG is hashed (once per
    ``>>`` or XCom edge), and deep-copies them into every task: most of the parse time of 100 use
    cases. Attached after the tasks (:func:`_attach_params`), each task still gets its own copy and
    the serialized DAG is the same."""
    if use_case.execution == "kubernetes":
        # Pod arguments are Jinja: they need the days of the triggering asset events as a macro.
        kwargs.setdefault("user_defined_macros", {"plantops_event_days": event_days})
    with StageDAG(
        dag_id=use_case.dag_id(stage),
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        default_args=default_args(use_case),
        tags=["plantops", stage],
        doc_md=f"### {use_case.dag_id(stage)}\n\n{STAGE_DOCS[stage]}\n\n**Use case**: {use_case.plant}. "
               f"{use_case.description}\n\nConfigured in `include/use_cases/{use_case.id}.yaml`.",
        **kwargs,
    ) as dag:
        yield dag
    if params:
        _attach_params(dag, params)


# (schema, default) pairs already validated in this process: 100 use cases share a dozen Params.
_VALID_PARAMS: set[str] = set()


def _attach_params(dag: DAG, params: dict[str, Param]) -> None:
    """Give ``dag`` and each of its tasks the params, as ``DAG(params=...)`` would have.

    The same checks as the Task SDK's: a DAG that can be scheduled must have valid defaults
    (``DAG._validate_params``), each distinct (schema, default) validated once through
    ``Param.resolve``; each task gets its own ParamsDict of the DAG's Params (source ``dag``)
    followed by its own (source ``task``), as ``get_merged_defaults`` builds it. A Param's schema
    dict is shared by the copies (``Param.__copy__``): nothing writes to it."""
    from airflow.sdk.definitions.param import ParamsDict, ParamValidationError

    dag_params = ParamsDict(params)
    if dag.timetable.can_be_scheduled:
        for key, param in dag_params.items():
            check = json.dumps([param.schema, param.value], sort_keys=True, default=repr)
            if check in _VALID_PARAMS:
                continue
            try:
                param.resolve()
            except ParamValidationError as err:
                raise ValueError(
                    f"Dag {dag.dag_id!r} is not allowed to define a Schedule, as there are required params "
                    "without default values, or the default values are not valid.") from ParamValidationError(
                    f"Invalid input for param {key}: {err}")
            _VALID_PARAMS.add(check)
    # Set as DAG.__init__'s converter sets it: the validator (the checks above) is not run again.
    object.__setattr__(dag, "params", dag_params)
    for task in dag.task_dict.values():
        merged = ParamsDict({key: copy.copy(param) for key, param in dag_params.items()})
        merged._fill_missing_param_source("dag")
        merged.update(task.params)
        task.params = merged


def event_days(triggering_asset_events: Any) -> list[str]:
    """The days named in the triggering asset events' extra, sorted (also a Jinja macro for pods)."""
    days: set[str] = set()
    for events in (triggering_asset_events or {}).values():
        for event in events:
            days.update((event.extra or {}).get("days", []))
    return sorted(days)


def _days_from_events(context: dict[str, Any]) -> list[str]:
    return event_days(context.get("triggering_asset_events"))


# The newest triggering day, else '' (the stage then takes its default): what the in-process tasks do.
NEWEST_EVENT_DAY = "(plantops_event_days(triggering_asset_events)[-1:] | join)"


def build_ingest(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    """ingest_sources (historian window + landed files -> bronze; skipped when nothing is new) ->
    report_quarantine, which fails the run when a landed file was quarantined whole: the good
    files' days still reach bronze and wake the features, but the run does not end green."""
    timetable = CronTriggerTimetable(use_case.schedules.ingest, timezone="UTC", interval=timedelta(days=1))
    schedule = AssetOrTimeSchedule(timetable=timetable, assets=a["landing"]) if _watched(use_case) else timetable
    with _dag(use_case, "ingest", schedule, max_active_runs=1, params={
        "start": Param(None, type=["null", "string"], description="ISO start of the historian window (default: data interval)"),
        "end": Param(None, type=["null", "string"], description="ISO end of the historian window (default: data interval)"),
    }) as dag:
        # After a success or a skip (a run whose only file was quarantined writes nothing and skips),
        # not after a failure: that run has failed already.
        @task(trigger_rule="none_failed")
        def report_quarantine(run_id=None) -> list[dict]:
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
            from plantops.stages.pipeline import FilesQuarantined, report_quarantine as report

            try:
                report(use_case.id, run_id)
            except FilesQuarantined as exc:  # a verdict on the files, not a glitch: no retry
                raise AirflowFailException(str(exc)) from exc
            raise AirflowSkipException("no landed file was quarantined")

        if kube := _on_kubernetes(use_case):
            kube.pod_task(use_case, "ingest_sources", "ingest", [
                "--start={{ params.start or (data_interval_start.isoformat() if data_interval_start else '') }}",
                "--end={{ params.end or (data_interval_end.isoformat() if data_interval_end else '') }}",
                "--run-id={{ run_id }}",
            ], outlets=[a["bronze"]], outlet_days="days", skippable=True) >> report_quarantine()
            return dag

        @task(outlets=[a["bronze"]])
        def ingest_sources(params: dict, data_interval_start=None, data_interval_end=None, run_id=None,
                           outlet_events=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.stages.pipeline import ingest

            start = params.get("start") or (data_interval_start or datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
            end = params.get("end") or (data_interval_end or datetime.now(timezone.utc)).isoformat()
            result = ingest(use_case.id, start, end, run_id)
            if not result["days"]:
                # Nothing written: skipping emits no bronze event, so features, score and monitor do
                # not rerun (report_quarantine still fails the run if a file was quarantined).
                raise AirflowSkipException(f"nothing new to ingest: {result}")
            outlet_events[a["bronze"]].extra = {"days": result["days"]}
            return result

        ingest_sources() >> report_quarantine()
    return dag


SPARK_CONF = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}


def build_features(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    from plantops.orchestration.operators import SparkJob

    kube = _on_kubernetes(use_case)
    with _dag(use_case, "features", [a["bronze"]], max_active_runs=1, params={
        "start": Param(None, type=["null", "string"], description="first day (YYYY-MM-DD) to rebuild"),
        "end": Param(None, type=["null", "string"], description="day after the last day to rebuild"),
    }) as dag:

        # {"ranges": "START:END[,...]", "days": changed days, "lookahead": built days rebuilt with them}:
        # one range per run of consecutive days, so a backfilled old day never rebuilds the days
        # between it and today. `ranges` goes to the job and the gate as it is.
        @task
        def plan_window(params: dict, **context) -> dict:
            from plantops.stages.pipeline import days_between, plan_features

            from airflow.sdk.exceptions import AirflowFailException
            from plantops.stages.pipeline import NothingToBuild, unbuilt_days

            try:
                if params.get("start") or params.get("end"):
                    return plan_features(use_case.id, days_between(params.get("start"), params.get("end")))
                # An asset event names the days its ingest wrote; a manual run without params
                # builds the bronze days that have no features yet.
                return plan_features(use_case.id, _days_from_events(context) or unbuilt_days(use_case.id))
            except (NothingToBuild, ValueError) as exc:  # a wrong request, not a glitch: no retry
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[a["features"]], trigger_rule="none_failed_min_one_success")
        def publish_features(checks, window: dict, outlet_events=None) -> dict:
            checks = _as_list(checks)
            built = {d for c in checks for d in c["days"]}
            # The event names the changed days (score and monitor take the newest of them); the
            # lookahead days rebuilt with them are listed apart, so a late file for yesterday gets
            # yesterday scored, not today again.
            days = sorted(built.intersection(window["days"])) or sorted(built)
            outlet_events[a["features"]].extra = {"days": days, "lookahead": sorted(built - set(days)),
                                                  "assets": [c.get("asset") for c in checks if c["days"]]}
            return {"days": days, "rows": sum(c["rows"] for c in checks)}

        window = plan_window()
        if kube:
            build = kube.spark_task(use_case, "build_features", spark_args(use_case), SPARK_CONF,
                                    job=modality_of(use_case).spark_job)
            check = kube.pod_task(use_case, "check_features", "check_features", [f"--ranges={PLANNED_RANGES}"])
            window >> [build, check]  # check reads plan_window's XCom, as the in-process task does
            build >> check
            publish_features(check.output, window)
            return dag

        build = SparkJob(
            task_id="build_features",
            application=str(REPO_ROOT / "spark_jobs" / modality_of(use_case).spark_job),
            conn_id="plantops_spark",
            name=f"{use_case.id}-features",
            application_args=spark_args(use_case),
            conf=dict(SPARK_CONF),
            env_vars={"PLANTOPS_HOME": str(get_settings().home)},
        )

        # One Spark job builds every asset (its windows are partitioned by asset and run in
        # parallel inside Spark: a spark-submit per asset would pay the JVM start once per asset);
        # the GX gate is mapped per asset, so one turbine's bad day names that turbine.
        @task(map_index_template="{{ asset }}")
        def check_features(window: dict, asset: str) -> dict:
            from plantops.stages.pipeline import check_feature_ranges

            return check_feature_ranges(use_case.id, window["ranges"], asset if use_case.is_fleet else None)

        checks = check_features.partial(window=window).expand(asset=list(use_case.assets))
        window >> build >> checks
        publish_features(checks, window)
    return dag


# plan_window's day ranges, START:END[,START:END...], as the job and the gate take them.
PLANNED_RANGES = "{{ ti.xcom_pull(task_ids='plan_window')['ranges'] }}"


def spark_args(use_case: UseCase) -> list[str]:
    """The modality's feature job's arguments, the same for spark-submit and the SparkApplication."""
    return modality_of(use_case).spark_args(PLANNED_RANGES)


def build_train(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    timetable = CronTriggerTimetable(use_case.schedules.train, timezone="UTC")
    with _dag(use_case, "train", timetable, max_active_runs=1, params={
        "reference_start": Param(None, type=["null", "string"],
                                 description="train only on data from this ISO time on (e.g. after a plant change)"),
        "reason": Param("scheduled", type="string", description="why this training runs"),
        "monitor_run_id": Param(None, type=["null", "string"], description="the monitor run that asked for it"),
        "approved_by": Param(None, type=["null", "string"], description="the engineer who approved it"),
        "approval_reason": Param(None, type=["null", "string"], description="the engineer's reason"),
        "asset": Param(None, type=["null", "string"], enum=[None, *use_case.assets],
                       description="train only this asset's model (default: every model of the use case)"),
    }) as dag:
        @task
        def plan_training(params: dict) -> list[str]:
            from plantops.stages.pipeline import training_assets

            return training_assets(use_case.id, params.get("asset"))

        if kube := _on_kubernetes(use_case):
            plan_training() >> kube.pod_task(use_case, "train_model", "train", [
                "--run-id={{ run_id }}",
                "--reference-start={{ params.reference_start or '' }}",
                "--reason={{ params.reason or 'scheduled' }}",
                "--monitor-run-id={{ params.monitor_run_id or '' }}",
                "--approved-by={{ params.approved_by or '' }}",
                "--approval-reason={{ params.approval_reason or '' }}",
            ], outlets=[a["model"]], skippable=True)
            return dag

        @task(outlets=[a["model"]], map_index_template="{{ asset or 'all assets' }}")
        def train_model(asset: str, params: dict, run_id=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.provenance import git_commit
            from plantops.stages.pipeline import NoFeatures, train

            # Who asked and who approved end up as tags on the model version.
            provenance = {k: params[k] for k in ("monitor_run_id", "approved_by", "approval_reason") if params.get(k)}
            try:
                return train(use_case.id, run_id, params.get("reference_start"), params.get("reason", "scheduled"),
                             git_commit(), provenance, asset=asset)
            except NoFeatures as exc:  # the nightly run of a fresh installation: nothing to learn from yet
                raise AirflowSkipException(str(exc)) from exc

        train_model.expand(asset=plan_training())
    return dag


def build_score(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    with _dag(use_case, "score", [a["features"]], max_active_runs=1, params={
        "day": Param(None, type=["null", "string"], description="feature day to score (default: newest)"),
    }) as dag:
        @task(outlets=[a["predictions"]], trigger_rule="none_failed_min_one_success")
        def publish_predictions(results, outlet_events=None) -> dict:
            results = _as_list(results)
            days = sorted({r["day"] for r in results})
            outlet_events[a["predictions"]].extra = {"days": days, "assets": [r.get("asset") for r in results]}
            return {"days": days, "rows": sum(r["rows"] for r in results), "alarms": sum(r["alarms"] for r in results)}

        if kube := _on_kubernetes(use_case):
            publish_predictions(kube.pod_task(use_case, "score_window", "score", [
                "--day={{ params.day or " + NEWEST_EVENT_DAY + " }}",
            ], skippable=True).output)
            return dag

        @task(map_index_template="{{ asset }}")
        def score_window(asset: str, params: dict, **context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.stages.pipeline import NoChampion, score

            days = _days_from_events(context)
            try:
                return score(use_case.id, params.get("day") or (days[-1] if days else None), asset)
            except NoChampion as exc:  # fresh features before the first training: skip, do not fail
                raise AirflowSkipException(str(exc)) from exc

        publish_predictions(score_window.expand(asset=list(use_case.assets)))
    return dag


def build_monitor(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    """assess_drift per asset (mapped) -> the policy's branch per asset, each a mapped task over the
    assets that took it: no_action, alert_operators (an upset: mail, no retrain), trigger_retrain (a
    train run for that asset) or request_approval
    (one HITL task per asset, assigned to the process engineers), whose answers record_answers
    stores before trigger_approved starts the approved trainings. A plant event on one turbine sends
    only that turbine to approval; the others carry on in the same run."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from plantops.orchestration.operators import ApprovalRequest
    from plantops.stages.monitoring import APPROVAL_OPTIONS, SAFE_DEFAULT
    from plantops.stages.notify import PlantNotifier, required_actions_link

    train_id = use_case.dag_id("train")
    timeout = use_case.monitoring.approval_timeout
    with _dag(use_case, "monitor", [a["predictions"]], max_active_runs=1, params={
        "day": Param(None, type=["null", "string"], description="feature day to assess (default: newest)"),
    }) as dag:

        # The day judged and the branch taken show beside each asset in the run's task list (the run
        # itself is named by Airflow: manual__<ts> or asset_triggered__<ts>).
        @task(map_index_template="{{ asset }}{{ (': ' ~ judged) if judged is defined else '' }}")
        def assess_drift(asset: str, params: dict, run_id=None, **context) -> dict:
            from airflow.sdk import get_current_context
            from plantops.stages.pipeline import assess

            days = _days_from_events(context)
            record = assess(use_case.id, run_id, params.get("day") or (days[-1] if days else None), asset)
            get_current_context()["judged"] = f"{record['day']} {record['branch']}"
            return record

        if kube := _on_kubernetes(use_case):
            assessments = kube.pod_task(use_case, "assess_drift", "assess", [
                "--run-id={{ run_id }}",
                "--day={{ params.day or " + NEWEST_EVENT_DAY + " }}",
            ]).output
        else:
            assessments = assess_drift.partial().expand(asset=list(use_case.assets))

        @task
        def plan_no_action(assessments) -> list[str]:
            return [x["asset"] for x in _as_list(assessments) if x["branch"] == "ok"]

        @task(map_index_template="{{ asset }}")
        def no_action(asset: str) -> str:
            log.info("%s: asset %s needs nothing", use_case.id, asset)
            return asset

        @task
        def plan_upsets(assessments, run_id=None) -> list[dict]:
            from plantops.stages.pipeline import upset_alerts

            return upset_alerts(use_case.id, run_id, _as_list(assessments))

        @task(map_index_template="{{ asset }}")
        def alert_operators(asset: str, subject: str, body: str, link: str) -> dict:
            """An upset: the champion detects something; the operators are told, nothing is retrained."""
            from plantops.stages.notify import send

            return {"asset": asset, **send(use_case, "upset", subject, body, link)}

        @task
        def plan_retrains(assessments, run_id=None) -> list[dict]:
            from plantops.stages.pipeline import retrain_requests

            return retrain_requests(use_case.id, run_id, _as_list(assessments))

        @task
        def plan_approvals(assessments) -> list[dict]:
            from plantops.stages.pipeline import approval_requests

            return approval_requests(use_case.id, _as_list(assessments))

        no_action.expand(asset=plan_no_action(assessments))
        alert_operators.expand_kwargs(plan_upsets(assessments))
        TriggerDagRunOperator.partial(task_id="trigger_retrain", trigger_dag_id=train_id).expand_kwargs(
            plan_retrains(assessments))
        approvals = ApprovalRequest.partial(
            task_id="request_approval",
            options=list(APPROVAL_OPTIONS),
            defaults=[SAFE_DEFAULT],
            # Optional fields (a null default and "null" in the type): Airflow's form marks a field
            # required, and keeps every button disabled, unless its type admits null. The form cannot
            # make a field required for one option only: a refusal without a reason is recorded as such.
            params={
                "reason": Param(None, type=["null", "string"], title="Reason",
                                description="why: asked for when refusing, optional for a retrain"),
                "reference_start": Param(None, type=["null", "string"], title="Reference start",
                                         description="only for 'Retrain from a new reference window': ISO start "
                                                     "of the new normal (empty: the newest plant event, else the "
                                                     "window's start)"),
            },
            assigned_users=[{"id": u.id, "name": u.name} for u in use_case.approvers],
            notifiers=[PlantNotifier(use_case.id, "approval", "{{ task.subject }}", "{{ task.body }}",
                                     required_actions_link())],
            response_timeout=parse_duration(timeout),
            retries=0,
        ).expand_kwargs(plan_approvals(assessments))

        @task
        def record_answers(assessments, run_id=None, ti=None) -> list[dict]:
            """Store each approval's answer (who, when, what, why) and plan the approved trainings."""
            from plantops.stages.pipeline import approved_trainings

            asked = [x for x in _as_list(assessments) if x["branch"] == "approval"]
            answers = [ti.xcom_pull(task_ids="request_approval", key="response", map_indexes=i) or {}
                       for i in range(len(asked))]
            return approved_trainings(use_case.id, run_id, asked, answers)

        answers = record_answers(assessments)
        approvals >> answers
        TriggerDagRunOperator.partial(task_id="trigger_approved", trigger_dag_id=train_id).expand_kwargs(answers)
    return dag


def _as_list(assessments: Any) -> list[dict]:
    """The mapped results as a list (a Kubernetes pod returns one assessment, not a list).

    A mapped task's results arrive as a LazyXComSequence, whose iterator fetches item after item
    until the API answers 404, and the Task SDK logs that last miss as an error ("XCom not found
    ... offset=N") in every successful run. One slice request fetches them all, with no miss."""
    if isinstance(assessments, dict):
        return [assessments]
    return list(assessments[:])


def build_feedback(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    from plantops.stages.feedback import KINDS

    with _dag(use_case, "feedback", None, params={
        "ts_start": Param(type="string", format="date-time", title="Window start",
                          description="ISO start of the period the feedback is about"),
        "ts_end": Param(type="string", format="date-time", title="Window end",
                        description="ISO end of the period (exclusive)"),
        "kind": Param("false_alarm", type="string", enum=list(KINDS), title="Feedback", values_display={
            "false_alarm": "False alarm: the plant was fine",
            "wrong_tag": "Wrong tag: the explanation points at the wrong tag",
            "known_plant_change": "Known plant change: the new state is normal",
            "confirmed_fault": "Confirmed fault: the alarm was right",
        }),
        "tag": Param(None, type=["null", "string"], enum=[None, *use_case.tag_names], title="Tag",
                     description="the tag concerned (required for a wrong tag)"),
        "asset": Param(use_case.assets[0], type="string", enum=list(use_case.assets), title="Asset",
                       description="the asset the feedback is about"),
        "comment": Param(type="string", minLength=1, title="Comment", description="what was wrong or right, and why"),
        "author": Param(None, type=["null", "string"], title="Author",
                        description="who gives the feedback (default: the user who triggered the run)"),
    }) as dag:

        @task
        def record_feedback(params: dict, run_id=None, dag_run=None) -> dict:
            from plantops.stages.feedback import record_feedback as store

            author = params.get("author") or getattr(dag_run, "triggering_user_name", None)
            return store(use_case.id, run_id, params["ts_start"], params["ts_end"], params["kind"],
                         params["comment"], author, params.get("tag"), asset=params.get("asset"))

        record_feedback()
    return dag


BUILDERS = {
    "ingest": build_ingest,
    "features": build_features,
    "train": build_train,
    "score": build_score,
    "monitor": build_monitor,
    "feedback": build_feedback,
}


def config_error_dag(stem: str, error: ConfigError) -> DAG:
    """A visible, failing placeholder for a broken YAML, so the error is in the UI, not only in a log."""
    with DAG(
        dag_id=f"{stem}__config_error",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["plantops", "config-error"],
        doc_md=f"### Broken use case `{stem}`\n\n```\n{error}\n```\n\nFix the YAML; the other use cases are unaffected.",
        default_args={"owner": "plantops", "retries": 0},
    ) as dag:

        @task
        def explain_config_error() -> None:
            raise ConfigError(str(error))

        explain_config_error()
    return dag


def build_all(directory=None, dag_id: str | None = None) -> dict[str, DAG]:
    """Every DAG of every use case in the folder; a broken YAML yields its config-error DAG only.

    With ``dag_id`` (Airflow's parsing context when a worker parses the file to run one task of
    that DAG) only its use case's YAML is read and built: a task of one of 50 use cases then pays
    for one, not 50. An id that names no use-case file falls back to building every one."""
    folder = Path(directory or get_settings().use_cases_dir)
    stem = (dag_id or "").rpartition("__")[0]
    one = f"{stem}.yaml"
    use_cases, broken = discover(folder, one if stem and (folder / one).is_file() else "*.yaml")
    dags: dict[str, DAG] = {}
    for stem, error in broken.items():
        log.error("use case %s is broken and gets no DAGs: %s", stem, error)
        dags[f"{stem}__config_error"] = config_error_dag(stem, error)
    for use_case in use_cases.values():
        a = assets(use_case)
        for stage, builder in BUILDERS.items():
            dag = builder(use_case, a)
            dags[dag.dag_id] = dag
    return dags
