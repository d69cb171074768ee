"""plantops on the command line: draft a use case, ingest now, inspect the quarantine and the ledger, release fixed files.

    python -m plantops.cli init-use-case line_3 --from export.csv --timezone Europe/Berlin
    python -m plantops.cli init-use-case line_4 --from export.csv --site north  # inherits the site's defaults
    python -m plantops.cli ingest line_3 --day 2026-03-24  # landed files + the day's historian window, now
    python -m plantops.cli run line_3 all [--start D --end D]  # features, train, score, monitor: the DAGs, now
    python -m plantops.cli quarantine tep_reactor          # files waiting, with their reasons
    python -m plantops.cli release tep_reactor <file>      # put a fixed file back in the landing zone
    python -m plantops.cli release pv_cells inspections/<run>/<file> [--image fixed.png]  # a rejected image
    python -m plantops.cli ledger tep_reactor              # every landed file: status and row counts
    python -m plantops.cli conflicts tep_reactor [--all]  # later values that differ from bronze's
    python -m plantops.cli correct tep_reactor <file> [--by NAME]  # bronze takes that file's values
    python -m plantops.cli decisions tep_reactor --kind monitor
    python -m plantops.cli replay tep_reactor history|upset|stale|maintenance|plant_change|new_normal
    python -m plantops.cli lake tep_reactor                # bronze and features as Trino tables (stack tiers)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from plantops.config import ConfigError, UseCase, get_use_case

# `ingest` exits with this when a landed file was quarantined whole (the DAG run fails then too).
QUARANTINED_EXIT_CODE = 2


def ingest_now(use_case_id: str, day: str | None = None) -> tuple[list[dict], int]:
    """Run an ingest in this process (the embedded tier): every landed file, and the historian
    window [day, day + 1) (default: today, UTC). The rows to print and the exit code."""
    from plantops.stages.pipeline import ingest

    get_use_case(use_case_id)  # a broken YAML fails here, naming the field
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) if day else \
        datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    run_id = f"cli__{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%S.%f}"
    result = ingest(use_case_id, start.isoformat(), (start + timedelta(days=1)).isoformat(), run_id)
    rows = [{"file": f.pop("file"), **f} for f in result["files"]]
    rows.append({"historian": result["historian"]})
    rows.append({"run_id": run_id, "days": result["days"], "quarantined_files": result["quarantined_files"],
                 "notified": result["notified"]})
    return rows, QUARANTINED_EXIT_CODE if result["quarantined_files"] else 0


def run_now(use_case_id: str, stage: str, start: str | None = None, end: str | None = None) -> tuple[list[dict], int]:
    """Run a stage (or ``all``) of the use case through its DAGs in this process on the embedded
    tier (:mod:`plantops.orchestration.localrun`); prints each stage's row as it ends."""
    from plantops.environments import localenv
    from plantops.orchestration.localrun import STAGES, LocalRunner, RunError, log_path, parse_range
    from plantops.settings import get_settings
    from plantops.stages.pipeline import bronze_days

    if stage not in (*STAGES, "all"):
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}, all")
    first, after = parse_range(start, end)
    folder = Path(get_settings().use_cases_dir)
    if not (folder / f"{use_case_id}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ValueError(f"unknown use case {use_case_id!r}: no {folder / (use_case_id + '.yaml')} (known: {known}; "
                         "draft one with init-use-case)")
    use_case = get_use_case(use_case_id)  # a broken YAML fails here, naming the field
    if stage in ("features", "all") and not bronze_days(use_case.id):
        raise RunError(f"{use_case.id} has no bronze yet: run python -m plantops.cli ingest {use_case.id} "
                       "--day YYYY-MM-DD first")
    home = Path(get_settings().home)
    localenv.apply(home)  # before Airflow is imported: it reads its configuration once
    log_file = log_path(home)
    runner = LocalRunner(use_case, log_file, sys.stdout)
    print(json.dumps({"use_case": use_case.id, "stage": stage, "log": str(log_file)}), flush=True)
    runner.prepare()
    return runner.run(stage, first, after)


def release_quarantined(use_case: UseCase, name: str, image: Path | None = None) -> Path:
    """Put a quarantined file back in line (see ``release`` in :func:`main`): where it lands."""
    from plantops.sources.landing import release as release_file

    if use_case.inspection is None:
        if image is not None:
            raise ValueError("--image: only for an inspection use case's rejected images")
        return release_file(use_case.id, name, use_case.landing.folder)
    from plantops.sources.elpv_replay import MANIFEST_SUFFIX
    from plantops.modalities.images import ingest as inspection_ingest

    folder = use_case.inspection.folder
    if "/" in name:
        return inspection_ingest.release_item(use_case.id, folder, name, image)
    if image is not None:
        raise ValueError("--image: name a rejected image, inspections/<run>/<file>")
    if name.endswith(MANIFEST_SUFFIX):
        return inspection_ingest.release_run(use_case.id, folder, name)
    return release_file(use_case.id, name, folder)


def main(argv: list[str] | None = None) -> int:
    from plantops.stages.decisions import KINDS

    parser = argparse.ArgumentParser(prog="plantops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-use-case", help="draft include/use_cases/<id>.yaml from a sample export")
    init.add_argument("use_case", help="the new use case's id (lowercase, digits, '_')")
    init.add_argument("--from", dest="sample", required=True, help="a sample export: .parquet, .csv, .txt, .jsonl")
    init.add_argument("--out", help="where to write the YAML (default: include/use_cases/<id>.yaml)")
    init.add_argument("--asset", help="the asset the landed rows belong to (default: the use case id, or a long "
                                      "sample's asset column)")
    init.add_argument("--timezone", help="the zone of naive timestamps, e.g. Europe/Berlin (default with --site: "
                                         "the site's)")
    init.add_argument("--site", help="draft into this site (include/sites/<site>.yaml): the use case inherits its "
                                     "historian connection, time zone, approvers and notifications")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    ingest = sub.add_parser("ingest", help="ingest now: every landed file and the day's historian window")
    ingest.add_argument("use_case")
    ingest.add_argument("--day", help="YYYY-MM-DD: the historian window [day, day + 1) (default: today, UTC)")
    run = sub.add_parser("run", help="run a stage's DAG now, in this process: features, train, score, monitor, all")
    run.add_argument("use_case")
    run.add_argument("stage", help="features | train | score | monitor | all (the four in order)")
    run.add_argument("--start", help="YYYY-MM-DD: first day (features: build [start, end); score and monitor: "
                                     "each feature day in it; default: features the unbuilt bronze days, score "
                                     "and monitor the newest feature day)")
    run.add_argument("--end", help="YYYY-MM-DD: the day after the last day")
    for name in ("quarantine", "ledger", "decisions", "lake"):
        cmd = sub.add_parser(name)
        cmd.add_argument("use_case")
        if name == "decisions":
            cmd.add_argument("--kind", choices=list(KINDS))
            cmd.add_argument("--limit", type=int, default=20)
    release = sub.add_parser("release", help="move a fixed file from quarantine back to the landing folder")
    release.add_argument("use_case")
    release.add_argument("file", help="as the quarantine list names it; for an inspection use case "
                         "inspections/<run>/<file> (a rejected image), <run>.manifest.csv or a labels file")
    release.add_argument("--image", type=Path, help="inspection use cases: the fixed image to land in place of "
                         "the rejected one (default: the quarantined image itself)")
    conflicts = sub.add_parser("conflicts", help="landed values that differ from bronze's (open ones)")
    conflicts.add_argument("use_case")
    conflicts.add_argument("--all", action="store_true", help="also the replaced ones, with their audit record")
    correct = sub.add_parser("correct", help="replace bronze's values with a later file's (its open conflicts)")
    correct.add_argument("use_case")
    correct.add_argument("file", help="the later landed file, as `conflicts` names it (new_file)")
    correct.add_argument("--by", help="who corrects (default: the OS user), kept in the audit record")
    replay = sub.add_parser("replay", help="write TEP plant data into the historian and the landing zone")
    replay.add_argument("use_case")
    replay.add_argument("scenario", choices=["history", "upset", "stale", "maintenance", "plant_change", "new_normal"])
    args = parser.parse_args(argv)

    code = 0
    if args.command == "init-use-case":
        from plantops.onboarding import SampleError, init_use_case

        try:
            rows = [init_use_case(args.use_case, args.sample, args.out, args.asset, args.timezone, args.force,
                                  args.site)]
        except (SampleError, ConfigError, FileExistsError) as exc:
            print(f"init-use-case: {exc}", file=sys.stderr)
            return 1
    elif args.command == "ingest":
        if args.day:
            try:
                datetime.strptime(args.day, "%Y-%m-%d")
            except ValueError:
                parser.error(f"--day: expected YYYY-MM-DD, got {args.day!r}")
        try:
            rows, code = ingest_now(args.use_case, args.day)
        except ConfigError as exc:
            print(f"ingest: {exc}", file=sys.stderr)
            return 1
    elif args.command == "run":
        try:
            rows, code = run_now(args.use_case, args.stage, args.start, args.end)
        except (ConfigError, ValueError, RuntimeError) as exc:
            print(f"run: {exc}", file=sys.stderr)
            return 1
        return code  # each stage's row was printed when it ended
    elif args.command == "quarantine":
        from plantops.sources.landing import quarantined

        rows = quarantined(args.use_case)
    elif args.command == "ledger":
        from plantops.sources.landing import rows_of

        rows = rows_of(args.use_case)
    elif args.command == "conflicts":
        from plantops.stages import corrections

        rows = corrections.listed(get_use_case(args.use_case).id, None if args.all else corrections.OPEN)
    elif args.command == "correct":
        from plantops.stages import corrections

        try:
            rows = [corrections.correct(get_use_case(args.use_case).id, args.file, args.by)]
        except ValueError as exc:
            print(f"correct: {exc}", file=sys.stderr)
            return 1
    elif args.command == "decisions":
        from plantops.stages import decisions

        rows = decisions.latest(args.use_case, kind=args.kind, limit=args.limit)
    elif args.command == "lake":
        from plantops.environments import lake

        rows = [{"table": table, "rows": n} for table, n in lake.register(get_use_case(args.use_case).id).items()]
    elif args.command == "release":
        use_case = get_use_case(args.use_case)
        if use_case.inspection is None and use_case.landing is None:
            parser.error(f"use case {args.use_case} has no landing folder")
        try:
            rows = [{"released": str(release_quarantined(use_case, args.file, args.image))}]
        except (OSError, ValueError) as exc:
            print(f"release: {exc}", file=sys.stderr)
            return 1
    else:
        from plantops.sources import replay as replayer

        use_case = get_use_case(args.use_case)
        if args.scenario == "history":
            rows = replayer.replay_history(use_case)
        else:
            rows = [replayer.replay_episode(use_case, replayer.LIVE[args.scenario])]
    for row in rows:
        print(json.dumps(row, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
