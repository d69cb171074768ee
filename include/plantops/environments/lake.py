"""Trino's `lake` catalog over the parquet plantops writes: bronze and features as external tables.

    python -m plantops.cli lake tep_reactor      # (re)register tep_reactor_bronze and tep_reactor_features

The `lake` catalog (``stack/trino/catalog/lake.properties``: Hive connector, file metastore, native
local file system) sees the folder ``PLANTOPS_LAKE_ROOT`` (the native stack's
``$PLANTOPS_STACK_DIR/home``; ``/opt/plantops/data`` in docker-compose). Each layer becomes an
external table partitioned by ``date``, its columns read from a parquet file's schema, so the SQL
view follows the data and nothing is copied. Registering again replaces the table definition and
re-reads the partitions; the files are never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

from plantops.settings import get_settings

SCHEMA = "plantops"
LAYERS = ("bronze", "features")


def _trino_type(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "varchar"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_integer(arrow_type):
        return "bigint" if arrow_type.bit_width == 64 else "integer"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp(3)"  # the Hive connector's default precision
    raise TypeError(f"no lake column type for parquet type {arrow_type}")


def _quote(name: str) -> str:
    if '"' in name:
        raise ValueError(f"unexpected column name {name!r}")
    return f'"{name}"'


def register(use_case_id: str, url: str | None = None, lake_root: Path | None = None) -> dict[str, int]:
    """Create or replace ``lake.plantops.<uc>_<layer>`` for each layer with data; rows per table.

    Identifiers cannot be bound parameters in DDL: the table names come from the use-case id
    (validated by the schema) and the column names from the files, quoted.
    """
    import pyarrow.parquet as pq
    from sqlalchemy import create_engine, text

    settings = get_settings()
    root = Path(lake_root or os.environ.get("PLANTOPS_LAKE_ROOT") or settings.home).resolve()
    reader = url or settings.historian_read_url
    if not reader.startswith("trino://"):
        raise ValueError(f"the lake catalog needs Trino: PLANTOPS_HISTORIAN_READ_URL is {reader.split('@')[-1]!r}")
    engine = create_engine(reader.rsplit("/", 2)[0] + "/lake")
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS lake.{SCHEMA}"))
            for layer in LAYERS:
                folder = getattr(settings, f"{layer}_root") / use_case_id
                files = sorted(folder.glob("date=*/*.parquet"))
                if not files:
                    continue
                try:
                    relative = folder.resolve().relative_to(root)
                except ValueError as exc:
                    raise ValueError(f"{folder} is outside the lake root {root} that Trino sees") from exc
                arrow = pq.read_schema(files[-1])
                columns = [f"{_quote(f.name)} {_trino_type(f.type)}" for f in arrow if f.name != "date"]
                table = f"lake.{SCHEMA}.{use_case_id}_{layer}"
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))  # external: the files stay
                conn.execute(text(
                    f"CREATE TABLE {table} ({', '.join(columns)}, \"date\" varchar) WITH ("
                    f"external_location = 'local:///{relative.as_posix()}', format = 'PARQUET', "
                    "partitioned_by = ARRAY['date'])"))
                conn.execute(text(f"CALL lake.system.sync_partition_metadata('{SCHEMA}', "
                                  f"'{use_case_id}_{layer}', 'FULL')"))
                counts[table] = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar())
    finally:
        engine.dispose()
    return counts
