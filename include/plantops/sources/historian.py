"""The plant historian side, reached through SQLAlchemy: tag values, predictions, plant events, labels.

The embedded tier uses SQLite; the stack tier writes to PostgreSQL (``PLANTOPS_HISTORIAN_URL``)
and reads through Trino's catalog over it (``PLANTOPS_HISTORIAN_READ_URL``). Every query uses bound parameters; timestamps are stored as naive
UTC. Writes replace a window (delete, then insert, in one transaction), so reruns are idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine

from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

metadata = MetaData()

tag_values = Table(
    "historian",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Column("ts", DateTime, primary_key=True),
    Column("value", Float),
    Column("quality", String(32), nullable=False, default="good"),
)

predictions = Table(
    "predictions",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("ts", DateTime, primary_key=True),
    Column("model_version", String(32), nullable=False),
    # The registered model the version belongs to: a fleet's turbines each have their own v1. Added
    # after the first release (nullable; PREDICTION_COLUMNS_ADDED adds it to an existing table).
    Column("model_name", String(128)),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("alarm", Integer, nullable=False),
    # A regression kind's expected target and residual (null for detectors).
    Column("expected", Float),
    Column("residual", Float),
    Column("top_tags", Text),
    Column("scored_at", DateTime, nullable=False),
)

plant_events = Table(
    "plant_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("asset", String(64), nullable=False),
    Column("ts", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("author", String(64), nullable=False),
)

labels = Table(
    "labels",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("start_ts", DateTime, primary_key=True),
    Column("end_ts", DateTime, nullable=False),
    Column("label", String(64), nullable=False),
    Column("source", String(64), nullable=False, default="lab"),
)

# Visual inspection (plantops.sources.inspections): the champion's verdict per cell, and the
# inspectors' late labels.
inspection_verdicts = Table(
    "inspection_verdicts",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("run_id", String(128), primary_key=True),
    Column("cell_id", String(128), primary_key=True),
    Column("captured_at", DateTime, nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("predicted_class", Integer, nullable=False),
    Column("defect_probability", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("heatmap", Text),  # path of the rejected cell's heat map, relative to PLANTOPS_HOME
    Column("scored_at", DateTime, nullable=False),
)

inspection_labels = Table(
    "inspection_labels",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("cell_id", String(128), primary_key=True),
    Column("defect_probability", Float, nullable=False),
    Column("inspector", String(64), nullable=False),
    Column("labelled_at", DateTime, nullable=False),
)

EVENT_KINDS = ("setpoint_change", "maintenance", "part_swap", "recipe_change", "camera_change", "lighting_change")


def naive_utc(value: datetime | Any) -> datetime:
    """Timestamps go to the database as naive UTC."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


PREDICTION_COLUMNS_ADDED = ("model_name",)


def engine(url: str | None = None, conn_id: str | None = None) -> Engine:
    """The write side (the replayer, predictions, plant events, labels) of the historian behind
    ``conn_id`` (default ``plantops_historian``; a site names its own: docs/sites.md), or ``url``."""
    from plantops import db

    return db.engine(url or get_settings().historian(conn_id)[0], metadata,
                     added={predictions: PREDICTION_COLUMNS_ADDED})


def reader(url: str | None = None, conn_id: str | None = None) -> Engine:
    """The read side: the same database, or Trino's catalog over it (``PLANTOPS_HISTORIAN_READ_URL``;
    a site's historian: its own catalog)."""
    from plantops import db

    return db.engine(url or get_settings().historian(conn_id)[1], metadata)


class SourceMismatch(LookupError):
    """The historian the URL points at lacks a table or column plantops reads."""


def check_source(url: str | None = None, conn_id: str | None = None) -> None:
    """Check the tables and columns plantops reads against what the catalog really has.

    Identifiers never come from YAML into SQL text: the queries are built from the table objects
    above with bound parameters. This check makes a wrong catalog, schema or table a clear error
    instead of an empty result.
    """
    from sqlalchemy import inspect

    eng = reader(url, conn_id)
    inspector = inspect(eng)
    where = eng.url.render_as_string(hide_password=True)
    for table in (tag_values, predictions, plant_events, labels):
        if not inspector.has_table(table.name):
            raise SourceMismatch(f"historian {where}: table {table.name!r} not found "
                                 f"(has: {sorted(inspector.get_table_names())})")
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing = sorted(set(table.c.keys()) - have)
        if missing:
            raise SourceMismatch(f"historian {where}: table {table.name!r} lacks columns {missing}")


def write_tag_values(frame: pd.DataFrame, url: str | None = None, conn_id: str | None = None) -> int:
    """Upsert long rows (asset, tag, ts, value, quality): the covered window per asset is replaced."""
    if frame.empty:
        return 0
    eng = engine(url, conn_id)
    rows = [
        {"asset": a, "tag": t, "ts": naive_utc(ts), "value": None if v != v else float(v), "quality": q}
        for a, t, ts, v, q in frame[["asset", "tag", "ts", "value", "quality"]].itertuples(index=False)
    ]
    with eng.begin() as conn:
        for asset, group in frame.groupby("asset"):
            tags = sorted(group["tag"].unique())
            conn.execute(
                delete(tag_values).where(
                    and_(
                        tag_values.c.asset == asset,
                        tag_values.c.tag.in_(tags),
                        tag_values.c.ts >= naive_utc(group["ts"].min()),
                        tag_values.c.ts <= naive_utc(group["ts"].max()),
                    )
                )
            )
        conn.execute(insert(tag_values), rows)
    return len(rows)


def read_window(asset: str, tags: tuple[str, ...] | list[str], start: datetime, end: datetime,
                url: str | None = None, conn_id: str | None = None) -> pd.DataFrame:
    """Rows of the asset's tags with start <= ts < end, ordered by tag and time."""
    import pandas as pd

    query = (
        select(tag_values.c.asset, tag_values.c.tag, tag_values.c.ts, tag_values.c.value, tag_values.c.quality)
        .where(
            tag_values.c.asset == asset,
            tag_values.c.tag.in_(list(tags)),
            tag_values.c.ts >= naive_utc(start),
            tag_values.c.ts < naive_utc(end),
        )
        .order_by(tag_values.c.tag, tag_values.c.ts)
    )
    with reader(url, conn_id).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).fetchall(), columns=["asset", "tag", "ts", "value", "quality"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    return frame


def known_tags(asset: str, tags: list[str] | tuple[str, ...],
               url: str | None = None, conn_id: str | None = None) -> set[str]:
    """Which of these tags the historian has ever stored for the asset."""
    query = select(tag_values.c.tag).where(tag_values.c.asset == asset, tag_values.c.tag.in_(list(tags))).distinct()
    with reader(url, conn_id).connect() as conn:
        return {row[0] for row in conn.execute(query)}


def read_frame(query: Any, times: tuple[str, ...],
               url: str | None = None, conn_id: str | None = None) -> pd.DataFrame:
    """The rows of ``query`` on the read side as a frame, its ``times`` columns as UTC timestamps."""
    import pandas as pd

    with reader(url, conn_id).connect() as conn:
        result = conn.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    for column in times:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _float_or_none(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def write_predictions(frame: pd.DataFrame, url: str | None = None, conn_id: str | None = None) -> int:
    """Replace the predictions of the covered window (rerun-safe)."""
    if frame.empty:
        return 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [
        {
            "asset": r.asset, "ts": naive_utc(r.ts), "model_version": str(r.model_version),
            "model_name": getattr(r, "model_name", None),
            "score": float(r.score), "threshold": float(r.threshold), "alarm": int(r.alarm),
            "expected": _float_or_none(getattr(r, "expected", None)),
            "residual": _float_or_none(getattr(r, "residual", None)),
            "top_tags": r.top_tags, "scored_at": now,
        }
        for r in frame.itertuples(index=False)
    ]
    with engine(url, conn_id).begin() as conn:
        for asset, group in frame.groupby("asset"):
            conn.execute(
                delete(predictions).where(
                    predictions.c.asset == asset,
                    predictions.c.ts >= naive_utc(group["ts"].min()),
                    predictions.c.ts <= naive_utc(group["ts"].max()),
                )
            )
        conn.execute(insert(predictions), rows)
    return len(rows)


def read_predictions(asset: str, start: datetime, end: datetime,
                     url: str | None = None, conn_id: str | None = None) -> pd.DataFrame:
    query = (
        select(predictions)
        .where(predictions.c.asset == asset, predictions.c.ts >= naive_utc(start), predictions.c.ts < naive_utc(end))
        .order_by(predictions.c.ts)
    )
    return read_frame(query, ("ts",), url, conn_id)


def record_plant_event(asset: str, ts: datetime, kind: str, description: str, author: str,
                       url: str | None = None, conn_id: str | None = None) -> None:
    """Log an operator intervention; recording the same event twice is a no-op."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"plant event kind must be one of {EVENT_KINDS}, got {kind!r}")
    row = {"asset": asset, "ts": naive_utc(ts), "kind": kind, "description": description, "author": author}
    with engine(url, conn_id).begin() as conn:
        exists = conn.execute(
            select(plant_events.c.id).where(*(plant_events.c[k] == v for k, v in row.items()))
        ).first()
        if not exists:
            conn.execute(insert(plant_events), [row])


def read_plant_events(asset: str, start: datetime, end: datetime,
                      url: str | None = None, conn_id: str | None = None) -> list[dict]:
    query = (
        select(plant_events)
        .where(plant_events.c.asset == asset, plant_events.c.ts >= naive_utc(start), plant_events.c.ts < naive_utc(end))
        .order_by(plant_events.c.ts)
    )
    with reader(url, conn_id).connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def write_labels(rows: list[dict], url: str | None = None, conn_id: str | None = None) -> None:
    """Upsert label periods (asset, start_ts, end_ts, label, source) keyed by asset and start."""
    with engine(url, conn_id).begin() as conn:
        for row in rows:
            row = {**row, "start_ts": naive_utc(row["start_ts"]), "end_ts": naive_utc(row["end_ts"])}
            conn.execute(delete(labels).where(labels.c.asset == row["asset"], labels.c.start_ts == row["start_ts"]))
            conn.execute(insert(labels), [row])


def read_labels(asset: str, url: str | None = None, conn_id: str | None = None) -> pd.DataFrame:
    return read_labels_of((asset,), url, conn_id)


def read_labels_of(assets: tuple[str, ...] | list[str],
                   url: str | None = None, conn_id: str | None = None) -> pd.DataFrame:
    """The label periods of these assets (lab results, confirmed faults, feedback), oldest first."""
    query = select(labels).where(labels.c.asset.in_(list(assets))).order_by(labels.c.start_ts)
    return read_frame(query, ("start_ts", "end_ts"), url, conn_id)


def newest(column: Any, where: Any, conn_id: str | None = None) -> datetime | None:
    """The largest time in a historian table's ``column`` where ``where`` holds, None for none."""
    import sqlalchemy as sa

    with reader(conn_id=conn_id).connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(column)).where(where)).scalar()
    if isinstance(newest, str):  # SQLite through a plain string column type on some readers
        newest = datetime.fromisoformat(newest)
    return newest
