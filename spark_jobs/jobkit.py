"""What the Spark jobs of ``spark_jobs/`` share: their session (local, spark-submit or a Spark Connect
server) and the atomic write of day partitions.

The write: Spark writes every day into one hidden staging folder first (``<output>/.staging-<id>/``,
skipped by every parquet reader); only after Spark's commit succeeded is each day folder swapped
into place with one atomic rename (Linux ``renameat2(RENAME_EXCHANGE)``). A job killed at any
instant therefore leaves each day complete and either old or new, never half-written, doubled or
missing; the next run (holding the output's lock) removes the dead run's staging folder, and over
Spark Connect first interrupts the dead client's orphaned write on the server. Spark's own dynamic
partition overwrite does not give this: its commit deletes each old day folder and then renames the
new one in, and a kill between the two leaves the day missing. An output on a cluster file system
(``hdfs://``, ``s3a://``) still uses it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession

from plantops.net import url_answers

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
# What a run killed before this layout (Spark's dynamic partition overwrite) may have left behind.
STALE_PREFIXES = (STAGING_PREFIX, ".spark-staging-", "_temporary")


def absolute(path: str) -> str:
    local = local_folder(path)
    return str(local.absolute()) if local is not None else path


def session(app_name: str, master: str | None, remote: str | None = None) -> tuple[SparkSession, bool]:
    """The active session (tests, notebooks) or a new one; True when this job created it.

    With ``remote`` always a new Spark Connect session of its own (never the classic active one,
    nor another job's Connect session in the same process): stopping it releases only that
    session on the server, which keeps running for the next job.
    """
    if remote:
        from pyspark.sql.connect.session import SparkSession as RemoteSession

        from pyspark.sql.connect.client.retries import DefaultPolicy

        session = RemoteSession.builder.remote(remote).create()
        # The client's default retries ride out ~10 min of a server that went away; here a dead
        # server fails the job within ~10 s and the task's own retries take over.
        session.client.set_retry_policies([DefaultPolicy(max_retries=5, max_backoff=4000)])
        return session, True
    active = SparkSession.getActiveSession()
    if active is not None:
        if master:
            log.warning("a Spark session is already active; ignoring --master %s", master)
        return active, False
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    return builder.getOrCreate(), True


def stop_session(spark: SparkSession) -> None:
    """``spark.stop()``; on Connect after the client's pending ReleaseExecute calls are done
    (pyspark 4.3 releases the session first and each of them then logs SESSION_CLOSED)."""
    # The classic session's `client` property raises: look at the class, not the attribute.
    remote = type(spark).__module__.startswith("pyspark.sql.connect")
    pending = getattr(spark.client, "_release_futures", None) if remote else None
    if pending:
        import concurrent.futures

        concurrent.futures.wait(list(pending), timeout=10)
    spark.stop()


@contextmanager
def connect_mode(remote: bool) -> Iterator[None]:
    """While a remote job runs, pyspark's ``functions``, ``Window`` and ``Column`` build Spark
    Connect expressions: they choose by ``SPARK_CONNECT_MODE_ENABLED`` at each call, not by the
    session. Scoped, so a classic session in the same process (the tests) keeps working after."""
    if not remote or "SPARK_CONNECT_MODE_ENABLED" in os.environ:
        yield
        return
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield
    finally:
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)



def local_folder(output: str) -> Path | None:
    """The output as a local folder, or None on a cluster file system (hdfs://, s3a://, ...)."""
    parsed = urlparse(output)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return Path(output) if not parsed.scheme else None


@contextmanager
def exclusive(output: Path, lock_file: str) -> Iterator[None]:
    """One feature job per output folder at a time. The lock dies with its process, so whoever
    holds it knows that every staging folder it finds belongs to a dead run."""
    import fcntl

    output.mkdir(parents=True, exist_ok=True)
    with open(output / lock_file, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another feature job is writing %s; waiting for it", output)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def sweep_staging(output: Path, remote: str | None = None) -> None:
    """Remove what killed runs left: their staging folders (hidden, so no reader ever saw them).

    Only a holder of :func:`exclusive` sweeps, so a live run's folder is never swept. Over Spark
    Connect a killed client's write may still run on the server (an orphan: it can never publish,
    that is the client's step, but it could write on into the folder being removed); its session
    is interrupted first.
    """
    for path in output.iterdir():
        if path.is_dir() and path.name.startswith(STALE_PREFIXES):
            if remote and path.name.startswith(STAGING_PREFIX):
                _interrupt_orphan(remote, path.name.removeprefix(STAGING_PREFIX), path)
            log.warning("removing %s, left by a feature job that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)


def _interrupt_orphan(remote: str, session_id: str, staging: Path) -> None:
    """Interrupt and release the server session ``session_id`` of a dead client, then wait until
    its staging folder stops changing. Nothing to do when the server no longer knows it."""
    try:
        dashed = str(uuid.UUID(session_id)) == session_id
    except ValueError:
        dashed = False
    if not dashed:
        return  # a spark-submit run's folder (uuid4().hex), never a Connect session id
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession as RemoteSession

    base, _, params = remote.partition(";")
    url = f"{base.rstrip('/')}/;{params + ';' if params else ''}session_id={session_id}"
    try:
        orphan = RemoteSession.builder.remote(url).create()
        orphan.client.set_retry_policies([DefaultPolicy(max_retries=2, max_backoff=1000)])
        try:
            interrupted = orphan.interruptAll()
        finally:
            stop_session(orphan)  # releases the session: the server forgets it
    except Exception as exc:  # noqa: BLE001 - closed, expired or from an earlier server
        log.info("no live server session %s of %s (%s)", session_id, staging.name, type(exc).__name__)
        return
    if not interrupted:
        return
    log.warning("interrupted %d orphaned operations of dead client session %s", len(interrupted), session_id)
    # Its tasks stop asynchronously: wait until no file under the folder changes for a second.
    seen, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _listing(staging)
        if now == seen:
            return
        seen = now
        time.sleep(1.0)


def _listing(folder: Path) -> list[tuple[str, int]]:
    found = []
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                found.append((name, os.stat(os.path.join(parent, name)).st_size))
            except FileNotFoundError:  # removed while listing
                pass
    return sorted(found)


def publish(staging: Path, output: Path, partition: str = "date") -> list[str]:
    """Move each day folder Spark committed under ``staging`` into ``output``, one atomic rename
    per day: a reader sees the complete old day or the complete new one, never a mix and never
    neither. The old folders end up in ``staging``. Returns the days published, in order."""
    days = []
    for staged in sorted(staging.glob(f"{partition}=*")):
        target = output / staged.name
        if target.exists():
            _swap(staged, target)
        else:
            os.rename(staged, target)
        days.append(staged.name.removeprefix(f"{partition}="))
    return days


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _swap(new: Path, current: Path) -> None:
    """Exchange two folders in one step (Linux >= 3.15 with glibc >= 2.28; ext4, xfs, btrfs, tmpfs).

    Elsewhere the old folder is moved aside first, which hides the day for the instant between
    two renames (what Spark's commit does too, but for a delete, not a rename).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(current), _RENAME_EXCHANGE) == 0
        code = 0 if done else ctypes.get_errno()
    except AttributeError:  # no renameat2 in this C library
        done, code = False, errno.ENOSYS
    if done:
        return
    if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(code, os.strerror(code), str(new), None, str(current))
    log.warning("no atomic folder exchange here (%s): %s is briefly absent", os.strerror(code), current)
    aside = new.with_name(f"{new.name}.old")
    os.rename(current, aside)
    os.rename(new, current)


def write_partitions(
    frame: DataFrame, output: str, partition: str, spark: SparkSession, remote: str | None, lock_file: str,
    before_publish: Callable[[], None] | None = None,
) -> list[str] | None:
    """Write ``frame`` partitioned by ``partition`` into ``output``, replacing exactly the partitions
    it has and leaving every other one alone. Returns the partitions published (None on a cluster
    file system, where Spark's dynamic overwrite does the replacing).

    ``before_publish`` runs after Spark's commit and before the first day is swapped in: raising
    there publishes nothing (a check of what the write observed, for instance).
    """
    writer = frame.write.partitionBy(partition)
    local = local_folder(output)
    if local is None:
        # Dynamic: replace only the day folders this run produces, never the whole table.
        writer.mode("overwrite").option("partitionOverwriteMode", "dynamic").parquet(output)
        if before_publish is not None:
            before_publish()
        return None
    with exclusive(local, lock_file):
        sweep_staging(local, remote)
        # Over Spark Connect the folder is named by the client's session id: a later run can
        # then find the dead client's session on the server and interrupt its orphaned write.
        staging = local / f"{STAGING_PREFIX}{spark.session_id if remote else uuid.uuid4().hex}"
        try:
            # "error", not "errorifexists": the one spelling Spark Connect's client accepts.
            writer.mode("error").parquet(str(staging))
            if before_publish is not None:
                before_publish()
            days = publish(staging, local, partition)
            log.info("published %d days into %s: %s", len(days), local, ", ".join(days))
            return days
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def lost_server(remote: str | None, exc: BaseException) -> RuntimeError | None:
    """The error to raise instead of ``exc`` when a remote job failed because its Spark Connect
    server went away (None when the server still answers, or the job was not remote)."""
    if not remote or url_answers(remote, 15002, timeout=2):
        return None
    return RuntimeError(f"lost the Spark Connect server at {remote} during the job ({type(exc).__name__}); "
                        "nothing was published. Check its log (python -m plantops.environments.sparkconnect "
                        "status) and restart it (make up, or ... sparkconnect start)")


def run_job(name: str, args: object, run: Callable[[SparkSession, object], dict], no_data: type[Exception]) -> dict | None:
    """A job's ``main``: its session (classic, or a client of ``args.remote``), ``run(spark, args)``,
    and the session's end. Returns run's counts, or None (logged) when ``no_data`` says there was
    nothing to build; a lost Spark Connect server is raised as such, naming the server."""
    with connect_mode(bool(args.remote)):
        spark, owned = session(f"plantops-{name.replace('_', '-')}", args.master, args.remote)
        try:
            return run(spark, args)
        except no_data as exc:
            log.error("%s: %s", name, exc)
            return None
        except Exception as exc:
            lost = lost_server(args.remote, exc)
            if lost is not None:
                raise lost from exc
            raise
        finally:
            if owned:
                # Classic: ends the JVM this job started. Connect: releases this client's session
                # on the server (and interrupts what it still runs), never the shared server.
                stop_session(spark)
