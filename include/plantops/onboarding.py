"""Draft a use case from a sample export: ``python -m plantops.cli init-use-case <id> --from <file>``.

A plant user has an export (a PI or SCADA dump: parquet, CSV, JSON Lines), not a YAML file. This
module reads the sample and writes a use case that loads as it is: one tag per numeric column
(its header made a tag name, the header kept as the description), physical ranges from the
observed span with a margin (a constant tag gets a tolerance around its value), a landing
section with the file's format, layout, delimiter, encoding, decimal mark and timestamp column
and format. What the sample cannot tell (units, the real physical limits, the zone of naive
timestamps, the model kind, schedules, approvers, who is mailed) is marked ``# DECIDE:`` in the
file, each with the drafted default, so the draft runs before anyone has decided.

Digital states (``Bad``, ``Scan Timeout`` in a numeric column) are counted, not read as numbers;
a column that holds only texts is no tag and is listed as skipped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plantops.config import ConfigError, Site, UseCase, tag_name

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
DELIMITERS = ",;\t|"
LONG_COLUMNS = ("asset", "tag", "value")
TS_NAMES = ("ts", "time", "timestamp", "date_time", "datetime", "date", "zeit", "zeitstempel")
# strptime formats tried when the timestamps are not ISO 8601 (PI, SCADA and spreadsheet exports).
TS_FORMATS = (
    "%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%Y/%m/%d %H:%M:%S",
    "%Y%m%d %H:%M:%S", "%Y%m%d%H%M%S",
)
EMPTY = frozenset({"", "nan", "null", "none", "na", "n/a"})
MARGIN = 0.1  # of the observed span, on each side
AWARE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")
DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
DECIMAL_POINT = re.compile(r"^[+-]?\d+\.\d+$")


class SampleError(ValueError):
    """The sample cannot be read or has nothing to draft from; the text says what was expected."""


@dataclass
class TagDraft:
    header: str
    name: str
    lo: float
    hi: float
    observed: tuple[float, float]
    values: int
    states: Counter = field(default_factory=Counter)

    @property
    def constant(self) -> bool:
        return self.observed[0] == self.observed[1]


@dataclass
class Sample:
    """What the sample says about itself."""

    path: Path
    format: str
    layout: str = "wide"
    delimiter: str = ","
    encoding: str = "utf-8"
    encoding_note: str = ""
    decimal: str = "."
    ts_column: str = "ts"
    ts_format: str | None = None
    ts_note: str = ""
    naive: bool = False
    rows: int = 0
    step_seconds: int | None = None
    assets: tuple[str, ...] = ()
    tags: list[TagDraft] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def states(self) -> Counter:
        total: Counter = Counter()
        for tag in self.tags:
            total.update(tag.states)
        return total


# -- reading --------------------------------------------------------------------------------------

def _decode(raw: bytes) -> tuple[str, str, str]:
    """The text, its encoding and a note: UTF-8 (with or without a byte-order mark), else Latin-1."""
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw.decode("utf-8-sig"), "utf-8-sig", "the file starts with a UTF-8 byte-order mark (Excel)"
    try:
        return raw.decode("utf-8"), "utf-8", ""
    except UnicodeDecodeError as exc:
        # Latin-1 decodes any byte: right for most Western plant exports, wrong for others.
        return raw.decode("latin-1"), "latin-1", (f"not UTF-8 (byte {raw[exc.start]:#x} at offset {exc.start}); "
                                                  "read as latin-1: check the special characters of the headers")


def _delimiter(text: str) -> str:
    """csv.Sniffer's guess among , ; tab |, kept only if the header and the first rows split into
    the same number of fields (a ';' file with decimal commas can look ',' separated to the sniffer)."""
    head = "\n".join(text.splitlines()[:50])

    def consistent(delim: str) -> bool:
        widths = {len(row) for row in csv.reader(io.StringIO(head), delimiter=delim) if row}
        return len(widths) == 1 and widths.pop() > 1

    try:
        guess = csv.Sniffer().sniff(head, delimiters=DELIMITERS).delimiter
    except csv.Error:
        guess = None
    if guess and consistent(guess):
        return guess
    for delim in ";\t|,":
        if consistent(delim):
            return delim
    raise SampleError("cannot tell the CSV delimiter: no one of ',', ';', tab, '|' splits the header and the "
                      "first rows into the same number of fields (more than one)")


def _read(path: Path, sample: Sample) -> pd.DataFrame:
    """The sample as a frame: text cells for CSV (so digital states and decimal commas stay
    visible), the stored types for parquet and JSON Lines."""
    import pandas as pd

    if sample.format == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable sample is the user's to fix
            raise SampleError(f"{path}: not a readable parquet file: {exc}") from exc
    text, sample.encoding, sample.encoding_note = _decode(path.read_bytes())
    if sample.format == "jsonl":
        try:
            return pd.read_json(io.StringIO(text), lines=True, dtype=False, convert_dates=False)
        except ValueError as exc:
            raise SampleError(f"{path}: expected JSON Lines (one JSON object per line): {exc}") from exc
    sample.delimiter = _delimiter(text)
    frame = pd.read_csv(io.StringIO(text), sep=sample.delimiter, dtype=str, keep_default_na=False)
    cells = [str(v).strip() for c in frame.columns for v in frame[c].head(200)]
    comma = sum(bool(DECIMAL_COMMA.match(v)) for v in cells)
    point = sum(bool(DECIMAL_POINT.match(v)) for v in cells)
    if sample.delimiter != "," and comma > point:
        sample.decimal = ","
    return frame


# -- columns --------------------------------------------------------------------------------------

def _numbers(column: pd.Series, decimal: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(numbers, states, empty): each cell as a float (NaN if not a number), whether it is a text
    that is no number (a digital state), whether it is empty."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        column = column.astype(object).astype(str)
    if pd.api.types.is_numeric_dtype(column):
        numbers = column.astype(float)
        return numbers, pd.Series(False, index=column.index), numbers.isna()
    text = column.astype(object).where(column.notna(), "").astype(str).str.strip()
    cleaned = text.str.replace(",", ".", regex=False) if decimal == "," else text
    numbers = pd.to_numeric(cleaned, errors="coerce").astype(float)
    empty = text.str.lower().isin(EMPTY)
    return numbers, numbers.isna() & ~empty, empty


def _timestamps(values: pd.Series, sample: Sample) -> pd.Series | None:
    """Parse the timestamp column, noting its format and whether it carries a zone; None if it is none."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        sample.naive = getattr(values.dt, "tz", None) is None
        return values
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    text = text[~text.str.lower().isin(EMPTY)]
    if text.empty or text.str.fullmatch(r"[+-]?\d+([.,]\d+)?").all():
        return None  # numbers are not timestamps (epoch seconds are too ambiguous to guess)
    try:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True)
        sample.ts_format = None
        sample.naive = not text.map(lambda s: bool(AWARE.search(s))).all()
        return parsed
    except (ValueError, TypeError):
        pass
    fits = []
    for fmt in TS_FORMATS:
        try:
            parsed = pd.to_datetime(text, format=fmt)
        except (ValueError, TypeError):
            continue
        fits.append((fmt, parsed))
    if not fits:
        return None
    sample.ts_format, parsed = fits[0]
    sample.naive = True
    others = [f for f, _ in fits[1:] if ("%d" in f and "%m" in f)]
    if others and "%d" in sample.ts_format and "%m" in sample.ts_format:
        sample.ts_note = (f"the timestamps fit {sample.ts_format!r} and also {others[0]!r} "
                          "(day and month both <= 12 in the sample): check which one the export writes")
    return parsed


def _ts_column(frame: pd.DataFrame, sample: Sample, exclude: tuple[str, ...] = ()) -> tuple[str, Any]:
    """The timestamp column: a ts-like name first, else the first column that parses as time."""
    by_name = [c for c in frame.columns if c not in exclude and (
        str(c).strip().lower() in TS_NAMES or str(c).strip().lower().startswith(("date_time", "timestamp")))]
    for column in by_name + [c for c in frame.columns if c not in by_name and c not in exclude]:
        parsed = _timestamps(frame[column], sample)
        if parsed is not None:
            return str(column), parsed
    raise SampleError(f"{sample.path}: no timestamp column: expected a column named one of {list(TS_NAMES)} "
                      "or one whose values parse as date and time")


def _range(numbers: pd.Series) -> tuple[float, float, float, float] | None:
    """(min, max) with a margin around the finite values, and the observed (min, max)."""
    import numpy as np

    finite = numbers[np.isfinite(numbers)]
    if finite.empty:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        tolerance = abs(lo) * 0.05 or 1.0
        return _outward(lo - tolerance, lo, down=True), _outward(hi + tolerance, hi, down=False), lo, hi
    margin = (hi - lo) * MARGIN
    return _outward(lo - margin, lo, down=True), _outward(hi + margin, hi, down=False), lo, hi


def _outward(value: float, observed: float, down: bool) -> float:
    """``value`` with few digits, still on the far side of ``observed``."""
    for digits in (3, 4, 6, 9, 12):
        short = float(f"{value:.{digits}g}")
        if (short < observed) if down else (short > observed):
            return short
    return value


def _tag(header: str, numbers: pd.Series, states: pd.Series, raw: pd.Series) -> TagDraft | str:
    """A tag drafted from one column, or why the column is no tag."""
    bounds = _range(numbers)
    if bounds is None:
        if states.any():
            examples = sorted(set(raw[states].astype(str).str.strip()))[:3]
            return f"text only ({int(states.sum())} cells, e.g. {examples}): digital states or a status column"
        return "no value in the sample"
    lo, hi, seen_lo, seen_hi = bounds
    counted = Counter(raw[states].astype(str).str.strip())
    return TagDraft(header=header, name="", lo=lo, hi=hi, observed=(seen_lo, seen_hi),
                    values=int(numbers.notna().sum()), states=counted)


def _name_tags(sample: Sample) -> None:
    """Tag names from the headers, made unique (a '_2' suffix) where two headers give the same name."""
    used: set[str] = set()
    for tag in sample.tags:
        base = tag_name(tag.header)
        name, n = base, 2
        while name.lower() in used:
            name = f"{base[:60]}_{n}"
            n += 1
        used.add(name.lower())
        tag.name = name


def _step(ts: pd.Series) -> int | None:
    import pandas as pd

    stamps = pd.Series(pd.to_datetime(ts, utc=True)).dropna().sort_values().drop_duplicates()
    if len(stamps) < 2:
        return None
    return int(stamps.diff().dropna().median().total_seconds()) or None


def inspect_sample(path: Path | str) -> Sample:
    """Read a sample export and describe it: format, layout, CSV dialect, timestamps, tags."""
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"{path}: no such file")
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SampleError(f"{path}: unknown file type {path.suffix!r}; expected one of {sorted(SUFFIXES)}")
    sample = Sample(path=path, format=fmt)
    frame = _read(path, sample)
    if frame.empty:
        raise SampleError(f"{path}: no rows")
    sample.rows = len(frame)
    lower = {str(c).strip().lower(): c for c in frame.columns}
    if all(name in lower for name in LONG_COLUMNS):
        sample.layout = "long"
        _inspect_long(frame, sample, lower)
    else:
        _inspect_wide(frame, sample)
    if not sample.tags:
        raise SampleError(f"{path}: no numeric column to make a tag of (skipped: "
                          + "; ".join(f"{h}: {why}" for h, why in sample.skipped) + ")")
    _name_tags(sample)
    return sample


def _inspect_wide(frame: pd.DataFrame, sample: Sample) -> None:
    sample.ts_column, ts = _ts_column(frame, sample)
    sample.step_seconds = _step(ts)
    for column in frame.columns:
        if str(column) == sample.ts_column:
            continue
        numbers, states, _ = _numbers(frame[column], sample.decimal)
        drafted = _tag(str(column), numbers, states, frame[column])
        if isinstance(drafted, str):
            sample.skipped.append((str(column), drafted))
        else:
            sample.tags.append(drafted)


def _inspect_long(frame: pd.DataFrame, sample: Sample, lower: dict[str, Any]) -> None:
    asset, tag, value = (lower[n] for n in LONG_COLUMNS)
    sample.ts_column, ts = _ts_column(frame, sample, exclude=(asset, tag, value))
    sample.assets = tuple(sorted({str(a).strip() for a in frame[asset].dropna()}))
    numbers, states, _ = _numbers(frame[value], sample.decimal)
    for name, rows in frame.groupby(frame[tag].astype(str).str.strip(), sort=True).groups.items():
        drafted = _tag(str(name), numbers.loc[rows], states.loc[rows], frame[value].loc[rows])
        if isinstance(drafted, str):
            sample.skipped.append((str(name), drafted))
        else:
            sample.tags.append(drafted)
    first = frame.groupby(frame[asset].astype(str).str.strip(), sort=True)
    steps = [s for _, rows in first for s in [_step(ts.reindex(rows.index).dropna())] if s]
    sample.step_seconds = min(steps) if steps else None


# -- the YAML -------------------------------------------------------------------------------------

def _q(value: Any) -> str:
    """A YAML scalar: JSON's quoting is valid YAML."""
    if value is None:
        return "null"
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"  # YAML 1.1 reads 1e-05 as a string, 1.0e-05 as a float
        return text
    return json.dumps(value, ensure_ascii=False)


def _bucket(step: int | None) -> str:
    if not step:
        return "3min"
    if step % 86400 == 0:
        return f"{step // 86400}d"
    if step % 3600 == 0:
        return f"{step // 3600}h"
    return f"{step // 60}min" if step % 60 == 0 else f"{step}s"


def _asset(sample: Sample, asset: str | None, use_case_id: str) -> tuple[str, list[str]]:
    notes = []
    if asset:
        return asset, notes
    if sample.assets:
        chosen = sample.assets[0]
        if not re.match(r"^[A-Za-z0-9_.\-]{1,64}$", chosen):
            chosen = tag_name(chosen)
        if len(sample.assets) > 1:
            notes.append(f"# DECIDE: the sample holds {len(sample.assets)} assets {list(sample.assets)[:5]}; landed "
                         f"files carry one asset per use case: this draft takes {chosen!r}")
        return chosen, notes
    return use_case_id, notes


def render(use_case_id: str, sample: Sample, asset: str | None = None, timezone: str | None = None,
           site: Site | None = None) -> str:
    """The use case's YAML text, with a ``# DECIDE:`` comment at each choice left to people. At a
    ``site`` the draft names it and leaves out what it inherits: the zone of naive timestamps (unless
    ``timezone``), the approvers and the notifications."""
    asset_name, asset_notes = _asset(sample, asset, use_case_id)
    folder = use_case_id
    pattern = f"*{sample.path.suffix.lower()}"
    states = sample.states
    lines = [
        f"# Drafted by `python -m plantops.cli init-use-case {use_case_id} --from {sample.path.name}"
        + (f" --site {site.id}`" if site else "`"),
        f"# from {sample.rows} rows of {sample.path.name} ({sample.format}, {sample.layout}): {len(sample.tags)} tags.",
        "# Every '# DECIDE:' below is a choice the sample cannot make; the drafted value runs until then.",
        f"id: {use_case_id}",
        *([f"site: {site.id}  # {site.name}: its historian connection, time zone, approvers and notifications "
           "unless set here (docs/sites.md)"] if site else []),
        f"plant: {_q(sample.path.stem)}  # DECIDE: the plant or unit's name as people say it",
        f"description: {_q(f'Landed exports like {sample.path.name}')}",
        "owner: plantops",
        "# DECIDE: schedules (cron, UTC): the daily ingest (files also start it when they land) and the nightly training",
        "schedules:",
        '  ingest: "@daily"',
        '  train: "0 2 * * *"',
        "landing:",
        f"  folder: {folder}  # files land in $PLANTOPS_HOME/landing/{folder}/",
        f"  asset: {_q(asset_name)}",
        *(f"  {n}" for n in asset_notes),
        "  bad_rows: drop  # a bad value rejects itself only; 'quarantine' would quarantine the whole file",
    ]
    if sample.naive:
        if timezone:
            lines.append(f"  naive_timezone: {_q(timezone)}  # the sample's timestamps have no zone")
        elif site:
            lines.append(f"  # the sample's timestamps have no zone: read in the site's, {site.timezone} "
                         "(set naive_timezone here if the exports keep another clock)")
        else:
            lines += ["  # DECIDE: the zone of the naive timestamps, e.g. Europe/Berlin (UTC until then: a site-local",
                      "  # clock read as UTC puts every value an hour or two off, and DST days get a gap and a double hour)",
                      "  naive_timezone: UTC"]
    lines += [
        "  max_rows: 1000000",
        "  sources:",
        f"    - name: {tag_name(sample.format + '_' + sample.layout).lower()}",
        f"      pattern: {_q(pattern)}",
        f"      format: {sample.format}",
        f"      layout: {sample.layout}",
        f"      delimiter: {_q(sample.delimiter)}",
    ]
    if sample.encoding_note:
        lines.append(f"      # {sample.encoding_note}")
    lines += [
        f"      encoding: {sample.encoding}",
        f"      decimal: {_q(sample.decimal)}",
        f"      ts_column: {_q(sample.ts_column)}",
    ]
    if sample.ts_note:
        lines.append(f"      # DECIDE: {sample.ts_note}")
    lines += [
        f"      ts_format: {_q(sample.ts_format)}  # strptime format; null = ISO 8601",
        "      naive_timezone: null  # null: landing.naive_timezone",
        *(["      # columns that are no tag (listed at the end): dropped when read",
           f"      ignore_columns: [{', '.join(_q(h) for h, _ in sample.skipped)}]"]
          if sample.skipped and sample.layout == "wide" else []),
        "# DECIDE: the feature bucket (the sample's step is "
        + (f"{sample.step_seconds} s)" if sample.step_seconds else "unknown)") + " and the rolling window in buckets",
        "features:",
        f"  bucket: {_bucket(sample.step_seconds)}",
        "  rolling_buckets: 10",
        "  lookback_days: 1",
        "# DECIDE: the model kind: mspm_pca (PCA T²/Q over every tag), mspm_early (earlier detection of slow",
        "# faults) or normal_behaviour (one target tag predicted from drivers: give params target and drivers)",
        "model:",
        "  kind: mspm_pca",
        "  false_alarm_rate: 0.01",
        "  train_days: 14",
        "  min_train_rows: 200",
        "monitoring:",
        "  policy:",
        "    # DECIDE: what each monitor rule does: none | notify | retrain | approval (docs/monitoring-policy.md).",
        "    # An approval, or a retrain past guardrails.max_retrains, asks one of the approvers below; with every",
        "    # rule none or notify, approvers may be left out.",
        "    rules: {upset: notify, persistent_upset: approval, false_alarms: retrain, performance: retrain,",
        "            unexplained_drift: retrain, mild_drift: none, quality: approval, plant_change: approval}",
        *(_people(site)),
        "execution: local",
        "# DECIDE: units (unknown from the sample: \"\") and the physical limits: min/max are the sample's span"
        f" +-{MARGIN:.0%},",
        "# a constant tag's +-5% of its value (+-1 at zero); a value outside its range is rejected at ingest.",
        "tags:",
    ]
    for tag in sample.tags:
        notes = []
        if tag.constant:
            notes.append(f"constant {tag.observed[0]:g} in the sample")
        if tag.states:
            listed = ", ".join(f"{n} x {s!r}" for s, n in sorted(tag.states.items(), key=lambda kv: (-kv[1], kv[0])))
            notes.append(f"digital states: {listed}")
        comment = f"  # {'; '.join(notes)}" if notes else ""
        lines.append(f"  - {{name: {tag.name}, description: {_q(tag.header)}, unit: \"\", min: {_q(tag.lo)}, "
                     f"max: {_q(tag.hi)}, source: landing}}{comment}")
    if sample.skipped:
        lines.append("# Columns that are no tag:")
        lines += [f"#   {header}: {why}" for header, why in sample.skipped]
    return "\n".join(lines) + "\n"


def _people(site: Site | None) -> list[str]:
    if site is not None:
        return [f"# approvers and notifications: site {site.id}'s (approvers {[a.id for a in site.approvers]}); a block",
                "# set here replaces the approvers, or overrides the notifications per audience and event"]
    return [
        "# DECIDE: the process engineers who answer approvals (Airflow user ids)",
        "approvers:",
        '  - {id: eng1, name: "Process engineer"}',
        "# DECIDE: who is mailed: upsets and quarantined files go to the operators, approvals to the engineers,",
        "# promotions and failures to the MLOps team (an audience without addresses is not mailed)",
        "notifications:",
        "  recipients:",
        "    operators: []",
        "    engineers: []",
        "    mlops: []",
    ]


def _site(site_id: str) -> Site:
    """The site a draft goes into; ConfigError listing the sites when there is no such site."""
    from plantops.config import load_sites
    from plantops.settings import get_settings

    folder = get_settings().sites_dir
    sites = load_sites(folder)
    if site_id not in sites:
        raise ConfigError(f"--site {site_id!r}: unknown site; expected one of {sorted(sites)} (files in {folder})")
    site = sites[site_id]
    if isinstance(site, ConfigError):
        raise ConfigError(f"--site {site_id!r}: the site file does not load: {site}")
    return site


def validate(text: str, where: str) -> UseCase:
    """The drafted YAML as the loader parses it (ConfigError naming the field if the draft is wrong)."""
    import yaml

    from plantops.config import parse_use_case

    return parse_use_case(yaml.safe_load(text), where)


def init_use_case(use_case_id: str, sample_path: Path | str, out: Path | str | None = None,
                  asset: str | None = None, timezone: str | None = None, force: bool = False,
                  site: str | None = None) -> dict[str, Any]:
    """Draft ``<id>.yaml`` from the sample and write it (default: the use-cases folder); refuses to
    overwrite an existing file unless ``force``. With ``site`` the draft inherits from that site
    (include/sites/<site>.yaml). Returns what was detected."""
    from plantops.config import load_use_case
    from plantops.settings import get_settings
    from plantops.storage import atomic_write_bytes

    if not re.match(r"^[a-z][a-z0-9_]{0,40}$", use_case_id):
        raise ConfigError(f"use case id {use_case_id!r}: expected lowercase letters, digits and '_', "
                          "starting with a letter (at most 41 characters)")
    target = Path(out) if out else get_settings().use_cases_dir / f"{use_case_id}.yaml"
    if target.name != f"{use_case_id}.yaml":
        raise ConfigError(f"--out {target}: the file name must be {use_case_id}.yaml (the id is the file name)")
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; refusing to overwrite it (use --force)")
    if timezone:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"--timezone {timezone!r}: not a known time zone (expected e.g. Europe/Berlin)") from exc
    at = _site(site) if site is not None else None
    sample = inspect_sample(sample_path)
    text = render(use_case_id, sample, asset, timezone, at)
    validate(text, str(target))
    atomic_write_bytes(target, text.encode("utf-8"))
    use_case = load_use_case(target)
    decide = sum(line.count("DECIDE:") for line in text.splitlines())
    log.info("drafted %s from %s: %d tags, %d to decide", target, sample.path, len(use_case.tags), decide)
    return {
        "written": str(target), "use_case": use_case.id, "site": use_case.site, "tags": len(use_case.tags),
        "asset": use_case.assets[0],
        "format": sample.format, "layout": sample.layout, "delimiter": sample.delimiter,
        "encoding": sample.encoding, "decimal": sample.decimal, "ts_column": sample.ts_column,
        "ts_format": sample.ts_format, "naive_timestamps": sample.naive,
        "naive_timezone": use_case.landing.naive_timezone, "digital_states": dict(sample.states),
        "skipped": [{"column": h, "why": why} for h, why in sample.skipped], "to_decide": decide,
        "landing_folder": str(get_settings().landing_root / use_case.landing.folder),
    }
