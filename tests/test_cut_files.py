"""Cut files (issue 25): a csv or jsonl whose last line has no line end, or fewer fields than the
header, and a parquet file without its footer, are never read as values. The file is quarantined
whole as ``truncated`` with the byte offset where the cut record starts, and the full file landed
next is ingested completely: a cut cell (``-0.36`` of ``-0.3609``) can never lock out the value.

Real ingest on real files, as test_landing_formats writes them.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from plantops import cli
from plantops.settings import get_settings
from plantops.sources import landing
from test_landing_formats import (ROWS, UC, _accounted, _bronze, _ingest, _land, _use_case, _wide_cells,
                                  _wide_file, tags)  # noqa: F401 - tags is a fixture


def _clean_cells(tags) -> list[dict]:
    """A wide export of good values only (four decimals), so every value must reach bronze."""
    rows = []
    for k in range(ROWS):
        row = {"ts": (pd.Timestamp("2026-03-24", tz="UTC") + pd.Timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for i, tag in enumerate(tags):
            row[tag.name] = f"{tag.min + (tag.max - tag.min) * (0.3 + 0.4 * ((3 * k + i) % 11) / 11):.4f}"
        rows.append(row)
    return rows


def _every_value(tags, rows) -> dict:
    return {(UC, t.name, pd.Timestamp(r["ts"])): float(r[t.name]) for r in rows for t in tags}


def _reason_file(name: str) -> dict:
    kept = get_settings().quarantine_root / UC / name
    assert kept.exists() and not (landing.landing_dir(UC) / name).exists()
    return json.loads(kept.with_name(kept.name + ".reason.json").read_text())


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_cut_mid_line_is_quarantined_and_the_full_file_is_ingested_whole(tags, fmt):
    use_case = _use_case({"sources": [{"name": f"pi_{fmt}", "pattern": f"*.{fmt}"}]})
    rows = _clean_cells(tags)
    full = _wide_file(fmt, rows, [t.name for t in tags])
    # Cut inside the last row's last value (csv "...,30.12" of "30.1234"; jsonl mid-number): the
    # cut cell of a csv is a shorter number, not garbage.
    at = len(full) - 3
    cut = full[:at]
    line_start = full.rindex(b"\n", 0, at) + 1
    _land(f"trunc_half.{fmt}", cut)

    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined", item
    assert (item["problem"], item["offset"], item["size"]) == ("truncated", line_start, len(cut))
    assert item["reason"].startswith(f"unreadable {fmt} (source pi_{fmt}, encoding utf-8): truncated at byte "
                                     f"{line_start} of {len(cut)}: the last line has no line end; NiFi may still be "
                                     "writing the file or the transfer broke")
    assert (item["values_written"], item["rows_written"]) == (0, 0)
    _accounted(item)
    kept = _reason_file(f"trunc_half.{fmt}")
    assert (kept["problem"], kept["offset"], kept["size"], kept["reason"]) == ("truncated", line_start, len(cut),
                                                                               item["reason"])
    assert _bronze() == {}  # not one value of the cut file, least of all the cut cell

    _land(f"pi_full.{fmt}", full)
    (item,) = _ingest(use_case, "run-2")
    assert item["status"] == "ingested", item
    assert (item["values_written"], item["values_rejected"]) == (ROWS * len(tags), 0)
    assert _bronze() == _every_value(tags, rows)  # every value, the last one as the file says it
    _accounted(item)


def test_a_csv_whose_last_line_lacks_fields_is_truncated(tags):
    use_case = _use_case({"sources": [{"name": "pi_csv", "pattern": "*.csv"}]})
    rows = _clean_cells(tags)
    full = _wide_file("csv", rows, [t.name for t in tags]).decode()
    lines = full.splitlines(keepends=True)
    short = "".join(lines[:-1]) + ",".join(lines[-1].split(",")[:5]) + "\n"  # a line end, but 5 fields
    _land("short.csv", short)
    (item,) = _ingest(use_case)
    offset = len("".join(lines[:-1]).encode())
    assert item["status"] == "quarantined" and item["offset"] == offset
    assert f"truncated at byte {offset} of {len(short)}: the last line has 5 of the header's {len(tags) + 1} fields" \
        in item["reason"]
    assert _bronze() == {}


def test_a_parquet_file_without_its_footer_says_truncated(tags):
    use_case = _use_case({"sources": [{"name": "pi_parquet", "pattern": "*.parquet"}]})
    full = _wide_file("parquet", _wide_cells(tags), [t.name for t in tags])
    _land("cut.parquet", full[: len(full) // 2])
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined" and item["offset"] == len(full) // 2
    assert item["reason"].startswith(f"unreadable parquet (source pi_parquet): truncated at byte {len(full) // 2} of "
                                     f"{len(full) // 2}: the parquet footer is missing")


def test_a_complete_file_without_its_last_line_end_is_held_and_released_once_ended(tags, capsys, monkeypatch):
    """No line end is truncated, even when the last line has every field (a cut inside the last
    cell has them too); the reason says how to release it, and the ended file is then ingested."""
    use_case = _use_case({"sources": [{"name": "pi_csv", "pattern": "*.csv"}]})
    rows = _clean_cells(tags)
    full = _wide_file("csv", rows, [t.name for t in tags])
    _land("no_eol.csv", full.rstrip(b"\n"))
    (item,) = _ingest(use_case)
    assert item["status"] == "quarantined" and "its last line parses whole" in item["reason"]
    assert "end its last line in quarantine (echo >> <file>) and release it" in item["reason"]
    assert cli.main(["quarantine", UC]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["file"] for f in listed] == ["no_eol.csv"] and "truncated at byte" in listed[0]["reason"]

    # Released as it is, it is held again: the bytes still end mid-line.
    landing.release(UC, "no_eol.csv", use_case.landing.folder)
    (again,) = _ingest(use_case, "run-2")
    assert again["status"] == "quarantined" and again["offset"] == item["offset"]
    # Ended, then released: ingested whole.
    quarantined = get_settings().quarantine_root / UC / "no_eol.csv"
    with quarantined.open("ab") as handle:
        handle.write(b"\n")
    landing.release(UC, "no_eol.csv", use_case.landing.folder)
    (done,) = _ingest(use_case, "run-3")
    assert done["status"] == "ingested" and done["values_written"] == ROWS * len(tags)
    assert _bronze() == _every_value(tags, rows)
