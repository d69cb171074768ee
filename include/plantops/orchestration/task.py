"""Run one pipeline stage in a container: ``python -m plantops.orchestration.task <stage> --use-case <id> ...``.

With ``execution: kubernetes`` the DAG factory starts a pod per heavy task with this command and
the same arguments the in-process task passes to :mod:`plantops.stages.pipeline`. The result is printed
and written to ``/airflow/xcom/return.json`` (when that folder exists: the KubernetesPodOperator's
XCom sidecar mounts it), so downstream tasks read it as the task's XCom like before.

Exit code 99 means "skip" (the operator's ``skip_on_exit_code``): scoring before the first champion,
or an ingest with nothing new.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SKIP_EXIT_CODE = 99
XCOM_PATH = Path(os.environ.get("PLANTOPS_XCOM_PATH", "/airflow/xcom/return.json"))
STAGES = ("ingest", "check_features", "train", "score", "assess")


class NothingNew(Exception):
    """An ingest that wrote nothing: skipped, so no bronze event wakes the stages downstream."""


def _opt(value: str | None) -> str | None:
    """Jinja renders a missing value as ''; the pipeline expects None."""
    return value or None


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m plantops.orchestration.task", description=__doc__.splitlines()[0])
    stages = root.add_subparsers(dest="stage", required=True)

    ingest = stages.add_parser("ingest", help="historian window + landed files -> bronze")
    ingest.add_argument("--start", default="", help="ISO start (default: a day before now)")
    ingest.add_argument("--end", default="", help="ISO end (default: now)")
    ingest.add_argument("--run-id", required=True)

    check = stages.add_parser("check_features", help="GX feature gate over day ranges [start, end)")
    check.add_argument("--ranges", default="", help="START:END[,START:END...] (plan_window's ranges)")
    check.add_argument("--start", default="", help="one range's first day (instead of --ranges)")
    check.add_argument("--end", default="", help="the day after that range's last day")

    train = stages.add_parser("train", help="train, register a challenger, promote if better")
    train.add_argument("--run-id", required=True)
    train.add_argument("--reference-start", default="")
    train.add_argument("--reason", default="scheduled")
    train.add_argument("--monitor-run-id", default="")
    train.add_argument("--approved-by", default="")
    train.add_argument("--approval-reason", default="")

    score = stages.add_parser("score", help="score a feature day with the champion")
    score.add_argument("--day", default="")

    assess = stages.add_parser("assess", help="drift, plant events and the policy's decision")
    assess.add_argument("--run-id", required=True)
    assess.add_argument("--day", default="")

    for sub in (ingest, check, train, score, assess):
        sub.add_argument("--use-case", required=True)
    return root


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The same calls as the in-process tasks of plantops.orchestration.dagfactory."""
    from plantops.stages import pipeline

    if args.stage == "ingest":
        now = datetime.now(timezone.utc)
        start = _opt(args.start) or (now - timedelta(days=1)).isoformat()
        end = _opt(args.end) or now.isoformat()
        result = pipeline.ingest(args.use_case, start, end, args.run_id)
        if not result["days"]:
            raise NothingNew(f"nothing new to ingest: {result}")
        return result
    if args.stage == "check_features":
        if args.ranges:
            return pipeline.check_feature_ranges(args.use_case, args.ranges)
        if not (args.start and args.end):
            raise ValueError("check_features needs --ranges START:END[,...] or --start and --end")
        return pipeline.check_features(args.use_case, args.start, args.end)
    if args.stage == "train":
        from plantops.provenance import git_commit

        provenance = {key: value for key, value in (
            ("monitor_run_id", args.monitor_run_id), ("approved_by", args.approved_by),
            ("approval_reason", args.approval_reason)) if value}
        return pipeline.train(args.use_case, args.run_id, _opt(args.reference_start), args.reason or "scheduled",
                              git_commit(), provenance)
    if args.stage == "score":
        return pipeline.score(args.use_case, _opt(args.day))
    if args.stage == "assess":
        return pipeline.assess(args.use_case, args.run_id, _opt(args.day))
    raise ValueError(f"unknown stage {args.stage!r}; expected one of {STAGES}")


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)


def write_result(result: Any, path: Path | None = None) -> None:
    path = path or XCOM_PATH
    text = json.dumps(result, default=_plain)
    print(text)
    if path.parent.is_dir():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    from plantops.stages.pipeline import NoChampion, NoFeatures

    try:
        result = run(args)
    except (NoChampion, NoFeatures, NothingNew) as exc:  # no model or data yet, nothing new: skip
        log.warning("skipped: %s", exc)
        return SKIP_EXIT_CODE
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
