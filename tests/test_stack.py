"""Stack tests: the pipeline against real PostgreSQL, a Trino server and an MLflow tracking server,
with Airflow's own services (api-server, scheduler, dag-processor, triggerer) on PostgreSQL and its
tasks on two Celery workers (Redis broker), features on the stack's Spark standalone cluster (a
master and two workers), driven through the REST API and a real browser (Playwright driving
Debian's chromium) as an operator and a process engineer would. Each browser step saves a
screenshot to $PLANTOPS_HOME/screenshots/NN-step.png.

`.ci/run` starts the stack (`make stack-up`). With CI=true a missing stack fails the run; locally
these tests skip unless the stack is up and PLANTOPS_STACK_TESTS=1 (they reset its databases).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from plantops.net import free_port

pytestmark = pytest.mark.stack
USE_CASE = "tep_reactor"
API_PORT = free_port()  # beside a running `make up` or `make stack-airflow`
APPROVAL_TIMEOUT = "1min"
PLANTOPS_DAGS = [f"{USE_CASE}__{s}" for s in ("ingest", "features", "train", "score", "monitor", "feedback")]
FEATURES = f"{USE_CASE}__features"
CELERY_HOSTS = {"celery-1", "celery-2"}  # [core] hostname_callable of the stack's two Celery workers
# build_features.py names its session; spark-submit's --name (the operator's) is overridden by it.
FEATURE_APPS = {"plantops-build-features", f"{USE_CASE}-features"}


@pytest.fixture(scope="module")
def stack_env():
    """The stack, reset to empty databases, and this process pointed at it (configuration only)."""
    from plantops import db
    from plantops.environments import stack

    state = stack.status()
    how = "start it with `make stack-up`, then run `PLANTOPS_STACK_TESTS=1 make test` (resets the stack's databases)"
    if os.environ.get("CI") != "true" and (not all(state.values()) or os.environ.get("PLANTOPS_STACK_TESTS") != "1"):
        pytest.skip(f"native stack tests: {how} (now: {state})")
    try:  # in CI a missing or broken stack fails the run; up() also restarts a service that died
        env = stack.up(fresh=True)
    except stack.StackError as exc:
        pytest.fail(f"the native stack is not usable ({state}); .ci/run starts it with `make stack-up`: {exc}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    Path(env["PLANTOPS_HOME"]).mkdir(parents=True, exist_ok=True)
    db.reset()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    db.reset()


def test_historian_reads_go_through_trino(stack_env):
    """Writes land in PostgreSQL; reads come back through Trino's catalog, with bound parameters;
    a wrong catalog, schema or table is a clear error; an unreachable Trino is HistorianUnavailable."""
    import pandas as pd
    from sqlalchemy import text

    from plantops import db
    from plantops.sources import historian
    from plantops.config import get_use_case
    from plantops.stages.ingest import HistorianUnavailable, ingest_historian

    assert stack_env["PLANTOPS_HISTORIAN_READ_URL"].startswith("trino://")
    ts = pd.date_range("2026-02-01", periods=4, freq="3min", tz="UTC")
    frame = pd.DataFrame({"asset": "probe", "tag": "XMEAS_1", "ts": ts, "value": [1.0, 2.0, 3.0, 4.0],
                          "quality": "good"})
    historian.write_tag_values(frame)
    with historian.reader().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historian WHERE asset = 'probe'")).scalar() == 4
        since = conn.execute(text("SELECT current_timestamp")).scalar()
    got = historian.read_window("probe", ["XMEAS_1", "no'such"], ts[0], ts[-1] + timedelta(minutes=1))
    assert got["value"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert str(historian.reader().url).startswith("trino://")
    with historian.reader().connect() as conn:
        # What Trino ran for the read: a prepared statement executed with parameters; the odd tag
        # name (a quote in it) never appears in any SQL text.
        ran = [q for (q,) in conn.execute(text(
            "SELECT query FROM system.runtime.queries WHERE created >= :since AND query NOT LIKE '%system.runtime%'"),
            {"since": since})]
    reads = [q for q in ran if q.startswith("EXECUTE") and "FROM historian" in q]
    assert reads, ran
    statement, _, values = reads[0].partition("' USING ")
    assert "historian.tag IN (?, ?)" in statement and "no''such" not in statement and "no''such" in values
    assert historian.known_tags("probe", ["XMEAS_1", "XMEAS_99"]) == {"XMEAS_1"}

    wrong = stack_env["PLANTOPS_HISTORIAN_READ_URL"].replace("/historian/public", "/historian/nosuchschema")
    with pytest.raises(historian.SourceMismatch, match="table 'historian' not found"):
        historian.check_source(wrong)

    use_case = get_use_case(USE_CASE)
    os.environ["PLANTOPS_HISTORIAN_READ_URL"] = "trino://plantops@127.0.0.1:1/historian/public"
    db.reset()
    try:
        with pytest.raises(HistorianUnavailable, match="unreachable"):
            ingest_historian(use_case, datetime(2026, 2, 1, tzinfo=timezone.utc),
                             datetime(2026, 2, 2, tzinfo=timezone.utc), "probe-run")
    finally:
        os.environ["PLANTOPS_HISTORIAN_READ_URL"] = stack_env["PLANTOPS_HISTORIAN_READ_URL"]
        db.reset()
    with historian.engine().begin() as conn:
        conn.execute(text("DELETE FROM historian WHERE asset = 'probe'"))


def test_each_site_reads_its_own_historian_through_its_own_catalog(stack_env):
    """Two plants, two historians: wind_fleet (site coast) writes to its own PostgreSQL database
    and its ingest reads it back through its own Trino catalog (historian_coast); tep_reactor's
    (site north) catalog never sees those rows."""
    from datetime import date

    from sqlalchemy import text

    from plantops.config import get_use_case
    from plantops.sources import historian, scada_replay
    from plantops.stages.ingest import ingest_historian

    tep, wind = get_use_case(USE_CASE), get_use_case("wind_fleet")
    assert (tep.site, wind.site) == ("north", "coast")
    assert str(historian.reader(conn_id=tep.historian_conn).url).endswith("/historian/public")
    coast = historian.reader(conn_id=wind.historian_conn)
    assert coast.url.drivername == "trino" and str(coast.url).endswith("/historian_coast/public")
    assert historian.engine(conn_id=wind.historian_conn).url.database == "historian_coast"
    day = date(2014, 4, 15)
    written = scada_replay.replay_range(wind, day, day + timedelta(days=1))["values"]
    assert written > 0
    with coast.connect() as conn:
        per_asset = dict(conn.execute(text("SELECT asset, count(*) FROM historian GROUP BY asset")).all())
    assert set(per_asset) == set(wind.assets) and sum(per_asset.values()) == written
    assert historian.known_tags(wind.assets[0], ["Ws_avg"], conn_id=tep.historian_conn) == set()
    start = datetime(2014, 4, 15, tzinfo=timezone.utc)
    got = ingest_historian(wind, start, start + timedelta(days=1), "coast-probe")
    assert got["values_in"] == written and got["values_written"] + got["values_rejected"] == written
    assert got["days"] == {"2014-04-15": got["values_written"]}


def test_lake_catalog_serves_bronze_and_features(stack_env):
    """Trino's `lake` catalog (Hive connector, file metastore) reads the parquet plantops wrote,
    partitioned by day; registering again changes nothing."""
    import pandas as pd
    from sqlalchemy import create_engine, text

    from plantops.environments import lake
    from plantops.settings import get_settings
    from plantops.storage import atomic_write_parquet, write_bronze

    settings = get_settings()
    ts = pd.date_range("2026-02-01T22:00", periods=240, freq="1min", tz="UTC")  # spans two days
    bronze = pd.DataFrame({"asset": "probe", "tag": "XMEAS_1", "ts": ts, "value": range(240), "quality": "good",
                           "source": "historian", "batch": "b1"}).astype({"value": "float64"})
    write_bronze(settings.bronze_root, "lakeprobe", bronze, "historian")
    features = pd.DataFrame({"asset": "probe", "ts": ts[:10], "XMEAS_1": 1.5, "XMEAS_1__rmean": 1.0})
    atomic_write_parquet(features, settings.features_root / "lakeprobe" / "date=2026-02-01" / "part-0.parquet")

    expected = {"lake.plantops.lakeprobe_bronze": 240, "lake.plantops.lakeprobe_features": 10}
    assert lake.register("lakeprobe") == expected
    assert lake.register("lakeprobe") == expected  # idempotent
    url = stack_env["PLANTOPS_HISTORIAN_READ_URL"].rsplit("/", 2)[0] + "/lake"
    engine = create_engine(url)
    with engine.connect() as conn:
        per_day = dict(conn.execute(text(
            "SELECT \"date\", count(*) FROM lake.plantops.lakeprobe_bronze WHERE tag = :tag GROUP BY 1"),
            {"tag": "XMEAS_1"}).fetchall())
        top = conn.execute(text("SELECT max(value) FROM lake.plantops.lakeprobe_bronze")).scalar()
    engine.dispose()
    assert per_day == {"2026-02-01": 120, "2026-02-02": 120} and top == 239.0


# -- the operator's view: Airflow services on PostgreSQL, REST only ------------------------------

class Operator:
    """REST calls as ops1 (operator: views and triggers) and eng1 (the assigned process engineer)."""

    def __init__(self, env: dict[str, str]) -> None:
        from plantops.stages.approval import AirflowApi

        passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        base = env["AIRFLOW__API__BASE_URL"]
        self.ops = AirflowApi(base, "ops1", passwords["ops1"])
        self.eng = AirflowApi(base, "eng1", passwords["eng1"])

    def get(self, path: str, **params) -> dict:
        resp = self.ops.request("GET", path, params=params)
        resp.raise_for_status()
        return resp.json()

    def trigger(self, dag_id: str, conf: dict) -> str:
        resp = self.ops.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert resp.status_code == 200, resp.text
        return resp.json()["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="run_after")["dag_runs"]

    def states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def wait_settled(self, timeout: float = 900, quiet: float = 15) -> None:
        """Until no plantops run is queued or running for `quiet` seconds (asset-triggered runs
        appear a few seconds after their upstream run ends)."""
        deadline = time.monotonic() + timeout
        calm_since = None
        while time.monotonic() < deadline:
            busy = [(r["dag_id"], r["dag_run_id"], r["state"]) for dag in PLANTOPS_DAGS for r in self.runs(dag)
                    if r["state"] in ("queued", "running")]
            if busy:
                calm_since = None
            elif calm_since is None:
                calm_since = time.monotonic()
            elif time.monotonic() - calm_since >= quiet:
                return
            time.sleep(3)
        raise TimeoutError(f"runs still busy after {timeout:.0f}s: {busy}")

    def wait_pending_approval(self, timeout: float = 900) -> dict:
        """The waiting approval, once its task has deferred and the scheduler has seen that: an
        answer within the same second as the request races Airflow's own bookkeeping of the
        deferral (the executor's "success" for the deferring try then meets a requeued task and
        fails it), which a person reading the request never does."""
        from plantops.stages.approval import wait_for_pending

        detail = wait_for_pending(self.eng, f"{USE_CASE}__monitor", timeout=timeout, poll=3)
        ti = detail["task_instance"]
        deadline = time.monotonic() + 120
        while self.states(ti["dag_id"], ti["dag_run_id"]).get(ti["task_id"]) not in ("deferred", "awaiting_input"):
            assert time.monotonic() < deadline, "the approval task never deferred"
            time.sleep(1)
        time.sleep(10)
        return detail

    def paged(self, path: str, key: str, **params) -> list[dict]:
        """Every item of a paginated collection (the API caps a page at 100)."""
        items: list[dict] = []
        while True:
            page = self.get(path, limit=100, offset=len(items), **params)
            items += page[key]
            if not page[key] or len(items) >= page["total_entries"]:
                return items

    def running_build(self, timeout: float = 600) -> tuple[dict, dict]:
        """The features run's build_features task instance while its Spark application runs on
        the cluster (the driver has its executors): (task instance, the master's application)."""
        from plantops.environments import stack

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(FEATURES):
                if run["state"] != "running":
                    continue
                tis = self.get(f"/dags/{FEATURES}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
                ti = next((t for t in tis if t["task_id"] == "build_features" and t["state"] == "running"), None)
                apps = [a for a in (stack.spark_master_state() or {}).get("activeapps", [])
                        if a["name"] in FEATURE_APPS and a["state"] == "RUNNING" and a["cores"] == 2]
                if ti and ti["hostname"] in CELERY_HOSTS and apps:
                    return ti, apps[0]
            time.sleep(1)
        raise TimeoutError(f"no build_features ran on the Spark cluster within {timeout:.0f} s: {self.runs(FEATURES)}")

    def tries(self, ti: dict) -> list[tuple[int, str, str]]:
        """(try number, hostname, state) of each try of a task instance."""
        path = f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/tries"
        return [(t["try_number"], t["hostname"], t["state"]) for t in self.get(path)["task_instances"]]

    def last_monitor(self) -> tuple[str, dict[str, str]]:
        run = self.runs(f"{USE_CASE}__monitor")[-1]
        return run["dag_run_id"], self.states(f"{USE_CASE}__monitor", run["dag_run_id"])


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class Browser:
    """Debian's chromium driven by Playwright (never a downloaded browser), one context per user;
    every step saves a numbered screenshot under $PLANTOPS_HOME/screenshots."""

    def __init__(self, base_url: str, passwords: dict[str, str], folder: Path) -> None:
        from playwright.sync_api import sync_playwright

        from plantops.environments import stack

        chromium = stack.ensure_chromium()
        assert chromium is not None, "no /usr/bin/chromium: `make stack-up` (as root) installs it; else apt-get install chromium"
        self.base_url, self.passwords, self.folder = base_url, passwords, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.shots: list[Path] = []
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)

    def login(self, user: str):
        """A fresh browser context signed in through Airflow's login page; returns its page."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"{self.base_url}/auth/login")
        page.locator("input[name=username]").fill(user)
        page.locator("input[name=password]").fill(self.passwords[user])
        # Enter submits both login pages (SimpleAuthManager's "Sign in", FAB's "Sign In").
        page.locator("input[name=password]").press("Enter")
        page.wait_for_url(lambda url: "/auth/login" not in url)
        return page

    def shot(self, page, step: str, full_page: bool = False) -> Path:
        path = self.folder / f"{len(self.shots) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.shots.append(path)
        return path

    def open_approval(self, page, subject: str) -> None:
        """Browse -> Required Actions (pending) -> the approval's subject: its form."""
        page.goto(f"{self.base_url}/required_actions?response_received=false")
        page.get_by_role("link", name=subject).first.click()
        page.get_by_role("button", name="Retrain now").wait_for()

    def close(self) -> None:
        self.browser.close()
        self._pw.stop()


@pytest.fixture(scope="module")
def airflow_on_stack(stack_env, tmp_path_factory):
    """api-server, scheduler, dag-processor and triggerer on the PostgreSQL metadata DB."""
    from plantops.environments import stack

    from plantops.environments import mailsink

    mail_folder = Path(stack_env["PLANTOPS_HOME"]) / "mail"
    sink, port = mailsink.start(mail_folder)
    os.environ["PLANTOPS_SMTP_PORT"] = str(port)
    os.environ.pop("AIRFLOW_CONN_PLANTOPS_SMTP", None)
    use_cases = tmp_path_factory.mktemp("use_cases")
    spec = yaml.safe_load((REPO / "include" / "use_cases" / f"{USE_CASE}.yaml").read_text())
    spec["monitoring"]["approval_timeout"] = APPROVAL_TIMEOUT  # so the scheduler's timeout fires in the test
    spec["site"] = "north"  # the stack's FAB auth manager: ops1 and eng1 reach north's DAGs only
    (use_cases / f"{USE_CASE}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**stack.airflow_env(Path(stack_env["PLANTOPS_HOME"]), api_port=API_PORT),
           "PLANTOPS_USE_CASES": str(use_cases), "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10"}
    services = stack.AirflowServices(env, Path(stack_env["PLANTOPS_HOME"]) / "airflow-logs")
    os.environ["PLANTOPS_USE_CASES"] = str(use_cases)
    services.start()
    operator = Operator(env)
    try:
        operator.ops.wait_healthy(timeout=180)
        deadline = time.monotonic() + 300
        while True:
            found = {d["dag_id"] for d in operator.get("/dags", dag_id_pattern=USE_CASE, limit=50)["dags"]}
            if set(PLANTOPS_DAGS) <= found:
                break
            assert time.monotonic() < deadline, f"the dag-processor did not register the plantops DAGs: {found}"
            time.sleep(3)
        for dag_id in PLANTOPS_DAGS:  # new DAGs start paused: the operator switches them on
            resp = operator.ops.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
            assert resp.status_code == 200, resp.text
        yield services, operator, mail_folder
    finally:
        services.stop()
        mailsink.stop(sink)
        os.environ.pop("PLANTOPS_USE_CASES", None)


@pytest.fixture(scope="module")
def browser(airflow_on_stack, stack_env):
    _, op, _ = airflow_on_stack
    passwords = {api.username: api.password for api in (op.ops, op.eng)}
    chromium = Browser(op.ops.base_url, passwords, Path(stack_env["PLANTOPS_HOME"]) / "screenshots")
    yield chromium
    chromium.close()


def test_pipeline_on_the_stack_through_the_rest_api(airflow_on_stack, browser):
    """History lands -> the landing watcher ingests it (historian through Trino) -> features
    (spark-submit to the Spark cluster) -> the operator triggers the first training -> live days: a fault is an upset
    (operators mailed through a real SMTP server); an approval is left unanswered and the
    scheduler's timeout records the safe default; a plant change waits for eng1, who approves in the
    browser (ops1 gets 403 over REST and in the browser, and may not delete a DAG or write an XCom);
    the operator's Plant ML view shows champion, days, alarms, reports and health. Every task runs on
    the two Celery workers. Three crashes are survived: the scheduler is killed with SIGKILL and
    restarted while the history is being ingested; the Celery worker running the upset day's
    feature build is killed with SIGKILL (with its pool, task and driver, as when its machine dies)
    and the task is retried on the other worker; a Spark worker is killed mid-job on the
    maintenance day and the job completes on the executor left. Then nothing is lost or doubled:
    bronze holds every replayed value once, every feature day equals the pandas reference on
    bronze, one prediction per timestamp, one decision per monitor run."""
    from plantops.environments import stack
    from plantops.stages import decisions, registry
    from plantops.sources import historian, replay
    from plantops.stages.approval import ApprovalError
    from plantops.config import get_use_case

    from plantops.environments import mailsink

    services, op, mail_folder = airflow_on_stack
    use_case = get_use_case(USE_CASE)
    test_started_ms = time.time() * 1000
    ingest, monitor, train = (f"{USE_CASE}__{s}" for s in ("ingest", "monitor", "train"))

    # 1. the plant's history arrives; NiFi's files wake the ingest DAG through the AssetWatcher.
    replay.replay_history(use_case)
    deadline = time.monotonic() + 300
    while not any(r["state"] == "running" for r in op.runs(ingest)):
        assert time.monotonic() < deadline, f"no ingest run started from the landed files: {op.runs(ingest)}"
        time.sleep(2)
    services.kill("scheduler")  # a scheduler crash mid-run ...
    time.sleep(5)
    services.start("scheduler")  # ... and its restart: the runs still complete
    op.wait_settled()
    ingest_runs = op.runs(ingest)
    assert ingest_runs and all(r["state"] == "success" for r in ingest_runs), ingest_runs
    feature_runs = op.runs(f"{USE_CASE}__features")
    assert feature_runs and all(r["state"] == "success" for r in feature_runs), feature_runs
    bronze = sorted(p.parent.name for p in (Path(os.environ["PLANTOPS_HOME"]) / "bronze" / USE_CASE).glob("date=*/historian.parquet"))
    assert len(bronze) == len(replay.HISTORY), f"historian days in bronze: {bronze}"
    # The features ran on the cluster: the master lists each build as a finished application of 2
    # cores, and each of the two workers (1 core each) ran one of its executors. Checked now:
    # a worker's list of finished executors goes with it when it is killed below.
    apps = [a for a in stack.spark_master_state()["completedapps"]
            if a["name"] in FEATURE_APPS and a["starttime"] >= test_started_ms]
    assert len(apps) == len(feature_runs) and {(a["state"], a["cores"]) for a in apps} == {("FINISHED", 2)}, apps
    for n in (1, 2):
        ran = {e["appid"] for e in stack.spark_worker_state(n)["finishedexecutors"]}
        assert {a["id"] for a in apps} <= ran, (n, apps, ran)

    # 2. the operator trains the first model (score skipped until then: no champion)
    run_id = op.trigger(train, {"reason": "first model"})
    op.wait_settled()
    assert op.get(f"/dags/{train}/dagRuns/{run_id}")["state"] == "success"
    champion = registry.champion(USE_CASE)
    assert champion is not None and registry.configure().tracking_uri.startswith("http://")

    # 3. a fault: the champion alarms -> an upset; the operators are mailed, nothing is retrained.
    # The Celery worker building the day's features dies mid-job (SIGKILL to the worker, its pool,
    # the task and its spark-submit driver): the scheduler notices the silent task after the
    # heartbeat timeout and retries it on the other worker.
    replay.replay_episode(use_case, replay.LIVE["upset"])
    build, app = op.running_build()
    lost = build["hostname"]
    services.kill_tree(f"celery-worker-{lost.rsplit('-', 1)[1]}")
    op.wait_settled()
    (other,) = CELERY_HOSTS - {lost}
    assert op.tries(build) == [(1, lost, "failed"), (2, other, "success")], op.tries(build)
    assert op.get(f"/dags/{FEATURES}/dagRuns/{build['dag_run_id']}")["state"] == "success"
    services.start(f"celery-worker-{lost.rsplit('-', 1)[1]}")
    monitor_run, states = op.last_monitor()
    assert states["alert_operators"] == "success" and states["trigger_retrain"] == "skipped", states
    upset_mail = [m for m in mailsink.messages(mail_folder) if m["X-Plantops-Event"] == "upset"]
    assert [m["X-Envelope-To"] for m in upset_mail] == ["control-room@eastman-demo.example"], upset_mail
    assert monitor_run.replace(":", "%3A").replace("+", "%2B") in upset_mail[0].get_body(("html", "plain")).get_content()

    # 4. nobody answers: the scheduler times the approval out and the safe default (refuse) is recorded.
    # Spark worker 2 dies while the day's features are built (its executor with it): the job
    # finishes on worker 1's executor, the task and its run succeed; then the worker is restarted.
    replay.replay_episode(use_case, replay.LIVE["maintenance"])
    build, app = op.running_build()
    deadline = time.monotonic() + 120
    while app["id"] not in {e["appid"] for e in stack.spark_worker_state(2)["executors"]}:
        assert time.monotonic() < deadline, f"no executor of {app['id']} on Spark worker 2"
        time.sleep(0.5)
    stack.kill_spark_worker(2)
    detail = op.wait_pending_approval()
    stack.start_spark_worker(2)
    finished = {a["id"]: a["state"] for a in stack.spark_master_state()["completedapps"]}
    assert finished.get(app["id"]) == "FINISHED", (app, finished)
    assert op.states(FEATURES, build["dag_run_id"])["build_features"] == "success"
    assert op.get(f"/dags/{FEATURES}/dagRuns/{build['dag_run_id']}")["state"] == "success"
    waiting_run = detail["task_instance"]["dag_run_id"]
    op.wait_settled()
    states = op.states(monitor, waiting_run)
    assert states["record_answers"] == "success" and states["trigger_approved"] == "skipped", states
    answers = [r["branch"] for r in decisions.for_run(USE_CASE, waiting_run) if r["kind"] == "approval"]
    assert answers == ["timed_out"], answers

    # 5. a plant change: approval; the operator may not answer (REST and browser), the assigned
    # engineer answers in the browser, on the Required Actions page.
    replay.replay_episode(use_case, replay.LIVE["plant_change"])
    detail = op.wait_pending_approval()
    ti = detail["task_instance"]
    day = str(replay.LIVE["plant_change"].day)
    assert detail["subject"].startswith(f"{USE_CASE}, {day}: ")
    assert detail["body"].startswith("> **Answered only by the assigned process engineers: ")
    with pytest.raises(ApprovalError) as refused:
        op.ops.answer(ti["dag_id"], ti["dag_run_id"], ti["task_id"], "Retrain now", {}, ti["map_index"])
    assert refused.value.status == 403
    # roles: the operator triggers (step 2) but neither deletes a DAG nor writes an XCom
    assert op.ops.request("DELETE", f"/dags/{train}").status_code == 403
    xcom = op.ops.request("POST", f"/dags/{monitor}/dagRuns/{ti['dag_run_id']}/taskInstances/assess_drift/xcomEntries",
                          json={"key": "operator_edit", "value": 1, "map_index": 0})
    assert xcom.status_code == 403, xcom.text
    assert op.get(f"/dags/{train}")["dag_id"] == train

    ops_page = browser.login("ops1")
    browser.open_approval(ops_page, detail["subject"])
    browser.shot(ops_page, "ops1-approval-form")
    ops_page.get_by_role("button", name="Retrain now").click()
    ops_page.get_by_text("You do not have permission to perform this action.").wait_for()
    browser.shot(ops_page, "ops1-refused")
    assert op.get(f"/dags/{monitor}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/{ti['map_index']}"
                  "/hitlDetails")["response_received"] is False

    eng_page = browser.login("eng1")
    browser.open_approval(eng_page, detail["subject"])
    eng_page.locator("#element_reason").fill("setpoint change is permanent")
    browser.shot(eng_page, "eng1-approval-filled")
    eng_page.get_by_role("button", name="Retrain now").click()
    deadline = time.monotonic() + 60
    while not (answered := op.get(f"/dags/{monitor}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}"
                                  f"/{ti['map_index']}/hitlDetails"))["response_received"]:
        assert time.monotonic() < deadline, "eng1's click in the browser recorded no answer"
        time.sleep(1)
    assert answered["chosen_options"] == ["Retrain now"] and answered["responded_by_user"]["name"] == "eng1"
    assert answered["params_input"]["reason"] == "setpoint change is permanent"
    browser.shot(eng_page, "eng1-answered")
    op.wait_settled()
    states = op.states(monitor, ti["dag_run_id"])
    assert states["record_answers"] == "success" and states["trigger_approved"] == "success", states
    approved = op.get(f"/dags/{train}/dagRuns/approved__{ti['dag_run_id']}")
    assert approved["state"] == "success" and approved["conf"]["approved_by"] == "eng1"
    assert approved["note"].startswith(f"{USE_CASE}, {day}: retrain_now approved by eng1"), approved["note"]
    eng_page.goto(f"{browser.base_url}/dags/{train}/runs/approved__{ti['dag_run_id']}")
    eng_page.get_by_text("Success").first.wait_for()
    browser.shot(eng_page, "eng1-approved-training-done")
    # The engineers were asked by mail (twice: both approvals), and told of the timeout.
    events = [(m["X-Plantops-Event"], m["X-Envelope-To"]) for m in mailsink.messages(mail_folder)]
    assert events.count(("approval", "eng1@eastman-demo.example")) == 2, events
    assert ("timeout", "eng1@eastman-demo.example") in events, events

    # every monitor decision is stored; predictions were read back through Trino
    branches = [r["branch"] for r in reversed(decisions.latest(USE_CASE, kind="monitor", limit=20))]
    assert branches == ["upset", "approval", "approval"], branches
    predictions = historian.read_predictions(use_case.historian.asset, replay.LIVE["upset"].start,
                                             replay.LIVE["plant_change"].start + timedelta(days=1))
    alarms = predictions[predictions["alarm"] == 1]
    assert len(alarms) > 0 and alarms["top_tags"].notna().all()

    # Monitor runs name the day they judge: the scheduler's listener notes day and branch on each.
    monitor_records = {r["dag_run_id"]: r for r in decisions.latest(USE_CASE, kind="monitor", limit=20)}
    notes = {r["dag_run_id"]: r["note"] for r in op.runs(monitor) if r["dag_run_id"] in monitor_records}
    assert len(notes) == 3, notes
    for run, note in notes.items():
        record = monitor_records[run]
        assert (note or "").startswith(f"{USE_CASE}, {record['payload']['day']}: {record['branch']}"), (run, note)

    # 6. the operator's view, in the browser: Plant ML from the navigation, then the use case.
    page = browser.login("ops1")
    page.get_by_role("link", name="Plant ML").click()
    frame = page.frame_locator("iframe")
    frame.get_by_role("link", name=USE_CASE).first.click()
    frame.locator("h2", has_text="Champion:").wait_for()
    browser.shot(page, "ops1-plant-ml-view")
    started = time.monotonic()
    resp = page.context.request.get(f"{browser.base_url}/plantops/view/{USE_CASE}")
    print(f"Plant ML view of {USE_CASE}: HTTP {resp.status} in {time.monotonic() - started:.3f} s")
    assert resp.status == 200
    version, mlflow_run = registry.champion(USE_CASE)
    assert f"v{version} " in frame.locator("h2", has_text="Champion:").inner_text() + " "
    assert mlflow_run in frame.locator("h2:has-text('Champion:') + p").inner_text()
    rows = frame.locator("h2:has-text('Monitor decisions') + table tr")
    for record in monitor_records.values():
        row = rows.filter(has_text=record["payload"]["day"]).first
        text = row.inner_text()
        assert record["branch"] in text, (record["payload"]["day"], text)
        if record["branch"] == "upset":  # its alarms and the tags they name
            top = record["payload"]["alarm_tags"][0]["tag"]
            assert f"{top} (" in text, text
            href = row.get_by_role("link", name="drift report").get_attribute("href")
            assert href.startswith(f"/plantops/reports/{USE_CASE}/"), href
            report = page.context.request.get(f"{browser.base_url}{href}")
            # the summary opens the page's body (after ~2 MB of Evidently's inline scripts in the head)
            assert report.status == 200 and "Drift summary: DRIFT" in report.text(), href
    # pipeline health: every DAG with its last success; a paused DAG says so
    assert op.ops.request("PATCH", f"/dags/{USE_CASE}__feedback", json={"is_paused": True}).status_code == 200
    page.reload()
    frame = page.frame_locator("iframe")
    health = frame.locator("h2:has-text('Pipeline health') + table")
    health.wait_for()
    for dag_id in PLANTOPS_DAGS:
        text = health.locator("tr", has_text=dag_id).inner_text()
        if dag_id.endswith("__feedback"):
            assert "paused" in text and "never" in text, text
        else:
            assert "active" in text and "never" not in text, text
    health.scroll_into_view_if_needed()  # the frame scrolls, not the page: bring the table into the shot
    browser.shot(page, "ops1-plant-ml-health")

    # 7. every task ran on the Celery workers, on both of them: a task instance reports the
    # hostname of the worker it ran on (celery-1 / celery-2 exist only in the environment of the
    # `airflow celery worker` processes; the REST API shows no executor for a task that uses the
    # default one, and Airflow 3 leaves the jobs' executor_class empty).
    ran = [ti for dag_id in PLANTOPS_DAGS
           for ti in op.paged(f"/dags/{dag_id}/dagRuns/~/taskInstances", "task_instances")
           if ti["state"] in ("success", "failed")]
    hosts = {ti["hostname"] for ti in ran if ti["start_date"] is not None}
    assert hosts == CELERY_HOSTS, sorted(hosts)
    assert {ti["executor"] for ti in ran} <= {None, "CeleryExecutor"}, {ti["executor"] for ti in ran}

    # 8. nothing lost or doubled by the three crashes
    assert_nothing_lost_or_doubled(use_case, decisions.latest(USE_CASE, kind="monitor", limit=100),
                                   [r["dag_run_id"] for r in op.runs(monitor)])


def assert_nothing_lost_or_doubled(use_case, monitor_decisions: list[dict], monitor_runs: list[str]) -> None:
    """Bronze holds every replayed value exactly once; each feature day equals the pandas
    reference computed from bronze (the job's own lookback); one prediction per timestamp and per
    feature row of a scored day; exactly one monitor decision per monitor run."""
    import numpy as np
    import pandas as pd

    from plantops.features import wide_features_pandas
    from plantops.settings import get_settings
    from plantops.sources import historian, replay
    from plantops.storage import read_bronze

    settings = get_settings()
    episodes = [*replay.HISTORY, replay.LIVE["upset"], replay.LIVE["maintenance"], replay.LIVE["plant_change"]]
    key = ["asset", "tag", "ts"]
    bronze = read_bronze(settings.bronze_root, USE_CASE, "2000-01-01", "2100-01-01")
    assert not bronze.duplicated(key).any(), bronze[bronze.duplicated(key, keep=False)].head(20)
    want = pd.concat([replay.episode_frame(ep).melt(id_vars="ts", var_name="tag", value_name="value")
                      for ep in episodes]).assign(asset=use_case.assets[0])
    want = want[want["tag"].isin(use_case.tag_names)]
    got = bronze[[*key, "value"]].assign(ts=pd.to_datetime(bronze["ts"], utc=True))
    both = want.assign(ts=pd.to_datetime(want["ts"], utc=True)).merge(got, on=key, how="outer",
                                                                     suffixes=("_replayed", "_bronze"), indicator=True)
    assert len(both) == len(want) == len(bronze), both["_merge"].value_counts().to_dict()
    assert (both["_merge"] == "both").all() and (both["value_replayed"] == both["value_bronze"]).all()

    spec = use_case.features
    tags = list(use_case.tag_names)
    days = sorted(p.name.removeprefix("date=") for p in (settings.features_root / USE_CASE).glob("date=*"))
    assert days == sorted(str(ep.day) for ep in episodes), days
    predictions = historian.read_predictions(use_case.historian.asset, episodes[0].start,
                                             episodes[-1].start + timedelta(days=1))
    assert predictions["ts"].is_unique, predictions[predictions["ts"].duplicated(keep=False)]
    for day in days:
        built = pd.concat([pd.read_parquet(f) for f in sorted((settings.features_root / USE_CASE / f"date={day}").glob("*.parquet"))])
        built = built.sort_values(["asset", "ts"]).reset_index(drop=True)
        first = str((pd.Timestamp(day) - pd.Timedelta(days=spec.lookback_days)).date())
        after = str((pd.Timestamp(day) + pd.Timedelta(days=1)).date())
        reference = wide_features_pandas(read_bronze(settings.bronze_root, USE_CASE, first, after), tags,
                                         spec.bucket_seconds, spec.rolling_buckets, spec.max_gap_seconds)
        reference = reference[pd.to_datetime(reference["ts"], utc=True).dt.strftime("%Y-%m-%d") == day]
        reference = reference.sort_values(["asset", "ts"]).reset_index(drop=True)
        assert list(built.columns) == list(reference.columns), day
        # Keys exactly (no bucket lost or doubled); values as tests/test_build_features.py compares
        # Spark with pandas (summation order differs by ~1e-12, nothing else).
        pd.testing.assert_frame_equal(built[["asset", "ts"]], reference[["asset", "ts"]], check_dtype=False,
                                      obj=f"feature keys of {day}")
        for column in built.columns[2:]:
            scale = max(1.0, float(np.nanmax(np.abs(reference[column.split("__")[0]].to_numpy(dtype=float)), initial=0.0)))
            np.testing.assert_allclose(built[column].to_numpy(dtype=float), reference[column].to_numpy(dtype=float),
                                       rtol=1e-9, atol=1e-9 * scale, equal_nan=True, err_msg=f"{day} {column}")
        scored = predictions[predictions["ts"].dt.strftime("%Y-%m-%d") == day]
        assert len(scored) in (0, len(built)), (day, len(scored), len(built))
    for episode in ("upset", "maintenance", "plant_change"):  # scored after the first training
        day = str(replay.LIVE[episode].day)
        assert (predictions["ts"].dt.strftime("%Y-%m-%d") == day).sum() > 0, f"no predictions for {day}"

    # The three live days' monitor runs decided once each (the history's runs had no model to judge).
    decided = sorted(r["dag_run_id"] for r in monitor_decisions)
    assert len(decided) == len(set(decided)) == 3 and set(decided) <= set(monitor_runs), (decided, monitor_runs)
