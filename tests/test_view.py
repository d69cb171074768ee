"""The "Plant ML" view: a small real state (decision records through the real writers, a landed
file quarantined through the landing functions, predictions through the historian writer), the
plugin's FastAPI app called through a test client, the page and its data checked against it."""

from __future__ import annotations

import importlib.util
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UC = "tep_reactor"
MONITOR = f"{UC}__monitor"


def _plugin():
    if "plantops_plugin" not in sys.modules:
        spec = importlib.util.spec_from_file_location("plantops_plugin", REPO / "plugins" / "plantops_plugin.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["plantops_plugin"] = module
        spec.loader.exec_module(module)
    return sys.modules["plantops_plugin"]


def _monitor(run_id: str, day: str, branch: str, rule: str | None, reason: str, *, drift_share: float,
             alarm_rate: float | None, n: int, alarm_tags: list[dict] | None = None, events: list[dict] | None = None,
             report: Path | None = None) -> None:
    """A monitor decision with the fields pipeline.assess records."""
    from plantops.stages import decisions

    decisions.record(UC, run_id, "monitor", branch, reason, {
        "day": day, "asset": UC, "registered_model": UC, "branch": branch, "reason": reason, "rule": rule,
        "guardrail": None, "drift_share": drift_share, "drifted_columns": ["XMEAS_9", "XMEAS_21"],
        "report_path": str(report) if report else None, "plant_events": events or [], "champion_version": "1",
        "alarm_rate": alarm_rate, "n_predictions": n, "alarm_tags": alarm_tags or [], "feedback": [],
        "drift": {"drift_share": drift_share, "n_drifted": 2, "n_columns": 52,
                  "drifted_columns": ["XMEAS_9", "XMEAS_21"],
                  "column_scores": {"XMEAS_9": 1.84, "XMEAS_21": 0.72}, "shift_sd": {"XMEAS_9": 2.5, "XMEAS_21": -0.8}},
    })


@pytest.fixture
def state(plantops_home):
    """Four judged days, a champion, an answered and a pending approval, a feedback, a quarantined file, predictions."""
    import pandas as pd

    from plantops.settings import get_settings
    from plantops.sources import historian, landing
    from plantops.stages import decisions
    from plantops.stages.pipeline import record_answer

    decisions.record(UC, "scheduled__2026-03-23T02:00:00+00:00", "train", "promoted", "no champion to compare with", {
        "result": {"version": "1", "run_id": "0a1b2c3d", "registered_model": UC, "model_kind": "mspm_pca",
                   "promoted": True, "reason": "no champion to compare with",
                   "metrics": {"far": 0.012, "detection_rate": 0.81, "detection_rate_fault_1": 0.99,
                               "baseline_far": 0.02, "baseline_detection_rate": 0.64},
                   "champion_version": "1", "champion_metrics": {"far": 0.012, "detection_rate": 0.81}},
        "reference_start": None, "trigger": "scheduled", "reference_inherited": False, "asset": None,
    })
    report = get_settings().reports_root / UC / "manual__2026-03-25T10_00_00_00_00" / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>drift of 2026-03-25</body></html>")
    _monitor("manual__2026-03-24T10:00:00+00:00", "2026-03-24", "ok", None, "no drift: 0 of 52 tags drifted.",
             drift_share=0.0, alarm_rate=0.0125, n=480)
    _monitor("manual__2026-03-25T10:00:00+00:00", "2026-03-25", "upset", "upset",
             "upset: alarm rate 61% > 10%. The champion detects it.", drift_share=0.62, alarm_rate=0.6125, n=480,
             alarm_tags=[{"tag": "XMEAS_9", "alarms": 250, "first": 200, "median_shift_sd": 2.5},
                         {"tag": "XMEAS_21", "alarms": 120, "first": 40, "median_shift_sd": -0.8}], report=report)
    _monitor("manual__2026-03-27T10:00:00+00:00", "2026-03-27", "approval", "plant_change",
             "plant_change: maintenance: a process engineer must decide.", drift_share=0.3, alarm_rate=0.2, n=480,
             events=[{"ts": "2026-03-27T07:00:00+00:00", "kind": "maintenance", "asset": UC,
                      "description": "analyzer serviced", "author": "ops1"}])
    record_answer(UC, "manual__2026-03-27T10:00:00+00:00", {
        "chosen_options": ["Refuse: model still valid"], "params_input": {"reason": "transient after the service"},
        "responded_by_user": {"id": "eng1", "name": "eng1"}, "responded_at": "2026-03-27T11:00:00+00:00"},
        "refused", "2026-03-27")
    _monitor("manual__2026-03-28T10:00:00+00:00", "2026-03-28", "approval", "plant_change",
             "plant_change: setpoint_change: a process engineer must decide.", drift_share=0.7, alarm_rate=0.5, n=480)

    from plantops.stages.feedback import record_feedback

    record_feedback(UC, "manual__fb1", "2026-03-25T00:00:00+00:00", "2026-03-26T00:00:00+00:00", "confirmed_fault",
                    "reactor pressure really rose", "eng1")

    bad = plantops_home / "incoming" / "analyzer_0328.csv"
    bad.parent.mkdir()
    bad.write_text("ts,XMEAS_23\nnot a time,1.0\n")
    landing.quarantine(UC, landing.LandedFile(bad, bad.stat().st_size, landing.sha256_of(bad)),
                       "column ts: 1 value is not a timestamp", {"rows_in": 1, "rows_written": 0, "rows_rejected": 1},
                       "manual__ingest1")

    start = datetime(2026, 3, 28, tzinfo=timezone.utc)
    ts = [start + timedelta(minutes=3 * i) for i in range(10)]
    scores = [0.2, 0.4, 0.5, 1.5, 2.0, 9.0, 0.3, 0.1, 1.2, 0.6]
    historian.write_predictions(pd.DataFrame({
        "asset": UC, "ts": ts, "model_version": "1", "score": scores, "threshold": 1.0,
        "alarm": [int(s > 1) for s in scores], "expected": None, "residual": None, "top_tags": None}))
    return plantops_home


def signed_in_client():
    """A test client of the plugin's app with ops1 signed in (the api-server's login replaced)."""
    from fastapi.testclient import TestClient

    plugin = _plugin()
    plugin.app.dependency_overrides[plugin.get_user] = lambda: {"username": "ops1"}
    # The embedded tier's auth manager lets every user read every DAG (per-site reads: test_site_access.py).
    plugin.app.dependency_overrides[plugin.readable] = lambda: plugin.Readable(None)
    try:
        yield TestClient(plugin.app)
    finally:
        plugin.app.dependency_overrides.clear()


@pytest.fixture
def client(state):
    yield from signed_in_client()


def test_use_case_data_holds_exact_values(state):
    from plantops.stages import overview

    view = overview.use_case_view(UC)
    champ = view["champion"]
    assert (champ["version"], champ["trigger"], champ["mlflow_run_id"], champ["mlflow_link"]) == \
        ("1", "scheduled", "0a1b2c3d", None)
    assert champ["metrics"] == {"model": {"far": 0.012, "detection_rate": 0.81},
                                "baseline": {"far": 0.02, "detection_rate": 0.64}}
    days = view["timeline"]
    assert [(d["day"], d["branch"], d["rule"]) for d in days] == [
        ("2026-03-28", "approval", "plant_change"), ("2026-03-27", "approval", "plant_change"),
        ("2026-03-25", "upset", "upset"), ("2026-03-24", "ok", None)]
    upset = days[2]
    assert (upset["alarms"], upset["n_predictions"]) == (294, 480)
    assert upset["alarm_tags"] == [{"tag": "XMEAS_9", "alarms": 250}, {"tag": "XMEAS_21", "alarms": 120}]
    assert upset["report_path"] == f"/plantops/reports/{UC}/manual__2026-03-25T10_00_00_00_00/drift.html"
    assert upset["run_path"] == f"/dags/{MONITOR}/runs/manual__2026-03-25T10%3A00%3A00%2B00%3A00"
    assert [(f["kind"], f["author"]) for f in upset["feedback"]] == [("confirmed_fault", "eng1")]
    assert days[1]["approval"]["branch"] == "refused" and days[1]["approval"]["reason"] == "transient after the service"
    assert days[1]["plant_events"][0]["description"] == "analyzer serviced"
    assert days[0]["approval"]["pending"] is True
    assert [(p["day"], p["required_actions_path"]) for p in view["pending_approvals"]] == [
        ("2026-03-28", f"/dags/{MONITOR}/runs/manual__2026-03-28T10%3A00%3A00%2B00%3A00/required_actions")]
    assert [(q["file"], q["reason"]) for q in view["quarantined"]] == [
        ("analyzer_0328.csv", "column ts: 1 value is not a timestamp")]
    assert [(r["file"], r["status"], r["rows_rejected"]) for r in view["rejected"]] == [
        ("analyzer_0328.csv", "quarantined", 1)]
    assert (view["scores"]["day"], view["scores"]["alarms"], len(view["scores"]["points"])) == ("2026-03-28", 4, 10)


def test_page_shows_champion_days_alarms_report_and_quarantine(client):
    resp = client.get(f"/view/{UC}")
    assert resp.status_code == 200
    page = resp.text
    assert "tep_reactor v1" in page
    for day, branch, reason in [("2026-03-24", "ok", "no drift: 0 of 52 tags drifted."),
                                ("2026-03-25", "upset", "upset: alarm rate 61% &gt; 10%. The champion detects it."),
                                ("2026-03-28", "approval", "plant_change: setpoint_change: a process engineer must decide.")]:
        assert f"<b>{day}</b>" in page and f">{branch}</span>" in page and reason in page
    assert "XMEAS_9 (250), XMEAS_21 (120)" in page
    assert "294 of 480 (61%)" in page
    assert f'href="/plantops/reports/{UC}/manual__2026-03-25T10_00_00_00_00/drift.html"' in page
    assert "analyzer_0328.csv" in page and "column ts: 1 value is not a timestamp" in page
    assert "Approvals waiting (1)" in page
    assert page.count("<circle") == 4  # the four alarms of the latest scored day
    # the linked report is served
    assert client.get(f"/reports/{UC}/manual__2026-03-25T10_00_00_00_00/drift.html").text.endswith(
        "drift of 2026-03-25</body></html>")
    assert client.get(f"/reports/{UC}/../plantops.db").status_code == 404


def test_values_are_escaped(client):
    from plantops.stages import decisions

    decisions.record(UC, "manual__x", "monitor", "ok", "<script>alert(1)</script>", {"day": "2026-03-29"})
    page = client.get(f"/view/{UC}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_index_lists_every_use_case_and_asset(client):
    data = client.get("/view/data").json()
    assert [(u["use_case"], u["asset"]) for u in data["use_cases"]] == [
        ("pv_cells", "el_line_1"), ("tep_reactor", "tep_reactor"), ("wind_fleet", "R80711"), ("wind_fleet", "R80721"),
        ("wind_fleet", "R80736"), ("wind_fleet", "R80790")]
    tep = data["use_cases"][1]
    assert (tep["champion_version"], tep["last_decision"]["day"], tep["last_decision"]["branch"],
            tep["pending_approvals"]) == ("1", "2026-03-28", "approval", 1)
    page = client.get("/view/").text
    assert 'href="/plantops/view/wind_fleet?asset=R80736"' in page and "<td>v1</td>" in page
    assert tep["last_decision"]["report_path"] is None and "drift report" not in page  # 03-28 wrote no report
    assert client.get("/view/no_such_case").status_code == 404
    # The newest day's drift report is one click from the index (the navigation's Plant ML is the other).
    from plantops.settings import get_settings

    report = get_settings().reports_root / UC / "manual__2026-03-29T10_00_00_00_00" / "drift.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html><body>drift of 2026-03-29</body></html>")
    _monitor("manual__2026-03-29T10:00:00+00:00", "2026-03-29", "ok", None, "no drift", drift_share=0.0,
             alarm_rate=0.0, n=480, report=report)
    page = client.get("/view/").text
    assert f'href="/plantops/reports/{UC}/manual__2026-03-29T10_00_00_00_00/drift.html"' in page


def test_anonymous_request_is_refused(state):
    from fastapi.testclient import TestClient

    plugin = _plugin()
    plugin.app.dependency_overrides.clear()
    for path in ("/view/", f"/view/{UC}", f"/view/{UC}/data"):
        assert TestClient(plugin.app).get(path).status_code in (401, 403), path


def test_plugin_registers_the_view_in_the_navigation():
    plugin = _plugin()
    (view,) = plugin.PlantopsPlugin.external_views
    assert (view["href"], view["destination"], view["url_route"]) == ("/plantops/view/", "nav", "plant-ml")
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    ExternalViewResponse.model_validate(view)  # the shape the UI's plugin endpoint serves


def test_pipeline_health_from_the_metadata_db(airflow_db, plantops_home):
    """A paused DAG with a queued run is named as stuck; a DAG never parsed says so (known: False)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    from plantops.config import get_use_case
    from plantops.stages import overview

    train = f"{UC}__train"
    with create_session() as session:
        # Whether the monitor DAG was parsed depends on the tests before this one (one DB per run).
        monitor_parsed = session.get(DagModel, MONITOR) is not None
        if session.get(DagBundleModel, "view-test") is None:
            session.add(DagBundleModel(name="view-test"))
            session.flush()
        session.merge(DagModel(dag_id=train, bundle_name="view-test", is_paused=True, max_active_runs=1))
        session.flush()
        session.add(DagRun(dag_id=train, run_id="approved__m1", run_type=DagRunType.MANUAL,
                           state=DagRunState.QUEUED, run_after=datetime(2026, 3, 28, tzinfo=timezone.utc)))
    try:
        h = overview.health(get_use_case(UC))
        assert h["available"] is True and h["paused"] == [train] and h["queued"] == 1 and h["stuck"] == [train]
        row = next(d for d in h["dags"] if d["dag_id"] == train)
        assert row["stuck"].startswith("the DAG is paused") and row["oldest_queued"]["run_id"] == "approved__m1"
        assert next(d for d in h["dags"] if d["dag_id"] == MONITOR)["known"] is monitor_parsed
    finally:
        with create_session() as session:
            session.query(DagRun).filter(DagRun.dag_id == train).delete()
            session.query(DagModel).filter(DagModel.dag_id == train).delete()


def test_drift_report_opens_with_a_summary_drifted_tags_first(tmp_path):
    """The written report starts (inside its body) with the verdict and a table of every tag,
    the drifted ones first, most drifted first, each with its score and shift."""
    import numpy as np
    import pandas as pd

    from plantops.config import Drift
    from plantops.stages.monitoring import compute_drift

    rng = np.random.default_rng(7)
    reference = pd.DataFrame({c: rng.normal(0, 1, 400) for c in ("a", "b", "c", "d")})
    current = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(3, 1, 200),
                            "c": rng.normal(0, 1, 200), "d": rng.normal(-1.5, 1, 200)})
    path = tmp_path / "run" / "drift.html"
    result = compute_drift(reference, current, ["a", "b", "c", "d"],
                           Drift(method="wasserstein", column_threshold=0.5, share_threshold=0.3), path)
    assert result.drifted_columns == ("b", "d") and result.report_path == str(path.resolve())
    text = path.read_text()
    body = re.search(r"<body[^>]*>", text)
    assert text[body.end():].startswith('<section id="plantops-summary"')  # before Evidently's panels
    summary = body.end()
    section = text[summary:text.index("</section>", summary)]
    assert "Drift summary: DRIFT" in section and "2 of 4 tags drifted (50%)" in section
    order = [section.index(f"<td>{c}</td>") for c in ("b", "d")]
    rest = [section.index(f"<td>{c}</td>") for c in ("a", "c")]
    assert order[0] < order[1] < min(rest)
    b_row = section[order[0]:section.index("</tr>", order[0])]
    assert f"{result.column_scores['b']:.3f}" in b_row and f"{result.shift_sd['b']:+.2f}" in b_row
    assert result.shift_sd["b"] > 2.5


def test_approval_form_needs_no_field_to_retrain():
    """Both form fields are optional (Airflow's form marks a field required unless its type admits
    null); an empty answer validates, and an approved new reference defaults to the plant event."""
    from airflow.sdk.definitions.param import ParamsDict

    from plantops.orchestration.dagfactory import build_all
    from plantops.stages.pipeline import approved_trainings

    monitor = build_all()[MONITOR]
    params = monitor.get_task("request_approval").params  # with the DAG's own "day", which the form filters out
    form = ParamsDict({name: params.get_param(name) for name in ("reason", "reference_start")})
    for name in form:
        assert "null" in form.get_param(name).schema["type"] and form.get_param(name).value is None, name
    assert form.validate() == {"reason": None, "reference_start": None}
    asked = [{"asset": UC, "day": "2026-03-28", "reason": "plant change",
              "plant_events": [{"ts": "2026-03-28T07:30:00+00:00", "kind": "setpoint_change"}]}]
    answer = {"chosen_options": ["Retrain from a new reference window"], "params_input": {"reason": None,
              "reference_start": None}, "responded_by_user": {"id": "eng1", "name": "eng1"}}
    (trigger,) = approved_trainings(UC, "manual__m", asked, [answer])
    assert trigger["conf"]["reference_start"] == "2026-03-28T07:30:00+00:00"
    # the triggered training names the day it answers in the UI's run list
    assert trigger["note"] == "tep_reactor, 2026-03-28: retrain_new_reference approved by eng1 in monitor run manual__m"


def test_triggered_retrain_names_the_day_judged():
    from plantops.stages.pipeline import retrain_requests

    (request,) = retrain_requests(UC, "manual__9", [{"asset": UC, "day": "2026-03-26", "branch": "retrain",
                                                     "reason": "false alarms"}])
    assert request["note"] == "tep_reactor, 2026-03-26: stale model: retrain asked by monitor run manual__9"


def test_monitor_runs_are_noted_with_the_day_they_judge():
    from plantops.orchestration.runnotes import end_note, start_note, use_case_of

    assert use_case_of("tep_reactor__monitor") == "tep_reactor" and use_case_of("tep_reactor__train") is None
    # at the start: the day param, else the newest day of the triggering asset events
    assert start_note(UC, {"day": "2026-03-26"}, ["2026-03-28"]) == "tep_reactor, 2026-03-26: judging"
    assert start_note(UC, {"day": None}, ["2026-03-28", "2026-03-27"]) == "tep_reactor, 2026-03-28: judging"
    assert start_note(UC, {}, []) == "tep_reactor: judging the newest feature day"
    # at the end: what each asset's assessment returned
    assert end_note(UC, [{"asset": UC, "day": "2026-03-28", "branch": "approval", "rule": "plant_change"}]) == \
        "tep_reactor, 2026-03-28: approval (plant_change)"
    fleet = [{"asset": "R80790", "day": "2014-06-16", "branch": "ok", "rule": "ok"},
             {"asset": "R80711", "day": "2014-06-16", "branch": "approval", "rule": "drift", "guardrail": "plant_event"}]
    assert end_note("wind_fleet", fleet) == "wind_fleet, 2014-06-16: R80711 approval (plant_event), R80790 ok"
    assert end_note(UC, []) is None


def test_operators_trigger_but_neither_delete_dags_nor_write_xcoms():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from plantops.environments import localenv
    from plantops.orchestration.auth import PlantopsAuthManager

    assert localenv.USERS == {"ops1": "user", "eng1": "user", "ops2": "user", "eng2": "user"}
    manager = PlantopsAuthManager()
    ops1 = SimpleAuthManagerUser(username="ops1", role=localenv.USERS["ops1"])
    admin = SimpleAuthManagerUser(username="root", role="admin")
    viewer = SimpleAuthManagerUser(username="guest", role="viewer")

    def can(user, method, entity=None) -> bool:
        return manager.is_authorized_dag(method=method, user=user, access_entity=entity)

    assert can(ops1, "POST", DagAccessEntity.RUN) and can(ops1, "PUT")  # trigger, pause/unpause
    assert can(ops1, "PUT", DagAccessEntity.HITL_DETAIL)  # then the assigned-users check decides
    assert can(ops1, "GET", DagAccessEntity.XCOM) and can(ops1, "DELETE", DagAccessEntity.RUN)
    assert not can(ops1, "DELETE") and not can(ops1, "PUT", DagAccessEntity.XCOM)
    assert not can(ops1, "POST", DagAccessEntity.XCOM) and not can(ops1, "DELETE", DagAccessEntity.XCOM)
    assert can(admin, "DELETE") and can(admin, "PUT", DagAccessEntity.XCOM)
    assert not can(viewer, "POST", DagAccessEntity.RUN) and can(viewer, "GET")
    assert manager.is_authorized_hitl_task(assigned_users={"eng1"}, user=ops1) is False
