"""`make up`: Airflow on the embedded state (scheduler, dag-processor, triggerer, api-server with the UI).

Uses the same PLANTOPS_HOME as `make demo`, so the demo's runs, decisions and approvals are there
to look at. Prints the URL and the demo users with their generated passwords, then runs
`airflow standalone` in the foreground (Ctrl-C stops everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from plantops import localenv


def main() -> int:
    env = localenv.apply()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    print(f"Airflow UI: {env['AIRFLOW__API__BASE_URL']}")
    print(f"  operator          ops1 / {passwords['ops1']}  (views and triggers runs)")
    print(f"  process engineer  eng1 / {passwords['eng1']}  (assigned to approvals: Browse > Required Actions)")
    print(f"  state: {env['PLANTOPS_HOME']}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "airflow", "standalone"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
