"""The stack tier's roles and demo users in FAB's tables, from the sites config.

    python -m plantops.environments.fabusers      # with the Airflow environment of the tier

Run after ``airflow db migrate`` and before the dag-processor starts (it syncs each DAG's
``access_control``, which names the site roles: a missing role fails the sync).
:class:`plantops.environments.stack.AirflowServices` does that when the FAB auth manager is
configured. Idempotent: FAB's default roles are synced, each plantops role gets exactly its global
permissions (:func:`plantops.orchestration.access.roles`; the ``DAG:<id>`` permissions the
dag-processor granted stay), and each demo user (:func:`plantops.orchestration.access.users`) is
created or given its roles and the password from the home's passwords file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# DAG-level resources ("DAG:<id>", "DAG Run:<id>") belong to the DAGs' access_control, not to a role's global set.
_DAG_LEVEL_PREFIXES = ("DAG:", "DAG Run:")


def passwords(path: Path, names: list[str]) -> dict[str, str]:
    """The passwords file (mode 600) with a generated password for every name that has none."""
    known = json.loads(path.read_text()) if path.exists() else {}
    missing = [n for n in names if n not in known]
    if missing or not path.exists():
        known.update({n: secrets.token_urlsafe(12) for n in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
        path.chmod(0o600)
    return known


def provision(password_file: Path) -> dict[str, list[str]]:
    """Sync FAB's default roles, the plantops roles and the demo users; returns user -> roles."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    from plantops.config import Site, load_sites
    from plantops.orchestration import access

    sites = {k: s for k, s in load_sites().items() if isinstance(s, Site)}
    wanted_roles, wanted_users = access.roles(sites), access.users(sites)
    secret = passwords(password_file, sorted(wanted_users))
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # Admin, Viewer, User, Op, Public and every global resource
        for name, perms in wanted_roles.items():
            role = sm.find_role(name) or sm.add_role(name)
            keep = [p for p in role.permissions if p.resource.name.startswith(_DAG_LEVEL_PREFIXES)]
            role.permissions = keep + [sm.create_permission(action, resource) for action, resource in perms]
            sm.session.merge(role)
            sm.session.commit()
        for username, spec in wanted_users.items():
            roles = [sm.find_role(r) for r in spec["roles"]]
            user = sm.find_user(username=username)
            if user is None:
                sm.add_user(username, spec["name"], "", f"{username}@plantops.example", roles,
                            password=secret[username])
            else:
                user.roles = roles
                sm.update_user(user)
                sm.reset_password(user.id, secret[username])
    return {u: spec["roles"] for u, spec in wanted_users.items()}


if __name__ == "__main__":
    from plantops.environments import localenv

    logging.basicConfig(level=logging.WARNING)
    done = provision(localenv.passwords_file(Path(os.environ["PLANTOPS_HOME"])))
    print(json.dumps(done, sort_keys=True))
    sys.exit(0)
