"""Run one command in a fresh subprocess and measure its wall time and peak memory.

Peak memory is taken two ways, because neither alone is right for every engine:

- ``maxrss_mb``: the kernel's peak resident set of the largest single process in the child's tree
  (``os.wait4``'s rusage of that one child; unlike ``getrusage(RUSAGE_CHILDREN)`` it is not
  mixed with earlier children of the bench). Exact, but a max, not a sum: for spark-submit it is
  the JVM alone, without the Python driver.
- ``tree_peak_mb``: the sum of RSS over the child and all its descendants, sampled every 0.1 s
  with psutil. Sums JVM + Python driver, but can miss a spike shorter than the interval.

``peak_rss_mb`` is the larger of the two. An optional memory cap kills the tree when the sampled
sum crosses it, so a baseline that cannot fit fails with a reason instead of taking the machine
(and the CI run sharing it) down.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    maxrss_mb: float
    tree_peak_mb: float
    killed_at_cap: bool = False
    log_path: str | None = None
    output: dict | None = None  # the child's last stdout line, when it is JSON

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed_at_cap

    @property
    def peak_rss_mb(self) -> float:
        return max(self.maxrss_mb, self.tree_peak_mb)

    def record(self) -> dict:
        out = asdict(self)
        out["peak_rss_mb"] = round(self.peak_rss_mb, 1)
        out["wall_s"] = round(self.wall_s, 3)
        out["maxrss_mb"] = round(self.maxrss_mb, 1)
        out["tree_peak_mb"] = round(self.tree_peak_mb, 1)
        out["cmd"] = " ".join(self.cmd)
        return out


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass  # exited between the listing and the read
    return total


def run(
    cmd: list[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    mem_cap_mb: float | None = None,
    interval_s: float = 0.1,
    cwd: Path | None = None,
) -> Measured:
    """Run ``cmd`` to completion; stdout+stderr go to ``log_path`` (or are discarded).

    The child's last stdout line, if it parses as JSON, is returned in ``output``: the bench's own
    child scripts report their in-process timings that way.
    """
    log_file = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    out_path = Path(str(log_path) + ".out") if log_path else None
    out_file = open(out_path, "w") if out_path else subprocess.DEVNULL  # noqa: SIM115
    peak = 0
    killed = False
    stop = threading.Event()
    began = time.perf_counter()
    # A new session: the cap (and a Ctrl-C of the bench) can end the whole tree, JVM included.
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_file, stderr=log_file, start_new_session=True)

    def sample() -> None:
        nonlocal peak, killed
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            rss = _tree_rss(root)
            peak = max(peak, rss)
            if mem_cap_mb and rss > mem_cap_mb * MB and not killed:
                log.warning("%s: %.0f MB > cap %.0f MB, killing it", cmd[0], rss / MB, mem_cap_mb)
                killed = True
                os.killpg(proc.pid, signal.SIGKILL)
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # wait4 instead of Popen.wait: its rusage belongs to this child (and its reaped descendants).
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    finally:
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        for handle in (log_file, out_file):
            if handle is not subprocess.DEVNULL:
                handle.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = None
    if out_path and out_path.exists():
        lines = out_path.read_text().strip().splitlines()
        if lines:
            try:
                output = json.loads(lines[-1])
            except json.JSONDecodeError:
                output = None
    measured = Measured(
        cmd=[str(c) for c in cmd],
        returncode=proc.returncode,
        wall_s=wall,
        maxrss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        tree_peak_mb=peak / MB,
        killed_at_cap=killed,
        log_path=str(log_path) if log_path else None,
        output=output,
    )
    if not measured.ok:
        log.error("%s failed (rc %s%s); see %s", cmd[:3], proc.returncode,
                  ", killed at the memory cap" if killed else "", log_path)
    return measured
