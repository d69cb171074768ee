"""Task libraries preloaded in the process that forks task processes (plantops.orchestration.preload)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

# Runs as `<script> dag-processor`, then pretends to be `airflow scheduler`: Airflow's own Job()
# calls the listener hook of the plugin found through AIRFLOW__CORE__PLUGINS_FOLDER.
CHILD = r"""
import json, os, sys
from airflow.jobs.job import Job

out = {}
Job()
out["dag_processor_preloaded"] = "great_expectations" in sys.modules
sys.argv[1] = "scheduler"
Job()
out["scheduler_preloaded"] = all(m in sys.modules for m in ("great_expectations", "mlflow", "evidently"))
read, write = os.pipe()
if os.fork() == 0:  # a task process, as the LocalExecutor's worker forks it
    os.write(write, json.dumps([m in sys.modules for m in ("great_expectations", "evidently")]).encode())
    import great_expectations as gx
    from evidently.metrics import ValueDrift
    gx.get_context(mode="ephemeral")
    os._exit(0)
os.wait()
out["forked_task_had"] = json.loads(os.read(read, 64))
print(json.dumps(out))
"""


def test_a_local_executor_scheduler_preloads_and_its_forks_pay_no_import(airflow_db):
    proc = subprocess.run([sys.executable, "-c", CHILD, "dag-processor"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(got)
    assert got["dag_processor_preloaded"] is False  # parsing stays light
    assert got["scheduler_preloaded"] is True
    # A fresh process needs ~8 s here for GX alone; the fork finds it (and Evidently) imported.
    assert got["forked_task_had"] == [True, True], got


def test_only_a_local_executor_scheduler_preloads(monkeypatch):
    from plantops.orchestration.preload import forks_tasks_here

    assert forks_tasks_here(["airflow", "scheduler"])
    for other in ("dag-processor", "api-server", "triggerer", "tasks"):
        assert not forks_tasks_here(["airflow", other])
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")  # its workers preload instead
    assert not forks_tasks_here(["airflow", "scheduler"])
