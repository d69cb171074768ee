"""Telling people: each plant event reaches its audiences by e-mail, through a real SMTP server.

The server is plantops' own mail sink (aiosmtpd on loopback, one .eml file per message), reached
through the SMTP provider's hook and an ``AIRFLOW_CONN_*`` connection, as in the embedded tier.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import without_site

from plantops.config import AUDIENCES, EVENTS, ConfigError, Notifications, UseCase, load_use_case
from plantops.environments import mailsink
from plantops.stages import notify

REPO = Path(__file__).resolve().parents[1]
BASE_URL = "http://airflow.plant.example:8080"
RUN_ID = "scheduled__2026-03-04T02:00:00+00:00"
QUOTED_RUN_ID = "scheduled__2026-03-04T02%3A00%3A00%2B00%3A00"

OPERATORS = ["ops1@plant.example", "ops2@plant.example"]
ENGINEERS = ["eng1@plant.example"]
MLOPS = ["mlops@plant.example"]
NOTIFICATIONS = {
    "sender": "plantops@plant.example",
    "recipients": {"operators": OPERATORS, "engineers": ENGINEERS, "mlops": MLOPS},
    # One route overridden: MLOps and the engineers both hear of a promotion; the rest stay default.
    "routes": {"promotion": ["mlops", "engineers"]},
}
EXPECTED = {
    "upset": OPERATORS,
    "quarantine": OPERATORS,
    "approval": ENGINEERS,
    "timeout": ENGINEERS,
    "promotion": MLOPS + ENGINEERS,
    "failure": MLOPS,
}


def shipped(notifications: dict | None = None) -> dict:
    data = without_site("tep_reactor")
    # Monitoring is not what these tests are about: its defaults keep them independent of that block.
    data.pop("monitoring", None)
    # The shipped addresses are the plant's; each test says which notifications block it means.
    data.pop("notifications", None)
    if notifications is not None:
        data["notifications"] = notifications
    return data


def write_use_case(folder: Path, data: dict) -> Path:
    path = folder / f"{data['id']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def use_case(tmp_path: Path, notifications: dict) -> UseCase:
    return load_use_case(write_use_case(tmp_path, shipped(notifications)))


def smtp_connection(port: int, timeout: int = 5) -> str:
    extra = {"disable_tls": True, "disable_ssl": True, "timeout": timeout, "retry_limit": 0}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


@dataclass
class Sink:
    folder: Path
    port: int

    def count(self) -> int:
        return len(mailsink.messages(self.folder))

    def since(self, count: int) -> list[EmailMessage]:
        return mailsink.messages(self.folder)[count:]


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    """One mail sink for the module; AIRFLOW_CONN_PLANTOPS_SMTP and the use-case folder point at it."""
    folder = tmp_path_factory.mktemp("mail")
    use_cases = tmp_path_factory.mktemp("use_cases")
    write_use_case(use_cases, shipped(NOTIFICATIONS))
    controller, port = mailsink.start(folder)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_CONN_PLANTOPS_SMTP", smtp_connection(port))
            mp.setenv("PLANTOPS_USE_CASES", str(use_cases))
            mp.setenv("AIRFLOW__API__BASE_URL", BASE_URL + "/")
            yield Sink(folder, port)
    finally:
        mailsink.stop(controller)


@pytest.fixture(scope="module")
def notified(sink, tmp_path_factory) -> UseCase:
    return use_case(tmp_path_factory.mktemp("uc"), NOTIFICATIONS)


def addresses(value: str | None) -> list[str]:
    return [addr for _, addr in getaddresses([value or ""])]


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- who gets which mail -------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVENTS)
def test_each_event_reaches_its_audiences_and_nobody_else(sink, notified, event):
    before = sink.count()
    result = notify.send(notified, event, f"{event} on the reactor", "Details.")
    mails = sink.since(before)
    assert result["sent"] is True, result["reason"]
    assert result["event"] == event and result["to"] == EXPECTED[event]
    assert len(mails) == 1
    mail = mails[0]
    assert addresses(mail["X-Envelope-To"]) == EXPECTED[event]  # who the server was asked to deliver to
    assert addresses(mail["To"]) == EXPECTED[event]
    assert addresses(mail["From"]) == ["plantops@plant.example"]
    assert mail["X-Plantops-Event"] == event and mail["X-Plantops-Use-Case"] == "tep_reactor"


def test_subject_is_prefixed_and_body_carries_the_text_and_the_link(sink, notified):
    link = notify.ui_link("tep_reactor__monitor", RUN_ID, "assess_window")
    before = sink.count()
    body = "T² above its limit for 40 min.\n\nTags: XMEAS_9 <high>"
    result = notify.send(notified, "upset", "Reactor upset", body, link=link)
    [mail] = sink.since(before)
    assert mail["Subject"] == result["subject"] == "[plantops tep_reactor] Reactor upset"
    body = html_of(mail)
    assert "T² above its limit for 40 min." in body
    assert "Tags: XMEAS_9 &lt;high&gt;" in body  # the body is text, escaped into the HTML
    assert f'Open in Airflow: <a href="{link}">' in body
    assert link == f"{BASE_URL}/dags/tep_reactor__monitor/runs/{QUOTED_RUN_ID}/tasks/assess_window"


def test_the_shipped_use_case_mails_its_engineers(sink):
    from plantops.config import get_use_case

    before = sink.count()
    result = notify.send(get_use_case("tep_reactor"), "approval", "Retrain waits for you", "Please decide.")
    assert result["sent"] and addresses(sink.since(before)[0]["To"]) == ENGINEERS


def test_an_event_whose_audience_has_no_addresses_sends_nothing_and_says_why(sink, tmp_path):
    uc = use_case(tmp_path, {"recipients": {"operators": OPERATORS, "engineers": []}})
    before = sink.count()
    result = notify.send(uc, "approval", "Retrain waits for you", "Please decide.")
    assert result["sent"] is False and result["to"] == []
    assert "no recipients" in result["reason"] and "engineers" in result["reason"]
    assert sink.count() == before


def test_an_unknown_event_is_a_bug_in_the_caller(notified):
    with pytest.raises(ValueError, match=r"unknown event 'explosion'.*'upset'.*'failure'"):
        notify.send(notified, "explosion", "x", "y")


# --- a broken mail server never fails the pipeline -----------------------------------------------


def test_a_mail_server_that_is_down_is_reported_not_raised(sink, notified, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_PLANTOPS_SMTP", smtp_connection(closed_port(), timeout=1))
    with caplog.at_level(logging.WARNING, logger="plantops.stages.notify"):
        result = notify.send(notified, "upset", "Reactor upset", "Details.")
    assert result["sent"] is False and result["to"] == OPERATORS
    assert "ConnectionRefusedError" in result["reason"] and "plantops_smtp" in result["reason"]
    assert any("could not mail upset" in r.getMessage() for r in caplog.records)


def test_a_mail_server_that_never_answers_times_out_quickly(sink, notified, monkeypatch):
    with socket.socket() as silent:  # accepts the TCP connection, never says hello
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setenv("AIRFLOW_CONN_PLANTOPS_SMTP", smtp_connection(silent.getsockname()[1], timeout=1))
        result = notify.send(notified, "upset", "Reactor upset", "Details.")
    # Without the connection's timeout smtplib would wait for the greeting for ever (the test would
    # hang); with it, smtplib reports a disconnect, which the hook retries (retry_limit) and wraps.
    assert result["sent"] is False and "Unable to connect to smtp server" in result["reason"]


def test_a_missing_connection_is_reported_not_raised(sink, tmp_path):
    uc = use_case(tmp_path, {**NOTIFICATIONS, "smtp_conn_id": "plantops_smtp_nowhere"})
    result = notify.send(uc, "upset", "Reactor upset", "Details.")
    assert result["sent"] is False and "plantops_smtp_nowhere" in result["reason"]


# --- callbacks -----------------------------------------------------------------------------------


def task_instance(**overrides) -> SimpleNamespace:
    fields = {"dag_id": "tep_reactor__train", "task_id": "train_model", "run_id": RUN_ID, "try_number": 2,
              "map_index": -1}
    return SimpleNamespace(**(fields | overrides))


def test_notifier_renders_its_templates_and_links_the_task_instance(sink):
    notifier = notify.PlantNotifier("tep_reactor", "upset", "Upset seen by {{ ti.task_id }}",
                                    "Run {{ run_id }}: the champion alarms.")
    ti = task_instance(dag_id="tep_reactor__monitor", task_id="assess_window", try_number=1)
    before = sink.count()
    notifier({"ti": ti, "task_instance": ti, "run_id": RUN_ID})
    [mail] = sink.since(before)
    assert addresses(mail["To"]) == OPERATORS
    assert mail["Subject"] == "[plantops tep_reactor] Upset seen by assess_window"
    body = html_of(mail)
    assert f"Run {RUN_ID}: the champion alarms." in body
    log = f"{BASE_URL}/dags/tep_reactor__monitor/runs/{QUOTED_RUN_ID}/tasks/assess_window?try_number=1"
    assert log in body
    # One notifier serves every map index of a task: each call renders from its templates again.
    other = task_instance(dag_id="tep_reactor__monitor", task_id="request_approval", try_number=1)
    before = sink.count()
    notifier({"ti": other, "task_instance": other, "run_id": RUN_ID})
    [again] = sink.since(before)
    assert again["Subject"] == "[plantops tep_reactor] Upset seen by request_approval"


def test_notifier_is_an_airflow_notifier_and_refuses_an_unknown_event():
    from airflow.sdk import BaseNotifier

    assert isinstance(notify.PlantNotifier("tep_reactor", "failure", "s", "b"), BaseNotifier)
    with pytest.raises(ValueError, match="unknown event 'meltdown'"):
        notify.PlantNotifier("tep_reactor", "meltdown", "s", "b")


def test_failure_callback_tells_mlops_which_task_failed_and_links_its_log(sink):
    before = sink.count()
    ti = task_instance(map_index=3)
    assert notify.failure_callback({"ti": ti, "task_instance": ti, "run_id": RUN_ID,
                                    "exception": RuntimeError("historian unreachable")}) is None
    [mail] = sink.since(before)
    assert addresses(mail["X-Envelope-To"]) == MLOPS
    assert mail["Subject"] == "[plantops tep_reactor] tep_reactor__train: task train_model failed"
    body = html_of(mail)
    log = f"{BASE_URL}/dags/tep_reactor__train/runs/{QUOTED_RUN_ID}/tasks/train_model/mapped/3?try_number=2"
    for text in (f"Run: {RUN_ID}", "Try: 2", "Map index: 3", "RuntimeError: historian unreachable", log):
        assert text in body


class _Exploding(dict):
    def get(self, key, default=None):
        raise RuntimeError("a context that breaks when read")


@pytest.mark.parametrize(
    "context",
    [None, {}, {"ti": object()}, {"ti": task_instance(dag_id="no_use_case_here")},
     {"ti": task_instance(dag_id="retired_unit__train")}, _Exploding()],
    ids=["none", "empty", "bare-object", "dag-id-without-use-case", "unknown-use-case", "exploding"],
)
def test_failure_callback_never_raises_on_a_broken_context(sink, context):
    before = sink.count()
    assert notify.failure_callback(context) is None
    assert sink.count() == before


def test_failure_callback_never_raises_when_the_server_is_down(sink, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PLANTOPS_SMTP", smtp_connection(closed_port(), timeout=1))
    assert notify.failure_callback({"ti": task_instance(), "exception": ValueError("x")}) is None


# --- links into the Airflow UI -------------------------------------------------------------------


def test_ui_links_follow_the_airflow_ui_routes(sink):
    dag = "tep_reactor__monitor"
    assert notify.ui_link(dag) == f"{BASE_URL}/dags/{dag}"
    assert notify.ui_link(dag, RUN_ID) == f"{BASE_URL}/dags/{dag}/runs/{QUOTED_RUN_ID}"
    assert notify.ui_link(dag, task_id="score") == f"{BASE_URL}/dags/{dag}/tasks/score"
    ti_page = f"{BASE_URL}/dags/{dag}/runs/{QUOTED_RUN_ID}/tasks/score"
    assert notify.ui_link(dag, RUN_ID, "score") == ti_page
    assert notify.ui_link(dag, RUN_ID, "score", 0) == f"{ti_page}/mapped/0"
    assert notify.ui_link(dag, RUN_ID, "score", -1) == ti_page  # -1: not mapped
    with pytest.raises(ValueError, match="map_index"):
        notify.ui_link(dag, map_index=2)
    assert notify.required_actions_link() == f"{BASE_URL}/required_actions?response_received=false"
    assert notify.required_actions_link(pending=False) == f"{BASE_URL}/required_actions"


def test_ui_links_default_to_localhost(monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert notify.ui_link("a__b") == "http://localhost:8080/dags/a__b"


def test_the_ui_routes_exist_in_the_installed_airflow_ui():
    """The routes the links use are in the installed Airflow UI's router, not guessed."""
    import airflow

    bundle = "".join(p.read_text(errors="ignore") for p in
                     (Path(airflow.__file__).parent / "ui" / "dist" / "assets").glob("index-*.js"))
    for route in ("path:`dags/:dagId`", "path:`dags/:dagId/runs/:runId`", "path:`dags/:dagId/tasks/:taskId`",
                  "path:`dags/:dagId/runs/:runId/tasks/:taskId`",
                  "path:`dags/:dagId/runs/:runId/tasks/:taskId/mapped/:mapIndex`",
                  "path:`required_actions`", "/required_actions?response_received=false"):
        assert route in bundle, route


def test_importing_notify_leaves_the_hook_and_the_config_unloaded():
    heavy = ("airflow.providers.smtp.hooks.smtp", "plantops.config")
    code = f"import sys, plantops.stages.notify; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'include'}:{REPO}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120, cwd=REPO, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- the notifications block of a use case -------------------------------------------------------


def test_defaults_and_one_overridden_route_keep_the_others():
    assert Notifications().smtp_conn_id == "plantops_smtp" and Notifications().sender == "plantops@localhost"
    assert Notifications().recipients_of("upset") == ()
    routes = Notifications.model_validate({"routes": {"upset": ["engineers"]}}).routes
    assert routes["upset"] == ("engineers",)
    assert {e: routes[e] for e in EVENTS if e != "upset"} == {
        "quarantine": ("operators",), "approval": ("engineers",), "timeout": ("engineers",),
        "promotion": ("mlops",), "failure": ("mlops",)}
    assert set(routes) == set(EVENTS) and set(AUDIENCES) == {"operators", "engineers", "mlops"}


def test_recipients_are_ordered_by_route_and_each_mailed_once():
    n = Notifications.model_validate({
        "recipients": {"operators": ["a@x.example", "b@x.example"], "mlops": ["B@X.example", "m@x.example"],
                       "engineers": None},
        "routes": {"failure": ["mlops", "operators", "engineers"]}})
    assert n.recipients_of("failure") == ("B@X.example", "m@x.example", "a@x.example")
    with pytest.raises(ValueError, match="unknown event"):
        n.recipients_of("nope")


def test_a_use_case_without_notifications_mails_nobody(tmp_path):
    uc = load_use_case(write_use_case(tmp_path, shipped()))
    assert all(uc.notifications.recipients_of(e) == () for e in EVENTS)


@pytest.mark.parametrize(
    ("block", "field", "expected"),
    [
        ({"recipients": {"operators": ["ops.plant.example"]}}, "notifications.recipients.operators.0",
         "one '@'"),
        ({"recipients": {"operators": ["ops@"]}}, "notifications.recipients.operators.0", "one '@'"),
        ({"recipients": {"mlops": ["a@b@c"]}}, "notifications.recipients.mlops.0", "one '@'"),
        ({"recipients": {"mlops": ["a@b.c, d@e.f"]}}, "notifications.recipients.mlops.0", "one '@'"),
        ({"sender": "plantops"}, "notifications.sender", "one '@'"),
        ({"recipients": {"managers": ["boss@plant.example"]}}, "notifications.recipients.managers",
         "'operators', 'engineers' or 'mlops'"),
        ({"routes": {"upset": ["managers"]}}, "notifications.routes.upset.0",
         "'operators', 'engineers' or 'mlops'"),
        ({"routes": {"explosion": ["operators"]}}, "notifications.routes.explosion",
         "'upset', 'quarantine', 'approval', 'timeout', 'promotion' or 'failure'"),
        ({"surprise": 1}, "notifications.surprise", "Extra inputs"),
    ],
)
def test_a_wrong_notifications_block_names_file_field_and_expectation(tmp_path, block, field, expected):
    path = write_use_case(tmp_path, shipped(block))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    text = str(err.value)
    assert str(path) in text and field in text and expected in text, text


# --- the sink itself -----------------------------------------------------------------------------


def test_sink_picks_a_free_port_and_writes_numbered_whole_files(tmp_path):
    import smtplib

    controller, port = mailsink.start(tmp_path / "box")
    try:
        assert port > 0 and controller.port == port
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.sendmail("a@x.example", ["b@x.example", "hidden@x.example"],
                            "Subject: one\r\nTo: b@x.example\r\n\r\nhi")
            client.sendmail("a@x.example", ["c@x.example"], "Subject: two\r\n\r\nho")
    finally:
        mailsink.stop(controller)
    # Numbered from 1, and no temp files left behind.
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["0001.eml", "0002.eml"]
    one, two = mailsink.messages(tmp_path / "box")
    assert (one["Subject"], two["Subject"]) == ("one", "two")
    assert addresses(one["X-Envelope-To"]) == ["b@x.example", "hidden@x.example"]
    # A restarted sink goes on numbering instead of overwriting.
    controller, port = mailsink.start(tmp_path / "box")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.sendmail("a@x.example", ["d@x.example"], "Subject: three\r\n\r\nhey")
    finally:
        mailsink.stop(controller)
    assert [m["Subject"] for m in mailsink.messages(tmp_path / "box")] == ["one", "two", "three"]
