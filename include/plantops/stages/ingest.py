"""Ingest: historian window and landed files -> validation -> bronze or quarantine.

Quality belongs to one value, as in a historian: a bad value (a PI digital state such as
``Scan Timeout``, NaN, an infinity, a value outside its tag's physical range) rejects that value
only; the other values of its row are written. Nothing is dropped silently: every rejected value is
one record ``(asset, tag, ts, raw, reason, source, batch)`` in ``quarantine/<uc>/rows/<batch>.parquet``,
``raw`` being the value as it came (the state's text, the number as text), the same shape for the
historian and for landed files.

Accounting holds for every batch, per value (values_in == values_written + values_rejected) and per
row (rows_in == rows_written + rows_rejected, a written row having at least one value in bronze).
A historian row, and a row of a long landed file, is one value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from plantops.config import LandedFileSource, UseCase
from plantops.settings import get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

LONG_COLUMNS = ["asset", "tag", "ts", "value", "quality", "source", "batch"]
# One rejected value: where it belongs, what it was (as text) and why it was rejected.
REJECTED_COLUMNS = ["asset", "tag", "ts", "raw", "reason", "source", "batch"]
DUPLICATE_ROW = "duplicate row"
NO_TIMESTAMP = "missing or invalid timestamp"
# Texts that are an empty cell, not a digital state.
EMPTY_TEXTS = frozenset({"", "nan", "null", "none"})


class HistorianUnavailable(RuntimeError):
    """The historian could not be read; nothing was written."""


def range_reason(lo: float, hi: float) -> str:
    return f"out of range [{lo:g}, {hi:g}]"


def _value_problems(values: np.ndarray, lo: Any, hi: Any, reason_out: Any,
                    missing_allowed: np.ndarray | None = None) -> np.ndarray:
    """Each value's problem ("" for none): missing, not finite, or outside [lo, hi].

    ``lo``, ``hi`` and ``reason_out`` are scalars (one tag) or arrays aligned with ``values``.
    """
    import numpy as np

    reasons = np.full(len(values), "", dtype=object)
    missing = np.isnan(values)
    if missing_allowed is not None:
        missing &= ~missing_allowed
    reasons[missing] = "missing (NaN)"
    reasons[np.isposinf(values)] = "not finite (inf)"
    reasons[np.isneginf(values)] = "not finite (-inf)"
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(values) & ((values < lo) | (values > hi))
    reasons[outside] = reason_out if np.isscalar(reason_out) else np.asarray(reason_out, dtype=object)[outside]
    return reasons


def _raw_text(value: Any) -> str:
    """A cell as it came: a state's text unchanged, a number as Python writes it (nan, inf, 1e+06)."""
    if isinstance(value, str):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # a numpy scalar: its Python value (numpy 2's repr names the type)
    if isinstance(value, float):
        return repr(value)
    if value is None or str(value) in ("<NA>", "NaT"):
        return "null"
    return str(value)


def tally(rejected: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rejected values per tag and reason: ``{tag: {reason: count}}``."""
    out: dict[str, dict[str, int]] = {}
    for (tag, reason), n in rejected.groupby(["tag", "reason"], sort=True).size().items():
        out.setdefault(str(tag), {})[str(reason)] = int(n)
    return out


def summary(rejected_values: dict[str, dict[str, int]]) -> list[str]:
    return [f"{n} x {reason} in {tag}" for tag, reasons in sorted(rejected_values.items())
            for reason, n in sorted(reasons.items())]


def _quarantine_rows(use_case: UseCase, rejected: pd.DataFrame, name: str) -> str | None:
    """Write the batch's rejected-value records; a batch without any leaves no file (a stale one
    of an earlier version of the same file is removed: its values are no longer the live ones)."""
    from plantops.storage import atomic_write_parquet

    path = get_settings().quarantine_root / use_case.id / "rows" / f"{name}.parquet"
    if rejected.empty:
        path.unlink(missing_ok=True)
        return None
    atomic_write_parquet(rejected[REJECTED_COLUMNS].reset_index(drop=True), path)
    return str(path)


def historian_problems(use_case: UseCase, frame: pd.DataFrame) -> np.ndarray:
    """Each historian row's problem ("" for none): an unknown tag or quality, then the value's
    (a value of good quality must be present; any value must be finite and inside its tag's range)."""
    import numpy as np

    from plantops.stages.validation import QUALITIES

    tags = {t.name: t for t in use_case.tags_from("historian")}
    tag = frame["tag"]
    lo = tag.map(lambda t: tags[t].min if t in tags else np.nan).to_numpy(dtype=float)
    hi = tag.map(lambda t: tags[t].max if t in tags else np.nan).to_numpy(dtype=float)
    why_out = tag.map(lambda t: range_reason(tags[t].min, tags[t].max) if t in tags else "").to_numpy(dtype=object)
    values = frame["value"].to_numpy(dtype=float, na_value=np.nan)
    reasons = _value_problems(values, lo, hi, why_out, missing_allowed=(frame["quality"] != "good").to_numpy())
    quality = frame["quality"]
    bad_quality = ~quality.isin(QUALITIES).to_numpy()
    reasons[bad_quality] = ("unknown quality " + quality[bad_quality].astype(str).map(repr)).to_numpy()
    unknown = ~tag.isin(list(tags)).to_numpy()
    reasons[unknown] = ("unknown tag " + tag[unknown].astype(str).map(repr)).to_numpy()
    return reasons


def _historian_records(frame: pd.DataFrame, reasons: Any, batch: str) -> pd.DataFrame:
    return frame.assign(raw=[_raw_text(v) for v in frame["value"].tolist()], reason=reasons, source="historian",
                        batch=batch)[REJECTED_COLUMNS]


def ingest_historian(use_case: UseCase, start: datetime, end: datetime, run_id: str) -> dict:
    """Pull [start, end) from the historian, validate, write bronze per day (rerun-safe)."""
    from plantops.sources import historian
    from plantops.stages import validation
    from plantops.storage import write_bronze

    from sqlalchemy.exc import SQLAlchemyError

    import pandas as pd

    tags = [t.name for t in use_case.tags_from("historian")]
    try:
        conn = use_case.historian_conn
        historian.check_source(conn_id=conn)
        frames, unknown = [], {}
        for asset in use_case.assets:  # a fleet's assets share the template's tags
            part = historian.read_window(asset, tags, start, end, conn_id=conn)
            absent = sorted(set(tags) - set(part["tag"].unique()))
            missing = sorted(set(absent) - historian.known_tags(asset, absent, conn_id=conn)) if absent else []
            if missing:
                unknown[asset] = missing
            frames.append(part)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    except (SQLAlchemyError, OSError) as exc:  # OSError: an HTTP client (Trino) that cannot connect
        # Nothing was written yet: the task fails whole, Airflow retries with backoff.
        raise HistorianUnavailable(f"historian unreachable or failing for {use_case.id} "
                                   f"[{start}, {end}): {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if unknown:
        raise ValueError(f"use case {use_case.id}: tags not in the historian "
                         + "; ".join(f"for asset {a!r}: {tags_}" for a, tags_ in unknown.items())
                         + f" (check include/use_cases/{use_case.id}.yaml)")
    counts = {"rows_in": len(frame), "rows_written": 0, "rows_rejected": 0}
    if frame.empty:
        log.warning("historian returned no rows for %s in [%s, %s)", use_case.id, start, end)
        return {**counts, "values_in": 0, "values_written": 0, "values_rejected": 0, "days": {}, "quarantined": None,
                "reason": "no rows in window", "rejected_values": {}}
    outcome = validation.validate_historian(use_case, frame)
    batch = f"historian:{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    frame = frame.reset_index(drop=True)
    reasons = historian_problems(use_case, frame)
    # GX is the gate: a row it flags that the checks above did not name keeps GX's reason.
    for position in outcome.bad_rows:
        if reasons[position] == "":
            log.warning("historian %s: GX rejected row %s for %s", batch, position, outcome.row_reasons[position])
            reasons[position] = outcome.row_reasons[position]
    bad = reasons != ""
    if outcome.structural or (bad.any() and use_case.landing and use_case.landing.bad_rows == "quarantine"):
        path = _quarantine_rows(use_case, _historian_records(frame, outcome.reason(), batch), batch.replace(":", "_"))
        raise ValueError(f"historian batch {batch} failed validation and was quarantined at {path}: {outcome.reason()}")
    rejected = _historian_records(frame[bad], reasons[bad], batch)
    quarantined = _quarantine_rows(use_case, rejected, batch.replace(":", "_"))
    bronze = frame[~bad].assign(source="historian", batch=batch)[LONG_COLUMNS]
    days = write_bronze(get_settings().bronze_root, use_case.id, bronze, "historian")
    counts.update(rows_written=sum(days.values()), rows_rejected=len(rejected))
    counts.update(values_in=counts["rows_in"], values_written=counts["rows_written"],
                  values_rejected=counts["rows_rejected"])
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
    rejected_values = tally(rejected)
    reason = "; ".join(summary(rejected_values) + ([] if outcome.success else [outcome.reason()])) or "ok"
    log.info("historian %s: %s (%s)", batch, counts, reason)
    return {**counts, "days": days, "quarantined": quarantined, "reason": reason, "rejected_values": rejected_values}


class FileProblem(ValueError):
    """The file as a whole cannot be trusted; it goes to quarantine with this reason."""


class AmbiguousLanding(ValueError):
    """A landed file matches more than one landing source: the use case must say which it is."""


# A time of day followed by a zone (Z or an offset): text that names its zone.
_ZONED = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def _timestamps(ts: pd.Series, zone: str | None, ts_format: str | None, name: str) -> pd.Series:
    """A file's timestamps in UTC, NaT where one is missing or invalid (its values are rejected).

    Text is ISO 8601 (or ``ts_format``); a zone in the text is honoured, text without one is local
    time in ``zone``. A local time that does not exist (the hour skipped in spring) or exists twice
    (the hour repeated in autumn) becomes NaT: which instant it meant is not guessed.
    """
    import pandas as pd

    if ts.empty:  # a file without rows: GX says so; its timestamps' zone is no question
        return pd.Series(pd.DatetimeIndex([], tz="UTC"), index=ts.index, dtype="datetime64[ns, UTC]")
    if not pd.api.types.is_datetime64_any_dtype(ts):
        if pd.api.types.is_numeric_dtype(ts) or pd.api.types.is_bool_dtype(ts):
            raise FileProblem(f"column {name} holds numbers, not timestamps: write them as ISO 8601 text "
                              "(or set the source's ts_format)")
        text = ts.astype("string").str.strip()
        present = (text.notna() & (text != "")).to_numpy()
        how = f"format {ts_format!r}" if ts_format else "ISO 8601"
        if ts_format:
            ts = pd.to_datetime(text, format=ts_format, errors="coerce", utc="%z" in ts_format)
        else:
            zoned = text.str.contains(_ZONED, regex=True, na=False).to_numpy()
            if (zoned & present).any() and (~zoned & present).any():
                raise FileProblem(f"column {name}: some timestamps name their zone and some do not, e.g. "
                                  f"{text[zoned].iloc[0]!r} and {text[~zoned & present].iloc[0]!r}")
            ts = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=bool(zoned.any()))
        if len(ts) and ts.isna().all():
            example = f"e.g. {text[present].iloc[0]!r}" if present.any() else "every cell is empty"
            raise FileProblem(f"column {name} is not a timestamp ({how}): {example}")
    if getattr(ts.dt, "tz", None) is None:
        if zone is None:
            raise FileProblem("timestamps have no time zone; set landing.naive_timezone (or the source's "
                              "naive_timezone) in the use case to accept them")
        ts = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _numbers(column: pd.Series, decimal: str = ".") -> tuple[pd.Series, np.ndarray]:
    """A value column of text (or JSON's mix of numbers and text) as numbers, and which cells are
    digital states: text that is neither a number nor empty. ``decimal`` "," reads "1,5" as 1.5."""
    import numpy as np
    import pandas as pd

    text = column
    if decimal != ".":  # csv only, where every cell is text
        text = column.str.replace(decimal, ".", regex=False)
    numeric = pd.to_numeric(text, errors="coerce").astype(float)
    parsed = numeric.notna()
    try:  # to_numeric's parser can be one unit in the last place off; Python's float() is exact
        numeric[parsed] = text[parsed].astype(float)
    except (ValueError, TypeError):
        pass
    lowered = column.astype(str).str.strip().str.lower()
    states = (column.notna() & numeric.isna() & ~lowered.isin(EMPTY_TEXTS)).to_numpy()
    return numeric, states


def _is_text(column: pd.Series) -> bool:
    import pandas as pd

    return column.dtype == object or isinstance(column.dtype, pd.StringDtype)


@dataclass(frozen=True, eq=False)
class PreparedFile:
    """A landed wide file ready for validation, with each value's problem already named.

    ``frame`` has every row of the file: ``ts`` in UTC and the tag columns numeric (a digital state
    is NaN there). ``problems`` has the same shape over the file's value columns: "" for a good
    value, else why the value is rejected. ``duplicate`` marks exact copies of an earlier row.
    """

    raw: pd.DataFrame
    frame: pd.DataFrame
    problems: pd.DataFrame
    duplicate: pd.Series

    @property
    def value_columns(self) -> list[str]:
        return list(self.problems.columns)

    def named_rows(self) -> np.ndarray:
        """Per row of the file: does any of its values have a named problem?"""
        return (self.problems != "").to_numpy().any(axis=1)

    def numbers(self, values: pd.DataFrame) -> np.ndarray:
        """The numbers of ``values`` (rows of :func:`_landed_values`, which are row-major)."""
        flat = self.frame[self.value_columns].to_numpy(dtype=float).reshape(-1)
        return flat[values.index.to_numpy()]

    def raw_texts(self, values: pd.DataFrame) -> list[str]:
        """The text of each of ``values`` as it came in the file."""
        import pandas as pd

        raw = pd.Series("", index=values.index, dtype=object)
        for tag, part in values.groupby("tag", sort=False):
            cells = self.raw[tag].iloc[part["row"].to_numpy()].tolist()
            raw.loc[part.index] = [_raw_text(v) for v in cells]
        return raw.tolist()


def prepare_landed(use_case: UseCase, frame: pd.DataFrame,
                   source: LandedFileSource | None = None) -> PreparedFile:
    """Normalise a landed wide file (its timestamp column named ``ts``) and name each value's
    problem, before GX validates the file.

    - timestamps to UTC; naive ones only when the use case names their zone (else FileProblem);
    - a value column of text is read as numbers; its other texts are historian digital states
      ("Bad", "I/O Timeout", "Scan Timeout", ...), each rejecting its own value, named; a column
      with no number at all is not a value column (FileProblem);
    - a value that is NaN, infinite or outside its tag's [min, max] is rejected with that reason;
    - every value of a row without a valid timestamp is rejected;
    - an exact duplicate of an earlier row is rejected (its values that are bad keep their own
      reason, so the states the file holds are all counted); the first copy is kept.
    """
    import numpy as np
    import pandas as pd

    source = source or use_case.landing.effective_sources[0]
    raw = frame.reset_index(drop=True)
    frame = raw.copy()
    if "ts" in frame.columns:
        zone = use_case.landing.zone_of(source)
        frame["ts"] = _timestamps(frame["ts"], zone, source.ts_format, source.ts_column)
    tags = {t.name: t for t in use_case.tags_from("landing")}
    columns = [c for c in frame.columns if c != "ts"]
    problems = pd.DataFrame({c: np.full(len(frame), "", dtype=object) for c in columns}, index=frame.index)
    for name in columns:
        tag = tags.get(name)
        if tag is None:
            continue  # not a column of the use case: GX fails the file on its columns
        column = frame[name]
        states = np.zeros(len(frame), dtype=bool)
        if _is_text(column):
            numeric, states = _numbers(column, source.decimal)
            if states.any() and numeric.notna().sum() == 0:
                example = column[states].iloc[0]
                raise FileProblem(f"column {name} is not numeric: {int(states.sum())} of {len(frame)} values are "
                                  f"text, e.g. {example!r}")
            frame[name] = column = numeric
        elif not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            continue  # GX fails the file on the column's type
        reasons = _value_problems(column.to_numpy(dtype=float), tag.min, tag.max, range_reason(tag.min, tag.max))
        reasons[states] = ("digital state " + raw.loc[states, name].astype(str).map(repr)).to_numpy()
        problems[name] = reasons
    if "ts" in frame.columns:
        no_ts = frame["ts"].isna().to_numpy()
        for name in columns:
            problems.loc[no_ts & (problems[name] == "").to_numpy(), name] = NO_TIMESTAMP
    # Exact copies of the row as it came (the texts, not the numbers read from them).
    duplicate = frame.assign(**{c: raw[c] for c in columns}).duplicated(keep="first")
    for name in columns:
        problems.loc[duplicate & (problems[name] == ""), name] = DUPLICATE_ROW
    return PreparedFile(raw=raw, frame=frame, problems=problems, duplicate=duplicate)


@dataclass(frozen=True, eq=False)
class PreparedLong:
    """A landed long file (one value per row) ready for validation: ``values`` has one row per row
    of the file (row, asset, tag, ts, reason, batch, quality), ``checked`` the frame GX validates,
    ``duplicate`` the later copies of an (asset, tag, ts) the file already had."""

    raw: pd.DataFrame
    values: pd.DataFrame
    checked: pd.DataFrame
    duplicate: np.ndarray

    def named_rows(self) -> np.ndarray:
        return (self.values["reason"] != "").to_numpy()

    def numbers(self, values: pd.DataFrame) -> np.ndarray:
        return self.checked["value"].to_numpy(dtype=float)[values["row"].to_numpy()]

    def raw_texts(self, values: pd.DataFrame) -> list[str]:
        return [_raw_text(v) for v in self.raw["value"].iloc[values["row"].to_numpy()].tolist()]


def prepare_long(use_case: UseCase, frame: pd.DataFrame, source: LandedFileSource,
                 batch: str) -> PreparedLong:
    """Name each value's problem in a long file (columns asset, tag, ts, value[, quality]).

    As a historian row: a value of quality other than good may be missing and is written with its
    quality; an unknown asset, tag or quality, a digital state, NaN, an infinity, a value outside
    its tag's range or a row without a valid timestamp rejects that value; a later row for an
    (asset, tag, ts) the file already had is rejected ``duplicate row``, the first one kept.
    """
    import numpy as np
    import pandas as pd

    from plantops.config import tag_name
    from plantops.stages.validation import QUALITIES

    raw = frame.reset_index(drop=True)
    n = len(raw)

    def text(name: str) -> pd.Series:
        return raw[name].astype("string").fillna("").str.strip().astype(object)

    asset, tag = text("asset"), text("tag")
    tags = {t.name: t for t in use_case.tags_from("landing")}
    tag = tag.map(lambda t: t if t in tags or tag_name(t) not in tags else tag_name(t))
    quality = (text("quality").str.lower() if "quality" in raw.columns
               else pd.Series("", index=raw.index, dtype=object))
    quality = quality.where(quality != "", "good")  # an empty cell is a good value, as the column's absence
    ts = _timestamps(raw["ts"], use_case.landing.zone_of(source), source.ts_format, source.ts_column)
    value = raw["value"]
    states = np.zeros(n, dtype=bool)
    if _is_text(value):
        value, states = _numbers(value, source.decimal)
    elif not pd.api.types.is_numeric_dtype(value) or pd.api.types.is_bool_dtype(value):
        raise FileProblem(f"column value is not numeric: {value.dtype}")
    value = value.astype(float)
    lo = tag.map(lambda t: tags[t].min if t in tags else np.nan).to_numpy(dtype=float)
    hi = tag.map(lambda t: tags[t].max if t in tags else np.nan).to_numpy(dtype=float)
    why_out = tag.map(lambda t: range_reason(tags[t].min, tags[t].max) if t in tags else "")
    reasons = _value_problems(value.to_numpy(), lo, hi, why_out.to_numpy(dtype=object),
                              missing_allowed=(quality != "good").to_numpy())
    reasons[states] = ("digital state " + raw.loc[states, "value"].astype(str).map(repr)).to_numpy()
    odd = ~quality.isin(QUALITIES).to_numpy()
    reasons[odd] = ("unknown quality " + quality[odd].map(repr)).to_numpy()
    historian_tags = {t.name for t in use_case.tags_from("historian")}
    for t in tag[~tag.isin(list(tags))].unique():
        why = (f"tag {t!r} comes from the historian, not from landed files" if t in historian_tags
               else f"unknown tag {t!r}")
        reasons[(tag == t).to_numpy()] = why
    stranger = ~asset.isin(list(use_case.assets)).to_numpy()
    reasons[stranger] = ("unknown asset " + asset[stranger].map(repr)).to_numpy()
    reasons[ts.isna().to_numpy() & (reasons == "")] = NO_TIMESTAMP
    duplicate = pd.DataFrame({"asset": asset, "tag": tag, "ts": ts}).duplicated(keep="first").to_numpy()
    reasons[duplicate & (reasons == "")] = DUPLICATE_ROW
    values = pd.DataFrame({"row": np.arange(n), "asset": asset, "tag": tag, "ts": ts, "reason": reasons,
                           "batch": batch, "quality": quality})
    checked = pd.DataFrame({"asset": asset, "tag": tag, "ts": ts, "value": value, "quality": quality})
    return PreparedLong(raw=raw, values=values, checked=checked, duplicate=duplicate)


def _held_elsewhere(use_case: UseCase, candidates: pd.DataFrame, numbers: np.ndarray, own: str,
                    file_name: str) -> tuple[pd.Series, pd.DataFrame, pd.Index]:
    """Each candidate value (asset, tag, ts) against the rows other landed files brought to bronze:
    another file's values are never written twice.

    Returns ``held`` (per candidate: "" or ``already in bronze from '<file>'`` when bronze holds the
    same value), the **conflicts** (candidates whose value differs from bronze's: columns asset,
    tag, ts, bronze_value, bronze_file, new_value, indexed as the candidates) and the candidates
    bronze holds already as this very file's (replaced by an earlier try of it: ``on_conflict:
    replace`` or ``cli correct``), which count as written.
    """
    import numpy as np
    import pandas as pd

    root = get_settings().bronze_root / use_case.id
    frames = []
    days = pd.DatetimeIndex(candidates["ts"].dt.floor("D").unique()).strftime("%Y-%m-%d")  # per day, not value
    for day in sorted(days):
        for path in sorted((root / f"date={day}").glob("landing-*.parquet")):
            if path.name != own:
                frames.append(pd.read_parquet(path, columns=["asset", "tag", "ts", "value", "batch"]))
    held = pd.Series("", index=candidates.index, dtype=object)
    clash = pd.DataFrame(columns=["asset", "tag", "ts", "bronze_value", "bronze_file", "new_value"])
    if not frames:
        return held, clash, pd.Index([])
    key = ["asset", "tag", "ts"]
    other = pd.concat(frames, ignore_index=True).drop_duplicates(key)
    other["ts"] = pd.to_datetime(other["ts"], utc=True).astype("datetime64[ns, UTC]")
    mine = candidates[key].assign(ts=candidates["ts"].astype("datetime64[ns, UTC]"), position=candidates.index,
                                  new_value=np.asarray(numbers, dtype=float))
    found = mine.merge(other, on=key, how="inner")
    old, new = found["value"].to_numpy(dtype=float), found["new_value"].to_numpy(dtype=float)
    same = (old == new) | (np.isnan(old) & np.isnan(new))
    ours = same & (found["batch"].astype(str) == file_name).to_numpy()
    repeat = found[same & ~ours]
    held.loc[repeat["position"].to_numpy()] = ("already in bronze from " + repeat["batch"].astype(str).map(repr)).to_numpy()
    differ = found[~same]
    clash = pd.DataFrame({"asset": differ["asset"].to_numpy(), "tag": differ["tag"].to_numpy(),
                          "ts": differ["ts"].to_numpy(), "bronze_value": differ["value"].to_numpy(dtype=float),
                          "bronze_file": differ["batch"].astype(str).to_numpy(),
                          "new_value": differ["new_value"].to_numpy()}, index=differ["position"].to_numpy())
    return held, clash, pd.Index(found.loc[ours, "position"].to_numpy())


def conflict_reason(bronze_file: str) -> str:
    return f"conflicts with bronze's value from {bronze_file!r}"


def _landed_values(use_case: UseCase, prepared: PreparedFile, batch: str) -> pd.DataFrame:
    """Every value of the file in long form, row-major: the file's row, asset, tag, ts, its problem."""
    import numpy as np
    import pandas as pd

    columns = prepared.value_columns
    n = len(prepared.frame)
    if "ts" in prepared.frame.columns:
        ts = pd.DatetimeIndex(prepared.frame["ts"]).tz_convert("UTC").tz_localize(None).to_numpy()
    else:
        ts = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return pd.DataFrame({
        "row": np.repeat(np.arange(n), len(columns)),
        "asset": use_case.assets[0],
        "tag": np.tile(np.asarray(columns, dtype=object), n),
        "ts": pd.DatetimeIndex(np.repeat(ts, len(columns))).tz_localize("UTC"),
        "reason": prepared.problems.to_numpy(dtype=object).reshape(-1),
        "batch": batch,
        "quality": "good",
    })


@dataclass(eq=False)
class _Judged:
    """A landed file read as its source says: its size, each value with its problem (None when the
    file cannot be split into values), GX's verdict, and problems of the file as a whole."""

    rows_in: int
    values_in: int
    notes: list[str]
    prepared: PreparedFile | PreparedLong | None = None
    values: pd.DataFrame | None = None
    outcome: Any = None


def _columns_note(source: LandedFileSource, expected: list[str], seen: list,
                  optional: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a file's columns, by name, and what was expected; None when they fit."""
    seen = [str(c) for c in seen]
    missing = [c for c in expected if c not in seen]
    unexpected = [c for c in seen if c not in expected and c not in optional]
    if not missing and not unexpected:
        return None
    wrong = ([f"missing {missing}"] if missing else []) + ([f"unexpected {unexpected}"] if unexpected else [])
    want = ", ".join(expected) + (f" (optional: {', '.join(optional)})" if optional else "")
    return (f"columns do not match source {source.name} ({source.format}, {source.layout}): "
            f"{'; '.join(wrong)}; expected {want}")


def tag_headers(raw: pd.DataFrame, tags: list[str], keep: str) -> pd.DataFrame:
    """A wide file's headers as tag names: a header that is no tag but whose tag name
    (:func:`plantops.config.tag_name`, as ``init-use-case`` drafted it: ``FIC-101.PV`` ->
    ``FIC_101_PV``) is one stands for that tag. Two headers for one tag are left as they are, and
    the column check names them."""
    from plantops.config import tag_name

    known = set(tags)
    names = {c: tag_name(str(c)) for c in raw.columns if c != keep and c not in known}
    names = {c: t for c, t in names.items() if t in known}
    taken = [t for t in names.values()] + [c for c in raw.columns if c in known]
    clash = {t for t in taken if taken.count(t) > 1}
    return raw.rename(columns={c: t for c, t in names.items() if t not in clash})


def _judge_wide(use_case: UseCase, source: LandedFileSource, raw: pd.DataFrame, batch: str) -> _Judged:
    """A wide file: a timestamp column and one column per landing tag, of the use case's one asset."""
    from plantops.stages import validation

    tags = [t.name for t in use_case.tags_from("landing")]
    raw = tag_headers(raw.drop(columns=[c for c in source.ignore_columns if c in raw.columns]), tags,
                      keep=source.ts_column)
    value_columns = [c for c in raw.columns if c != source.ts_column]
    judged = _Judged(rows_in=len(raw), values_in=len(raw) * len(value_columns), notes=[])
    note = _columns_note(source, [source.ts_column, *tags], list(raw.columns))
    if note:
        judged.notes.append(note)
    if source.ts_column != "ts":
        if "ts" in raw.columns:
            return judged  # a column 'ts' besides the timestamp column: named unexpected above
        raw = raw.rename(columns={source.ts_column: "ts"})
    try:
        prepared = prepare_landed(use_case, raw, source)
    except FileProblem as exc:
        judged.notes.append(str(exc))
        return judged
    kept = prepared.frame.index[~prepared.duplicate.to_numpy()]
    outcome = validation.validate_landed(use_case, prepared.frame.loc[kept],
                                         max_rows=use_case.landing.max_rows)
    values = _landed_values(use_case, prepared, batch)
    if not outcome.structural:
        values = _gx_fallback(values, prepared.named_rows(), kept.to_numpy(), outcome, batch)
    judged.prepared, judged.values, judged.outcome = prepared, values, outcome
    return judged


def _judge_long(use_case: UseCase, source: LandedFileSource, raw: pd.DataFrame, batch: str) -> _Judged:
    """A long file: one value per row, of any of the use case's assets; a row is one value."""
    import numpy as np

    from plantops.stages import validation

    judged = _Judged(rows_in=len(raw), values_in=len(raw), notes=[])
    note = _columns_note(source, ["asset", "tag", source.ts_column, "value"], list(raw.columns),
                         optional=("quality",))
    if note:
        judged.notes.append(note)
        return judged
    try:
        prepared = prepare_long(use_case, raw.rename(columns={source.ts_column: "ts"}), source, batch)
    except FileProblem as exc:
        judged.notes.append(str(exc))
        return judged
    kept = np.flatnonzero(~prepared.duplicate)
    outcome = validation.validate_landed_long(use_case, prepared.checked.iloc[kept],
                                              max_rows=use_case.landing.max_rows)
    values = prepared.values.copy()
    if not outcome.structural:
        values = _gx_fallback(values, prepared.named_rows(), kept, outcome, batch)
    judged.prepared, judged.values, judged.outcome = prepared, values, outcome
    return judged


def ingest_landed(use_case: UseCase, run_id: str) -> dict:
    """Every completed landed file: its source, ledger check, validation, bronze or quarantine, then archive.

    Per value: a file's bad values are rejected one by one, its good values written, unless the
    file as a whole is unusable (unreadable, columns, order, no rows), or ``landing.bad_rows:
    quarantine`` asks for the whole file to be quarantined on any rejected value. A file that
    matches no landing source is left in place and recorded once as ``ignored``; a file that
    matches two is an error of the use case (AmbiguousLanding), raised before anything is read.
    """
    from plantops.sources import landing

    if use_case.landing is None:
        return {"files": []}
    sources = use_case.landing.effective_sources
    found = [(landed, landing.sources_matching(landed.name, sources))
             for landed in landing.scan(use_case.landing.folder)]
    for landed, matched in found:
        if len(matched) > 1:
            both = " and ".join(f"{s.name} ({s.pattern!r})" for s in matched)
            raise AmbiguousLanding(f"use case {use_case.id}: landed file {landed.name!r} matches more than one landing "
                                   f"source: {both}; each file must match one source: narrow the patterns in "
                                   f"include/use_cases/{use_case.id}.yaml (nothing was ingested, the files stay in "
                                   f"{landed.path.parent})")
    results = []
    for landed, matched in found:
        if not matched:
            results.append(_ignore(use_case, landed, sources, run_id))
            continue
        previous = landing.already_processed(use_case.id, landed)
        if previous:
            # The copy's own ledger row, and the original named beside it: a re-send is its own event.
            ledger_id = landing.skip_duplicate(use_case.id, landed, previous, run_id)
            results.append({"file": landed.name, "status": "duplicate", "ledger_id": ledger_id,
                            "duplicate_of": previous["name"], "duplicate_of_ledger_id": previous["id"]})
            continue
        results.append(_ingest_file(use_case, matched[0], landed, run_id))
    return {"files": results}


def _ignore(use_case: UseCase, landed: Any, sources: tuple[LandedFileSource, ...], run_id: str) -> dict:
    from plantops.sources import landing

    reason = "matches no landing source; expected one of: " + ", ".join(s.describe() for s in sources)
    ledger_id, new = landing.record_ignored(use_case.id, landed, reason, run_id)
    if new:
        log.warning("%s: %s; left in %s (configure a source in include/use_cases/%s.yaml to read it)",
                    landed.name, reason, landed.path.parent, use_case.id)
    else:
        log.info("%s: still matches no landing source (ledger id %s)", landed.name, ledger_id)
    return {"file": landed.name, "status": "ignored", "reason": reason, "ledger_id": ledger_id}


def _ingest_file(use_case: UseCase, source: LandedFileSource, landed: Any, run_id: str) -> dict:
    """One landed file of a source: read, values judged, then bronze and archive, or quarantine."""
    from plantops.sources import landing
    from plantops.storage import write_bronze

    counts: dict[str, Any] = {"rows_in": 0, "rows_written": 0, "rows_rejected": 0,
                              "values_in": 0, "values_written": 0, "values_rejected": 0}
    try:
        raw = landing.read_landed(landed.path, source, use_case.id)
    except landing.TruncatedFile as exc:  # cut mid-record: not one value of it is read
        details = {"problem": "truncated", "offset": exc.offset, "size": exc.size}
        landing.quarantine(use_case.id, landed, str(exc), counts, run_id, details)
        return {"file": landed.name, "source": source.name, "status": "quarantined", "reason": str(exc),
                **details, **counts}
    except landing.UnreadableFile as exc:  # any unreadable file is quarantined, not fatal
        landing.quarantine(use_case.id, landed, str(exc), counts, run_id)
        return {"file": landed.name, "source": source.name, "status": "quarantined", "reason": str(exc), **counts}
    judge = _judge_wide if source.layout == "wide" else _judge_long
    judged = judge(use_case, source, raw, landed.name)
    counts.update(rows_in=judged.rows_in, values_in=judged.values_in)
    key = landing.batch_key(landed.name)
    values, outcome, prepared = judged.values, judged.outcome, judged.prepared
    # The file's own problems first, then the plain counts per tag and reason; GX's view of the same
    # cells (its expectation names and row counts) last, as the gate's evidence.
    gx = [] if outcome is None or outcome.success else [outcome.reason()]
    rejected_values: dict[str, dict[str, int]] = {}
    clash, replacing = None, None
    if values is not None:
        import pandas as pd

        replacing = pd.Series(False, index=values.index)  # good values that go to bronze in place of another's
        if not outcome.structural:
            good = values["reason"] == ""
            if good.any():
                held, clash, ours = _held_elsewhere(use_case, values[good], prepared.numbers(values[good]),
                                                    f"landing-{key}.parquet", landed.name)
                values.loc[held.index[held != ""], "reason"] = held[held != ""]
                replacing.loc[ours] = True
                if source.on_conflict == "replace":
                    replacing.loc[clash.index] = True
                else:  # kept beside bronze as a conflict, bronze's value stays until `cli correct`
                    values.loc[clash.index, "reason"] = clash["bronze_file"].map(conflict_reason)
        rejected_values = tally(values[values["reason"] != ""])
    reason = "; ".join(list(judged.notes) + summary(rejected_values) + gx) or "ok"
    bad = None if values is None else values["reason"] != ""
    whole_file = values is None or bool(judged.notes) or outcome.structural or (
        use_case.landing.bad_rows == "quarantine" and bool(bad.any()))
    if whole_file:
        counts.update(rows_rejected=judged.rows_in, values_rejected=judged.values_in)
        if values is not None:
            # Every value of the file is rejected: its own problem, or the file's.
            whole = values.assign(reason=values["reason"].where(bad, "file quarantined"))
            counts["rejected_values"] = tally(whole)
        landing.quarantine(use_case.id, landed, reason, counts, run_id)
        return {"file": landed.name, "source": source.name, "status": "quarantined", "reason": reason, **counts}
    rejected = values[bad].assign(raw=prepared.raw_texts(values[bad]), source="landing")
    quarantined_rows = _quarantine_rows(use_case, rejected, key)
    accepted = values[~bad]
    written = values[~bad & ~replacing].assign(value=prepared.numbers(values[~bad & ~replacing]), source="landing")
    days = write_bronze(get_settings().bronze_root, use_case.id, written[LONG_COLUMNS], f"landing-{key}")
    replaced = _keep_conflicts(use_case, source, landed.name, values, prepared, clash, run_id)
    rows_written = int(accepted["row"].nunique())
    counts.update(rows_written=rows_written, rows_rejected=judged.rows_in - rows_written,
                  values_written=int((~bad).sum()), values_rejected=int(bad.sum()),
                  rejected_values=rejected_values)
    if clash is not None and len(clash):
        counts["conflicts"] = len(clash)
    if replacing.any():
        counts["values_replaced"] = int(replacing.sum())
    assert counts["values_written"] == sum(days.values()) + int(replacing.sum())
    assert counts["values_in"] == counts["values_written"] + counts["values_rejected"]
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
    landing.archive(use_case.id, landed, counts, run_id, reason)
    return {"file": landed.name, "source": source.name, "status": "ingested", "days": days,
            "rejected_rows_at": quarantined_rows, **({"replaced_days": replaced} if replaced else {}), **counts}


def _keep_conflicts(use_case: UseCase, source: LandedFileSource, file_name: str, values: pd.DataFrame,
                    prepared: Any, clash: pd.DataFrame | None, run_id: str) -> list[str]:
    """Keep the file's conflicts beside bronze (both values, both files); with the source's
    ``on_conflict: replace`` put its values in place of bronze's at once, with the audit record.
    The days whose bronze changed that way (the next lines of ``pipeline.ingest`` announce them)."""
    from plantops.stages import corrections

    if clash is None or clash.empty:
        return []
    part = values.loc[clash.index]
    found = clash.assign(source="landing", new_quality=part["quality"].to_numpy(),
                         new_raw=prepared.raw_texts(part))
    ids = corrections.record(use_case.id, found, file_name, run_id)
    if source.on_conflict != "replace":
        return []
    done = corrections.replace(use_case.id, ids, f"source {source.name}", corrections.BY_SOURCE)
    return sorted({c["day"] for c in done})


def _gx_fallback(values: pd.DataFrame, named: np.ndarray, kept: np.ndarray, outcome: Any,
                 batch: str) -> pd.DataFrame:
    """GX is the gate: a row it flags in which no value was named keeps GX's reason on every value.
    ``named`` says per row of the file whether a value of it has a problem already; ``kept`` maps
    GX's positions (of the rows it validated) to rows of the file."""
    import numpy as np

    if not outcome.bad_rows:
        return values
    positions = np.fromiter(outcome.bad_rows, dtype=np.int64)
    rows = kept[positions]
    unexplained = {int(r): outcome.row_reasons[int(p)] for r, p in zip(rows, positions) if not named[r]}
    if unexplained:
        log.warning("%s: GX rejected %d rows in which no value was named, e.g. %s", batch, len(unexplained),
                    next(iter(unexplained.values())))
        hit = values["row"].isin(list(unexplained))
        values.loc[hit, "reason"] = values.loc[hit, "row"].map(unexplained)
    return values


def rejected_share(use_case: UseCase, start: datetime, end: datetime) -> float | None:
    """Share of the window's measurements that ingest rejected (kept in quarantine), counted in tag
    values: a rejected-value record counts once; a wide rejected row (files written before values
    were judged one by one) once per tag in it."""
    import pandas as pd

    from plantops.storage import read_bronze

    lo, hi = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
    rejected = 0
    for path in (get_settings().quarantine_root / use_case.id / "rows").glob("*.parquet"):
        frame = pd.read_parquet(path)
        ts = pd.to_datetime(frame["ts"], utc=True)
        inside = int(((ts >= lo) & (ts < hi)).sum())
        values_per_row = 1 if "tag" in frame.columns else len([c for c in frame.columns if c not in ("ts", "reason")])
        rejected += inside * values_per_row
    kept = read_bronze(get_settings().bronze_root, use_case.id, lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d"))
    total = len(kept) + rejected
    return None if total == 0 else rejected / total
