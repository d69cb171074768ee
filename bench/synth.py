"""Deterministic synthetic historian data in the bronze layout, cached between bench runs.

Long rows (asset, tag, ts, value, quality, source, batch), one row per tag and second for the
use case's tags, written as ``<root>/date=YYYY-MM-DD/historian.parquet`` like the ingest writes
bronze (``ts`` as timestamp[us, UTC], strings as plain strings). A day's content depends only on
its index, so every size shares its whole days: they are generated once into a pool and
hard-linked into each size's root; only a size's last, partial day is its own.

Values are a slow sine per tag inside the tag's physical range plus noise: enough variety for
the aggregates, nothing the engines could shortcut.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plantops.config import Tag

log = logging.getLogger(__name__)

FIRST_DAY = date(2024, 1, 1)
SECONDS_PER_DAY = 86_400
SEED = 20240101
LAYOUT_VERSION = 1  # bump when the generator changes: invalidates the cache
ASSET = "tep_reactor"


@dataclass(frozen=True)
class Bronze:
    root: Path
    points: int
    seconds: int
    tags: tuple[str, ...]
    start: date  # first day (inclusive)
    end: date  # day after the last one (exclusive)

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def _day_table(tags: tuple[Tag, ...], day_index: int, seconds: int) -> pa.Table:
    """``seconds`` seconds of day ``day_index`` (from midnight), every tag each second."""
    rng = np.random.default_rng([SEED, day_index])
    n_tags = len(tags)
    t0 = (np.datetime64(FIRST_DAY, "s") + np.timedelta64(day_index * SECONDS_PER_DAY, "s")).astype("int64")
    secs = np.arange(seconds, dtype=np.int64)
    # ts-major order (every tag at one second, then the next second): how a historian pull arrives.
    ts_us = np.repeat((t0 + secs) * 1_000_000, n_tags)
    tag_idx = np.tile(np.arange(n_tags, dtype=np.int32), seconds)
    lo = np.array([t.min for t in tags])
    hi = np.array([t.max for t in tags])
    mid, span = (lo + hi) / 2, (hi - lo)
    period = 3_600.0 * (1 + np.arange(n_tags) % 7)  # 1..7 h
    phase = np.arange(n_tags) * 0.7
    absolute = (t0 + secs).astype(np.float64)
    wave = np.sin(2 * np.pi * absolute[:, None] / period[None, :] + phase[None, :])
    values = mid + span / 8 * wave + rng.normal(0.0, 1.0, size=(seconds, n_tags)) * span / 50
    names = pa.array([t.name for t in tags], pa.string())
    n = seconds * n_tags

    def constant(text: str) -> pa.Array:
        codes = pa.array(np.zeros(n, np.int32))
        return pa.DictionaryArray.from_arrays(codes, pa.array([text])).cast(pa.string())

    return pa.table(
        {
            "asset": constant(ASSET),
            "tag": pa.DictionaryArray.from_arrays(pa.array(tag_idx), names).cast(pa.string()),
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "value": pa.array(values.reshape(-1)),
            "quality": constant("good"),
            "source": constant("historian"),
            "batch": constant("bench"),
        }
    )


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def bronze(cache: Path, points: int, tags: tuple[Tag, ...]) -> Bronze:
    """The bronze root holding ``points`` points (rounded down to whole seconds), generating it once."""
    n_tags = len(tags)
    seconds = points // n_tags
    full_days, rest = divmod(seconds, SECONDS_PER_DAY)
    names = tuple(t.name for t in tags)
    result = Bronze(
        root=cache / f"bronze_{points}",
        points=seconds * n_tags,
        seconds=seconds,
        tags=names,
        start=FIRST_DAY,
        end=FIRST_DAY + timedelta(days=full_days + (1 if rest else 0)),
    )
    marker = result.root / "_bench.json"
    meta = {"version": LAYOUT_VERSION, "points": result.points, "tags": list(names), "seed": SEED}
    if marker.exists() and json.loads(marker.read_text()) == meta:
        log.info("bronze %s: cached (%d points, %d days)", result.root, result.points, result.days)
        return result
    shutil.rmtree(result.root, ignore_errors=True)
    log.info("bronze %s: generating %d points over %d days", result.root, result.points, result.days)
    pool = cache / f"days_v{LAYOUT_VERSION}_{n_tags}"
    for i in range(full_days):
        day = (FIRST_DAY + timedelta(days=i)).isoformat()
        pooled = pool / f"{day}.parquet"
        if not pooled.exists():
            _write(_day_table(tags, i, SECONDS_PER_DAY), pooled)
        target = result.root / f"date={day}" / "historian.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(pooled, target)
    if rest:
        day = (FIRST_DAY + timedelta(days=full_days)).isoformat()
        _write(_day_table(tags, full_days, rest), result.root / f"date={day}" / "historian.parquet")
    marker.write_text(json.dumps(meta))
    return result
