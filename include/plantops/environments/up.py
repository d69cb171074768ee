"""`make up`: Airflow on the embedded state (scheduler, dag-processor, triggerer, api-server with the UI).

Uses the same PLANTOPS_HOME as `make demo`, so the demo's runs, decisions and approvals are there
to look at. `make stack-airflow` (``--stack``) runs the same on the native stack instead: metadata
on PostgreSQL, historian reads through Trino, models in the MLflow server, tasks on two Celery
workers (Redis broker) and features on the stack's Spark cluster (`make stack-up` first).
On the embedded tier it starts the warm Spark Connect server of the home
(:mod:`plantops.environments.sparkconnect`; the features run on it; `PLANTOPS_SPARK_CONNECT_PORT=off`
keeps spark-submit) and stops it on exit.
Prints the URL and the demo users with their generated passwords, starts the local mail sink
(:mod:`plantops.environments.mailsink`), then runs Airflow in the foreground (Ctrl-C stops
everything): `airflow standalone` on the embedded tier; on the stack the services one by one
(:class:`plantops.environments.stack.AirflowServices`), because `airflow standalone` forces the
LocalExecutor and starts no Celery worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from plantops.environments import localenv
from plantops.net import port_open


def main(argv: list[str] | None = None) -> int:
    if "--stack" in (sys.argv[1:] if argv is None else argv):
        from plantops.environments import stack

        env = stack.airflow_env()
        os.environ.update(env)
        _welcome(env, None)
        return _serve_stack(env)
    spark = _start_spark()
    try:
        env = localenv.apply()  # plantops_spark -> the warm server while it runs
        _welcome(env, spark)
        return _serve(spark)
    finally:
        # Whatever ends `make up` (Ctrl-C, SIGTERM, a failed migration), the server it started stops.
        if spark is not None and not spark.reused:
            from plantops.environments import sparkconnect

            sparkconnect.stop(spark.folder)


def _welcome(env: dict[str, str], spark: Any) -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    print(f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}")
    if spark is None and "fab" in env.get("AIRFLOW__CORE__AUTH_MANAGER", ""):
        # The stack's FAB auth manager: the sites' people, mlops1 and admin (docs: Roles).
        from plantops.config import Site, load_sites
        from plantops.environments import fabusers
        from plantops.orchestration import access

        users = access.users({k: s for k, s in load_sites().items() if isinstance(s, Site)})
        passwords = fabusers.passwords(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]), sorted(users))
        for user, spec in users.items():
            print(f"  {user:8} / {passwords[user]}  ({', '.join(spec['roles'])})")
    else:
        print(f"  operator          ops1 / {passwords['ops1']}  (views and triggers runs)")
        print(f"  process engineer  eng1 / {passwords['eng1']}  (north's approvals: Browse > Required Actions)")
        print(f"  operator          ops2 / {passwords['ops2']}  (site coast)")
        print(f"  process engineer  eng2 / {passwords['eng2']}  (coast's approvals: wind_fleet)")
    print(f"  state: {env['PLANTOPS_HOME']}")
    port = int(os.environ.get("PLANTOPS_SMTP_PORT", "28025"))
    mail = Path(env["PLANTOPS_HOME"]) / "mail"
    if port_open(port):
        print(f"  mail: something already listens on 127.0.0.1:{port}; plantops mails it there")
    else:
        # Same process group: Ctrl-C stops it with Airflow.
        subprocess.Popen([sys.executable, "-m", "plantops.environments.mailsink", str(mail), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  mail: every notification is a file in {mail} (local SMTP server on 127.0.0.1:{port})")
    if spark is not None:
        print(f"  spark: the features run on the Spark Connect server {spark.url} (log {spark.log_file})")
    sys.stdout.flush()


def _serve(spark: Any) -> int:
    """`airflow standalone` until Ctrl-C."""
    if spark is None:
        os.execv(sys.executable, [sys.executable, "-m", "airflow", "standalone"])
    # Not exec'd: this process stays to stop the server (its own process group, which Ctrl-C
    # does not reach) once Airflow has stopped.
    airflow = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"])

    def terminate(signum: int, frame: Any) -> None:
        airflow.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    while True:
        try:
            return airflow.wait()
        except KeyboardInterrupt:  # Ctrl-C reached Airflow too; wait for it to finish stopping
            continue


def _serve_stack(env: dict[str, str]) -> int:
    """api-server, scheduler, dag-processor, triggerer and the Celery workers until Ctrl-C."""
    import time

    from plantops.environments import stack

    logs = Path(env["PLANTOPS_HOME"]) / "airflow-logs"
    services = stack.AirflowServices(env, logs)
    services.start()
    print(f"  services: {', '.join(services.components)} (logs in {logs}); Ctrl-C stops them", flush=True)
    try:
        while all(proc.poll() is None for proc in services.procs.values()):
            time.sleep(2)
        dead = [name for name, proc in services.procs.items() if proc.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited (see {logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        services.stop()


def _start_spark() -> Any:
    """The warm Spark Connect server of the embedded home (None with PLANTOPS_SPARK_CONNECT_PORT=off)."""
    from plantops.environments import sparkconnect

    port = sparkconnect.configured_port()
    if port is None:
        return None
    print(f"starting the Spark Connect server on port {port} (PLANTOPS_SPARK_CONNECT_PORT; 'off' to spark-submit)")
    return sparkconnect.start(port, folder=sparkconnect.default_folder())


if __name__ == "__main__":
    sys.exit(main())
