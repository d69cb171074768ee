"""The feature contract shared by the Spark job, training, scoring and monitoring.

Bronze is long format (asset, tag, ts, value, quality, source, batch). Features are wide, one row
per asset and time bucket:

- ``<tag>``          mean of the tag's good values in the bucket, carried forward over gaps
- ``<tag>__rmean``   rolling mean of ``<tag>`` over the last ``rolling_buckets`` buckets
- ``<tag>__rstd``    rolling sample standard deviation over the same buckets (0 while undefined)

The production transform is ``spark_jobs/build_features.py``; :func:`wide_features_pandas` is
the same computation in pandas, used as a cross-check in tests and as the baseline in the bench.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

KEYS = ("asset", "ts")
SUFFIXES = ("", "__rmean", "__rstd")


def feature_columns(tags: tuple[str, ...] | list[str]) -> list[str]:
    return [f"{tag}{suffix}" for tag in tags for suffix in SUFFIXES]


def base_columns(tags: tuple[str, ...] | list[str]) -> list[str]:
    """The per-bucket means only: what drift monitoring compares."""
    return list(tags)


def wide_features_pandas(
    long: pd.DataFrame, tags: list[str], bucket_seconds: int, rolling_buckets: int
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
    wide = wide.groupby(level="asset").ffill()
    parts = {}
    grouped = wide.groupby(level="asset")
    roll_mean = grouped.rolling(rolling_buckets, min_periods=1).mean().droplevel(0)
    roll_std = grouped.rolling(rolling_buckets, min_periods=2).std().droplevel(0).fillna(0.0)
    for tag in tags:
        parts[tag] = wide[tag]
        parts[f"{tag}__rmean"] = roll_mean[tag]
        parts[f"{tag}__rstd"] = roll_std[tag]
    out = pd.DataFrame(parts).reset_index()
    out["ts"] = pd.to_datetime(out.pop("bucket"), unit="s", utc=True)
    out = out[["asset", "ts", *feature_columns(tags)]]
    return out.replace([np.inf, -np.inf], np.nan)
