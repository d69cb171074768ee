"""A warm Spark: one Spark Connect server from the installed PySpark wheel, started once per tier.

Every ``spark-submit`` pays the JVM start, the session and the first query planning again (~77 s for
one plant day in `make demo`); a Spark Connect server pays them once and the feature job connects
to it as a thin gRPC client (``build_features.py --remote sc://127.0.0.1:PORT``).

The server is ``bin/spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer``
run as a child process of its own process group, with ``<folder>/server.pid`` (JSON: pid, port,
master) and ``<folder>/server.log``. Not ``sbin/start-connect-server.sh``: it daemonises through
``spark-daemon.sh`` (its own pid file under /tmp, rotated logs, a nohup'd JVM whose process group
is the caller's), so neither a clean stop of the whole group nor a log tail on a failed start
would be ours to give.

    python -m plantops.environments.sparkconnect start [--port 28715] [--master 'local[2]'] [--folder F]
    python -m plantops.environments.sparkconnect status|stop [--folder F]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from plantops.net import port_open, url_answers

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 28715
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
# What every session of the server starts with (a client may still set its own session confs).
DEFAULT_CONF = {
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    # A client killed mid-query leaves its execution detached on the server; it is interrupted
    # after this long instead of the default 5 min (nothing re-attaches over loopback after 30 s).
    "spark.connect.execute.manager.detachedTimeout": "30s",
    "spark.connect.execute.manager.maintenanceInterval": "5s",
}


def configured_port() -> int | None:
    """The tier's server port from ``PLANTOPS_SPARK_CONNECT_PORT`` (default 28715); None when it is
    ``off`` (or 0): then the features run through spark-submit as before."""
    raw = os.environ.get("PLANTOPS_SPARK_CONNECT_PORT", str(DEFAULT_PORT)).strip().lower()
    if raw in ("", "0", "off", "false", "no"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"PLANTOPS_SPARK_CONNECT_PORT must be a port number or 'off', got {raw!r}") from None


def default_folder(home: Path | None = None) -> Path:
    """``$PLANTOPS_HOME/spark-connect``: the server of one embedded home."""
    from plantops.settings import get_settings

    return Path(home or get_settings().home) / "spark-connect"


def url(port: int, host: str = HOST) -> str:
    return f"sc://{host}:{port}"


def spark_home() -> Path:
    """The installed pyspark package: the wheel's bin/, jars/ (with the spark-connect jar) and sbin/."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.origin:
        raise RuntimeError("pyspark is not installed in this environment; the Spark Connect server comes from its wheel")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    master: str
    folder: Path
    reused: bool = False  # True when start() found it already running and healthy

    @property
    def url(self) -> str:
        return url(self.port)

    @property
    def log_file(self) -> Path:
        return self.folder / LOG_FILE


def _alive(pid: int) -> bool:
    """True when pid is a live Spark Connect server JVM (not a pid reused by something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not a server.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return SERVER_CLASS.encode() in cmdline and state != "Z"


def status(folder: Path | None = None) -> Server | None:
    """The server recorded in ``folder`` when its process is alive, else None (a stale pid file is removed)."""
    folder = Path(folder or default_folder())
    pid_file = folder / PID_FILE
    try:
        state = json.loads(pid_file.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("unreadable %s; treating the server as stopped", pid_file)
        pid_file.unlink(missing_ok=True)
        return None
    if not _alive(int(state["pid"])):
        pid_file.unlink(missing_ok=True)
        return None
    return Server(int(state["pid"]), int(state["port"]), str(state["master"]), folder)


def healthy(remote: str, timeout: float = 60.0) -> bool:
    """True when a real client session on ``remote`` (sc://host:port) runs ``spark.range(1).count()``.

    The port is probed first: the Connect client itself retries a refused connection with backoff
    for minutes, which is no health check.
    """
    if not url_answers(remote, 15002):
        return False
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    result: dict[str, object] = {}

    def probe() -> None:
        try:
            session = RemoteSession.builder.remote(remote).create()
            try:
                result["count"] = session.range(1).count()
            finally:
                pending = list(getattr(session.client, "_release_futures", ()))
                if pending:  # else they race the session release and log SESSION_CLOSED
                    import concurrent.futures

                    concurrent.futures.wait(pending, timeout=10)
                session.stop()
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            result["error"] = exc

    import threading

    thread = threading.Thread(target=probe, daemon=True, name="spark-connect-health")
    thread.start()
    thread.join(timeout)
    if "error" in result:
        log.debug("Spark Connect health probe of %s failed: %s", remote, result["error"])
    return result.get("count") == 1


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log file)"


def start(port: int = DEFAULT_PORT, master: str = "local[2]", folder: Path | None = None,
          conf: dict[str, str] | None = None, timeout: float = 180.0) -> Server:
    """Start the server on 127.0.0.1:``port`` and wait until a client query answers.

    Idempotent: a healthy server already recorded in ``folder`` on the same port is reused
    (``Server.reused``). Raises RuntimeError with the log tail when it does not come up in time.
    """
    folder = Path(folder or default_folder())
    folder.mkdir(parents=True, exist_ok=True)
    running = status(folder)
    if running is not None:
        if running.port != port:
            raise RuntimeError(f"a Spark Connect server of {folder} already runs on port {running.port} "
                               f"(pid {running.pid}), not {port}; stop it first "
                               f"(python -m plantops.environments.sparkconnect stop --folder {folder})")
        if _wait_healthy(running, timeout):
            log.info("reusing the Spark Connect server at %s (pid %d)", running.url, running.pid)
            return Server(running.pid, running.port, running.master, folder, reused=True)
        log.warning("the Spark Connect server of %s (pid %d) does not answer; restarting it", folder, running.pid)
        stop(folder)
    if port_open(port):
        raise RuntimeError(f"port {port} is already in use by something that is not the Spark Connect server of "
                           f"{folder}; stop it or set PLANTOPS_SPARK_CONNECT_PORT")
    home = spark_home()
    settings = {**DEFAULT_CONF, **(conf or {}), "spark.connect.grpc.binding.port": str(port),
                "spark.connect.grpc.binding.address": HOST}
    command = [str(home / "bin" / "spark-submit"), "--class", SERVER_CLASS, "--name", "plantops-spark-connect",
               "--master", master]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    # Never a client of itself: a SPARK_REMOTE in the caller's environment would be inherited.
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    log_file = folder / LOG_FILE
    with open(log_file, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
        out.flush()
        # Its own session and process group: stop() ends the JVM and whatever it forked, and a
        # Ctrl-C of `make up` reaches it only through stop().
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=folder, start_new_session=True)
    server = Server(proc.pid, port, master, folder)
    (folder / PID_FILE).write_text(json.dumps({"pid": proc.pid, "port": port, "master": master}))
    began = time.monotonic()
    if not _wait_healthy(server, timeout, proc):
        code = proc.poll()
        stop(folder)
        state = f"exited with code {code}" if code is not None else f"did not answer within {timeout:.0f} s"
        raise RuntimeError(f"the Spark Connect server on {server.url} {state}; last lines of {log_file}:\n"
                           f"{_tail(log_file)}")
    log.info("Spark Connect server up at %s (pid %d, master %s) in %.1f s", server.url, proc.pid, master,
             time.monotonic() - began)
    return server


def _wait_healthy(server: Server, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if proc is None and not _alive(server.pid):
            return False
        if port_open(server.port) and healthy(server.url, timeout=max(1.0, deadline - time.monotonic())):
            return True
        time.sleep(0.5)
    return False


def stop(folder: Path | None = None, grace: float = 20.0) -> bool:
    """Stop the server recorded in ``folder``: SIGTERM to its process group, SIGKILL after ``grace``
    seconds; the pid file is removed. Returns False when none was running."""
    folder = Path(folder or default_folder())
    server = status(folder)
    if server is None:
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not _gone(server.pid):
            time.sleep(0.2)
        if _gone(server.pid):
            break
        log.warning("the Spark Connect server (pid %d) ignored SIGTERM for %.0f s; killing it", server.pid, grace)
    _reap(server.pid)
    deadline = time.monotonic() + 10
    while port_open(server.port) and time.monotonic() < deadline:  # the kernel closing its sockets
        time.sleep(0.1)
    (folder / PID_FILE).unlink(missing_ok=True)
    log.info("Spark Connect server on port %d (pid %d) stopped", server.port, server.pid)
    return True


def _gone(pid: int) -> bool:
    """True once the process has exited (reaped, or a zombie). Not :func:`_alive`: an exiting JVM's
    cmdline reads empty while it still holds its port."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    # A JVM's main thread can be a zombie while its other threads still shut down (and hold the
    # port): gone only when no thread is left but the dead leader.
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X") and threads in ([], [str(pid)])


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child (else it lingers as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantops.environments.sparkconnect", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=None, help="default: PLANTOPS_SPARK_CONNECT_PORT or 28715")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--folder", type=Path, default=None, help="pid and log folder (default $PLANTOPS_HOME/spark-connect)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark conf")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = args.folder or default_folder()
    if args.action == "start":
        conf = dict(item.split("=", 1) for item in args.conf)
        server = start(args.port or configured_port() or DEFAULT_PORT, args.master, folder, conf)
        print(json.dumps({"url": server.url, "pid": server.pid, "reused": server.reused, "log": str(server.log_file)}))
        return 0
    if args.action == "stop":
        print("stopped" if stop(folder) else f"no Spark Connect server recorded in {folder}")
        return 0
    server = status(folder)
    if server is None:
        print(f"no Spark Connect server running for {folder}")
        return 3
    ok = healthy(server.url, timeout=30)
    print(json.dumps({"url": server.url, "pid": server.pid, "master": server.master, "healthy": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
