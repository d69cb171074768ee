"""An event trigger that fires when NiFi completes a file in a landing folder.

Used by an ``AssetWatcher`` on the landing asset, so ``<use_case>__ingest`` starts when a file
lands, without a polling task of our own holding a worker slot. It never deletes or moves files
(the ingest archives or quarantines them), and ignores NiFi's in-progress dot-files.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from plantops.sources.landing import is_complete_name


def completed_files(directory: str, pattern: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        n for n in names
        if is_complete_name(n) and fnmatch.fnmatch(n, pattern)
        and os.path.isfile(os.path.join(directory, n))
    )


class LandingFileTrigger(BaseEventTrigger):
    def __init__(self, directory: str, pattern: str = "*", poke_interval: float = 5.0) -> None:
        super().__init__()
        self.directory = directory
        self.pattern = pattern
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "plantops.orchestration.triggers.LandingFileTrigger",
            {"directory": self.directory, "pattern": self.pattern, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            files = await asyncio.to_thread(completed_files, self.directory, self.pattern)
            if files:
                self.log.info("landed in %s: %s", self.directory, files)
                yield TriggerEvent({"directory": self.directory, "files": files})
                return
            await asyncio.sleep(self.poke_interval)
