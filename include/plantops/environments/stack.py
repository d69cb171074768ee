"""The native stack on one machine without Docker: PostgreSQL, Trino, MLflow, Redis and a Spark cluster.

    python -m plantops.environments.stack up [--fresh]   # provision and start (idempotent), wait until healthy
    python -m plantops.environments.stack env            # `eval "$(python -m plantops.environments.stack env)"`: point plantops at it
    python -m plantops.environments.stack status         # what answers
    python -m plantops.environments.stack down           # stop everything, keep the data

Everything listens on 127.0.0.1. State lives in ``PLANTOPS_STACK_DIR`` (default
``/var/tmp/plantops-stack``), which the machine keeps between runs, so the Trino server is
fetched and unpacked once. ``--fresh`` drops and recreates the plantops databases.

- PostgreSQL (Debian packages; installed with apt-get when missing and running as root): one
  cluster, databases ``airflow`` (Airflow's metadata), ``historian`` (the plant historian),
  ``plantops`` (ledger, decisions, feedback) and ``mlflow`` (the tracking server's store).
- Trino 476 (``io.trino:trino-server`` from Maven Central with ``mvn dependency:get``; only the
  ``postgresql`` and ``hive`` plugins are unpacked): catalog ``historian`` on PostgreSQL and
  catalog ``lake`` (Hive connector, file metastore) over the parquet under ``PLANTOPS_HOME``.
  Trino needs Java 25, which these machines have beside the default Java 17.
- ``mlflow server`` with the PostgreSQL backend and a local artifact root it serves itself.
- Debian's ``redis-server`` (apt-get when missing and root), no persistence: the Celery broker of
  Airflow's CeleryExecutor (:class:`AirflowServices` runs two ``airflow celery worker`` processes).
- A Spark standalone cluster from the PySpark wheel (``bin/spark-class``; the wheel has no
  ``sbin/start-master.sh``): a master and two workers (1 core each) as separate JVMs. The stack's
  ``plantops_spark`` connection points spark-submit at the master (client deploy mode).
- Debian's ``chromium`` (apt-get when missing and root), which the browser tests drive with Playwright.

Ports: PostgreSQL 28432, Trino 28090, MLflow 28500, Redis 28379, Spark master 28077 (web UI and
its JSON 28078), Spark workers 28171/28172 (web UIs 28173/28174), Celery workers' log servers
28793/28794.

Credentials are generated once into ``$PLANTOPS_STACK_DIR/secrets.env`` (mode 600) and handed to
the services through the environment, never written into a config file or the repository.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from plantops.net import port_open
from plantops.settings import REPO_ROOT

STACK_DIR = Path(os.environ.get("PLANTOPS_STACK_DIR", "/var/tmp/plantops-stack"))
PG_PORT = int(os.environ.get("PLANTOPS_PG_PORT", "28432"))
TRINO_PORT = int(os.environ.get("PLANTOPS_TRINO_PORT", "28090"))
MLFLOW_PORT = int(os.environ.get("PLANTOPS_MLFLOW_PORT", "28500"))
REDIS_PORT = int(os.environ.get("PLANTOPS_REDIS_PORT", "28379"))
SPARK_MASTER_PORT = int(os.environ.get("PLANTOPS_SPARK_MASTER_PORT", "28077"))
SPARK_MASTER_UI_PORT = int(os.environ.get("PLANTOPS_SPARK_MASTER_UI_PORT", "28078"))
SPARK_WORKERS = 2
# Each worker offers 1 core (the machine has 2) and 4 GiB of the 24 GiB: an executor takes
# spark-submit's default 1 GiB, so a second application still fits beside the first.
SPARK_WORKER_MEMORY = os.environ.get("PLANTOPS_SPARK_WORKER_MEMORY", "4g")
CELERY_WORKERS = 2
CELERY_LOG_PORT = 28793  # worker n serves its task logs on CELERY_LOG_PORT + n - 1
TRINO_VERSION = "476"
PLUGINS = ("postgresql", "hive", "geospatial")
DATABASES = ("airflow", "historian", "plantops", "mlflow")  # and one per further site historian
DB_USER = "plantops"
HOST = "127.0.0.1"


class StackError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise StackError(f"{shlex.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


# -- secrets and the client environment ----------------------------------------------------------

def password() -> str:
    path = STACK_DIR / "secrets.env"
    if not path.exists():
        STACK_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(f"PLANTOPS_DB_PASSWORD={secrets.token_urlsafe(18)}\n")
        path.chmod(0o600)
    return path.read_text().split("=", 1)[1].strip()


def site_historians() -> dict[str, str]:
    """conn_id -> Trino catalog of each site historian beyond the default one (``include/sites``):
    each gets its own PostgreSQL database and a Trino catalog of the same name (docs/sites.md). A
    broken site file is skipped here; the DAG factory reports it."""
    from plantops.config import Site, load_sites
    from plantops.settings import DEFAULT_HISTORIAN

    found: dict[str, str] = {}
    for site in load_sites().values():
        if isinstance(site, Site) and site.historian.conn_id != DEFAULT_HISTORIAN:
            found.setdefault(site.historian.conn_id, site.historian.catalog)
    return found


def databases() -> tuple[str, ...]:
    return (*DATABASES, *sorted(set(site_historians().values()) - set(DATABASES)))


def _pg_url(database: str) -> str:
    return f"postgresql+psycopg2://{DB_USER}:{password()}@{HOST}:{PG_PORT}/{database}"


def _trino_url(catalog: str) -> str:
    """A historian's read side: its Trino catalog (Trino without TLS takes the user name only)."""
    return f"trino://{DB_USER}@{HOST}:{TRINO_PORT}/{catalog}/public"


def lake_root() -> Path:
    """Trino's `lake` catalog sees this folder; PLANTOPS_HOME on the stack tier lives inside it."""
    return STACK_DIR / "home"


def client_env() -> dict[str, str]:
    """What plantops, Airflow and the MLflow client need to use this stack (configuration only)."""
    return {
        "PLANTOPS_HOME": str(lake_root() / "plantops"),
        "PLANTOPS_LAKE_ROOT": str(lake_root()),
        "PLANTOPS_DB_USER": DB_USER,
        "PLANTOPS_DB_PASSWORD": password(),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _pg_url("airflow"),
        "PLANTOPS_HISTORIAN_URL": _pg_url("historian"),
        "PLANTOPS_HISTORIAN_READ_URL": _trino_url("historian"),
        # Each further site's historian: its own database, read through its own Trino catalog.
        "PLANTOPS_HISTORIANS": json.dumps({
            conn: {"url": _pg_url(catalog), "read_url": _trino_url(catalog)}
            for conn, catalog in sorted(site_historians().items())}),
        "PLANTOPS_STATE_URL": _pg_url("plantops"),
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{MLFLOW_PORT}",
    }


# -- PostgreSQL -----------------------------------------------------------------------------------

def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        if os.geteuid() != 0:
            raise StackError("PostgreSQL is not installed: apt-get install postgresql (as root)")
        log("installing PostgreSQL from the Debian packages")
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", "postgresql"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1]


CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> Path | None:
    """Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser):
    installed with apt-get when missing and running as root, else None with a log line saying how."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        log(f"{CHROMIUM} is missing and this is not root: the browser tests need `apt-get install chromium`")
        return None
    log("installing chromium from the Debian packages (for the browser tests)")
    _run(["apt-get", "update", "-qq"])
    _run(["apt-get", "install", "-y", "-qq", "chromium"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return CHROMIUM if CHROMIUM.exists() else None


def _as_pg_owner(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: use the postgres system account the package creates.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _pg_dir() -> Path:
    return STACK_DIR / "postgres"


def pg_running() -> bool:
    result = subprocess.run([_pg_bin("pg_isready"), "-h", HOST, "-p", str(PG_PORT), "-q"], capture_output=True)
    return result.returncode == 0


def start_postgres() -> None:
    data, socket_dir = _pg_dir() / "data", _pg_dir() / "run"
    if pg_running():
        log(f"PostgreSQL already answers on {HOST}:{PG_PORT}")
    else:
        for folder in (_pg_dir(), socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(folder, "postgres", "postgres")
        STACK_DIR.chmod(0o755)
        if not (data / "PG_VERSION").exists():
            log("initdb")
            pwfile = _pg_dir() / "pwfile"
            pwfile.write_text(password() + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            pwfile.chmod(0o600)
            _run(_as_pg_owner([_pg_bin("initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}",
                               "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8"]))
            pwfile.unlink()
        log(f"starting PostgreSQL on {HOST}:{PG_PORT}")
        options = f"-p {PG_PORT} -k {socket_dir} -c listen_addresses={HOST} -c max_connections=200"
        _run(_as_pg_owner([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(_pg_dir() / "postgres.log"),
                           "-o", options, "-w", "-t", "60", "start"]))
    _create_databases()


def _pg_connect(database: str = "postgres"):
    import psycopg2

    return psycopg2.connect(host=HOST, port=PG_PORT, user=DB_USER, password=password(), dbname=database,
                            connect_timeout=5)


def _create_databases(fresh: bool = False) -> None:
    conn = _pg_connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in databases():
            if fresh:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def stop_postgres() -> None:
    data = _pg_dir() / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(_as_pg_owner([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)


# -- Trino ----------------------------------------------------------------------------------------

def java25_home() -> str:
    for candidate in [os.environ.get("PLANTOPS_TRINO_JAVA_HOME", ""), *sorted(glob.glob("/usr/lib/jvm/*25*"))]:
        if candidate and Path(candidate, "bin", "java").exists():
            return candidate
    raise StackError("Trino needs Java 25: none found in /usr/lib/jvm (set PLANTOPS_TRINO_JAVA_HOME)")


def trino_home() -> Path:
    """The unpacked server (lib, bin, the two plugins we use), fetched and unpacked once."""
    home = STACK_DIR / f"trino-server-{TRINO_VERSION}"
    if (home / ".complete").exists() and (home / ".complete").read_text() == ",".join(PLUGINS):
        return home
    artifact = f"io.trino:trino-server:{TRINO_VERSION}:tar.gz"
    tarball = Path.home() / ".m2" / "repository" / "io" / "trino" / "trino-server" / TRINO_VERSION / \
        f"trino-server-{TRINO_VERSION}.tar.gz"
    if not tarball.exists():
        # The per-plugin zips of trino-postgresql are not on every mirror; the server tarball carries them all.
        log(f"fetching {artifact} with mvn (about 800 MB, once)")
        _run(["mvn", "-q", "-B", "dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false"])
    log(f"unpacking {tarball.name} (lib, bin and the plugins {', '.join(PLUGINS)})")
    staging = STACK_DIR / f".trino-unpack-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"trino-server-{TRINO_VERSION}/"
    # geospatial provides the Geometry type the Hive connector's functions refer to.
    wanted = tuple(prefix + p for p in ("lib/", "bin/", *(f"plugin/{name}/" for name in PLUGINS), "NOTICE"))
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
        tar.extractall(staging, members=members, filter="tar")
    shutil.rmtree(home, ignore_errors=True)
    (staging / prefix.rstrip("/")).rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    (home / ".complete").write_text(",".join(PLUGINS))
    return home


def _trino_etc() -> Path:
    etc = STACK_DIR / "trino-etc"
    (etc / "catalog").mkdir(parents=True, exist_ok=True)
    data = STACK_DIR / "trino-data"
    data.mkdir(exist_ok=True)
    (etc / "node.properties").write_text(
        f"node.environment=plantops\nnode.id=plantops-1\nnode.data-dir={data}\nnode.internal-address={HOST}\n")
    (etc / "config.properties").write_text("\n".join([
        "coordinator=true",
        "node-scheduler.include-coordinator=true",
        f"http-server.http.port={TRINO_PORT}",
        f"discovery.uri=http://{HOST}:{TRINO_PORT}",
        "query.max-memory=1GB",
        "query.max-memory-per-node=1GB",
        "",
    ]))
    (etc / "jvm.config").write_text("\n".join([
        "-server", "-Xmx2G", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-XX:-OmitStackTraceInFastThrow",
        "-XX:ReservedCodeCacheSize=256M", "-XX:PerMethodRecompilationCutoff=10000",
        "-XX:PerBytecodeRecompilationCutoff=10000", "-Djdk.attach.allowAttachSelf=true",
        "-Djdk.nio.maxCachedBufferSize=2000000", "-Dfile.encoding=UTF-8", "-XX:+EnableDynamicAgentLoading", "",
    ]))
    (etc / "log.properties").write_text("io.trino=WARN\n")
    shipped = REPO_ROOT / "stack" / "trino" / "catalog"
    for catalog in shipped.glob("*.properties"):
        shutil.copyfile(catalog, etc / "catalog" / catalog.name)
    # A site historian without a shipped catalog file (a site added to include/sites) gets the
    # historian catalog's file over its own database.
    template = (shipped / "historian.properties").read_text()
    for catalog in sorted(set(site_historians().values()) - {p.stem for p in shipped.glob("*.properties")}):
        (etc / "catalog" / f"{catalog}.properties").write_text(template.replace(
            "# The plant historian (PostgreSQL) as Trino catalog `historian`",
            f"# Generated by plantops.environments.stack: a site historian (PostgreSQL) as Trino catalog `{catalog}`"
        ).replace("PLANTOPS_TRINO_HISTORIAN_JDBC", _jdbc_var(catalog)))
    return etc


def _jdbc_var(catalog: str) -> str:
    """The variable a historian catalog file reads its JDBC URL from (``${ENV:...}``)."""
    return f"PLANTOPS_TRINO_{catalog.upper()}_JDBC"


def trino_info() -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{TRINO_PORT}/v1/info", timeout=3) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def start_trino(lake: Path) -> None:
    info = trino_info()
    if info and not info.get("starting"):
        log(f"Trino already answers on {HOST}:{TRINO_PORT}")
        served = {p.stem for p in (STACK_DIR / "trino-etc" / "catalog").glob("*.properties")}
        missing = sorted(set(site_historians().values()) - served)
        if missing:
            log(f"WARNING: Trino was started before the site historian catalogs {missing} existed: "
                "restart it (make stack-down, make stack-up) to read them")
        return
    if info is None:
        home, etc = trino_home(), _trino_etc()
        java = java25_home()
        env = {
            **os.environ,
            "JAVA_HOME": java,
            "PATH": f"{java}/bin:{os.environ['PATH']}",
            **{_jdbc_var(c): f"jdbc:postgresql://{HOST}:{PG_PORT}/{c}" for c in {"historian", *site_historians().values()}},
            "PLANTOPS_DB_USER": DB_USER,
            "PLANTOPS_DB_PASSWORD": password(),
            "PLANTOPS_TRINO_LAKE": str(lake),
        }
        lake.mkdir(parents=True, exist_ok=True)
        log(f"starting Trino {TRINO_VERSION} on {HOST}:{TRINO_PORT} (Java {Path(java).name})")
        _run([str(home / "bin" / "launcher"), "start", f"--etc-dir={etc}", f"--data-dir={STACK_DIR / 'trino-data'}",
              f"--pid-file={STACK_DIR / 'trino.pid'}", f"--server-log-file={STACK_DIR / 'trino-server.log'}",
              f"--launcher-log-file={STACK_DIR / 'trino-launcher.log'}"], env=env)
    _wait("Trino", lambda: (trino_info() or {"starting": True}).get("starting") is False, 180,
          STACK_DIR / "trino-server.log", alive=lambda: _pid_alive(STACK_DIR / "trino.pid"))


def _pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def stop_trino() -> None:
    home = STACK_DIR / f"trino-server-{TRINO_VERSION}"
    if (STACK_DIR / "trino.pid").exists() and home.exists():
        subprocess.run([str(home / "bin" / "launcher"), "stop", f"--pid-file={STACK_DIR / 'trino.pid'}",
                        f"--etc-dir={STACK_DIR / 'trino-etc'}", f"--data-dir={STACK_DIR / 'trino-data'}"],
                       capture_output=True, env={**os.environ, "JAVA_HOME": java25_home()})


# -- MLflow ---------------------------------------------------------------------------------------

def mlflow_healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{MLFLOW_PORT}/health", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def start_mlflow() -> None:
    if mlflow_healthy():
        log(f"MLflow already answers on {HOST}:{MLFLOW_PORT}")
        return
    artifacts = STACK_DIR / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log(f"starting the MLflow server on {HOST}:{MLFLOW_PORT}")
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": _pg_url("mlflow"), "MLFLOW_ENABLE_TELEMETRY": "false",
           "DO_NOT_TRACK": "true"}
    with (STACK_DIR / "mlflow.log").open("a") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST, "--port", str(MLFLOW_PORT),
             "--artifacts-destination", str(artifacts), "--serve-artifacts", "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (STACK_DIR / "mlflow.pid").write_text(str(proc.pid))
    _wait("MLflow", mlflow_healthy, 120, STACK_DIR / "mlflow.log", proc)


def stop_mlflow() -> None:
    pid_file = STACK_DIR / "mlflow.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), 15)
        except (ProcessLookupError, ValueError):
            pass
        pid_file.unlink()


# -- daemons this module starts itself (Redis, the Spark JVMs) -----------------------------------------

def _daemon_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs (a zombie is dead: a caller that started
    and killed it in the same process may not have reaped it yet)."""
    import psutil

    try:
        proc = psutil.Process(int(pid_file.read_text().strip()))
        return proc.pid if proc.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, psutil.Error):
        return None


def _spawn(name: str, cmd: list[str], env: dict[str, str], log_file: Path, pid_file: Path,
           stdin: str | None = None) -> subprocess.Popen:
    """Start a long-running server in its own session (so `stack down`, not Ctrl-C, stops it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    if stdin is not None:
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    pid_file.write_text(str(proc.pid))
    return proc


def _kill(pid_file: Path, sig: int = 15, timeout: float = 30) -> None:
    """Signal the process group started by _spawn and wait until it is gone (reaping it if it is ours)."""
    pid = _daemon_pid(pid_file)
    if pid is not None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _daemon_pid(pid_file) is not None:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if time.monotonic() > deadline:
                os.killpg(pid, 9)
                deadline += timeout
            time.sleep(0.2)
    pid_file.unlink(missing_ok=True)


def _apt_install(package: str, binary: Path) -> Path:
    """Debian's package when `binary` is missing: root only; apt-get update only if needed."""
    if binary.exists():
        return binary
    if os.geteuid() != 0:
        raise StackError(f"{binary} is missing and this is not root: apt-get install {package}")
    log(f"installing {package} from the Debian packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        _run(["apt-get", "install", "-y", "-qq", package], env=env)
    except StackError:  # stale package lists
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", package], env=env)
    return binary


# -- Redis (the Celery broker) --------------------------------------------------------------------

REDIS_SERVER = Path("/usr/bin/redis-server")


def _redis_dir() -> Path:
    return STACK_DIR / "redis"


def broker_url() -> str:
    return f"redis://:{password()}@{HOST}:{REDIS_PORT}/0"


def redis_ping() -> bool:
    import socket

    try:
        with socket.create_connection((HOST, REDIS_PORT), timeout=3) as conn:
            conn.sendall(f"AUTH {password()}\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = conn.recv(256)
                if not chunk:
                    break
                reply += chunk
        return reply.endswith(b"+PONG\r\n")
    except OSError:
        return False


def start_redis() -> None:
    if redis_ping():
        log(f"Redis already answers on {HOST}:{REDIS_PORT}")
        return
    server = _apt_install("redis-server", REDIS_SERVER)
    folder = _redis_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _kill(folder / "redis.pid")  # a hung one that no longer answers
    # The configuration (with the password) goes in on stdin: never on a command line or in a file.
    config = "\n".join([
        f"bind {HOST}", f"port {REDIS_PORT}", f"dir {folder}", "daemonize no",
        # A broker of a test stack: queued messages need not survive a restart (Airflow's
        # scheduler re-queues what it finds queued without a worker), so no snapshots, no AOF.
        'save ""', "appendonly no", f"requirepass {password()}", "",
    ])
    log(f"starting Redis on {HOST}:{REDIS_PORT}")
    proc = _spawn("redis", [str(server), "-"], dict(os.environ), folder / "redis.log", folder / "redis.pid",
                  stdin=config)
    _wait("Redis", redis_ping, 60, folder / "redis.log", proc)


def stop_redis() -> None:
    _kill(_redis_dir() / "redis.pid")


# -- the Spark standalone cluster -------------------------------------------------------------------

def spark_home() -> Path:
    """The installed pyspark package folder: the wheel carries bin/spark-class and the jars."""
    from plantops.environments import sparkconnect

    try:
        return sparkconnect.spark_home()
    except RuntimeError as exc:
        raise StackError(f"{exc} (make install)") from exc


def spark_master_url() -> str:
    return f"spark://{HOST}:{SPARK_MASTER_PORT}"


def _spark_dir() -> Path:
    return STACK_DIR / "spark"


def _spark_env(name: str) -> dict[str, str]:
    home = spark_home()
    return {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": HOST,
            "SPARK_LOG_DIR": str(_spark_dir() / "logs"), "SPARK_LOCAL_DIRS": str(_spark_dir() / name / "tmp"),
            "SPARK_DAEMON_MEMORY": "512m", "PYSPARK_PYTHON": sys.executable,
            # A worker that stops heartbeating is DEAD after 15 s, not 60 (a restarted worker on
            # the same address is refused while the master still holds the old one ALIVE).
            "SPARK_MASTER_OPTS": "-Dspark.worker.timeout=15"}


def _json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def spark_master_state() -> dict | None:
    """The master's JSON: workers (with state ALIVE / DEAD), active and completed applications."""
    return _json(f"http://{HOST}:{SPARK_MASTER_UI_PORT}/json/")


def spark_worker_state(n: int) -> dict | None:
    """Worker n's own JSON: its running and finished executors (each names its application)."""
    return _json(f"http://{HOST}:{spark_worker_ports(n)[1]}/json/")


def spark_worker_ports(n: int) -> tuple[int, int]:
    """(RPC port, web UI port) of worker n (1-based): fixed, so the test and a person find them."""
    return SPARK_MASTER_PORT + 93 + n, SPARK_MASTER_PORT + 95 + n


def ports() -> dict[str, int]:
    """Every fixed port the stack listens on while it runs (``.ci/run`` keeps it up for the whole
    test run, so the tests' and the demo's own servers must avoid all of them)."""
    fixed = {"postgresql": PG_PORT, "trino": TRINO_PORT, "mlflow": MLFLOW_PORT, "redis": REDIS_PORT,
             "spark-master": SPARK_MASTER_PORT, "spark-master-ui": SPARK_MASTER_UI_PORT}
    for n in range(1, SPARK_WORKERS + 1):
        fixed[f"spark-worker-{n}"], fixed[f"spark-worker-{n}-ui"] = spark_worker_ports(n)
    for n in range(1, CELERY_WORKERS + 1):
        fixed[f"celery-{n}-logs"] = CELERY_LOG_PORT + n - 1
    return fixed


def spark_alive_workers() -> set[str]:
    """host:port of the workers the master holds ALIVE."""
    state = spark_master_state() or {}
    return {f"{w['host']}:{w['port']}" for w in state.get("workers", []) if w.get("state") == "ALIVE"}


def _spark_worker_alive(n: int) -> bool:
    return f"{HOST}:{spark_worker_ports(n)[0]}" in spark_alive_workers()


def start_spark_master() -> None:
    pid_file = _spark_dir() / "master.pid"
    if spark_master_state() is not None and _daemon_pid(pid_file) is not None:
        return
    _kill(pid_file)
    (_spark_dir() / "master").mkdir(parents=True, exist_ok=True)
    log(f"starting the Spark master on {spark_master_url()} (web UI {HOST}:{SPARK_MASTER_UI_PORT})")
    proc = _spawn("spark-master", [
        str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
        "--host", HOST, "--port", str(SPARK_MASTER_PORT), "--webui-port", str(SPARK_MASTER_UI_PORT),
    ], _spark_env("master"), _spark_dir() / "master.log", pid_file)
    _wait("Spark master", lambda: spark_master_state() is not None, 120, _spark_dir() / "master.log", proc)


def start_spark_worker(n: int, wait: bool = True) -> None:
    """Start Spark worker n (1-based) unless it runs; with `wait`, until the master holds it ALIVE."""
    pid_file = _spark_dir() / f"worker-{n}.pid"
    if _daemon_pid(pid_file) is not None:
        return
    rpc, ui = spark_worker_ports(n)
    work = _spark_dir() / f"worker-{n}" / "work"
    work.mkdir(parents=True, exist_ok=True)
    log(f"starting Spark worker {n} on {HOST}:{rpc} (1 core, {SPARK_WORKER_MEMORY}, web UI {ui})")
    log_file = _spark_dir() / f"worker-{n}.log"
    proc = _spawn(f"spark-worker-{n}", [
        str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
        "--host", HOST, "--port", str(rpc), "--webui-port", str(ui), "--cores", "1",
        "--memory", SPARK_WORKER_MEMORY, "--work-dir", str(work), spark_master_url(),
    ], _spark_env(f"worker-{n}"), log_file, pid_file)
    if wait:
        _wait(f"Spark worker {n}", lambda: _spark_worker_alive(n), 120, log_file, proc)


def kill_spark_worker(n: int, sig: int = 9) -> None:
    """Kill worker n's process group, its JVM and the executors it launched (SIGKILL by default:
    a lost machine). The master marks it DEAD; the driver reschedules the lost tasks on the
    executors left."""
    pid_file = _spark_dir() / f"worker-{n}.pid"
    if _daemon_pid(pid_file) is None:
        raise StackError(f"Spark worker {n} is not running (no live pid in {pid_file})")
    _kill(pid_file, sig)
    deadline = time.monotonic() + 60
    while _spark_worker_alive(n):  # the master sees the connection drop at once, else after the timeout
        if time.monotonic() > deadline:
            raise StackError(f"the Spark master still holds worker {n} ALIVE 60 s after it was killed")
        time.sleep(0.5)


def start_spark() -> None:
    start_spark_master()
    for n in range(1, SPARK_WORKERS + 1):
        start_spark_worker(n, wait=False)
    _wait(f"Spark cluster ({SPARK_WORKERS} workers ALIVE)", lambda: len(spark_alive_workers()) == SPARK_WORKERS,
          120, _spark_dir() / "worker-1.log")


def stop_spark() -> None:
    for n in range(1, SPARK_WORKERS + 1):
        _kill(_spark_dir() / f"worker-{n}.pid")
    _kill(_spark_dir() / "master.pid")


# -- Airflow on the stack ---------------------------------------------------------------------------

def airflow_env(home: Path | None = None, api_port: int | None = None) -> dict[str, str]:
    """The embedded tier's Airflow settings with the stack's databases, Trino, MLflow server, the
    CeleryExecutor on the stack's Redis and spark-submit to the stack's Spark master."""
    from plantops.environments import localenv

    env = client_env()
    home = Path(home or env["PLANTOPS_HOME"])
    base = localenv.airflow_env(home, api_port or localenv.API_PORT)
    return {
        **base, **env, "PLANTOPS_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url(),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + _pg_url("airflow"),
        # Airflow's Celery config plus the workers' preload of the task libraries before they fork.
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "plantops.orchestration.celery_config.CELERY_CONFIG",
        # 2 workers x 1 slot: the machine's 2 cores (a feature build's driver and executors share them).
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # An unacknowledged message (its worker died) is redelivered after this; longer than any
        # task here, and the dead try is retried by the scheduler long before.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        # A task on a worker that died stops heartbeating: fail it (and retry it elsewhere) after
        # 30 s, not the default 5 min. Heartbeats come every 5 s ([workers] min_heartbeat_interval).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # Features run on the standalone cluster; the driver stays in the task (client mode) so
        # the task's log, exit code and kill follow the job.
        "AIRFLOW_CONN_PLANTOPS_SPARK": json.dumps({"conn_type": "spark", "host": spark_master_url(),
                                                   "extra": {"deploy-mode": "client"}}),
        # The driver binds and advertises loopback, where the executors reach it.
        "SPARK_LOCAL_IP": HOST,
        # The production auth manager: FAB with per-site roles (plantops.orchestration.access);
        # AirflowServices.start creates the roles and the sites' demo users after the migration.
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__API__SECRET_KEY": localenv._stable_secret(home / "airflow", "api_secret_key"),
    }


FAB_AUTH_MANAGER = "plantops.orchestration.fab_auth.PlantopsFabAuthManager"


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's Celery workers: the name of the worker a task
    ran on (both share this machine, so the FQDN would not tell them apart). Logs are still
    found: the workers write them into the shared AIRFLOW_HOME/logs, which the api-server reads."""
    import socket

    return os.environ.get("PLANTOPS_WORKER_HOSTNAME") or socket.getfqdn()


class AirflowServices:
    """Airflow's own services as separate processes, as on a server: api-server, scheduler,
    dag-processor, triggerer, sharing the PostgreSQL metadata database, and with the
    CeleryExecutor two Celery workers (``celery-worker-1``, ``celery-worker-2``; task instances
    show hostname ``celery-1`` / ``celery-2``)."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.orphans: list[int] = []

    @property
    def components(self) -> tuple[str, ...]:
        if self.env.get("AIRFLOW__CORE__EXECUTOR") != "CeleryExecutor":
            return self.COMPONENTS
        return self.COMPONENTS + tuple(f"celery-worker-{n}" for n in range(1, CELERY_WORKERS + 1))

    def airflow(self, *args: str) -> None:
        with (self.log_dir / "airflow-cli.log").open("a") as out:
            subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, check=True, stdout=out,
                           stderr=subprocess.STDOUT)

    def python(self, *args: str) -> None:
        with (self.log_dir / "airflow-cli.log").open("a") as out:
            subprocess.run([sys.executable, *args], env=self.env, check=True, stdout=out, stderr=subprocess.STDOUT)

    def _command(self, component: str) -> tuple[list[str], dict[str, str]]:
        if not component.startswith("celery-worker-"):
            return [component], self.env
        n = int(component.rsplit("-", 1)[1])
        name = f"celery-{n}"
        return (["celery", "worker", "--celery-hostname", f"{name}@%h", "--pid", str(self.log_dir / f"{component}.pid")],
                {**self.env, "PLANTOPS_WORKER_HOSTNAME": name,
                 "AIRFLOW__CORE__HOSTNAME_CALLABLE": "plantops.environments.stack.worker_hostname",
                 "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(CELERY_LOG_PORT + n - 1)})

    def start(self, component: str | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = int(self.env.get("AIRFLOW__API__PORT", "8080"))
        if component in (None, "api-server") and port_open(port):
            raise StackError(f"port {port} is in use (another api-server?): stop it first")
        if component is None:
            self.airflow("db", "migrate")
            if self.env.get("AIRFLOW__CORE__AUTH_MANAGER") == FAB_AUTH_MANAGER:
                # Before the dag-processor: the DAGs' access_control names the site roles.
                self.python("-m", "plantops.environments.fabusers")
        for name in [component] if component else self.components:
            args, env = self._command(name)
            out = (self.log_dir / f"{name}.log").open("a")
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, component: str, sig: int = 9) -> None:
        """Kill one component's main process only (its running task processes are left alone)."""
        import psutil

        proc = self.procs.pop(component)
        # Its children (LocalExecutor workers, the log server) outlive it, as after a real crash;
        # remember them so that stop() leaves nothing behind.
        self.orphans += [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)

    def kill_tree(self, component: str, sig: int = 9) -> list[int]:
        """Kill a component with every process under it at once, as when its machine dies: for a
        Celery worker that is its pool, the task processes it runs and their spark-submit driver
        (killing the worker's main process alone leaves the pool finishing its task)."""
        import psutil

        proc = self.procs.pop(component)
        tree = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
        return tree

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for pid in self.orphans:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        self.procs.clear()


# -- the whole stack ------------------------------------------------------------------------------

def _wait(name: str, healthy, timeout: float, log_file: Path, proc: subprocess.Popen | None = None,
          alive=None) -> None:
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if healthy():
            log(f"{name} is healthy")
            return
        if proc is not None and proc.poll() is not None:
            break
        if alive is not None and time.monotonic() - started > 10 and not alive():  # a launcher's pid file lags
            break
        time.sleep(1)
    tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
    raise StackError(f"{name} did not become healthy (waited up to {timeout:.0f} s); end of {log_file}:\n{tail}")


def status() -> dict[str, bool]:
    return {"postgres": pg_running(), "trino": bool((trino_info() or {}).get("starting") is False),
            "mlflow": mlflow_healthy(), "redis": redis_ping(), "spark": len(spark_alive_workers()) == SPARK_WORKERS}


def up(fresh: bool = False) -> dict[str, str]:
    started = time.monotonic()
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    start_postgres()
    if fresh:
        stop_mlflow()  # it holds connections to the database about to be dropped
        stop_redis()  # queued Celery messages of the dropped metadata DB's task instances go with it
        _create_databases(fresh=True)
        for folder in (STACK_DIR / "mlartifacts", lake_root()):
            shutil.rmtree(folder, ignore_errors=True)
    start_trino(lake_root())
    start_mlflow()
    start_redis()
    start_spark()
    ensure_chromium()
    log(f"stack up in {time.monotonic() - started:.0f} s: {status()}")
    return client_env()


def down() -> None:
    stop_spark()
    stop_redis()
    stop_mlflow()
    stop_trino()
    stop_postgres()
    log(f"stack down: {status()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantops.environments.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the plantops databases")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(fresh=args.fresh)
        elif args.command == "down":
            down()
        elif args.command == "status":
            state = status()
            print(json.dumps(state))
            return 0 if all(state.values()) else 1
        else:
            for key, value in client_env().items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
