"""Replay the Tennessee Eastman runs as plant data with timestamps.

DCS tags (XMEAS_1..22, XMV_1..11) go to the historian; analyzer results (XMEAS_23..41) are landed
as NiFi would land a LIMS export: one parquet file per day, written under a dot-prefixed name and
renamed when complete, with NiFi's provenance attributes in the file's key-value metadata.

The calendar (one TEP run segment per plant day, 480 samples of 3 minutes):

- 2026-03-01 .. 2026-03-21  historical incidents: training fault runs 1..21, labelled by the lab
- 2026-03-22 .. 2026-03-24  normal operation (d00, d00_te), labelled normal
- 2026-03-25                live: TEP fault 1 starts at 08:00; the champion alarms: an upset
                            (operators are told, nothing is retrained)
- 2026-03-26                live: normal operation on a hot day: the cooling-water outlet
                            temperatures (XMEAS_21, XMEAS_22) rise by 3 reference sd until
                            08:00 (an offset added to the normal run's second day). The champion
                            alarms; the engineer labels them false (feedback): a stale model,
                            retrained automatically
- 2026-03-27                live: a slow fault (TEP 13) after a recorded analyzer maintenance at
                            06:00 -> approval (the demo refuses it, with a reason)
- 2026-03-28                live: TEP fault 7 (C header pressure loss) with the operator's recorded
                            setpoint change at 07:30 -> approval; the engineer declares the new
                            state the new normal from 07:30
- 2026-03-29                live: the same new state, its second day (the run's samples 480..959)
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from plantops.sources import tep
from plantops.config import UseCase

log = logging.getLogger(__name__)

SAMPLES_PER_DAY = 480


@dataclass(frozen=True)
class Episode:
    day: date
    fault: int
    test: bool
    offset: int = 0  # first sample of the run used for this day
    label: str | None = None  # what the lab later confirmed; None = not (yet) labelled
    event: tuple[str, str, str] | None = None  # (HH:MM, kind, description) of an operator intervention
    # (tag, offset in the tag's unit) added to the run, ramping in from 00:00 to 08:00 (a third of the day).
    shift: tuple[tuple[str, float], ...] = ()

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=timezone.utc)


HISTORY: tuple[Episode, ...] = tuple(
    Episode(date(2026, 3, 1) + timedelta(days=k - 1), k, False, label=f"fault_{k:02d}") for k in tep.FAULTS
) + (
    Episode(date(2026, 3, 22), 0, False, 0, label="normal"),
    Episode(date(2026, 3, 23), 0, True, 0, label="normal"),
    Episode(date(2026, 3, 24), 0, True, 480, label="normal"),
)

LIVE: dict[str, Episode] = {
    "upset": Episode(date(2026, 3, 25), 1, True, 0),
    # 3 sd of the normal training run: 0.36 degC and 0.75 degC.
    "stale": Episode(date(2026, 3, 26), 0, True, 480, shift=(("XMEAS_21", 0.36), ("XMEAS_22", 0.75))),
    "maintenance": Episode(
        date(2026, 3, 27), 13, True, 0,
        event=("06:00", "maintenance", "Reactor feed analyzer probe replaced and recalibrated"),
    ),
    "plant_change": Episode(
        date(2026, 3, 28), 7, True, 0,
        event=("07:30", "setpoint_change", "Operator raised the C header pressure setpoint after a supplier change"),
    ),
    "new_normal": Episode(date(2026, 3, 29), 7, True, 480),
}


def episode_frame(episode: Episode):
    """The episode's 480 samples as a wide frame: ts plus the 52 TEP tags."""
    import pandas as pd

    data = tep.load_run(episode.fault, episode.test)[episode.offset: episode.offset + SAMPLES_PER_DAY]
    # A copy: the runs are cached, and a shifted episode must not change the cached run in place.
    frame = pd.DataFrame(data.copy(), columns=list(tep.TAGS))
    if episode.shift:
        import numpy as np

        ramp = np.clip(np.arange(len(frame)) / (len(frame) / 3), 0, 1)
        for tag, offset in episode.shift:
            frame[tag] += offset * ramp
    frame.insert(0, "ts", pd.date_range(episode.start, periods=len(frame), freq=f"{tep.SAMPLE_SECONDS}s"))
    return frame


def land_file(use_case: UseCase, frame, name: str, source: str = "LIMS") -> str:
    """Write a file into the landing folder the way NiFi's PutFile does: dot-name, then rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plantops.sources.landing import landing_dir

    folder = landing_dir(use_case.landing.folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"nifi.uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{use_case.id}/{name}")).encode(),
        b"nifi.filename": name.encode(),
        b"nifi.source.system": source.encode(),
        b"nifi.flow": b"plant-lims-to-landing",
    })
    tmp = folder / f".{name}"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)
    return str(folder / name)


def replay_episode(use_case: UseCase, episode: Episode) -> dict:
    """Write one plant day: historian rows, a landed analyzer file, its label and plant event."""
    from plantops.sources import historian

    frame = episode_frame(episode)
    asset = use_case.assets[0]
    dcs = [t.name for t in use_case.tags_from("historian")]
    long = frame[["ts", *dcs]].melt(id_vars="ts", var_name="tag", value_name="value")
    long = long.assign(asset=asset, quality="good")
    conn = use_case.historian_conn
    historian.write_tag_values(long, conn_id=conn)
    landed = None
    if use_case.landing:
        analyzers = [t.name for t in use_case.tags_from("landing")]
        landed = land_file(use_case, frame[["ts", *analyzers]], f"{use_case.id}_analyzers_{episode.day:%Y%m%d}.parquet")
    if episode.label:
        historian.write_labels([{
            "asset": asset, "start_ts": episode.start, "end_ts": episode.start + timedelta(days=1),
            "label": episode.label, "source": "lab",
        }], conn_id=conn)
    if episode.event:
        hh, mm = (int(x) for x in episode.event[0].split(":"))
        historian.record_plant_event(asset, episode.start + timedelta(hours=hh, minutes=mm), episode.event[1],
                                     episode.event[2], author="operator", conn_id=conn)
    log.info("replayed %s (TEP run %02d%s) into %s", episode.day, episode.fault, "_te" if episode.test else "", asset)
    return {"day": str(episode.day), "fault": episode.fault, "rows": len(long), "landed": landed}


def replay_history(use_case: UseCase) -> list[dict]:
    return [replay_episode(use_case, ep) for ep in HISTORY]


def history_range() -> tuple[datetime, datetime]:
    return HISTORY[0].start, HISTORY[-1].start + timedelta(days=1)
