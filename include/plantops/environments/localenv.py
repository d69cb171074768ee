"""The embedded tier's Airflow settings, in one place for `make demo`, `make up` and the tests.

Airflow keeps its metadata DB (SQLite) under ``$PLANTOPS_HOME/airflow``. Demo users come from
plantops' auth manager (SimpleAuthManager where deleting a DAG and writing an XCom need ``admin``,
see :mod:`plantops.orchestration.auth`): ``ops1`` (an operator: views and triggers) and ``eng1``
(the process engineer assigned to approvals), both role ``user``, the smallest that may trigger or
answer. Their passwords are generated once per home, never committed.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
from pathlib import Path

from plantops.settings import REPO_ROOT, get_settings

# user -> SimpleAuthManager role; the same in the stack (this env) and docker-compose (.env.example).
# ops1/eng1 are site north's people, ops2/eng2 site coast's (include/sites): here every signed-in
# user sees every site (SimpleAuthManager has no per-DAG permissions; the stack's FAB roles do).
USERS = {"ops1": "user", "eng1": "user", "ops2": "user", "eng2": "user"}
AUTH_MANAGER = "plantops.orchestration.auth.PlantopsAuthManager"


def users_setting() -> str:
    """AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS: ``user:role,...``."""
    return ",".join(f"{u}:{r}" for u, r in USERS.items())


API_PORT = int(os.environ.get("PLANTOPS_API_PORT", "28080"))


def passwords_file(home: Path) -> Path:
    """The demo users' passwords, generated once per home; a user added later gets one too."""
    path = home / "airflow" / "passwords.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    if set(USERS) - set(known):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**{user: secrets.token_urlsafe(12) for user in USERS}, **known}))
        path.chmod(0o600)
    return path


def airflow_env(home: Path | None = None, api_port: int = API_PORT) -> dict[str, str]:
    home = Path(home or get_settings().home)
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PLANTOPS_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The nightly training, the daily ingest and monitor and the landing watcher run as soon as
        # `make up` (or a stack) starts: a DAG left paused would queue an approved retrain forever.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users_setting(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(home)),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _stable_secret(airflow_home, "jwt_secret"),
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Retries stay (>= 2) but wait seconds, not minutes, on a laptop and in tests.
        "PLANTOPS_RETRY_DELAY_SECONDS": os.environ.get("PLANTOPS_RETRY_DELAY_SECONDS", "5"),
        "AIRFLOW_CONN_PLANTOPS_SPARK": spark_connection(home),
        # Mail goes to the local sink (plantops.environments.mailsink): plain SMTP on loopback.
        "AIRFLOW_CONN_PLANTOPS_SMTP": os.environ.get("AIRFLOW_CONN_PLANTOPS_SMTP") or json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": int(os.environ.get("PLANTOPS_SMTP_PORT", "28025")),
            "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 10, "retry_limit": 1}}),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        # MLflow's download progress bar writes to stderr, which task logs show as ERROR lines.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "true",
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "include"), str(REPO_ROOT),
                                                    os.environ.get("PYTHONPATH", "")])),
    }


def spark_connection(home: Path) -> str:
    """The features' engine: the home's warm Spark Connect server while one runs (`make up` and the
    demo start it, :mod:`plantops.environments.sparkconnect`), else spark-submit on ``local[*]``."""
    from plantops.environments import sparkconnect

    server = sparkconnect.status(sparkconnect.default_folder(home))
    if server is not None:
        return json.dumps({"conn_type": "spark_connect", "host": f"sc://{sparkconnect.HOST}", "port": server.port})
    return json.dumps({"conn_type": "spark", "host": "local[*]"})


def _stable_secret(folder: Path, name: str) -> str:
    path = folder / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def apply(home: Path | None = None) -> dict[str, str]:
    env = airflow_env(home)
    os.environ.update(env)
    return env


if __name__ == "__main__":
    # `eval "$(python -m plantops.environments.localenv)"` exports the embedded tier's settings into a shell.
    for key, value in airflow_env().items():
        print(f"export {key}={shlex.quote(value)}")
