"""Access per site on the stack tier: the FAB auth manager, the real api-server and dag-processor on
the stack's PostgreSQL (its own database, ``airflow_access``: the pipeline's ``airflow`` database is
left alone), two use cases at two sites (the shipped tep_reactor at ``north`` and wind_fleet at
``coast``). DAGs are registered, never run: an approval waiting for an answer is written into
Airflow's ``hitl_detail`` table as a HITL task writes it.

Skipped unless the stack is up and PLANTOPS_STACK_TESTS=1 (CI=true: a missing stack fails).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from plantops.net import free_port

pytestmark = pytest.mark.stack
NORTH, COAST = "tep_reactor", "wind_fleet"
DATABASE = "airflow_access"


def _stack_or_skip():
    from plantops.environments import stack

    state = stack.status()
    if os.environ.get("CI") != "true" and (not state["postgres"] or os.environ.get("PLANTOPS_STACK_TESTS") != "1"):
        pytest.skip(f"stack tests: `make stack-up`, then PLANTOPS_STACK_TESTS=1 (now: {state})")
    if not state["postgres"]:
        pytest.fail(f"the native stack's PostgreSQL is not running ({state}); .ci/run starts it with `make stack-up`")
    return stack


def _fresh_database(stack) -> str:
    conn = stack._pg_connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DATABASE}"')
    conn.close()
    return stack._pg_url(DATABASE)


def _use_cases(folder: Path) -> Path:
    """The shipped tep_reactor (site north) and wind_fleet (site coast): each inherits its site's
    historian and approvers."""
    for use_case in (NORTH, COAST):
        shutil.copyfile(REPO / "include" / "use_cases" / f"{use_case}.yaml", folder / f"{use_case}.yaml")
    return folder


class Site:
    """The api-server as each demo user (REST with a bearer token from POST /auth/token)."""

    def __init__(self, env: dict[str, str], services) -> None:
        from plantops.stages.approval import AirflowApi

        self.env, self.services = env, services
        self.base = env["AIRFLOW__API__BASE_URL"]
        self.passwords = json.loads((Path(env["PLANTOPS_HOME"]) / "airflow" / "passwords.json").read_text())
        self.api = {user: AirflowApi(self.base, user, pw) for user, pw in self.passwords.items()}

    def status(self, user: str, method: str, path: str, **kwargs) -> int:
        return self.api[user].request(method, path, **kwargs).status_code

    def plugin(self, user: str, path: str) -> tuple[int, object]:
        import requests

        api = self.api[user]
        resp = requests.get(f"{self.base}/plantops{path}", headers=api._headers(), timeout=30)
        return resp.status_code, resp.json() if resp.headers.get("content-type", "").startswith("application/json") else None

    def dags(self, user: str) -> set[str]:
        resp = self.api[user].request("GET", "/dags", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        return {d["dag_id"] for d in resp.json()["dags"]}


@pytest.fixture(scope="module")
def site_access(tmp_path_factory):
    stack = _stack_or_skip()
    home = tmp_path_factory.mktemp("access-home")
    use_cases = _use_cases(tmp_path_factory.mktemp("use_cases"))
    env = {**stack.airflow_env(home, api_port=free_port()),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _fresh_database(stack),
           "PLANTOPS_USE_CASES": str(use_cases), "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"}
    services = stack.AirflowServices(env, home / "airflow-logs")
    services.log_dir.mkdir(parents=True, exist_ok=True)
    services.airflow("db", "migrate")
    services.python("-m", "plantops.environments.fabusers")
    saved = os.environ.get("PLANTOPS_USE_CASES")
    os.environ["PLANTOPS_USE_CASES"] = str(use_cases)
    try:
        services.start("api-server")
        services.start("dag-processor")
        site = Site(env, services)
        site.api["admin"].wait_healthy(timeout=180)
        deadline = time.monotonic() + 300
        while not {f"{NORTH}__monitor", f"{COAST}__monitor"} <= site.dags("admin"):
            assert time.monotonic() < deadline, f"the dag-processor did not register both use cases: {site.dags('admin')}"
            time.sleep(3)
        yield site
    finally:
        services.stop()
        if saved is None:
            os.environ.pop("PLANTOPS_USE_CASES", None)
        else:
            os.environ["PLANTOPS_USE_CASES"] = saved


def _waiting_approval(site: Site, use_case: str) -> tuple[str, str]:
    """A monitor run of ``use_case`` (triggered by the admin) whose request_approval waits for an
    answer from the site's approvers: (run id, hitlDetails path)."""
    from sqlalchemy import create_engine, text

    from plantops.config import get_use_case

    dag_id = f"{use_case}__monitor"
    resp = site.api["admin"].request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    tis = site.api["admin"].request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    ti = next(t for t in tis if t["task_id"] == "request_approval")
    approvers = [{"id": a.id, "name": a.name} for a in get_use_case(use_case).approvers]
    engine = create_engine(site.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO hitl_detail (ti_id, options, subject, body, defaults, multiple, params, assignees, "
            "created_at, params_input) VALUES (:ti, :options, :subject, '', :defaults, false, '{}', :assignees, "
            "now(), '{}')"),
            {"ti": uuid.UUID(ti["id"]), "options": json.dumps(["Retrain now", "Keep the champion"]),
             "subject": f"{use_case}: retrain?", "defaults": json.dumps(["Keep the champion"]),
             "assignees": json.dumps(approvers)})
    engine.dispose()
    return run_id, f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/request_approval/-1/hitlDetails"


def test_each_site_sees_only_its_dags(site_access):
    """GET /dags: a site's operator and engineer list their site's DAGs only; mlops1 and admin both."""
    north = {d for d in site_access.dags("admin") if d.startswith(f"{NORTH}__")}
    coast = {d for d in site_access.dags("admin") if d.startswith(f"{COAST}__")}
    assert north and coast
    assert site_access.dags("ops1") == site_access.dags("eng1") == north
    assert site_access.dags("ops2") == site_access.dags("eng2") == coast
    assert site_access.dags("mlops1") == north | coast


def test_another_sites_dags_are_403(site_access):
    """ops1 (north) may read and trigger tep_reactor; on wind_fleet (coast) the DAG, its runs, a
    trigger, its approvals and its Plant ML JSON, reports, heat maps and decisions are all 403."""
    s = site_access
    assert s.status("ops1", "GET", f"/dags/{NORTH}__monitor/dagRuns") == 200
    assert s.status("ops1", "PATCH", f"/dags/{NORTH}__train", json={"is_paused": False}) == 200
    assert s.status("ops1", "POST", f"/dags/{NORTH}__train/dagRuns", json={"logical_date": None, "conf": {}}) == 200
    for method, path in [("GET", f"/dags/{COAST}__monitor"), ("GET", f"/dags/{COAST}__monitor/dagRuns"),
                         ("GET", f"/dags/{COAST}__monitor/dagRuns/~/hitlDetails"),
                         ("GET", f"/dags/{COAST}__monitor/dagRuns/manual__x/taskInstances/request_approval/-1/hitlDetails"),
                         ("PATCH", f"/dags/{COAST}__monitor")]:
        assert s.status("ops1", method, path, json={"is_paused": False}) == 403, (method, path)
    assert s.status("ops1", "POST", f"/dags/{COAST}__train/dagRuns", json={"logical_date": None, "conf": {}}) == 403
    for path in (f"/view/{COAST}/data", f"/decisions/{COAST}", f"/reports/{COAST}/manual__x/drift.html",
                 f"/reports/{COAST}/heatmaps/v1/manual__x/cell0001.png", f"/view/{COAST}"):
        assert s.plugin("ops1", path)[0] == 403, path
    # (The stack here has no scores yet: the decisions and the index answer; a use case's page
    # needs its predictions table. The decision store is the stack's, shared with test_stack.)
    status, rows = s.plugin("ops1", f"/decisions/{NORTH}")
    assert status == 200 and {r["use_case"] for r in rows} <= {NORTH}
    status, index = s.plugin("ops1", "/view/data")
    assert status == 200 and {e["use_case"] for e in index["use_cases"]} == {NORTH}
    status, index = s.plugin("mlops1", "/view/data")
    assert status == 200 and {e["use_case"] for e in index["use_cases"]} == {NORTH, COAST}
    status, rows = s.plugin("mlops1", f"/decisions/{COAST}")
    assert status == 200 and {r["use_case"] for r in rows} <= {COAST}


def test_only_admin_deletes_dags_or_writes_xcoms(site_access):
    """No role but Admin may delete a DAG or write an XCom: the site roles and mlops get 403."""
    s = site_access
    for user in ("ops1", "eng1", "mlops1"):
        assert s.status(user, "DELETE", f"/dags/{NORTH}__score") == 403, user
        assert s.status(user, "POST", f"/dags/{NORTH}__score/dagRuns/manual__x/taskInstances/score/xcomEntries",
                        json={"key": "k", "value": 1}) == 403, user
    assert f"{NORTH}__score" in s.dags("admin")


def test_approvals_are_answered_by_the_sites_approvers(site_access):
    """eng2 (coast's approver) answers wind_fleet's approval and cannot answer tep_reactor's; ops2 (an
    operator, not assigned) cannot answer its own site's; eng1 answers tep_reactor's."""
    s = site_access
    _, coast = _waiting_approval(s, COAST)
    _, north = _waiting_approval(s, NORTH)
    answer = {"chosen_options": ["Keep the champion"], "params_input": {}}
    assert s.status("eng2", "GET", coast) == 200 and s.status("eng2", "GET", north) == 403
    assert s.status("eng2", "PATCH", north, json=answer) == 403
    assert s.status("ops2", "PATCH", coast, json=answer) == 403  # not a respondent
    resp = s.api["eng2"].request("PATCH", coast, json=answer)
    assert resp.status_code == 200, resp.text
    assert resp.json()["responded_by"]["name"] == "eng2"  # FAB's "id" is its numeric user id
    assert s.status("eng1", "PATCH", coast, json=answer) in (403, 409)
    assert s.status("eng1", "PATCH", north, json=answer) == 200


@pytest.fixture(scope="module")
def browser(site_access, tmp_path_factory):
    from test_stack import Browser

    chromium = Browser(site_access.base, site_access.passwords, tmp_path_factory.mktemp("screenshots"))
    yield chromium
    chromium.close()


def test_browser_shows_a_site_its_own_dags(site_access, browser):
    """In the real UI (Playwright, Debian's chromium, FAB's login page): ops1's DAG list shows
    north's DAGs and no coast DAG, and the Plant ML index shows tep_reactor only; the admin's DAG
    page offers Delete Dag."""
    ops = browser.login("ops1")
    ops.goto(f"{site_access.base}/dags")
    ops.get_by_role("link", name=f"{NORTH}__monitor").first.wait_for()
    browser.shot(ops, "ops1-dag-list")
    assert ops.get_by_text(COAST).count() == 0
    ops.get_by_role("link", name="Plant ML").first.wait_for()  # the navigation lists the plugin's view
    ops.goto(f"{site_access.base}/plantops/view/")
    ops.get_by_text(NORTH).first.wait_for()
    assert ops.get_by_text(COAST).count() == 0
    browser.shot(ops, "ops1-plant-ml")
    admin = browser.login("admin")
    admin.goto(f"{site_access.base}/dags/{NORTH}__score")
    admin.get_by_role("button", name="Delete Dag").wait_for()
    browser.shot(admin, "admin-dag-page")


@pytest.mark.xfail(strict=True, reason="Airflow 3.3's UI renders Delete Dag for every user who may read the DAG "
                   "(the button asks no auth manager); the API refuses the delete with 403 "
                   "(test_only_admin_deletes_dags_or_writes_xcoms)")
def test_browser_offers_operators_no_delete(site_access, browser):
    ops = browser.login("ops1")
    ops.goto(f"{site_access.base}/dags/{NORTH}__score")
    ops.get_by_role("button", name="Trigger").first.wait_for()
    browser.shot(ops, "ops1-dag-page")
    assert ops.get_by_role("button", name="Delete Dag").count() == 0
