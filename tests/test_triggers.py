"""The landing watcher's trigger: fires on a completed file, never on NiFi's in-progress names."""

from __future__ import annotations

import asyncio

from plantops.orchestration.triggers import LandingFileTrigger


def test_fires_only_for_completed_files(tmp_path):
    (tmp_path / ".tep_reactor_analyzers_20260325.parquet").write_bytes(b"half")
    (tmp_path / "tep_reactor_analyzers_20260325.parquet.part").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not a match")
    trigger = LandingFileTrigger(str(tmp_path), "*.parquet", poke_interval=0.05)

    async def first_event(after_seconds: float):
        async def land():
            await asyncio.sleep(after_seconds)
            (tmp_path / "tep_reactor_analyzers_20260325.parquet").write_bytes(b"PAR1")

        lander = asyncio.create_task(land())
        event = await asyncio.wait_for(anext(trigger.run()), timeout=5)
        await lander
        return event

    event = asyncio.run(first_event(0.3))
    assert event.payload["files"] == ["tep_reactor_analyzers_20260325.parquet"]
    assert trigger.serialize() == ("plantops.orchestration.triggers.LandingFileTrigger",
                                   {"directory": str(tmp_path), "pattern": "*.parquet", "poke_interval": 0.05})
