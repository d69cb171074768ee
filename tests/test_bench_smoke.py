"""The bench measures what it claims: same features in every engine, real child memory, valid inputs.

Small and fast (no Spark, no Airflow import): `make bench` itself is the slow part.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import engines, measure, run, synth
from plantops.config import discover, load_use_case
from plantops.features import feature_columns, wide_features_pandas

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tags():
    return load_use_case(REPO / "include" / "use_cases" / "tep_reactor.yaml").tags[:3]


def _edge_rows(day_root: Path, tag: str) -> None:
    """Rows each engine must ignore: a bad-quality outlier and a good-quality NaN (a real NaN:
    pandas-to-arrow conversion would turn it into a null)."""
    schema = pq.read_schema(day_root / "historian.parquet")
    start = pd.Timestamp(day_root.name.removeprefix("date="), tz="UTC").value // 1_000
    table = pa.table({
        "asset": [synth.ASSET] * 2,
        "tag": [tag] * 2,
        "ts": pa.array([start + 5_000_000, start + 6_000_000], pa.timestamp("us", tz="UTC")),
        "value": pa.array([1e9, float("nan")], pa.float64()),
        "quality": ["bad", "good"],
        "source": ["landing"] * 2,
        "batch": ["edge"] * 2,
    }).cast(schema)
    pq.write_table(table, day_root / "landing.parquet")


def test_duckdb_baseline_computes_the_feature_contract(tmp_path, tags):
    bronze = synth.bronze(tmp_path / "cache", 3 * 1_500, tags)  # 25 minutes of 3 tags
    day = next(bronze.root.glob("date=*"))
    _edge_rows(day, tags[0].name)
    # Drop one tag's second minute entirely: its bucket must be carried forward, not left empty.
    hist = pq.read_table(day / "historian.parquet").to_pandas()
    epoch = hist["ts"].astype("int64") // 10**6
    hole = (hist["tag"] == tags[1].name) & (epoch % 3600 >= 60) & (epoch % 3600 < 120)
    pq.write_table(pa.Table.from_pandas(hist[~hole], preserve_index=False), day / "historian.parquet")

    names = [t.name for t in tags]
    args = engines.parse_args(["duckdb", "--input", str(bronze.root), "--output", str(tmp_path / "duck"),
                               "--tags", ",".join(names), "--bucket-seconds", "60", "--rolling-buckets", "5"])
    assert engines.run_duckdb(args)["rows_out"] == 25

    got = pd.read_parquet(tmp_path / "duck").sort_values("ts").reset_index(drop=True)
    long = pd.read_parquet(bronze.root, columns=engines.READ_COLUMNS)
    long["ts"] = long["ts"].astype("datetime64[ns, UTC]")
    want = wide_features_pandas(long, names, 60, 5)
    assert list(got.columns[: 2 + 3 * len(names)]) == ["asset", "ts", *feature_columns(names)]
    assert (got["ts"].astype("datetime64[us, UTC]") == want["ts"].astype("datetime64[us, UTC]")).all()
    columns = feature_columns(names)
    np.testing.assert_allclose(got[columns], want[columns], rtol=1e-9, atol=1e-9)
    assert got[names[1]].notna().all()


def test_measure_reports_the_child_peak_memory_and_enforces_the_cap(tmp_path):
    code = "import time; x = b'x' * (300 * 2**20); time.sleep(0.5)"
    fits = measure.run([sys.executable, "-c", code], log_path=tmp_path / "fits.log")
    assert fits.ok
    assert 300 <= fits.maxrss_mb < 600
    assert fits.peak_rss_mb >= fits.maxrss_mb

    capped = measure.run([sys.executable, "-c", code.replace("0.5", "30")], mem_cap_mb=200,
                         log_path=tmp_path / "capped.log")
    assert capped.killed_at_cap and not capped.ok
    assert capped.wall_s < 20


def test_generated_use_cases_are_valid_and_distinct(tmp_path):
    run.write_use_cases(tmp_path, 3)
    use_cases, broken = discover(tmp_path)
    assert broken == {}
    assert sorted(use_cases) == ["tep_reactor_001", "tep_reactor_002", "tep_reactor_003"]


def test_budget_verdicts_say_by_how_much():
    assert run.budget("x", 1.2, 1.5, "x")["margin"] == "met, 20% headroom"
    missed = run.budget("x", 1.8, 1.5, "x")
    assert missed["met"] is False and missed["margin"] == "missed by 20%"
    assert run.budget("x", 30.0, 6, "x")["margin"] == "missed by 5.0x"
    assert run.budget("x", None, 6, "x")["met"] is None
