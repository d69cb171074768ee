"""Per-site roles for the stack's FAB auth manager (plantops.orchestration.access), without a server
(tests/test_site_access.py runs them on the real api-server)."""

from __future__ import annotations

from plantops.config import Site, load_sites
from plantops.orchestration import access


def shipped_sites() -> dict[str, Site]:
    return {k: s for k, s in load_sites().items() if isinstance(s, Site)}


def test_roles_use_only_fab_resources_and_never_delete_dags_or_write_xcoms():
    from airflow.providers.fab.www.security import permissions

    resources = {v for k, v in vars(permissions).items() if k.startswith("RESOURCE_") and isinstance(v, str)}
    actions = {v for k, v in vars(permissions).items() if k.startswith("ACTION_")}
    roles = access.roles(shipped_sites())
    assert sorted(roles) == ["coast_engineer", "coast_operator", "mlops", "north_engineer", "north_operator"]
    for name, perms in roles.items():
        assert {r for _, r in perms} <= resources and {a for a, _ in perms} <= actions, name
        assert ("can_delete", "DAGs") not in perms, name
        assert not {("can_create", "XComs"), ("can_edit", "XComs"), ("can_delete", "XComs")} & set(perms), name
    # Only mlops reads every DAG; a site role reaches DAGs through their access_control alone.
    assert [n for n, perms in roles.items() if ("can_read", "DAGs") in perms] == ["mlops"]
    assert ("can_edit", "HITL Detail") in roles["north_operator"]
    assert ("can_edit", "Task Instances") in roles["north_engineer"]
    assert ("can_edit", "Task Instances") not in roles["north_operator"]


def test_dag_access_control_and_users_follow_the_sites():
    assert access.dag_access_control("coast") == {"coast_operator": {"DAGs": {"can_read", "can_edit"}},
                                                  "coast_engineer": {"DAGs": {"can_read", "can_edit"}}}
    users = access.users(shipped_sites())
    assert {u: spec["roles"] for u, spec in users.items()} == {
        "ops1": ["north_operator"], "eng1": ["north_engineer"], "ops2": ["coast_operator"],
        "eng2": ["coast_engineer"], "mlops1": ["mlops"], "admin": ["Admin"]}


def test_passwords_are_generated_once_into_the_homes_file(tmp_path):
    from plantops.environments import fabusers

    path = tmp_path / "airflow" / "passwords.json"
    first = fabusers.passwords(path, ["ops1", "eng2"])
    again = fabusers.passwords(path, ["ops1", "eng2", "admin"])
    assert again["ops1"] == first["ops1"] and len(again["admin"]) >= 12 and oct(path.stat().st_mode)[-3:] == "600"
