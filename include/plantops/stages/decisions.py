"""The decision store: every monitor, train, approval and feedback decision, and every ingest run
that quarantined files, as a durable row.

One table, ``decisions``, in the state database (``settings.state_url``: SQLite by default,
PostgreSQL on the native stack). SQLAlchemy Core with portable types only; the payload (inputs,
metrics, thresholds, links) is JSON kept as text so every backend stores it the same way.

A decision is keyed by (use_case, asset, dag_run_id, kind) (``asset`` is '' for a decision about the
whole use case, or a one-asset use case): rerunning a task replaces its row instead of
adding a second one, so the audit trail shows what the run finally decided, once.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from plantops import db

log = logging.getLogger(__name__)

KINDS = ("monitor", "train", "approval", "feedback", "quarantine")

metadata = sa.MetaData()

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("asset", sa.String(64), nullable=False, server_default=""),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("branch", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.UniqueConstraint("use_case", "asset", "dag_run_id", "kind", name="uq_decisions_run_kind"),
    sa.Index("ix_decisions_use_case_created", "use_case", "created_at"),
)


def _state_url() -> str:
    from plantops.settings import get_settings

    return get_settings().state_url


# One engine per URL and process: Airflow forks task processes, and a pooled connection must
# never cross a fork (the pid in the key gives a child its own engine).
def get_engine(url: str | None = None) -> Engine:
    """The cached engine of the state DB (or ``url``), with the decisions table created on first use."""
    return db.engine(url or _state_url(), metadata)


def reset_engines() -> None:
    """Dispose every cached engine (tests; a settings change within one process)."""
    db.reset()


def record(
    use_case: str,
    dag_run_id: str,
    kind: str,
    branch: str,
    reason: str,
    payload: dict[str, Any] | None = None,
    url: str | None = None,
    asset: str | None = None,
) -> int:
    """Store a decision and return its id. A second call for the same (use_case, asset, dag_run_id,
    kind) replaces the first (same id, new branch/reason/payload/created_at)."""
    if kind not in KINDS:
        raise ValueError(f"decision kind must be one of {KINDS}, got {kind!r}")
    for name, value in (("use_case", use_case), ("dag_run_id", dag_run_id), ("branch", branch)):
        if not value:
            raise ValueError(f"decision {name} must not be empty")
    values = {
        "branch": branch,
        "reason": reason,
        "created_at": datetime.now(UTC),
        "payload": _dumps(payload or {}),
    }
    asset = asset or ""
    key = (
        (decisions.c.use_case == use_case)
        & (decisions.c.asset == asset)
        & (decisions.c.dag_run_id == dag_run_id)
        & (decisions.c.kind == kind)
    )
    engine = get_engine(url)
    # Update-or-insert is portable (no dialect upsert); a concurrent insert of the same key loses
    # the unique-constraint race and is retried once as an update.
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                row_id = conn.execute(sa.select(decisions.c.id).where(key)).scalar_one_or_none()
                if row_id is not None:
                    conn.execute(sa.update(decisions).where(decisions.c.id == row_id).values(**values))
                else:
                    row_id = conn.execute(
                        sa.insert(decisions).values(
                            use_case=use_case, asset=asset, dag_run_id=dag_run_id, kind=kind, **values
                        )
                    ).inserted_primary_key[0]
            log.info("decision %s %s/%s/%s -> %s", row_id, use_case, dag_run_id, kind, branch)
            return int(row_id)
        except IntegrityError:
            if attempt:
                raise
            log.warning(
                "decision %s/%s/%s written concurrently; retrying as update", use_case, dag_run_id, kind
            )
    raise AssertionError("unreachable")


def latest(
    use_case: str, kind: str | None = None, limit: int = 20, url: str | None = None, asset: str | None = None
) -> list[dict[str, Any]]:
    """The newest decisions of a use case (optionally of one kind, or about one asset: its own and
    the use case's whole ones), newest first."""
    query = sa.select(decisions).where(decisions.c.use_case == use_case)
    if asset is not None:
        query = query.where(decisions.c.asset.in_([asset, ""]))
    if kind is not None:
        query = query.where(decisions.c.kind == kind)
    query = query.order_by(decisions.c.created_at.desc(), decisions.c.id.desc()).limit(int(limit))
    with get_engine(url).connect() as conn:
        return [_row(r) for r in conn.execute(query).mappings()]


def for_run(use_case: str, dag_run_id: str, url: str | None = None) -> list[dict[str, Any]]:
    """Every decision one DAG run made, in the order they were first recorded."""
    query = (
        sa.select(decisions)
        .where((decisions.c.use_case == use_case) & (decisions.c.dag_run_id == dag_run_id))
        .order_by(decisions.c.id)
    )
    with get_engine(url).connect() as conn:
        return [_row(r) for r in conn.execute(query).mappings()]


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    created = out["created_at"]
    # SQLite hands back naive datetimes; everything in the store is UTC.
    if created is not None and created.tzinfo is None:
        out["created_at"] = created.replace(tzinfo=UTC)
    out["payload"] = json.loads(out["payload"]) if out["payload"] else {}
    return out


def _dumps(payload: dict[str, Any]) -> str:
    """Strict JSON: NaN/inf become null (PostgreSQL's json and most readers reject them)."""
    return json.dumps(_clean(payload), default=str, sort_keys=True, allow_nan=False)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


def decision_asset(use_case: Any, asset: str | None) -> str | None:
    """The asset a decision is recorded under: the asset in a fleet, none for a one-asset use case."""
    return asset if use_case.is_fleet else None
