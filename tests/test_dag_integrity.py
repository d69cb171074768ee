"""Every DAG the factory can make: imports cleanly, follows the house rules, parses light."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "pyspark", "mlflow", "great_expectations", "evidently", "sklearn", "shap", "kubernetes")


@pytest.fixture(scope="module")
def dagbag():
    from unittest import mock

    from airflow.dag_processing.dagbag import DagBag

    def forbidden(*args, **kwargs):
        raise AssertionError(f"connection or Variable lookup while parsing: {args}")

    # No connection or Variable lookups while parsing: make any attempt fail the import.
    with mock.patch("airflow.sdk.BaseHook.get_connection", side_effect=forbidden), \
            mock.patch("airflow.sdk.Variable.get", side_effect=forbidden):
        return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_a_use_case_at_a_site_carries_its_tag(dagbag):
    from plantops.orchestration.dagfactory import STAGES

    for use_case, site in (("tep_reactor", "north"), ("wind_fleet", "coast"), ("pv_cells", None)):
        for stage in STAGES:
            tags = [t for t in dagbag.dags[f"{use_case}__{stage}"].tags if t.startswith("site:")]
            assert tags == ([f"site:{site}"] if site else []), (use_case, stage)


def test_every_stage_exists_per_use_case(dagbag):
    from plantops.config import discover
    from plantops.orchestration.dagfactory import STAGES

    use_cases, broken = discover(REPO / "include" / "use_cases")
    assert not broken
    expected = {f"{uc}__{stage}" for uc in use_cases for stage in STAGES}
    assert expected == set(dagbag.dag_ids)


def test_house_rules(dagbag):
    from plantops.config import load_sites
    from plantops.orchestration.dagfactory import ALLOWED_TAGS

    site_tags = {f"site:{site}" for site in load_sites(REPO / "include" / "sites")}
    for dag_id, dag in dagbag.dags.items():
        assert set(dag.tags) <= ALLOWED_TAGS | site_tags, dag_id
        assert dag.catchup is False, dag_id
        assert dag.doc_md, dag_id
        assert dag.dag_id.split("__")[1] in dag.tags
        for task in dag.tasks:
            if task.task_type in ("ApprovalRequest",):
                continue  # a human's answer is not retried
            assert task.owner == "plantops", (dag_id, task.task_id)
            assert task.retries >= 2, (dag_id, task.task_id)
            assert task.execution_timeout is not None, (dag_id, task.task_id)


def test_training_never_overlaps(dagbag):
    assert dagbag.dags["tep_reactor__train"].max_active_runs == 1


def test_assets_connect_the_stages(dagbag):
    def outlets(dag):
        return {o.name for t in dag.tasks for o in t.outlets}

    dags = dagbag.dags
    assert "tep_reactor.bronze" in outlets(dags["tep_reactor__ingest"])
    assert "tep_reactor.features" in outlets(dags["tep_reactor__features"])
    assert "tep_reactor.predictions" in outlets(dags["tep_reactor__score"])
    assert "tep_reactor.bronze" in str(dags["tep_reactor__features"].timetable.asset_condition)
    assert "tep_reactor.features" in str(dags["tep_reactor__score"].timetable.asset_condition)
    assert "tep_reactor.predictions" in str(dags["tep_reactor__monitor"].timetable.asset_condition)
    # ingest: on its cron AND when NiFi lands a file (an AssetWatcher on the landing asset)
    ingest = dags["tep_reactor__ingest"].timetable
    assert type(ingest).__name__ == "AssetOrTimeSchedule"
    landing = ingest.asset_condition
    assert landing.name == "tep_reactor.landing"
    assert landing.watchers[0].trigger.serialize()[0] == "plantops.orchestration.triggers.LandingFileTrigger"


def test_monitor_maps_each_branch_over_the_assets_that_took_it(dagbag):
    monitor = dagbag.dags["tep_reactor__monitor"]
    assess = monitor.get_task("assess_drift")
    assert {t for t in assess.downstream_task_ids} == {"plan_no_action", "plan_upsets", "plan_retrains",
                                                      "plan_approvals", "record_answers"}
    assert monitor.get_task("plan_no_action").downstream_task_ids == {"no_action"}
    assert monitor.get_task("plan_upsets").downstream_task_ids == {"alert_operators"}
    assert monitor.get_task("plan_retrains").downstream_task_ids == {"trigger_retrain"}
    assert monitor.get_task("plan_approvals").downstream_task_ids == {"request_approval"}
    assert monitor.get_task("record_answers").downstream_task_ids == {"trigger_approved"}
    for task_id in ("assess_drift", "no_action", "alert_operators", "trigger_retrain", "request_approval",
                    "trigger_approved"):
        assert type(monitor.get_task(task_id)).__name__ in ("MappedOperator", "_TaskDecorator") or \
            hasattr(monitor.get_task(task_id), "expand_input"), task_id
    approval = monitor.get_task("request_approval")
    kwargs = approval.partial_kwargs
    assert kwargs["assigned_users"] == [{"id": "eng1", "name": "Process engineer (demo)"}]
    assert kwargs["defaults"] == ["Refuse: model still valid"]  # the safe default on timeout
    assert kwargs["response_timeout"] is not None
    (notifier,) = kwargs["notifiers"]  # the engineers are mailed when the approval is asked
    assert (notifier.use_case_id, notifier.event) == ("tep_reactor", "approval")


def test_parsing_imports_no_heavy_module():
    code = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" / "plantops_dags.py")],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_broken_yaml_breaks_only_its_own_dags(tmp_path, monkeypatch):
    from plantops.orchestration.dagfactory import build_all

    shutil.copy(REPO / "include" / "use_cases" / "tep_reactor.yaml", tmp_path / "tep_reactor.yaml")
    broken = yaml.safe_load((REPO / "include" / "use_cases" / "tep_reactor.yaml").read_text())
    broken["id"] = "line_2"
    broken["tags"][0]["min"] = "cold"
    (tmp_path / "line_2.yaml").write_text(yaml.safe_dump(broken))
    dags = build_all(tmp_path)
    assert "line_2__config_error" in dags and not any(d.startswith("line_2__") and d != "line_2__config_error" for d in dags)
    assert {"tep_reactor__ingest", "tep_reactor__monitor"} <= set(dags)
    assert "tags.0.min" in dags["line_2__config_error"].doc_md


def test_a_task_parse_builds_only_its_own_use_case(tmp_path, monkeypatch):
    """A worker parsing the DAG file to run one task (Airflow's parsing context names the DAG)
    builds that use case alone; an id that names no use-case file builds them all."""
    import runpy

    # What the task runner's parsing context sets (its context manager leaves them set afterwards).
    from airflow.sdk.definitions.context import _AIRFLOW_PARSING_CONTEXT_DAG_ID as DAG_ID_VAR

    spec = yaml.safe_load((REPO / "include" / "use_cases" / "tep_reactor.yaml").read_text())
    for uc in ("line_1", "line_2", "line_3"):
        (tmp_path / f"{uc}.yaml").write_text(yaml.safe_dump({**spec, "id": uc}))
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(tmp_path))

    def dag_ids(dag_id):
        if dag_id is None:
            monkeypatch.delenv(DAG_ID_VAR, raising=False)
        else:
            monkeypatch.setenv(DAG_ID_VAR, dag_id)
        names = runpy.run_path(str(REPO / "dags" / "plantops_dags.py"))
        from airflow.sdk import DAG

        return {n.rpartition("__")[0] for n, v in names.items() if isinstance(v, DAG)}

    assert dag_ids("line_2__monitor") == {"line_2"}
    assert dag_ids("line_3__ingest") == {"line_3"}
    assert dag_ids("not_a_use_case__monitor") == {"line_1", "line_2", "line_3"}
    assert dag_ids(None) == {"line_1", "line_2", "line_3"}


def test_an_inspection_use_case_gets_its_dags_with_the_image_job(tmp_path, monkeypatch):
    """An inspection line (images, no tags): the same six DAGs; ingest wakes on a run's manifest or
    a labels file, the features DAG runs build_image_features.py with the model input's side."""
    from plantops.orchestration.dagfactory import STAGES, build_all

    (tmp_path / "pv_line.yaml").write_text(yaml.safe_dump({
        "id": "pv_line", "plant": "EL line", "approvers": [{"id": "qe1", "name": "QE"}],
        "inspection": {"folder": "pv_line_el", "input_size": 50}, "model": {"kind": "cell_cnn"}}))
    dags = build_all(tmp_path)
    assert set(dags) == {f"pv_line__{stage}" for stage in STAGES}
    build = dags["pv_line__features"].get_task("build_features")
    assert build.application.endswith("spark_jobs/build_image_features.py")
    assert build.application_args[:4] == ["--use-case", "pv_line", "--size", "50"]
    watcher = dags["pv_line__ingest"].timetable.asset_condition
    assert "pv_line.landing" in str(watcher)


def test_features_spark_task_submits_through_the_provider_hook(dagbag):
    """On a `spark` connection the light SparkJob operator hands the rendered job to the Spark provider's hook
    at run time (the `spark_connect` path: tests/test_spark_connect.py)."""
    import copy
    from unittest import mock

    # A copy: rendering replaces the templates, and the dagbag is shared by the module's tests.
    task = copy.deepcopy(dagbag.dags["tep_reactor__features"].get_task("build_features"))
    assert task.task_type == "SparkJob" and task.conn_id == "plantops_spark"
    assert {"application", "conf", "name", "application_args", "env_vars"} <= set(task.template_fields)

    class TI:
        def xcom_pull(self, task_ids=None, **kwargs):
            return {"ranges": "2025-11-02:2025-11-03,2026-03-24:2026-03-26", "days": [], "lookahead": []}

    task.render_template_fields({"ti": TI()})
    with mock.patch("airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook") as hook_class:
        hook = hook_class.return_value
        hook._should_track_driver_status = False
        task.execute({})
        kwargs = hook_class.call_args.kwargs
        assert kwargs["conn_id"] == "plantops_spark"
        assert kwargs["application_args"][-2:] == ["--ranges", "2025-11-02:2025-11-03,2026-03-24:2026-03-26"]
        assert kwargs["application_args"][kwargs["application_args"].index("--max-gap-seconds") + 1] == "21600"
        assert kwargs["conf"]["spark.sql.session.timeZone"] == "UTC" and "PLANTOPS_HOME" in kwargs["env_vars"]
        hook.submit.assert_called_once_with(str(REPO / "spark_jobs" / "build_features.py"))
        task.on_kill()
        hook.on_kill.assert_called_once()


def test_twenty_fleets_of_ten_assets_parse_without_heavy_imports(tmp_path):
    """20 fleet use cases of 10 assets each: every DAG builds (per-asset work is mapped, so the DAGs
    do not grow with the fleet) and parsing imports none of the heavy libraries."""
    spec = yaml.safe_load((REPO / "include" / "use_cases" / "wind_fleet.yaml").read_text())
    for i in range(20):
        spec.update(id=f"fleet_{i:02d}")
        spec["historian"] = {"assets": [f"T{i:02d}_{k:02d}" for k in range(10)]}
        (tmp_path / f"fleet_{i:02d}.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PLANTOPS_USE_CASES": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "bench.parsing", "factory"], capture_output=True, text=True,
                         check=True, env=env, cwd=REPO)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["config_errors"] == [] and report["heavy_modules"] == []
    from plantops.orchestration.dagfactory import STAGES

    assert report["dags"] == 20 * len(STAGES)
    one_asset = max(report["shape"])
    print(f"20 fleets x 10 assets: {report['dags']} DAGs, {report['tasks']} tasks, built in "
          f"{report['build_s']:.2f} s after the SDK import ({report['import_sdk_s']:.2f} s)")
    assert one_asset < 15  # mapped: a monitor DAG has the same tasks for 10 assets as for one


def test_trigger_form_params_still_validate_and_each_task_has_its_own(dagbag):
    """The factory attaches params after the tasks (parse time): the trigger form still refuses a
    wrong value through Param's own validation, and each task holds its own copy of the DAG's
    Params (source "dag") before its own (source "task"), as DAG(params=...) gives them."""
    import copy

    from airflow.sdk.definitions.param import ParamValidationError

    train = dagbag.dags["tep_reactor__train"]
    assert train.params.validate()["reason"] == "scheduled"
    for key, bad in (("reason", 5), ("asset", "no_such_asset"), ("reference_start", ["2026-01-01"])):
        form = copy.deepcopy(train.params)
        with pytest.raises(ParamValidationError, match=key):
            form[key] = bad
            form.validate()
    feedback = dagbag.dags["tep_reactor__feedback"]
    with pytest.raises(ParamValidationError, match="ts_start"):
        copy.deepcopy(feedback.params).validate()  # required, no default: the form must fill it
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            own = [k for k in task.params if task.params.get_param(k).source == "task"]
            assert list(task.params) == [*dag.params, *(k for k in own if k not in dag.params)], task.task_id
            for key in dag.params:
                param = task.params.get_param(key)
                assert param is not dag.params.get_param(key) and param.source == "dag", (dag.dag_id, task.task_id)
    approval = dagbag.dags["tep_reactor__monitor"].get_task("request_approval")
    assert [approval.params.get_param(k).source for k in approval.params] == ["dag", "task", "task"]


def test_a_scheduled_dag_with_an_invalid_param_default_is_refused():
    from airflow.sdk import DAG, Param

    from plantops.orchestration.dagfactory import START_DATE, _attach_params

    with DAG(dag_id="bad_default", schedule="@daily", start_date=START_DATE) as dag:
        pass
    with pytest.raises(ValueError, match="not allowed to define a Schedule"):
        _attach_params(dag, {"n": Param("three", type="integer")})
