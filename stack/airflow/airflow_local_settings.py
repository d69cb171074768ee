"""Airflow local settings of the native stack (on PYTHONPATH only there, see stack.airflow_env).

A compatibility shim, nothing else: apache-airflow-providers-celery 3.26.0 (the newest) imports
``retry`` from ``celery.backends.database``, which celery 5.7.0 (the newest, allowed by the
provider's ``celery<6``) removed: its DatabaseBackend now retries itself
(``result_backend_always_retry``). Without the name, the CeleryExecutor and ``airflow celery
worker`` fail at import. The provider uses the decorator on one query of the result-backend table
(the scheduler's task-state sync); this one retries that query on a database error, as the removed
decorator did. Remove this file when the provider stops importing it.
"""

from __future__ import annotations

import functools
import logging
import time

__all__: list[str] = []  # Airflow copies every exported name into airflow.settings: export none

log = logging.getLogger(__name__)


def _install() -> None:
    import celery.backends.database as database

    if hasattr(database, "retry"):
        return

    def retry(fun):
        @functools.wraps(fun)
        def wrapper(*args, **kwargs):
            from sqlalchemy.exc import DatabaseError, InterfaceError

            for attempt in range(1, 4):
                try:
                    return fun(*args, **kwargs)
                except (DatabaseError, InterfaceError):
                    if attempt == 3:
                        raise
                    log.warning("result backend query failed (attempt %d of 3); retrying", attempt, exc_info=True)
                    time.sleep(attempt)

        return wrapper

    database.retry = retry


_install()
