"""plantops' production auth manager: Airflow's FAB auth manager, with approvals answered by user name.

Roles and DAG-level access per site are data (:mod:`plantops.orchestration.access`); this class
changes one check. Airflow asks ``is_authorized_hitl_task(assigned_users=..., user=...)`` with the
ids of an approval's ``assigned_users``, which plantops takes from the site's approvers: Airflow
user *names* (``eng1``), the same on every tier. FAB's ``User.get_id()`` is the numeric primary key
of its ``ab_user`` row, so the base check (``user.get_id() in assigned_users``) would refuse every
approver. Here a user may answer when their user name is assigned (or, as in the base class, their id).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

IMPORT_PATH = "plantops.orchestration.fab_auth.PlantopsFabAuthManager"


class PlantopsFabAuthManager(FabAuthManager):
    """FabAuthManager where an approval's assigned users are Airflow user names."""

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        return user.get_name() in assigned_users or super().is_authorized_hitl_task(
            assigned_users=assigned_users, user=user)
