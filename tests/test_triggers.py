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


def test_watches_the_pattern_of_every_landing_source(tmp_path, plantops_home):
    """A file of any landing source wakes the ingest; a file none claims does not (the next ingest
    reports it as ignored). A one-source use case serializes its pattern as before."""
    from plantops.config import UseCase, get_use_case
    from plantops.orchestration.dagfactory import _landing_trigger, _watched

    for name in ("a.csv", "b.parquet", "c.txt", ".d.csv"):
        (tmp_path / name).write_bytes(b"x")
    trigger = LandingFileTrigger(str(tmp_path), ["*.parquet", "*.csv"])
    assert trigger.new_files() == ["a.csv", "b.parquet"]
    assert trigger.serialize()[1]["pattern"] == ["*.parquet", "*.csv"]

    legacy = get_use_case("tep_reactor")
    assert _landing_trigger(*_watched(legacy)).serialize()[1]["pattern"] == "*.parquet"
    raw = legacy.model_dump(exclude_defaults=True)
    raw["landing"] = {"folder": "tep_reactor", "sources": [{"pattern": "*.parquet"}, {"pattern": "pi_*.csv", "layout": "wide"}]}
    assert _landing_trigger(*_watched(UseCase.model_validate(raw))).serialize()[1]["pattern"] == ["*.parquet", "pi_*.csv"]
    # An inspection line: a run's manifest (written last) or an inspectors' labels file wakes the ingest.
    line = UseCase.model_validate({"id": "pv_cells", "plant": "EL line", "approvers": [{"id": "qe1", "name": "QE"}],
                                   "inspection": {"folder": "pv_el"}, "model": {"kind": "cell_texture_svm"}})
    folder, patterns = _watched(line)
    assert folder == "pv_el" and patterns == ["*.manifest.csv", "*.labels.csv"]
