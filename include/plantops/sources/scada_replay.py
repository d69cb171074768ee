"""Replay the La Haute Borne SCADA (four ENGIE wind turbines, :mod:`plantops.sources.scada`) into
the historian, per turbine, with a per-value quality (missing, stuck, out of range: bad; icing,
stopped, curtailment: questionable), as a historian would hold it.

The demo and the end-to-end tests replay a slice of the two years (2014-04-15..06-16: 60 days of history
and three windy live days); ``replay_range`` takes any range, the whole set included
(``bench/wind_nbm.py`` evaluates the model on both years). Live days can carry
an injected underperformance (a pitch misalignment losing a share of the power of one turbine: the
real data has no labelled fault) and a recorded plant event (a pitch-system maintenance on one
turbine), which is how the fleet's monitor sees a stale model on one turbine and a plant change on
another while the rest carry on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from plantops.config import UseCase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindDay:
    day: date
    # (turbine, share of power lost) of an injected underperformance, from ``loss_from`` (HH:MM).
    loss: tuple[str, float] | None = None
    loss_from: str = "00:00"
    # (turbine, HH:MM, kind, description) of an operator's intervention.
    event: tuple[str, str, str, str] | None = None

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=timezone.utc)


HISTORY = (date(2014, 4, 15), date(2014, 6, 14))  # [start, end): 60 days x 4 turbines
LIVE: dict[str, WindDay] = {
    "normal": WindDay(date(2014, 6, 14)),
    "underperformance": WindDay(date(2014, 6, 15), loss=("R80736", 0.2)),
    "maintenance": WindDay(
        date(2014, 6, 16), loss=("R80711", 0.2),
        event=("R80711", "00:00", "maintenance",
               "Pitch system of blade 2 serviced on the night shift; encoder replaced and re-zeroed"),
    ),
}


def replay_range(use_case: UseCase, start: datetime | date, end: datetime | date,
                 loss: tuple[str, float] | None = None, loss_from: datetime | None = None) -> dict:
    """Write [start, end) of every turbine of the use case into the historian; returns counts."""
    import pandas as pd

    from plantops.sources import historian, scada

    frame = scada.load(list(use_case.assets), pd.Timestamp(start, tz="UTC") if not isinstance(start, datetime) else start,
                       pd.Timestamp(end, tz="UTC") if not isinstance(end, datetime) else end)
    if loss is not None:
        turbine, share = loss
        hit = frame["asset"] == turbine
        if loss_from is not None:
            hit &= frame["ts"] >= pd.Timestamp(loss_from)
        # Only while producing: a misaligned blade costs power, not wind.
        hit &= frame["P_avg"] > 50
        frame.loc[hit, "P_avg"] = frame.loc[hit, "P_avg"] * (1 - share)
    tags = [t for t in use_case.tag_names if t in frame.columns]
    long = scada.long_rows(frame[["asset", "ts", *tags]])
    written = historian.write_tag_values(long, conn_id=use_case.historian_conn)
    quality = long["quality"].value_counts().to_dict()
    log.info("replayed %d SCADA values (%s) of %s in [%s, %s)", written, quality, list(use_case.assets), start, end)
    return {"values": int(len(long)), "quality": {str(k): int(v) for k, v in quality.items()}}


def replay_history(use_case: UseCase) -> dict:
    return replay_range(use_case, *HISTORY)


def replay_day(use_case: UseCase, day: WindDay) -> dict:
    """One live plant day of the fleet, with its injected loss and plant event."""
    from plantops.sources import historian

    loss_from = None
    if day.loss:
        hh, mm = (int(x) for x in day.loss_from.split(":"))
        loss_from = day.start + timedelta(hours=hh, minutes=mm)
    out = replay_range(use_case, day.day, day.day + timedelta(days=1), day.loss, loss_from)
    if day.event:
        turbine, at, kind, description = day.event
        hh, mm = (int(x) for x in at.split(":"))
        historian.record_plant_event(turbine, day.start + timedelta(hours=hh, minutes=mm), kind, description,
                                     author="operator", conn_id=use_case.historian_conn)
    return {"day": str(day.day), **out}
