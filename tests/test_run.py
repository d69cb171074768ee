"""From a plant's export to the first monitor decision with the project's own commands (#25).

The path of docs/adding-a-use-case.md, run as the user runs it (``python -m plantops.cli``
subprocesses): init-use-case from a PI-like CSV export of four days, land it, ingest, then
``run <uc> all`` builds the features, trains and registers the first champion, scores the newest
day and records the monitor's decision, through the use case's real DAGs on the run's metadata DB.
Beside it: the features DAG run without params, and the command's errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops import cli
from plantops.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = "2026-03-21"
DAYS = 4


def history_export(path: Path, first_day: str = FIRST_DAY, days: int = DAYS) -> Path:
    """A PI-like CSV export: 5-minute rows of ``days`` days from ``first_day``, naive site-local
    timestamps in ``Timestamp``, headers that are no identifiers, three tags moving together and
    one on its own, a digital state in one cell (that column is text, as PI writes it)."""
    rng = np.random.default_rng(7)
    n = 288 * days
    wave = np.sin(np.arange(n) / 40.0)
    frame = pd.DataFrame({
        "Timestamp": pd.date_range(f"{first_day} 00:00", periods=n, freq="5min"),
        "FIC-101.PV": np.round(50 + 5 * wave + rng.normal(0, 0.5, n), 4),
        "TI 102 Temp.PV": np.round(80 + 3 * wave + rng.normal(0, 0.4, n), 4),
        "PI103.PV": np.round(12 - 2 * wave + rng.normal(0, 0.3, n), 4).astype(str),
        "LI104.PV": np.round(60 + rng.normal(0, 1, n), 4),
    })
    frame.loc[100, "PI103.PV"] = "Bad"
    frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return path


def new_state_export(path: Path, day: str) -> Path:
    """A day of the same export after a recipe change: every tag steady near the top of its range
    (inside the drafted limits, so every value lands), far from the reference: drift and alarms."""
    rng = np.random.default_rng(9)
    n = 288
    pd.DataFrame({
        "Timestamp": pd.date_range(f"{day} 00:00", periods=n, freq="5min"),
        "FIC-101.PV": np.round(54.5 + rng.normal(0, 0.3, n), 4),
        "TI 102 Temp.PV": np.round(83 + rng.normal(0, 0.3, n), 4),
        "PI103.PV": np.round(9.5 + rng.normal(0, 0.2, n), 4),
        "LI104.PV": np.round(62.5 + rng.normal(0, 0.5, n), 4),
    }).to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    return path


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")], captured.err


# -- the command's errors (no Airflow run) -------------------------------------------------------

@pytest.fixture
def line_8(plantops_home, monkeypatch, tmp_path, capsys) -> str:
    """A use case drafted from the export, nothing ingested yet."""
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(plantops_home / "use_cases"))
    sample = history_export(tmp_path / "pi_export_20260324.csv", days=1)
    assert run_cli(capsys, "init-use-case", "line_8", "--from", str(sample), "--timezone", "Europe/Berlin")[0] == 0
    return "line_8"


@pytest.mark.parametrize(("argv", "message"), [
    (["nope_1", "all"], "unknown use case 'nope_1': no "),
    (["line_8", "scoring"], "unknown stage 'scoring': one of features, train, score, monitor, all"),
    (["line_8", "all"], "line_8 has no bronze yet: run python -m plantops.cli ingest line_8 --day YYYY-MM-DD first"),
    (["line_8", "features", "--start", "2026-03-32", "--end", "2026-04-02"],
     "expected --start/--end as YYYY-MM-DD, got '2026-03-32' and '2026-04-02'"),
    (["line_8", "features", "--start", "2026-03-24"], "give --start and --end together"),
    (["line_8", "features", "--start", "2026-03-24", "--end", "2026-03-24"], "--end (2026-03-24) must be after"),
])
def test_run_refuses_what_it_cannot_do_and_says_why(line_8, capsys, argv, message):
    code, rows, err = run_cli(capsys, "run", *argv)
    assert code == 1 and rows == []
    assert err.startswith("run: ") and message in err, err


# -- the features DAG without params ---------------------------------------------------------------

def test_features_without_params_builds_the_unbuilt_bronze_days_or_names_the_params(
        airflow_db, line_8, capsys, tmp_path):
    from airflow.utils.log.log_reader import TaskLogReader

    from plantops.config import get_use_case
    from plantops.orchestration import tasklogs
    from plantops.orchestration.dagfactory import assets, build_features
    from plantops.stages import pipeline

    use_case = get_use_case(line_8)
    dag = build_features(use_case, assets(use_case))
    tasklogs.install()

    def plan_fails(day: int) -> str:
        """A manual run without params: plan_window fails at once (no retry); its log's last line."""
        dr = dag.test(logical_date=datetime(2026, 3, day, tzinfo=timezone.utc))
        (plan,) = [ti for ti in dr.get_task_instances() if ti.task_id == "plan_window"]
        assert str(dr.state) == "failed" and str(plan.state) == "failed" and plan.try_number == 1
        events = [str(m.event) for m in TaskLogReader().read_log_chunks(plan, plan.try_number, {})[0]]
        return next(e for e in reversed(events) if e.startswith("plan_window failed"))

    # Before any ingest: what to do first, and the params that name days.
    error = plan_fails(1)
    assert "line_8 has no bronze yet: ingest first (python -m plantops.cli ingest line_8" in error, error
    assert '{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}' in error, error

    folder = get_settings().landing_root / line_8
    folder.mkdir(parents=True)
    history_export(folder / "pi_export_20260324.csv", days=1)
    code, rows, _ = run_cli(capsys, "ingest", line_8, "--day", FIRST_DAY)
    assert code == 0, rows
    written = rows[-1]["days"]
    assert written == ["2026-03-20", FIRST_DAY]  # Berlin's midnight is 23:00 UTC the day before
    # What plan_window plans without params: every bronze day without features, with its range.
    assert pipeline.unbuilt_days(line_8) == written
    assert pipeline.plan_features(line_8, pipeline.unbuilt_days(line_8))["ranges"] == "2026-03-20:2026-03-22"
    # Once every bronze day has features, a run without params has nothing to choose: it says so.
    for day in written:
        (get_settings().features_root / line_8 / f"date={day}").mkdir(parents=True)
    error = plan_fails(2)
    assert f"every bronze day of line_8 (2026-03-20..{FIRST_DAY}) has features: to rebuild days, name them: " \
           '{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}' in error, error


def test_days_between_names_the_params_it_needs():
    from plantops.stages.pipeline import days_between

    assert days_between("2026-03-20", "2026-03-22") == ["2026-03-20", "2026-03-21"]
    with pytest.raises(ValueError, match=r'give both start and end: \{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"\}'):
        days_between("2026-03-20", None)
    with pytest.raises(ValueError, match=r"expected days as .*got start='yesterday'"):
        days_between("yesterday", "2026-03-22")


# -- the docs path, end to end ------------------------------------------------------------------

def cli_lines(env: dict[str, str], *argv: str, expect: int = 0) -> list[dict]:
    """Run ``python -m plantops.cli ...`` as the user does; its JSON lines."""
    done = subprocess.run([sys.executable, "-m", "plantops.cli", *argv], env=env, cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == expect, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.e2e
def test_from_an_export_to_the_first_monitor_decision_with_the_cli(airflow_db, tmp_path):
    """docs/adding-a-use-case.md: init-use-case, land, ingest, run all -> features, a champion,
    predictions, a monitor decision; the same run's log has no XCom miss. Then a plant change: the
    monitor's approval is reported, not waited for."""
    uc = "onboard_1"
    home = airflow_db  # the run's migrated metadata DB: the command finds it migrated
    env = {**os.environ, "PLANTOPS_HOME": str(home), "PLANTOPS_USE_CASES": str(tmp_path / "use_cases"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    sample = history_export(tmp_path / "pi_export_20260324.csv")
    (drafted,) = cli_lines(env, "init-use-case", uc, "--from", str(sample), "--timezone", "Europe/Berlin")
    assert drafted["tags"] == 4 and drafted["digital_states"] == {"Bad": 1}
    landing = home / "landing" / uc
    landing.mkdir(parents=True)
    shutil.copy(sample, landing / sample.name)
    *_, ingested = cli_lines(env, "ingest", uc, "--day", "2026-03-24")
    bronze = ingested["days"]
    assert bronze == ["2026-03-20", "2026-03-21", "2026-03-22", "2026-03-23", "2026-03-24"]

    started, features, train, score, monitor = cli_lines(env, "run", uc, "all")
    assert [r["stage"] for r in (features, train, score, monitor)] == ["features", "train", "score", "monitor"]
    assert features["days_built"] == bronze and features["rows"] > 0
    (trained,) = train["trained"]
    assert (trained["registered_model"], trained["version"], trained["decision"]) == (uc, "1", "promoted")
    assert score["days"] == ["2026-03-24"] and score["rows_scored"] > 200  # 5-minute buckets of the last day
    (decision,) = monitor["decisions"]
    assert decision["day"] == "2026-03-24" and decision["decision"] == "ok", decision

    # What the rows say is in the stores: the champion alias, the predictions, the decision record.
    assert os.environ["PLANTOPS_HOME"] == str(home)  # this process reads the same stores
    from plantops.sources import historian
    from plantops.stages import decisions, registry

    assert registry.champion(uc)[0] == "1"
    predictions = historian.read_predictions(uc, datetime(2026, 3, 24, tzinfo=timezone.utc),
                                             datetime(2026, 3, 25, tzinfo=timezone.utc))
    assert len(predictions) == score["rows_scored"] and set(predictions["model_version"]) == {"1"}
    (record,) = [r for r in decisions.for_run(uc, monitor["run_id"]) if r["kind"] == "monitor"]
    assert record["branch"] == decision["decision"] and record["reason"] == decision["reason"]
    # A successful features run logs no XCom miss (a mapped result read item by item used to).
    log_text = Path(started["log"]).read_text()
    assert "publish_features" in log_text and "XCom not found" not in log_text

    # A recipe change (a plant event) and a day in the new state: the monitor asks an engineer.
    # The command reports the pending approval and returns (exit 3) instead of waiting forever.
    historian.record_plant_event(uc, datetime(2026, 3, 26, 2, tzinfo=timezone.utc), "setpoint_change",
                                 "new recipe", "ops1")
    new_state_export(landing / "pi_export_20260326.csv", "2026-03-26")
    assert cli_lines(env, "ingest", uc, "--day", "2026-03-26")[-1]["days"] == ["2026-03-25", "2026-03-26"]
    _, rebuilt = cli_lines(env, "run", uc, "features", "--start", "2026-03-25", "--end", "2026-03-27")
    assert rebuilt["days_built"] == ["2026-03-25", "2026-03-26"]
    _, scored = cli_lines(env, "run", uc, "score", "--start", "2026-03-26", "--end", "2026-03-27")
    assert scored["days"] == ["2026-03-26"] and scored["alarms"] > 0
    _, asked = cli_lines(env, "run", uc, "monitor", "--start", "2026-03-26", "--end", "2026-03-27", expect=3)
    (decision,) = asked["decisions"]
    assert (decision["day"], decision["decision"], decision["rule"]) == ("2026-03-26", "approval", "plant_change")
    pending = asked["pending_approval"]
    assert (pending["dag_id"], pending["task_id"], pending["assigned"]) == (f"{uc}__monitor", "request_approval",
                                                                            ["eng1"])
    assert "Required Actions" in pending["answer"]
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:  # left waiting for the answer in the metadata DB
        state = session.scalar(select(TaskInstance.state).where(
            TaskInstance.dag_id == f"{uc}__monitor", TaskInstance.run_id == asked["run_id"],
            TaskInstance.task_id == "request_approval"))
    assert str(state) == "awaiting_input"
