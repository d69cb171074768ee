"""`execution: kubernetes`: the pods and the SparkApplication the factory renders, without a cluster.

Each pod task is rendered with a run's context and built into the V1Pod the operator would
create; the Spark task's SparkApplication is rendered the same way. A password placed in the
environment must appear nowhere in them: credentials reach the pods only through Secret refs.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "include" / "use_cases" / "tep_reactor.yaml"
SECRET = "s3cret-test"
IMAGE = "registry.example.com/plantops:1.4.0"
SPARK_IMAGE = "registry.example.com/plantops-spark:1.4.0"
KUBE = {
    "namespace": "plant-a",
    "image": IMAGE,
    "service_account": "plantops-runner",
    "resources": {"requests": {"cpu": "250m", "memory": "768Mi"}, "limits": {"cpu": "1500m", "memory": "3Gi"}},
    "spark": {"image": SPARK_IMAGE, "driver": {"cores": 1, "memory": "1g"},
              "executor": {"cores": 2, "memory": "3g"}, "executor_instances": 3},
    "env_from_secrets": ["plantops-db", "plantops-mlflow"],
    "config_map": "plantops-settings",
    "data_volume_claim": "plantops-lake",
}
DAY, PREVIOUS_DAY = "2026-03-25", "2026-03-24"
# plan_window's XCom for a run whose ingest wrote two consecutive days and a backfilled old one.
WINDOW = {"ranges": f"2025-11-02:2025-11-03,{PREVIOUS_DAY}:2026-03-26", "days": ["2025-11-02", PREVIOUS_DAY, DAY],
          "lookahead": []}
# task id -> (DAG stage, the arguments after `python -m plantops.orchestration.task`) for a run of RUN_ID
RUN_ID = "scheduled__2026-03-25T00:00:00+00:00"
POD_TASKS = {
    "ingest_sources": ("ingest", ["ingest", "--use-case=tep_reactor", "--start=2026-03-25T00:00:00+00:00",
                                  "--end=2026-03-26T00:00:00+00:00", f"--run-id={RUN_ID}"]),
    "check_features": ("features", ["check_features", "--use-case=tep_reactor",
                                    f"--ranges=2025-11-02:2025-11-03,{PREVIOUS_DAY}:2026-03-26"]),
    "train_model": ("train", ["train", "--use-case=tep_reactor", f"--run-id={RUN_ID}", "--reference-start=",
                              "--reason=scheduled", "--monitor-run-id=", "--approved-by=", "--approval-reason="]),
    "score_window": ("score", ["score", "--use-case=tep_reactor", f"--day={DAY}"]),
    "assess_drift": ("monitor", ["assess", "--use-case=tep_reactor", f"--run-id={RUN_ID}", f"--day={DAY}"]),
}


@pytest.fixture(scope="module")
def secret_env():
    """Credentials as a careless setup would have them on the Airflow side: they must not leak."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLANTOPS_DB_PASSWORD", SECRET)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
        mp.setenv("PLANTOPS_HISTORIAN_URL", f"postgresql://plantops:{SECRET}@historian:5432/plant")
        mp.setenv("MLFLOW_TRACKING_URI", f"https://ml:{SECRET}@mlflow.example.com")
        # The kubernetes_default connection (none exists here) is only looked up when a pod is built.
        mp.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes"}))
        yield


def kube_yaml(tmp_path: Path, kubernetes: dict | None = None) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    data["execution"] = "kubernetes"
    if kubernetes is not None:
        data["kubernetes"] = kubernetes
    (tmp_path / "tep_reactor.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


@pytest.fixture(scope="module")
def kube_dags(tmp_path_factory, secret_env):
    from unittest import mock

    from plantops.orchestration.dagfactory import build_all

    def forbidden(*args, **kwargs):
        raise AssertionError(f"connection or Variable lookup while parsing: {args}")

    folder = kube_yaml(tmp_path_factory.mktemp("use_cases"), KUBE)
    with mock.patch("airflow.sdk.BaseHook.get_connection", side_effect=forbidden), \
            mock.patch("airflow.sdk.Variable.get", side_effect=forbidden):
        return build_all(folder)


@pytest.fixture(scope="module")
def local_dags(tmp_path_factory):
    from plantops.orchestration.dagfactory import build_all

    folder = tmp_path_factory.mktemp("local_use_cases")
    (folder / "tep_reactor.yaml").write_text(SHIPPED.read_text())
    return build_all(folder)


class _TI:
    def xcom_pull(self, task_ids=None, key="return_value", **kwargs):
        assert key == "return_value"
        return {"plan_window": WINDOW}[task_ids]


def render(dag, task):
    """A copy of the task with its templates rendered as a scheduled run would (run id, interval, params, events)."""
    task = copy.deepcopy(task)  # rendering replaces the templates: keep the DAG's task intact for other tests
    context = {
        "params": {name: param.value for name, param in dag.params.items()},
        "run_id": RUN_ID,
        "data_interval_start": datetime(2026, 3, 25, tzinfo=timezone.utc),
        "data_interval_end": datetime(2026, 3, 26, tzinfo=timezone.utc),
        "triggering_asset_events": {"upstream": [SimpleNamespace(extra={"days": [DAY, PREVIOUS_DAY]})]},
        "ti": _TI(),
    }
    task.render_template_fields(context)
    return task


def pod_of(dags, task_id):
    from kubernetes.client import ApiClient

    stage, _ = POD_TASKS[task_id]
    dag = dags[f"tep_reactor__{stage}"]
    task = render(dag, dag.get_task(task_id))
    return task, ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))


def settings_home() -> str:
    from plantops.settings import get_settings

    return str(get_settings().home)


def test_the_heavy_tasks_are_pods_and_the_light_ones_stay(kube_dags, local_dags):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator

    for task_id, (stage, _) in POD_TASKS.items():
        assert isinstance(kube_dags[f"tep_reactor__{stage}"].get_task(task_id), KubernetesPodOperator), task_id
    assert isinstance(kube_dags["tep_reactor__features"].get_task("build_features"), SparkKubernetesOperator)
    # The same DAGs, tasks, dependencies and outlets as the local use case: the branch reads the
    # assessment (now the pod's XCom), the assets still connect the stages.
    assert set(kube_dags) == set(local_dags)
    for dag_id, dag in kube_dags.items():
        def shape(d):
            return {t.task_id: (t.downstream_task_ids, {o.name for o in t.outlets}) for t in d.tasks}

        assert shape(dag) == shape(local_dags[dag_id]), dag_id


@pytest.mark.parametrize("task_id", list(POD_TASKS))
def test_pod_spec(kube_dags, task_id):
    task, pod = pod_of(kube_dags, task_id)
    assert pod["metadata"]["namespace"] == "plant-a"
    assert pod["spec"]["serviceAccountName"] == "plantops-runner"
    main, *sidecars = pod["spec"]["containers"]
    assert [c["name"] for c in sidecars] == ["airflow-xcom-sidecar"]  # the result comes back as XCom
    assert main["image"] == IMAGE
    assert main["command"] == ["python", "-m", "plantops.orchestration.task"]
    assert main["args"] == POD_TASKS[task_id][1]
    assert main["resources"] == {"requests": {"cpu": "250m", "memory": "768Mi"},
                                 "limits": {"cpu": "1500m", "memory": "3Gi"}}
    assert {e["name"]: e["value"] for e in main["env"]} == {"PLANTOPS_HOME": settings_home()}
    assert main["envFrom"] == [{"configMapRef": {"name": "plantops-settings"}},
                               {"secretRef": {"name": "plantops-db"}}, {"secretRef": {"name": "plantops-mlflow"}}]
    assert {"mountPath": settings_home(), "name": "plantops-data"} in main["volumeMounts"]
    assert {"name": "plantops-data", "persistentVolumeClaim": {"claimName": "plantops-lake"}} in pod["spec"]["volumes"]
    assert SECRET not in json.dumps(pod)
    assert task.retries >= 2 and task.execution_timeout is not None and task.owner == "plantops"


def test_pod_arguments_follow_params_and_the_stage_cli(kube_dags):
    """What a person sets in the trigger form reaches the pod, and `plantops.orchestration.task` parses it back."""
    from plantops.orchestration.task import parser

    train = kube_dags["tep_reactor__train"]
    task = train.get_task("train_model")
    context_params = {"reference_start": "2026-03-26T06:00:00+00:00", "reason": "approved",
                      "monitor_run_id": "m1", "approved_by": "eng1", "approval_reason": "--setpoint moved"}
    args = parser().parse_args(task.render_template(task.arguments, {"params": context_params, "run_id": "r9"}))
    assert (args.stage, args.use_case, args.run_id, args.reference_start, args.reason, args.monitor_run_id,
            args.approved_by, args.approval_reason) == ("train", "tep_reactor", "r9", "2026-03-26T06:00:00+00:00",
                                                        "approved", "m1", "eng1", "--setpoint moved")
    for task_id, (_, argv) in POD_TASKS.items():
        assert parser().parse_args(argv).stage == argv[0], task_id


def test_score_pod_skips_before_the_first_champion(kube_dags):
    from plantops.orchestration.task import SKIP_EXIT_CODE

    assert kube_dags["tep_reactor__score"].get_task("score_window").skip_on_exit_code == [SKIP_EXIT_CODE]


def test_spark_application(kube_dags, local_dags):
    from airflow.providers.cncf.kubernetes.operators.custom_object_launcher import CustomObjectLauncher

    from plantops.orchestration.dagfactory import SPARK_CONF

    dag = kube_dags["tep_reactor__features"]
    task = render(dag, dag.get_task("build_features"))
    app = task.template_spec["spark"]
    assert (app["apiVersion"], app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")
    spec = app["spec"]
    assert spec["image"] == SPARK_IMAGE
    assert spec["mainApplicationFile"] == "local:///opt/plantops/spark_jobs/build_features.py"
    assert spec["sparkConf"] == SPARK_CONF

    # The same arguments as spark-submit gets in the local use case, rendered for the same run.
    local = local_dags["tep_reactor__features"]
    assert spec["arguments"] == render(local, local.get_task("build_features")).application_args
    assert spec["arguments"][-2:] == ["--ranges", WINDOW["ranges"]]
    assert spec["arguments"][spec["arguments"].index("--input") + 1] == f"{settings_home()}/bronze/tep_reactor"

    assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (1, "1g")
    assert (spec["executor"]["cores"], spec["executor"]["memory"], spec["executor"]["instances"]) == (2, "3g", 3)
    assert spec["driver"]["serviceAccount"] == "plantops-runner"
    refs = [{"configMapRef": {"name": "plantops-settings"}},
            {"secretRef": {"name": "plantops-db"}}, {"secretRef": {"name": "plantops-mlflow"}}]
    for process in ("driver", "executor"):
        assert spec[process]["envFrom"] == refs
        assert spec[process]["env"] == [{"name": "PLANTOPS_HOME", "value": settings_home()}]
        assert spec[process]["volumeMounts"] == [{"name": "plantops-data", "mountPath": settings_home()}]
    assert spec["volumes"] == [{"name": "plantops-data", "persistentVolumeClaim": {"claimName": "plantops-lake"}}]

    # What the operator's launcher would send to the API server keeps all of it.
    body = CustomObjectLauncher(name="tep-reactor-features-x", namespace=task.namespace, kube_client=None,
                                custom_obj_api=None, template_body=task.template_spec).body
    assert body["metadata"]["namespace"] == "plant-a" == task.namespace
    assert body["spec"]["driver"]["envFrom"] == refs and body["spec"]["arguments"] == spec["arguments"]
    assert SECRET not in json.dumps(body)


def test_spark_image_defaults_to_the_task_image(tmp_path, secret_env):
    from plantops.config import load_use_case

    kube = {k: v for k, v in KUBE.items() if k != "spark"}
    use_case = load_use_case(kube_yaml(tmp_path, kube) / "tep_reactor.yaml")
    assert use_case.kubernetes.spark_image == IMAGE


@pytest.mark.parametrize("kubernetes", [None, {"namespace": "plant-a"}])
def test_kubernetes_without_image_names_the_field(tmp_path, kubernetes):
    from plantops.config import ConfigError, load_use_case

    path = kube_yaml(tmp_path, kubernetes) / "tep_reactor.yaml"
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    assert str(path) in str(err.value) and "kubernetes.image: required when execution is 'kubernetes'" in str(err.value)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("namespace", "Plant_A", "kubernetes.namespace"),
    ("env_from_secrets", ["db creds"], "kubernetes.env_from_secrets"),
    ("resources", {"requests": {"cpu": "lots", "memory": "1Gi"}}, "kubernetes.resources.requests.cpu"),
])
def test_wrong_kubernetes_field_is_named(tmp_path, field, value, expected):
    from plantops.config import ConfigError, load_use_case

    path = kube_yaml(tmp_path, {**KUBE, field: value}) / "tep_reactor.yaml"
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_use_case(path)


def test_kubernetes_dags_serialize(kube_dags):
    """The dag-processor stores every DAG serialized; the pod and Spark operators must survive it."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in kube_dags.items():
        assert DagSerialization.to_dict(dag)["dag"]["dag_id"] == dag_id


def test_local_dags_do_not_import_the_kubernetes_provider():
    code = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]); "
        "print(json.dumps(sorted(m for m in sys.modules if m == 'kubernetes' or m.startswith(('kubernetes.', "
        "'airflow.providers.cncf.kubernetes.operators', 'airflow.providers.cncf.kubernetes.kube_client', "
        "'airflow.providers.apache.spark.operators', 'airflow.providers.apache.spark.hooks', 'plantops.orchestration.kube')))))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "dags" / "plantops_dags.py")],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_task_entry_point_returns_the_result_as_xcom_and_skips_without_a_champion(tmp_path, monkeypatch):
    import numpy as np

    from plantops.stages import pipeline
    from plantops.orchestration import task

    calls = []
    monkeypatch.setattr(pipeline, "assess", lambda *args: calls.append(args) or
                        {"branch": "ok", "day": args[2], "drift_share": np.float64(0.1), "tags": np.int64(52)})
    monkeypatch.setattr(task, "XCOM_PATH", tmp_path / "xcom" / "return.json")
    (tmp_path / "xcom").mkdir()
    assert task.main(["assess", "--use-case=tep_reactor", "--run-id=r1", "--day="]) == 0
    assert calls == [("tep_reactor", "r1", None)]  # an empty day is the newest day, as in-process
    assert json.loads((tmp_path / "xcom" / "return.json").read_text()) == \
        {"branch": "ok", "day": None, "drift_share": 0.1, "tags": 52}

    def no_champion(*args):
        raise pipeline.NoChampion("no champion yet")

    monkeypatch.setattr(pipeline, "score", no_champion)
    assert task.main(["score", "--use-case=tep_reactor", "--day=2026-03-25"]) == task.SKIP_EXIT_CODE
