"""Onboarding a use case from a sample export, without writing YAML by hand.

`init-use-case` drafts a use case that loads as it is from a PI-like export (100 tags, 5-minute
rows of a day, naive site-local timestamps, digital states in some cells, constant tags, headers
that are no identifiers); `ingest` then runs an ingest at once, and every good value of the export
is in bronze, every digital state rejected and counted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from plantops import cli
from plantops.config import ConfigError, UseCase, get_use_case, load_use_case
from plantops.settings import get_settings

DAY = "2026-03-24"  # no DST change in Europe/Berlin that day
ROWS = 288  # 5-minute rows
CONSTANT = {"SP_FIXED": 42.0, "SPARE_ZERO": 0.0, "BIAS_NEG": -7.5}
STATES = ("Bad", "Inp OutRange", "Scan Timeout")
CSV_HEADERS = ["FIC-101.PV", "TI 102 Temp.PV", *CONSTANT, *(f"PI{n:03d}.PV" for n in range(3, 98))]
PARQUET_HEADERS = ["FIC_101_PV", "TI_102_PV", *CONSTANT, *(f"PI{n:03d}" for n in range(3, 98))]


@pytest.fixture
def use_cases_dir(plantops_home, monkeypatch) -> Path:
    folder = plantops_home / "use_cases"
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(folder))
    return folder


def pi_export(headers: list[str]) -> tuple[pd.DataFrame, dict[tuple[int, str], str]]:
    """A day of 5-minute rows, site-local naive timestamps in ``ts``; digital states in ten columns
    (three cells each), returned as {(row, header): state}."""
    rng = np.random.default_rng(15)
    frame = pd.DataFrame({"ts": pd.date_range(f"{DAY} 00:00", periods=ROWS, freq="5min"), **{
        header: np.full(ROWS, CONSTANT[header]) if header in CONSTANT
        else np.round(10.0 * i + rng.normal(0, 1 + i % 7, ROWS), 4) for i, header in enumerate(headers)}})
    states = {}
    for j, header in enumerate(headers[5:15]):
        frame[header] = frame[header].astype(str)  # PI writes a column holding states as text
        for k in range(3):
            row = (37 * k + 11 * j + 5) % ROWS
            frame.at[row, header] = STATES[(j + k) % 3]
            states[row, header] = STATES[(j + k) % 3]
    return frame, states


def run_cli(capsys, *argv: str) -> tuple[int, list[dict]]:
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_pi_csv_export_drafts_a_use_case_that_loads(use_cases_dir, tmp_path, capsys):
    frame, states = pi_export(CSV_HEADERS)
    sample = tmp_path / "pi_export.csv"
    frame.rename(columns={"ts": "Timestamp"}).to_csv(sample, index=False, date_format="%Y-%m-%d %H:%M:%S")

    code, (report,) = run_cli(capsys, "init-use-case", "line_3", "--from", str(sample), "--timezone", "Europe/Berlin")
    assert code == 0, report
    uc = get_use_case("line_3")  # the loader the DAG factory uses
    assert report["written"] == str(use_cases_dir / "line_3.yaml") and report["tags"] == 100
    assert len(uc.tags) == 100 and uc.historian is None and uc.assets == ("line_3",)
    tags = {t.description: t for t in uc.tags}
    assert tags["FIC-101.PV"].name == "FIC_101_PV" and tags["TI 102 Temp.PV"].name == "TI_102_Temp_PV"
    assert {t.source for t in uc.tags} == {"landing"} and {t.unit for t in uc.tags} == {""}
    # Constant tags get a tolerance around their value.
    for header, value in CONSTANT.items():
        assert tags[header].min < value < tags[header].max, header
    assert (tags["SPARE_ZERO"].min, tags["SPARE_ZERO"].max) == (-1.0, 1.0)
    assert (tags["SP_FIXED"].min, tags["SP_FIXED"].max) == (39.9, 44.1)
    # Digital states do not break the range: it spans the numbers of the column, with a margin.
    with_states = CSV_HEADERS[5]
    numbers = pd.to_numeric(frame[with_states], errors="coerce")
    assert tags[with_states].min < numbers.min() and tags[with_states].max > numbers.max()
    assert tags[with_states].max - tags[with_states].min < 1.3 * (numbers.max() - numbers.min())
    assert sum(report["digital_states"].values()) == len(states) == 30
    # Every observed number is inside its tag's range: the sample itself passes ingest.
    for header in CSV_HEADERS:
        values = pd.to_numeric(frame[header], errors="coerce").dropna()
        assert values.between(tags[header].min, tags[header].max).all(), header

    (source,) = uc.landing.sources
    assert (source.format, source.layout, source.delimiter, source.decimal, source.encoding) == (
        "csv", "wide", ",", ".", "utf-8")
    assert (source.pattern, source.ts_column, source.ts_format) == ("*.csv", "Timestamp", None)
    assert uc.landing.naive_timezone == "Europe/Berlin" and uc.landing.folder == "line_3"
    text = (use_cases_dir / "line_3.yaml").read_text()
    assert "# DECIDE: the model kind" in text and "digital states: " in text and "constant 42 in the sample" in text
    # The factory builds every stage of the drafted use case (no config-error DAG).
    from plantops.orchestration.dagfactory import STAGES, build_all

    assert set(build_all(use_cases_dir)) == {f"line_3__{stage}" for stage in STAGES}

    # --force redrafts; without --timezone the naive timestamps are read as UTC, with a question.
    code, (again,) = run_cli(capsys, "init-use-case", "line_3", "--from", str(sample), "--force")
    assert code == 0 and again["naive_timezone"] == "UTC"


def test_refuses_to_overwrite_without_force(use_cases_dir, tmp_path, capsys):
    sample = tmp_path / "x.csv"
    sample.write_text("ts,a\n2026-03-24T00:00:00Z,1\n2026-03-24T00:05:00Z,2\n")
    assert cli.main(["init-use-case", "unit_x", "--from", str(sample)]) == 0
    before = (use_cases_dir / "unit_x.yaml").read_text()
    capsys.readouterr()
    assert cli.main(["init-use-case", "unit_x", "--from", str(sample)]) == 1
    assert "exists; refusing to overwrite it (use --force)" in capsys.readouterr().err
    assert (use_cases_dir / "unit_x.yaml").read_text() == before


def test_naive_timestamps_without_a_zone_load_as_utc_with_a_question(use_cases_dir, tmp_path, capsys):
    frame, _ = pi_export(PARQUET_HEADERS[:4])
    sample = tmp_path / "export.parquet"
    frame.to_parquet(sample)
    code, (report,) = run_cli(capsys, "init-use-case", "unit_4", "--from", str(sample))
    assert code == 0 and report["naive_timestamps"] is True
    text = (use_cases_dir / "unit_4.yaml").read_text()
    assert "# DECIDE: the zone of the naive timestamps, e.g. Europe/Berlin" in text
    uc = get_use_case("unit_4")
    assert uc.landing.naive_timezone == "UTC" and uc.landing.sources[0].format == "parquet"
    assert uc.features.bucket == "5min"


def test_semicolon_decimal_comma_latin1_export(use_cases_dir, tmp_path, capsys):
    lines = ["Zeitstempel;Temperatur °C;Druck bar;Betriebsart"]
    for i in range(12):
        lines.append(f"24.03.2026 {i:02d}:00:00;{20 + i},5;1,{i:02d};{'Auto' if i % 2 else 'Hand'}")
    lines[5] = lines[5].replace(";1,04;", ";Bad;")
    sample = tmp_path / "export.txt"
    sample.write_bytes("\r\n".join(lines).encode("latin-1"))

    code, (report,) = run_cli(capsys, "init-use-case", "kiln_2", "--from", str(sample), "--asset", "KILN-2")
    assert code == 0, report
    uc = get_use_case("kiln_2")
    (source,) = uc.landing.sources
    assert (source.format, source.delimiter, source.decimal, source.encoding) == ("csv", ";", ",", "latin-1")
    assert (source.ts_column, source.ts_format) == ("Zeitstempel", "%d.%m.%Y %H:%M:%S")
    assert uc.assets == ("KILN-2",) and uc.landing.naive_timezone == "UTC"
    tags = {t.description: t for t in uc.tags}
    assert list(tags) == ["Temperatur °C", "Druck bar"]  # the text column is no tag
    assert tags["Temperatur °C"].name == "Temperatur_C"
    assert tags["Temperatur °C"].min < 20.5 and 31.5 < tags["Temperatur °C"].max < 33
    assert tags["Druck bar"].min < 1.0 and 1.11 < tags["Druck bar"].max < 1.2  # 'Bad' is not a number
    assert report["skipped"] == [{"column": "Betriebsart", "why": "text only (12 cells, e.g. ['Auto', 'Hand']): "
                                                                  "digital states or a status column"}]
    text = (use_cases_dir / "kiln_2.yaml").read_text(encoding="utf-8")
    assert "read as latin-1" in text and "#   Betriebsart: text only" in text and "1 x 'Bad'" in text


def test_a_long_export_drafts_a_long_source(use_cases_dir, tmp_path, capsys):
    rows = []
    for i in range(6):
        ts = f"2026-03-24T{i:02d}:00:00+01:00"
        rows += [{"Asset": "PUMP-7", "Tag": "flow", "Timestamp": ts, "Value": 10.0 + i},
                 {"Asset": "PUMP-7", "Tag": "vibration", "Timestamp": ts, "Value": "Scan Timeout" if i == 2 else 0.5},
                 {"Asset": "PUMP-7", "Tag": "mode", "Timestamp": ts, "Value": "Auto"}]
    sample = tmp_path / "pump.jsonl"
    sample.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    code, (report,) = run_cli(capsys, "init-use-case", "pump_7", "--from", str(sample))
    assert code == 0, report
    uc = get_use_case("pump_7")
    (source,) = uc.landing.sources
    assert (source.format, source.layout, source.ts_column) == ("jsonl", "long", "Timestamp")
    assert uc.landing.naive_timezone is None and report["naive_timestamps"] is False
    assert uc.assets == ("PUMP-7",) and uc.features.bucket == "1h"
    assert [(t.name, t.min, t.max) for t in uc.tags] == [("flow", 9.5, 15.5), ("vibration", 0.475, 0.525)]
    assert report["skipped"][0]["column"] == "mode"


def test_constant_tag_error_suggests_a_tolerance():
    from plantops.config import Tag

    with pytest.raises(ValueError, match=r"min \(5\) must be below max \(5\); for a constant tag give a "
                                         r"tolerance around its value, e\.g\. min: 4\.75, max: 5\.25"):
        Tag(name="SP", description="a setpoint", min=5, max=5)


LANDING_ONLY = {
    "id": "press_1", "plant": "Press 1", "landing": {"folder": "press_1"},
    "tags": [{"name": "force", "description": "Force", "min": 0, "max": 10, "source": "landing"}],
}


def _load(tmp_path: Path, data: dict) -> UseCase:
    path = tmp_path / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_use_case(path)


def test_historian_and_approvers_are_optional_when_nothing_needs_them(tmp_path):
    quiet = {r: "notify" for r in ("upset", "persistent_upset", "false_alarms", "performance",
                                   "unexplained_drift", "quality", "plant_change")}
    uc = _load(tmp_path, {**LANDING_ONLY, "monitoring": {"policy": {"rules": quiet}}})
    assert uc.historian is None and uc.approvers == () and uc.assets == ("press_1",) and not uc.is_fleet
    assert _load(tmp_path, {**LANDING_ONLY, "landing": {"folder": "p", "asset": "P-1"},
                            "monitoring": {"policy": {"rules": quiet}}}).assets == ("P-1",)

    # The default policy asks a person: approvers are required, naming the rules that ask.
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, LANDING_ONLY)
    text = str(err.value)
    assert "approvers: required" in text and "'persistent_upset', 'quality', 'plant_change'" in text
    assert "'false_alarms', 'performance', 'unexplained_drift'" in text and "max_retrains (3)" in text

    # A historian tag needs the historian.
    data = {**LANDING_ONLY, "approvers": [{"id": "eng1", "name": "E"}],
            "tags": [*LANDING_ONLY["tags"], {"name": "temp", "description": "T", "min": 0, "max": 1}]}
    with pytest.raises(ConfigError, match=r"historian: required: tags \['temp'\] have source 'historian'"):
        _load(tmp_path, data)


def test_parquet_export_ingests_every_good_value(use_cases_dir, tmp_path, capsys):
    """init-use-case, land the export, `cli ingest`: the ledger, bronze and the rejected values agree exactly."""
    from plantops.sources import landing
    from plantops.stages import decisions
    from plantops.stages.pipeline import FilesQuarantined, report_quarantine

    frame, states = pi_export(PARQUET_HEADERS)
    sample = tmp_path / "pi_export_20260324.parquet"
    frame.to_parquet(sample)
    code, (report,) = run_cli(capsys, "init-use-case", "line_3", "--from", str(sample), "--timezone", "Europe/Berlin")
    assert code == 0 and report["tags"] == 100

    folder = get_settings().landing_root / "line_3"
    folder.mkdir(parents=True)
    shutil.copy(sample, folder / sample.name)
    code, rows = run_cli(capsys, "ingest", "line_3", "--day", DAY)
    assert code == 0, rows
    item, historian, summary = rows
    n = ROWS * len(PARQUET_HEADERS)
    assert item["file"] == sample.name and item["status"] == "ingested", item
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (n, n - len(states), len(states))
    assert item["rejected_values"] == {
        h: {f"digital state {s!r}": sum(1 for (_, hh), ss in states.items() if hh == h and ss == s)
            for s in {ss for (_, hh), ss in states.items() if hh == h}} for h in PARQUET_HEADERS[5:15]}
    assert historian == {"historian": {"rows_in": 0, "rows_written": 0, "rows_rejected": 0, "windows": [],
                                       "reason": "no historian tags"}}
    # Local midnight to midnight in Berlin (UTC+1) is 23:00 the day before to 23:00 UTC.
    assert summary["days"] == ["2026-03-23", DAY] and summary["quarantined_files"] == 0

    bronze = pd.concat([pd.read_parquet(p) for p in (get_settings().bronze_root / "line_3").rglob("*.parquet")])
    assert len(bronze) == n - len(states) and set(bronze["asset"]) == {"line_3"}
    utc = frame["ts"].dt.tz_localize("Europe/Berlin").dt.tz_convert("UTC")
    expected = {(h, utc[r]): float(frame.at[r, h]) for r in range(ROWS) for h in PARQUET_HEADERS
                if (r, h) not in states}
    got = dict(zip(zip(bronze["tag"], pd.to_datetime(bronze["ts"], utc=True)), bronze["value"]))
    assert got == expected
    (ledger_row,) = landing.rows_of("line_3")
    assert ledger_row["status"] == "ingested" and ledger_row["values_rejected"] == len(states)

    # A broken export: the file is quarantined whole, the command exits 2, the operator view has it.
    (folder / "pi_export_20260325.parquet").write_bytes(b"PAR1 not really")
    code, rows = run_cli(capsys, "ingest", "line_3", "--day", "2026-03-25")
    assert code == cli.QUARANTINED_EXIT_CODE
    assert rows[0]["status"] == "quarantined" and rows[0]["reason"].startswith("unreadable parquet (source parquet_wide)")
    (record,) = decisions.latest("line_3", kind="quarantine")
    assert record["dag_run_id"] == rows[-1]["run_id"] and record["branch"] == "files_quarantined"
    assert [f["file"] for f in record["payload"]["files"]] == ["pi_export_20260325.parquet"]
    with pytest.raises(FilesQuarantined, match=r"1 landed file\(s\) quarantined in run cli__.*"
                                                r"pi_export_20260325.parquet: unreadable parquet"):
        report_quarantine("line_3", rows[-1]["run_id"])
    assert report_quarantine("line_3", summary["run_id"]) == []


def test_pi_csv_export_ingests_every_good_value(use_cases_dir, tmp_path, capsys):
    """The CSV export as it comes from PI (header 'FIC-101.PV', 'Timestamp' column, a status text
    column that is no tag), end to end: the headers map to the drafted tag names, the status column
    is ignored as the draft says, and every good value reaches bronze."""
    frame, states = pi_export(CSV_HEADERS)
    sample = tmp_path / "pi_export_20260324.csv"
    export = frame.rename(columns={"ts": "Timestamp"}).assign(Mode=["Auto", "Hand"] * (ROWS // 2) + ["Auto"] * (ROWS % 2))
    export.to_csv(sample, index=False, date_format="%Y-%m-%d %H:%M:%S")
    code, _ = run_cli(capsys, "init-use-case", "line_3", "--from", str(sample), "--timezone", "Europe/Berlin")
    assert code == 0
    assert get_use_case("line_3").landing.effective_sources[0].ignore_columns == ("Mode",)
    folder = get_settings().landing_root / "line_3"
    folder.mkdir(parents=True)
    shutil.copy(sample, folder / sample.name)
    code, rows = run_cli(capsys, "ingest", "line_3", "--day", DAY)
    item = rows[0]
    n = ROWS * len(CSV_HEADERS)
    assert code == 0 and item["status"] == "ingested", rows
    assert (item["values_in"], item["values_written"], item["values_rejected"]) == (n, n - len(states), len(states))
    uc = get_use_case("line_3")
    names = {t.description: t.name for t in uc.tags}
    bronze = pd.concat([pd.read_parquet(p) for p in (get_settings().bronze_root / "line_3").rglob("*.parquet")])
    utc = frame["ts"].dt.tz_localize("Europe/Berlin").dt.tz_convert("UTC")
    expected = {(names[h], utc[r]): float(frame.at[r, h]) for r in range(ROWS) for h in CSV_HEADERS
                if (r, h) not in states}
    assert dict(zip(zip(bronze["tag"], pd.to_datetime(bronze["ts"], utc=True)), bronze["value"])) == expected
