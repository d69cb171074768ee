"""One place for SQLAlchemy engines: cached per URL and process, tables created on first use.

Airflow forks task processes; an engine (and its pooled connections) must not cross a fork, so
the cache is keyed by process id as well as URL.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_ENGINES: dict[tuple[str, int], Engine] = {}
_READY: set[tuple] = set()  # (engine, metadata) created; (engine, table, columns) migrated
_LOCK = threading.Lock()


def _create(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        database = sa.make_url(url).database
        if database and database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        # Concurrent tasks write the same file: wait for the lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    return sa.create_engine(url, **kwargs)


def engine(url: str, metadata: sa.MetaData | None = None,
           added: Mapping[sa.Table, Iterable[str]] | None = None) -> Engine:
    """The cached engine for ``url``; ``metadata``'s tables are created once per engine, and the
    columns ``added`` since a table's first version are added to an older table in the same step
    (SQLite and PostgreSQL only: a Trino catalog is read-only here and its tables are the site's)."""
    key = (url, os.getpid())
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _ENGINES[key] = _create(url)
        writable = eng.dialect.name in ("sqlite", "postgresql")
        if metadata is not None and (id(eng), id(metadata)) not in _READY:
            if writable:
                metadata.create_all(eng)
            _READY.add((id(eng), id(metadata)))
        for table, names in (added or {}).items():
            names = tuple(names)
            if (id(eng), id(table), names) not in _READY:
                if writable:
                    add_missing_columns(eng, table, names)
                _READY.add((id(eng), id(table), names))
    return eng


def reset() -> None:
    """Dispose every cached engine (tests; a settings change within one process)."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
        _READY.clear()
    for eng in engines:
        eng.dispose()


def add_missing_columns(eng: Engine, table: sa.Table, names: Iterable[str]) -> None:
    """Bring a table created by an earlier version up to date: ``create_all`` makes missing tables,
    not missing columns. Every added column must be nullable, so the rows already there stay valid.
    SQLite and PostgreSQL only (a Trino catalog is read-only here)."""
    if eng.dialect.name not in ("sqlite", "postgresql"):
        return
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy.exc import DBAPIError

    present = {c["name"] for c in sa.inspect(eng).get_columns(table.name)}
    for name in names:
        if name in present:
            continue
        try:
            with eng.begin() as conn:
                Operations(MigrationContext.configure(conn)).add_column(table.name, sa.Column(name, table.c[name].type))
            log.info("%s: added column %s", table.name, name)
        except DBAPIError:
            # Another process added it first (SQLite has no ADD COLUMN IF NOT EXISTS).
            if name not in {c["name"] for c in sa.inspect(eng).get_columns(table.name)}:
                raise
