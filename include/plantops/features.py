"""The feature contract shared by the Spark job, training, scoring and monitoring.

Bronze is long format (asset, tag, ts, value, quality, source, batch). Features are wide, one row
per asset and time bucket:

- ``<tag>``          mean of the tag's good values in the bucket; a bucket without one carries the
                     tag's last bucket mean forward for at most ``max_gap`` seconds, after which the
                     tag is missing (NaN), not stale
- ``<tag>__rmean``   rolling mean of ``<tag>`` over the last ``rolling_buckets`` buckets *of time*:
                     the rows whose bucket lies in ``(ts - rolling_buckets * bucket, ts]``, however
                     many that are (fewer after a gap: the window never reaches across it)
- ``<tag>__rstd``    rolling sample standard deviation over the same window (0 while undefined)

A row's values depend only on the bronze rows of the ``max_gap + rolling window`` before it, never
on how far back a run read: so a day rebuilt alone equals the same day built inside a longer range.

The production transform is ``spark_jobs/build_features.py``; :func:`wide_features_pandas` is
the same computation in pandas, used as a cross-check in tests and as the baseline in the bench.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

KEYS = ("asset", "ts")
SUFFIXES = ("", "__rmean", "__rstd")
# The default of features.max_gap in the use-case YAML ('6h'), in seconds.
DEFAULT_MAX_GAP_SECONDS = 6 * 3600


def format_ranges(ranges: Iterable[tuple[str | date, str | date]]) -> str:
    """``[(start, end), ...]`` -> ``'start:end,start:end'``: the feature job's ``--ranges``."""
    return ",".join(f"{start}:{end}" for start, end in ranges)


def parse_ranges(spec: str) -> list[tuple[date, date]]:
    """``'2024-01-02:2024-01-04,2025-06-01:2025-06-02'`` -> sorted ``[start, end)`` day ranges.

    Each range needs ``end > start``; ranges may touch but not overlap (a day built by two
    ranges would be written twice).
    """
    ranges = []
    for part in (p.strip() for p in str(spec).split(",")):
        start, sep, end = part.partition(":")
        try:
            if not sep:
                raise ValueError("no ':'")
            first, after = date.fromisoformat(start.strip()), date.fromisoformat(end.strip())
        except ValueError as exc:
            raise ValueError(f"feature range {part!r}: expected START:END as ISO days (YYYY-MM-DD:YYYY-MM-DD), "
                             f"in {spec!r}") from exc
        if after <= first:
            raise ValueError(f"feature range {part!r}: the end (exclusive) must be after the start, in {spec!r}")
        ranges.append((first, after))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            raise ValueError(f"feature ranges overlap at {start}: each day may be built by one range only, in {spec!r}")
    return ranges


def feature_columns(tags: tuple[str, ...] | list[str]) -> list[str]:
    return [f"{tag}{suffix}" for tag in tags for suffix in SUFFIXES]


def base_columns(tags: tuple[str, ...] | list[str]) -> list[str]:
    """The per-bucket means only: what drift monitoring compares."""
    return list(tags)


def wide_features_pandas(
    long: pd.DataFrame, tags: list[str], bucket_seconds: int, rolling_buckets: int,
    max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
) -> pd.DataFrame:
    """Reference implementation of the Spark transform (see the module docstring)."""
    import numpy as np
    import pandas as pd

    good = long[(long["quality"] == "good") & long["tag"].isin(tags)]
    if good["ts"].dtype.kind == "M":
        # Whole seconds since the epoch, whatever the resolution (ns from pandas, us from parquet).
        zero = pd.Timestamp(0, tz="UTC") if getattr(good["ts"].dt, "tz", None) is not None else pd.Timestamp(0)
        epoch = (good["ts"] - zero) // pd.Timedelta(seconds=1)
    else:
        epoch = good["ts"]
    good = good.assign(bucket=(epoch // bucket_seconds) * bucket_seconds)
    wide = good.pivot_table(index=["asset", "bucket"], columns="tag", values="value", aggfunc="mean")
    wide = wide.reindex(columns=list(tags)).sort_index()
    # Carry forward at most max_gap: the bucket each carried value came from, and how old it is.
    buckets = wide.index.get_level_values("bucket").to_numpy(dtype="int64")[:, None]
    seen = pd.DataFrame(np.where(wide.notna(), buckets, np.nan), index=wide.index, columns=wide.columns)
    age = buckets - seen.groupby(level="asset").ffill()
    wide = wide.groupby(level="asset").ffill().where(age <= max_gap_seconds)
    # Windows over time, not rows: a time-based window on the bucket start, per asset. Bucket
    # starts are multiples of bucket_seconds, so (t - rolling_buckets * bucket, t] holds exactly
    # the buckets Spark's rangeBetween(-(rolling_buckets - 1) * bucket, 0) holds.
    at = pd.to_datetime(wide.index.get_level_values("bucket"), unit="s")
    timed = wide.set_axis(pd.MultiIndex.from_arrays([wide.index.get_level_values("asset"), at]))
    window = f"{rolling_buckets * bucket_seconds}s"

    def roll(min_periods: int):
        # (asset, at) is unique, so the result is aligned back to the rows by key, not by position.
        return timed.reset_index(level=0).groupby("asset").rolling(window, min_periods=min_periods)[list(tags)]

    roll_mean = roll(1).mean().reindex(timed.index).set_axis(wide.index)
    roll_std = roll(2).std().reindex(timed.index).set_axis(wide.index).fillna(0.0)
    parts = {}
    for tag in tags:
        parts[tag] = wide[tag]
        parts[f"{tag}__rmean"] = roll_mean[tag]
        parts[f"{tag}__rstd"] = roll_std[tag]
    out = pd.DataFrame(parts).reset_index()
    out["ts"] = pd.to_datetime(out.pop("bucket"), unit="s", utc=True)
    out = out[["asset", "ts", *feature_columns(tags)]]
    return out.replace([np.inf, -np.inf], np.nan)
