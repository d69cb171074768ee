"""plantops on the command line: inspect the quarantine and the ledger, release fixed files, replay data.

    python -m plantops.cli quarantine tep_reactor          # files waiting, with their reasons
    python -m plantops.cli release tep_reactor <file>      # put a fixed file back in the landing zone
    python -m plantops.cli ledger tep_reactor              # every landed file: status and row counts
    python -m plantops.cli decisions tep_reactor --kind monitor
    python -m plantops.cli replay tep_reactor history|upset|stale|maintenance|plant_change|new_normal
    python -m plantops.cli lake tep_reactor                # bronze and features as Trino tables (stack tiers)
"""

from __future__ import annotations

import argparse
import json
import sys

from plantops.config import get_use_case
from plantops.settings import get_settings


def quarantined(use_case_id: str) -> list[dict]:
    folder = get_settings().quarantine_root / use_case_id
    out = []
    for reason in sorted(folder.glob("*.reason.json")):
        data = json.loads(reason.read_text())
        out.append({"file": reason.name.removesuffix(".reason.json"), "reason": data["reason"],
                    "quarantined_at": data.get("quarantined_at"), "counts": data.get("counts")})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plantops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("quarantine", "ledger", "decisions", "lake"):
        cmd = sub.add_parser(name)
        cmd.add_argument("use_case")
        if name == "decisions":
            cmd.add_argument("--kind", choices=["monitor", "train", "approval", "feedback"])
            cmd.add_argument("--limit", type=int, default=20)
    release = sub.add_parser("release", help="move a fixed file from quarantine back to the landing folder")
    release.add_argument("use_case")
    release.add_argument("file")
    replay = sub.add_parser("replay", help="write TEP plant data into the historian and the landing zone")
    replay.add_argument("use_case")
    replay.add_argument("scenario", choices=["history", "upset", "stale", "maintenance", "plant_change", "new_normal"])
    args = parser.parse_args(argv)

    if args.command == "quarantine":
        rows = quarantined(args.use_case)
    elif args.command == "ledger":
        from plantops.sources.landing import rows_of

        rows = rows_of(args.use_case)
    elif args.command == "decisions":
        from plantops.stages import decisions

        rows = decisions.latest(args.use_case, kind=args.kind, limit=args.limit)
    elif args.command == "lake":
        from plantops.environments import lake

        rows = [{"table": table, "rows": n} for table, n in lake.register(get_use_case(args.use_case).id).items()]
    elif args.command == "release":
        from plantops.sources.landing import release as release_file

        use_case = get_use_case(args.use_case)
        if use_case.landing is None:
            parser.error(f"use case {args.use_case} has no landing folder")
        rows = [{"released": str(release_file(use_case.id, args.file, use_case.landing.folder))}]
    else:
        from plantops.sources import replay as replayer

        use_case = get_use_case(args.use_case)
        if args.scenario == "history":
            rows = replayer.replay_history(use_case)
        else:
            rows = [replayer.replay_episode(use_case, replayer.LIVE[args.scenario])]
    for row in rows:
        print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
