"""A tag use case's part of the Plant ML page (:mod:`plantops.stages.overview`): the newest scored
day of an asset, score, limit and alarm per row."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


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
