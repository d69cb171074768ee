"""The image features job: equal to the numpy reference on real elpv cells, one row per image,
partitioned by inspection day, and a rerun replaces a day atomically.

One bronze fixture (30 real cells over two days, one of them under a changed exposure) and one
job run for the whole file; the other tests reuse that run or add one more where they must.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from plantops import image_features as ref
from plantops.sources import elpv
from spark_jobs.build_image_features import COLUMNS, features_expr, main, parse_args

USE_CASE = "pv_cells"
DAYS = ("2024-05-01", "2024-05-02")
# Day 1: 16 cells in two runs; day 2: 13 cells in one run plus one cell of day 1 again, under a
# changed camera exposure (gain 2.5, offset 40: saturated highlights).
PER_DAY = {DAYS[0]: 16, DAYS[1]: 14}
EXPOSED = dict(gain=2.5, offset=40)


def write_inspection(bronze: Path, day: str, run_id: str, cells: pd.DataFrame, images: list[np.ndarray]) -> pd.DataFrame:
    """Bronze as VISION.md lays it out: the PNGs under images/day=..., one parquet per run under
    inspections/day=... (what the ingest writes; built here so this test does not depend on it)."""
    folder = bronze / "images" / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(hours=6)
    rows = []
    for i, (cell, image) in enumerate(zip(cells.itertuples(), images)):
        sha = hashlib.sha256(image.tobytes()).hexdigest()
        name = f"{cell.cell_id}-{sha[:12]}.png"
        Image.fromarray(image, mode="L").save(folder / name)
        rows.append({
            "run_id": run_id, "cell_id": cell.cell_id, "module_id": f"M{int(cell.cell_id[4:]) // 60:03d}",
            "module_type": cell.module_type, "line": "line1", "camera_id": "el-cam-1",
            "captured_at": start + timedelta(seconds=7 * i), "image": f"images/day={day}/{name}",
            "sha256": sha, "width": np.int32(image.shape[1]), "height": np.int32(image.shape[0]),
        })
    frame = pd.DataFrame(rows)
    frame["captured_at"] = frame["captured_at"].astype("datetime64[us, UTC]")
    target = bronze / "inspections" / f"day={day}"
    target.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target / f"{run_id}.parquet")
    return frame.assign(day=day, pixels_of=list(images))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("plantops")


@pytest.fixture(scope="module")
def bronze(home) -> pd.DataFrame:
    """The inspection rows written, with each image's pixels (``pixels_of``) for the reference."""
    root = home / "bronze" / USE_CASE
    cells = elpv.labels()
    # Both classes and module types: every 80th cell of the package.
    picked = cells.iloc[::80].head(29).reset_index(drop=True)
    images = [elpv.read(f) for f in picked["file"]]
    exposed = elpv.exposure(images[0], EXPOSED["gain"], EXPOSED["offset"])
    return pd.concat([
        write_inspection(root, DAYS[0], "run-a", picked.iloc[:10], images[:10]),
        write_inspection(root, DAYS[0], "run-b", picked.iloc[10:16], images[10:16]),
        write_inspection(root, DAYS[1], "run-c", pd.concat([picked.iloc[16:29], picked.iloc[:1]]),
                         [*images[16:29], exposed]),
    ], ignore_index=True)


def read_features(home: Path) -> pd.DataFrame:
    out = pd.read_parquet(home / "features" / USE_CASE / "images")
    out["day"] = out["day"].astype(str)
    return out


@pytest.fixture(scope="module")
def built(spark, home, bronze) -> pd.DataFrame:
    """One job run over both days at size 60, on the shared local session."""
    assert main(["--use-case", USE_CASE, "--days", ",".join(DAYS), "--size", "60", "--home", str(home)]) == 0
    return read_features(home)


def test_features_equal_the_numpy_reference_on_real_cells(built, bronze):
    assert list(built.columns) == [*COLUMNS, "day"]
    got = built.set_index("sha256")
    assert sorted(got.index) == sorted(bronze["sha256"])
    for row in bronze.itertuples():
        image, mine = row.pixels_of, got.loc[row.sha256]
        stats = ref.image_stats(image)
        for name in ("mean", "std", "min", "max", "dark_share", "saturated_share"):
            assert mine[name] == pytest.approx(stats[name], abs=1e-6), (row.cell_id, name)
        # Exact percentiles as numpy's linear method computes them (the contract allows 1 grey level).
        assert mine["p01"] == pytest.approx(stats["p01"], abs=1e-9) and mine["p99"] == pytest.approx(stats["p99"], abs=1e-9)
        assert mine["size"] == 60
        pixels = np.asarray(mine["pixels"], dtype=np.float32)
        assert pixels.shape == (3600,)
        np.testing.assert_array_equal(pixels, ref.downsample(image, 60).ravel(), err_msg=row.cell_id)
        assert (mine["cell_id"], mine["run_id"], mine["day"]) == (row.cell_id, row.run_id, row.day)
        assert mine["captured_at"] == row.captured_at


def test_the_exposure_change_shows_in_the_statistics(built, bronze):
    exposed = bronze[(bronze["day"] == DAYS[1]) & (bronze["cell_id"] == bronze["cell_id"].iloc[0])]
    original = bronze[(bronze["day"] == DAYS[0]) & (bronze["cell_id"] == bronze["cell_id"].iloc[0])]
    got = built.set_index("sha256")
    after, before = got.loc[exposed["sha256"].item()], got.loc[original["sha256"].item()]
    # Saturated pixels appear (none in the original cell), the dark ones vanish (offset 40).
    assert before["saturated_share"] == 0.0 and after["saturated_share"] > 0.01
    assert after["dark_share"] == 0.0 and after["min"] >= 40
    assert after["saturated_share"] == pytest.approx(ref.image_stats(exposed["pixels_of"].item())["saturated_share"])


def test_one_row_per_image_partitioned_by_day(built, home):
    assert built.groupby("day").size().to_dict() == PER_DAY
    assert built["sha256"].is_unique
    folder = home / "features" / USE_CASE / "images"
    assert sorted(p.name for p in folder.iterdir()) == [".build_image_features.lock", *(f"day={d}" for d in DAYS)]
    # One file per day, rows in capture order.
    for day in DAYS:
        (file,) = (folder / f"day={day}").glob("*.parquet")
        times = pq.read_table(file, columns=["captured_at"]).column(0).to_pylist()
        assert times == sorted(times)


def test_a_rerun_replaces_its_day_atomically_and_a_day_without_images_is_left_alone(built, home, caplog):
    folder = home / "features" / USE_CASE / "images"
    first = {f.name for f in (folder / f"day={DAYS[0]}").glob("*.parquet")}
    second = {f.name for f in (folder / f"day={DAYS[1]}").glob("*.parquet")}
    # 2024-05-03 has no images: warned about, not written; day 2 is rebuilt at another size.
    with caplog.at_level(logging.WARNING):
        assert main(["--use-case", USE_CASE, "--ranges", "2024-05-02:2024-05-04", "--size", "100",
                     "--home", str(home)]) == 0
    assert "no inspection images on 2024-05-03" in caplog.text
    out = read_features(home)
    assert out.groupby("day").size().to_dict() == PER_DAY  # replaced, not doubled
    assert out.groupby("day")["size"].unique().map(list).to_dict() == {DAYS[0]: [60], DAYS[1]: [100]}
    assert {f.name for f in (folder / f"day={DAYS[0]}").glob("*.parquet")} == first
    rewritten = {f.name for f in (folder / f"day={DAYS[1]}").glob("*.parquet")}
    assert len(rewritten) == 1 and not rewritten & second
    assert sorted(p.name for p in folder.iterdir()) == [".build_image_features.lock", *(f"day={d}" for d in DAYS)]
    assert len(out.loc[out["day"] == DAYS[1], "pixels"].iloc[0]) == 100 * 100


def test_days_without_any_image_fail_clearly(home, bronze, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["--use-case", USE_CASE, "--days", "2024-06-01", "--home", str(home)]) == 1
    assert "no inspection images of pv_cells on 2024-06-01" in caplog.text
    assert not (home / "features" / USE_CASE / "images" / "day=2024-06-01").exists()


def test_a_size_that_does_not_divide_the_images_fails_with_a_clear_message(home, bronze):
    with pytest.raises(ValueError, match=r"--size 7 does not divide the 300x300 images of pv_cells.*"
                                         r"\[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 25, 30, 50, 60, 75, 100, 150, 300\]"):
        main(["--use-case", USE_CASE, "--days", DAYS[0], "--size", "7", "--home", str(home)])
    for bad in ("0", "-5", "sixty"):
        with pytest.raises(SystemExit):
            parse_args(["--use-case", USE_CASE, "--days", DAYS[0], "--size", bad])


def test_block_means_of_a_non_square_grid_match_numpy(spark):
    """The index arithmetic of the two passes, on a synthetic 6x6 image whose every pixel differs:
    a transposed or shifted block would change the result."""
    image = (np.arange(36, dtype=np.uint8) * 7).reshape(6, 6)
    frame = spark.createDataFrame([(bytearray(image.tobytes()), 6, 6)], "data binary, height int, width int")
    for size in (1, 2, 3, 6):
        (row,) = frame.select(features_expr(size).alias("f")).collect()
        np.testing.assert_array_equal(np.asarray(row["f"]["pixels"], dtype=np.float32),
                                      ref.downsample(image, size).ravel(), err_msg=str(size))
        assert row["f"]["p99"] == pytest.approx(ref.image_stats(image)["p99"], abs=1e-9)
