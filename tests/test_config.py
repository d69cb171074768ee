"""The use-case schema: the shipped YAML loads, a wrong file says file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import without_site

from plantops.config import ConfigError, discover, load_use_case, parse_duration

USE_CASES = Path(__file__).resolve().parents[1] / "include" / "use_cases"


def shipped() -> dict:
    return without_site("tep_reactor")


def write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_shipped_use_case_is_valid_and_frozen():
    uc = load_use_case(USE_CASES / "tep_reactor.yaml")
    assert uc.id == "tep_reactor" and len(uc.tags) == 52
    assert len(uc.tags_from("landing")) == 19 and len(uc.tags_from("historian")) == 33
    assert uc.features.bucket_seconds == 180
    assert (uc.features.max_gap, uc.features.max_gap_seconds) == ("6h", 6 * 3600)  # the default
    with pytest.raises(Exception):
        uc.id = "other"  # frozen


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (lambda d: d.pop("approvers"), "approvers", "required (Airflow user ids of the process engineers)"),
        (lambda d: d["tags"][0].update(min="low"), "tags.0.min", "valid number"),
        (lambda d: d["tags"][1].update(min=10, max=1), "tags.1", "must be below max"),
        (lambda d: d["features"].update(bucket="3 fortnights"), "features.bucket", "duration"),
        (lambda d: d["features"].update(max_gap="a while"), "features.max_gap", "duration"),
        (lambda d: d["features"].update(bucket="10min", max_gap="5min"), "features",
         "max_gap (5min) must be at least one bucket (10min)"),
        (lambda d: d["tags"][2].update(name="XMEAS 3; DROP TABLE"), "tags.2.name", "pattern"),
        (lambda d: d.update(execution="mainframe"), "execution", "'local' or 'kubernetes'"),
        (lambda d: d.update(execution="kubernetes"), "kubernetes.image", "required when execution is 'kubernetes'"),
        (lambda d: d.update(execution="kubernetes", kubernetes={"image": "x", "spark": {"driver": {"memory": "2 GB"}}}),
         "kubernetes.spark.driver.memory", "pattern"),
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs"),
    ],
)
def test_wrong_field_names_file_field_and_expectation(tmp_path, mutate, field, expected):
    data = shipped()
    mutate(data)
    path = write(tmp_path, "tep_reactor", data)
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    text = str(err.value)
    assert str(path) in text and field in text and expected in text


def test_id_must_match_file_name(tmp_path):
    path = write(tmp_path, "other_unit", shipped())
    with pytest.raises(ConfigError, match="id: expected the file name 'other_unit'"):
        load_use_case(path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_use_case(write(tmp_path, "x", "- just\n- a list\n"))


def test_discover_isolates_broken_files(tmp_path):
    write(tmp_path, "tep_reactor", shipped())
    broken = shipped() | {"id": "broken_unit"}
    broken["tags"][0]["max"] = "high"
    write(tmp_path, "broken_unit", broken)
    good, bad = discover(tmp_path)
    assert list(good) == ["tep_reactor"]
    assert list(bad) == ["broken_unit"] and "tags.0.max" in str(bad["broken_unit"])


def test_a_tag_use_case_cannot_take_an_image_classifier(tmp_path):
    data = shipped()
    data["model"] = {"kind": "cell_cnn"}
    with pytest.raises(ConfigError, match="model.kind: kind 'cell_cnn' does not suit a use case of tags"):
        load_use_case(write(tmp_path, "tep_reactor", data))


def test_durations():
    assert parse_duration("3min").total_seconds() == 180
    assert parse_duration("1d").total_seconds() == 86400
    with pytest.raises(ValueError):
        parse_duration("soon")


def inspection_use_case(**changes) -> dict:
    data = {"id": "pv_cells", "plant": "Module line 2, EL inspection", "approvers": [{"id": "eng1", "name": "Q. E."}],
            "inspection": {"folder": "pv_cells", "line": "line-2"}, "model": {"kind": "cell_texture_svm"}}
    data.update(changes)
    return data


def test_an_inspection_use_case_needs_no_tags(tmp_path):
    uc = load_use_case(write(tmp_path, "pv_cells", inspection_use_case()))
    assert uc.tags == () and uc.assets == ("line-2",)  # the inspection line is its asset
    assert (uc.inspection.input_size, uc.inspection.images.width, uc.inspection.images.min_std) == (60, 300, 2.0)


def test_a_compared_kind_takes_its_own_params(tmp_path):
    from plantops.kinds import get_kind

    uc = load_use_case(write(tmp_path, "pv_cells", inspection_use_case(model={
        "kind": "cell_texture_svm", "compare_with": ["cell_cnn"], "params": {"reject_threshold": 0.3},
        "compare_params": {"cell_cnn": {"epochs": 4}}})))
    assert get_kind(uc).params.reject_threshold == 0.3
    assert (get_kind(uc, "cell_cnn").params.epochs, get_kind(uc, "cell_cnn").params.reject_threshold) == (4, 0.4)


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"tags": shipped()["tags"][:1]}, "tags", "reads images only"),
        ({"historian": {"asset": "R1"}}, "historian", "reads images only"),
        ({"inspection": {"folder": "pv_cells", "input_size": 64}}, "inspection.input_size", "must divide the images' 300x300"),
        ({"inspection": {"folder": "pv_cells", "images": {"mode": "RGB"}}}, "inspection.images.mode", "'L'"),
        ({"inspection": {"folder": "pv_cells", "images": {"min_mean": 200, "max_mean": 100}}},
         "inspection.images.min_mean", "must be below max_mean"),
        ({"inspection": None}, "tags", "at least one tag (or an 'inspection' section"),
        ({"model": {"kind": "mspm_pca"}}, "model.kind", "does not suit a use case with an inspection section"),
        ({"model": {"kind": "cell_cnn", "compare_with": ["normal_behaviour"]}}, "model.compare_with",
         "expected one of ['cell_cnn', 'cell_ensemble', 'cell_pretrained', 'cell_texture_svm']"),
        ({"model": {"kind": "cell_texture_svm", "compare_params": {"cell_cnn": {"epochs": 5}}}},
         "model.compare_params", "['cell_cnn'] not named in model.compare_with"),
        ({"model": {"kind": "cell_texture_svm", "compare_with": ["cell_cnn"], "compare_params": {"cell_cnn": {"epochs": 0}}}},
         "model.compare_params.cell_cnn.epochs", "greater than or equal to 1"),
    ],
)
def test_inspection_errors_name_the_field(tmp_path, changes, field, expected):
    path = write(tmp_path, "pv_cells", inspection_use_case(**changes))
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    assert field in str(err.value) and expected in str(err.value), str(err.value)


def test_the_yaml_cache_follows_the_file_content_and_keeps_validation(tmp_path, plantops_home):
    """The parsed YAML is cached by content: an edited file is read anew, a wrong value is still refused
    from the cache, and a document JSON cannot give back as it is (a date) is never cached."""
    from plantops.config import _yaml_cache

    path = write(tmp_path, "tep_reactor", shipped())
    first = load_use_case(path)
    assert len(list(_yaml_cache().glob("*.json"))) == 1
    assert load_use_case(path) == first  # from the cache
    path.write_text(path.read_text().replace("owner: plantops", "owner: someone_else"))
    assert load_use_case(path).owner == "someone_else"
    bad = {**shipped(), "features": {**shipped()["features"], "bucket": "3 fortnights"}}
    write(tmp_path, "tep_reactor", bad)
    for _ in range(2):  # parsed, then cached: refused both times
        with pytest.raises(ConfigError, match="features.bucket"):
            load_use_case(path)
    dated = path.read_text().replace("owner: plantops", "owner: plantops\nnote_date: 2026-01-01")
    path.write_text(dated)
    before = set(_yaml_cache().glob("*.json"))
    with pytest.raises(ConfigError):
        load_use_case(path)  # unknown field: still refused
    assert set(_yaml_cache().glob("*.json")) == before
