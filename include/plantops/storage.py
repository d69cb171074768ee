"""Atomic, partitioned parquet files: the bronze store and quarantined batches.

A write goes to a hidden temporary file in the target folder and is renamed into place, so a
reader never sees half a file and a killed task leaves only a hidden temp file behind. One file
per (partition, source) means a rerun replaces exactly what it wrote before.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def atomic_write_json(path: Path, payload: Any) -> Path:
    return atomic_write_bytes(path, json.dumps(payload, indent=2, default=str).encode())


def atomic_write_parquet(frame: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    # Microsecond timestamps: Spark 4 refuses parquet TIMESTAMP(NANOS), pandas' default.
    pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=True)
    os.replace(tmp, path)
    return path


def write_bronze(root: Path, use_case: str, frame: pd.DataFrame, name: str) -> dict[str, int]:
    """Write long rows into ``<root>/<use_case>/date=YYYY-MM-DD/<name>.parquet``, one file per day.

    Returns rows written per date. ``name`` identifies the source (``historian`` or the landed
    file), so writing the same source again replaces its rows instead of duplicating them.
    """
    written: dict[str, int] = {}
    if frame.empty:
        return written
    days = frame["ts"].dt.strftime("%Y-%m-%d")
    for day, part in frame.groupby(days):
        part = part.sort_values(["tag", "ts"]).reset_index(drop=True)
        atomic_write_parquet(part, root / use_case / f"date={day}" / f"{name}.parquet")
        written[str(day)] = len(part)
    return written


def read_bronze(root: Path, use_case: str, start_day: str, end_day: str) -> pd.DataFrame:
    """All bronze rows of the days in [start_day, end_day)."""
    import pandas as pd

    frames = []
    for folder in sorted((root / use_case).glob("date=*")):
        day = folder.name.removeprefix("date=")
        if start_day <= day < end_day:
            frames.extend(pd.read_parquet(f) for f in sorted(folder.glob("*.parquet")))
    if not frames:
        return pd.DataFrame(columns=["asset", "tag", "ts", "value", "quality", "source", "batch"])
    return pd.concat(frames, ignore_index=True)
