"""Landing inspection images as NiFi does, ingest per image with reasons, and the GX suites (issue 12).

One batch carries every bad-image class at once (module fixture: 12 real elpv cells, one fault
each on the last seven, plus a duplicate row and an unlisted image); the other tests land small
runs of their own. Exact counts throughout: rows + orphan images == accepted + rejected.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops.sources import elpv, elpv_replay, landing
from plantops.modalities.images import ingest as ii
from plantops.modalities.images import validation as iv

UC, FOLDER = "pv_cells", "pv_cells_el"
CELLS = elpv.labels()["cell_id"].tolist()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("inspection")
        mp.setenv("PLANTOPS_HOME", str(path))
        for var in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_STATE_URL"):
            mp.delenv(var, raising=False)
        yield path


@pytest.fixture(scope="module")
def faulty(home):
    """Run r-faults: 12 cells, every fault class; ingested once."""
    landed = elpv_replay.land_run(FOLDER, "r-faults", CELLS[:12], faults=elpv_replay.FAULTS)
    result = ii.ingest_inspections(UC, FOLDER, "dag-run-1")
    (run,) = result["runs"]
    return landed, run


def _bronze(home: Path, run_id: str, day: str = "2026-04-01") -> pd.DataFrame:
    return pd.read_parquet(home / "bronze" / UC / "inspections" / f"day={day}" / f"{run_id}.parquet")


def _reason_file(home: Path, run_id: str, name: str) -> dict:
    return json.loads((home / "quarantine" / UC / "inspections" / run_id / f"{name}.reason.json").read_text())


@pytest.mark.parametrize("fault", elpv_replay.FAULTS)
def test_each_bad_image_class_is_rejected_with_its_reason_and_the_good_ones_reach_bronze(home, faulty, fault):
    landed, run = faulty
    name = landed.faults[fault]
    assert run["rejected_items"][name]["reason"] == fault
    reason = _reason_file(home, "r-faults", name)
    assert reason["reason"] == fault
    quarantined = home / "quarantine" / UC / "inspections" / "r-faults" / name
    if fault == "missing_image":
        assert not quarantined.exists() and reason["row"]["cell_id"] == name.removesuffix(".png")
    else:
        assert quarantined.is_file()  # moved, not deleted
    if fault == "duplicate":
        assert reason["message"] == "duplicate of cell0001 in r-faults"
    # The five good cells (the first five; faults take the last seven), all in bronze, byte-for-byte.
    bronze = _bronze(home, "r-faults")
    assert bronze["cell_id"].tolist() == CELLS[:5]
    for row in bronze.itertuples():
        kept = (home / "bronze" / UC / row.image).read_bytes()
        assert kept == (home / "archive" / UC / "inspections" / "r-faults" / f"{row.cell_id}.png").read_bytes()
        assert row.sha256 == hashlib.sha256(elpv.read(io.BytesIO(kept)).tobytes()).hexdigest()


def test_every_item_is_accounted_in_the_result_and_the_ledger(home, faulty):
    landed, run = faulty
    assert (run["rows"], run["orphan_images"], run["items"]) == (13, 1, 14)  # 12 cells + the duplicate's row
    assert (run["accepted"], run["rejected"]) == (5, 9)
    assert run["rejected_by_reason"] == {f: 1 for f in elpv_replay.FAULTS}
    (record,) = [r for r in landing.rows_of(UC) if r["name"] == "r-faults.manifest.csv"]
    assert record["status"] == "ingested"
    assert (record["rows_in"], record["rows_written"], record["rows_rejected"]) == (14, 5, 9)
    assert record["rejected_values"] == {"images": {f: 1 for f in elpv_replay.FAULTS}}
    assert run["validation"]["manifest"]["success"] and run["validation"]["images"]["success"]
    bronze = _bronze(home, "r-faults")
    assert list(bronze.columns) == list(ii.BRONZE_COLUMNS)
    assert str(bronze["captured_at"].dtype) == "datetime64[us, UTC]" and str(bronze["width"].dtype) == "int32"
    assert bronze["module_id"].unique().tolist() == ["r-faults-M01"]
    # Nothing left behind in the landing folder; nothing deleted: 13 landed images = 5 archived + 8 quarantined.
    assert not (home / "landing" / FOLDER / "r-faults").exists()
    quarantined = [p for p in (home / "quarantine" / UC / "inspections" / "r-faults").iterdir()
                   if not p.name.endswith(".reason.json")]
    assert len(quarantined) == 8 and len(list((home / "archive" / UC / "inspections" / "r-faults").iterdir())) == 5
    assert len(ii.quarantined_items(UC)) >= 9
    # The operators' list (`plantops.cli quarantine`, the Plant ML view) names each rejected image with its message.
    listed = {q["file"]: q["reason"] for q in landing.quarantined(UC) if q["file"].startswith("inspections/r-faults/")}
    assert len(listed) == 9
    assert listed[f"inspections/r-faults/{landed.faults['duplicate']}"] == "duplicate of cell0001 in r-faults"


def test_a_batch_still_landing_is_not_read(home):
    elpv_replay.land_run(FOLDER, "r-partial", CELLS[20:23], write_manifest=False)
    # NiFi is writing the manifest: its dot-prefixed temp name is not a complete manifest.
    (home / "landing" / FOLDER / ".r-partial.manifest.csv").write_text("file_name,cell_id\n")
    result = ii.ingest_inspections(UC, FOLDER, "dag-run-2")
    assert result["runs"] == [] and "r-partial" in result["incomplete"]
    assert len(list((home / "landing" / FOLDER / "r-partial").glob("*.png"))) == 3
    (home / "landing" / FOLDER / ".r-partial.manifest.csv").unlink()
    elpv_replay.land_run(FOLDER, "r-partial", CELLS[20:23])  # the same images again, then the manifest
    (run,) = ii.ingest_inspections(UC, FOLDER, "dag-run-3")["runs"]
    assert (run["status"], run["accepted"], run["rejected"]) == ("ingested", 3, 0)


def test_rerun_and_the_same_batch_resent_change_nothing(home):
    elpv_replay.land_run(FOLDER, "r-idem", CELLS[30:34])
    (first,) = ii.ingest_inspections(UC, FOLDER, "dag-run-4")["runs"]
    assert first["accepted"] == 4
    parquet = home / "bronze" / UC / "inspections" / "day=2026-04-01" / "r-idem.parquet"
    before = parquet.read_bytes()
    ledger_rows = len(landing.rows_of(UC))
    assert ii.ingest_inspections(UC, FOLDER, "dag-run-4") == {"runs": [], "incomplete": []}
    elpv_replay.land_run(FOLDER, "r-idem", CELLS[30:34])  # NiFi re-sends the whole run
    (again,) = ii.ingest_inspections(UC, FOLDER, "dag-run-5")["runs"]
    assert again["status"] == "duplicate" and again["images_archived"] == 4
    assert parquet.read_bytes() == before
    rows = landing.rows_of(UC)
    assert len(rows) == ledger_rows + 1 and rows[-1]["status"] == "duplicate"
    assert len(list((home / "archive" / UC / "duplicates" / "r-idem").glob("*.png"))) == 4
    everything = pd.concat(pd.read_parquet(p) for p in (home / "bronze" / UC / "inspections").glob("day=*/*.parquet"))
    assert everything["sha256"].is_unique


def test_an_image_already_in_bronze_under_another_run_is_a_duplicate(home, faulty):
    # cell0002 was accepted in r-faults; it comes again in a later run, next to a new cell.
    elpv_replay.land_run(FOLDER, "r-later", [CELLS[1], CELLS[40]])
    (run,) = ii.ingest_inspections(UC, FOLDER, "dag-run-6")["runs"]
    assert (run["accepted"], run["rejected"]) == (1, 1)
    assert run["rejected_items"]["cell0002.png"] == {"reason": "duplicate",
                                                     "detail": "duplicate of cell0002 in r-faults"}
    assert _bronze(home, "r-later")["cell_id"].tolist() == [CELLS[40]]


def _rewrite_manifest(home: Path, run_id: str, change) -> None:
    path = home / "landing" / FOLDER / f"{run_id}.manifest.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    elpv_replay.put_file(path.parent, path.name, frame.to_csv(index=False).encode())


def test_gx_flags_bad_manifest_rows_and_labels_by_expectation(home):
    elpv_replay.land_run(FOLDER, "r-gx", CELLS[50:56], labels=True)

    def spoil(frame: pd.DataFrame) -> None:
        frame.loc[1, "module_type"] = "cdte"
        frame.loc[2, "captured_at"] = "2026-04-03T06:00:00Z"  # another day than the run's
        frame.loc[3, "defect_probability"] = "0.5"
        frame.loc[4, "camera_id"] = ""

    _rewrite_manifest(home, "r-gx", spoil)
    (run,) = ii.ingest_inspections(UC, FOLDER, "dag-run-7")["runs"]
    assert (run["accepted"], run["rejected"]) == (2, 4)
    assert run["rejected_by_reason"] == {"invalid_row": 3, "invalid_image": 1}
    reasons = {name: r["detail"] for name, r in run["rejected_items"].items()}
    assert "expect_column_values_to_be_in_set(module_type)" in reasons[f"{CELLS[51]}.png"]
    assert "expect_column_values_to_be_between(captured_at)" in reasons[f"{CELLS[52]}.png"]
    assert "expect_column_values_to_be_in_set(defect_probability)" in reasons[f"{CELLS[53]}.png"]
    assert "expect_column_values_to_not_be_null(camera_id)" in reasons[f"{CELLS[54]}.png"]
    assert not run["validation"]["manifest"]["success"] and not run["validation"]["images"]["success"]
    assert any("expect_column_values_to_be_in_set(module_type)" in f for f in run["validation_failures"])
    assert _bronze(home, "r-gx")["cell_id"].tolist() == [CELLS[50], CELLS[55]]


def test_gx_image_suite_passes_on_real_cells_and_names_what_fails():
    cells = elpv.labels().iloc[[0, 5, 9]]
    good = pd.DataFrame([{**{k: v for k, v in vars(ii.judge_image(elpv_replay.png_bytes(elpv.read(f)))).items()
                             if k in ("width", "height", "mode", "mean", "std")}, "defect_probability": p}
                         for f, p in zip(cells["file"], cells["defect_probability"])])
    assert iv.validate_images(UC, good).success
    bad = good.assign(width=[300, 299, 300], defect_probability=[0.0, 1 / 3, 0.5])
    outcome = iv.validate_images(UC, bad)
    assert not outcome.success and outcome.bad_rows == {1, 2}
    assert {f.split(":")[0] for f in outcome.failures} == {"expect_column_values_to_be_between(width)",
                                                           "expect_column_values_to_be_in_set(defect_probability)"}


def test_judge_image_catches_a_cut_pixel_stream_and_accepts_an_exposure_change():
    pixels = elpv.read(elpv.labels()["file"].iloc[3])
    data = elpv_replay.png_bytes(pixels)
    assert ii.judge_image(data).sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()
    # The pixel data cut in half but a well-formed IEND appended: Pillow's own truncation error.
    cut = data[: len(data) // 2] + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    with pytest.raises(ii.BadImage) as info:
        ii.judge_image(cut)
    assert info.value.code == "truncated"
    brighter = ii.judge_image(elpv_replay.png_bytes(elpv.exposure(pixels, 1.3, 20.0)))
    assert brighter.saturated_share < iv.ImageChecks().max_saturated_share
    with pytest.raises(ii.BadImage, match="^blank"):
        ii.judge_image(elpv_replay.png_bytes(np.full((300, 300), 128, dtype=np.uint8)))


def test_the_ingest_task_of_an_inspection_use_case_takes_runs_and_late_labels(tmp_path, monkeypatch):
    """pipeline.ingest (what <uc>__ingest runs) on an inspection use case: the run's good images
    reach bronze with its day, labels in the manifest and in a labels file landed a day later
    reach the historian, and a labels file with a value outside the four classes is quarantined
    whole and fails the run through report_quarantine."""
    import yaml

    from plantops.sources import inspections
    from plantops.stages import pipeline

    home = tmp_path / "home"
    monkeypatch.setenv("PLANTOPS_HOME", str(home))
    for var in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_STATE_URL", "PLANTOPS_HISTORIAN_READ_URL"):
        monkeypatch.delenv(var, raising=False)
    use_cases = tmp_path / "use_cases"
    use_cases.mkdir()
    (use_cases / "pv_line.yaml").write_text(yaml.safe_dump({
        "id": "pv_line", "plant": "EL line (test)", "approvers": [{"id": "qe1", "name": "QE"}],
        "inspection": {"folder": "pv_line_el", "line": "L1"}, "model": {"kind": "cell_texture_svm"}}))
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(use_cases))
    from plantops import db

    db.reset()
    elpv_replay.land_run("pv_line_el", "r-1", CELLS[:6], faults=["blank"], labels=True)
    late = landing.landing_dir("pv_line_el") / "r-0-late.labels.csv"
    late.write_text("cell_id,defect_probability,inspector,labelled_at\n"
                    f"{CELLS[100]},0.6666667,qa1,2026-04-02T09:00:00+00:00\n")
    result = pipeline.ingest("pv_line", "2026-04-01T00:00:00+00:00", "2026-04-02T00:00:00+00:00", "dag-run-1")
    assert result["days"] == ["2026-04-01"] and result["images"] == {"items": 6, "accepted": 5, "rejected": 1}
    assert [f["status"] for f in result["labels"]] == ["ingested"] and result["quarantined_files"] == 0
    stored = inspections.read_labels("L1").set_index("cell_id")
    # The five accepted cells' manifest labels (the blank frame's is not kept) and the late one.
    assert len(stored) == 6 and stored.loc[CELLS[100], "inspector"] == "qa1"
    assert stored.loc[CELLS[0], "defect_probability"] == pytest.approx(elpv.labels().set_index("cell_id")
                                                                        .loc[CELLS[0], "defect_probability"])
    pipeline.report_quarantine("pv_line", "dag-run-1")  # nothing quarantined whole: no error

    bad = landing.landing_dir("pv_line_el") / "r-2-late.labels.csv"
    bad.write_text("cell_id,defect_probability,inspector,labelled_at\n"
                   f"{CELLS[101]},0.5,qa1,2026-04-02T09:00:00+00:00\n")
    again = pipeline.ingest("pv_line", "2026-04-02T00:00:00+00:00", "2026-04-03T00:00:00+00:00", "dag-run-2")
    assert again["days"] == [] and again["quarantined_files"] == 1
    assert "defect probability 0.5 is not one of" in again["labels"][0]["reason"]
    with pytest.raises(pipeline.FilesQuarantined, match="r-2-late.labels.csv"):
        pipeline.report_quarantine("pv_line", "dag-run-2")
    assert len(inspections.read_labels("L1")) == 6  # nothing of the bad file was written
    db.reset()


@pytest.fixture
def cli_use_case(home, tmp_path, monkeypatch):
    """The CLI's view of this module's line: a use case whose inspection folder is FOLDER."""
    import yaml

    folder = tmp_path / "use_cases"
    folder.mkdir()
    (folder / f"{UC}.yaml").write_text(yaml.safe_dump({
        "id": UC, "plant": "EL line (test)", "approvers": [{"id": "qe1", "name": "QE"}],
        "inspection": {"folder": FOLDER, "line": "L1"}, "model": {"kind": "cell_texture_svm"}}))
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(folder))


def test_released_images_land_again_as_runs_of_their_own_and_refusals_say_why(home, faulty, cli_use_case, capsys):
    """Operators release rejected images with the CLI (after every other test of this module: it
    changes r-faults' quarantine): a fixed image for a truncated one and for one that never came,
    the quarantined blank frame as it is; the next ingest judges each like any other image."""
    from plantops import cli

    landed, _ = faulty
    quarantine = home / "quarantine" / UC / "inspections" / "r-faults"
    original = elpv.labels().set_index("cell_id")["file"]

    def release(fault: str, *image: str) -> int:
        return cli.main(["release", UC, f"inspections/r-faults/{landed.faults[fault]}", *image])

    # Refused, with what to do instead; nothing moves.
    for fault, why in [("duplicate", "its pixels are in bronze already"), ("missing_row", "no manifest row names"),
                       ("missing_image", "pass the fixed image")]:
        assert release(fault) == 1
        assert why in capsys.readouterr().err
        assert (quarantine / f"{landed.faults[fault]}.reason.json").is_file()
    assert cli.main(["release", UC, "inspections/r-faults/nope.png"]) == 1
    assert "no rejected item 'nope.png' of run 'r-faults'" in capsys.readouterr().err

    truncated, missing, blank = (landed.faults[f] for f in ("truncated", "missing_image", "blank"))
    assert release("truncated", "--image", original[truncated.removesuffix(".png")]) == 0
    assert release("missing_image", "--image", original[missing.removesuffix(".png")]) == 0
    assert release("blank") == 0
    released = [json.loads(line)["released"] for line in capsys.readouterr().out.splitlines()]
    assert [Path(p).name.startswith("r-faults-r") and p.endswith(".manifest.csv") for p in released] == [True] * 3
    # The bad truncated original stays in quarantine (nothing is deleted); its reason is marked released.
    assert (quarantine / truncated).is_file() and (quarantine / f"{truncated}.reason.json.released").is_file()
    assert not (quarantine / blank).exists()  # the blank frame itself went back to the landing folder
    listed = {item["file"] for item in landing.quarantined(UC)}
    assert not {f"inspections/r-faults/{n}" for n in (truncated, missing, blank)} & listed
    assert f"inspections/r-faults/{landed.faults['duplicate']}" in listed

    runs = {r["run_id"]: r for r in ii.ingest_inspections(UC, FOLDER, "dag-run-release")["runs"]}
    assert len(runs) == 3 and {r["status"] for r in runs.values()} == {"ingested"}
    by_cell = {}
    for run_id, run in runs.items():
        if run["accepted"]:
            by_cell.update({c: run_id for c in _bronze(home, run_id)["cell_id"]})
        else:  # the blank frame, judged again: rejected again, quarantined under its new run
            assert run["rejected_items"] == {blank: {"reason": "blank", "detail": run["rejected_items"][blank]["detail"]}}
            assert (home / "quarantine" / UC / "inspections" / run_id / blank).is_file()
    assert set(by_cell) == {truncated.removesuffix(".png"), missing.removesuffix(".png")}
    statuses = [(r["status"], r["reason"]) for r in landing.rows_of(UC) if r["status"] == "released"]
    assert [s for s, _ in statuses] == ["released"] * 3
    assert statuses[0][1].startswith(f"released r-faults/{truncated} (truncated) as run r-faults-r")
    # Released twice: the item is no longer in quarantine.
    assert release("truncated", "--image", original[truncated.removesuffix(".png")]) == 1
    assert "no rejected item" in capsys.readouterr().err


def test_a_quarantined_run_comes_back_whole_when_its_fixed_manifest_is_released(home, cli_use_case, capsys):
    from plantops import cli

    elpv_replay.land_run(FOLDER, "r-badcols", CELLS[60:63])
    _rewrite_manifest(home, "r-badcols", lambda f: f.rename(columns={"camera_id": "camera"}, inplace=True))
    (run,) = ii.ingest_inspections(UC, FOLDER, "dag-run-q")["runs"]
    assert run["status"] == "quarantined" and run["rejected"] == 3
    assert cli.main(["release", UC, f"inspections/r-badcols/{CELLS[60]}.png"]) == 1
    assert "release the fixed manifest r-badcols.manifest.csv" in capsys.readouterr().err
    # The engineer fixes the manifest in quarantine, then releases it: images first, manifest last.
    fixed = home / "quarantine" / UC / "r-badcols.manifest.csv"
    fixed.write_text(fixed.read_text().replace("camera,", "camera_id,", 1))
    assert cli.main(["release", UC, "r-badcols.manifest.csv"]) == 0
    assert len(list((home / "landing" / FOLDER / "r-badcols").glob("*.png"))) == 3
    (again,) = ii.ingest_inspections(UC, FOLDER, "dag-run-q2")["runs"]
    assert (again["status"], again["accepted"], again["rejected"]) == ("ingested", 3, 0)
    assert not [i for i in landing.quarantined(UC) if i["file"].startswith("inspections/r-badcols/")]
