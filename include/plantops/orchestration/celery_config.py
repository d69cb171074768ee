"""The Celery app configuration of plantops' Celery tier: Airflow's, plus preloaded task libraries.

``[celery] celery_config_options`` points here (the native stack sets it). Importing this module
connects Celery's ``worker_init`` signal, which fires in a worker's main process before it forks
its pool; the pool processes, and the task processes they fork, then find GX, MLflow, Evidently
and pandas imported (:mod:`plantops.orchestration.preload`). The scheduler imports this module
too (to send tasks), where ``worker_init`` never fires.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


@worker_init.connect
def _preload_task_libraries(**_: Any) -> None:
    from plantops.orchestration.preload import preload

    preload()
