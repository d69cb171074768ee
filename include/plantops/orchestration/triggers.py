"""An event trigger that fires when NiFi completes a file in a landing folder.

Used by an ``AssetWatcher`` on the landing asset, so ``<use_case>__ingest`` starts when a file
lands, without a polling task of our own holding a worker slot. It never deletes or moves files
(the ingest archives or quarantines them), and ignores NiFi's in-progress dot-files.

It fires once per new file version (name, size, modification time): what it announced is kept in
the state DB (``landing_announced``) before the event is sent, so a file that waits (an ingest
already running, a quarantined file released later under a new size) or a restarted triggerer does
not start an ingest run per poll. A file whose event was lost is still taken by the ingest's cron.

It watches the patterns of every landing source of the use case; a file no source claims wakes
nothing here and is reported (``ignored``) by the next ingest.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from plantops.sources.landing import is_complete_name


def completed_files(directory: str, patterns: str | Sequence[str]) -> list[str]:
    """Completed files of the folder matching any of the patterns (case-sensitive, as the ingest's)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names
        if is_complete_name(n) and any(fnmatch.fnmatchcase(n, p) for p in patterns)
        and os.path.isfile(os.path.join(directory, n))
    )


class LandingFileTrigger(BaseEventTrigger):
    """``pattern``: one glob, or a list of them (the landing sources' patterns)."""

    def __init__(self, directory: str, pattern: str | Sequence[str] = "*", poke_interval: float = 5.0) -> None:
        super().__init__()
        self.directory = directory
        # One pattern stays a string, so the serialized trigger of a one-source use case is as before.
        self.pattern = pattern if isinstance(pattern, str) else (pattern[0] if len(pattern) == 1 else list(pattern))
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "plantops.orchestration.triggers.LandingFileTrigger",
            {"directory": self.directory, "pattern": self.pattern, "poke_interval": self.poke_interval},
        )

    def new_files(self) -> list[str]:
        """Completed files not announced yet; they are marked announced here (before the event)."""
        from plantops.sources.landing import mark_announced, not_yet_announced

        versions = []
        for name in completed_files(self.directory, self.pattern):
            try:
                stat = os.stat(os.path.join(self.directory, name))
            except FileNotFoundError:  # taken by an ingest meanwhile
                continue
            versions.append((name, int(stat.st_size), int(stat.st_mtime_ns)))
        fresh = not_yet_announced(self.directory, versions)
        mark_announced(self.directory, fresh)
        return [name for name, _, _ in fresh]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            files = await asyncio.to_thread(self.new_files)
            if files:
                self.log.info("landed in %s: %s", self.directory, files)
                yield TriggerEvent({"directory": self.directory, "files": files})
                return
            await asyncio.sleep(self.poke_interval)
