"""`make demo`: the whole loop for the three use cases, embedded tier, from an empty state.

``tep_reactor`` (Tennessee Eastman, one asset; calendar in :mod:`plantops.sources.replay`):

1. history: 21 labelled fault days and 3 normal days go to the historian and the landing zone;
   ingest, features, train (first champion), score and monitor the last normal day -> no action;
2. TEP fault 1 from 2026-03-25 08:00: the champion alarms -> an upset: the operators are mailed,
   nothing is retrained;
3. a hot day (2026-03-26): the cooling-water temperatures rise, the champion alarms, the engineer
   labels the alarms false (``__feedback``) -> a stale model: retrained automatically and promoted
   (the champion false-alarms on today's confirmed normal rows: no longer valid);
4. a slow fault after a recorded analyzer maintenance (2026-03-27) -> approval, refused by the
   engineer with a reason (the transient is not learned);
5. TEP fault 7 with an operator's setpoint change at 07:30 (2026-03-28) -> approval; the demo answers
   as the assigned engineer `eng1` through Airflow's REST API (a real `airflow api-server` on the
   same metadata DB) with "Retrain from a new reference window", the reference defaulting to the
   plant event -> the new model is promoted, and the next day of the new state (2026-03-29) alarms
   at the target rate again.

``wind_fleet`` (La Haute Borne, four turbines, :func:`wind_fleet`): history and first models per
turbine; a normal day; one turbine losing power (an upset for that turbine alone); another losing
power after a pitch service (approval for that turbine only, refused). Every decision is in the
decision store (table `decisions`, per asset); every mail is a file in ``$PLANTOPS_HOME/mail``
(a local SMTP server, :mod:`plantops.environments.mailsink`).

``pv_cells`` (an EL inspection line of solar cells, real elpv images, :func:`pv_cells`): a labelled
history with a cut image (rejected at ingest), the first champion (texture SVM, the CNN judged
beside it), a normal day; an unlogged exposure change (retrained automatically); the same exposure
after a recorded lighting change (approval, refused by the quality engineer).

DAG runs execute in this process with ``dag.test()`` (no scheduler): a run the monitor triggers is
queued by the TriggerDagRunOperator and then executed here with the conf it was queued with.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from plantops.net import port_open
from plantops.settings import get_settings

log = logging.getLogger("plantops.demo")
USE_CASE = "tep_reactor"
WIND = "wind_fleet"
PV = "pv_cells"
_TERMINAL = sys.stdout


def say(text: str = "") -> None:
    """Progress for the person at the terminal; everything Airflow and Spark print goes to the log."""
    print(text, file=_TERMINAL, flush=True)


def capture_output(log_file: Path):
    """Point file descriptors 1 and 2 at the log file (structlog and subprocesses write there too)."""
    global _TERMINAL
    _TERMINAL = os.fdopen(os.dup(1), "w", buffering=1)
    saved_err = os.dup(2)
    target = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    return saved_err


class Demo:
    def __init__(self, home: Path, log_file: Path) -> None:
        self.home = home
        self.log_file = log_file
        self.dags: dict[str, Any] = {}
        self.defaults: dict[str, dict[str, Any]] = {}
        self.branches: dict[str, list] = {}
        self.api_proc: subprocess.Popen | None = None
        self.mail: Any = None
        self.spark: Any = None  # the warm Spark Connect server this demo started (not one it reused)

    # -- services ------------------------------------------------------------------------------
    def start(self) -> None:
        from plantops.environments import localenv, mailsink

        # Every mail the pipeline sends lands in $PLANTOPS_HOME/mail (a local SMTP server).
        self.mail, port = mailsink.start(self.mail_folder)
        os.environ.pop("AIRFLOW_CONN_PLANTOPS_SMTP", None)
        os.environ["PLANTOPS_SMTP_PORT"] = str(port)  # localenv points the connection at it
        self.start_spark()
        localenv.apply(self.home)  # plantops_spark -> the warm server while it runs
        port = int(os.environ["AIRFLOW__API__PORT"])
        # Another api-server on the port would answer for a different metadata DB and users.
        if port_open(port):
            raise RuntimeError(f"port {port} is already in use (another Airflow api-server?); stop it or set "
                               "PLANTOPS_API_PORT")
        with self.log_file.open("a") as out:
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=out, stderr=out)
        self.api_proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", os.environ["AIRFLOW__API__PORT"]],
            stdout=self.log_file.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        from plantops.orchestration import tasklogs

        tasklogs.install()  # dag.test() writes no task log files; the UI would show "Log file not found"
        self.build_dags()

    def build_dags(self) -> None:
        """Every use case's DAGs, and each DAG's param defaults for :meth:`run`."""
        from plantops.orchestration.dagfactory import build_all

        from airflow.sdk.definitions._internal.types import NOTSET

        self.dags = build_all()
        # dag.test() keeps a run's conf in its tasks' params: each run is given every param's
        # default explicitly, so it starts from the defaults, as a run of a freshly parsed DAG does.
        self.defaults = {dag_id: {k: copy.deepcopy(dag.params.get_param(k).value) for k in dag.params.keys()
                                  if dag.params.get_param(k).value is not NOTSET}
                         for dag_id, dag in self.dags.items()}

    def start_spark(self) -> None:
        """The warm Spark Connect server of this home (PLANTOPS_SPARK_CONNECT_PORT, default 28715;
        ``off``: every features run spark-submits): the JVM starts once, not once per features run."""
        from plantops.environments import sparkconnect

        port = sparkconnect.configured_port()
        if port is None:
            return
        began = time.monotonic()
        server = sparkconnect.start(port, folder=sparkconnect.default_folder(self.home))
        if not server.reused:
            self.spark = server
        say(f"  Spark Connect server {server.url} {'reused' if server.reused else 'up'} in "
            f"{time.monotonic() - began:.0f}s (log {server.log_file})")

    def stop(self) -> None:
        if self.spark is not None:
            from plantops.environments import localenv, sparkconnect

            sparkconnect.stop(self.spark.folder)
            self.spark = None
            # Later runs in this process (tests) spark-submit again instead of calling a stopped server.
            os.environ["AIRFLOW_CONN_PLANTOPS_SPARK"] = localenv.spark_connection(self.home)
        if self.mail is not None:
            from plantops.environments import mailsink

            mailsink.stop(self.mail)
            self.mail = None
        if self.api_proc and self.api_proc.poll() is None:
            os.killpg(self.api_proc.pid, 15)
            self.api_proc.wait(timeout=30)

    @property
    def mail_folder(self) -> Path:
        return self.home / "mail"

    def mails(self) -> list[dict[str, Any]]:
        """Every mail received so far: event, recipients, subject."""
        from plantops.environments import mailsink

        return [{"use_case": m["X-Plantops-Use-Case"], "event": m["X-Plantops-Event"], "to": m["X-Envelope-To"],
                 "subject": m["Subject"]} for m in mailsink.messages(self.mail_folder)]

    def api(self, user: str):
        from plantops.stages.approval import AirflowApi

        passwords = json.loads(Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        return AirflowApi(os.environ["AIRFLOW__API__BASE_URL"], user, passwords[user])

    # -- runs ----------------------------------------------------------------------------------
    def run(self, stage: str, conf: dict | None = None, logical_date: datetime | None = None,
            use_case: str = USE_CASE) -> dict[str, str]:
        dag = self.dags[f"{use_case}__{stage}"]
        started = time.monotonic()
        dr = dag.test(run_conf={**self.defaults[dag.dag_id], **(conf or {})},
                      logical_date=logical_date or datetime.now(timezone.utc))
        states: dict[str, str] = {}
        for ti in dr.get_task_instances():
            # A task mapped per asset succeeded when any of its instances did.
            if states.get(ti.task_id) != "success":
                states[ti.task_id] = str(ti.state)
        states["run_id"] = dr.run_id
        say(f"  {dag.dag_id:<24} {dr.state:<8} {time.monotonic() - started:5.0f}s  {conf or ''}")
        if str(dr.state) != "success":
            raise RuntimeError(f"{dag.dag_id} ended {dr.state}: {states} (details in {self.log_file})")
        return states

    def monitor_branches(self, day: str, use_case: str = USE_CASE) -> dict[str, str]:
        """Run the monitor for the day; the branch each asset took (no_action, trigger_retrain,
        request_approval), read from the decision store."""
        from plantops.config import get_use_case
        from plantops.stages import decisions

        states = self.run("monitor", {"day": day}, use_case=use_case)
        names = {"ok": "no_action", "upset": "alert_operators", "retrain": "trigger_retrain",
                 "approval": "request_approval"}
        branches = {r["payload"].get("asset") or use_case: names[r["branch"]]
                    for r in decisions.for_run(use_case, states["run_id"]) if r["kind"] == "monitor"}
        self.branches.setdefault(use_case, []).append(
            branches if get_use_case(use_case).is_fleet else next(iter(branches.values())))
        say(f"  -> monitor of {use_case} for {day}: {branches}")
        return branches

    def monitor(self, day: str, use_case: str = USE_CASE) -> str:
        """The branch of a one-asset use case's monitor run for the day."""
        (branch,) = set(self.monitor_branches(day, use_case).values())
        return branch

    def live(self, use_case: Any, episode: Any) -> str:
        """Replay one live plant day, ingest it, build its features and score it; returns the day."""
        from plantops.sources import replay

        replay.replay_episode(use_case, episode)
        start, end = episode.start, episode.start + timedelta(days=1)
        self.pipeline(start.isoformat(), end.isoformat(), str(episode.day))
        return str(episode.day)

    def approve(self, day: str, option: str, params: dict, use_case: str = USE_CASE) -> dict:
        """Run the monitor for the day; answer its approval through the REST API as the use case's
        first approver (its site's engineer: eng1 at north, eng2 at coast)."""
        from plantops.config import get_use_case

        answer: dict = {}
        engineer = get_use_case(use_case).approvers[0].id
        thread = answer_when_waiting(self, option, params, answer, use_case)
        say(f"  waiting for the approval; answering through the REST API as {engineer} (the assigned engineer)")
        try:
            answer["branches"] = self.monitor_branches(day, use_case)
        except KeyboardInterrupt as exc:  # raised by the answering thread when it fails
            raise RuntimeError(f"answering the approval failed: {answer.get('error')}") from exc
        thread.join(timeout=60)
        if "error" in answer:
            raise RuntimeError(f"answering the approval failed: {answer['error']}")
        if answer.get("unassigned") != 403:
            raise RuntimeError(f"an unassigned user was not refused: {answer.get('unassigned_message', answer)}")
        say(f"  ops1 (not assigned) was refused with HTTP 403; {engineer} answered: {option}")
        return answer

    def feedback(self, day: str, kind: str, comment: str, author: str = "eng1", use_case: str = USE_CASE) -> None:
        """A process engineer's feedback on a whole day, through the use case's feedback DAG."""
        start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        self.run("feedback", {"ts_start": start.isoformat(), "ts_end": (start + timedelta(days=1)).isoformat(),
                              "kind": kind, "comment": comment, "author": author}, use_case=use_case)

    def run_triggered(self, use_case: str = USE_CASE) -> list[dict]:
        """Execute the train runs that the monitor queued (no scheduler in the embedded demo)."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            queued = [(r.run_id, r.logical_date, dict(r.conf or {})) for r in session.scalars(
                select(DagRun).where(DagRun.dag_id == f"{use_case}__train", DagRun.state == "queued"))]
        for run_id, logical_date, conf in queued:
            say(f"  executing queued run {run_id} with conf {conf}")
            self.run("train", conf, logical_date=logical_date, use_case=use_case)
        return [{"run_id": r, "conf": c} for r, _, c in queued]

    def pipeline(self, start: str, end: str, day: str | None = None, use_case: str = USE_CASE) -> None:
        """Ingest and features for [start, end); then score `day` when given."""
        self.run("ingest", {"start": start, "end": end}, use_case=use_case)
        self.run("features", {"start": start[:10], "end": end[:10]}, use_case=use_case)
        if day:
            self.run("score", {"day": day}, use_case=use_case)


def answer_when_waiting(demo: Demo, option: str, params: dict, result: dict,
                        use_case: str = USE_CASE) -> threading.Thread:
    """Answer the approval as the assigned engineer once it is waiting, after checking that an
    unassigned user (ops1) is refused. On any failure the main thread (parked in dag.test) is
    interrupted rather than left waiting forever."""
    import _thread

    from plantops.config import get_use_case
    from plantops.stages.approval import ApprovalError, wait_for_pending

    def worker() -> None:
        try:
            engineer = demo.api(get_use_case(use_case).approvers[0].id)
            engineer.wait_healthy()
            detail = wait_for_pending(engineer, f"{use_case}__monitor")
            ti = detail["task_instance"]
            # Answered once the task has deferred: an answer within the same second races
            # Airflow's deferral bookkeeping (the stack test waits for the same reason).
            time.sleep(5)
            try:
                demo.api("ops1").answer(ti["dag_id"], ti["dag_run_id"], ti["task_id"], option, params, ti["map_index"])
                result["unassigned"] = "accepted"
            except ApprovalError as exc:
                result["unassigned"] = exc.status
                result["unassigned_message"] = str(exc)
            result["subject"] = detail.get("subject")
            result["answer"] = engineer.answer(ti["dag_id"], ti["dag_run_id"], ti["task_id"], option, params,
                                               ti["map_index"])
        except Exception as exc:  # noqa: BLE001 - surfaced in the main thread
            result["error"] = repr(exc)
            _thread.interrupt_main()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread


def wind_fleet(demo: Demo) -> dict[str, Any]:
    """The fleet story: four real turbines, a normal day, one turbine losing power (an upset: the
    site is told, nothing is retrained, the others carry on), and one turbine losing power after a
    pitch-system service (only that turbine goes to its engineer, who refuses: the service left an
    offset, the model is right)."""
    from plantops.config import get_use_case
    from plantops.sources import historian, scada_replay
    from plantops.stages import decisions, registry

    wind = get_use_case(WIND)
    first, end = scada_replay.HISTORY
    say(f"7. {WIND}: La Haute Borne SCADA {first}..{end} for {len(wind.assets)} turbines")
    scada_replay.replay_history(wind)
    demo.pipeline(f"{first}T00:00:00+00:00", f"{end}T00:00:00+00:00", use_case=WIND)
    demo.run("train", {"reason": "first models"}, use_case=WIND)
    live = list(scada_replay.LIVE.values())
    say(f"8. {WIND} live: {live[0].day} normal; {live[1].day} {live[1].loss[0]} loses "
        f"{live[1].loss[1]:.0%} of its power; {live[2].day} the same on {live[2].loss[0]} after a pitch service")
    for day in live:
        scada_replay.replay_day(wind, day)
    demo.pipeline(f"{live[0].day}T00:00:00+00:00", f"{live[-1].day + timedelta(days=1)}T00:00:00+00:00",
                  use_case=WIND)
    for day in live:
        demo.run("score", {"day": str(day.day)}, use_case=WIND)
    demo.monitor_branches(str(live[0].day), WIND)
    demo.monitor_branches(str(live[1].day), WIND)
    triggered = demo.run_triggered(WIND)
    answer = demo.approve(str(live[2].day), "Refuse: model still valid",
                          {"reason": "the pitch encoder was re-zeroed wrong: send the technician back; the model is right",
                           "reference_start": ""}, use_case=WIND)
    triggered += demo.run_triggered(WIND)
    assets: dict[str, Any] = {}
    for asset in wind.assets:
        champion = registry.champion(wind.model_name(asset))
        rows = decisions.latest(WIND, limit=50, asset=asset)
        predictions = historian.read_predictions(asset, live[0].start, live[-1].start + timedelta(days=1),
                                                 conn_id=wind.historian_conn)
        assets[asset] = {
            "registered_model": wind.model_name(asset),
            "champion_version": champion[0] if champion else None,
            "branches": [r["branch"] for r in reversed(rows) if r["kind"] == "monitor"],
            "decisions": [f"{r['kind']}:{r['branch']}" for r in reversed(rows)],
            "alarm_rate": round(float(predictions["alarm"].mean()), 4) if len(predictions) else None,
        }
    return {
        "model_kind": wind.model.kind,
        "assets": assets,
        "triggered_runs": [t["run_id"] for t in triggered],
        "approval": {"subject": answer.get("subject"), "chosen": answer["answer"]["chosen_options"][0],
                     "by": answer["answer"]["responded_by"]["id"],
                     "reason": answer["answer"]["params_input"].get("reason")},
    }


def pv_cells(demo: Demo) -> dict[str, Any]:
    """The visual inspection story on the EL line (real elpv cells): a labelled history with a cut
    image (rejected), the first champion (texture SVM, the CNN judged beside it); a normal day; an
    exposure change nobody logged (the champion does not see it: retrained automatically); the same
    change the next day after a recorded lighting change (the quality engineer decides, and refuses:
    the inspectors' labels of the new images come first)."""
    from plantops.config import get_use_case
    from plantops.sources import elpv, elpv_replay, historian, inspections
    from plantops.modalities.images import ingest as inspection_ingest
    from plantops.stages import decisions, registry

    pv = get_use_case(PV)
    spec = pv.inspection
    cells = elpv.labels().sort_values("cell_id").reset_index(drop=True)
    history = cells.iloc[::11]  # 239 cells in elpv's proportions of classes and module types
    rest = cells.drop(history.index)
    days = {n: datetime(2026, 5, n, 6, tzinfo=timezone.utc) for n in range(1, 5)}

    def land(run: str, day: int, first: int, **kwargs) -> list[str]:
        chosen = rest.iloc[first::53]["cell_id"].tolist()  # 43-44 cells

        elpv_replay.land_run(spec.folder, run, chosen, line=spec.line, start=days[day], **kwargs)
        return chosen

    def day_pipeline(first: int, last: int, score: int) -> None:
        demo.run("ingest", {"start": days[first].isoformat(), "end": days[last].isoformat()}, use_case=PV)
        demo.run("features", {"start": f"2026-05-{first:02d}", "end": f"2026-05-{last + 1:02d}"}, use_case=PV)
        demo.run("score", {"day": f"2026-05-{score:02d}"}, use_case=PV)

    say(f"9. {PV}: NiFi lands {len(history)} labelled EL images (one cut short) and a first unlabelled run")
    elpv_replay.land_run(spec.folder, "el-0501", history["cell_id"].tolist(), line=spec.line, labels=True,
                         start=days[1], faults=["truncated"])
    normal = land("el-0502", 2, 0)
    demo.run("ingest", {"start": days[1].isoformat(), "end": days[3].isoformat()}, use_case=PV)
    demo.run("features", {"start": "2026-05-01", "end": "2026-05-03"}, use_case=PV)
    demo.run("train", {"reason": "first model"}, use_case=PV)
    demo.run("score", {"day": "2026-05-02"}, use_case=PV)
    demo.monitor("2026-05-02", PV)

    say(f"10. {PV}: 2026-05-03, the inspectors' labels of 05-02 arrive; the camera's exposure rose and nobody logged it")
    elpv_replay.land_labels(spec.folder, "el-0502", normal, days[3])
    land("el-0503", 3, 17, gain=1.2, offset=5)
    day_pipeline(3, 3, 3)
    demo.monitor("2026-05-03", PV)
    triggered = demo.run_triggered(PV)

    say(f"11. {PV}: 2026-05-04, the EL power supply is replaced at 05:00 (a recorded lighting change); the quality "
        "engineer refuses to retrain before the inspectors have labelled the new images")
    historian.record_plant_event(spec.line, days[4].replace(hour=5), "lighting_change",
                                 "EL power supply replaced; exposure re-set by the vendor", "ops1")
    land("el-0504", 4, 34, gain=1.2, offset=5)
    day_pipeline(4, 4, 4)
    answer = demo.approve("2026-05-04", "Refuse: model still valid",
                          {"reason": "new supply, brighter images: wait for the inspectors' labels of today's cells",
                           "reference_start": ""}, use_case=PV)
    triggered += demo.run_triggered(PV)

    champion = registry.champion(PV)
    rows = decisions.latest(PV, limit=50)
    trains = [r for r in reversed(rows) if r["kind"] == "train"]
    first = trains[0]["payload"]["result"]
    verdicts = inspections.read_verdicts(spec.line, days[2].replace(hour=0), days[4] + timedelta(days=1))
    return {
        "model_kind": pv.model.kind,
        "champion_version": champion[0] if champion else None,
        "branches_taken": demo.branches[PV],
        "decisions": [f"{r['kind']}:{r['branch']}" for r in reversed(rows)],
        "rejected_images": [{"file": q["file"], "reason": q["reason"]} for q in inspection_ingest.quarantined_items(PV)],
        "first_training": {"promoted": first["promoted"], "reason": first["reason"],
                           "refused_as_degenerate": first.get("degenerate", {}),
                           "held_out": {k: round(v, 4) for k, v in first["metrics"].items()
                                        if k.endswith(("accuracy", "defect_recall", "false_reject_rate"))}},
        "triggered_runs": [t["run_id"] for t in triggered],
        "cells_scored": int(len(verdicts)), "cells_rejected": int(verdicts["rejected"].sum()),
        "heatmaps": int(verdicts["heatmap"].notna().sum()),
        "approval": {"subject": answer.get("subject"), "chosen": answer["answer"]["chosen_options"][0],
                     "by": answer["answer"]["responded_by"]["id"],
                     "reason": answer["answer"]["params_input"].get("reason")},
    }


def main() -> int:
    started = time.monotonic()
    settings = get_settings()
    home = settings.home
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    log_file = home / "demo.log"
    saved_err = capture_output(log_file)
    logging.basicConfig(level=logging.INFO)
    demo = Demo(home, log_file)
    answers: list[dict] = []
    say(f"plantops demo: state in {home}, logs in {log_file}")
    try:
        demo.start()
        from plantops.stages import decisions, registry
        from plantops.sources import replay
        from plantops.config import get_use_case

        use_case = get_use_case(USE_CASE)
        say("1. history: 21 labelled fault days + 3 normal days")
        replay.replay_history(use_case)
        demo.pipeline("2026-03-01T00:00:00+00:00", "2026-03-25T00:00:00+00:00")
        demo.run("train", {"reason": "first model"})
        demo.run("score", {"day": "2026-03-24"})
        demo.monitor("2026-03-24")

        live = replay.LIVE
        say("2. live: TEP fault 1 from 2026-03-25 08:00 (an upset)")
        demo.monitor(demo.live(use_case, live["upset"]))
        triggered = demo.run_triggered()

        say("3. live: a hot day on 2026-03-26, the cooling-water temperatures rise; eng1 labels the alarms false")
        day = demo.live(use_case, live["stale"])
        demo.feedback(day, "false_alarm", "hot day: the cooling-water outlet temperatures follow the cooling tower; "
                                          "product on spec, the plant is fine")
        demo.monitor(day)
        triggered += demo.run_triggered()

        say("4. live: TEP fault 13 on 2026-03-27 after an analyzer maintenance at 06:00")
        answers.append(demo.approve(demo.live(use_case, live["maintenance"]), "Refuse: model still valid",
                                    {"reason": "analyzer recalibration transient; the model is still valid",
                                     "reference_start": ""}))
        triggered += demo.run_triggered()

        say("5. live: TEP fault 7 on 2026-03-28 with an operator's setpoint change at 07:30; eng1 declares the new "
            "normal (the reference defaults to the plant event)")
        answers.append(demo.approve(demo.live(use_case, live["plant_change"]), "Retrain from a new reference window",
                                    {"reason": "the setpoint change is permanent", "reference_start": ""}))
        triggered += demo.run_triggered()
        say("6. live: 2026-03-29, the new state's second day")
        demo.monitor(demo.live(use_case, live["new_normal"]))

        wind_summary = wind_fleet(demo)
        pv_summary = pv_cells(demo)

        registry.configure()
        champion = registry.champion(USE_CASE)
        monitor_records = decisions.latest(USE_CASE, kind="monitor", limit=10)
        last_drift = next((r for r in monitor_records if r["branch"] != "ok"), monitor_records[0])
        payload = json.loads(last_drift["payload"]) if isinstance(last_drift["payload"], str) else last_drift["payload"]
        train_records = decisions.latest(USE_CASE, kind="train", limit=10)
        from plantops.sources import historian

        predictions = historian.read_predictions(use_case.assets[0], replay.HISTORY[-1].start,
                                                 live["new_normal"].start + timedelta(days=1),
                                                 conn_id=use_case.historian_conn)
        alarms = predictions[predictions["alarm"] == 1]
        explained = int(alarms["top_tags"].notna().sum())
        by_day = predictions.groupby(predictions["ts"].dt.strftime("%Y-%m-%d"))
        alarm_rates = {d: round(float(rate), 4) for d, rate in by_day["alarm"].mean().items()}
        champions = {d: sorted(set(v)) for d, v in by_day["model_version"].agg(lambda x: list(map(str, x))).items()}
        summary = {
            "use_case": USE_CASE,
            "champion_version": champion[0] if champion else None,
            "drift_share": payload["drift_share"],
            "branches_taken": demo.branches[USE_CASE],
            "report_path": payload["report_path"],
            "mlflow_uri": settings.mlflow_tracking_uri,
            "train_decisions": [r["branch"] for r in reversed(train_records)],
            "triggered_runs": [t["run_id"] for t in triggered],
            "approvals": [{"chosen": a["answer"]["chosen_options"][0], "by": a["answer"]["responded_by"]["id"],
                           "reason": a["answer"]["params_input"].get("reason")} for a in answers],
            "decisions": [f"{r['kind']}:{r['branch']}" for r in reversed(decisions.latest(USE_CASE, limit=50))],
            "decision_store": settings.state_url,
            "alarms": len(alarms),
            "alarm_rates": alarm_rates,
            "scored_by": champions,
            "alarms_with_top_tags": explained,
            "champion_top_tags": registry.configure().get_model_version(USE_CASE, champion[0]).tags.get("top_tags"),
        }
        summary["use_cases"] = {
            USE_CASE: {key: summary[key] for key in ("champion_version", "branches_taken", "train_decisions",
                                                     "approvals", "alarms", "alarm_rates", "drift_share")}
            | {"model_kind": use_case.model.kind},
            WIND: wind_summary,
            PV: pv_summary,
        }
        summary["mail"] = demo.mails()
        summary["mail_folder"] = str(demo.mail_folder)
        summary["seconds"] = round(time.monotonic() - started)
    except BaseException:
        import traceback

        traceback.print_exc()  # into the log
        os.dup2(saved_err, 2)
        say(f"demo failed; the end of {log_file}:")
        say("".join(log_file.read_text().splitlines(keepends=True)[-40:]))
        raise SystemExit(1)
    finally:
        demo.stop()
    say(f"\nSummary ({summary['seconds']} s)")
    say(f"  champion: {summary['champion_version']}; monitor branches: {', '.join(summary['branches_taken'])}")
    say(f"  train decisions: {', '.join(summary['train_decisions'])}")
    for approval in summary["approvals"]:
        say(f"  approval answered by {approval['by']}: {approval['chosen']} ({approval['reason']})")
    say(f"  decision store: {', '.join(summary['decisions'])}")
    say("  alarm rate per day (champion version): " + ", ".join(
        f"{d[5:]} {r:.0%} (v{'/'.join(summary['scored_by'][d])})" for d, r in summary["alarm_rates"].items()))
    say(f"  alarms: {summary['alarms']}, each with its top tags: {summary['alarms_with_top_tags']}; "
        f"champion's top tags: {summary['champion_top_tags']}")
    say(f"  drift report: {summary['report_path']}")
    wind = summary["use_cases"][WIND]
    say(f"  {WIND} ({wind['model_kind']}), per turbine:")
    for asset, entry in wind["assets"].items():
        say(f"    {asset}: champion v{entry['champion_version']}, monitor {', '.join(entry['branches'])}, "
            f"decisions {', '.join(entry['decisions'])}")
    pv = summary["use_cases"][PV]
    say(f"  {PV} ({pv['model_kind']}): champion v{pv['champion_version']}, monitor {', '.join(pv['branches_taken'])}; "
        f"held out at first training {pv['first_training']['held_out']}")
    say(f"    {pv['cells_scored']} cells scored, {pv['cells_rejected']} rejected, each with a heat map "
        f"({pv['heatmaps']}); images rejected at ingest: "
        + ", ".join(f"{r['file']} ({r['reason']})" for r in pv["rejected_images"]))
    say(f"    decisions {', '.join(pv['decisions'])}")
    say(f"  mail ({len(summary['mail'])} in {summary['mail_folder']}):")
    for mail in summary["mail"]:
        say(f"    {mail['event']:<10} to {mail['to']}: {mail['subject']}")
    say(f"  decisions: {summary['decision_store']} (table decisions); `make up` to browse the runs")
    say(f"  MLflow: {summary['mlflow_uri']}  (mlflow ui --backend-store-uri {summary['mlflow_uri']})")
    say(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
