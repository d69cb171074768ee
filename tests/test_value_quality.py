"""Quality per value, as a historian has it: a real PI export is wide (one column per tag, 5-minute
rows) with digital states, NaN, infinities and out-of-range values in some cells. Each bad cell
rejects its own value, with its text and its reason; the rest of its row reaches bronze. The
ledger counts exactly, per tag and per state, and bronze never holds a value twice.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops.config import get_use_case
from plantops.settings import get_settings
from plantops.sources import historian, landing, replay
from plantops.stages import ingest
from plantops.storage import write_bronze
from test_faults import assert_bronze_unique

UC = "tep_reactor"
DAY = pd.Timestamp("2026-03-24", tz="UTC")
ROWS = 288  # one day at 5 minutes


@pytest.fixture
def use_case(plantops_home):
    return get_use_case(UC)


def _export(use_case) -> pd.DataFrame:
    """A clean PI export of the landed tags: every value well inside its range, distinct per cell."""
    tags = use_case.tags_from("landing")
    k = np.arange(ROWS)[:, None]
    lo = np.array([t.min for t in tags])
    hi = np.array([t.max for t in tags])
    values = lo + (hi - lo) * (0.25 + 0.5 * ((k * 7 + np.arange(len(tags))) % 97) / 97)
    frame = pd.DataFrame(values, columns=[t.name for t in tags])
    frame.insert(0, "ts", pd.date_range(DAY, periods=ROWS, freq="5min"))
    return frame


def _damage(use_case, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The export as the interface wrote it, and what each bad cell must become:
    {(row, tag): (raw text, reason)}."""
    tags = {t.name: t for t in use_case.tags_from("landing")}
    names = list(tags)
    out = frame.astype({n: str for n in names[:6]})  # PI writes a tag's column as text when it holds states
    bad: dict[tuple[int, str], tuple[str, str]] = {}

    def put(row: int, tag: str, value, raw: str, reason: str) -> None:
        out.at[row, tag] = value
        bad[row, tag] = (raw, reason)

    def range_of(tag: str) -> str:
        return f"out of range [{tags[tag].min:g}, {tags[tag].max:g}]"

    # Several digital states in one row, the row's other 16 values good.
    for tag, state in zip(names[:3], ["Bad", "Scan Timeout", "I/O Timeout"]):
        put(10, tag, state, state, f"digital state {state!r}")
    # A row with only bad cells: states, NaN, infinities, out of range.
    for i, tag in enumerate(names):
        if i < 6:
            state = ["Inp OutRange", "Calc Failed", "Bad", "Scan Timeout", "I/O Timeout", "Bad"][i]
            put(20, tag, state, state, f"digital state {state!r}")
        elif i % 4 == 0:
            put(20, tag, np.nan, "nan", "missing (NaN)")
        elif i % 4 == 1:
            put(20, tag, np.inf, "inf", "not finite (inf)")
        elif i % 4 == 2:
            put(20, tag, -np.inf, "-inf", "not finite (-inf)")
        else:
            put(20, tag, tags[tag].max + 1.0, repr(tags[tag].max + 1.0), range_of(tag))
    # Scattered: the same state again in other rows, NaN, infinities, out of range on both sides.
    put(30, names[0], "Bad", "Bad", "digital state 'Bad'")
    put(31, names[1], "Bad", "Bad", "digital state 'Bad'")
    put(40, names[2], None, "null", "missing (NaN)")
    put(41, names[3], "", "", "missing (NaN)")  # an empty text cell
    put(50, names[7], np.nan, "nan", "missing (NaN)")
    put(60, names[8], np.inf, "inf", "not finite (inf)")
    put(61, names[9], -np.inf, "-inf", "not finite (-inf)")
    put(70, names[10], tags[names[10]].min - 5.0, repr(tags[names[10]].min - 5.0), range_of(names[10]))
    put(71, names[11], 1e6, "1000000.0", range_of(names[11]))
    put(72, names[4], "1e6", "1e6", range_of(names[4]))  # a number written as text, out of range
    # Good values that look odd: a number as text, and each end of a range (both are inside).
    out.at[80, names[5]] = f"{(tags[names[5]].min + tags[names[5]].max) / 2:.4e}"
    out.at[81, names[12]] = tags[names[12]].min
    out.at[82, names[13]] = tags[names[13]].max
    return out, bad


def _expected_good(frame: pd.DataFrame, damaged: pd.DataFrame, bad: dict) -> dict:
    values = {}
    for row in range(len(damaged)):
        for tag in damaged.columns[1:]:
            if (row, tag) not in bad:
                values[tag, damaged.at[row, "ts"]] = float(damaged.at[row, tag])
    return values


def _bronze_values() -> dict:
    rows = assert_bronze_unique(UC)
    return dict(zip(zip(rows["tag"], rows["ts"]), rows["value"]))


def test_each_bad_cell_rejects_its_value_only(use_case):
    frame = _export(use_case)
    damaged, bad = _damage(use_case, frame)
    replay.land_file(use_case, damaged, "pi_export_20260324.parquet")
    (item,) = ingest.ingest_landed(use_case, "run-1")["files"]
    assert item["status"] == "ingested", item
    n_tags = len(frame.columns) - 1
    assert len(bad) == 3 + n_tags + 10

    # Accounting, per value and per row: only row 20 has no good value left.
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (
        ROWS * n_tags, ROWS * n_tags - len(bad), len(bad))
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (ROWS, ROWS - 1, 1)

    # One record per rejected value: where, its text as it came, its own reason.
    records = pd.read_parquet(item["rejected_rows_at"])
    assert list(records.columns) == ["asset", "tag", "ts", "raw", "reason", "source", "batch"]
    assert set(records["asset"]) == {use_case.historian.asset} and set(records["source"]) == {"landing"}
    assert set(records["batch"]) == {"pi_export_20260324.parquet"}
    got = {(tag, ts): (raw, reason)
           for tag, ts, raw, reason in records[["tag", "ts", "raw", "reason"]].itertuples(index=False)}
    assert len(got) == len(records)
    assert got == {(tag, damaged.at[row, "ts"]): why for (row, tag), why in bad.items()}

    # Every good value reached bronze, unchanged, once; no rejected value did.
    assert _bronze_values() == _expected_good(frame, damaged, bad)

    # The ledger: exact counts per tag and per reason, each state counted as often as the file has it.
    (row,) = landing.rows_of(UC)
    expected = {}
    for (_, tag), (_, reason) in bad.items():
        expected.setdefault(tag, {}).setdefault(reason, 0)
        expected[tag][reason] += 1
    assert row["rejected_values"] == expected == item["rejected_values"]
    states = {}
    for reasons in row["rejected_values"].values():
        for reason, n in reasons.items():
            if reason.startswith("digital state"):
                states[reason] = states.get(reason, 0) + n
    assert states == {"digital state 'Bad'": 5, "digital state 'Scan Timeout'": 2, "digital state 'I/O Timeout'": 2,
                      "digital state 'Inp OutRange'": 1, "digital state 'Calc Failed'": 1}
    assert (row["values_in"], row["values_written"], row["values_rejected"]) == (
        item["values_in"], item["values_written"], item["values_rejected"])
    assert (row["rows_in"], row["rows_written"], row["rows_rejected"]) == (ROWS, ROWS - 1, 1)
    for tag, reasons in expected.items():
        for reason, n in reasons.items():
            assert f"{n} x {reason} in {tag}" in row["reason"]
    # The reason leads with the plain counts; GX's view of the same cells (NaN in the frame it
    # checks) comes after them and shows no list of NaN.
    first_tag = sorted(expected)[0]
    first_reason, first_n = sorted(expected[first_tag].items())[0]
    assert row["reason"].startswith(f"{first_n} x {first_reason} in {first_tag}"), row["reason"]
    assert "[nan" not in row["reason"] and "nan]" not in row["reason"], row["reason"]

    # The monitor's data-quality signal counts exactly these values.
    share = ingest.rejected_share(use_case, DAY.to_pydatetime(), (DAY + timedelta(days=1)).to_pydatetime())
    assert share == len(bad) / (ROWS * n_tags)


def test_a_duplicated_row_with_states_counts_each_state_the_file_holds(use_case):
    frame = _export(use_case)
    damaged, bad = _damage(use_case, frame)
    copy = damaged.iloc[[10]]  # row 10 again, digital states and all: an exact duplicate row
    resent = pd.concat([damaged.iloc[:11], copy, damaged.iloc[11:]], ignore_index=True)
    replay.land_file(use_case, resent, "pi_export_20260324.parquet")
    (item,) = ingest.ingest_landed(use_case, "run-1")["files"]
    n_tags = len(frame.columns) - 1
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (ROWS + 1, ROWS - 1, 2)
    assert item["values_rejected"] == len(bad) + n_tags
    records = pd.read_parquet(item["rejected_rows_at"])
    copies = records[records["ts"] == damaged.at[10, "ts"]]
    assert copies.groupby("reason").size().to_dict() == {
        "digital state 'Bad'": 2, "digital state 'Scan Timeout'": 2, "digital state 'I/O Timeout'": 2,
        "duplicate row": n_tags - 3}
    assert item["rejected_values"][frame.columns[1]]["digital state 'Bad'"] == 3  # rows 10, its copy, 30
    assert _bronze_values() == _expected_good(frame, damaged, bad)


def test_bad_rows_quarantine_keeps_its_whole_file_meaning(use_case):
    frame = _export(use_case)
    damaged, bad = _damage(use_case, frame)
    strict = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"bad_rows": "quarantine"})})
    original = Path(replay.land_file(use_case, damaged, "pi_export_20260324.parquet")).read_bytes()
    (item,) = ingest.ingest_landed(strict, "run-1")["files"]
    assert item["status"] == "quarantined"
    n_tags = len(frame.columns) - 1
    (row,) = landing.rows_of(UC)
    assert (row["values_in"], row["values_written"], row["values_rejected"]) == (ROWS * n_tags, 0, ROWS * n_tags)
    assert (row["rows_in"], row["rows_written"], row["rows_rejected"]) == (ROWS, 0, ROWS)
    first = frame.columns[1]
    assert row["rejected_values"][first] == {"digital state 'Bad'": 2, "digital state 'Inp OutRange'": 1,
                                             "file quarantined": ROWS - 3}
    assert "1 x digital state 'Scan Timeout' in XMEAS_24" in row["reason"]
    assert (get_settings().quarantine_root / UC / "pi_export_20260324.parquet").read_bytes() == original
    assert not (get_settings().bronze_root / UC).exists()
    assert not (get_settings().quarantine_root / UC / "rows").exists()  # the file itself is the record
    # A clean file passes the strict mode.
    replay.land_file(use_case, frame.assign(ts=frame["ts"] + timedelta(days=1)), "pi_export_20260325.parquet")
    (item,) = ingest.ingest_landed(strict, "run-2")["files"]
    assert (item["status"], item["values_written"]) == ("ingested", ROWS * n_tags)


def test_a_resend_under_a_new_name_of_a_quarantined_file_is_its_duplicate(use_case):
    frame = _export(use_case).assign(ts=lambda f: f["ts"].dt.tz_localize(None))  # naive: quarantined
    sent = Path(replay.land_file(use_case, frame, "pi_export_20260324.parquet")).read_bytes()
    (first,) = ingest.ingest_landed(use_case, "run-1")["files"]
    assert first["status"] == "quarantined"
    folder = landing.landing_dir(use_case.landing.folder)
    (folder / "pi_export_20260324_retry.parquet").write_bytes(sent)
    (item,) = ingest.ingest_landed(use_case, "run-2")["files"]
    assert (item["status"], item["duplicate_of"]) == ("duplicate", "pi_export_20260324.parquet")
    assert (get_settings().archive_root / UC / "duplicates" / "pi_export_20260324_retry.parquet").read_bytes() == sent
    # Released unchanged after the engineer named the site's zone: taken again, not a duplicate.
    landing.release(UC, "pi_export_20260324.parquet", use_case.landing.folder)
    local = use_case.model_copy(update={"landing": use_case.landing.model_copy(update={"naive_timezone": "UTC"})})
    (item,) = ingest.ingest_landed(local, "run-3")["files"]
    assert (item["status"], item["values_written"]) == ("ingested", ROWS * (len(frame.columns) - 1))
    assert [(r["status"], r["duplicate_of"]) for r in landing.rows_of(UC)] == [
        ("quarantined", None), ("duplicate", "pi_export_20260324.parquet"), ("released", None), ("ingested", None)]
    assert len(assert_bronze_unique(UC)) == item["values_written"]


def test_historian_rejects_per_value_with_the_same_record_shape(use_case):
    episode = replay.HISTORY[-1]
    replay.replay_episode(use_case, episode)
    start = episode.start
    asset = use_case.historian.asset
    at = [start + timedelta(seconds=s) for s in (60, 80, 100, 120, 140)]  # between two 3-minute samples
    extra = pd.DataFrame({
        "asset": asset, "tag": ["XMEAS_9", "XMEAS_1", "XMEAS_2", "XMEAS_3", "XMEAS_4"], "ts": at,
        "value": [500.0, np.nan, np.nan, np.inf, 0.3], "quality": ["good", "good", "bad", "good", "weird"]})
    historian.write_tag_values(extra)
    result = ingest.ingest_historian(use_case, start, start + timedelta(days=1), "run-1")
    n = 480 * 33 + 5
    assert (result["values_in"], result["values_written"], result["values_rejected"]) == (n, n - 4, 4)
    assert (result["rows_in"], result["rows_written"], result["rows_rejected"]) == (n, n - 4, 4)
    records = pd.read_parquet(result["quarantined"])
    assert list(records.columns) == ingest.REJECTED_COLUMNS
    assert sorted(records[["tag", "raw", "reason"]].values.tolist()) == sorted([
        ["XMEAS_9", "500.0", "out of range [119.1, 121.5]"],
        ["XMEAS_1", "nan", "missing (NaN)"],
        ["XMEAS_3", "inf", "not finite (inf)"],
        ["XMEAS_4", "0.3", "unknown quality 'weird'"],
    ])
    assert set(records["source"]) == {"historian"}
    # A value of bad quality may be missing: it is written, with its quality.
    rows = assert_bronze_unique(UC)
    kept = rows[(rows["tag"] == "XMEAS_2") & (rows["ts"] == at[2])]
    assert kept["quality"].tolist() == ["bad"] and kept["value"].isna().all()
    assert result["rejected_values"] == {"XMEAS_1": {"missing (NaN)": 1}, "XMEAS_3": {"not finite (inf)": 1},
                                         "XMEAS_4": {"unknown quality 'weird'": 1},
                                         "XMEAS_9": {"out of range [119.1, 121.5]": 1}}


OLD_LEDGER = """CREATE TABLE landing_ledger (
    id INTEGER NOT NULL, use_case VARCHAR(64) NOT NULL, name VARCHAR(255) NOT NULL, size INTEGER NOT NULL,
    sha256 VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, rows_in INTEGER, rows_written INTEGER,
    rows_rejected INTEGER, reason TEXT, dag_run_id VARCHAR(255), stored_at TEXT, processed_at DATETIME NOT NULL,
    PRIMARY KEY (id))"""


def test_a_ledger_of_the_previous_version_gains_the_new_columns(use_case):
    """A state DB created before values were counted: the ledger's columns are added in place, its
    rows kept, and a re-send of a file it recorded is still recognised by its bytes."""
    frame = _export(use_case)
    sha = landing.sha256_of(Path(replay.land_file(use_case, frame, "pi_export_20260324.parquet")))
    db = get_settings().state_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute(OLD_LEDGER)
        conn.execute("INSERT INTO landing_ledger (use_case, name, size, sha256, status, rows_in, rows_written, "
                     "rows_rejected, reason, dag_run_id, stored_at, processed_at) VALUES "
                     "(?, 'old_name.parquet', 1, ?, 'ingested', 288, 288, 0, 'ok', 'old-run', 'x', "
                     "'2026-03-24 01:00:00')",
                     (UC, sha))
    (item,) = ingest.ingest_landed(use_case, "run-1")["files"]
    assert (item["status"], item["duplicate_of"]) == ("duplicate", "old_name.parquet")
    with sqlite3.connect(db) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(landing_ledger)")]
    assert columns[-5:] == ["values_in", "values_written", "values_rejected", "rejected_values", "duplicate_of"]
    old, new = landing.rows_of(UC)
    assert (old["name"], old["rows_in"], old["values_in"], old["rejected_values"]) == (
        "old_name.parquet", 288, None, None)
    assert (new["status"], new["duplicate_of"]) == ("duplicate", "old_name.parquet")
    assert not (get_settings().bronze_root / UC).exists()


def test_the_bronze_invariant_check_sees_a_value_held_twice(plantops_home):
    """assert_bronze_unique is what the fault cases rely on: it must fail on a doubled value."""
    ts = pd.date_range(DAY, periods=3, freq="5min")
    rows = pd.DataFrame({"asset": UC, "tag": "XMEAS_23", "ts": ts, "value": 30.0, "quality": "good",
                         "source": "landing", "batch": "a.parquet"})
    root = get_settings().bronze_root
    write_bronze(root, UC, rows, "landing-a")
    write_bronze(root, UC, rows.assign(source="historian"), "historian")  # another source: not a duplicate
    assert len(assert_bronze_unique(UC)) == 6
    write_bronze(root, UC, rows.iloc[1:2].assign(batch="b.parquet"), "landing-b")
    with pytest.raises(AssertionError, match="1 .asset, tag, ts, source. keys more than once"):
        assert_bronze_unique(UC)
