"""Small helpers over the MLflow model registry, one registered model per use case (or per asset).

The registered model is named after the use case id, or ``<use case>.<asset>`` for a fleet trained
per asset (:meth:`plantops.config.UseCase.model_name`); every function here takes that name. Versions move between roles with aliases,
never stages (deprecated in MLflow 3): ``challenger`` marks the latest trained version,
``champion`` the one that scores and explains. Every caller goes through :func:`configure` first,
so the tracking and registry URIs always come from :func:`plantops.settings.get_settings` at call
time (tests and tiers change the environment, not the code).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REFERENCE_ARTIFACT = "reference/reference.parquet"
# A registered model name: a use case id, optionally ".<asset>" (it goes into a filter string).
MODEL_NAME = r"[a-z][a-z0-9_]{0,40}(\.[A-Za-z0-9_\-]{1,64})?"


def configure() -> MlflowClient:
    """Point MLflow's tracking and registry at the configured store; return a client for it."""
    import mlflow
    from mlflow import MlflowClient

    from plantops.settings import get_settings

    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _version_by_alias(client: MlflowClient, use_case_id: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(use_case_id, alias)
    except MlflowException as exc:
        # Neither a missing registered model nor a missing alias is an error here: a use case
        # that never trained simply has no champion yet.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion(use_case_id: str) -> tuple[str, str] | None:
    """(version, run_id) of the champion, or None when the use case has none yet."""
    version = _version_by_alias(configure(), use_case_id, CHAMPION)
    return None if version is None else (str(version.version), version.run_id)


def champion_reference_start(use_case_id: str) -> str | None:
    """The reference start the champion was trained from (a new normal an engineer declared), or
    None when it was trained without one."""
    current = champion(use_case_id)
    if current is None:
        return None
    value = configure().get_run(current[1]).data.params.get("reference_start")
    return None if value in (None, "none") else value


@contextmanager
def promotion_lock(use_case_id: str, timeout: float = 600) -> Iterator[None]:
    """Serialise champion promotions of one use case across processes.

    PostgreSQL state DB (the stack tiers): a transaction-scoped advisory lock, good across hosts.
    Otherwise: an exclusive file lock under PLANTOPS_HOME (one host, as in the embedded tier).
    """
    import fcntl
    import time

    from plantops.settings import get_settings

    settings = get_settings()
    if settings.state_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(settings.state_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"promote:{use_case_id}"})
                yield
        finally:
            engine.dispose()
        return
    path = settings.home / "locks" / f"{use_case_id}.promotion.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another training of {use_case_id} holds the promotion lock {path}")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def champion_metric(use_case_id: str, name: str) -> float | None:
    """A metric the champion's training run logged (e.g. its held-out detection rate), or None."""
    client = configure()
    version = _version_by_alias(client, use_case_id, CHAMPION)
    if version is None:
        return None
    value = client.get_run(version.run_id).data.metrics.get(name)
    return None if value is None else float(value)


def load_champion(use_case_id: str) -> Any:
    """The champion detector as a fitted estimator (score_samples, statistics, contributions)."""
    import mlflow.sklearn

    configure()
    return mlflow.sklearn.load_model(f"models:/{use_case_id}@{CHAMPION}")


def load_version(use_case_id: str, version: str | int) -> Any:
    import mlflow.sklearn

    configure()
    return mlflow.sklearn.load_model(f"models:/{use_case_id}/{version}")


def load_reference(use_case_id: str) -> pd.DataFrame:
    """The champion's reference sample (its fit rows' features), the baseline for drift."""
    import pandas as pd

    client = configure()
    version = _version_by_alias(client, use_case_id, CHAMPION)
    if version is None:
        raise LookupError(f"use case {use_case_id!r} has no champion model yet: train one first")
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, REFERENCE_ARTIFACT, dst_path=tmp)
        return pd.read_parquet(Path(path))


def set_alias(use_case_id: str, alias: str, version: str | int) -> None:
    configure().set_registered_model_alias(use_case_id, alias, str(version))
    log.info("model %s: alias %s -> version %s", use_case_id, alias, version)


def version_by_run_tag(use_case_id: str, key: str, value: str) -> ModelVersion | None:
    """The newest version of the use case's model whose tag ``key`` equals ``value``.

    The tag is matched here rather than in the filter string, so that values with quotes or
    other filter syntax (Airflow run ids contain ``+`` and ``:``) need no escaping.
    """
    if not re.fullmatch(MODEL_NAME, use_case_id):
        # The name goes into a filter string: only the shapes config produces are allowed.
        raise ValueError(f"not a registered model name: {use_case_id!r}")
    client = configure()
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{use_case_id}'", page_token=token)
        found.extend(v for v in page if v.tags.get(key) == value)
        token = page.token
        if not token:
            break
    return max(found, key=lambda v: int(v.version)) if found else None
