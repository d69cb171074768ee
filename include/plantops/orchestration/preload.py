"""Task libraries imported once, in the long-lived process that forks task processes.

Both executors plantops runs fork every task process from a long-lived parent: the LocalExecutor's
workers are forked from the scheduler, and a Celery worker forks its pool and then each task from
a pool process. Whatever the parent has imported, the task gets for free. Without this, every task
process pays its own imports: ``great_expectations`` alone takes ~8 s on this 2-core machine, so the
GX gate of a one-day feature build cost more than the warm Spark job it checks, and a daily cycle
(ingest, features, score, monitor) spent most of its time importing.

:func:`preload` is called by the scheduler's ``on_starting`` listener hook when the executor is the
LocalExecutor (:mod:`plantops.orchestration.runnotes`) and by the Celery workers' ``worker_init``
signal (:mod:`plantops.orchestration.celery_config`, which the native stack's
``[celery] celery_config_options`` names). Never in the dag-processor or the api-server:
parsing must stay light (``tests/test_dag_integrity.py``). What is preloaded is imports only: no
thread, connection, session or file handle is opened here, so a fork inherits nothing that breaks in
a child (the Spark Connect client's module is imported, but its gRPC channel is opened by the task).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

# In the order the pipeline's tasks need them; each entry is imported at module level by the tasks
# of one or more stages (the plantops stage modules themselves import these lazily).
MODULES = (
    "pandas",
    "pyarrow.parquet",
    "sqlalchemy",
    "great_expectations",  # ingest's GX checks, the feature gate
    "great_expectations.data_context.types.base",
    "sklearn.base",  # the model kinds
    "scipy.signal",
    "mlflow",  # train, score, monitor
    "mlflow.sklearn",
    "mlflow.artifacts",
    "mlflow.models",
    "evidently",  # monitor
    "evidently.metrics",
    # The features task's Spark Connect client (imports only: its gRPC channel is opened by the
    # task, after the fork) and the job's PySpark API.
    "pyspark.sql.connect.session",
    "pyspark.sql.functions",
    "airflow.providers.apache.spark.hooks.spark_connect",
    "plantops.stages.pipeline",
    "plantops.stages.validation",
    "plantops.stages.monitoring",
    "plantops.stages.training",
    "plantops.stages.scoring",
    "plantops.orchestration.dagfactory",  # the task process parses the DAG file again
)
ENV_SWITCH = "PLANTOPS_PRELOAD"  # "0" turns it off (e.g. to measure what it saves)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def preload(modules: tuple[str, ...] = MODULES) -> dict[str, float]:
    """Import ``modules`` (seconds per module). A module that fails to import is logged and
    skipped: the task that needs it will raise the real error in its own log."""
    spent: dict[str, float] = {}
    if all(name in sys.modules for name in modules):  # the hook fires for every Job this process starts
        return spent
    if not enabled():
        log.info("task libraries not preloaded (%s=0)", ENV_SWITCH)
        return spent
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    began = time.perf_counter()
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception:  # never stop a scheduler or a worker over an optional speed-up
            log.exception("could not preload %s", name)
            continue
        spent[name] = round(time.perf_counter() - started, 2)
    log.info("preloaded %d task libraries in %.1f s for the task processes this process forks: %s",
             len(spent), time.perf_counter() - began, spent)
    return spent


def forks_tasks_here(argv: list[str] | None = None) -> bool:
    """True in the scheduler of a LocalExecutor (its workers, forked from it, fork the tasks).

    Told by the command line: ``on_starting`` gets a bare ``Job()`` whose type is set only after
    the hook (the scheduler, triggerer and dag-processor all start one).
    """
    if (sys.argv if argv is None else argv)[1:2] != ["scheduler"]:
        return False
    from airflow.configuration import conf

    return "LocalExecutor" in conf.get("core", "executor", fallback="")


def listener() -> object:
    """The listener the plugin registers: preloads on the scheduler's ``on_starting``."""
    from airflow.listeners import hookimpl

    class Preload:
        @hookimpl
        def on_starting(self, component: object) -> None:
            try:
                if forks_tasks_here():
                    preload()
            except Exception:  # a listener error must never stop the scheduler
                log.exception("preloading the task libraries failed")

    return Preload()
