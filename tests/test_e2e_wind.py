"""End to end for a fleet: ``wind_fleet`` on the real La Haute Borne SCADA (four turbines), the real
DAGs with dag.test() on the run's metadata DB, as ``make demo`` runs it (:func:`plantops.demo.wind_fleet`).

One monitor run per day judges every turbine (mapped per asset): a normal day takes no action on
any; a day on which one turbine loses a fifth of its power is an upset of that turbine only (the
site's operators are mailed, nothing is retrained: the model is right); a day on which another
turbine loses power after a recorded pitch-system service asks that turbine's engineer, while the
other three carry on, and the engineer's refusal queues no training.
"""

from __future__ import annotations

import pytest

from plantops.config import get_use_case
from plantops.demo import WIND, Demo, wind_fleet
from plantops.sources import scada_replay
from plantops.stages import decisions, registry

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(airflow_db):
    runner = Demo(airflow_db, airflow_db / "e2e-wind.log")
    try:
        runner.start()
        yield runner, wind_fleet(runner)
    finally:
        runner.stop()


def _monitor(asset: str) -> list[dict]:
    return [r for r in reversed(decisions.latest(WIND, kind="monitor", limit=50, asset=asset))]


def test_each_turbine_has_its_own_model_and_champion_beating_the_binned_power_curve(fleet):
    import mlflow

    use_case = get_use_case(WIND)
    for asset in use_case.assets:
        name = use_case.model_name(asset)
        assert name == f"wind_fleet.{asset}"
        version, run_id = registry.champion(name)
        metrics = mlflow.get_run(run_id).data.metrics
        # Held-out RMSE of the power against the IEC binned power curve fitted on the same rows.
        assert metrics["rmse"] < metrics["binned_curve_rmse"], (asset, metrics)
        assert metrics["far"] <= 0.05, (asset, metrics)


def test_a_normal_day_takes_no_action_on_any_turbine(fleet):
    day = str(scada_replay.LIVE["normal"].day)
    for asset in get_use_case(WIND).assets:
        (record,) = [r for r in _monitor(asset) if r["payload"]["day"] == day]
        assert record["branch"] == "ok", (asset, record["reason"])
        # No labels arrive for this fleet: performance is not applicable, and the record says so.
        assert record["payload"]["performance"] is None


def test_a_turbine_losing_power_is_an_upset_of_that_turbine_alone(fleet):
    from plantops.environments import mailsink

    runner, summary = fleet
    day, (turbine, _) = str(scada_replay.LIVE["underperformance"].day), scada_replay.LIVE["underperformance"].loss
    for asset in get_use_case(WIND).assets:
        (record,) = [r for r in _monitor(asset) if r["payload"]["day"] == day]
        assert record["branch"] == ("upset" if asset == turbine else "ok"), (asset, record["reason"])
    assert not [r for r in summary["triggered_runs"] if r.startswith("retrain__")]
    assert len(decisions.latest(WIND, kind="train", limit=50, asset=turbine)) == 1  # the first model only
    assert all(entry["champion_version"] == "1" for entry in summary["assets"].values())
    upsets = [m for m in mailsink.messages(runner.mail_folder)
              if m["X-Plantops-Use-Case"] == WIND and m["X-Plantops-Event"] == "upset"]
    # This day and the next (its loss goes on): one mail each, to the site's operators, this turbine only.
    assert [m["Subject"].split(": upset")[0] for m in upsets] == [
        f"[plantops {WIND}] {WIND} / {turbine}, {d}" for d in (day, str(scada_replay.LIVE["maintenance"].day))]
    assert {m["X-Envelope-To"] for m in upsets} == {"wind-control@haute-borne.example"}


def test_a_service_on_one_turbine_asks_its_engineer_only(fleet):
    runner, summary = fleet
    live = scada_replay.LIVE["maintenance"]
    turbine, day = live.event[0], str(live.day)
    branches = {asset: [r for r in _monitor(asset) if r["payload"]["day"] == day][0]["branch"]
                for asset in get_use_case(WIND).assets}
    assert branches[turbine] == "approval", branches
    assert all(b != "approval" for a, b in branches.items() if a != turbine), branches
    assert turbine in summary["approval"]["subject"] and day in summary["approval"]["subject"]
    (approval,) = decisions.latest(WIND, kind="approval", asset=turbine)
    assert approval["asset"] == turbine and approval["branch"] == "refused"
    assert approval["payload"]["responded_by"]["id"] == "eng2" and "encoder" in approval["reason"]
    assert not [r for r in summary["triggered_runs"] if r.startswith(("approved__", "reference__"))]


def test_scada_quality_facts_reach_the_historian_and_every_alarm_is_explained(fleet):
    import json

    import sqlalchemy as sa

    from plantops.sources import historian

    wind = get_use_case(WIND)
    with historian.engine(conn_id=wind.historian_conn).connect() as conn:  # site coast's historian
        counts = dict(conn.execute(sa.select(historian.tag_values.c.quality, sa.func.count())
                                   .where(historian.tag_values.c.asset.in_(wind.assets))
                                   .group_by(historian.tag_values.c.quality)).all())
    assert counts["good"] > 0.95 * sum(counts.values())
    assert set(counts) - {"good"}, counts  # missing / stuck / curtailed values are kept, flagged
    live = scada_replay.LIVE["underperformance"]
    predictions = historian.read_predictions(live.loss[0], live.start, live.start + __import__("datetime").timedelta(days=1),
                                             conn_id=wind.historian_conn)
    alarms = predictions[predictions["alarm"] == 1]
    assert len(alarms) > 0.2 * len(predictions)
    assert predictions["expected"].notna().all() and predictions["residual"].notna().any()
    # Four turbines each have a v1: the registered model tells whose it is.
    assert set(predictions["model_name"]) == {get_use_case(WIND).model_name(live.loss[0])}
    leaders = [json.loads(t)[0]["tag"] for t in alarms["top_tags"]]
    assert leaders.count("P_avg") > 0.9 * len(leaders)  # the power residual leads the explanation
