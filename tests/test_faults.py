"""Fault injection: bad files, a dead historian, unknown tags, kill -9 mid-write, racing trainings.

Each case does the fault for real and checks that nothing is lost: bad input is quarantined with a
reason, good rows are written, and rows in = rows written + rows rejected. The counts of every
landed-file case are summed and printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from plantops import ingest, landing, replay
from plantops.config import get_use_case
from plantops.settings import get_settings

UC = "tep_reactor"
COUNTS = {"files": 0, "rows_in": 0, "rows_written": 0, "rows_rejected": 0, "files_quarantined": 0}


@pytest.fixture
def day(plantops_home):
    use_case = get_use_case(UC)
    episode = replay.HISTORY[-1]
    replay.replay_episode(use_case, episode)
    (path,) = landing.landing_dir(use_case.landing.folder).glob("*.parquet")
    return use_case, episode, path, pd.read_parquet(path)


def _with_strings(frame, rows, values):
    """A PI export: the value column is text, with digital states where the sensor failed."""
    out = frame.astype({"XMEAS_23": str})
    for row, value in zip(rows, values):
        out.loc[row, "XMEAS_23"] = value
    return out


# (name, how the file is damaged, expected status, reason fragment, rows written, rows rejected)
CASES = [
    ("truncated parquet", lambda p, f: p.write_bytes(p.read_bytes()[:1000]), "quarantined", "unreadable", 0, 0),
    ("empty file", lambda p, f: p.write_bytes(b""), "quarantined", "unreadable", 0, 0),
    ("no rows", lambda p, f: f.iloc[:0].to_parquet(p), "quarantined", "row_count", 0, 0),
    ("missing column", lambda p, f: f.drop(columns=["XMEAS_30"]).to_parquet(p), "quarantined", "columns_to_match_set", 0, 480),
    ("extra column", lambda p, f: f.assign(XMEAS_99=1.0).to_parquet(p), "quarantined", "columns_to_match_set", 0, 480),
    ("renamed column", lambda p, f: f.rename(columns={"XMEAS_31": "xmeas_31"}).to_parquet(p), "quarantined",
     "columns_to_match_set", 0, 480),
    ("wrong type", lambda p, f: f.assign(XMEAS_25=f["XMEAS_25"].astype(str) + " mol%").to_parquet(p), "quarantined",
     "is not numeric", 0, 480),
    ("PI digital states", lambda p, f: _with_strings(f, [3, 4, 5, 6, 7],
                                                      ["Bad", "I/O Timeout", "Scan Timeout", "Inp OutRange", "Calc Failed"]
                                                      ).to_parquet(p), "ingested", "digital state 'I/O Timeout'", 475, 5),
    ("NaN and infinities", lambda p, f: f.assign(XMEAS_24=f["XMEAS_24"].where(f.index % 100 != 1, np.nan),
                                                 XMEAS_26=f["XMEAS_26"].where(f.index % 100 != 2, np.inf)).to_parquet(p),
     "ingested", "", 470, 10),
    ("duplicate rows", lambda p, f: pd.concat([f, f.iloc[:10]]).sort_values("ts", kind="stable").to_parquet(p),
     "ingested", "duplicate row", 480, 10),
    ("out of order", lambda p, f: f.iloc[::-1].to_parquet(p), "quarantined", "increasing", 0, 480),
    ("duplicate timestamps", lambda p, f: f.assign(ts=f["ts"].where(f.index != 5, f["ts"][4])).to_parquet(p),
     "quarantined", "increasing", 0, 480),
    ("naive timestamps", lambda p, f: f.assign(ts=f["ts"].dt.tz_localize(None)).to_parquet(p), "quarantined",
     "no time zone", 0, 480),
]


@pytest.mark.parametrize(("name", "damage", "status", "reason", "written", "rejected"), CASES, ids=[c[0] for c in CASES])
def test_bad_landed_files(day, name, damage, status, reason, written, rejected):
    use_case, _, path, frame = day
    damage(path, frame)
    original = path.read_bytes()
    (item,) = ingest.ingest_landed(use_case, "fault-run")["files"]
    assert item["status"] == status, item
    row = landing.rows_of(UC)[-1]
    assert row["status"] == status
    if status == "quarantined":
        kept = get_settings().quarantine_root / UC / path.name
        assert kept.read_bytes() == original, "quarantined files stay untouched"
        assert reason in json.loads(kept.with_name(kept.name + ".reason.json").read_text())["reason"]
    else:
        assert reason in (row["reason"] if name != "NaN and infinities" else "")
        assert (row["rows_written"], row["rows_rejected"]) == (written, rejected)
        if rejected:
            assert len(pd.read_parquet(item["rejected_rows_at"])) == rejected
    if row["rows_in"] is not None and row["rows_in"] > 0:
        assert row["rows_in"] == (row["rows_written"] or 0) + row["rows_rejected"]
    COUNTS["files"] += 1
    COUNTS["files_quarantined"] += status == "quarantined"
    for key in ("rows_in", "rows_written", "rows_rejected"):
        COUNTS[key] += row[key] or 0


def test_a_file_far_larger_than_usual_is_quarantined(day):
    use_case, _, path, frame = day
    small = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"max_rows": 100})})
    (item,) = ingest.ingest_landed(small, "fault-run")["files"]
    assert item["status"] == "quarantined" and "row_count" in item["reason"]


def test_naive_timestamps_are_accepted_when_the_zone_is_configured(day):
    use_case, episode, path, frame = day
    local = frame.assign(ts=frame["ts"].dt.tz_convert("Europe/Berlin").dt.tz_localize(None))
    local.to_parquet(path)
    berlin = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"naive_timezone": "Europe/Berlin"})})
    (item,) = ingest.ingest_landed(berlin, "fault-run")["files"]
    assert item["status"] == "ingested" and item["rows_written"] == 480
    assert list(item["days"]) == [str(episode.day)]  # converted back to the same UTC day


def test_a_corrected_file_supersedes_the_earlier_one_visibly(day):
    use_case, episode, path, frame = day
    ingest.ingest_landed(use_case, "run-1")
    corrected = frame.assign(XMEAS_23=frame["XMEAS_23"] + 0.01)
    replay.land_file(use_case, corrected, path.name)
    (item,) = ingest.ingest_landed(use_case, "run-2")["files"]
    assert item["status"] == "ingested"
    assert [r["status"] for r in landing.rows_of(UC)] == ["superseded", "ingested"]
    bronze = pd.read_parquet(get_settings().bronze_root / UC / f"date={episode.day}" / f"landing-{path.stem}.parquet")
    assert len(bronze) == 480 * 19  # replaced, not added
    assert np.isclose(bronze[bronze.tag == "XMEAS_23"]["value"].mean(), corrected["XMEAS_23"].mean())


def test_unreachable_historian_fails_clearly_and_writes_nothing(day, monkeypatch):
    use_case, episode, *_ = day
    monkeypatch.setenv("PLANTOPS_HISTORIAN_URL", "postgresql+psycopg2://plantops@127.0.0.1:1/historian?connect_timeout=2")
    with pytest.raises(ingest.HistorianUnavailable, match="historian unreachable"):
        ingest.ingest_historian(use_case, episode.start, episode.start + timedelta(days=1), "fault-run")
    assert not (get_settings().bronze_root / UC).exists()


def test_tags_missing_from_the_historian_are_named(day):
    use_case, episode, *_ = day
    tags = list(use_case.tags)
    tags[0] = tags[0].model_copy(update={"name": "XMEAS_1_TYPO"})
    broken = use_case.model_copy(update={"tags": tuple(tags)})
    with pytest.raises(ValueError, match=r"tags not in the historian .*XMEAS_1_TYPO"):
        ingest.ingest_historian(broken, episode.start, episode.start + timedelta(days=1), "fault-run")


WRITER = """
import sys, numpy as np, pandas as pd
from pathlib import Path
from plantops.storage import atomic_write_parquet
frame = pd.DataFrame({"value": np.random.default_rng(0).random(30_000_000)})
print("writing", flush=True)
atomic_write_parquet(frame, Path(sys.argv[1]))
"""


def test_kill_9_mid_write_leaves_no_visible_partial_file(tmp_path):
    target = tmp_path / "date=2026-03-24" / "historian.parquet"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    assert list(target.parent.glob("*.parquet")) == []  # readers glob *.parquet; temp files are hidden
    from plantops.storage import read_bronze

    assert read_bronze(tmp_path, "", "2026-03-24", "2026-03-25").empty


TRAINER = """
import json, os, sys
import pandas as pd
from plantops.config import get_use_case
from plantops.training import train_and_register

data = pd.read_pickle(os.path.join(os.environ["PLANTOPS_HOME"], "train-input.pkl"))
result = train_and_register(get_use_case("tep_reactor"), data["features"], data["labels"], data["end"],
                            run_tags={"airflow_run_id": sys.argv[1]})
print(json.dumps({"version": result["version"], "promoted": result["promoted"]}))
"""


def test_two_trainings_at_once_promote_only_one(plantops_home):
    from plantops import historian, registry
    from plantops.features import wide_features_pandas
    from plantops.storage import read_bronze

    use_case = get_use_case(UC)
    for episode in replay.HISTORY[-6:]:  # three fault days, three normal days
        replay.replay_episode(use_case, episode)
    start, end = replay.HISTORY[-6].start, replay.HISTORY[-1].start + timedelta(days=1)
    ingest.ingest_historian(use_case, start, end, "r")
    ingest.ingest_landed(use_case, "r")
    long = read_bronze(get_settings().bronze_root, UC, str(replay.HISTORY[-6].day), "2099-01-01")
    features = wide_features_pandas(long, list(use_case.tag_names), use_case.features.bucket_seconds,
                                    use_case.features.rolling_buckets)
    pd.to_pickle({"features": features, "labels": historian.read_labels(UC), "end": end},
                 plantops_home / "train-input.pkl")
    # The tracking store exists before the race (creating it is a one-off migration, not the point here).
    registry.configure().search_experiments()
    # Two real processes, started together, each training and deciding on promotion.
    procs = [subprocess.Popen([sys.executable, "-c", TRAINER, tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    parsed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    results = [(tag, r["version"], r["promoted"]) for tag, r in zip(("a", "b"), parsed)]
    assert sorted(p for _, _, p in results) == [False, True], results
    winner = next(v for _, v, p in results if p)
    assert registry.champion(UC)[0] == winner


def test_unreachable_mlflow_fails_scoring_clearly_and_keeps_predictions(plantops_home, monkeypatch):
    from plantops import historian, pipeline

    use_case = get_use_case(UC)
    frame = pd.DataFrame({"asset": UC, "ts": pd.date_range("2026-03-24", periods=3, freq="3min", tz="UTC"),
                          "model_version": "1", "score": 0.5, "threshold": 1.0, "alarm": 0, "top_tags": None})
    historian.write_predictions(frame)
    features = get_settings().features_root / UC / "date=2026-03-24"
    features.mkdir(parents=True)
    pd.DataFrame({"asset": [UC], "ts": [pd.Timestamp("2026-03-24", tz="UTC")]}).to_parquet(features / "part.parquet")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(Exception, match="127.0.0.1:1|Connection refused|Max retries"):
        pipeline.score(UC, "2026-03-24")
    kept = historian.read_predictions(use_case.historian.asset, pd.Timestamp("2026-03-24", tz="UTC"),
                                      pd.Timestamp("2026-03-25", tz="UTC"))
    assert len(kept) == 3 and set(kept["model_version"]) == {"1"}
