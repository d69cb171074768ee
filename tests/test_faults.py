"""Fault injection: bad files, a dead historian, unknown tags, kill -9 mid-write, racing trainings.

Each case does the fault for real and checks that nothing is lost: bad input is quarantined with a
reason, good rows are written, and rows in = rows written + rows rejected. The counts of every
landed-file case are summed and printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from plantops.stages import ingest
from plantops.sources import landing, replay
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
from plantops.stages.training import train_and_register

data = pd.read_pickle(os.path.join(os.environ["PLANTOPS_HOME"], "train-input.pkl"))
result = train_and_register(get_use_case("tep_reactor"), data["features"], data["labels"], data["end"],
                            run_tags={"airflow_run_id": sys.argv[1]})
print(json.dumps({"version": result["version"], "promoted": result["promoted"]}))
"""


def test_two_trainings_at_once_promote_only_one(plantops_home):
    from plantops.sources import historian
    from plantops.stages import registry
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
    from plantops.sources import historian
    from plantops.stages import pipeline

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


def _feature_job_command(use_case, start: str, end: str) -> tuple[list[str], dict[str, str]]:
    """The spark-submit command line and environment of <uc>__features' build_features task for
    [start, end), built by the Spark provider's hook from the task's own settings."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from plantops.orchestration.dagfactory import assets, build_features

    task = build_features(use_case, assets(use_case)).get_task("build_features")
    # plan_window's XCom, rendered: the only templated arguments are --start and --end.
    args = [start if "['start']" in arg else end if "['end']" in arg else arg for arg in task.application_args]
    hook = SparkSubmitHook(conf=dict(task.conf or {}), conn_id=task.conn_id, name=task.name,
                           application_args=args, env_vars=dict(task.env_vars or {}))
    return hook._build_spark_submit_command(task.application), {**os.environ, **(task.env_vars or {})}


def _run_job(job: tuple[list[str], dict[str, str]], log_path, kill_when=None, reader=None,
             timeout: float = 600) -> tuple[int, float]:
    """Run the job in its own process group; SIGKILL the whole group (JVM and Python driver) as soon
    as kill_when(elapsed seconds) is true. A reader looks at the output between polls, without
    pausing while the job writes. Returns the exit code (-9 when killed) and the wall time."""
    began = time.monotonic()
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(job[0], env=job[1], stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when(time.monotonic() - began):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:  # it finished in the meantime
                        pass
                    break
                busy = reader.look() if reader is not None else False
                time.sleep(0 if busy else 0.002)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return proc.returncode, time.monotonic() - began


class _Reader:
    """A reader listing the output folder while a job runs; records the days it found without data."""

    def __init__(self, root, days: list[str]) -> None:
        self.root, self.days, self.missed = root, days, set()

    def look(self) -> bool:
        """True while the job has staged output, i.e. is writing or committing."""
        for day in self.days:
            try:
                names = os.listdir(self.root / f"date={day}")
            except FileNotFoundError:
                names = []
            if not any(n.endswith(".parquet") and not n.startswith((".", "_")) for n in names):
                self.missed.add(day)
        return bool(_staged_files(self.root))


def _staged_files(root) -> list[str]:
    """Parquet files inside the hidden folders a writing job keeps in the output folder."""
    found = []
    for top in root.glob(".*"):
        if top.is_dir():
            found += [os.path.join(d, f) for d, _, files in os.walk(top) for f in files if f.endswith(".parquet")]
    return found


def _day_folders(root) -> dict[str, int]:
    """Each visible day folder's identity (inode): what changes when a job replaces a day."""
    out = {}
    for folder in root.glob("date=*"):
        try:
            out[folder.name] = folder.stat().st_ino
        except FileNotFoundError:
            out[folder.name] = -1
    return out


def _visible_days(root) -> dict[str, pd.DataFrame]:
    """What readers see, per day: the repo's feature reader, checked against a bare pyarrow dataset."""
    import pyarrow.dataset as pads

    from plantops.stages import pipeline

    frame = pipeline.load_features(UC)
    raw = pads.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()
    assert len(raw) == len(frame), "pyarrow.dataset and load_features disagree"
    assert not frame.duplicated(["asset", "ts"]).any(), "duplicated feature rows are visible"
    assert pipeline.latest_feature_day(UC) == max(frame["date"])
    return {day: rows.drop(columns="date").reset_index(drop=True) for day, rows in frame.groupby("date")}


def test_kill_9_of_the_feature_job_leaves_every_day_complete_old_or_new(plantops_home):
    """The real feature job, as the DAG submits it, killed at two points: while Spark writes, and as
    soon as the first day folder changes (the commit). After each kill every
    day a reader sees is the complete old day or the complete new one; a rerun then equals the
    uninterrupted run."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from plantops.stages import pipeline

    use_case = get_use_case(UC)
    episodes = replay.HISTORY[-4:]
    for episode in episodes:
        replay.replay_episode(use_case, episode)
    start, end = str(episodes[0].day), str(episodes[-1].day + timedelta(days=1))
    pipeline.ingest(UC, start, end, "kill-test")
    root = get_settings().features_root / UC
    job = _feature_job_command(use_case, start, end)
    log_path = plantops_home / "spark-submit.log"

    marks: dict[str, float] = {}

    def note_first_write(elapsed: float) -> bool:
        if "write" not in marks and _staged_files(root):
            marks["write"] = elapsed
        return False

    code, seconds = _run_job(job, log_path, note_first_write)
    assert code == 0 and "write" in marks, log_path.read_text()[-3000:]
    new = _visible_days(root)
    days = sorted(new)
    assert days == [str(e.day) for e in episodes]

    # What an earlier build left: the same files with other values, so old and new are told apart.
    old_tree = plantops_home / "features-old"
    shutil.copytree(root, old_tree)
    for path in old_tree.glob("date=*/*.parquet"):
        table = pq.read_table(path, partitioning=None)
        index = table.schema.get_field_index("XMEAS_1")
        pq.write_table(table.set_column(index, "XMEAS_1", pc.add(table["XMEAS_1"], 1000.0)), path)
    for crc in old_tree.glob("date=*/.*.crc"):
        crc.unlink()  # Hadoop's checksums of the files just rewritten
    shutil.rmtree(root)
    shutil.copytree(old_tree, root)
    old = _visible_days(root)
    assert all(not old[d].equals(new[d]) for d in days)

    def restore_old() -> dict[str, int]:
        shutil.rmtree(root)
        shutil.copytree(old_tree, root)
        return _day_folders(root)

    before: dict[str, int] = {}
    kills = {
        "while Spark writes": lambda t: bool(_staged_files(root)),
        "at the first changed day": lambda t: _day_folders(root) != before,
    }
    outcomes = {}
    reader = _Reader(root, days)
    for name, kill_when in kills.items():
        before = restore_old()
        code, _ = _run_job(job, log_path, kill_when, reader)
        staged = _staged_files(root)
        seen = _visible_days(root)
        assert sorted(seen) == days, f"kill {name}: days visible {sorted(seen)}, expected {days}"
        state = {}
        for day in days:
            state[day] = "new" if seen[day].equals(new[day]) else "old" if seen[day].equals(old[day]) else "PARTIAL"
        assert "PARTIAL" not in state.values(), f"kill {name}: {state}"
        outcomes[name] = {"exit": code, "staged_files_left": len(staged), "days": state}
    # The first kill must really land while the job was writing: killed, with its staged output
    # (hidden, unseen by the readers above) left behind.
    writing = outcomes["while Spark writes"]
    assert writing["exit"] == -signal.SIGKILL and writing["staged_files_left"] > 0, outcomes
    assert set(writing["days"].values()) == {"old"}, outcomes

    code, _ = _run_job(job, log_path, reader=reader)
    assert code == 0, log_path.read_text()[-3000:]
    # Also while the jobs ran, not only after the kills: no day was ever gone, not even for an instant.
    assert not reader.missed, f"a reader listing the output during the job found no data for {sorted(reader.missed)}"
    again = _visible_days(root)
    assert all(again[d].equals(new[d]) for d in days), "a rerun after kills differs from the uninterrupted run"
    assert not [p.name for p in root.iterdir() if p.name.startswith((".staging-", ".spark-staging-", "_temporary"))]
    print(json.dumps({"reference_seconds": round(seconds, 1), "first_write": round(marks["write"], 1),
                      **outcomes}, indent=1))
