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


def test_fires_once_per_file_even_after_a_triggerer_restart(tmp_path, plantops_home):
    """One landed file makes one event: the next poll, and a new trigger instance (a restarted
    triggerer), stay quiet until a new file, or a new version of the same name, lands."""
    landed = tmp_path / "a.parquet"
    landed.write_bytes(b"PAR1")

    def poll() -> list[str]:
        return LandingFileTrigger(str(tmp_path), "*.parquet").new_files()

    assert poll() == ["a.parquet"]
    assert poll() == []  # the same file, still waiting: no second ingest run
    (tmp_path / "b.parquet").write_bytes(b"PAR1")
    assert poll() == ["b.parquet"]
    landed.write_bytes(b"PAR1 corrected")  # a corrected file under the same name is news
    assert poll() == ["a.parquet"]

    async def quiet() -> bool:
        try:
            await asyncio.wait_for(anext(LandingFileTrigger(str(tmp_path), "*.parquet", 0.05).run()), timeout=0.5)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(quiet())
