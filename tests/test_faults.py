"""Fault injection: bad files, a dead historian, unknown tags, kill -9 mid-write, racing trainings.

Each case does the fault for real and checks that nothing is lost: bad input is quarantined with a
reason, good values are written, values in = values written + values rejected and rows in = rows
written + rows rejected, and bronze never holds a value twice (``assert_bronze_unique`` after every
bad-input case). The counts of every landed-file case are summed and printed at the end of the run
(see conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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
COUNTS = {"files": 0, "rows_in": 0, "rows_written": 0, "rows_rejected": 0, "files_quarantined": 0,
          "values_in": 0, "values_written": 0, "values_rejected": 0}
BRONZE_KEY = ["asset", "tag", "ts", "source"]


def assert_bronze_unique(use_case_id: str = UC) -> pd.DataFrame:
    """The invariant: bronze never holds two rows for one (asset, tag, ts, source). Reads every
    bronze parquet file of the use case, as readers see them, and returns their rows."""
    paths = sorted((get_settings().bronze_root / use_case_id).glob("date=*/*.parquet"))
    if not paths:
        return pd.DataFrame(columns=[*BRONZE_KEY, "value", "batch"])
    rows = pd.concat([pd.read_parquet(p).assign(file=str(p.relative_to(p.parents[1]))) for p in paths],
                     ignore_index=True)
    twice = rows[rows.duplicated(BRONZE_KEY, keep=False)].sort_values(BRONZE_KEY)
    assert twice.empty, (f"bronze of {use_case_id} holds {len(twice)} rows for "
                         f"{len(twice.drop_duplicates(BRONZE_KEY))} (asset, tag, ts, source) keys more than once, "
                         f"e.g.\n{twice.head(6).to_string()}")
    return rows


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


PI_STATES = ["Bad", "I/O Timeout", "Scan Timeout", "Inp OutRange", "Calc Failed"]
V = 19  # values per row: the analyzer tags XMEAS_23..41 of the landed file
# (name, how the file is damaged, expected status, reason fragment, (rows written, rows rejected),
#  (values written, values rejected)); a quarantined file counts every row and value rejected.
CASES = [
    ("truncated parquet", lambda p, f: p.write_bytes(p.read_bytes()[:1000]), "quarantined", "unreadable", (0, 0), (0, 0)),
    ("empty file", lambda p, f: p.write_bytes(b""), "quarantined", "unreadable", (0, 0), (0, 0)),
    ("no rows", lambda p, f: f.iloc[:0].to_parquet(p), "quarantined", "row_count", (0, 0), (0, 0)),
    ("missing column", lambda p, f: f.drop(columns=["XMEAS_30"]).to_parquet(p), "quarantined", "columns_to_match_set",
     (0, 480), (0, 480 * (V - 1))),
    ("extra column", lambda p, f: f.assign(XMEAS_99=1.0).to_parquet(p), "quarantined", "columns_to_match_set",
     (0, 480), (0, 480 * (V + 1))),
    ("renamed column", lambda p, f: f.rename(columns={"XMEAS_31": "xmeas_31"}).to_parquet(p), "quarantined",
     "columns_to_match_set", (0, 480), (0, 480 * V)),
    ("wrong type", lambda p, f: f.assign(XMEAS_25=f["XMEAS_25"].astype(str) + " mol%").to_parquet(p), "quarantined",
     "is not numeric", (0, 480), (0, 480 * V)),
    # One bad value rejects that value only: the row's other 18 values are written.
    ("PI digital states", lambda p, f: _with_strings(f, [3, 4, 5, 6, 7], PI_STATES).to_parquet(p), "ingested",
     "1 x digital state 'I/O Timeout' in XMEAS_23", (480, 0), (480 * V - 5, 5)),
    ("NaN and infinities", lambda p, f: f.assign(XMEAS_24=f["XMEAS_24"].where(f.index % 100 != 1, np.nan),
                                                 XMEAS_26=f["XMEAS_26"].where(f.index % 100 != 2, np.inf)).to_parquet(p),
     "ingested", "5 x missing (NaN) in XMEAS_24; 5 x not finite (inf) in XMEAS_26", (480, 0), (480 * V - 10, 10)),
    # An exact copy of a row is rejected whole: none of its values is written a second time.
    ("duplicate rows", lambda p, f: pd.concat([f, f.iloc[:10]]).sort_values("ts", kind="stable").to_parquet(p),
     "ingested", "10 x duplicate row in XMEAS_23", (480, 10), (480 * V, 10 * V)),
    ("out of order", lambda p, f: f.iloc[::-1].to_parquet(p), "quarantined", "increasing", (0, 480), (0, 480 * V)),
    ("duplicate timestamps", lambda p, f: f.assign(ts=f["ts"].where(f.index != 5, f["ts"][4])).to_parquet(p),
     "quarantined", "increasing", (0, 480), (0, 480 * V)),
    ("naive timestamps", lambda p, f: f.assign(ts=f["ts"].dt.tz_localize(None)).to_parquet(p), "quarantined",
     "no time zone", (0, 480), (0, 480 * V)),
]
# What each ingested case's rejected-value records say: (tag, raw text, reason) -> count.
REJECTED = {
    "PI digital states": {("XMEAS_23", s, f"digital state {s!r}"): 1 for s in PI_STATES},
    "NaN and infinities": {("XMEAS_24", "nan", "missing (NaN)"): 5, ("XMEAS_26", "inf", "not finite (inf)"): 5},
}


@pytest.mark.parametrize(("name", "damage", "status", "reason", "rows", "values"), CASES, ids=[c[0] for c in CASES])
def test_bad_landed_files(day, name, damage, status, reason, rows, values):
    use_case, _, path, frame = day
    damage(path, frame)
    original = path.read_bytes()
    (item,) = ingest.ingest_landed(use_case, "fault-run")["files"]
    assert item["status"] == status, item
    row = landing.rows_of(UC)[-1]
    assert row["status"] == status
    assert (row["rows_written"], row["rows_rejected"]) == rows
    assert (row["values_written"], row["values_rejected"]) == values
    if status == "quarantined":
        kept = get_settings().quarantine_root / UC / path.name
        assert kept.read_bytes() == original, "quarantined files stay untouched"
        assert reason in json.loads(kept.with_name(kept.name + ".reason.json").read_text())["reason"]
        assert not (get_settings().bronze_root / UC).exists(), "nothing of a quarantined file reaches bronze"
    else:
        assert reason in row["reason"]
        records = pd.read_parquet(item["rejected_rows_at"])
        assert list(records.columns) == ingest.REJECTED_COLUMNS
        assert len(records) == values[1] == sum(sum(r.values()) for r in row["rejected_values"].values())
        assert records.groupby("tag")["reason"].value_counts().to_dict() == {
            (tag, why): n for tag, reasons in row["rejected_values"].items() for why, n in reasons.items()}
        if name in REJECTED:
            assert records.groupby(["tag", "raw", "reason"]).size().to_dict() == REJECTED[name]
        # Every good value of the file is in bronze, with its value.
        bronze = assert_bronze_unique()
        assert len(bronze) == values[0]
        # (a duplicate row's values are the first copy's, which is written)
        lost = records[records["reason"] != "duplicate row"]
        rejected_keys = set(zip(lost["tag"], lost["ts"]))
        wide = frame.set_index("ts")
        expected = {(tag, ts): wide.at[ts, tag] for ts in wide.index for tag in wide.columns
                    if (tag, ts) not in rejected_keys}
        assert dict(zip(zip(bronze["tag"], bronze["ts"]), bronze["value"])) == expected
    if row["rows_in"] is not None and row["rows_in"] > 0:
        assert row["rows_in"] == (row["rows_written"] or 0) + row["rows_rejected"]
        assert row["values_in"] == (row["values_written"] or 0) + row["values_rejected"]
    assert_bronze_unique()
    COUNTS["files"] += 1
    COUNTS["files_quarantined"] += status == "quarantined"
    for key in ("rows_in", "rows_written", "rows_rejected", "values_in", "values_written", "values_rejected"):
        COUNTS[key] += row[key] or 0


def test_a_file_far_larger_than_usual_is_quarantined(day):
    use_case, _, path, frame = day
    small = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"max_rows": 100})})
    (item,) = ingest.ingest_landed(small, "fault-run")["files"]
    assert item["status"] == "quarantined" and "row_count" in item["reason"]
    assert_bronze_unique()


def test_naive_timestamps_are_accepted_when_the_zone_is_configured(day):
    use_case, episode, path, frame = day
    local = frame.assign(ts=frame["ts"].dt.tz_convert("Europe/Berlin").dt.tz_localize(None))
    local.to_parquet(path)
    berlin = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"naive_timezone": "Europe/Berlin"})})
    (item,) = ingest.ingest_landed(berlin, "fault-run")["files"]
    assert item["status"] == "ingested" and item["rows_written"] == 480
    assert list(item["days"]) == [str(episode.day)]  # converted back to the same UTC day
    assert len(assert_bronze_unique()) == 480 * V


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
    assert len(assert_bronze_unique()) == 480 * V


def test_the_same_bytes_under_a_new_name_are_a_recorded_no_op(day):
    """NiFi re-sends a file after a timeout under a new name: the bytes decide, not the name."""
    use_case, episode, path, frame = day
    sent = path.read_bytes()
    (first,) = ingest.ingest_landed(use_case, "run-1")["files"]
    assert first["status"] == "ingested"
    root = get_settings().bronze_root / UC
    before = {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}
    resent = landing.landing_dir(use_case.landing.folder) / f"resent-{path.name}"
    hidden = resent.with_name("." + resent.name)
    hidden.write_bytes(sent)  # as NiFi's PutFile: a dot-file, then the rename
    hidden.rename(resent)
    (item,) = ingest.ingest_landed(use_case, "run-2")["files"]
    assert (item["status"], item["duplicate_of"]) == ("duplicate", path.name)
    assert {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.parquet"))} == before
    assert len(assert_bronze_unique()) == 480 * V
    ledger = landing.rows_of(UC)
    assert [(r["name"], r["status"], r["duplicate_of"]) for r in ledger] == [
        (path.name, "ingested", None), (resent.name, "duplicate", path.name)]
    assert ledger[1]["sha256"] == ledger[0]["sha256"] and ledger[1]["dag_run_id"] == "run-2"
    # The result (the line `cli ingest` prints) names the copy's own ledger row, and the original's beside it.
    assert (item["ledger_id"], item["duplicate_of_ledger_id"]) == (ledger[1]["id"], ledger[0]["id"])
    assert ledger[1]["id"] != ledger[0]["id"]
    assert not resent.exists()
    archived = get_settings().archive_root / UC / "duplicates" / resent.name
    assert archived.read_bytes() == sent and ledger[1]["stored_at"] == str(archived)
    # Once more, under a third name and under the first name again: still the first file's duplicate.
    for name in (f"again-{path.name}", path.name):
        (landing.landing_dir(use_case.landing.folder) / name).write_bytes(sent)
        (item,) = ingest.ingest_landed(use_case, "run-3")["files"]
        assert (item["status"], item["duplicate_of"]) == ("duplicate", path.name)
    assert [r["status"] for r in landing.rows_of(UC)] == ["ingested", "duplicate", "duplicate", "duplicate"]
    assert {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.parquet"))} == before


def test_overlapping_values_of_another_file_are_not_written_twice(day):
    """A file under a new name with other bytes (a re-export) at times bronze holds already: the
    same value is rejected, named after the file that brought it; a differing one is a conflict
    (kept beside bronze, see tests/test_corrections.py); the new ones are written."""
    use_case, episode, path, frame = day
    ingest.ingest_landed(use_case, "run-1")
    later = frame.assign(ts=frame["ts"] + pd.Timedelta(hours=12))  # its first half at the first file's times
    replay.land_file(use_case, later, f"reexport-{path.name}")
    (item,) = ingest.ingest_landed(use_case, "run-2")["files"]
    assert item["status"] == "ingested"
    overlap = 240  # rows of the re-export at times the first file covers (3-minute samples, 12 h)
    assert (item["values_written"], item["values_rejected"]) == ((480 - overlap) * V, overlap * V)
    assert (item["rows_written"], item["rows_rejected"]) == (480 - overlap, overlap)
    tags = [t for t in frame.columns if t != "ts"]
    # The re-export's first half holds the first file's second-half values at the first half's times.
    ordered = frame.sort_values("ts").reset_index(drop=True)
    differ = {t: int((ordered[t].to_numpy()[:overlap] != ordered[t].to_numpy()[overlap:2 * overlap]).sum())
              for t in tags}
    expected = {t: {k: n for k, n in ((f"already in bronze from {path.name!r}", overlap - differ[t]),
                                      (ingest.conflict_reason(path.name), differ[t])) if n} for t in tags}
    assert item["rejected_values"] == expected
    assert item.get("conflicts", 0) == sum(differ.values()) > 0
    bronze = assert_bronze_unique()
    assert len(bronze) == 480 * V + (480 - overlap) * V
    first_day = bronze[bronze["batch"] == path.name]
    assert len(first_day) == 480 * V  # the first file's values stay as they were


def test_unreachable_historian_fails_clearly_and_writes_nothing(day, monkeypatch):
    use_case, episode, *_ = day
    monkeypatch.setenv("PLANTOPS_HISTORIAN_URL", "postgresql+psycopg2://plantops@127.0.0.1:1/historian?connect_timeout=2")
    with pytest.raises(ingest.HistorianUnavailable, match="historian unreachable"):
        ingest.ingest_historian(use_case, episode.start, episode.start + timedelta(days=1), "fault-run")
    assert not (get_settings().bronze_root / UC).exists()
    assert assert_bronze_unique().empty


def test_tags_missing_from_the_historian_are_named(day):
    use_case, episode, *_ = day
    tags = list(use_case.tags)
    tags[0] = tags[0].model_copy(update={"name": "XMEAS_1_TYPO"})
    broken = use_case.model_copy(update={"tags": tuple(tags)})
    with pytest.raises(ValueError, match=r"tags not in the historian .*XMEAS_1_TYPO"):
        ingest.ingest_historian(broken, episode.start, episode.start + timedelta(days=1), "fault-run")
    assert assert_bronze_unique().empty


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


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """One Spark Connect server for the kill tests over Connect (started only when they run)."""
    from plantops.environments import sparkconnect

    folder = tmp_path_factory.mktemp("home") / "spark-connect"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield sparkconnect.start(port, folder=folder)
    sparkconnect.stop(folder)


def _feature_job_command(use_case, start: str, end: str, remote: str | None = None
                         ) -> tuple[list[str], dict[str, str]]:
    """The spark-submit command line and environment of <uc>__features' build_features task for
    [start, end), built by the Spark provider's hook from the task's own settings. With ``remote``
    the client the task runs over Spark Connect instead: the same application and arguments in a
    Python process of its own (in Airflow it is the task process), ``--remote`` appended."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from plantops.orchestration.dagfactory import assets, build_features

    task = build_features(use_case, assets(use_case)).get_task("build_features")
    # plan_window's XCom, rendered: the only templated argument is --ranges.
    args = [f"{start}:{end}" if "['ranges']" in arg else arg for arg in task.application_args]
    if remote:
        return ([sys.executable, task.application, *args, "--remote", remote],
                {**os.environ, **(task.env_vars or {})})
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
    assert pipeline.latest_feature_day(get_use_case(UC)) == max(frame["date"])
    return {day: rows.drop(columns="date").reset_index(drop=True) for day, rows in frame.groupby("date")}


@pytest.mark.parametrize("engine", ["spark-submit", "spark-connect"])
def test_kill_9_of_the_feature_job_leaves_every_day_complete_old_or_new(plantops_home, engine, request):
    """The real feature job, as the DAG submits it, killed at two points: while Spark writes, and as
    soon as the first day folder changes (the commit). After each kill every
    day a reader sees is the complete old day or the complete new one; a rerun then equals the
    uninterrupted run.

    Over Spark Connect the kill hits the client only: the server's write of the dead client goes
    on as an orphan in its staging folder (it can never publish; publishing is the client's step)
    until the next run's sweep interrupts it, and the server stays up for that next run."""
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
    server = request.getfixturevalue("connect_server") if engine == "spark-connect" else None
    job = _feature_job_command(use_case, start, end, server.url if server else None)
    log_path = plantops_home / f"{engine}.log"

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
    if server is not None:
        from plantops.environments import sparkconnect

        assert sparkconnect.status(server.folder).pid == server.pid, "the kills of clients reached the server"
    print(json.dumps({"engine": engine, "reference_seconds": round(seconds, 1), "first_write": round(marks["write"], 1),
                      **outcomes}, indent=1))


def test_kill_9_of_the_spark_connect_server_fails_the_job_clearly_and_a_restart_serves(plantops_home, connect_server):
    """The server JVM SIGKILLed while a client writes: the job fails within seconds naming the server
    (the task would then be retried), every day stays complete; the next start() on the same folder
    starts a fresh server and the rerun publishes every day."""
    from plantops.environments import sparkconnect

    use_case = get_use_case(UC)
    episodes = replay.HISTORY[-2:]
    for episode in episodes:
        replay.replay_episode(use_case, episode)
    start, end = str(episodes[0].day), str(episodes[-1].day + timedelta(days=1))
    pipeline_ingest(start, end)
    root = get_settings().features_root / UC
    job = _feature_job_command(use_case, start, end, connect_server.url)
    log_path = plantops_home / "client.log"
    killed: dict[str, float] = {}

    def kill_server_when_writing(elapsed: float) -> bool:
        if not killed and _staged_files(root):
            os.killpg(connect_server.pid, signal.SIGKILL)
            killed["at"] = elapsed
        return False

    code, seconds = _run_job(job, log_path, kill_server_when_writing, timeout=120)
    # Failed on its own, before the 120 s guard (the client's retries are capped), naming the server.
    assert killed and code == 1, (killed, code, seconds, log_path.read_text()[-3000:])
    assert f"lost the Spark Connect server at {connect_server.url}" in log_path.read_text()
    assert not list(root.glob("date=*")), "a day was published although the server died mid-write"
    assert sparkconnect.status(connect_server.folder) is None  # the stale pid file is gone

    restarted = sparkconnect.start(connect_server.port, folder=connect_server.folder)
    assert not restarted.reused and restarted.pid != connect_server.pid
    code, _ = _run_job(job, log_path, timeout=300)
    assert code == 0, log_path.read_text()[-3000:]
    assert sorted(_visible_days(root)) == [str(e.day) for e in episodes]
    assert not [p.name for p in root.iterdir() if p.name.startswith(".staging-")]


def pipeline_ingest(start: str, end: str) -> None:
    from plantops.stages import pipeline

    pipeline.ingest(UC, start, end, "kill-test")
