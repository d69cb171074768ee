"""Build each use case's DAGs from its YAML: ingest -> features -> score -> monitor, train, and feedback.

The DAGs are connected by assets (bronze, features, predictions) so each stage runs when its
input is fresh. Parsing imports only the Task SDK, the operators and the use-case schema: every
heavy library is imported inside the task that needs it.

With ``execution: kubernetes`` a use case's heavy tasks (ingest_sources, build_features,
check_features, train_model, score_window, assess_drift) run as pods and a SparkApplication
(:mod:`plantops.kube`); only then is the cncf.kubernetes provider imported.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, task

from plantops.config import ConfigError, UseCase, discover, parse_duration
from plantops.settings import REPO_ROOT, get_settings

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "train", "score", "monitor", "feedback")
ALLOWED_TAGS = frozenset({"plantops", *STAGES, "config-error"})
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)

STAGE_DOCS = {
    "ingest": "Pulls the historian window of the data interval and every file NiFi completed in the landing "
              "folder, validates both with Great Expectations and writes bronze parquet by date. Bad files go "
              "to quarantine with a reason; rejected rows are kept beside them. Runs daily and when a file lands.",
    "features": "Runs `spark_jobs/build_features.py` with spark-submit over the days the ingest wrote "
                "(resampling, rolling means and standard deviations per tag), then the GX feature gate.",
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


def on_failure(context: dict[str, Any]) -> None:
    """One place for failure alerts; extend it with a notifier (mail, Teams, pager) per site."""
    ti = context.get("task_instance")
    log.error("plantops task failed: %s.%s run %s: %s", getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"),
              context.get("run_id"), context.get("exception"))


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
    return {
        "landing": Asset(
            name=f"{use_case.id}.landing",
            uri=(home.landing_root / use_case.landing.folder).as_uri() if use_case.landing else f"file:///{use_case.id}/landing",
            watchers=[AssetWatcher(name=f"{use_case.id}_landing_watcher", trigger=_landing_trigger(use_case))]
            if use_case.landing else [],
        ),
        "bronze": Asset(name=f"{use_case.id}.bronze", uri=(home.bronze_root / use_case.id).as_uri()),
        "features": Asset(name=f"{use_case.id}.features", uri=(home.features_root / use_case.id).as_uri()),
        "model": Asset(name=f"{use_case.id}.model", uri=f"models:/{use_case.id}"),
        "predictions": Asset(name=f"{use_case.id}.predictions", uri=f"historian://predictions/{use_case.historian.asset}"),
    }


def _landing_trigger(use_case: UseCase):
    from plantops.triggers import LandingFileTrigger

    folder = get_settings().landing_root / use_case.landing.folder
    return LandingFileTrigger(directory=str(folder), pattern=use_case.landing.pattern)


def _on_kubernetes(use_case: UseCase):
    """plantops.kube for a Kubernetes use case, else None: the kubernetes client is imported only here."""
    if use_case.execution != "kubernetes":
        return None
    from plantops import kube

    return kube


def _dag(use_case: UseCase, stage: str, schedule: Any, **kwargs: Any) -> DAG:
    if use_case.execution == "kubernetes":
        # Pod arguments are Jinja: they need the days of the triggering asset events as a macro.
        kwargs.setdefault("user_defined_macros", {"plantops_event_days": event_days})
    return DAG(
        dag_id=use_case.dag_id(stage),
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        default_args=default_args(use_case),
        tags=["plantops", stage],
        doc_md=f"### {use_case.dag_id(stage)}\n\n{STAGE_DOCS[stage]}\n\n**Use case**: {use_case.plant}. "
               f"{use_case.description}\n\nConfigured in `include/use_cases/{use_case.id}.yaml`.",
        **kwargs,
    )


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
    timetable = CronTriggerTimetable(use_case.schedules.ingest, timezone="UTC", interval=timedelta(days=1))
    schedule = AssetOrTimeSchedule(timetable=timetable, assets=a["landing"]) if use_case.landing else timetable
    with _dag(use_case, "ingest", schedule, max_active_runs=1, params={
        "start": Param(None, type=["null", "string"], description="ISO start of the historian window (default: data interval)"),
        "end": Param(None, type=["null", "string"], description="ISO end of the historian window (default: data interval)"),
    }) as dag:
        if kube := _on_kubernetes(use_case):
            kube.pod_task(use_case, "ingest_sources", "ingest", [
                "--start={{ params.start or (data_interval_start.isoformat() if data_interval_start else '') }}",
                "--end={{ params.end or (data_interval_end.isoformat() if data_interval_end else '') }}",
                "--run-id={{ run_id }}",
            ], outlets=[a["bronze"]], outlet_days="days", skippable=True)
            return dag

        @task(outlets=[a["bronze"]])
        def ingest_sources(params: dict, data_interval_start=None, data_interval_end=None, run_id=None,
                           outlet_events=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.pipeline import ingest

            start = params.get("start") or (data_interval_start or datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
            end = params.get("end") or (data_interval_end or datetime.now(timezone.utc)).isoformat()
            result = ingest(use_case.id, start, end, run_id)
            if not result["days"]:
                # Nothing new: skipping emits no bronze event, so features, score and monitor do not rerun.
                raise AirflowSkipException(f"nothing new to ingest: {result}")
            outlet_events[a["bronze"]].extra = {"days": result["days"]}
            return result

        ingest_sources()
    return dag


SPARK_CONF = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}


def build_features(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    from plantops.operators import SparkSubmit

    kube = _on_kubernetes(use_case)
    with _dag(use_case, "features", [a["bronze"]], max_active_runs=1, params={
        "start": Param(None, type=["null", "string"], description="first day (YYYY-MM-DD) to rebuild"),
        "end": Param(None, type=["null", "string"], description="day after the last day to rebuild"),
    }) as dag:

        @task
        def plan_window(params: dict, **context) -> dict:
            from plantops.pipeline import feature_window, latest_feature_day

            if params.get("start") and params.get("end"):
                return {"start": params["start"], "end": params["end"]}
            days = _days_from_events(context)
            return feature_window(days or [latest_feature_day(use_case.id)])

        window = plan_window()
        if kube:
            build = kube.spark_task(use_case, "build_features", spark_args(use_case), SPARK_CONF)
            check = kube.pod_task(use_case, "check_features", "check_features", [
                "--start={{ ti.xcom_pull(task_ids='plan_window')['start'] }}",
                "--end={{ ti.xcom_pull(task_ids='plan_window')['end'] }}",
            ], outlets=[a["features"]], outlet_days="days")
            window >> [build, check]  # check reads plan_window's XCom, as the in-process task does
            build >> check
            return dag

        build = SparkSubmit(
            task_id="build_features",
            application=str(REPO_ROOT / "spark_jobs" / "build_features.py"),
            conn_id="plantops_spark",
            name=f"{use_case.id}-features",
            application_args=spark_args(use_case),
            conf=dict(SPARK_CONF),
            env_vars={"PLANTOPS_HOME": str(get_settings().home)},
        )

        @task(outlets=[a["features"]])
        def check_features(window: dict, outlet_events=None) -> dict:
            from plantops.pipeline import check_features as gate

            result = gate(use_case.id, window["start"], window["end"])
            outlet_events[a["features"]].extra = {"days": result["days"]}
            return result

        window >> build >> check_features(window)
    return dag


def spark_args(use_case: UseCase) -> list[str]:
    """build_features.py's arguments, the same for spark-submit and the SparkApplication."""
    return [
        *_static_spark_args(use_case),
        "--start", "{{ ti.xcom_pull(task_ids='plan_window')['start'] }}",
        "--end", "{{ ti.xcom_pull(task_ids='plan_window')['end'] }}",
    ]


def _static_spark_args(use_case: UseCase) -> list[str]:
    settings = get_settings()
    return [
        "--input", str(settings.bronze_root / use_case.id),
        "--output", str(settings.features_root / use_case.id),
        "--tags", ",".join(use_case.tag_names),
        "--bucket-seconds", str(use_case.features.bucket_seconds),
        "--rolling-buckets", str(use_case.features.rolling_buckets),
        "--lookback-days", str(use_case.features.lookback_days),
    ]


def build_train(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    timetable = CronTriggerTimetable(use_case.schedules.train, timezone="UTC")
    with _dag(use_case, "train", timetable, max_active_runs=1, params={
        "reference_start": Param(None, type=["null", "string"],
                                 description="train only on data from this ISO time on (e.g. after a plant change)"),
        "reason": Param("scheduled", type="string", description="why this training runs"),
        "monitor_run_id": Param(None, type=["null", "string"], description="the monitor run that asked for it"),
        "approved_by": Param(None, type=["null", "string"], description="the engineer who approved it"),
        "approval_reason": Param(None, type=["null", "string"], description="the engineer's reason"),
    }) as dag:
        if kube := _on_kubernetes(use_case):
            kube.pod_task(use_case, "train_model", "train", [
                "--run-id={{ run_id }}",
                "--reference-start={{ params.reference_start or '' }}",
                "--reason={{ params.reason or 'scheduled' }}",
                "--monitor-run-id={{ params.monitor_run_id or '' }}",
                "--approved-by={{ params.approved_by or '' }}",
                "--approval-reason={{ params.approval_reason or '' }}",
            ], outlets=[a["model"]], skippable=True)
            return dag

        @task(outlets=[a["model"]])
        def train_model(params: dict, run_id=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.pipeline import NoFeatures, train
            from plantops.provenance import git_commit

            # Who asked and who approved end up as tags on the model version.
            provenance = {k: params[k] for k in ("monitor_run_id", "approved_by", "approval_reason") if params.get(k)}
            try:
                return train(use_case.id, run_id, params.get("reference_start"), params.get("reason", "scheduled"),
                             git_commit(), provenance)
            except NoFeatures as exc:  # the nightly run of a fresh installation: nothing to learn from yet
                raise AirflowSkipException(str(exc)) from exc

        train_model()
    return dag


def build_score(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    with _dag(use_case, "score", [a["features"]], max_active_runs=1, params={
        "day": Param(None, type=["null", "string"], description="feature day to score (default: newest)"),
    }) as dag:
        if kube := _on_kubernetes(use_case):
            kube.pod_task(use_case, "score_window", "score", [
                "--day={{ params.day or " + NEWEST_EVENT_DAY + " }}",
            ], outlets=[a["predictions"]], outlet_days="day", skippable=True)
            return dag

        @task(outlets=[a["predictions"]])
        def score_window(params: dict, outlet_events=None, **context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException
            from plantops.pipeline import NoChampion, score

            days = _days_from_events(context)
            try:
                result = score(use_case.id, params.get("day") or (days[-1] if days else None))
            except NoChampion as exc:  # fresh features before the first training: skip, do not fail
                raise AirflowSkipException(str(exc)) from exc
            outlet_events[a["predictions"]].extra = {"days": [result["day"]]}
            return result

        score_window()
    return dag


def build_monitor(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from plantops.operators import ApprovalBranchOperator
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    train_id = use_case.dag_id("train")
    with _dag(use_case, "monitor", [a["predictions"]], max_active_runs=1, params={
        "day": Param(None, type=["null", "string"], description="feature day to assess (default: newest)"),
    }) as dag:

        @task
        def assess_drift(params: dict, run_id=None, **context) -> dict:
            from plantops.pipeline import assess

            days = _days_from_events(context)
            return assess(use_case.id, run_id, params.get("day") or (days[-1] if days else None))

        @task.branch
        def choose_branch(assessment: dict) -> str:
            return {"ok": "no_action", "retrain": "trigger_retrain", "approval": "request_approval"}[assessment["branch"]]

        if kube := _on_kubernetes(use_case):
            assessment = kube.pod_task(use_case, "assess_drift", "assess", [
                "--run-id={{ run_id }}",
                "--day={{ params.day or " + NEWEST_EVENT_DAY + " }}",
            ]).output
        else:
            assessment = assess_drift()
        branch = choose_branch(assessment)
        no_action = EmptyOperator(task_id="no_action")
        trigger_retrain = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=train_id,
            trigger_run_id="retrain__{{ run_id }}",
            conf={"reason": "drift detected by {{ run_id }}", "monitor_run_id": "{{ run_id }}"},
        )
        approval = ApprovalBranchOperator(
            task_id="request_approval",
            subject=f"{use_case.id}: retrain after a plant change?",
            body="{{ ti.xcom_pull(task_ids='assess_drift')['approval_body'] }}",
            options=["Retrain now", "Retrain from a new reference window", "Refuse: model still valid"],
            options_mapping={
                "Retrain now": "retrain_approved",
                "Retrain from a new reference window": "retrain_new_reference",
                "Refuse: model still valid": "record_refusal",
            },
            defaults=["Refuse: model still valid"],
            params={
                "reason": Param("", type="string", description="why (required when refusing)"),
                "reference_start": Param("", type="string",
                                         description="ISO start of the new reference window (default: the plant event)"),
            },
            assigned_users=[{"id": u.id, "name": u.name} for u in use_case.approvers],
            response_timeout=parse_duration(use_case.monitoring.approval_timeout),
            retries=0,
        )
        retrain_approved = TriggerDagRunOperator(
            task_id="retrain_approved",
            trigger_dag_id=train_id,
            trigger_run_id="approved__{{ run_id }}",
            conf={"reason": "approved by a process engineer in {{ run_id }}",
                  "approved_by": "{{ ((ti.xcom_pull(task_ids='request_approval', key='response') or {}).get('responded_by_user') or {}).get('id', '') }}",
                  "monitor_run_id": "{{ run_id }}"},
        )

        timeout = use_case.monitoring.approval_timeout

        def answer_of(ti) -> dict:
            return ti.xcom_pull(task_ids="request_approval", key="response") or {}

        @task
        def plan_reference(assessment: dict, run_id=None, ti=None) -> dict:
            from plantops.pipeline import record_answer

            answer = answer_of(ti)
            record_answer(use_case.id, run_id, answer, "retrain_new_reference", assessment["day"], timeout)
            chosen = (answer.get("params_input") or {}).get("reference_start")
            events = assessment.get("plant_events") or []
            return {
                "reference_start": chosen or (events[-1]["ts"] if events else assessment["day"]),
                "approved_by": (answer.get("responded_by_user") or {}).get("id", ""),
                "approval_reason": (answer.get("params_input") or {}).get("reason", ""),
            }

        @task
        def record_refusal(assessment: dict, run_id=None, ti=None) -> dict:
            from plantops.pipeline import record_answer

            answer = answer_of(ti)
            timed_out = answer.get("responded_by_user") is None
            if not timed_out and not (answer.get("params_input") or {}).get("reason"):
                raise ValueError("a refusal needs a reason: fill in 'reason' in the approval form")
            return record_answer(use_case.id, run_id, answer, "refused", assessment["day"], timeout)

        @task
        def record_approval(assessment: dict, run_id=None, ti=None) -> dict:
            from plantops.pipeline import record_answer

            return record_answer(use_case.id, run_id, answer_of(ti), "retrain_now", assessment["day"], timeout)

        reference = plan_reference.override(task_id="retrain_new_reference")(assessment)
        retrain_new_reference = TriggerDagRunOperator(
            task_id="trigger_retrain_new_reference",
            trigger_dag_id=train_id,
            trigger_run_id="reference__{{ run_id }}",
            conf={"reason": "approved with a new reference window in {{ run_id }}",
                  "reference_start": "{{ ti.xcom_pull(task_ids='retrain_new_reference')['reference_start'] }}",
                  "approved_by": "{{ ti.xcom_pull(task_ids='retrain_new_reference')['approved_by'] }}",
                  "approval_reason": "{{ ti.xcom_pull(task_ids='retrain_new_reference')['approval_reason'] }}",
                  "monitor_run_id": "{{ run_id }}"},
        )
        branch >> [no_action, trigger_retrain, approval]
        approval >> [retrain_approved, reference, record_refusal(assessment)]
        retrain_approved >> record_approval(assessment)
        reference >> retrain_new_reference
    return dag


def build_feedback(use_case: UseCase, a: dict[str, Asset]) -> DAG:
    from plantops.feedback import KINDS

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
        "comment": Param(type="string", minLength=1, title="Comment", description="what was wrong or right, and why"),
        "author": Param(None, type=["null", "string"], title="Author",
                        description="who gives the feedback (default: the user who triggered the run)"),
    }) as dag:

        @task
        def record_feedback(params: dict, run_id=None, dag_run=None) -> dict:
            from plantops.feedback import record_feedback as store

            author = params.get("author") or getattr(dag_run, "triggering_user_name", None)
            return store(use_case.id, run_id, params["ts_start"], params["ts_end"], params["kind"],
                         params["comment"], author, params.get("tag"))

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


def build_all(directory=None) -> dict[str, DAG]:
    """Every DAG of every use case in the folder; a broken YAML yields its config-error DAG only."""
    use_cases, broken = discover(directory or get_settings().use_cases_dir)
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
