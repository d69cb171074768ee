"""The formats NiFi lands: parquet, csv and jsonl, wide (a timestamp column and one column per
tag) or long (asset, tag, ts, value[, quality]), as the use case's landing sources describe them.

Every case runs the real ingest on a file written as an export would be, then checks the exact
counts (values in = written + rejected, rows likewise, in the result and the ledger), the text and
reason of each rejected value, the values bronze holds, and that bronze never holds two rows for
one (asset, tag, ts, source).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import without_site

from plantops.config import ConfigError, UseCase, load_use_case
from plantops.settings import get_settings
from plantops.sources import landing
from plantops.stages import ingest
from test_faults import assert_bronze_unique

REPO = Path(__file__).resolve().parents[1]
UC = "tep_reactor"
ASSET = "tep_reactor"
FOLDER = "tep_reactor"
START = pd.Timestamp("2026-03-24", tz="UTC")
ROWS = 12


def _yaml() -> dict:
    return without_site(UC)  # validated below without the loader, so the site's defaults are written in


def _use_case(landing_block: dict, **fields) -> UseCase:
    raw = _yaml()
    raw["landing"] = {"folder": FOLDER, **landing_block}
    raw.update(fields)
    return UseCase.model_validate(raw)


@pytest.fixture
def tags(plantops_home):
    return _use_case({}).tags_from("landing")


def _land(name: str, data: bytes | str, encoding: str = "utf-8") -> Path:
    """As NiFi's PutFile: a dot-file, then the rename."""
    folder = landing.landing_dir(FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{name}"
    hidden.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return hidden.rename(folder / name)


def _ingest(use_case: UseCase, run_id: str = "run-1") -> list[dict]:
    return ingest.ingest_landed(use_case, run_id)["files"]


def _accounted(item: dict) -> dict:
    """The file's counts add up, in the result and in its ledger row; the rejected-value records
    are as many as the rejected values; bronze holds each (asset, tag, ts, source) once."""
    row = [r for r in landing.rows_of(UC) if r["name"] == item["file"]][-1]
    assert row["status"] == item["status"]
    for counts in (item, row):
        assert counts["values_in"] == counts["values_written"] + counts["values_rejected"], counts
        assert counts["rows_in"] == counts["rows_written"] + counts["rows_rejected"], counts
    if item.get("rejected_rows_at"):
        assert len(pd.read_parquet(item["rejected_rows_at"])) == item["values_rejected"]
    assert_bronze_unique(UC)
    return row


def _records(item: dict) -> list[tuple]:
    """(asset, tag, raw, reason) of each rejected value, in file order."""
    frame = pd.read_parquet(item["rejected_rows_at"])
    assert list(frame.columns) == ingest.REJECTED_COLUMNS
    return sorted(zip(frame["asset"], frame["tag"], frame["raw"], frame["reason"]))


def _bronze() -> dict:
    rows = assert_bronze_unique(UC)
    return {(a, t, ts): v for a, t, ts, v in zip(rows["asset"], rows["tag"], rows["ts"], rows["value"])}


def _in_quarantine(name: str) -> dict:
    kept = get_settings().quarantine_root / UC / name
    assert kept.exists(), f"{name} is not in quarantine"
    assert not (landing.landing_dir(FOLDER) / name).exists()
    return json.loads(kept.with_name(kept.name + ".reason.json").read_text())


# -- wide ------------------------------------------------------------------------------------------

def _wide_cells(tags) -> list[dict]:
    """A wide export, as text: every value inside its tag's range with four decimals; some cells
    hold PI digital states (several in one row), one is out of range and one is empty."""
    rows = []
    for k in range(ROWS):
        row = {"ts": (START + pd.Timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i, tag in enumerate(tags):
            share = 0.25 + 0.5 * ((7 * k + i) % 97) / 97
            row[tag.name] = f"{tag.min + (tag.max - tag.min) * share:.4f}"
        rows.append(row)
    names = [t.name for t in tags]
    for tag, state in zip(names[:3], ["Bad", "Scan Timeout", "I/O Timeout"]):
        rows[3][tag] = state
    rows[7][names[5]] = "Bad"
    rows[9][names[0]] = "999.5"  # XMEAS_23's range is [16, 45]
    rows[5][names[3]] = None  # an empty cell
    return rows


def _wide_file(fmt: str, rows: list[dict], names: list[str]) -> bytes:
    if fmt == "csv":
        lines = [",".join(rows[0])] + [",".join("" if v is None else v for v in row.values()) for row in rows]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "jsonl":
        def cell(v):  # numbers as JSON numbers, states as strings, the empty cell as null
            try:
                return float(v)
            except (TypeError, ValueError):
                return v
        return "".join(json.dumps({k: v if k == "ts" else cell(v) for k, v in row.items()}) + "\n"
                       for row in rows).encode()
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    text = {names[i] for i in (0, 1, 2, 3, 5)}  # PI writes a tag's column as text when it holds states
    for name in names:
        if name not in text:
            frame[name] = frame[name].astype(float)
    return _parquet_bytes(frame)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The frame as a parquet file's bytes."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_wide_export_in_each_format(tags, fmt):
    use_case = _use_case({"sources": [{"name": f"pi_{fmt}", "pattern": f"*.{fmt}", "layout": "wide"}]})
    names = [t.name for t in tags]
    rows = _wide_cells(tags)
    _land(f"pi_20260324.{fmt}", _wide_file(fmt, rows, names))
    (item,) = _ingest(use_case)
    assert (item["status"], item["source"]) == ("ingested", f"pi_{fmt}"), item
    n = ROWS * len(names)
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (n, n - 6, 6)
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (ROWS, ROWS, 0)
    row = _accounted(item)
    assert row["values_rejected"] == 6 and row["rows_in"] == ROWS
    empty = {"csv": "", "jsonl": "null", "parquet": "null"}[fmt]  # the empty cell, as each format has it
    assert _records(item) == sorted([
        (ASSET, "XMEAS_23", "Bad", "digital state 'Bad'"),
        (ASSET, "XMEAS_24", "Scan Timeout", "digital state 'Scan Timeout'"),
        (ASSET, "XMEAS_25", "I/O Timeout", "digital state 'I/O Timeout'"),
        (ASSET, "XMEAS_28", "Bad", "digital state 'Bad'"),
        (ASSET, "XMEAS_23", "999.5", "out of range [16, 45]"),
        (ASSET, "XMEAS_26", empty, "missing (NaN)"),
    ])
    rejected = {(3, names[0]), (3, names[1]), (3, names[2]), (7, names[5]), (9, names[0]), (5, names[3])}
    expected = {(ASSET, tag, pd.Timestamp(rows[k]["ts"])): float(rows[k][tag])
                for k in range(ROWS) for tag in names if (k, tag) not in rejected}
    assert _bronze() == expected  # every good value, exactly as the file wrote it
    # The bronze file is named after the whole file name but for parquet (a.csv and a.parquet never share one).
    bronze_name = "landing-pi_20260324.parquet" if fmt == "parquet" else f"landing-pi_20260324.{fmt}.parquet"
    assert (get_settings().bronze_root / UC / "date=2026-03-24" / bronze_name).exists()


def test_a_semicolon_csv_with_decimal_commas(tags):
    use_case = _use_case({"sources": [{"name": "pi_csv", "pattern": "*.csv", "delimiter": ";", "decimal": ","}]})
    names = [t.name for t in tags]
    rows = _wide_cells(tags)
    for row in rows:
        for name in names:
            if row[name] is not None:
                row[name] = row[name].replace(".", ",")
    rows[1]["XMEAS_27"] = "7,0625"
    text = "\n".join([";".join(rows[0])] + [";".join(v or "" for v in row.values()) for row in rows]) + "\n"
    _land("pi.csv", text)
    (item,) = _ingest(use_case)
    assert item["status"] == "ingested", item
    assert (item["values_written"], item["values_rejected"]) == (ROWS * len(names) - 6, 6)
    _accounted(item)
    # The raw text of a rejected value is as in the file: with its decimal comma.
    assert (ASSET, "XMEAS_23", "999,5", "out of range [16, 45]") in _records(item)
    bronze = _bronze()
    assert len(bronze) == ROWS * len(names) - 6
    for (asset, tag, ts), value in bronze.items():
        k = int((ts - START) / pd.Timedelta(minutes=5))
        assert value == float(rows[k][tag].replace(",", ".")), (tag, k)
    assert bronze[ASSET, "XMEAS_27", START + pd.Timedelta(minutes=5)] == 7.0625


def test_naive_local_timestamps_across_both_dst_changes_with_a_ts_format(tags):
    """A German export: "29.03.2026 02:30" does not exist in Europe/Berlin (clocks jump from 02:00
    to 03:00) and "25.10.2026 02:30" exists twice; neither is guessed: every value of such a row is
    rejected, as is a row whose time is not a time. The source's zone overrides the folder's."""
    use_case = _use_case({"sources": [{"name": "lims", "pattern": "*.csv", "delimiter": ";", "decimal": ",",
                                       "ts_column": "Zeit", "ts_format": "%d.%m.%Y %H:%M",
                                       "naive_timezone": "Europe/Berlin"}]})
    assert use_case.landing.naive_timezone is None
    names = [t.name for t in tags]

    def export(times: list[str]) -> str:
        lines = [";".join(["Zeit", *names])]
        for k, when in enumerate(times):
            lines.append(";".join([when, *(f"{(t.min + t.max) / 2 + 0.001 * k:.3f}".replace(".", ",") for t in tags)]))
        return "\n".join(lines) + "\n"

    spring = ["29.03.2026 01:00", "29.03.2026 01:30", "29.03.2026 02:00", "29.03.2026 02:30", "29.03.2026 03:00",
              "29.03.2026 03:30", "29.03.2026 25:00"]
    autumn = ["25.10.2026 01:30", "25.10.2026 02:00", "25.10.2026 02:30", "25.10.2026 02:00", "25.10.2026 02:30",
              "25.10.2026 03:00", "25.10.2026 03:30"]
    _land("spring.csv", export(spring))
    _land("autumn.csv", export(autumn))
    items = {i["file"]: i for i in _ingest(use_case)}
    v = len(names)
    for name, rejected_rows in (("spring.csv", 3), ("autumn.csv", 4)):
        item = items[name]
        assert item["status"] == "ingested", item
        assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (7, 7 - rejected_rows, rejected_rows)
        assert (item["values_written"], item["values_rejected"]) == ((7 - rejected_rows) * v, rejected_rows * v)
        assert item["rejected_values"] == {t: {"missing or invalid timestamp": rejected_rows} for t in names}
        _accounted(item)
    times = sorted({ts for _, _, ts in _bronze()})
    assert times == [pd.Timestamp(t, tz="UTC") for t in (
        "2026-03-29 00:00", "2026-03-29 00:30", "2026-03-29 01:00", "2026-03-29 01:30",  # CET, then CEST
        "2026-10-24 23:30", "2026-10-25 02:00", "2026-10-25 02:30")]  # CEST, then CET
    assert items["autumn.csv"]["days"] == {"2026-10-24": v, "2026-10-25": 2 * v}


def test_a_column_set_that_is_off_is_named_with_what_was_expected(tags):
    names = [t.name for t in tags]
    use_case = _use_case({"sources": [{"name": "lims", "pattern": "*.parquet", "ts_column": "Timestamp"}]})
    frame = pd.DataFrame({"Time": pd.date_range(START, periods=ROWS, freq="5min"),
                          **{n: 20.0 for n in names if n != "XMEAS_30"}, "comment": "ok"})
    path = landing.landing_dir(FOLDER)
    path.mkdir(parents=True)
    frame.to_parquet(path / "lims.parquet")
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined"
    expected = ", ".join(["Timestamp", *names])
    assert item["reason"].startswith(
        "columns do not match source lims (parquet, wide): missing ['Timestamp', 'XMEAS_30']; "
        f"unexpected ['Time', 'comment']; expected {expected}")
    assert _in_quarantine("lims.parquet")["reason"] == item["reason"]
    # Every cell outside the timestamp column counts as a value, all rejected: Time (the timestamp
    # column is 'Timestamp'), 18 tags and the comment, per row.
    assert (item["rows_in"], item["rows_rejected"], item["values_in"], item["values_rejected"]) == (
        ROWS, ROWS, ROWS * 20, ROWS * 20)
    _accounted(item)
    assert not (get_settings().bronze_root / UC).exists()


def test_latin1_csv_with_a_degree_sign_in_a_header(tags):
    """A header ``Temp °C`` can be no tag (tag names are identifiers): read as latin-1 it is named
    as an unexpected column; read as UTF-8 (the default) the file cannot be decoded at all."""
    names = [t.name for t in tags]
    header = ";".join(["ts", *names, "Temp °C"])
    middle = [f"{(t.min + t.max) / 2:g}" for t in tags]

    def export(temperature: str) -> bytes:
        body = [";".join([f"2026-03-24T00:{5 * k:02d}:00Z", *middle, temperature]) for k in range(ROWS)]
        return "\n".join([header, *body, ""]).encode("latin-1")

    latin = _use_case({"sources": [{"name": "pi_csv", "pattern": "*.csv", "delimiter": ";", "encoding": "latin-1"}]})
    _land("pi_latin.csv", export("21,5"))
    (item,) = _ingest(latin)
    assert item["status"] == "quarantined"
    assert item["reason"] == ("columns do not match source pi_csv (csv, wide): unexpected ['Temp °C']; expected ts, "
                              + ", ".join(names) + "; expect_table_columns_to_match_set: observed "
                              + str(sorted(["ts", *names, "Temp °C"])))
    assert (item["values_in"], item["values_rejected"]) == (ROWS * 20, ROWS * 20)
    _accounted(item)

    utf8 = _use_case({"sources": [{"name": "pi_csv", "pattern": "*.csv", "delimiter": ";"}]})
    _land("pi_utf8.csv", export("21,6"))  # other bytes: the same again would be a duplicate
    (item,) = _ingest(utf8)
    assert item["status"] == "quarantined"
    yaml = get_settings().use_cases_dir / f"{UC}.yaml"
    assert item["reason"] == ("unreadable csv (source pi_csv, encoding utf-8): 'utf-8' codec can't decode byte 0xb0 "
                              f"in position {header.index('°')}: invalid start byte; the file is not utf-8 at byte "
                              f"offset {header.index('°')}: set `encoding: latin-1` (or cp1252) on landing source "
                              f"pi_csv in {yaml}, then release the file")
    assert _in_quarantine("pi_utf8.csv")["reason"] == item["reason"]
    assert (item["values_in"], item["values_written"]) == (0, 0)
    assert not (get_settings().bronze_root / UC).exists()


# -- long ------------------------------------------------------------------------------------------

LONG_HEADER = ["asset", "tag", "ts", "value", "quality"]


def _long_rows() -> tuple[list[list], dict, list[tuple]]:
    """A long export: 4 times x 3 tags, two digital states, a bad-quality value without a number, a
    questionable one; then an unknown tag, a historian tag, an unknown asset, an unknown quality and
    a second value for an (asset, tag, ts) the file had already.
    Returns (rows, {(tag, ts): (value, quality)} that bronze must hold, rejected records)."""
    rows, good = [], {}
    for k in range(4):
        ts = (START + pd.Timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for tag, base in (("XMEAS_23", 30.0), ("XMEAS_24", 8.0), ("XMEAS_25", 20.0)):
            value = f"{base + 0.125 * k:.3f}"
            rows.append([ASSET, tag, ts, value, "good"])
            good[tag, pd.Timestamp(ts)] = (float(value), "good")
    t0, t1 = pd.Timestamp(rows[0][2]), pd.Timestamp(rows[3][2])
    rows[1][3] = "Scan Timeout"
    rows[5][3] = "I/O Timeout"
    rows[6][3], rows[6][4] = "", "bad"  # the historian said bad, no value: written as such
    rows[7][4] = "Questionable"  # case as PI writes it
    del good["XMEAS_24", t0], good["XMEAS_25", t1]
    good[rows[6][1], pd.Timestamp(rows[6][2])] = (math.nan, "bad")
    good[rows[7][1], pd.Timestamp(rows[7][2])] = (float(rows[7][3]), "questionable")
    rows += [
        [ASSET, "XMEAS_99", rows[0][2], "1.0", "good"],
        [ASSET, "XMV_1", rows[0][2], "50.0", "good"],
        ["other_reactor", "XMEAS_23", rows[0][2], "30.0", "good"],
        [ASSET, "XMEAS_23", "2026-03-24T00:20:00Z", "31.0", "meh"],
        [ASSET, "XMEAS_23", rows[0][2], "30.5", "good"],  # a second value for row 0's (asset, tag, ts)
    ]
    rejected = [
        (ASSET, "XMEAS_24", "Scan Timeout", "digital state 'Scan Timeout'"),
        (ASSET, "XMEAS_25", "I/O Timeout", "digital state 'I/O Timeout'"),
        (ASSET, "XMEAS_99", "1.0", "unknown tag 'XMEAS_99'"),
        (ASSET, "XMV_1", "50.0", "tag 'XMV_1' comes from the historian, not from landed files"),
        ("other_reactor", "XMEAS_23", "30.0", "unknown asset 'other_reactor'"),
        (ASSET, "XMEAS_23", "31.0", "unknown quality 'meh'"),
        (ASSET, "XMEAS_23", "30.5", "duplicate row"),
    ]
    return rows, good, rejected


def _long_file(fmt: str, rows: list[list]) -> bytes:
    if fmt == "csv":
        return ("\n".join(",".join(r) for r in [LONG_HEADER, *rows]) + "\n").encode()
    if fmt == "jsonl":
        def cell(v):
            try:
                return float(v)
            except ValueError:
                return v or None
        return "".join(json.dumps(dict(zip(LONG_HEADER, [*r[:3], cell(r[3]), r[4]]))) + "\n" for r in rows).encode()
    frame = pd.DataFrame(rows, columns=LONG_HEADER)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["value"] = frame["value"].where(frame["value"] != "", None)
    return _parquet_bytes(frame)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_long_export_in_each_format(plantops_home, fmt):
    use_case = _use_case({"sources": [{"name": "pi_long", "pattern": f"*.{fmt}", "layout": "long"}]})
    rows, good, rejected = _long_rows()
    _land(f"long.{fmt}", _long_file(fmt, rows))
    (item,) = _ingest(use_case)
    assert item["status"] == "ingested", item
    # A long row is one value.
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (17, 10, 7)
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (17, 10, 7)
    _accounted(item)
    assert _records(item) == sorted(rejected)
    bronze = assert_bronze_unique(UC)
    assert set(bronze["source"]) == {"landing"} and set(bronze["batch"]) == {f"long.{fmt}"}
    held = {(t, ts): (v, q) for t, ts, v, q in zip(bronze["tag"], bronze["ts"], bronze["value"], bronze["quality"])}
    assert held.keys() == good.keys()
    for key, (value, quality) in good.items():
        assert held[key][1] == quality
        assert (math.isnan(held[key][0]) and math.isnan(value)) or held[key][0] == value, key


def test_a_fleet_reads_a_long_file_of_several_assets(plantops_home):
    fleet = {"historian": {"assets": ["R1", "R2"]}}
    with pytest.raises(Exception, match="a wide file holds one asset's tags, but this is a fleet"):
        _use_case({}, **fleet)
    use_case = _use_case({"sources": [{"pattern": "*.csv", "layout": "long", "ts_column": "time"}]}, **fleet)
    assert use_case.landing.effective_sources[0].name == "csv"
    lines = ["asset,tag,time,value"]
    for k in range(3):
        ts = (START + pd.Timedelta(minutes=k)).isoformat()
        lines += [f"R1,XMEAS_23,{ts},{30 + k}", f"R2,XMEAS_23,{ts},{31 + k}", f"R3,XMEAS_23,{ts},{32 + k}"]
    _land("fleet.csv", "\n".join(lines) + "\n")
    (item,) = _ingest(use_case)
    assert item["status"] == "ingested", item
    assert (item["values_written"], item["values_rejected"]) == (6, 3)
    assert item["rejected_values"] == {"XMEAS_23": {"unknown asset 'R3'": 3}}
    _accounted(item)
    assert _bronze() == {(a, "XMEAS_23", START + pd.Timedelta(minutes=k)): float(v + k)
                         for a, v in (("R1", 30), ("R2", 31)) for k in range(3)}


def test_latin1_long_csv_with_german_digital_states(plantops_home):
    """A German PI system names its states in German; read as latin-1, the state's text is kept
    exactly as the file has it in the rejected-value record."""
    use_case = _use_case({"sources": [{"name": "pi_de", "pattern": "*.txt", "layout": "long", "delimiter": ";",
                                       "decimal": ",", "encoding": "latin-1"}]})
    assert use_case.landing.effective_sources[0].format == "csv"  # from the .txt suffix
    lines = ["asset;tag;ts;value;quality"]
    values = ["30,25", "Störung", "31,5", "Ungültig", "32,75", "46,5"]
    for k, value in enumerate(values):
        lines.append(f"{ASSET};XMEAS_23;2026-03-24T00:{k:02d}:00+01:00;{value};")
    _land("pi_de.txt", "\n".join(lines) + "\n", encoding="latin-1")
    (item,) = _ingest(use_case)
    assert item["status"] == "ingested", item
    assert (item["rows_in"], item["rows_written"], item["rows_rejected"]) == (6, 3, 3)
    _accounted(item)
    assert _records(item) == sorted([
        (ASSET, "XMEAS_23", "Störung", "digital state 'Störung'"),
        (ASSET, "XMEAS_23", "Ungültig", "digital state 'Ungültig'"),
        (ASSET, "XMEAS_23", "46,5", "out of range [16, 45]"),
    ])
    at = pd.Timestamp("2026-03-23T23:00:00Z")
    assert _bronze() == {(ASSET, "XMEAS_23", at): 30.25, (ASSET, "XMEAS_23", at + pd.Timedelta(minutes=2)): 31.5,
                         (ASSET, "XMEAS_23", at + pd.Timedelta(minutes=4)): 32.75}


def test_a_long_file_without_its_columns_is_quarantined_naming_them(plantops_home):
    use_case = _use_case({"sources": [{"name": "pi_long", "pattern": "*.jsonl", "layout": "long"}]})
    _land("a.jsonl", '{"asset": "tep_reactor", "tag": "XMEAS_23", "time": "2026-03-24T00:00:00Z", "val": 30.0}\n')
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined"
    assert item["reason"] == ("columns do not match source pi_long (jsonl, long): missing ['ts', 'value']; "
                              "unexpected ['time', 'val']; expected asset, tag, ts, value (optional: quality)")
    assert (item["values_in"], item["values_rejected"]) == (1, 1)
    _accounted(item)


def test_a_csv_with_a_header_only_is_quarantined_for_having_no_rows(plantops_home):
    use_case = _use_case({"sources": [{"pattern": "*.csv", "layout": "long"}]})
    _land("empty.csv", "asset,tag,ts,value\n")
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined"
    assert item["reason"] == "expect_table_row_count_to_be_between: observed 0"
    assert (item["rows_in"], item["values_in"]) == (0, 0)
    _accounted(item)


def test_a_jsonl_line_that_is_no_json_makes_the_file_unreadable(plantops_home):
    use_case = _use_case({"sources": [{"name": "pi_long", "pattern": "*.jsonl", "layout": "long"}]})
    good = '{"asset": "tep_reactor", "tag": "XMEAS_23", "ts": "2026-03-24T00:00:00Z", "value": 30.0}\n'
    _land("a.jsonl", good + "\n" + '{"asset": "tep_reactor", "tag": \n')
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined"
    assert item["reason"].startswith("unreadable jsonl (source pi_long, encoding utf-8): line 3: ")
    assert _in_quarantine("a.jsonl")["reason"] == item["reason"]
    assert landing.rows_of(UC)[-1]["values_in"] == 0


# -- which source a file belongs to ------------------------------------------------------------------

def test_a_file_no_source_claims_is_ignored_once_and_left_in_place(tags):
    legacy = _use_case({})
    data = ("ts,XMEAS_23\n2026-03-24T00:00:00Z,30.0\n").encode()
    path = _land("pi_20260324.csv", data)
    _land("later.csv.part", b"half")  # NiFi still writing: never looked at
    expected = {"file": "pi_20260324.csv", "status": "ignored",
                "reason": "matches no landing source; expected one of: *.parquet (parquet, wide)"}
    for run in ("run-1", "run-2"):
        (item,) = _ingest(legacy, run)
        assert {k: item[k] for k in expected} == expected
        assert path.read_bytes() == data, "an ignored file stays where it is"
    ledger = landing.rows_of(UC)
    assert [(r["name"], r["status"], r["dag_run_id"]) for r in ledger] == [("pi_20260324.csv", "ignored", "run-1")]
    assert item["ledger_id"] == ledger[0]["id"] and ledger[0]["reason"] == expected["reason"]
    # New bytes under the name are recorded once more; then a source for them takes the file.
    path.write_bytes(data.replace(b"30.0", b"30.5"))
    assert _ingest(legacy, "run-3")[0]["status"] == "ignored"
    assert [r["status"] for r in landing.rows_of(UC)] == ["ignored", "ignored"]
    both = _use_case({"sources": [{"pattern": "*.parquet"}, {"pattern": "pi_*.csv", "layout": "long"}]})
    assert both.landing.effective_sources[1].name == "csv"
    (item,) = _ingest(both, "run-4")
    assert item["status"] == "quarantined" and "missing ['asset', 'tag', 'value']" in item["reason"]
    assert [r["status"] for r in landing.rows_of(UC)] == ["ignored", "ignored", "quarantined"]
    assert not path.exists()


def test_a_file_two_sources_claim_is_an_error_naming_both(plantops_home):
    use_case = _use_case({"sources": [{"name": "pi", "pattern": "*.csv"}, {"name": "lims", "pattern": "lims_*",
                                                                               "format": "csv"}]})
    path = _land("lims_1.csv", "ts\n")
    with pytest.raises(ingest.AmbiguousLanding,
                       match=r"'lims_1.csv' matches more than one landing source: pi \('\*.csv'\) and lims \('lims_\*'\)"):
        _ingest(use_case)
    assert path.exists() and landing.rows_of(UC) == []


# -- configuration -----------------------------------------------------------------------------------

def _load(tmp_path: Path, landing_block: dict, **fields) -> UseCase:
    raw = _yaml()
    raw["landing"] = landing_block
    raw.update(fields)
    path = tmp_path / f"{UC}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_use_case(path)


@pytest.mark.parametrize(("block", "message"), [
    ({"folder": "x", "pattern": "*.parquet", "sources": [{"pattern": "*.csv"}]},
     "landing.pattern: give either 'pattern' (one wide source) or 'sources', not both"),
    ({"folder": "x", "sources": [{"pattern": "*.dat"}]},
     "landing.sources.0.format: cannot tell the format from the pattern '*.dat'"),
    ({"folder": "x", "sources": [{"pattern": "*.csv"}, {"pattern": "a_*.csv"}]},
     "landing.sources: each source needs its own name; ['csv'] given twice"),
    ({"folder": "x", "sources": [{"pattern": "*.parquet", "decimal": ","}]},
     "landing.sources.0.decimal: applies to format csv only, not parquet (source parquet, got ',')"),
    ({"folder": "x", "sources": [{"pattern": "*.csv", "delimiter": ";", "decimal": ";"}]},
     "landing.sources.0.decimal: must differ from the delimiter ';' (source csv)"),
    ({"folder": "x", "sources": [{"pattern": "*.csv", "encoding": "latin-9000"}]},
     "landing.sources.0.encoding: unknown text encoding; e.g. utf-8, latin-1, cp1252 (got 'latin-9000')"),
    ({"folder": "x", "sources": [{"pattern": "*.csv", "naive_timezone": "Europe/Berlln"}]},
     "landing.sources.0.naive_timezone: expected an IANA time zone such as 'Europe/Berlin' (got 'Europe/Berlln')"),
    ({"folder": "x", "sources": [{"pattern": "*.csv", "layout": "diagonal"}]}, "landing.sources.0.layout"),
    ({"folder": "x", "sources": [{"pattern": "sub/*.csv"}]}, "landing.sources.0.pattern: expected a file-name pattern inside the landing folder (no '/', not hidden) (got 'sub/*.csv')"),
])
def test_a_wrong_sources_block_names_the_field(tmp_path, block, message):
    with pytest.raises(ConfigError, match="tep_reactor.yaml: ") as err:
        _load(tmp_path, block)
    assert message in str(err.value)


def test_effective_sources(tmp_path):
    legacy = _load(tmp_path, {"folder": "x", "pattern": "export_*"}).landing
    (only,) = legacy.effective_sources
    assert (only.name, only.pattern, only.format, only.layout) == ("parquet", "export_*", "parquet", "wide")
    # Every key written out, as in docs/configuration.md, is accepted for a parquet source where it is
    # the default.
    template = {"name": "pi", "pattern": "*.parquet", "format": "parquet", "layout": "wide", "delimiter": ",",
                "encoding": "utf-8", "decimal": ".", "ts_column": "ts", "ts_format": None, "naive_timezone": None}
    assert _load(tmp_path, {"folder": "x", "sources": [template]}).landing.effective_sources[0].name == "pi"
    several = _load(tmp_path, {"folder": "x", "naive_timezone": "Europe/Berlin", "sources": [
        {"pattern": "*.csv", "delimiter": ";"}, {"name": "lims", "pattern": "*.ndjson", "layout": "long",
                                                 "naive_timezone": "UTC"}]}).landing
    assert [(s.name, s.format, s.layout) for s in several.effective_sources] == [
        ("csv", "csv", "wide"), ("lims", "jsonl", "long")]
    assert several.patterns == ("*.csv", "*.ndjson")
    assert [several.zone_of(s) for s in several.sources] == ["Europe/Berlin", "UTC"]
