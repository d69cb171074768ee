"""The historian: the predictions table (the registered model beside its version, and an existing
historian from before that column still works), and one historian per site connection."""

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


# -- one historian per site ------------------------------------------------------------------------

def _settings(monkeypatch, tmp_path, **env):
    from plantops.settings import get_settings

    monkeypatch.setenv("PLANTOPS_HOME", str(tmp_path))
    for name in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_HISTORIAN_READ_URL", "PLANTOPS_HISTORIANS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return get_settings()


def test_each_historian_connection_has_its_own_urls(monkeypatch, tmp_path):
    import json

    import pytest

    from plantops.settings import UnknownHistorian

    # Embedded, nothing configured: the default connection is historian.db, another its own file.
    embedded = _settings(monkeypatch, tmp_path)
    assert embedded.historian() == embedded.historian("plantops_historian") == (
        f"sqlite:///{tmp_path / 'historian.db'}",) * 2
    assert embedded.historian("plantops_historian_coast") == (
        f"sqlite:///{tmp_path / 'historian-plantops_historian_coast.db'}",) * 2
    # A configured tier: each further connection is named in PLANTOPS_HISTORIANS (read_url defaults to url).
    coast = {"url": "postgresql+psycopg2://u@db/historian_coast", "read_url": "trino://u@trino:8080/historian_coast/public"}
    stack = _settings(monkeypatch, tmp_path, PLANTOPS_HISTORIAN_URL="postgresql+psycopg2://u@db/historian",
                      PLANTOPS_HISTORIANS=json.dumps({"plantops_historian_coast": coast,
                                                      "plantops_historian_lab": {"url": "sqlite:///lab.db"}}))
    assert stack.historian() == ("postgresql+psycopg2://u@db/historian",) * 2
    assert stack.historian("plantops_historian_coast") == (coast["url"], coast["read_url"])
    assert stack.historian("plantops_historian_lab") == ("sqlite:///lab.db",) * 2
    # A connection nobody configured is an error naming what is, never a fresh empty historian.
    with pytest.raises(UnknownHistorian, match=r"'plantops_historian_south' is not configured: PLANTOPS_HISTORIANS "
                                               r"names \['plantops_historian_coast', 'plantops_historian_lab'\]"):
        stack.historian("plantops_historian_south")
    with pytest.raises(ValueError, match="PLANTOPS_HISTORIANS: expected"):
        _settings(monkeypatch, tmp_path, PLANTOPS_HISTORIANS='{"plantops_historian_coast": "sqlite:///x.db"}')


def test_two_sites_write_and_read_their_own_historians(monkeypatch, tmp_path):
    """tep_reactor (site north) and wind_fleet (site coast) through their sites' connections: each
    use case's rows land in its own database, and neither reads the other's."""
    from plantops import db
    from plantops.config import get_use_case
    from plantops.sources import historian

    _settings(monkeypatch, tmp_path)
    tep, wind = get_use_case("tep_reactor"), get_use_case("wind_fleet")
    assert (tep.historian_conn, wind.historian_conn) == ("plantops_historian", "plantops_historian_coast")
    day = pd.Timestamp("2026-03-23 06:00", tz="UTC")
    try:
        for use_case, tag in ((tep, "XMEAS_1"), (wind, "Ws_avg")):
            rows = pd.DataFrame({"asset": [use_case.assets[0]], "tag": [tag], "ts": [day], "value": [1.5],
                                 "quality": ["good"]})
            assert historian.write_tag_values(rows, conn_id=use_case.historian_conn) == 1
            historian.record_plant_event(use_case.assets[0], day, "maintenance", "checked", "ops1",
                                         conn_id=use_case.historian_conn)
        for use_case, other, tag in ((tep, wind, "XMEAS_1"), (wind, tep, "Ws_avg")):
            mine = historian.read_window(use_case.assets[0], [tag], day, day + pd.Timedelta(hours=1),
                                         conn_id=use_case.historian_conn)
            assert list(mine["value"]) == [1.5]
            assert historian.known_tags(use_case.assets[0], [tag], conn_id=other.historian_conn) == set()
            assert historian.read_plant_events(use_case.assets[0], day, day + pd.Timedelta(hours=1),
                                               conn_id=other.historian_conn) == []
        assert {p.name for p in tmp_path.glob("historian*.db")} == {"historian.db", "historian-plantops_historian_coast.db"}
    finally:
        db.reset()
