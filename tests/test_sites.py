"""Sites: a use case naming ``site:`` inherits what its YAML does not set; what it sets wins, unless
its site cannot allow it (an approver from outside, another site's historian); every error names
the file and the field (docs/sites.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plantops import cli
from plantops import config
from plantops.config import ConfigError, Site, discover, get_use_case, load_site, load_sites, load_use_case

REPO = Path(__file__).resolve().parents[1]

NORTH = {
    "id": "north", "name": "North chemical plant", "timezone": "America/New_York",
    "historian": {"conn_id": "historian_north", "catalog": "historian"},
    "approvers": [{"id": "eng1", "name": "Process engineer"}, {"id": "eng2", "name": "Shift engineer"}],
    "operators": [{"id": "ops1", "name": "Control room"}],
    "notifications": {
        "smtp_conn_id": "smtp_north", "sender": "plantops@north.example",
        "recipients": {"operators": ["control-room@north.example"], "engineers": ["eng@north.example"]},
        "routes": {"promotion": ["mlops", "engineers"]},
    },
}
COAST = {
    "id": "coast", "name": "Coast wind farm", "timezone": "Europe/Paris",
    "historian": {"conn_id": "historian_coast"},
    "approvers": [{"id": "eng9", "name": "Wind engineer"}],
}


def unit(**changes) -> dict:
    """A small use case at site north with a historian and a landing folder, setting nothing the site gives."""
    data = {
        "id": "unit_a", "site": "north", "plant": "Unit A",
        "historian": {"asset": "A1"},
        "landing": {"folder": "unit_a"},
        "tags": [{"name": "T1", "description": "temperature", "min": 0, "max": 100},
                 {"name": "T2", "description": "analyzer", "min": 0, "max": 1, "source": "landing"}],
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A use-cases folder and a sites folder (north, coast) the settings point at."""
    use_cases, sites = tmp_path / "use_cases", tmp_path / "sites"
    write(sites, "north", NORTH)
    write(sites, "coast", COAST)
    use_cases.mkdir()
    monkeypatch.setenv("PLANTOPS_USE_CASES", str(use_cases))
    monkeypatch.setenv("PLANTOPS_SITES", str(sites))
    return use_cases, sites


def load(folders, data: dict) -> config.UseCase:
    return load_use_case(write(folders[0], data["id"], data))


def error(folders, data: dict) -> tuple[Path, str]:
    path = write(folders[0], data["id"], data)
    with pytest.raises(ConfigError) as err:
        load_use_case(path)
    return path, str(err.value)


# -- the shipped sites ----------------------------------------------------------------------------

def test_shipped_sites_load_and_the_shipped_use_cases_inherit_from_them():
    sites = load_sites(REPO / "include" / "sites")
    assert sorted(sites) == ["coast", "north"] and all(isinstance(s, Site) for s in sites.values())
    assert sites["north"].historian.conn_id == "plantops_historian"
    assert sites["coast"].historian.conn_id == "plantops_historian_coast"
    tep = load_use_case(REPO / "include" / "use_cases" / "tep_reactor.yaml")
    wind = load_use_case(REPO / "include" / "use_cases" / "wind_fleet.yaml")
    assert (tep.site, wind.site) == ("north", "coast")
    # Neither file names a connection, approvers or mail routes: each comes from its site.
    for use_case, site in ((tep, sites["north"]), (wind, sites["coast"])):
        data = yaml.safe_load((REPO / "include" / "use_cases" / f"{use_case.id}.yaml").read_text())
        assert not {"approvers", "notifications"} & set(data) and "conn_id" not in data["historian"]
        assert use_case.historian.conn_id == use_case.historian_conn == site.historian.conn_id
        assert use_case.approvers == site.approvers
        assert use_case.notifications.recipients == site.notifications.recipients
    # tep_reactor's landing keeps refusing naive timestamps: naive_timezone: null is set, not inherited.
    assert tep.landing.naive_timezone is None


# -- inheritance ----------------------------------------------------------------------------------

def test_a_use_case_inherits_what_its_yaml_does_not_set(folders):
    uc = load(folders, unit())
    assert uc.site == "north"
    assert uc.historian.conn_id == "historian_north"
    assert uc.landing.naive_timezone == "America/New_York"
    assert uc.landing.zone_of(uc.landing.effective_sources[0]) == "America/New_York"
    assert [(a.id, a.name) for a in uc.approvers] == [("eng1", "Process engineer"), ("eng2", "Shift engineer")]
    n = uc.notifications
    assert (n.smtp_conn_id, n.sender) == ("smtp_north", "plantops@north.example")
    assert n.recipients_of("upset") == ("control-room@north.example",)
    assert n.recipients_of("approval") == ("eng@north.example",)
    assert n.routes["promotion"] == ("mlops", "engineers") and n.routes["failure"] == ("mlops",)


def test_what_the_use_case_sets_wins(folders):
    uc = load(folders, unit(
        historian={"asset": "A1", "conn_id": "historian_north_lab"},  # a second historian: an override
        landing={"folder": "unit_a", "naive_timezone": "UTC"},
        approvers=[{"id": "eng2", "name": "Unit A engineer"}],
        notifications={"sender": "unit-a@north.example",
                       "recipients": {"operators": ["unit-a@north.example"], "mlops": ["mlops@north.example"]},
                       "routes": {"upset": ["operators", "engineers"]}},
    ))
    assert uc.historian.conn_id == "historian_north_lab" and uc.landing.naive_timezone == "UTC"
    assert [(a.id, a.name) for a in uc.approvers] == [("eng2", "Unit A engineer")]
    n = uc.notifications
    assert (n.sender, n.smtp_conn_id) == ("unit-a@north.example", "smtp_north")  # unset: the site's
    # Per audience: operators and mlops are the use case's, engineers still the site's.
    assert n.recipients_of("quarantine") == ("unit-a@north.example",)
    assert n.recipients_of("failure") == ("mlops@north.example",)
    assert n.recipients_of("timeout") == ("eng@north.example",)
    # Per event: upset is the use case's route, promotion the site's.
    assert n.recipients_of("upset") == ("unit-a@north.example", "eng@north.example")
    assert n.recipients_of("promotion") == ("mlops@north.example", "eng@north.example")


def test_set_to_nothing_is_set(folders):
    """Present in the YAML is set, even empty: a null zone still refuses naive timestamps, an empty
    audience is not mailed."""
    uc = load(folders, unit(landing={"folder": "unit_a", "naive_timezone": None},
                            notifications={"recipients": {"engineers": []}}))
    assert uc.landing.naive_timezone is None
    assert uc.notifications.recipients_of("approval") == ()
    assert uc.notifications.recipients_of("upset") == ("control-room@north.example",)


def test_without_a_site_nothing_changes_and_no_site_is_read(folders, monkeypatch):
    write(folders[1], "north", "id: [broken")  # a broken site file does not concern a use case without a site
    data = unit(site=None, approvers=[{"id": "someone", "name": "Outside"}])
    uc = load(folders, data)
    assert uc.site is None and uc.historian.conn_id == "plantops_historian" and uc.landing.naive_timezone is None
    assert uc.notifications == config.Notifications()
    # pv_cells names no site: it loads although the site folder now holds a broken north.yaml.
    assert load_use_case(REPO / "include" / "use_cases" / "pv_cells.yaml").site is None


# -- errors ---------------------------------------------------------------------------------------

def test_unknown_site_lists_the_sites(folders):
    path, text = error(folders, unit(site="south"))
    assert text == (f"{path}: site: unknown site 'south'; expected one of ['coast', 'north'] "
                    f"(files in {folders[1]})")


def test_site_that_is_no_id(folders):
    path, text = error(folders, unit(site=["north"]))
    assert text.startswith(f"{path}: site: expected a site id")


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"timezone": "Europe/Berlln"}, "timezone", "expected an IANA time zone such as 'Europe/Berlin'"),
    ({"historian": {"catalog": "historian"}}, "historian.conn_id", "Field required"),
    ({"approvers": [{"id": "eng1", "name": "A"}, {"id": "eng1", "name": "B"}]}, "approvers",
     "each user id once; ['eng1'] given twice"),
    ({"notifications": {"recipients": {"operators": ["not an address"]}}}, "notifications.recipients.operators.0",
     "expected an e-mail address"),
    ({"shifts": 3}, "shifts", "Extra inputs"),
])
def test_a_broken_site_file_names_its_file_and_field(folders, change, field, expected):
    site_file = write(folders[1], "north", {**NORTH, **change})
    with pytest.raises(ConfigError) as err:
        load_site(site_file)
    assert str(err.value).startswith(f"{site_file}: {field}: ") and expected in str(err.value)
    # The use case that names it says so, with the site file's own message.
    path, text = error(folders, unit())
    assert text.startswith(f"{path}: site: site 'north' does not load: {site_file}: {field}: ")


def test_site_id_must_be_its_file_name(folders):
    site_file = write(folders[1], "north", {**NORTH, "id": "nord"})
    with pytest.raises(ConfigError, match="id: expected the file name 'north', got 'nord'") as err:
        load_site(site_file)
    assert str(err.value).startswith(f"{site_file}: id: ")
    path, text = error(folders, unit())
    assert text == f"{path}: site: site 'north' does not load: {site_file}: id: expected the file name 'north', got 'nord'"


def test_an_approver_from_outside_the_site_is_refused(folders):
    path, text = error(folders, unit(approvers=[{"id": "eng1", "name": "E"}, {"id": "eng9", "name": "W"},
                                                {"id": "ops1", "name": "O"}]))
    assert text.startswith(f"{path}: approvers: ['eng9', 'ops1 (an operator of the site)'] are not approvers "
                           f"of site 'north' (its approvers: ['eng1', 'eng2'])")
    assert str(folders[1] / "north.yaml") in text


def test_another_sites_historian_connection_is_refused(folders):
    path, text = error(folders, unit(historian={"asset": "A1", "conn_id": "historian_coast"}))
    assert text.startswith(f"{path}: historian.conn_id: 'historian_coast' is the historian connection of site "
                           f"'coast', but this use case is at site 'north' (connection 'historian_north')")
    # Without a site, any connection is the use case's own business, as before.
    assert load(folders, unit(site=None, historian={"asset": "A1", "conn_id": "historian_coast"},
                              approvers=[{"id": "x", "name": "X"}])).historian.conn_id == "historian_coast"


def test_a_field_error_after_inheritance_still_names_the_use_case_file(folders):
    path, text = error(folders, unit(landing={"folder": "unit_a", "naive_timezone": "Mars/Olympus"}))
    assert text.startswith(f"{path}: landing.naive_timezone: expected an IANA time zone")


# -- discover and parsing -------------------------------------------------------------------------

def test_discover_reads_each_site_file_once_and_again_when_it_changes(folders, monkeypatch):
    use_cases, sites = folders
    for i in range(5):
        write(use_cases, f"unit_{i}", unit(id=f"unit_{i}", landing={"folder": f"unit_{i}"}))
    write(use_cases, "unit_x", unit(id="unit_x", site="coast", landing={"folder": "unit_x"}))
    write(use_cases, "unit_y", unit(id="unit_y", site="south", landing={"folder": "unit_y"}))
    reads = []
    real = config.load_site
    monkeypatch.setattr(config, "load_site", lambda path: reads.append(Path(path).name) or real(path))

    good, bad = discover(use_cases)
    assert sorted(good) == ["unit_0", "unit_1", "unit_2", "unit_3", "unit_4", "unit_x"] and list(bad) == ["unit_y"]
    assert "unknown site 'south'" in str(bad["unit_y"])
    assert good["unit_x"].historian.conn_id == "historian_coast" and good["unit_3"].site == "north"
    assert sorted(reads) == ["coast.yaml", "north.yaml"]

    reads.clear()
    discover(use_cases)
    assert reads == []  # unchanged files: not read again
    write(sites, "north", {**NORTH, "timezone": "America/Chicago"})
    good, _ = discover(use_cases)
    assert reads == ["north.yaml"] and good["unit_0"].landing.naive_timezone == "America/Chicago"
    # A site broken meanwhile breaks its use cases only.
    write(sites, "coast", {**COAST, "timezone": "Nowhere"})
    good, bad = discover(use_cases)
    assert sorted(bad) == ["unit_x", "unit_y"] and "site 'coast' does not load" in str(bad["unit_x"])
    assert len(good) == 5


def test_the_factory_builds_a_use_case_at_a_site(folders):
    from plantops.orchestration.dagfactory import STAGES, build_all

    write(folders[0], "unit_a", unit())
    assert set(build_all(folders[0])) == {f"unit_a__{stage}" for stage in STAGES}


# -- init-use-case --site -------------------------------------------------------------------------

def _sample(tmp_path: Path) -> Path:
    sample = tmp_path / "export.csv"
    rows = [f"2026-03-24 {h:02d}:{m:02d}:00,{10 + h + m / 60:.3f},{0.5 + m / 1000:.3f}" for h in range(4) for m in (0, 30)]
    sample.write_text("ts,FIC-101.PV,AI_7\n" + "\n".join(rows) + "\n")
    return sample


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines() if line.startswith("{")], out.err


def test_init_use_case_drafts_into_a_site(folders, plantops_home, tmp_path, capsys):
    use_cases, _ = folders
    code, (report,), _ = run_cli(capsys, "init-use-case", "line_4", "--from", str(_sample(tmp_path)), "--site", "north")
    assert code == 0 and report["site"] == "north" and report["naive_timezone"] == "America/New_York"
    draft = yaml.safe_load((use_cases / "line_4.yaml").read_text())
    assert draft["site"] == "north"
    assert not {"approvers", "notifications", "historian"} & set(draft) and "naive_timezone" not in draft["landing"]
    uc = get_use_case("line_4")
    assert [a.id for a in uc.approvers] == ["eng1", "eng2"] and uc.notifications.smtp_conn_id == "smtp_north"

    # --timezone still decides the zone of naive timestamps; the rest stays inherited.
    code, (again,), _ = run_cli(capsys, "init-use-case", "line_4", "--from", str(_sample(tmp_path)), "--site", "north",
                                "--timezone", "UTC", "--force")
    assert code == 0 and again["naive_timezone"] == "UTC" and get_use_case("line_4").site == "north"


def test_init_use_case_at_an_unknown_site_lists_the_sites(folders, plantops_home, tmp_path, capsys):
    code, rows, err = run_cli(capsys, "init-use-case", "line_5", "--from", str(_sample(tmp_path)), "--site", "south")
    assert code == 1 and rows == [] and not (folders[0] / "line_5.yaml").exists()
    assert err.strip() == (f"init-use-case: --site 'south': unknown site; expected one of ['coast', 'north'] "
                           f"(files in {folders[1]})")


def test_sites_dir_follows_its_environment_variable(monkeypatch, tmp_path):
    from plantops.settings import get_settings

    monkeypatch.delenv("PLANTOPS_SITES", raising=False)
    assert get_settings().sites_dir == REPO / "include" / "sites"
    monkeypatch.setenv("PLANTOPS_SITES", str(tmp_path))
    assert get_settings().sites_dir == tmp_path
