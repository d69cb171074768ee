"""Process-engineer feedback on alarms and explanations, stored durably and turned into labels.

An engineer who disagrees with the model says so through ``<uc>__feedback`` (a manual-trigger
DAG): a time window, a kind, optionally the tag concerned, a comment (required) and who they are.

| kind                 | means                                           | label written for training |
|----------------------|-------------------------------------------------|----------------------------|
| ``false_alarm``      | the plant was fine, the model alarmed           | ``normal``                 |
| ``known_plant_change`` | a deliberate change, the new state is normal  | ``normal``                 |
| ``confirmed_fault``  | the alarm was right                             | ``fault_feedback``         |
| ``wrong_tag``        | the explanation named the wrong tag (``tag``)   | none (explanation only)    |

Each submission is one row of the ``feedback`` table in the state database (next to
``decisions``, SQLAlchemy Core, portable types) keyed by (use_case, dag_run_id), so a retried task
replaces its row; its label period goes to the historian's ``labels`` table (source
``feedback``), where training reads it (normal rows become held-out normal data the next
challenger must not alarm on; fault rows count in its detection rate) and so does the monitor's
delayed-label performance check. The next monitor run lists every feedback received since the
previous monitor run in its decision record and approval body.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

KINDS = ("false_alarm", "wrong_tag", "known_plant_change", "confirmed_fault")
LABELS: dict[str, str | None] = {
    "false_alarm": "normal",
    "known_plant_change": "normal",
    "confirmed_fault": "fault_feedback",
    "wrong_tag": None,
}
LABEL_SOURCE = "feedback"

metadata = sa.MetaData()

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ts_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ts_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tag", sa.String(64)),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("author", sa.String(64), nullable=False),
    sa.Column("label", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # What the engineer was looking at: alarms in the window, model versions, their top tags.
    sa.Column("context", sa.Text, nullable=False),
    sa.UniqueConstraint("use_case", "dag_run_id", name="uq_feedback_run"),
    sa.Index("ix_feedback_use_case_created", "use_case", "created_at"),
)

def _engine(url: str | None = None) -> sa.engine.Engine:
    """The state DB's engine (shared cache), with the feedback table created once."""
    from plantops import db
    from plantops.stages import decisions

    return db.engine(url or decisions._state_url(), metadata)


def _utc(value: str | datetime) -> datetime:
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _validate(use_case: Any, ts_start: str | datetime, ts_end: str | datetime, kind: str, comment: str,
              author: str | None, tag: str | None) -> tuple[datetime, datetime, str | None]:
    if kind not in KINDS:
        raise ValueError(f"feedback kind must be one of {KINDS}, got {kind!r}")
    if not (comment or "").strip():
        raise ValueError("feedback needs a comment: say what was wrong (or right) and why")
    if not (author or "").strip():
        raise ValueError("feedback needs an author")
    try:
        start, end = _utc(ts_start), _utc(ts_end)
    except ValueError as exc:
        raise ValueError(f"ts_start and ts_end must be ISO timestamps: {exc}") from None
    if end <= start:
        raise ValueError(f"ts_end {end.isoformat()} must be after ts_start {start.isoformat()}")
    tag = (tag or "").strip() or None
    if tag is not None and tag not in use_case.tag_names:
        raise ValueError(f"tag {tag!r} is not a tag of use case {use_case.id}")
    if kind == "wrong_tag" and tag is None:
        raise ValueError("wrong_tag feedback needs the tag the explanation got wrong")
    return start, end, tag


def _window_context(asset: str, start: datetime, end: datetime, conn: str | None) -> dict[str, Any]:
    from plantops.sources import historian
    from plantops.stages.explain import alarm_tag_summary

    predictions = historian.read_predictions(asset, start, end, conn_id=conn)
    if predictions.empty:
        return {"rows": 0, "alarms": 0, "model_versions": [], "alarm_tags": []}
    alarmed = predictions[predictions["alarm"] == 1]
    return {
        "rows": int(len(predictions)),
        "alarms": int(len(alarmed)),
        "model_versions": sorted({str(v) for v in predictions["model_version"]}),
        "alarm_tags": alarm_tag_summary(alarmed["top_tags"]),
    }


def record_feedback(
    use_case_id: str,
    run_id: str,
    ts_start: str | datetime,
    ts_end: str | datetime,
    kind: str,
    comment: str,
    author: str | None,
    tag: str | None = None,
    url: str | None = None,
    asset: str | None = None,
) -> dict[str, Any]:
    """Validate and store one feedback (about ``asset``, default the use case's first): its label period first (historian ``labels``), then the
    ``feedback`` row, then a ``feedback`` decision for the audit trail. A rerun of the same
    ``run_id`` replaces all three. Returns the stored record."""
    from plantops.stages import decisions
    from plantops.sources import historian
    from plantops.config import get_use_case

    use_case = get_use_case(use_case_id)
    start, end, tag = _validate(use_case, ts_start, ts_end, kind, comment, author, tag)
    asset = asset or use_case.assets[0]
    if asset not in use_case.assets:
        raise ValueError(f"asset: expected one of {list(use_case.assets)}, got {asset!r}")
    label = LABELS[kind]
    if label is not None:
        clash = [row for row in historian.read_labels(asset, conn_id=use_case.historian_conn).itertuples(index=False)
                 if row.start_ts == start and row.source != LABEL_SOURCE]
        if clash:
            # Labels are keyed by (asset, start): writing would silently replace the lab's label.
            raise ValueError(f"a {clash[0].source} label {clash[0].label!r} already starts at {start.isoformat()}; "
                             "start the feedback window a second later")
        historian.write_labels([{"asset": asset, "start_ts": start, "end_ts": end, "label": label,
                                 "source": LABEL_SOURCE}], conn_id=use_case.historian_conn)
    context = _window_context(asset, start, end, use_case.historian_conn)
    row = {
        "kind": kind, "ts_start": start, "ts_end": end, "tag": tag, "comment": comment.strip(),
        "author": author.strip(), "label": label, "created_at": datetime.now(UTC),
        "context": json.dumps(context, allow_nan=False),
    }
    key = (feedback.c.use_case == use_case_id) & (feedback.c.dag_run_id == run_id)
    with _engine(url).begin() as conn:
        row_id = conn.execute(sa.select(feedback.c.id).where(key)).scalar_one_or_none()
        if row_id is None:
            row_id = conn.execute(sa.insert(feedback).values(use_case=use_case_id, dag_run_id=run_id, **row)
                                  ).inserted_primary_key[0]
        else:
            conn.execute(sa.update(feedback).where(feedback.c.id == row_id).values(**row))
    out = _record({**row, "id": row_id, "use_case": use_case_id, "dag_run_id": run_id})
    reason = f"{kind} by {out['author']} for {out['ts_start']}..{out['ts_end']}" + (f" on {tag}" if tag else "")
    decisions.record(use_case_id, run_id, "feedback", kind, reason, out, url=url)
    log.info("feedback %s on %s: %s (%d alarms in the window); label %s", row_id, use_case_id, reason,
             context["alarms"], label or "none")
    return out


def _record(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("ts_start", "ts_end", "created_at"):
        stamp = out[key]
        out[key] = (stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp).isoformat()
    out["id"] = int(out["id"])
    out["context"] = json.loads(out["context"]) if isinstance(out["context"], str) else out["context"]
    return out


def received(use_case_id: str, after: datetime | None = None, url: str | None = None) -> list[dict[str, Any]]:
    """Feedback of a use case stored after ``after`` (all when None), oldest first."""
    query = sa.select(feedback).where(feedback.c.use_case == use_case_id)
    if after is not None:
        query = query.where(feedback.c.created_at > after)
    with _engine(url).connect() as conn:
        return [_record(r) for r in conn.execute(query.order_by(feedback.c.created_at, feedback.c.id)).mappings()]


def since_last_monitor(use_case_id: str, run_id: str, url: str | None = None) -> list[dict[str, Any]]:
    """Feedback received since the previous monitor run of the use case (a rerun of ``run_id``
    itself does not count as the previous run)."""
    from plantops.stages import decisions

    previous = [r for r in decisions.latest(use_case_id, kind="monitor", limit=2, url=url) if r["dag_run_id"] != run_id]
    return received(use_case_id, previous[0]["created_at"] if previous else None, url=url)
