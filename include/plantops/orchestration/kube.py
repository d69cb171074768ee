"""Tasks of a use case with ``execution: kubernetes``: pods for the Python stages, a SparkApplication for Spark.

Imported by the DAG factory only when some use case runs on Kubernetes: this module imports the
cncf.kubernetes provider and with it the kubernetes client (~5 s), which the default, local DAGs
never pay at parse time.

Each heavy task becomes a pod running ``python -m plantops.orchestration.task <stage> --use-case <id> ...`` with
the arguments the in-process task passes (rendered by Jinja from params, the run and the triggering
asset events). Pods hold no credentials in their spec: plain settings (``PLANTOPS_HOME``) are set
here, everything else comes from the use case's ConfigMap and Secrets through ``envFrom``.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator
from kubernetes.client import models as k8s

from plantops.config import Kubernetes, UseCase
from plantops.settings import get_settings
from plantops.orchestration.task import SKIP_EXIT_CODE

log = logging.getLogger(__name__)

SPARK_API_VERSION = "sparkoperator.k8s.io/v1beta2"
# Where the image holds the repository (Dockerfile: COPY . /opt/plantops).
IMAGE_ROOT = "/opt/plantops"
FEATURE_JOB = "build_features.py"  # the tag modality's; a use case's is its modality's spark_job
DATA_VOLUME = "plantops-data"


def dns_name(*parts: str) -> str:
    """Kubernetes object names allow lowercase letters, digits and '-', not the ids' '_'."""
    return "-".join(parts).replace("_", "-").lower()[:63].rstrip("-")


def _kube(use_case: UseCase) -> Kubernetes:
    if use_case.kubernetes is None:  # the schema already refuses this; a clear error if bypassed
        raise ValueError(f"use case {use_case.id}: execution 'kubernetes' needs a 'kubernetes' section")
    return use_case.kubernetes


def plain_env(use_case: UseCase) -> dict[str, str]:
    """Settings the task arguments depend on; nothing secret ever goes here."""
    return {"PLANTOPS_HOME": str(get_settings().home)}


def labels(use_case: UseCase) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "plantops", "plantops/use-case": use_case.id}


def env_from(kube: Kubernetes) -> list[k8s.V1EnvFromSource]:
    # The ConfigMap first: for a key in both, Kubernetes takes the later source, so a Secret wins.
    sources = [k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=kube.config_map))] \
        if kube.config_map else []
    return sources + [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name))
                      for name in kube.env_from_secrets]


def resources(kube: Kubernetes) -> k8s.V1ResourceRequirements:
    r = kube.resources
    return k8s.V1ResourceRequirements(
        requests={"cpu": r.requests.cpu, "memory": r.requests.memory},
        limits={"cpu": r.limits.cpu, "memory": r.limits.memory},
    )


def _data_volume(kube: Kubernetes) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    if not kube.data_volume_claim:
        return [], []
    return (
        [k8s.V1Volume(name=DATA_VOLUME, persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=kube.data_volume_claim))],
        [k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=str(get_settings().home))],
    )


class PlantopsPodOperator(KubernetesPodOperator):
    """A pod task whose JSON result (XCom) also fills its outlets' asset event ``extra``.

    The in-process tasks set ``outlet_events[asset].extra = {"days": ...}`` so that the next DAG
    processes the days that changed; a pod cannot reach the outlet events, so the operator copies
    ``result[outlet_days]`` (a day or a list of days) once the pod has finished.
    """

    def __init__(self, *, outlet_days: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outlet_days = outlet_days

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        if self.outlet_days and isinstance(result, dict) and self.outlets:
            days = result.get(self.outlet_days)
            days = [days] if isinstance(days, str) else list(days or [])
            for outlet in self.outlets:
                context["outlet_events"][outlet].extra = {"days": days}
        return result


def pod_task(use_case: UseCase, task_id: str, stage: str, arguments: list[str], *,
             outlet_days: str | None = None, skippable: bool = False, **kwargs: Any) -> PlantopsPodOperator:
    """One pipeline stage in a pod: ``python -m plantops.orchestration.task <stage> --use-case <id> <arguments>``."""
    kube = _kube(use_case)
    volumes, mounts = _data_volume(kube)
    return PlantopsPodOperator(
        task_id=task_id,
        name=dns_name(use_case.id, task_id),
        namespace=kube.namespace,
        image=kube.image,
        image_pull_policy=kube.image_pull_policy,
        cmds=["python", "-m", "plantops.orchestration.task"],
        arguments=[stage, f"--use-case={use_case.id}", *arguments],
        env_vars=plain_env(use_case),
        env_from=env_from(kube),
        container_resources=resources(kube),
        service_account_name=kube.service_account,
        volumes=volumes,
        volume_mounts=mounts,
        labels=labels(use_case),
        kubernetes_conn_id=kube.kubernetes_conn_id,
        startup_timeout_seconds=kube.startup_timeout_seconds,
        do_xcom_push=True,  # the pod writes /airflow/xcom/return.json; the sidecar hands it to XCom
        skip_on_exit_code=SKIP_EXIT_CODE if skippable else None,
        on_finish_action="delete_pod",
        get_logs=True,
        outlet_days=outlet_days,
        **kwargs,
    )


def spark_application(use_case: UseCase, arguments: list[str], spark_conf: dict[str, str],
                      job: str = FEATURE_JOB) -> dict[str, Any]:
    """The SparkApplication (Kubeflow Spark operator, v1beta2) running ``spark_jobs/<job>``."""
    kube = _kube(use_case)
    spark = kube.spark
    volumes, mounts = _data_volume(kube)
    env = [{"name": name, "value": value} for name, value in plain_env(use_case).items()]
    sources = ([{"configMapRef": {"name": kube.config_map}}] if kube.config_map else []) + \
        [{"secretRef": {"name": name}} for name in kube.env_from_secrets]

    def process(p, **extra: Any) -> dict[str, Any]:
        spec = {"cores": p.cores, "memory": p.memory, "env": list(env), "envFrom": list(sources),
                "labels": labels(use_case), **extra}
        if mounts:
            spec["volumeMounts"] = [{"name": m.name, "mountPath": m.mount_path} for m in mounts]
        return spec

    service_account = spark.service_account or kube.service_account
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": kube.spark_image,
        "imagePullPolicy": kube.image_pull_policy,
        "mainApplicationFile": f"local://{IMAGE_ROOT}/spark_jobs/{job}",
        "arguments": list(arguments),
        "sparkVersion": spark.spark_version,
        "sparkConf": dict(spark_conf),
        "restartPolicy": {"type": "Never"},  # Airflow retries the task; two retry layers would stack
        "driver": process(spark.driver, **({"serviceAccount": service_account} if service_account else {})),
        "executor": process(spark.executor, instances=spark.executor_instances),
    }
    if volumes:
        spec["volumes"] = [{"name": v.name, "persistentVolumeClaim": {"claimName": v.persistent_volume_claim.claim_name}}
                           for v in volumes]
    return {
        "apiVersion": SPARK_API_VERSION,
        "kind": "SparkApplication",
        "metadata": {"name": dns_name(use_case.id, "features"), "namespace": kube.namespace,
                     "labels": labels(use_case)},
        "spec": spec,
    }


def spark_task(use_case: UseCase, task_id: str, arguments: list[str], spark_conf: dict[str, str],
               job: str = FEATURE_JOB, **kwargs: Any) -> SparkKubernetesOperator:
    kube = _kube(use_case)
    return SparkKubernetesOperator(
        task_id=task_id,
        name=dns_name(use_case.id, "features"),
        namespace=kube.namespace,
        # Only the "spark" part: with a "kubernetes" part the launcher would overwrite envFrom.
        template_spec={"spark": spark_application(use_case, arguments, spark_conf, job)},
        kubernetes_conn_id=kube.kubernetes_conn_id,
        startup_timeout_seconds=kube.startup_timeout_seconds,
        get_logs=True,
        delete_on_termination=True,
        **kwargs,
    )
