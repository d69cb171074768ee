"""The typed functions that the DAG tasks call, one per task, so every task body stays a few lines.

Each function takes plain values (ids, ISO dates, run ids) and returns a JSON-able dict for XCom.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from plantops.config import get_use_case, parse_duration
from plantops.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _day(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        stamp = value
    else:
        stamp = datetime.fromisoformat(str(value))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.astimezone(timezone.utc)


# -- ingest ---------------------------------------------------------------------------------------

def ingest(use_case_id: str, start: str, end: str, run_id: str) -> dict[str, Any]:
    """Every landed file plus the historian window [start, end); returns counts and the days written.

    The historian window is widened to cover the days of the files this run ingested, so a day's
    bronze holds both sources whichever arrived last (a late analyzer file, a file that woke an
    event-driven run). Those days are read back from the ledger, so a retry of the run finds the
    same window although its files are archived by then. A use case without historian tags (a
    landing-only one) does not touch the historian.

    Files quarantined whole are mailed to the operators and recorded in the decision store (kind
    ``quarantine``); the DAG's ``report_quarantine`` task then fails the run (:func:`report_quarantine`).
    """
    from plantops.stages import corrections
    from plantops.stages.ingest import ingest_historian, ingest_landed

    use_case = get_use_case(use_case_id)
    if use_case.inspection is not None:
        return ingest_images(use_case, run_id)
    landed = ingest_landed(use_case, run_id)
    windows = []
    if use_case.tags_from("historian"):
        windows = historian_windows(_day(start), _day(end), landed_days(use_case_id, run_id))
    batches = [ingest_historian(use_case, lo, hi, run_id) for lo, hi in windows]
    days = {day for batch in batches for day in batch.get("days", {})}
    for item in landed["files"]:
        days.update(item.get("days", {}))
    # Days whose bronze values were replaced (`cli correct`, or a source's on_conflict: replace in
    # this run): this run's bronze event names them, so the features plan rebuilds them.
    corrected = corrections.claim_days(use_case_id, run_id)
    days.update(corrected)
    quarantined = [f for f in landed["files"] if f["status"] == "quarantined"]
    notified = _tell_quarantined(use_case, run_id, days) if quarantined else None
    return {
        "notified": notified,
        "use_case": use_case_id,
        "days": sorted(days),
        "historian": {
            **{key: sum(b[key] for b in batches) for key in ("rows_in", "rows_written", "rows_rejected")},
            "windows": [f"{lo.isoformat()}/{hi.isoformat()}" for lo, hi in windows],
            "reason": "; ".join(str(b["reason"]) for b in batches) if windows else "no historian tags",
        },
        "files": landed["files"],
        "corrected_days": corrected,
        "quarantined_files": len(quarantined),
    }


def _tell_quarantined(use_case: Any, run_id: str, days: Iterable[str]) -> Any:
    """Mail the operators the files the run quarantined whole and record it in the decision store."""
    from plantops.stages import decisions, notify

    listed = quarantined_in_run(use_case.id, run_id)  # the ledger's full reasons, across the run's tries
    notified = notify.send(use_case, "quarantine", f"{len(listed)} landed file(s) quarantined",
                           "\n".join(f"- {f['file']}: {f['reason']}" for f in listed)
                           + "\n\nNothing was lost: fix the file and release it (python -m plantops.cli "
                           f"release {use_case.id} <file>).", notify.ui_link(use_case.dag_id("ingest"), run_id))
    # The operator view: which files of which run wait in quarantine, and why.
    decisions.record(use_case.id, run_id, "quarantine", "files_quarantined",
                     "; ".join(f"{f['file']}: {f['reason']}" for f in listed)[:2000],
                     {"files": listed, "days_written": sorted(days)})
    return notified


def ingest_images(use_case: Any, run_id: str) -> dict[str, Any]:
    """An inspection use case's ingest: every completely landed inspection run (images judged one
    by one, the good ones to bronze) and every inspectors' labels file. A run or labels file
    quarantined whole is mailed and recorded as for any landed file; rejected images of a run are
    in its result and in quarantine with their reasons."""
    from plantops.stages.inspection_ingest import ingest_inspections, ingest_labels

    spec = use_case.inspection
    landed = ingest_inspections(use_case.id, spec.folder, run_id, spec.images)
    labels = ingest_labels(use_case.id, spec.folder, spec.line, run_id)
    runs = landed["runs"]
    days = sorted({r["day"] for r in runs if r["status"] == "ingested" and r.get("accepted") and r.get("day")})
    quarantined = [r for r in runs if r["status"] == "quarantined"] + [f for f in labels if f["status"] == "quarantined"]
    return {
        "notified": _tell_quarantined(use_case, run_id, days) if quarantined else None,
        "use_case": use_case.id,
        "days": days,
        "runs": [{k: v for k, v in r.items() if k != "rejected_items"} for r in runs],
        "images": {key: sum(r.get(key, 0) for r in runs) for key in ("items", "accepted", "rejected")},
        "labels": labels,
        "incomplete": landed["incomplete"],
        "quarantined_files": len(quarantined),
    }


class FilesQuarantined(RuntimeError):
    """Landed files of the run were quarantined whole: the run must not end green."""


def quarantined_in_run(use_case_id: str, run_id: str) -> list[dict[str, str]]:
    """The files the run quarantined whole, with the ledger's reason, in the order they were processed."""
    from sqlalchemy import select

    from plantops.sources.landing import ledger, state_engine

    query = (select(ledger.c.name, ledger.c.reason).where(
        ledger.c.use_case == use_case_id, ledger.c.dag_run_id == run_id, ledger.c.status == "quarantined")
        .order_by(ledger.c.id))
    with state_engine().connect() as conn:
        return [{"file": name, "reason": reason or ""} for name, reason in conn.execute(query)]


def report_quarantine(use_case_id: str, run_id: str) -> list[dict[str, str]]:
    """Raise :class:`FilesQuarantined`, naming each file and its reason, when the run quarantined a
    whole file. Read from the landing ledger, so the answer holds however the ingest ran (in
    process, in a pod, over retries)."""
    files = quarantined_in_run(use_case_id, run_id)
    if files:
        raise FilesQuarantined(
            f"{use_case_id}: {len(files)} landed file(s) quarantined in run {run_id}: "
            + "; ".join(f"{f['file']}: {f['reason'].rstrip('.')}" for f in files)
            + f". Fix each file and release it (python -m plantops.cli release {use_case_id} <file>); "
            "the run's other files were ingested.")
    return files


def historian_windows(start: datetime, end: datetime, days: list[str]) -> list[tuple[datetime, datetime]]:
    """[start, end) plus whole days, merged into as few contiguous windows as possible."""
    spans = sorted([(start, end), *((_day(d), _day(d) + timedelta(days=1)) for d in days)])
    merged = [spans[0]]
    for lo, hi in spans[1:]:
        if lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def landed_days(use_case_id: str, run_id: str) -> list[str]:
    """The bronze days of the files this run ingested (across its tries)."""
    from sqlalchemy import select

    from plantops.sources.landing import batch_key, ledger, state_engine

    query = select(ledger.c.name).where(ledger.c.use_case == use_case_id, ledger.c.dag_run_id == run_id,
                                        ledger.c.status == "ingested")
    with state_engine().connect() as conn:
        stems = {batch_key(name) for (name,) in conn.execute(query)}
    root = get_settings().bronze_root / use_case_id
    return sorted({p.parent.name.removeprefix("date=") for stem in stems
                   for p in root.glob(f"date=*/landing-{stem}.parquet")})


# -- features -------------------------------------------------------------------------------------

def feature_window(days: list[str], built: Iterable[str] = (), lookback_days: int = 0) -> list[dict[str, str]]:
    """The day ranges ``[start, end)`` that rebuild the given changed days: one range per run of
    consecutive days, so days months apart never share a range (nor the days between them).

    A changed day is read as lookback by the next ``lookback_days`` days, so those of them already
    built (in ``built``) are rebuilt too and join the range; days not built yet are left to their
    own run. Nothing else is: a backfill of an old day rebuilds that day and its lookahead only.
    """
    if not days:
        raise ValueError("no days to build features for: the triggering ingest wrote nothing")
    changed = {_day(d).date() for d in days}
    have = {_day(d).date() for d in built}
    wanted = changed | ({d + timedelta(days=k) for d in changed for k in range(1, lookback_days + 1)} & have)
    ranges: list[dict[str, str]] = []
    for day in sorted(wanted):
        if ranges and ranges[-1]["end"] == day.isoformat():
            ranges[-1]["end"] = (day + timedelta(days=1)).isoformat()
        else:
            ranges.append({"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()})
    return ranges


def plan_features(use_case_id: str, days: list[str]) -> dict[str, Any]:
    """What ``<uc>__features`` builds for the changed ``days``: :func:`feature_window` against the
    feature days that exist. ``ranges`` is the job's ``--ranges`` argument; ``lookahead`` names the
    built days rebuilt because a changed day is in their lookback."""
    from plantops.features import format_ranges

    use_case = get_use_case(use_case_id)
    if use_case.inspection is not None:  # an image's features read no other day: no lookback
        changed = sorted({_day(d).date().isoformat() for d in days})
        if not changed:
            raise ValueError("no days to build features for: the triggering ingest wrote nothing")
        return {"ranges": format_ranges((d, (_day(d) + timedelta(days=1)).date().isoformat()) for d in changed),
                "days": changed, "lookahead": []}
    windows = feature_window(days, built_feature_days(use_case_id), use_case.features.lookback_days)
    changed = {_day(d).date().isoformat() for d in days}
    rebuilt = [d for w in windows for d in days_between(w["start"], w["end"])]
    plan = {"ranges": format_ranges((w["start"], w["end"]) for w in windows), "days": sorted(changed),
            "lookahead": [d for d in rebuilt if d not in changed]}
    log.info("%s: building features for %s (changed days %s, lookahead %s)", use_case_id, plan["ranges"],
             ", ".join(plan["days"]), ", ".join(plan["lookahead"]) or "none")
    return plan


# How a manual features run names the days to build (the DAG's params, `cli run --start --end`).
FEATURE_PARAMS = '{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"} (end exclusive)'


class NothingToBuild(ValueError):
    """A features run without days: no asset event, no params, and no bronze day without features."""


def days_between(start: str | None, end: str | None) -> list[str]:
    """The ISO days of [start, end): what a manual rebuild of a range asks for."""
    if not start or not end:
        raise ValueError(f"give both start and end: {FEATURE_PARAMS}; got start={start!r}, end={end!r}")
    try:
        first, after = _day(start).date(), _day(end).date()
    except ValueError:
        raise ValueError(f"expected days as {FEATURE_PARAMS}; got start={start!r}, end={end!r}") from None
    if after <= first:
        raise ValueError(f"the end ({end}) must be after the start ({start})")
    return [(first + timedelta(days=k)).isoformat() for k in range((after - first).days)]


def built_feature_days(use_case_id: str) -> list[str]:
    """The days that have a feature partition, oldest first (image features: ``images/day=*``)."""
    root = get_settings().features_root / use_case_id
    if (root / "images").is_dir():
        return sorted(p.name.removeprefix("day=") for p in (root / "images").glob("day=*") if p.is_dir())
    return sorted(p.name.removeprefix("date=") for p in root.glob("date=*") if p.is_dir())


def bronze_days(use_case_id: str) -> list[str]:
    """The days that have bronze, oldest first (inspection lines: ``inspections/day=*``)."""
    root = get_settings().bronze_root / use_case_id
    if (root / "inspections").is_dir():
        return sorted(p.name.removeprefix("day=") for p in (root / "inspections").glob("day=*")
                      if p.is_dir() and any(p.glob("*.parquet")))
    return sorted(p.name.removeprefix("date=") for p in root.glob("date=*") if p.is_dir() and any(p.glob("*.parquet")))


def unbuilt_days(use_case_id: str) -> list[str]:
    """The bronze days without features yet: what a features run without params or events builds.
    Raises :class:`NothingToBuild` naming the params when there are none (no bronze yet, or every
    bronze day built: a rebuild names its days)."""
    have = bronze_days(use_case_id)
    built = set(built_feature_days(use_case_id))
    todo = [d for d in have if d not in built]
    if todo:
        return todo
    if not have:
        raise NothingToBuild(f"{use_case_id} has no bronze yet: ingest first (python -m plantops.cli ingest "
                             f"{use_case_id} --day YYYY-MM-DD), or name the days to build: {FEATURE_PARAMS}")
    raise NothingToBuild(f"every bronze day of {use_case_id} ({have[0]}..{have[-1]}) has features: to rebuild "
                         f"days, name them: {FEATURE_PARAMS}")


def load_image_features(use_case_id: str, days: Iterable[str] | None = None) -> pd.DataFrame:
    """Image-feature rows of an inspection use case (of ``days``, or every day), with ``day``,
    sorted by capture time."""
    import pandas as pd

    root = get_settings().features_root / use_case_id / "images"
    if not root.is_dir():
        raise NoFeatures(f"no image features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    wanted = None if days is None else sorted(set(days))
    frame = pd.read_parquet(root, filters=[("day", "in", wanted)] if wanted else None)
    frame["day"] = frame["day"].astype(str)
    frame["captured_at"] = pd.to_datetime(frame["captured_at"], utc=True)
    return frame.sort_values(["captured_at", "cell_id"]).reset_index(drop=True)


def check_image_features(use_case: Any, days: list[str]) -> dict[str, Any]:
    """The GX gate of an inspection use case's feature days: each day one row per image its
    bronze holds, statistics in range, model inputs of the configured size; fails naming the day."""
    import pandas as pd

    from plantops.stages.inspection_validation import validate_image_features

    bronze = get_settings().bronze_root / use_case.id / "inspections"
    rows = 0
    for day in days:
        expected = sum(len(pd.read_parquet(p, columns=["cell_id"])) for p in sorted((bronze / f"day={day}").glob("*.parquet")))
        if not expected:  # no image accepted that day: nothing built, nothing to check
            continue
        frame = load_image_features(use_case.id, [day])
        outcome = validate_image_features(use_case.id, frame, use_case.inspection.input_size, expected)
        if not outcome.success:
            raise ValueError(f"image feature gate failed for {use_case.id} {day}: {outcome.reason()}")
        rows += len(frame)
    return {"asset": None, "rows": rows, "days": sorted(days), "missing": {}}


class NoFeatures(FileNotFoundError):
    """No feature day exists yet (a fresh installation before its first ingest)."""


def load_features(use_case_id: str, start: str | None = None, end: str | None = None,
                  asset: str | None = None) -> pd.DataFrame:
    """Feature rows of [start, end) (ISO days), of one asset or all, sorted by asset and time."""
    import pandas as pd

    root = get_settings().features_root / use_case_id
    if not root.exists():
        raise NoFeatures(f"no features for {use_case_id} yet at {root}: run {use_case_id}__features first")
    filters = [("asset", "==", asset)] if asset else []
    if start:
        filters.append(("date", ">=", start))
    if end:
        filters.append(("date", "<", end))
    frame = pd.read_parquet(root, filters=filters or None)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["date"] = frame["date"].astype(str)
    return frame.sort_values(["asset", "ts"]).reset_index(drop=True)


def latest_feature_day(use_case_id: str) -> str:
    days = built_feature_days(use_case_id)
    if not days:
        raise NoFeatures(f"no feature partitions for {use_case_id}: build them first ({use_case_id}__features, "
                         f"params {FEATURE_PARAMS}, or python -m plantops.cli run {use_case_id} features)")
    return days[-1]


def check_features(use_case_id: str, start: str, end: str, asset: str | None = None) -> dict[str, Any]:
    """The GX gate over one range [start, end): :func:`check_feature_ranges` of it."""
    return {**check_feature_ranges(use_case_id, f"{start}:{end}", asset), "start": start, "end": end}


def check_feature_ranges(use_case_id: str, ranges: str, asset: str | None = None) -> dict[str, Any]:
    """The GX gate on the feature rows of the day ranges (``START:END[,START:END...]``, as the
    feature job takes them) of one asset, or all: fails the task, naming what broke, when the gate
    fails. An asset without features in the ranges is reported, not failed (a turbine whose SCADA
    link was down that day)."""
    import pandas as pd

    from plantops.features import format_ranges, parse_ranges
    from plantops.stages.validation import validate_features

    use_case = get_use_case(use_case_id)
    spans = [(start.isoformat(), end.isoformat()) for start, end in parse_ranges(ranges)]
    if use_case.inspection is not None:
        return {**check_image_features(use_case, [d for a, b in spans for d in days_between(a, b)]),
                "ranges": format_ranges(spans)}
    ranges = format_ranges(spans)
    frames = [load_features(use_case_id, start, end, asset) for start, end in spans]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if asset and frame.empty:
        log.warning("%s: no feature rows for asset %s in %s", use_case_id, asset, ranges)
        return {"asset": asset, "rows": 0, "ranges": ranges, "days": [], "missing": {}}
    outcome = validate_features(use_case, frame)
    if not outcome.success:
        raise ValueError(f"feature gate failed for {use_case_id}{'/' + asset if asset else ''} "
                         f"{ranges}: {outcome.reason()}")
    tags = [t for t in use_case.tag_names if t in frame.columns]
    missing = {t: int(n) for t, n in frame[tags].isna().sum().items() if n}
    if missing:
        log.warning("%s%s %s: rows where a tag was silent for longer than features.max_gap (%s), so missing: %s",
                    use_case_id, "/" + asset if asset else "", ranges, use_case.features.max_gap, missing)
    return {"asset": asset, "rows": len(frame), "ranges": ranges,
            "days": sorted(frame["date"].unique().tolist()), "missing": missing}


# -- train ----------------------------------------------------------------------------------------

def decision_asset(use_case: Any, asset: str | None) -> str | None:
    """The asset a decision is recorded under: the asset in a fleet, none for a one-asset use case."""
    return asset if use_case.is_fleet else None


def training_assets(use_case_id: str, asset: str | None = None) -> list[str]:
    """What one train run trains: the named asset, or every registered model of the use case
    (each asset of a per-asset fleet; '' for the one model of a single asset or a pooled fleet)."""
    use_case = get_use_case(use_case_id)
    keys = [a or "" for a in use_case.model_assets()]
    if asset:
        if asset not in use_case.assets:
            raise ValueError(f"{use_case_id}: {asset!r} is not one of its assets {list(use_case.assets)}")
        return [asset] if asset in keys else [""]
    return keys


def train(use_case_id: str, run_id: str, reference_start: str | None = None, reason: str = "scheduled",
          git_commit: str = "unknown", provenance: dict[str, str] | None = None,
          asset: str | None = None) -> dict[str, Any]:
    """Train the model of ``asset`` (a per-asset fleet) or the use case's one model."""
    from plantops.sources import historian
    from plantops.stages import decisions, registry
    from plantops.stages.training import train_and_register

    use_case = get_use_case(use_case_id)
    asset = asset or None
    inherited = None
    if not reference_start:
        # A new normal an engineer declared stays in force until another is declared: later
        # trainings (nightly, stale model) start from it too, and are judged on the plant after it.
        reference_start = inherited = registry.champion_reference_start(use_case.model_name(asset))
    run_tags = {"airflow_run_id": run_id, "git_commit": git_commit, "trigger_reason": reason, **(provenance or {})}
    if use_case.inspection is not None:
        from plantops.sources import inspections
        from plantops.stages.inspection_training import NotEnoughLabels, train_inspection

        try:
            result = train_inspection(use_case, load_image_features(use_case_id),
                                      inspections.read_labels(use_case.inspection.line),
                                      _day(reference_start) if reference_start else None, run_tags)
        except NotEnoughLabels as exc:  # labels come late: a fresh line has images but no labels yet
            raise NoFeatures(str(exc)) from exc
    else:
        features = load_features(use_case_id, asset=asset)
        if features.empty:
            raise NoFeatures(f"no features for {use_case_id}/{asset} yet: run {use_case_id}__features first")
        labels = historian.read_labels_of(use_case.assets if asset is None else (asset,))
        suspects = suspect_windows(use_case_id, asset)
        if suspects:
            import pandas as pd

            labels = pd.concat([labels, pd.DataFrame(suspects)], ignore_index=True)
        end = features["ts"].max() + timedelta(seconds=use_case.features.bucket_seconds)
        result = train_and_register(use_case, features, labels, end=end,
                                    reference_start=_day(reference_start) if reference_start else None,
                                    run_tags=run_tags, asset=asset)
    decisions.record(use_case_id, run_id, "train", "promoted" if result["promoted"] else "kept_champion",
                     result["reason"], {"result": result, "reference_start": reference_start, "trigger": reason,
                      "reference_inherited": inherited is not None, "asset": asset, **(provenance or {})},
                     asset=decision_asset(use_case, asset))
    if result["promoted"]:
        from plantops.stages import notify

        metrics = ", ".join(f"{k} {v:.4g}" for k, v in result["champion_metrics"].items()
                            if k in ("far", "detection_rate", "detection_delay", "rmse", "accuracy", "defect_recall"))
        notify.send(use_case, "promotion", f"{result['registered_model']} v{result['version']} is the new champion",
                    f"Trigger: {reason}.\n\nWhy: {result['reason']}.\n\nHeld-out metrics: {metrics or 'none'}."
                    + (f"\n\nNew reference from {reference_start}." if reference_start else ""),
                    notify.ui_link(use_case.dag_id("train"), run_id))
    return result


def suspect_windows(use_case_id: str, asset: str | None = None) -> list[dict[str, Any]]:
    """Label rows (``upset``) for the monitor windows whose alarms stand unchallenged: judged an
    upset, or put to an engineer who refused to retrain (the model is right) or did not answer.
    Training keeps them out of its fit and its held-out normal rows; a normal label from people
    (false-alarm feedback, the lab) overrides them."""
    from plantops.stages import decisions
    from plantops.stages.training import UPSET

    use_case = get_use_case(use_case_id)
    window = parse_duration(use_case.monitoring.window)
    rows = decisions.latest(use_case_id, limit=1000, asset=decision_asset(use_case, asset))
    newest: dict[tuple[str, str], dict] = {}
    for r in rows:  # newest first: the last word on each window counts
        day, who = r["payload"].get("day"), r["payload"].get("asset") or (asset or use_case.assets[0])
        if day and r["kind"] in ("monitor", "approval"):
            newest.setdefault((who, day), r)
    return [{"asset": who, "start_ts": _day(day), "end_ts": _day(day) + window, "label": UPSET, "source": "monitor"}
            for (who, day), r in sorted(newest.items())
            if (asset is None or who == asset) and r["branch"] in ("upset", "refused", "timed_out")]


# -- score ----------------------------------------------------------------------------------------

class NoChampion(LookupError):
    """Nothing to score with yet: the first training has not promoted a model."""


def score(use_case_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """Score one day of one asset's features with its champion and write the predictions to the
    historian side. A temporal kind gets the rows before the day as warm-up, not rescored."""
    from plantops.kinds import kind_of
    from plantops.sources import historian
    from plantops.stages import registry
    from plantops.stages.scoring import score_frame

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    day = day or latest_feature_day(use_case_id)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).strftime("%Y-%m-%d")
    champion = registry.champion(name)
    if champion is None:
        raise NoChampion(f"{name} has no champion model yet: run {use_case_id}__train first")
    version = champion[0]
    model = registry.load_version(name, version)  # by number: the alias may move meanwhile
    kind = kind_of(use_case, model)
    if use_case.inspection is not None:
        return _score_images(use_case, kind, model, version, day)
    context = kind.context_rows(model)
    first = day
    if context:
        bucket_days = context * use_case.features.bucket_seconds / 86400
        first = (datetime.fromisoformat(day) - timedelta(days=max(1, int(bucket_days) + 1))).strftime("%Y-%m-%d")
    features = load_features(use_case_id, first, end, asset)
    if features.empty:
        log.warning("%s: no features for %s on %s: nothing to score", use_case_id, asset, day)
        return {"day": day, "asset": asset, "rows": 0, "alarms": 0, "model_version": version}
    warm = int((features["date"] < day).sum())
    features = features.iloc[max(0, warm - context):]
    predictions = score_frame(kind, model, features, version, context=min(context, warm), model_name=name)
    written = historian.write_predictions(predictions)
    alarms = int(predictions["alarm"].sum())
    log.info("scored %s rows of %s/%s with champion %s v%s (%s): %s alarms", written, asset, day, name, version,
             kind.name, alarms)
    return {"day": day, "asset": asset, "rows": written, "alarms": alarms, "model_version": version,
            "model_kind": kind.name}


def _score_images(use_case: Any, kind: Any, model: Any, version: str, day: str) -> dict[str, Any]:
    """An inspection day: the champion's verdict per cell (a heat map per rejected cell) written to
    the historian side under the line, where inspectors and the monitor read them."""
    from plantops.sources import inspections
    from plantops.stages.inspection_scoring import score_inspections

    features = load_image_features(use_case.id, [day])
    verdicts = score_inspections(use_case, kind, model, version, features)
    written = inspections.write_verdicts(use_case.inspection.line, verdicts)
    rejected = int(verdicts["rejected"].sum()) if len(verdicts) else 0
    log.info("scored %s cells of %s on %s with v%s (%s): %s rejected", written, use_case.inspection.line, day,
             version, kind.name, rejected)
    return {"day": day, "asset": use_case.assets[0], "rows": written, "alarms": rejected, "model_version": version,
            "model_kind": kind.name, "runs": sorted(verdicts["run_id"].unique().tolist()) if len(verdicts) else []}


# -- monitor --------------------------------------------------------------------------------------

def assess(use_case_id: str, run_id: str, day: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """All monitor signals for one asset's day (an inspection line's day), its plant events, retrain
    history, and the policy's decision (recorded per asset in a fleet)."""
    from plantops.sources import historian
    from plantops.stages import decisions, registry
    from plantops.stages.monitoring import PlantEvent, compute_drift, decide

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    name = use_case.model_name(asset)
    monitoring = use_case.monitoring
    day = day or latest_feature_day(use_case_id)
    start = _day(day)
    end = start + parse_duration(monitoring.window)
    reference = registry.load_reference(name)
    evidence = (_line_evidence(use_case, name, day, start, end) if use_case.inspection is not None
                else _tag_evidence(use_case, asset, run_id, day, start, end))
    report, report_url = report_location(use_case, run_id, asset)
    columns = [c for c in evidence["columns"] if c in reference.columns]
    drift = compute_drift(reference, evidence["current"], columns, monitoring.drift, report)
    lookback = parse_duration(monitoring.plant_event_lookback)
    events = [
        PlantEvent(kind=e["kind"], ts=e["ts"], asset=e["asset"], description=e["description"], author=e["author"])
        for e in historian.read_plant_events(asset, start - lookback, end)
    ]
    champion = registry.champion(name)
    reference_start = registry.champion_reference_start(name)
    if reference_start is not None:
        # A change at or before the champion's declared reference start was answered by it: the
        # champion was trained on the plant after it.
        answered = _day(reference_start)
        events = [e for e in events if e.ts > answered]
    history = retrain_history(use_case_id, start, asset)
    performance, confirmation = evidence["performance"], evidence["confirmation"]
    decision = decide(
        drift, events, window_start=start, window_end=end, asset=asset, lookback=lookback,
        policy=monitoring.policy, alarm_rate=evidence["alarm_rate"], performance=performance,
        rejected_share=evidence["rejected_share"], history=history, confirmation=confirmation,
    )
    record = {
        "day": day,
        "asset": asset,
        "registered_model": name,
        "branch": decision.branch,
        "reason": decision.reason,
        "signals": [sig.to_record() for sig in decision.signals],
        "rule": decision.rule,
        "guardrail": decision.guardrail,
        "confirmation": {"false_alarms": confirmation.false_alarms, "confirmed_fault": confirmation.confirmed_fault,
                         "by": list(confirmation.by)},
        "drift_share": drift.drift_share,
        "drifted_columns": list(drift.drifted_columns)[:10],
        "report_path": drift.report_path,
        "report_url": report_url,
        "plant_events": [e.to_record() for e in decision.events],
        "champion_version": champion[0] if champion else None,
        "champion_reference_start": reference_start,
        "alarm_rate": evidence["alarm_rate"],
        "performance": None if performance is None else performance.__dict__,
        "rejected_share": evidence["rejected_share"],
        "history": {"last_request": str(history.last_request) if history.last_request else None,
                    "pending": history.pending, "recent_requests": history.recent_requests,
                    "upset_since": str(history.upset_since) if history.upset_since else None},
        "thresholds": {**monitoring.drift.model_dump(), "policy": monitoring.policy.model_dump()},
        "drift": drift.to_record(),
        **evidence["record"],
    }
    decisions.record(use_case_id, run_id, "monitor", decision.branch, decision.reason, record,
                     asset=decision_asset(use_case, asset))
    record["approval_body"] = approval_body(use_case_id, record, drift)
    return record


def _tag_evidence(use_case: Any, asset: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
    """What the monitor weighs for one asset's window of tags: its features (the kind's drift
    columns), the champion's predictions and alarms, labels (lab, feedback) and rejected values."""
    from plantops.kinds import get_kind
    from plantops.sources import historian
    from plantops.stages.explain import alarm_tag_summary
    from plantops.stages.feedback import since_last_monitor
    from plantops.stages.ingest import rejected_share

    predictions = historian.read_predictions(asset, start, end)
    performance = performance_check(use_case.id, end, asset)
    residual = predictions["residual"].dropna() if "residual" in predictions else []
    return {
        "current": load_features(use_case.id, day, end.strftime("%Y-%m-%d"), asset),
        "columns": get_kind(use_case).drift_columns(),
        "alarm_rate": float(predictions["alarm"].mean()) if len(predictions) else None,
        "performance": performance,
        "rejected_share": rejected_share(use_case, start, end),
        "confirmation": confirm_window(predictions, historian.read_labels(asset), start, end),
        "record": {
            "n_predictions": int(len(predictions)),
            "mean_residual": float(residual.mean()) if len(residual) else None,
            "performance_note": "not applicable: no labels (lab results, confirmed faults, feedback) have arrived "
                                "for this asset in the lookback" if performance is None else None,
            # Which tags the window's alarms named (their per-alarm explanations), most often first.
            "alarm_tags": alarm_tag_summary(predictions.loc[predictions["alarm"] == 1, "top_tags"])
            if len(predictions) else [],
            # Read before this run's own record is stored: "since" means since the previous monitor run.
            "feedback": since_last_monitor(use_case.id, run_id),
        },
    }


def _line_evidence(use_case: Any, name: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
    """What the monitor weighs for an inspection line's window (:mod:`plantops.stages.inspection_monitoring`):
    the cells' image statistics and the champion's outputs on them, its reject rate, the
    inspectors' late labels and the images ingest rejected; the rejected cells with their heat maps."""
    from plantops.image_features import STATS
    from plantops.kinds import get_kind
    from plantops.sources import inspections
    from plantops.stages import inspection_monitoring as line
    from plantops.stages import registry
    from plantops.stages.inspection_scoring import inspection_report

    kind = get_kind(use_case)
    try:
        features = load_image_features(use_case.id, days_between(start.isoformat(), end.isoformat()))
    except NoFeatures:
        features = None
    cells = line.window_cells(use_case, features, start, end)
    scored = cells.dropna(subset=["rejected"])
    performance = line.performance(use_case, name, end, kind)
    report = inspection_report(use_case, day)
    champion = registry.champion(name)
    return {
        "current": cells,
        "columns": [*STATS, *line.OUTPUTS],
        "alarm_rate": float(scored["rejected"].mean()) if len(scored) else None,
        "performance": performance,
        "rejected_share": line.rejected_image_share(use_case, start, end),
        "confirmation": line.confirmation(scored, inspections.read_labels(use_case.assets[0]), kind),
        "record": {
            "n_predictions": int(len(scored)),
            "n_cells": int(len(cells)),
            "performance_note": "not applicable: no inspector label has arrived for a cell the champion scored "
                                "in the lookback" if performance is None else None,
            "alarm_tags": [],
            "rejected_cells": report["rejected"][:line.TOP_CELLS],
            "by_class": report["by_class"],
            "confusion": report["confusions"].get(champion[0]) if champion else None,
            "feedback": [],
        },
    }


def report_location(use_case: Any, run_id: str, asset: str) -> tuple[Any, str]:
    """Where a monitor run writes its drift report, and its URL on the plantops plugin of the
    Airflow api-server (login required)."""
    run_folder = run_id.replace(":", "_").replace("+", "_")
    name = f"{run_folder}/{asset}/drift.html" if use_case.is_fleet else f"{run_folder}/drift.html"
    return (get_settings().reports_root / use_case.id / name,
            f"{os.environ.get('AIRFLOW__API__BASE_URL', 'http://localhost:8080')}/plantops/reports/{use_case.id}/{name}")


def performance_check(use_case_id: str, end: datetime, asset: str | None = None):
    """The champion's predictions in the performance lookback against the labels that have arrived.
    None where no label has arrived: performance is then not applicable, and the record says so."""
    import pandas as pd

    from plantops.sources import historian
    from plantops.stages import registry
    from plantops.stages.monitoring import PerformanceCheck

    use_case = get_use_case(use_case_id)
    asset = asset or use_case.assets[0]
    start = end - parse_duration(use_case.monitoring.policy.performance.lookback)
    predictions = historian.read_predictions(asset, start, end)
    labels = historian.read_labels(asset)
    champion = registry.champion(use_case.model_name(asset))
    if champion is not None and len(predictions):
        # The champion is judged on its own predictions, not on those of the models before it.
        predictions = predictions[predictions["model_version"].astype(str) == champion[0]]
    if predictions.empty or labels.empty:
        return None
    label = pd.Series("", index=predictions.index)
    for row in labels.itertuples(index=False):
        label[(predictions["ts"] >= row.start_ts) & (predictions["ts"] < row.end_ts)] = row.label
    faults, normal = label.str.startswith("fault"), label == "normal"
    expected = registry.champion_metric(use_case.model_name(asset), "detection_rate")
    return PerformanceCheck(
        n_labelled=int(faults.sum() + normal.sum()),
        detection_rate=float(predictions.loc[faults, "alarm"].mean()) if faults.any() else None,
        far=float(predictions.loc[normal, "alarm"].mean()) if normal.any() else None,
        expected_detection_rate=expected,
    )


def retrain_history(use_case_id: str, window_start: datetime, asset: str | None = None):
    """Retrain requests (automatic, or approved by an engineer) from the decision store, in plant
    time, for one asset of a fleet (or the use case)."""
    from plantops.stages import decisions
    from plantops.stages.monitoring import RetrainHistory

    use_case = get_use_case(use_case_id)
    guard = use_case.monitoring.policy.guardrails
    rows = decisions.latest(use_case_id, limit=500, asset=decision_asset(use_case, asset))
    requests = [
        (_day(r["payload"]["day"]), r["created_at"]) for r in rows
        if r["payload"].get("day") and ((r["kind"] == "monitor" and r["branch"] == "retrain")
                                        or (r["kind"] == "approval" and r["branch"].startswith("retrain")))
    ]
    trains = [r["created_at"] for r in rows if r["kind"] == "train"]
    last_train = max(trains) if trains else None
    earlier = [day for day, _ in requests if day < window_start]
    period = parse_duration(guard.period)
    return RetrainHistory(
        last_request=max(earlier) if earlier else None,
        pending=any(last_train is None or created > last_train for _, created in requests),
        recent_requests=sum(1 for day in earlier if day >= window_start - period),
        upset_since=upset_since(rows, window_start, parse_duration(use_case.monitoring.window)),
    )


def upset_since(rows: list[dict], window_start: datetime, window: timedelta) -> datetime:
    """Where the run of upset windows that this window would continue began: the earliest of the
    adjoining earlier windows whose newest monitor decision was an upset (or a persistent upset
    put to an engineer), else this window's own start."""
    newest: dict[datetime, dict] = {}
    for r in rows:  # newest first
        if r["kind"] == "monitor" and r["payload"].get("day"):
            newest.setdefault(_day(r["payload"]["day"]), r)
    since = window_start
    while (r := newest.get(since - window)) is not None and (
            r["branch"] == "upset" or r["payload"].get("rule") == "persistent_upset"):
        since -= window
    return since


def confirm_window(predictions: pd.DataFrame, labels: pd.DataFrame, start: datetime, end: datetime):
    """What people confirmed about the window: the champion's alarms inside periods labelled normal
    (false-alarm feedback, lab results) and the first fault label overlapping it."""
    import pandas as pd

    from plantops.stages.monitoring import Confirmation

    if labels.empty:
        return Confirmation()
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    overlapping = labels[(labels["start_ts"] < hi) & (labels["end_ts"].isna() | (labels["end_ts"] > lo))]
    alarm_ts = predictions.loc[predictions["alarm"] == 1, "ts"] if len(predictions) else pd.Series(dtype="datetime64[ns, UTC]")
    false_alarms, by = 0, set()
    for row in overlapping[overlapping["label"] == "normal"].itertuples(index=False):
        inside = (alarm_ts >= row.start_ts) & (alarm_ts < row.end_ts if not pd.isna(row.end_ts) else True)
        if inside.any():
            false_alarms += int(inside.sum())
            by.add(str(getattr(row, "source", "") or "labels"))
    faults = overlapping[overlapping["label"].str.startswith("fault")]
    return Confirmation(false_alarms=false_alarms, by=tuple(sorted(by)),
                        confirmed_fault=str(faults["label"].iloc[0]) if len(faults) else None)


def approval_body(use_case_id: str, record: dict[str, Any], drift: Any) -> str:
    """The markdown a process engineer reads in the approval task. It opens with who may answer:
    Airflow's form shows enabled buttons to every user and refuses a non-assigned one only on
    submit (403), so the body says it before anyone fills anything in."""
    approvers = get_use_case(use_case_id).approvers
    images = record.get("rejected_cells") is not None  # an inspection line: image statistics, not tags
    what = "image statistics and model outputs" if images else "tags"
    lines = [
        "> **Answered only by the assigned process engineers: "
        + ", ".join(f"{a.name} (`{a.id}`)" for a in approvers)
        + ".** Anyone else is refused when submitting.",
        "",
        f"**{use_case_id}**{' / asset **' + record['asset'] + '**' if record.get('asset') else ''}, "
        f"window {record['day']}: {record['reason']}",
        "",
        f"Drifted share of {what}: **{record['drift_share']:.0%}** "
        f"(threshold {record['thresholds']['share_threshold']:.0%}, method {record['thresholds']['method']}).",
        "",
        f"| {'column' if images else 'tag'} | drift score | shift (sd) |",
        "|---|---|---|",
    ]
    for col, score, shift in drift.top(8):
        lines.append(f"| {col} | {score:.3f} | {shift:+.1f} |")
    lines += ["", "Plant events in the window:"]
    lines += [f"- {e['ts']} {e['kind']} by {e['author']}: {e['description']}" for e in record["plant_events"]] or ["- none"]
    if images:
        from plantops.stages.inspection_monitoring import approval_lines

        lines += approval_lines(record)
    else:
        lines += ["", "Tags named most often by the window's alarm explanations:"]
        if record.get("alarm_tags"):
            lines += ["", "| tag | alarms naming it | alarms it led | median shift (sd) |", "|---|---|---|---|"]
            for t in record["alarm_tags"]:
                shift = "n/a" if t["median_shift_sd"] is None else f"{t['median_shift_sd']:+.1f}"
                lines.append(f"| {t['tag']} | {t['alarms']} | {t['first']} | {shift} |")
        else:
            lines.append("- no alarms")
        lines += ["", "Process-engineer feedback since the previous monitor run:"]
        lines += [
            f"- {f['created_at'][:16]} **{f['kind']}** {f['ts_start'][:16]}..{f['ts_end'][:16]}"
            f"{' on ' + f['tag'] if f['tag'] else ''} by {f['author']}: {' '.join(f['comment'].split())}"
            for f in record.get("feedback") or []
        ] or ["- none"]
    perf = record.get("performance")
    alarm = record["alarm_rate"]

    def rate(value: float | None, missing: str) -> str:
        return missing if value is None else f"{value:.0%}"

    if perf is None:
        labelled = ("on labelled cells: not applicable (no inspector label yet for a cell it scored)" if images else
                    "on labelled data: not applicable (no lab results or feedback labels in the lookback)")
    elif images:
        labelled = (f"on {perf['n_labelled']} cells the inspectors labelled: defect recall "
                    f"{rate(perf['detection_rate'], 'n/a (no defective cell)')} (held out at training: "
                    f"{rate(perf['expected_detection_rate'], 'n/a')}), false rejects "
                    f"{rate(perf['far'], 'n/a (no functional cell)')}")
    else:
        labelled = (f"on {perf['n_labelled']} labelled rows: detection "
                    f"{rate(perf['detection_rate'], 'n/a (no fault-labelled rows)')}, false alarms "
                    f"{rate(perf['far'], 'n/a (no normal-labelled rows)')}")
    scope = ("every labelled cell, this window's included" if images else "this window as normal")
    lines += ["", f"Champion: version {record['champion_version']}; {'reject' if images else 'alarm'} rate in the "
              f"window: {'n/a (nothing scored)' if alarm is None else f'{alarm:.0%}'}; {labelled}",
              "", f"Drift report: [{record['report_url']}]({record['report_url']})",
              "", f"*Retrain now* learns {scope}. *Retrain from a new reference window* declares "
              "the state from `reference_start` on (empty: the newest plant event, else the window's start) the "
              "new normal: the model is trained, and judged against the champion, on data after it. *Refuse* if "
              "the model is still valid (give a reason: the only field a refusal needs): the window's "
              f"{'rejects' if images else 'alarms'} stand and it stays out of training. Without an answer the safe "
              "default applies: no retraining."]
    return "\n".join(lines)


def _run_suffix(use_case: Any, asset: str) -> str:
    """Train runs a monitor run triggers are named per asset in a fleet (one run per asset)."""
    return f"__{asset}" if use_case.is_fleet else ""


def retrain_requests(use_case_id: str, run_id: str, assessments: list[dict]) -> list[dict]:
    """TriggerDagRunOperator kwargs (run id, conf) for each asset whose monitor branch is retrain."""
    use_case = get_use_case(use_case_id)
    return [{"trigger_run_id": f"retrain__{run_id}{_run_suffix(use_case, x['asset'])}",
             "conf": {"reason": f"retrain requested by {run_id}: {x['reason']}"[:500], "monitor_run_id": run_id,
                      **({"asset": x["asset"]} if use_case.is_fleet else {})},
             "note": run_note(use_case, x, f"stale model: retrain asked by monitor run {run_id}")}
            for x in assessments if x["branch"] == "retrain"]


def run_note(use_case: Any, assessment: dict, text: str) -> str:
    """The note a triggered run carries in the UI's run list: the day judged (and asset), and why."""
    return f"{_subject(use_case, assessment)}: {text}"


def _subject(use_case: Any, assessment: dict) -> str:
    return f"{use_case.id}{' / ' + assessment['asset'] if use_case.is_fleet else ''}, {assessment['day']}"


# The approval's question, by the guardrail or rule that sent the window to an engineer.
QUESTIONS = {
    "plant_change": "retrain after a plant change?",
    "persistent_upset": "a lasting upset: the new normal?",
    "cap": "another retrain past the cap?",
    "quality": "retrain on data the quality gates rejected?",
}


def approval_requests(use_case_id: str, assessments: list[dict]) -> list[dict]:
    """The approval task's subject and body for each asset whose monitor branch is approval."""
    use_case = get_use_case(use_case_id)
    return [{"subject": f"{_subject(use_case, x)}: "
                        f"{QUESTIONS.get(x.get('guardrail') or x.get('rule'), 'retrain?')}",
             "body": x["approval_body"]}
            for x in assessments if x["branch"] == "approval"]


def upset_alerts(use_case_id: str, run_id: str, assessments: list[dict]) -> list[dict]:
    """The operators' alert (subject, body, link) for each asset whose monitor branch is upset."""
    from plantops.stages import notify

    use_case = get_use_case(use_case_id)
    alerts = []
    for x in assessments:
        if x["branch"] != "upset":
            continue
        rate = "n/a" if x.get("alarm_rate") is None else f"{x['alarm_rate']:.0%}"
        if x.get("rejected_cells") is not None:  # an inspection line
            from plantops.stages.inspection_monitoring import alert_body

            alerts.append({"asset": x["asset"], "subject": f"{_subject(use_case, x)}: upset, the model rejects "
                                                           f"{rate} of the cells", "body": alert_body(x),
                           "link": notify.ui_link(use_case.dag_id("monitor"), run_id)})
            continue
        tags = ", ".join(f"{t['tag']} ({t['alarms']} alarms)" for t in (x.get("alarm_tags") or [])[:5])
        alerts.append({
            "asset": x["asset"],
            "subject": f"{_subject(use_case, x)}: upset, the model alarms on {rate} of the window",
            "body": f"{x['reason']}\n\nTags the alarms name most: {tags or 'none'}.\n\n"
                    f"Drift report: {x['report_url']}\n\nIf these alarms are false, tell the model: submit "
                    f"false_alarm feedback ({use_case.dag_id('feedback')}); the next monitor run retrains it.",
            "link": notify.ui_link(use_case.dag_id("monitor"), run_id),
        })
    return alerts


def approved_trainings(use_case_id: str, run_id: str, asked: list[dict], answers: list[dict]) -> list[dict]:
    """Record each approval's answer (``answers[i]`` answers ``asked[i]``) and return the
    TriggerDagRunOperator kwargs of the trainings the engineers approved. A refusal without a reason
    is recorded as such; no answer (the timeout's safe default) as ``timed_out``."""
    from plantops.stages.monitoring import APPROVAL_OPTIONS, SAFE_DEFAULT

    use_case = get_use_case(use_case_id)
    timeout = use_case.monitoring.approval_timeout
    triggers = []
    for assessment, answer in zip(asked, answers, strict=True):
        chosen = (answer.get("chosen_options") or [SAFE_DEFAULT])[0]
        branch = APPROVAL_OPTIONS.get(chosen, "refused")
        params = answer.get("params_input") or {}
        who = (answer.get("responded_by_user") or {}).get("id", "")
        if branch == "refused" and who and not params.get("reason"):
            log.warning("%s: %s refused without a reason; recorded as such", use_case_id, who)
            answer = {**answer, "params_input": {**params, "reason": f"refused by {who} (no reason given)"}}
        stored = record_answer(use_case_id, run_id, answer, branch, assessment["day"], timeout,
                               decision_asset(use_case, assessment["asset"]))
        if stored["branch"] == "timed_out":
            from plantops.stages import notify

            notify.send(use_case, "timeout", f"{_subject(use_case, assessment)}: no answer within {timeout}",
                        f"{stored['reason']}.\n\nThe monitor asked: {assessment['reason']}",
                        notify.ui_link(use_case.dag_id("monitor"), run_id))
        if stored["branch"] not in ("retrain_now", "retrain_new_reference"):
            continue
        conf = {"monitor_run_id": run_id, "approved_by": who, "approval_reason": params.get("reason", ""),
                **({"asset": assessment["asset"]} if use_case.is_fleet else {})}
        if stored["branch"] == "retrain_new_reference":
            events = assessment.get("plant_events") or []
            conf["reference_start"] = params.get("reference_start") or (events[-1]["ts"] if events else assessment["day"])
            conf["reason"] = f"approved with a new reference window in {run_id}"
            prefix = "reference"
        else:
            conf["reason"] = f"approved by a process engineer in {run_id}"
            prefix = "approved"
        triggers.append({"trigger_run_id": f"{prefix}__{run_id}{_run_suffix(use_case, assessment['asset'])}",
                         "conf": conf, "note": run_note(use_case, assessment, f"{stored['branch']} approved by "
                                                        f"{who or 'an engineer'} in monitor run {run_id}")})
    return triggers


def record_answer(use_case_id: str, run_id: str, answer: dict[str, Any], branch: str, day: str,
                  timeout: str | None = None, asset: str | None = None) -> dict[str, Any]:
    """Store who answered the approval, when and what, in the decision store (under ``asset``: the
    asset of a fleet, None for a one-asset use case). No answer (the response timeout applied the
    safe default) is recorded as such, with a warning."""
    from plantops.stages import decisions

    params = answer.get("params_input") or {}
    responder = answer.get("responded_by_user")
    payload = {
        "day": day,
        "asset": asset,
        "chosen_options": answer.get("chosen_options"),
        "responded_by": responder,
        "responded_at": answer.get("responded_at"),
        "params_input": params,
        "timed_out": responder is None,
    }
    if responder is None:
        reason = f"no answer within {timeout or 'the response timeout'}: safe default, no retraining"
        log.warning("%s: approval in %s timed out; %s", use_case_id, run_id, reason)
        branch = "timed_out"
    else:
        reason = params.get("reason") or f"{branch} chosen by {responder.get('name') or responder.get('id')}"
    decisions.record(use_case_id, run_id, "approval", branch, reason, payload, asset=asset)
    return {**payload, "branch": branch, "reason": reason}
