"""Scoring inspection runs and explaining them (issue 12, items 5 and 6) on real elpv cells.

The model: ``cell_texture_svm`` fitted on 120 real cells at 30 x 30 (15 mono and 15 poly per class,
the first in ``cell_id`` order); the cells scored are others. Verdicts go through the real
historian writer, the confusion record through a real MLflow store, heat maps are real PNGs served
by the plugin's route.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from plantops.config import UseCase
from plantops.kinds import get_kind

SIZE = 30
PER_CLASS = 30
RUN = "manual__2026-03-24T08:00:00+00:00"
USE_CASE = {"id": "pv_cells", "plant": "EL inspection line (test)", "approvers": [{"id": "qe1", "name": "Q. E."}],
            "inspection": {"folder": "pv_cells", "line": "line-2"},
            "model": {"kind": "cell_texture_svm", "params": {}}}


def use_case(reject_threshold: float = 0.7) -> UseCase:
    # 0.7 rather than the default 0.4: a model fitted on 120 cells calls many unseen normal cells
    # half defective, and the tests need cells that pass beside those rejected.
    params = {"reject_threshold": reject_threshold}
    return UseCase.model_validate({**USE_CASE, "model": {"kind": "cell_texture_svm", "params": params}})


def image_rows(cells: pd.DataFrame, run_id: str = RUN) -> pd.DataFrame:
    from plantops.image_features import downsample
    from plantops.sources import elpv

    at = datetime(2026, 3, 24, 8, tzinfo=timezone.utc)
    return pd.DataFrame({
        "run_id": run_id, "cell_id": cells["cell_id"].to_numpy(), "label": cells["label"].to_numpy(),
        "captured_at": [at + pd.Timedelta(seconds=i) for i in range(len(cells))], "size": SIZE,
        "pixels": [downsample(elpv.read(f), SIZE).ravel() for f in cells["file"]],
    })


@pytest.fixture(scope="module")
def fitted():
    from plantops.sources import elpv

    cells = elpv.labels().sort_values("cell_id")
    picked = pd.concat([g.groupby("module_type").head(PER_CLASS // 2) for _, g in cells.groupby("label")])
    rest = cells[~cells["cell_id"].isin(picked["cell_id"])]
    kind = get_kind(use_case())
    model = kind.fit(kind.build(), image_rows(picked))
    return kind, model, rest


@pytest.fixture
def home(plantops_home):
    from plantops import db

    db.reset()
    yield plantops_home
    db.reset()


def dozen(rest: pd.DataFrame) -> pd.DataFrame:
    """12 unseen real cells: 3 per class, spread over the data set (modules)."""
    return pd.concat([g.iloc[::20].head(3) for _, g in rest.groupby("label")]).sort_values("cell_id")


def test_verdicts_follow_the_kind_and_rejected_cells_get_a_heat_map(fitted, home):
    from PIL import Image

    from plantops.sources.inspections import VERDICT_COLUMNS
    from plantops.modalities.images.scoring import CAPTION_HEIGHT, HEATMAP_SIDE, score_inspections

    kind, model, rest = fitted
    rows = image_rows(dozen(rest))
    verdicts = score_inspections(use_case(), kind, model, 3, rows)
    expected = kind.score(model, rows)
    assert list(verdicts.columns) == list(VERDICT_COLUMNS) and len(verdicts) == 12
    assert verdicts["cell_id"].tolist() == rows["cell_id"].tolist() and set(verdicts["run_id"]) == {RUN}
    assert (verdicts["model_version"] == "3").all()
    assert verdicts["predicted_class"].tolist() == expected["predicted_class"].tolist()
    np.testing.assert_allclose(verdicts["defect_probability"], expected["defect_probability"])
    np.testing.assert_allclose(verdicts["score"], expected["score"])
    assert verdicts["rejected"].tolist() == expected["alarm"].tolist()
    rejected = verdicts[verdicts["rejected"] == 1]
    # The three class-1 (defect probability 1) cells are among the rejects; some cells pass.
    assert set(rows.loc[rows["label"] == 3, "cell_id"]) <= set(rejected["cell_id"])
    assert 3 <= len(rejected) < 12
    assert verdicts.loc[verdicts["rejected"] == 0, "heatmap"].isna().all()
    run_folder = "manual__2026-03-24T08_00_00_00_00"
    for v in rejected.itertuples():
        assert v.heatmap == f"reports/pv_cells/heatmaps/v3/{run_folder}/{v.cell_id}.png"
        with Image.open(home / v.heatmap) as png:
            assert (png.format, png.size, png.mode) == ("PNG", (HEATMAP_SIDE, HEATMAP_SIDE + CAPTION_HEIGHT), "RGB")
    assert sorted(p.name for p in (home / f"reports/pv_cells/heatmaps/v3/{run_folder}").iterdir()) == sorted(
        f"{c}.png" for c in rejected["cell_id"])
    assert verdicts.attrs["heatmap_seconds_per_cell"] > 0  # recorded for bench, not asserted


def test_rescoring_a_run_replaces_its_verdicts_and_heat_maps(fitted, home):
    from plantops.sources.inspections import read_verdicts, write_verdicts
    from plantops.modalities.images.scoring import score_inspections

    kind, model, rest = fitted
    cells = dozen(rest)
    first = score_inspections(use_case(), kind, model, 3, image_rows(cells))
    other = score_inspections(use_case(), kind, model, 3, image_rows(cells.head(2), run_id="run-b"))
    assert write_verdicts("line-2", first) == 12 and write_verdicts("line-2", other) == 2
    # The same run scored again at a stricter operating point: fewer rejects, the stale heat maps go.
    strict = get_kind(use_case(reject_threshold=0.95))
    again = score_inspections(use_case(), strict, model, 3, image_rows(cells))
    assert again["rejected"].sum() < first["rejected"].sum()
    assert write_verdicts("line-2", again) == 12
    day = datetime(2026, 3, 24, tzinfo=timezone.utc)
    stored = read_verdicts("line-2", day, day + pd.Timedelta(days=1))
    assert len(stored) == 14 and stored.groupby("run_id").size().to_dict() == {RUN: 12, "run-b": 2}
    mine = stored[stored["run_id"] == RUN].set_index("cell_id").loc[again["cell_id"]]
    assert mine["rejected"].tolist() == again["rejected"].tolist()
    assert mine["heatmap"].tolist() == again["heatmap"].tolist()
    folder = home / "reports/pv_cells/heatmaps/v3/manual__2026-03-24T08_00_00_00_00"
    on_disk = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert on_disk == sorted(f"{c}.png" for c in again.loc[again["rejected"] == 1, "cell_id"])


def test_the_heat_map_finds_a_dark_spot_pasted_into_a_normal_cell(fitted):
    """A 4 x 4 dark spot (40 x 40 pixels of the original cell; the patch is 6 x 6) pasted into
    unseen normal cells at three places: where the model reacts to it (the defect probability rises
    by 0.1 or more), the heat map's maximum lies in the spot."""
    from plantops.modalities.images.scoring import occlusion_maps

    kind, model, rest = fitted
    normal = image_rows(rest[rest["label"] == 0].iloc[::25].head(8))
    clean = kind.score(model, normal)["defect_probability"].to_numpy()
    cases, spots, before = [], [], []
    for i, pixels in enumerate(normal["pixels"]):
        for y, x in ((6, 6), (18, 9), (10, 19)):
            image = pixels.reshape(SIZE, SIZE).copy()
            image[y:y + 4, x:x + 4] = 0.03
            cases.append(image.ravel())
            spots.append((y, x))
            before.append(clean[i])
    frame = pd.DataFrame({"size": SIZE, "pixels": cases})
    reacts = kind.score(model, frame)["defect_probability"].to_numpy() - np.asarray(before) >= 0.1
    frame, spots = frame[reacts], [s for s, r in zip(spots, reacts) if r]
    assert len(spots) >= 8, f"the model reacts to only {len(spots)} of {len(reacts)} pasted spots"
    inside, near, missed = 0, 0, []
    for (y, x), heat in zip(spots, occlusion_maps(kind, model, frame)):
        assert heat.shape == (SIZE, SIZE)
        top_y, top_x = np.unravel_index(heat.argmax(), heat.shape)
        inside += y <= top_y < y + 4 and x <= top_x < x + 4
        close = y - 2 <= top_y < y + 6 and x - 2 <= top_x < x + 6
        near += close
        if not close:
            missed.append(((y, x), (int(top_y), int(top_x))))
    print(f"maximum in the spot {inside}, within 2 pixels {near}, of {len(spots)}; missed {missed}")
    # A map at random would put its maximum in the 4 x 4 spot 2 % and within 2 pixels 7 % of the
    # time. The patch is 6 pixels wide and the SVM's dark-area features (a median background a tenth
    # of the side wide) spread the drop over neighbouring patches, so the maximum lands within 2
    # pixels more reliably than inside the spot (measured: 11 and 14 of 15).
    assert inside >= 0.6 * len(spots), f"heat map maximum in the spot for {inside} of {len(spots)}"
    assert near >= 0.9 * len(spots), f"heat map maximum far from the spot: {missed}"


def test_confusions_are_ranked_by_the_share_of_the_true_class():
    from plantops.modalities.images.scoring import confusion_record, confusion_text

    confusion = [[50, 5, 0, 0], [3, 10, 1, 0], [0, 3, 2, 0], [1, 0, 0, 20]]
    assert confusion_text(confusion) == ("3/5 cells of class 2/3 predicted 1/3 (60%); 3/14 cells of class 1/3 "
                                         "predicted 0 (21%); 5/55 cells of class 0 predicted 1/3 (9%)")
    record = confusion_record(confusion)
    assert record["n_cells"] == 95 and record["accuracy"] == round(82 / 95, 4)
    assert record["row_normalised"][2] == [0.0, 0.6, 0.4, 0.0]
    assert [(c["true"], c["predicted"], c["cells"]) for c in record["confusions"]][3:] == [
        ("1/3", "2/3", 1), ("1", "0", 1)]
    assert confusion_text(np.diag([4, 0, 2, 3])) == "no confusions on 9 held-out cells"


def test_confusions_are_logged_with_the_version_and_the_day_report_links_heat_maps(fitted, home, monkeypatch):
    import sys
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    from fastapi.testclient import TestClient

    from plantops.sources.inspections import write_verdicts
    from plantops.stages import registry
    from plantops.modalities.images.scoring import (inspection_report, log_confusion, report_markdown,
                                                    score_inspections)

    kind, model, rest = fitted
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://plant:8080")
    client = registry.configure()
    run = client.create_run(client.create_experiment("pv_cells")).info.run_id
    client.create_registered_model("pv_cells")
    client.create_model_version("pv_cells", source="runs:/x/model", run_id=run)
    holdout = image_rows(pd.concat([g.iloc[3:8] for _, g in rest.groupby("label")]))
    record = log_confusion(client, use_case(), "pv_cells", kind, "1", run, model, holdout)
    truth = kind.evaluate(model, holdout)["confusion"]
    assert record["counts"] == truth and record["n_cells"] == 20
    assert client.get_model_version("pv_cells", "1").tags["confusions"] == record["text"]
    artifacts = {a.path for a in client.list_artifacts(run, "explanations")}
    assert artifacts == {"explanations/confusion.json", "explanations/confusion.png"}
    assert json.loads((home / "reports/pv_cells/confusion/v1.json").read_text())["counts"] == truth

    verdicts = score_inspections(use_case(), kind, model, "1", image_rows(dozen(rest)))
    write_verdicts("line-2", verdicts)
    report = inspection_report(use_case(), "2026-03-24")
    assert report["cells"] == 12 and report["model_versions"] == ["1"]
    assert report["by_class"] == {n: int((verdicts["predicted_class"] == k).sum())
                                  for k, n in enumerate(("0", "1/3", "2/3", "1"))}
    assert report["rejected_count"] == int(verdicts["rejected"].sum())
    assert report["confusions"] == {"1": record["text"]}
    top = report["rejected"][0]
    assert top["defect_probability"] == round(verdicts["defect_probability"][verdicts["rejected"] == 1].max(), 4)
    path = f"/plantops/reports/pv_cells/heatmaps/v1/manual__2026-03-24T08_00_00_00_00/{top['cell_id']}.png"
    assert (top["heatmap_path"], top["heatmap_url"]) == (path, "http://plant:8080" + path)
    text = report_markdown(report)
    assert f"| {top['cell_id']} | {RUN} | {top['predicted_class']} |" in text
    assert f"[heat map](http://plant:8080{path})" in text
    assert f"v1 confuses on its held-out cells: {record['text']}." in text
    assert inspection_report(use_case(), "2026-03-25")["cells"] == 0

    # The plugin serves the heat map (and the confusion image), nothing else under those folders.
    source = Path(__file__).resolve().parents[1] / "plugins" / "plantops_plugin.py"
    spec = spec_from_file_location("plantops_plugin", source)
    plugin = sys.modules.get("plantops_plugin")
    if plugin is None:
        plugin = module_from_spec(spec)
        sys.modules["plantops_plugin"] = plugin
        spec.loader.exec_module(plugin)
    plugin.app.dependency_overrides[plugin.get_user] = lambda: {"username": "ops1"}
    # The embedded tier's auth manager lets every user read every DAG (per-site reads: test_site_access.py).
    plugin.app.dependency_overrides[plugin.readable] = lambda: plugin.Readable(None)
    try:
        web = TestClient(plugin.app)
        served = web.get(path.removeprefix("/plantops"))
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.content == (home / top["heatmap"]).read_bytes()
        assert web.get("/reports/pv_cells/confusion/v1.png").status_code == 200
        assert web.get("/reports/pv_cells/confusion/v1.json").status_code == 404
    finally:
        plugin.app.dependency_overrides.clear()
