"""docker-compose.yaml, checked without Docker: what `docker compose up` would trip on, statically.

The compose tier must run the same code with the same variables as the native stack, pin what it
pulls, wait for what it needs, and hold no credential: every one comes from .env.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"

AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVICES = {"postgres", "trino", "mlflow", "airflow-init", *AIRFLOW_SERVICES}
RUN_ONCE = {"airflow-init"}

# What the native stack (include/plantops/environments/stack.py) exports, with compose host names.
NATIVE_STACK_VARS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "PLANTOPS_HISTORIAN_URL",
    "PLANTOPS_HISTORIAN_READ_URL",
    "PLANTOPS_HISTORIANS",
    "PLANTOPS_STATE_URL",
    "MLFLOW_TRACKING_URI",
    "AIRFLOW_CONN_PLANTOPS_SPARK",
    "PLANTOPS_HOME",
    "PLANTOPS_LAKE_ROOT",
}
CONNECTION_PREFIXES = ("PLANTOPS_", "MLFLOW_", "AIRFLOW__DATABASE__", "AIRFLOW_CONN_")
NOT_CONNECTIONS = {"MLFLOW_ENABLE_TELEMETRY", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}  # switches, not places
DATABASES = {"airflow", "historian", "plantops", "mlflow"}
PLANTOPS_HOME = "/opt/plantops/data"

# ${VAR}, ${VAR:-default}, ${VAR:?message} and $VAR, but not $$ (compose's escaped dollar).
VAR_REF = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
URL = re.compile(r"^(?P<scheme>[a-z0-9+]+)://(?:(?P<auth>[^@/]*)@)?(?P<host>[^:/@]+)(?::(?P<port>\d+))?(?P<path>/.*)?$")
# user[:password] where either part may be a ${...} reference (whose message may hold a colon).
USERINFO = re.compile(r"(?P<user>\$\{[^}]*\}|[^:]*)(?::(?P<password>.*))?")
SECRETISH = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services mapping"
    return data


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return env


def _strings(node):
    """Every string in a parsed YAML tree (keys included), i.e. what compose interpolates."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _refs(compose: dict) -> list[tuple[str, str]]:
    """(variable, modifier) for each interpolation in the file; modifier is e.g. ':?msg' or ':-x'."""
    return [(m[0] or m[2], m[1]) for text in _strings(compose) for m in VAR_REF.findall(text)]


def _volumes(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of the short-syntax volume entries."""
    mounts = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"long-syntax volume not expected here: {entry}"
        source, target, *mode = entry.split(":")
        mounts.append((source, target, "ro" in mode))
    return mounts


def _command(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def _healthcheck(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else test


def _url(value: str) -> dict:
    match = URL.match(value)
    assert match, f"not a URL: {value}"
    return match.groupdict()


def test_every_service_is_there(compose):
    assert set(compose["services"]) == SERVICES


def test_named_volumes_and_secrets_are_declared(compose):
    declared_volumes = set(compose.get("volumes") or {})
    declared_secrets = set(compose.get("secrets") or {})
    used_volumes, used_secrets = set(), set()
    for name, service in compose["services"].items():
        for source, _target, _ro in _volumes(service):
            if not source.startswith((".", "/")):
                used_volumes.add(source)
        for secret in service.get("secrets", []):
            used_secrets.add(secret if isinstance(secret, str) else secret["source"])
    assert used_volumes <= declared_volumes, f"undeclared volumes: {used_volumes - declared_volumes}"
    assert used_secrets <= declared_secrets, f"undeclared secrets: {used_secrets - declared_secrets}"
    # A declared but unused volume or secret is a leftover that hides a missing mount.
    assert declared_volumes == used_volumes
    assert declared_secrets == used_secrets


def test_bind_mounts_exist_in_the_repo(compose):
    for name, service in compose["services"].items():
        for source, target, _ro in _volumes(service):
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} (mounted at {target}) is not in the repo"


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
            assert (REPO / context / "Dockerfile").is_file(), f"{name} builds from a missing Dockerfile"
            continue
        image = service.get("image", "")
        assert image, f"{name}: neither image nor build"
        if "@sha256:" in image:
            continue
        repo_part, _, tag = image.rpartition(":")
        assert repo_part and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"


def test_dockerfile_base_image_matches_pinned_airflow():
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pinned, "requirements.txt does not pin apache-airflow"
    base = re.search(r"^FROM\s+apache/airflow:(\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert base, "Dockerfile is not built FROM apache/airflow"
    version, _, python = base.group(1).partition("-python")
    assert version == pinned.group(1), f"Dockerfile has Airflow {version}, requirements.txt {pinned.group(1)}"
    compiled_for = re.search(r"--python-version (\S+)", (REPO / "requirements.txt").read_text())
    assert compiled_for and python == compiled_for.group(1), "base image Python differs from requirements.txt"


def test_long_running_services_have_healthchecks(compose):
    for name, service in compose["services"].items():
        if name in RUN_ONCE:
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    checks = {name: _healthcheck(service) for name, service in compose["services"].items()}
    assert "pg_isready" in checks["postgres"]
    assert "health-check" in checks["trino"] or "/v1/info" in checks["trino"]
    assert "localhost:5000/health" in checks["mlflow"]
    assert "localhost:8080/api/v2/monitor/health" in checks["api-server"]
    for service, job in (("scheduler", "SchedulerJob"), ("dag-processor", "DagProcessorJob"),
                         ("triggerer", "TriggererJob")):
        assert "jobs check" in checks[service] and f"--job-type {job}" in checks[service], service


def test_startup_order(compose):
    services = compose["services"]

    def deps(name: str) -> dict[str, str]:
        depends = services[name].get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        return {dep: spec.get("condition") for dep, spec in depends.items()}

    for name in AIRFLOW_SERVICES:
        assert deps(name).get("postgres") == "service_healthy", name
        assert deps(name).get("airflow-init") == "service_completed_successfully", name
    for name in ("scheduler", "triggerer"):  # they run the tasks that use Trino and MLflow
        assert deps(name).get("trino") == "service_healthy", name
        assert deps(name).get("mlflow") == "service_healthy", name
    assert deps("airflow-init") == {"postgres": "service_healthy"}
    assert deps("trino").get("postgres") == "service_healthy"
    assert deps("mlflow").get("postgres") == "service_healthy"
    # service_healthy on a service without a healthcheck would wait forever.
    for name in services:
        for dep, condition in deps(name).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}, which has no healthcheck"
    assert services["airflow-init"].get("restart") in (None, "no"), "a restarting init never completes"


def test_airflow_services_share_one_configuration(compose):
    services = compose["services"]
    reference = services["airflow-init"]
    for name in AIRFLOW_SERVICES:
        assert _env(services[name]) == _env(reference), f"{name} has its own environment"
        assert services[name].get("volumes") == reference.get("volumes"), f"{name} has its own mounts"
        assert services[name].get("build") == reference.get("build")
    mounts = {target: source for source, target, _ro in _volumes(reference)}
    for folder in ("dags", "plugins", "include", "spark_jobs"):
        assert mounts.get(f"/opt/plantops/{folder}") == f"./{folder}", folder
    assert mounts.get(PLANTOPS_HOME) == "plantops-data"
    env = _env(reference)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/plantops/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/plantops/plugins"
    assert _url(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])["host"] == "api-server"


def test_connection_env_matches_the_native_stack(compose):
    services = compose["services"]
    env = _env(services["scheduler"])
    keys = {k for k in env if k.startswith(CONNECTION_PREFIXES)} - NOT_CONNECTIONS
    assert keys == NATIVE_STACK_VARS

    def points_at(var: str, scheme: str, host: str, port: str, path: str) -> None:
        url = _url(env[var])
        assert (url["scheme"], url["host"], url["port"], url["path"]) == (scheme, host, port, path), var
        assert host in services, f"{var} points at {host}, which is not a service"

    points_at("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2", "postgres", "5432", "/airflow")
    points_at("PLANTOPS_HISTORIAN_URL", "postgresql+psycopg2", "postgres", "5432", "/historian")
    points_at("PLANTOPS_STATE_URL", "postgresql+psycopg2", "postgres", "5432", "/plantops")
    points_at("PLANTOPS_HISTORIAN_READ_URL", "trino", "trino", "8080", "/historian/public")
    points_at("MLFLOW_TRACKING_URI", "http", "mlflow", "5000", None)
    # Each further site historian (the native stack derives them from include/sites): its database
    # and its Trino catalog.
    from plantops.environments import stack

    historians = json.loads(env["PLANTOPS_HISTORIANS"])
    assert set(historians) == set(stack.site_historians()) == {"plantops_historian_coast"}
    coast = {k: _url(v) for k, v in historians["plantops_historian_coast"].items()}
    assert (coast["url"]["host"], coast["url"]["path"]) == ("postgres", "/historian_coast")
    assert (coast["read_url"]["host"], coast["read_url"]["path"]) == ("trino", "/historian_coast/public")
    for var in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "PLANTOPS_HISTORIAN_URL", "PLANTOPS_STATE_URL"):
        assert _url(env[var])["auth"] == "${PLANTOPS_DB_USER:?set PLANTOPS_DB_USER in .env}:" \
            "${PLANTOPS_DB_PASSWORD:?set PLANTOPS_DB_PASSWORD in .env}", var
    assert json.loads(env["AIRFLOW_CONN_PLANTOPS_SPARK"]) == {"conn_type": "spark", "host": "local[*]"}
    assert env["PLANTOPS_HOME"] == PLANTOPS_HOME
    # The servers listen where the URLs say.
    assert "--port 5000" in _command(services["mlflow"])
    assert _url(_env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"])["path"] == "/mlflow"
    assert "--serve-artifacts" in _command(services["mlflow"])
    assert "mlflow" in _command(services["mlflow"]).split("--allowed-hosts ")[1], \
        "MLflow would refuse the Host header mlflow:5000"


def test_postgres_creates_every_database_the_stack_uses(compose):
    services = compose["services"]
    mounts = {target: source for source, target, _ro in _volumes(services["postgres"])}
    scripts = [source for target, source in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/")]
    assert scripts == ["./stack/postgres/init-databases.sh"]
    script = (REPO / scripts[0]).read_text()
    assert "CREATE DATABASE" in script
    created = set(re.findall(r"'(\w+)'", script.split("CREATE DATABASE", 1)[1]))
    assert created >= DATABASES
    used = {_url(v)["path"].lstrip("/") for s in services.values() for k, v in _env(s).items()
            if k.endswith(("_CONN", "_URL", "_URI")) and v.startswith("postgresql")}
    assert used and used <= created, f"databases used but not created: {used - created}"


def test_trino_catalogs_are_the_repo_files_with_credentials_from_env(compose):
    trino = compose["services"]["trino"]
    env = _env(trino)
    catalogs = {target: source for source, target, _ro in _volumes(trino) if target.startswith("/etc/trino/catalog/")}
    assert set(catalogs) == {f"/etc/trino/catalog/{c}.properties" for c in ("historian", "historian_coast", "lake")}
    for target, source in catalogs.items():
        path = REPO / source
        assert path.is_file() and path.name == Path(target).name, source
        props = dict(line.split("=", 1) for line in path.read_text().splitlines()
                     if line.strip() and not line.startswith("#"))
        for key, value in props.items():
            if re.search(r"user|password|secret|key|token", key, re.IGNORECASE):
                assert re.fullmatch(r"\$\{ENV:[A-Z_]+\}", value), f"{source}: {key} is not from the environment"
        for var in re.findall(r"\$\{ENV:([A-Za-z_]+)\}", path.read_text()):
            assert var in env, f"{source} reads {var}, which the trino service does not set"
    assert _url(env["PLANTOPS_TRINO_HISTORIAN_JDBC"].removeprefix("jdbc:"))["host"] == "postgres"
    assert env["PLANTOPS_TRINO_HISTORIAN_JDBC"].endswith(":5432/historian")
    # The lake catalog reads the volume the Airflow tasks write; its file metastore lives there too.
    assert env["PLANTOPS_TRINO_LAKE"] == PLANTOPS_HOME
    assert ("plantops-data", PLANTOPS_HOME, False) in _volumes(trino)


def test_no_credentials_in_the_file(compose):
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if SECRETISH.search(key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}", str(value)), \
                    f"{name}: {key} is not a required ${{VAR:?...}} reference"
            for auth in re.findall(r"://([^@/]*)@", str(value)):
                password = USERINFO.fullmatch(auth).group("password")
                if password is not None:
                    assert re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}", password), \
                        f"{name}: {key} embeds a literal password"
    # Whatever credential is interpolated anywhere (commands included) must be required, not defaulted.
    for var, modifier in _refs(compose):
        if SECRETISH.search(var):
            assert modifier.startswith(":?"), f"${{{var}{modifier}}} can silently be empty or defaulted"
    for secret in (compose.get("secrets") or {}).values():
        assert re.fullmatch(r"\$\{[A-Za-z_]+:\?[^}]+\}", secret["file"]), "a secret file path is committed"


def test_users_and_passwords(compose):
    services = compose["services"]
    env = _env(services["api-server"])
    # the same auth manager and roles as the native stack (localenv.USERS)
    from plantops.environments import localenv

    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == localenv.AUTH_MANAGER
    assert _env_example()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == localenv.users_setting()
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].startswith("${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:?")
    # SimpleAuthManager opens the file read-write: the read-only secret is copied there at start.
    command = _command(services["api-server"])
    assert "/run/secrets/airflow_passwords" in command
    assert "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in command
    assert not env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/run/secrets/")
    assert "airflow_passwords" in services["api-server"].get("secrets", [])
    assert command.rstrip().endswith("exec airflow api-server")


def test_published_ports_are_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_environment_values_are_strings(compose):
    # An unquoted False or 5000 would reach the container as YAML's idea of it, not the text.
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            assert isinstance(value, str), f"{name}: {key} is {type(value).__name__}, quote it"


def _env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#"))


def test_env_example_lists_every_variable_and_no_secret():
    compose = yaml.safe_load(COMPOSE.read_text())
    example = _env_example()
    referenced = {var for var, _ in _refs(compose)}
    assert referenced, "the compose file interpolates nothing from .env"
    assert referenced - set(example) == set(), "missing from .env.example"
    assert set(example) - referenced == set(), "in .env.example but unused by docker-compose.yaml"
    for var, value in example.items():
        if SECRETISH.search(var) and not var.endswith("_FILE"):
            assert value == "", f".env.example ships a value for {var}"


def test_env_example_users_include_every_approver():
    users = {entry.split(":")[0] for entry in _env_example()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")}
    for path in sorted((REPO / "include" / "use_cases").glob("*.yaml")):
        approvers = {a["id"] for a in yaml.safe_load(path.read_text()).get("approvers", [])}
        assert approvers <= users, f"{path.name}: approvers {approvers - users} have no Airflow user"


def test_the_running_stack_leaves_the_demo_ports_free():
    """.ci/run keeps the native stack up through `make test`, and a developer keeps `make demo` or
    `make up` running beside it: a stack port equal to a demo default (api-server, Spark Connect,
    mail sink) would break one or the other, as a Spark worker's web UI on 28181 once did."""
    from conftest import DEMO_PORTS
    from plantops.environments import sparkconnect, stack

    stack_ports = stack.ports()
    assert len(set(stack_ports.values())) == len(stack_ports), stack_ports
    assert DEMO_PORTS["spark connect"] == sparkconnect.DEFAULT_PORT
    clashes = {name: port for name, port in DEMO_PORTS.items() if port in stack_ports.values()}
    assert not clashes, f"{clashes} collide with the stack's {stack_ports}"
