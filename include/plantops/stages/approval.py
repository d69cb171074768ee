"""Answering approval (HITL) tasks through Airflow's REST API, as an assigned process engineer would.

Used by the demo and the end-to-end tests; the same calls work from any script or portal that a
plant wants to put in front of its engineers. Every request has a timeout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

TIMEOUT = 10


class ApprovalError(RuntimeError):
    """The API refused the answer (wrong user, wrong option, task not waiting)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AirflowApi:
    base_url: str
    username: str
    password: str

    def token(self) -> str:
        resp = requests.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password},
                             timeout=TIMEOUT)
        if resp.status_code not in (200, 201):
            raise ApprovalError(resp.status_code, f"login as {self.username} failed: {resp.status_code} {resp.text[:200]}")
        return resp.json()["access_token"]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.base_url}/api/v2{path}", headers=self._headers(), timeout=TIMEOUT,
                                **kwargs)

    def pending_approvals(self, dag_id: str) -> list[dict]:
        resp = self.request("GET", f"/dags/{dag_id}/dagRuns/~/hitlDetails", params={"response_received": "false"})
        resp.raise_for_status()
        return list(resp.json().get("hitl_details", []))

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str, params: dict | None = None,
               map_index: int = -1) -> dict:
        """Answer a waiting approval (``map_index``: which asset's, for a task mapped per asset)."""
        resp = self.request(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": [option], "params_input": params or {}},
        )
        if resp.status_code != 200:
            raise ApprovalError(resp.status_code, f"{self.username} could not answer {dag_id}/{run_id}/{task_id}: "
                                f"{resp.status_code} {resp.text[:300]}")
        return resp.json()

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=TIMEOUT).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow API at {self.base_url} not healthy after {timeout:.0f}s")


def wait_for_pending(api: AirflowApi, dag_id: str, timeout: float = 300, poll: float = 2) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = api.pending_approvals(dag_id)
        if pending:
            return pending[0]
        time.sleep(poll)
    raise TimeoutError(f"no approval waiting in {dag_id} after {timeout:.0f}s")
