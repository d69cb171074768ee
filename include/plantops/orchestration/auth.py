"""plantops' auth manager: Airflow's SimpleAuthManager, with two writes kept for admins.

SimpleAuthManager has four fixed roles (viewer < user < op < admin) and one rule for every DAG
entity: reading needs ``viewer``, any write needs ``user``. So the smallest role that may trigger a
run (``POST /dags/{id}/dagRuns``) may also delete the DAG (``DELETE /dags/{id}``) and create, edit
or delete its XComs; ``op`` and ``admin`` only add connections, pools, variables and config. It
cannot give an operator "view and trigger, but not delete a DAG or edit an XCom".

This subclass keeps every SimpleAuthManager rule and tightens two: deleting a DAG and writing an
XCom need ``admin``. The demo's users are then (localenv.USERS, the stack, docker-compose):

- ``ops1:user``: views everything, triggers, pauses and clears runs; cannot delete a DAG or write
  an XCom; cannot answer an approval (not an assigned user: HITL answers are checked against the
  task's ``assigned_users`` on top of the role).
- ``eng1:user``: the same, and answers the approvals it is assigned to in the use case's YAML.

Approvals need a role that may write (``user``): a ``viewer`` gets 403 even when assigned.
Airflow's UI does not ask the auth manager which buttons to show: Delete DAG and the XCom editor
stay visible and the API answers 403 on use.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager, SimpleAuthManagerRole

log = logging.getLogger(__name__)

# Configured by its import path (AIRFLOW__CORE__AUTH_MANAGER) in every tier.
IMPORT_PATH = "plantops.orchestration.auth.PlantopsAuthManager"


def admin_only(method: str, access_entity: DagAccessEntity | None) -> bool:
    """The DAG writes that plantops keeps for admins: deleting the DAG itself, writing an XCom."""
    if method == "GET":
        return False
    return (access_entity is None and method == "DELETE") or access_entity == DagAccessEntity.XCOM


class PlantopsAuthManager(SimpleAuthManager):
    """SimpleAuthManager where deleting a DAG and writing an XCom need the ``admin`` role."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: DagAccessEntity | None = None,
                          details: Any = None) -> bool:
        if admin_only(method, access_entity):
            return self._is_authorized(method=method, allow_role=SimpleAuthManagerRole.ADMIN, user=user,
                                       team_name=details.team_name if details else None)
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
