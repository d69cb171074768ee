"""Ingest: historian window and landed files -> validation -> bronze or quarantine.

Accounting holds for every batch: rows_in == rows_written + rows_rejected. Rejected rows are not
dropped silently: they go to quarantine as a parquet file with a reason per row.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from plantops.config import UseCase
from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

LONG_COLUMNS = ["asset", "tag", "ts", "value", "quality", "source", "batch"]


class HistorianUnavailable(RuntimeError):
    """The historian could not be read; nothing was written."""


def _split(frame: pd.DataFrame, bad_rows: frozenset[int], row_reasons: dict[int, str]):
    import numpy as np

    mask = np.zeros(len(frame), dtype=bool)
    mask[list(bad_rows)] = True
    rejected = frame[mask].assign(reason=[row_reasons[i] for i in sorted(bad_rows)])
    return frame[~mask], rejected


def _quarantine_rows(use_case: UseCase, rejected: pd.DataFrame, name: str) -> str | None:
    if rejected.empty:
        return None
    from plantops.storage import atomic_write_parquet

    path = get_settings().quarantine_root / use_case.id / "rows" / f"{name}.parquet"
    atomic_write_parquet(rejected.reset_index(drop=True), path)
    return str(path)


def ingest_historian(use_case: UseCase, start: datetime, end: datetime, run_id: str) -> dict:
    """Pull [start, end) from the historian, validate, write bronze per day (rerun-safe)."""
    from plantops.sources import historian
    from plantops.stages import validation
    from plantops.storage import write_bronze

    from sqlalchemy.exc import SQLAlchemyError

    import pandas as pd

    tags = [t.name for t in use_case.tags_from("historian")]
    try:
        historian.check_source()
        frames, unknown = [], {}
        for asset in use_case.assets:  # a fleet's assets share the template's tags
            part = historian.read_window(asset, tags, start, end)
            absent = sorted(set(tags) - set(part["tag"].unique()))
            missing = sorted(set(absent) - historian.known_tags(asset, absent)) if absent else []
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
        return {**counts, "days": {}, "quarantined": None, "reason": "no rows in window"}
    outcome = validation.validate_historian(use_case, frame)
    batch = f"historian:{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"
    if outcome.structural or (not outcome.success and use_case.landing and use_case.landing.bad_rows == "quarantine"):
        path = _quarantine_rows(use_case, frame.assign(reason=outcome.reason()), batch.replace(":", "_"))
        raise ValueError(f"historian batch {batch} failed validation and was quarantined at {path}: {outcome.reason()}")
    good, rejected = _split(frame, outcome.bad_rows, outcome.row_reasons)
    quarantined = _quarantine_rows(use_case, rejected, batch.replace(":", "_"))
    bronze = good.assign(source="historian", batch=batch)[LONG_COLUMNS]
    days = write_bronze(get_settings().bronze_root, use_case.id, bronze, "historian")
    counts.update(rows_written=sum(days.values()), rows_rejected=len(rejected))
    assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
    log.info("historian %s: %s (validation: %s)", batch, counts, outcome.reason())
    return {**counts, "days": days, "quarantined": quarantined, "reason": outcome.reason()}


class FileProblem(ValueError):
    """The file as a whole cannot be trusted; it goes to quarantine with this reason."""


def prepare_landed(use_case: UseCase, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise a landed file before validation: (rows to validate, rows rejected with a reason).

    - timestamps to UTC; naive ones only when the use case names their zone (else FileProblem);
    - historian digital states in value columns ("Bad", "I/O Timeout", "Scan Timeout", ...) become
      rejected rows naming the state, the rest of the column is numeric;
    - exact duplicate rows are rejected as duplicates (the first copy is kept).
    """
    import pandas as pd

    frame = frame.reset_index(drop=True)
    if "ts" in frame.columns:
        ts = frame["ts"]
        if not pd.api.types.is_datetime64_any_dtype(ts):
            try:
                ts = pd.to_datetime(ts, format="ISO8601")
            except (ValueError, TypeError) as exc:
                raise FileProblem(f"column ts is not a timestamp: {exc}") from exc
        if getattr(ts.dt, "tz", None) is None:
            zone = use_case.landing.naive_timezone if use_case.landing else None
            if zone is None:
                raise FileProblem("timestamps have no time zone; set landing.naive_timezone in the use case "
                                  "to accept them")
            ts = ts.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        frame["ts"] = ts.dt.tz_convert("UTC")
    reasons = pd.Series("", index=frame.index)
    for tag in (t.name for t in use_case.tags_from("landing")):
        if tag in frame.columns and frame[tag].dtype == object:
            numeric = pd.to_numeric(frame[tag], errors="coerce")
            states = frame[tag].notna() & numeric.isna()
            if states.any() and numeric.notna().sum() == 0:
                example = frame.loc[states, tag].iloc[0]
                raise FileProblem(f"column {tag} is not numeric: {int(states.sum())} of {len(frame)} values are "
                                  f"text, e.g. {example!r}")
            reasons[states & (reasons == "")] = "digital state " + frame.loc[states, tag].astype(str).map(repr) + f" in {tag}"
            frame[tag] = numeric
    duplicated = frame.duplicated(keep="first") & (reasons == "")
    reasons[duplicated] = "duplicate row"
    bad = reasons != ""
    return frame[~bad].reset_index(drop=True), frame[bad].assign(reason=reasons[bad]).reset_index(drop=True)


def ingest_landed(use_case: UseCase, run_id: str) -> dict:
    """Every completed landed file: ledger check, validation, bronze or quarantine, then archive."""
    import pandas as pd

    from plantops.sources import landing
    from plantops.stages import validation
    from plantops.storage import write_bronze

    if use_case.landing is None:
        return {"files": []}
    results = []
    for landed in landing.scan(use_case.landing.folder, use_case.landing.pattern):
        previous = landing.already_processed(use_case.id, landed)
        if previous:
            landing.skip_duplicate(use_case.id, landed, previous)
            results.append({"file": landed.name, "status": "duplicate", "ledger_id": previous["id"]})
            continue
        counts = {"rows_in": 0, "rows_written": 0, "rows_rejected": 0}
        try:
            raw = pd.read_parquet(landed.path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is quarantined, not fatal
            landing.quarantine(use_case.id, landed, f"unreadable parquet: {exc}", counts, run_id)
            results.append({"file": landed.name, "status": "quarantined", "reason": "unreadable"})
            continue
        counts["rows_in"] = len(raw)
        try:
            frame, pre_rejected = prepare_landed(use_case, raw)
        except FileProblem as exc:
            reason = str(exc)
            outcome = None
        else:
            outcome = validation.validate_landed(use_case, frame, max_rows=use_case.landing.max_rows)
            parts = [] if outcome.success else [outcome.reason()]
            parts += [f"{n} x {why}" for why, n in pre_rejected["reason"].value_counts().sort_index().items()]
            reason = "; ".join(parts) or "ok"
        whole_file = outcome is None or outcome.structural or (
            use_case.landing.bad_rows == "quarantine" and (not outcome.success or len(pre_rejected)))
        if whole_file:
            counts["rows_rejected"] = len(raw)
            landing.quarantine(use_case.id, landed, reason, counts, run_id)
            results.append({"file": landed.name, "status": "quarantined", "reason": reason, **counts})
            continue
        good, rejected = _split(frame, outcome.bad_rows, outcome.row_reasons)
        rejected = pd.concat([pre_rejected, rejected], ignore_index=True) if len(pre_rejected) else rejected
        quarantined_rows = _quarantine_rows(use_case, rejected, landed.path.stem)
        long = good.melt(id_vars="ts", var_name="tag", value_name="value").assign(
            asset=use_case.assets[0], quality="good", source="landing", batch=landed.name
        )[LONG_COLUMNS]
        days = write_bronze(get_settings().bronze_root, use_case.id, long, f"landing-{landed.path.stem}")
        counts.update(rows_written=len(good), rows_rejected=len(rejected))
        assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"]
        landing.archive(use_case.id, landed, counts, run_id, reason)
        results.append({"file": landed.name, "status": "ingested", "days": days, "rejected_rows_at": quarantined_rows,
                        **counts})
    return {"files": results}


def rejected_share(use_case: UseCase, start: datetime, end: datetime) -> float | None:
    """Share of the window's measurements that the GX gates rejected (rows kept in quarantine),
    counted in tag values: a rejected wide row of a landed file counts once per tag in it."""
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
