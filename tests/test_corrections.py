"""Conflicts and corrections (issue 25): a later landed value that differs from bronze's for one
(asset, tag, ts, source) is kept beside bronze with both values and both files, listed by
``cli conflicts``, and replaced by ``cli correct`` (or at once with ``on_conflict: replace``), with
an audit record; the corrected day is announced by the next ingest run and its features rebuilt.

Real files through the real ingest, the real CLI and the real feature job; no mocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from plantops import cli
from plantops.config import ConfigError
from plantops.settings import get_settings
from plantops.sources import landing
from plantops.stages import corrections, pipeline
from test_faults import assert_bronze_unique

REPO = Path(__file__).resolve().parents[1]
UC = "tep_reactor"
TAGS = ["XMEAS_23", "XMEAS_24"]
DAY = "2026-03-24"
STEP = pd.Timedelta(minutes=3)


def _spec(on_conflict: str | None = None) -> dict:
    """tep_reactor with two landed tags only (no historian read) and a wide csv source."""
    spec = yaml.safe_load((REPO / "include" / "use_cases" / f"{UC}.yaml").read_text())
    spec["tags"] = [t for t in spec["tags"] if t["name"] in TAGS]
    source = {"name": "pi_csv", "pattern": "*.csv"}
    if on_conflict is not None:
        source["on_conflict"] = on_conflict
    spec["landing"] = {"folder": UC, "bad_rows": "drop", "sources": [source]}
    return spec


@pytest.fixture
def use_case_dir(plantops_home, monkeypatch) -> Path:
    folder = plantops_home / "use_cases"
    folder.mkdir()
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(folder))
    return folder


def _write_spec(folder: Path, on_conflict: str | None = None) -> None:
    (folder / f"{UC}.yaml").write_text(yaml.safe_dump(_spec(on_conflict)))


def _export(hours: int = 24, changes: dict | None = None) -> tuple[bytes, dict]:
    """A wide csv of the day every 3 minutes from 00:00 and the value of each (tag, ts) in it."""
    start = pd.Timestamp(DAY, tz="UTC")
    lines, values = [",".join(["ts", *TAGS])], {}
    for k in range(hours * 20):
        ts = start + k * STEP
        cells = []
        for i, tag in enumerate(TAGS):
            text = (changes or {}).get((tag, ts)) or f"{[30.0, 9.0][i] + ((7 * k + i) % 13) / 10:.4f}"
            values[(tag, ts)] = float(text)
            cells.append(text)
        lines.append(",".join([ts.strftime("%Y-%m-%dT%H:%M:%SZ"), *cells]))
    return ("\n".join(lines) + "\n").encode(), values


def _land(name: str, data: bytes) -> None:
    folder = landing.landing_dir(UC)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{name}"
    hidden.write_bytes(data)
    hidden.rename(folder / name)


def _bronze() -> dict:
    rows = assert_bronze_unique(UC)
    return {(t, pd.Timestamp(ts)): (v, b) for t, ts, v, b in zip(rows["tag"], rows["ts"], rows["value"], rows["batch"])}


def _cli(capsys, *argv: str) -> tuple[int, list[dict]]:
    capsys.readouterr()  # what the feature job printed before is not the command's output
    code = cli.main(list(argv))
    # Log records may share stdout (Airflow's logging once it is imported): the rows are the JSON lines.
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def _build(days: list[str]) -> dict:
    """What <uc>__features does for the days of a bronze event: plan_window, then the job."""
    from plantops.config import get_use_case
    from plantops.modalities.tags import feature_job_args
    from spark_jobs.build_features import main

    plan = pipeline.plan_features(UC, days)
    assert main([*feature_job_args(get_use_case(UC)), "--ranges", plan["ranges"]]) == 0
    return plan


def _feature_day(day: str) -> dict[str, bytes]:
    folder = get_settings().features_root / UC / f"date={day}"
    return {f.name: f.read_bytes() for f in sorted(folder.glob("*.parquet"))}


def test_a_corrected_resend_is_a_conflict_until_corrected_then_its_day_is_rebuilt(spark, use_case_dir, capsys):
    _write_spec(use_case_dir)
    first, values = _export()
    _land("pi_20260324.csv", first)
    result = pipeline.ingest(UC, f"{DAY}T00:00:00+00:00", "2026-03-25T00:00:00+00:00", "run-1")
    assert result["days"] == [DAY] and result["corrected_days"] == []
    assert _build(result["days"])["ranges"] == f"{DAY}:2026-03-25"
    before = _feature_day(DAY)
    assert before

    # The historian re-sends the day's first half with one value corrected (30.0 -> 31.5).
    at = pd.Timestamp(DAY, tz="UTC") + 40 * STEP
    old = values[("XMEAS_23", at)]
    resent, _ = _export(hours=12, changes={("XMEAS_23", at): "31.5000"})
    _land("pi_20260324_corrected.csv", resent)
    result = pipeline.ingest(UC, f"{DAY}T00:00:00+00:00", "2026-03-25T00:00:00+00:00", "run-2")
    (item,) = result["files"]
    assert item["status"] == "ingested" and item["conflicts"] == 1, item
    assert item["values_written"] == 0 and item["values_rejected"] == 12 * 20 * 2
    assert item["rejected_values"]["XMEAS_23"] == {"already in bronze from 'pi_20260324.csv'": 239,
                                                   "conflicts with bronze's value from 'pi_20260324.csv'": 1}
    assert result["days"] == [] and result["corrected_days"] == []  # nothing changed in bronze yet
    assert _bronze()[("XMEAS_23", at)] == (old, "pi_20260324.csv")  # bronze keeps its value meanwhile

    code, listed = _cli(capsys, "conflicts", UC)
    assert code == 0 and len(listed) == 1
    (conflict,) = listed
    assert (conflict["asset"], conflict["tag"], pd.Timestamp(conflict["ts"]), conflict["status"]) == \
        (UC, "XMEAS_23", at, "open")
    assert (conflict["bronze_value"], conflict["bronze_file"]) == (old, "pi_20260324.csv")
    assert (conflict["new_value"], conflict["new_raw"], conflict["new_file"]) == \
        (31.5, "31.5000", "pi_20260324_corrected.csv")
    assert conflict["corrected_by"] is None

    capsys.readouterr()
    assert cli.main(["correct", UC, "no_such.csv"]) == 1
    assert "no open conflict of 'no_such.csv' in tep_reactor; files with open conflicts: " \
        "pi_20260324_corrected.csv" in capsys.readouterr().err
    code, (done,) = _cli(capsys, "correct", UC, "pi_20260324_corrected.csv", "--by", "eng1")
    assert code == 0 and (done["replaced"], done["left_open"], done["by"], done["days"]) == (1, 0, "eng1", [DAY])
    bronze = _bronze()
    assert bronze[("XMEAS_23", at)] == (31.5, "pi_20260324_corrected.csv")
    assert len(bronze) == 24 * 20 * 2  # the value replaced, not added: no duplicate, none lost
    assert all(bronze[k][0] == v for k, v in values.items() if k != ("XMEAS_23", at))
    # The rejected-value record of the corrected value is gone: it is in bronze now.
    rejected = pd.read_parquet(get_settings().quarantine_root / UC / "rows" / "pi_20260324_corrected.csv.parquet")
    assert len(rejected) == 12 * 20 * 2 - 1 and not rejected["reason"].str.startswith("conflicts").any()

    # The audit record: who, when, how, the old and the new value, both files.
    assert _cli(capsys, "conflicts", UC)[1] == []
    (audit,) = _cli(capsys, "conflicts", UC, "--all")[1]
    assert (audit["status"], audit["corrected_by"], audit["corrected_how"]) == ("replaced", "eng1", "cli correct")
    assert (audit["bronze_value"], audit["new_value"], audit["bronze_file"], audit["new_file"]) == \
        (old, 31.5, "pi_20260324.csv", "pi_20260324_corrected.csv")
    assert audit["corrected_at"] is not None
    assert _cli(capsys, "correct", UC, "pi_20260324_corrected.csv")[0] == 1  # nothing left to correct

    # The next ingest run, with no file landed, announces the corrected day: its bronze event names
    # it, and the features plan rebuilds it.
    result = pipeline.ingest(UC, "2026-03-25T00:00:00+00:00", "2026-03-26T00:00:00+00:00", "run-3")
    assert (result["files"], result["days"], result["corrected_days"]) == ([], [DAY], [DAY])
    again = pipeline.ingest(UC, "2026-03-25T00:00:00+00:00", "2026-03-26T00:00:00+00:00", "run-3")
    assert again["days"] == [DAY]  # a retry of the run announces the same days
    assert pipeline.ingest(UC, "2026-03-25T00:00:00+00:00", "2026-03-26T00:00:00+00:00", "run-4")["days"] == []
    plan = _build(result["days"])
    assert plan["days"] == [DAY]
    after = _feature_day(DAY)
    assert after.keys() and after != before
    features = pipeline.load_features(UC, DAY, "2026-03-25")
    bucket = features[features["ts"] == at]
    assert len(bucket) == 1
    assert float(bucket["XMEAS_23"].iloc[0]) == pytest.approx(31.5)  # the bucket's mean: its one value


def test_on_conflict_replace_takes_the_later_value_with_its_audit_record(use_case_dir):
    _write_spec(use_case_dir, "replace")
    first, values = _export(hours=2)
    _land("a.csv", first)
    pipeline.ingest(UC, f"{DAY}T00:00:00+00:00", "2026-03-25T00:00:00+00:00", "run-1")
    at = pd.Timestamp(DAY, tz="UTC") + 5 * STEP
    later = pd.Timestamp(DAY, tz="UTC") + 50 * STEP  # a value a.csv did not have
    resent, _ = _export(hours=3, changes={("XMEAS_24", at): "10.2500"})
    _land("b.csv", resent)
    result = pipeline.ingest(UC, f"{DAY}T00:00:00+00:00", "2026-03-25T00:00:00+00:00", "run-2")
    (item,) = result["files"]
    assert item["status"] == "ingested" and (item["conflicts"], item["values_replaced"]) == (1, 1), item
    # 20 new rows (2 values each) and the replaced value written; the repeated ones rejected.
    assert (item["values_written"], item["values_rejected"]) == (20 * 2 + 1, 40 * 2 - 1)
    assert item["replaced_days"] == [DAY] and result["corrected_days"] == [DAY] and result["days"] == [DAY]
    bronze = _bronze()
    assert bronze[("XMEAS_24", at)] == (10.25, "b.csv")
    assert ("XMEAS_23", later) in bronze and len(bronze) == 60 * 2
    assert all(bronze[k][0] == v for k, v in values.items() if k != ("XMEAS_24", at))
    (audit,) = corrections.listed(UC, status=None)
    assert (audit["status"], audit["corrected_by"], audit["corrected_how"]) == \
        ("replaced", "source pi_csv", "on_conflict: replace")
    assert (audit["bronze_value"], audit["new_value"]) == (values[("XMEAS_24", at)], 10.25)
    assert (audit["bronze_file"], audit["new_file"], audit["announced_run"]) == ("a.csv", "b.csv", "run-2")


def test_a_wrong_on_conflict_is_a_config_error_naming_the_field(use_case_dir):
    from plantops.config import get_use_case

    _write_spec(use_case_dir, "overwrite")
    with pytest.raises(ConfigError, match=r"tep_reactor.yaml: ") as err:
        get_use_case(UC)
    assert "landing.sources.0.on_conflict: expected keep" in str(err.value)
    assert "or replace" in str(err.value) and "(got 'overwrite')" in str(err.value)
