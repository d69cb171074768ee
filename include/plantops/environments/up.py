"""`make up`: Airflow on the embedded state (scheduler, dag-processor, triggerer, api-server with the UI).

Uses the same PLANTOPS_HOME as `make demo`, so the demo's runs, decisions and approvals are there
to look at. `make stack-airflow` (``--stack``) runs the same on the native stack instead: metadata
on PostgreSQL, historian reads through Trino, models in the MLflow server, tasks on two Celery
workers (Redis broker) and features on the stack's Spark cluster (`make stack-up` first).
Prints the URL and the demo users with their generated passwords, starts the local mail sink
(:mod:`plantops.environments.mailsink`), then runs Airflow in the foreground (Ctrl-C stops
everything): `airflow standalone` on the embedded tier; on the stack the services one by one
(:class:`plantops.environments.stack.AirflowServices`), because `airflow standalone` forces the
LocalExecutor and starts no Celery worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from plantops.environments import localenv


def main(argv: list[str] | None = None) -> int:
    if "--stack" in (sys.argv[1:] if argv is None else argv):
        from plantops.environments import stack

        env = stack.airflow_env()
        os.environ.update(env)
    else:
        env = localenv.apply()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    print(f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}")
    print(f"  operator          ops1 / {passwords['ops1']}  (views and triggers runs)")
    print(f"  process engineer  eng1 / {passwords['eng1']}  (assigned to approvals: Browse > Required Actions)")
    print(f"  state: {env['PLANTOPS_HOME']}")
    port = int(os.environ.get("PLANTOPS_SMTP_PORT", "28025"))
    mail = Path(env["PLANTOPS_HOME"]) / "mail"
    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", port)) == 0
    if taken:
        print(f"  mail: something already listens on 127.0.0.1:{port}; plantops mails it there")
    else:
        # Same process group: Ctrl-C stops it with Airflow.
        subprocess.Popen([sys.executable, "-m", "plantops.environments.mailsink", str(mail), str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"  mail: every notification is a file in {mail} (local SMTP server on 127.0.0.1:{port})")
    sys.stdout.flush()
    if "--stack" not in (sys.argv[1:] if argv is None else argv):
        os.execv(sys.executable, [sys.executable, "-m", "airflow", "standalone"])
    return _serve_stack(env)


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


if __name__ == "__main__":
    sys.exit(main())
