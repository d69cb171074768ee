"""Who may do what on the stack tier: per-site roles for the FAB auth manager, built from the sites.

A site's people see, trigger and answer only their site's DAGs (docs/sites.md). With Airflow's FAB
auth manager that is two kinds of grant:

- global permissions on the DAG *sub-entities* (runs, task instances, logs, approvals) that every
  role below holds, and no global permission on ``DAGs`` itself, so it opens nothing alone;
- DAG-level ``access_control`` on each DAG of a use case with ``site: <id>``: the site's roles get
  ``can_read`` and ``can_edit`` on that DAG (:func:`dag_access_control`, set by the DAG factory),
  which FAB syncs into ``DAG:<dag_id>`` permissions when the dag-processor serializes the DAG.

Roles (:func:`roles`): ``<site>_operator`` (views, triggers, pauses; answers an approval only when
assigned) and ``<site>_engineer`` (the same, and clears or marks task instances); ``mlops`` (the
platform team: every DAG, the same writes, plus reading config, pools, variables and providers);
FAB's own ``Admin`` (everything). No role here may delete a DAG (``can_delete`` on ``DAGs``) or
write an XCom: FAB's default ``User`` and ``Op`` roles may (``can_delete`` on ``DAGs``; ``Op`` also
XCom writes), so plantops never gives them out.

Users (:func:`users`): each site's operators and approvers (their ids are Airflow user names),
``mlops1`` and ``admin``; a person of two sites holds both sites' roles. Passwords are generated
into the home's passwords file, never committed (:mod:`plantops.environments.fabusers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATOR, ENGINEER = "operator", "engineer"
MLOPS_ROLE, ADMIN_ROLE = "mlops", "Admin"
MLOPS_USER, ADMIN_USER = "mlops1", "admin"
# What a site role gets on each DAG of its site (FAB's DAG-level resource is "DAGs").
DAG_ACTIONS = ("can_read", "can_edit")


def site_role(site_id: str, kind: str) -> str:
    """``north_operator``, ``coast_engineer``."""
    return f"{site_id}_{kind}"


def dag_access_control(site_id: str) -> dict[str, dict[str, set[str]]]:
    """A DAG's ``access_control`` for a use case at ``site_id``: its operators and engineers read
    and edit (trigger, pause) this DAG; nobody but Admin may delete it."""
    return {site_role(site_id, kind): {"DAGs": set(DAG_ACTIONS)} for kind in (OPERATOR, ENGINEER)}


# Global permissions (action, resource) by role kind. Resource names are FAB's (checked against
# airflow.providers.fab.www.security.permissions in tests/test_access.py).
_READ = [("can_read", r) for r in (
    "DAG Dependencies", "DAG Code", "DAG Runs", "DAG Versions", "DAG Warnings", "Assets", "Asset Aliases",
    "Backfills", "Cluster Activity", "ImportError", "Jobs", "Task Instances", "Task Logs", "XComs",
    "HITL Detail", "Website", "My Password", "My Profile",
    # The UI lists the plugins' views (Plant ML in the navigation) from GET /api/v2/plugins.
    "Plugins")] + [
    ("can_edit", "My Password"), ("can_edit", "My Profile")] + [("menu_access", r) for r in (
        "Browse", "DAGs", "DAG Dependencies", "DAG Runs", "Assets", "Cluster Activity", "Docs", "Documentation",
        "Jobs", "Task Instances", "HITL Detail")]
_OPERATOR = _READ + [("can_create", "DAG Runs"), ("can_edit", "HITL Detail")]
_ENGINEER = _OPERATOR + [("can_edit", "DAG Runs"), ("can_create", "Task Instances"), ("can_edit", "Task Instances")]
_MLOPS = _ENGINEER + [("can_read", "DAGs"), ("can_edit", "DAGs"), ("can_delete", "DAG Runs"),
                      ("can_delete", "Task Instances"), ("can_create", "Assets")] + [
    ("can_read", r) for r in ("Configurations", "Pools", "Variables", "Providers", "Plugins", "Audit Logs")]
ROLE_KINDS = {OPERATOR: _OPERATOR, ENGINEER: _ENGINEER}


def roles(sites: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Every plantops role with its global permissions: two per site and ``mlops``."""
    out = {site_role(site_id, kind): sorted(set(perms)) for site_id in sorted(sites)
           for kind, perms in ROLE_KINDS.items()}
    out[MLOPS_ROLE] = sorted(set(_MLOPS))
    return out


def users(sites: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """user name -> {"name", "roles"}: each site's operators and approvers, ``mlops1`` and ``admin``."""
    out: dict[str, dict[str, Any]] = {}
    for site_id in sorted(sites):
        site = sites[site_id]
        for kind, people in ((OPERATOR, site.operators), (ENGINEER, site.approvers)):
            for person in people:
                entry = out.setdefault(person.id, {"name": person.name, "roles": []})
                entry["roles"].append(site_role(site_id, kind))
    out[MLOPS_USER] = {"name": "MLOps platform (demo)", "roles": [MLOPS_ROLE]}
    out[ADMIN_USER] = {"name": "Administrator (demo)", "roles": [ADMIN_ROLE]}
    return out
