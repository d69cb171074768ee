"""The historian's predictions table: the registered model beside its version, and an existing
historian from before that column still works."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa


def test_an_old_predictions_table_gains_model_name_and_keeps_its_rows(tmp_path):
    from plantops import db
    from plantops.sources import historian

    url = f"sqlite:///{tmp_path / 'old-historian.db'}"
    old = sa.create_engine(url)
    with old.begin() as conn:  # the table as plantops created it before model_name existed
        conn.exec_driver_sql(
            "CREATE TABLE predictions (asset VARCHAR(64) NOT NULL, ts DATETIME NOT NULL, model_version VARCHAR(32) "
            "NOT NULL, score FLOAT NOT NULL, threshold FLOAT NOT NULL, alarm INTEGER NOT NULL, expected FLOAT, "
            "residual FLOAT, top_tags TEXT, scored_at DATETIME NOT NULL, PRIMARY KEY (asset, ts))")
        conn.exec_driver_sql("INSERT INTO predictions VALUES ('T01', '2026-03-23 00:00:00.000000', '1', 0.5, 1.0, 0, "
                             "NULL, NULL, NULL, '2026-03-23 01:00:00.000000')")
    old.dispose()
    try:
        historian.write_predictions(pd.DataFrame({
            "asset": ["T02"], "ts": [pd.Timestamp("2026-03-24", tz="UTC")], "model_version": ["1"],
            "model_name": ["wind_fleet__T02"], "score": [2.0], "threshold": [1.0], "alarm": [1],
            "expected": [None], "residual": [None], "top_tags": [None]}), url)
        historian.check_source(url)  # the reader finds every column it reads
        t01 = historian.read_predictions("T01", datetime(2026, 3, 23), datetime(2026, 3, 24), url)
        t02 = historian.read_predictions("T02", datetime(2026, 3, 24), datetime(2026, 3, 25), url)
    finally:
        db.reset()
    assert len(t01) == 1 and t01["model_name"].isna().all()  # the old row stays, its model unknown
    assert list(t02["model_name"]) == ["wind_fleet__T02"] and list(t02["model_version"]) == ["1"]
