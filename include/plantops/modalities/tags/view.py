"""A tag use case's part of the Plant ML page: the newest scored day of an asset, score, limit and
alarm per row (:mod:`plantops.stages.overview` puts it in the view), and how the page draws it
(:class:`TagsPage`: the alarm tags of a judged day, the score against its limit)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from plantops.modalities.page import Page, e


def latest_scores(asset: str, limit: int = 2000, conn_id: str | None = None) -> dict[str, Any] | None:
    """The newest scored day of an asset: score, limit and alarm per row (the chart's points)."""
    import sqlalchemy as sa

    from plantops.sources import historian

    table = historian.predictions
    newest = historian.newest(table.c.ts, table.c.asset == asset, conn_id)
    if newest is None:
        return None
    with historian.reader(conn_id=conn_id).connect() as conn:
        start = datetime(newest.year, newest.month, newest.day)
        query = (sa.select(table.c.ts, table.c.score, table.c.threshold, table.c.alarm, table.c.model_version)
                 .where(table.c.asset == asset, table.c.ts >= start, table.c.ts < start + timedelta(days=1))
                 .order_by(table.c.ts).limit(limit))
        points = [{"ts": r.ts.isoformat() if hasattr(r.ts, "isoformat") else str(r.ts), "score": float(r.score),
                   "limit": float(r.threshold), "alarm": int(r.alarm)} for r in conn.execute(query)]
        versions = sorted({str(r.model_version) for r in conn.execute(
            sa.select(table.c.model_version).where(table.c.asset == asset, table.c.ts >= start,
                                                   table.c.ts < start + timedelta(days=1)).distinct())})
    return {"day": start.strftime("%Y-%m-%d"), "points": points, "alarms": sum(p["alarm"] for p in points),
            "model_versions": versions}


class TagsPage(Page):
    """The monitor's days name the tags that alarmed most; the charts draw the latest scored day."""

    evidence_headers = ("alarms", "top alarm tags (alarms)")

    def evidence(self, day: dict[str, Any]) -> str:
        return ", ".join(f"{e(t['tag'])} ({e(t['alarms'])})" for t in day["alarm_tags"]) or "&mdash;"

    def chart(self, v: dict[str, Any]) -> str:
        s = v["scores"]
        if not s or not s["points"]:
            return "<p>No predictions yet.</p>"
        return (f"<p class='small'>Score against its limit on {e(s['day'])} (latest scored day; model "
                f"v{e(', '.join(s['model_versions']))}): {s['alarms']} alarms of {len(s['points'])} rows, red dots</p>"
                + score_svg(s))


def score_svg(scores: dict, width: int = 640, height: int = 180, cap: float = 4.0) -> str:
    """The latest scored day: score against its limit, alarms as red dots; scores above ``cap``
    times the limit are drawn at the top (a fault's score can be a hundred times the limit)."""
    points = scores["points"]
    if not points:
        return ""
    limit = max(p["limit"] for p in points) or 1.0
    y_max = min(max(p["score"] for p in points), cap * limit)
    y_max = max(y_max, 1.2 * limit)
    left, bottom, top = 36, 20, 10
    inner_w, inner_h = width - left - 10, height - bottom - top

    def xy(i: int, value: float) -> tuple[float, float]:
        x = left + inner_w * (i / max(1, len(points) - 1))
        return x, top + inner_h * (1 - min(value, y_max) / y_max)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, p["score"]) for i, p in enumerate(points)))
    _, y_limit = xy(0, limit)
    out = [f'<svg role="img" aria-label="score against its limit" width="{width}" height="{height}">',
           f'<polyline points="{line}" fill="none" stroke="#2d3748" stroke-width="1"/>',
           f'<line x1="{left}" x2="{width - 10}" y1="{y_limit:.1f}" y2="{y_limit:.1f}" stroke="#dd6b20" '
           f'stroke-dasharray="4 3"/><text x="2" y="{y_limit + 4:.1f}" font-size="10">limit</text>']
    for i, p in enumerate(points):
        if p["alarm"]:
            x, y = xy(i, p["score"])
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#e53e3e"/>')
    out.append(f'<text x="{left}" y="{height - 5}" font-size="10">{e(points[0]["ts"][11:16])}</text>'
               f'<text x="{width - 10}" y="{height - 5}" font-size="10" text-anchor="end">'
               f'{e(points[-1]["ts"][11:16])}</text></svg>')
    return "".join(out)
