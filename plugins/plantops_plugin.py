"""plantops Airflow plugin: the Evidently reports and the decision store, inside the Airflow UI.

Mounted by the api-server at ``/plantops``; every route requires a logged-in Airflow user (the
same session cookie or bearer token as the REST API):

- ``/plantops/reports/<use_case>/<monitor run>/drift.html``  the monitor run's drift report
- ``/plantops/decisions/<use_case>``                          the latest decision records (JSON)
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse

from plantops.settings import get_settings

try:  # the auth dependency lives in airflow-core's API server
    from airflow.api_fastapi.core_api.security import get_user
except ImportError:  # pragma: no cover - an api-server always has it
    get_user = None

app = FastAPI(title="plantops", dependencies=[Depends(get_user)] if get_user else [])


@app.get("/reports/{use_case}/{run}/drift.html")
def drift_report(use_case: str, run: str) -> FileResponse:
    root = (get_settings().reports_root).resolve()
    path = (root / use_case / run / "drift.html").resolve()
    if root not in path.parents or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no drift report for {use_case}/{run}")
    return FileResponse(path, media_type="text/html")


@app.get("/decisions/{use_case}")
def latest_decisions(use_case: str, kind: str | None = None, limit: int = 20) -> list[dict]:
    from plantops.stages import decisions

    return decisions.latest(use_case, kind=kind, limit=min(max(limit, 1), 200))


class PlantopsPlugin(AirflowPlugin):
    name = "plantops"
    fastapi_apps = [{"app": app, "url_prefix": "/plantops", "name": "plantops reports and decisions"}]
