"""The "Plant ML" view of a visual inspection line, on a real state built by the stage functions its
DAGs call: real elpv cells landed as NiFi does (a labelled run, then a fresh run the next day),
ingest, the image features as the Spark job writes them (computed with the numpy reference of
:mod:`plantops.image_features`, so no Spark session is needed here), a ``cell_texture_svm`` trained at
30 x 30 and promoted, the fresh day scored by it with heat maps, and inspectors' late labels for
three of the rejected cells landed as a labels file and ingested. The view's dict, its JSON, the
rendered page, and the images the page links (fetched through the plugin's route) are checked
against that state."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from plantops.sources import elpv, elpv_replay, inspections
from tests.inspection_support import private_line, write_image_features
from tests.test_view import signed_in_client

UC, FOLDER, LINE, SIZE = "pv_cells", "pv_cells_el", "L2", 30
LABELLED_PER_CLASS = 20  # 80 labelled cells: about 60 to fit, 20 held out
FRESH_PER_CLASS = 4  # 16 unseen cells scored on the second day
DAY1, DAY2 = datetime(2026, 4, 1, 6, tzinfo=timezone.utc), datetime(2026, 4, 2, 6, tzinfo=timezone.utc)
CLASSES = ("0", "1/3", "2/3", "1")
MONITOR_RUN = "manual__2026-04-03T06:00:00+00:00"


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    from plantops.stages import decisions, pipeline

    root = tmp_path_factory.mktemp("view_inspection")
    with private_line(root, {
        "id": UC, "plant": "Module line 2, EL inspection of solar cells (test)",
        "approvers": [{"id": "qe1", "name": "QE"}],
        "inspection": {"folder": FOLDER, "line": LINE, "input_size": SIZE},
        "model": {"kind": "cell_texture_svm", "min_train_rows": 40, "params": {"reject_threshold": 0.5}},
    }):
        cells = elpv.labels().sort_values("cell_id")
        labelled = pd.concat([g.head(LABELLED_PER_CLASS) for _, g in cells.groupby("label", sort=True)])
        rest = cells[~cells["cell_id"].isin(labelled["cell_id"])]
        fresh = pd.concat([g.iloc[::20].head(FRESH_PER_CLASS) for _, g in rest.groupby("label", sort=True)])
        elpv_replay.land_run(FOLDER, "r-1", labelled["cell_id"].tolist(), line=LINE, labels=True, start=DAY1)
        elpv_replay.land_run(FOLDER, "r-2", fresh["cell_id"].tolist(), line=LINE, start=DAY2)
        ingested = pipeline.ingest(UC, "2026-04-01T00:00:00+00:00", "2026-04-03T00:00:00+00:00", "ingest-1")
        assert ingested["images"] == {"items": 96, "accepted": 96, "rejected": 0}, ingested["images"]
        assert write_image_features(UC, SIZE) == 96
        trained = pipeline.train(UC, "train-1")
        assert trained["promoted"] and trained["version"] == "1", trained
        scored = pipeline.score(UC, "2026-04-02")
        assert scored["rows"] == 16 and scored["runs"] == ["r-2"], scored
        verdicts = inspections.read_verdicts(LINE, DAY2.replace(hour=0), DAY2.replace(hour=0) + timedelta(days=1))
        rejected = verdicts[verdicts["rejected"] == 1].sort_values(["defect_probability", "cell_id"],
                                                                    ascending=[False, True])
        # The inspectors' labels of three rejected cells arrive the day after, as a labels file.
        truth = elpv.labels().set_index("cell_id")["defect_probability"]
        late = rejected["cell_id"].iloc[:3].tolist()
        elpv_replay.land_labels(FOLDER, "late-0403", late, datetime(2026, 4, 3, 9, tzinfo=timezone.utc),
                                inspector="insp7")
        again = pipeline.ingest(UC, "2026-04-03T00:00:00+00:00", "2026-04-04T00:00:00+00:00", "ingest-2")
        assert [f["status"] for f in again["labels"]] == ["ingested"], again["labels"]
        # The monitor's record of the day as the inspection monitor writes it: no alarm tags and no
        # alarm rate, its rejected cells with absolute heat-map URLs.
        base = "http://plant.example:8080"
        decisions.record(UC, MONITOR_RUN, "monitor", "ok", "no drift of the image statistics", {
            "day": "2026-04-02", "asset": UC, "branch": "ok", "rule": None, "drift_share": 0.0,
            "rejected_cells": [{"cell_id": r.cell_id, "run_id": r.run_id, "predicted_class": int(r.predicted_class),
                                "defect_probability": float(r.defect_probability),
                                "heatmap_url": f"{base}/plantops/{r.heatmap}"}
                               for r in rejected.itertuples(index=False)],
        })
        yield {"root": root, "home": root / "home", "fresh": fresh, "verdicts": verdicts, "rejected": rejected,
               "late": late, "truth": truth, "trained": trained}


@pytest.fixture
def client(line):
    yield from signed_in_client()


def test_view_dict_shows_the_latest_inspection_day(line):
    from plantops.kinds.base import class_index
    from plantops.stages import overview

    view = overview.use_case_view(UC)
    verdicts, rejected = line["verdicts"], line["rejected"]
    n_rejected = int(verdicts["rejected"].sum())
    # Real cells and a real model: some rejected, some passed (the fresh day holds 4 cells per class).
    assert 1 <= n_rejected < 16 and len(rejected) == n_rejected
    assert view["scores"] is None
    champ = view["champion"]
    assert (champ["version"], champ["model_kind"]) == ("1", "cell_texture_svm")
    # The classifier's held-out metrics, not a detector's.
    assert set(champ["metrics"]["model"]) == {"accuracy", "balanced_accuracy", "defect_recall", "false_reject_rate"}
    assert champ["metrics"]["model"]["accuracy"] == line["trained"]["metrics"]["accuracy"]

    i = view["inspection"]
    d = i["day"]
    assert (i["line"], d["day"], d["cells"], d["rejected_count"]) == (LINE, "2026-04-02", 16, n_rejected)
    assert d["rejected_share"] == round(n_rejected / 16, 4)
    assert d["model_versions"] == ["1"] and d["scored_by_champion"] is True
    assert d["by_class"] == {name: int((verdicts["predicted_class"] == k).sum()) for k, name in enumerate(CLASSES)}
    assert sum(d["by_class"].values()) == 16
    # Every rejected cell, the most probable defect first, with its heat map on the plugin.
    assert [c["cell_id"] for c in d["rejected"]] == rejected["cell_id"].tolist()
    assert d["rejected_shown"] == n_rejected
    for c, r in zip(d["rejected"], rejected.itertuples(index=False)):
        assert (c["run_id"], c["predicted_class"], c["defect_probability"]) == (
            "r-2", CLASSES[int(r.predicted_class)], round(float(r.defect_probability), 4))
        assert c["heatmap_path"] == f"/plantops/reports/{UC}/heatmaps/v1/r-2/{r.cell_id}.png"
    # The late labels sit next to the model's class for those three cells, and only those.
    truth = line["truth"]
    labelled = {c["cell_id"]: c for c in d["rejected"] if c["inspector_class"] is not None}
    assert sorted(labelled) == sorted(line["late"]) and d["labelled"] == 3
    for cell_id, c in labelled.items():
        assert c["inspector_class"] == CLASSES[class_index(truth[cell_id])] and c["inspector"] == "insp7"
        assert c["agrees"] == (c["inspector_class"] == c["predicted_class"])
    assert d["labels_agree"] == sum(c["agrees"] for c in labelled.values())
    # At most max_cells rows; the counts stay the day's.
    from plantops.modalities.images.view import inspection

    few = inspection(overview.get_use_case(UC), "1", max_cells=2)["day"]
    assert [c["cell_id"] for c in few["rejected"]] == rejected["cell_id"].iloc[:2].tolist()
    assert (few["rejected_shown"], few["rejected_count"]) == (min(2, n_rejected), n_rejected)

    # The champion's confusions, from the record its training wrote.
    import json

    record = json.loads((line["home"] / f"reports/{UC}/confusion/v1.json").read_text())
    conf = i["confusion"]
    assert (conf["version"], conf["recorded"]) == ("1", True)
    assert conf["image_path"] == f"/plantops/reports/{UC}/confusion/v1.png"
    assert conf["text"] == record["text"] and conf["top"] == record["confusions"][:3]
    assert conf["n_cells"] == record["n_cells"] == sum(map(sum, record["counts"])) > 0
    assert conf["accuracy"] == record["accuracy"] == round(champ["metrics"]["model"]["accuracy"], 4)


def test_timeline_reads_an_inspection_monitor_record_without_alarm_tags(line):
    from plantops.stages import overview

    (day,) = overview.use_case_view(UC)["timeline"]
    rejected = line["rejected"]
    assert (day["day"], day["branch"], day["alarm_rate"], day["alarms"], day["alarm_tags"]) == (
        "2026-04-02", "ok", None, None, [])
    assert day["n_rejected_cells"] == len(rejected)
    # At most five named, heat maps as paths on this origin (the record's base URL dropped).
    assert [(c["cell_id"], c["predicted_class"], c["heatmap_path"]) for c in day["rejected_cells"]] == [
        (r.cell_id, CLASSES[int(r.predicted_class)], f"/plantops/reports/{UC}/heatmaps/v1/r-2/{r.cell_id}.png")
        for r in rejected.head(5).itertuples(index=False)]


def test_page_and_json_show_the_day_heat_maps_and_confusions(line, client):
    from plantops.stages import overview

    resp = client.get(f"/view/{UC}")
    assert resp.status_code == 200
    page = resp.text
    d = overview.use_case_view(UC)["inspection"]["day"]
    n = d["rejected_count"]
    assert f"Latest scored day <b>2026-04-02</b>: <b>16</b> cells scored by v1 (the champion), <b>{n}</b> rejected " \
           f"({n / 16:.0%})." in page
    counts = "".join(f"<td class='num'>{d['by_class'][c]}</td>" for c in CLASSES)
    assert f"<tr><td>cells</td>{counts}</tr>" in page
    # Every rejected cell's heat map as an <img> the plugin serves, and nothing else under heatmaps/.
    images = re.findall(r'<img src="([^"]+)"', page)
    heatmaps = [p for p in images if "/heatmaps/" in p]
    assert heatmaps == [c["heatmap_path"] for c in d["rejected"]] and len(heatmaps) == n
    for path in heatmaps:
        served = client.get(path.removeprefix("/plantops"))
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert served.content == (line["home"] / path.removeprefix("/plantops/")).read_bytes()
    # The late labels beside the model's class.
    for c in d["rejected"]:
        if c["inspector_class"] is not None:
            assert (f"<td class='num'>{c['predicted_class']}</td><td class='num'>{c['defect_probability']:.2f}</td>"
                    f"<td class='num'>{c['inspector_class']}<br><span class='small'>by insp7</span></td>") in page
    assert ("inspectors' labels have arrived for 3 of them, the same class as the model's for "
            f"{d['labels_agree']}") in page
    # The confusion image (served) and the champion's largest confusions in words.
    assert f'<img src="/plantops/reports/{UC}/confusion/v1.png"' in page
    confusion = client.get(f"/reports/{UC}/confusion/v1.png")
    assert confusion.status_code == 200 and confusion.headers["content-type"] == "image/png"
    conf = overview.use_case_view(UC)["inspection"]["confusion"]
    assert conf["top"], "a 30 x 30 SVM on 60 cells confuses some classes"
    for x in conf["top"]:
        assert (f"<li>{x['cells']} of {x['of']} cells of class {x['true']} predicted {x['predicted']} "
                f"({x['share']:.0%})</li>") in page
    assert "accuracy</th>" in page and "defect_recall</th>" in page and "No predictions yet" not in page
    # The timeline names rejected cells (linked heat maps) instead of alarm tags.
    assert "<th>rejected cells (heat maps)</th>" in page and "top alarm tags" not in page
    first = d["rejected"][0]
    assert f'<a href="{first["heatmap_path"]}" target="_blank" rel="noopener">{first["cell_id"]} (' in page
    # The JSON endpoint holds the same data.
    data = client.get(f"/view/{UC}/data").json()
    assert data["inspection"] == overview.use_case_view(UC)["inspection"]
    index = client.get("/view/data").json()
    assert [(u["use_case"], u["champion_version"]) for u in index["use_cases"]] == [(UC, "1")]


def test_the_view_reads_no_mlflow(line):
    """The page is built from the historian, the decision store and the reports folder: a fresh
    process building it never imports MLflow (seconds per page) nor the kinds' model libraries."""
    import json
    import os
    import subprocess
    import sys

    # The page's inspection parts (the rest of the page, Airflow's metadata DB included, is the tag use cases').
    code = ("import json, sys\nfrom plantops.stages import overview\nuc = overview.get_use_case('pv_cells')\n"
            "rows = overview._rows(uc, uc.id)\nc = overview.champion(rows, overview.CLASSIFIER_HEADLINE)\n"
            "from plantops.modalities.images.view import inspection\ni = inspection(uc, c['version'])\nt = overview.timeline(uc.id, rows)\n"
            "print(json.dumps({'rejected': i['day']['rejected_count'], 'named': t[0]['n_rejected_cells'],"
            " 'loaded': sorted(m for m in ('mlflow', 'sklearn', 'keras', 'pyspark') if m in sys.modules)}))")
    env = {**os.environ, "PLANTOPS_HOME": str(line["home"]), "PLANTOPS_USE_CASES": str(line["root"] / "use_cases")}
    for var in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_HISTORIAN_READ_URL", "PLANTOPS_STATE_URL"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    n = len(line["rejected"])
    assert got == {"rejected": n, "named": n, "loaded": []}, out.stderr[-2000:]
