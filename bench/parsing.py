"""Child processes of the DAG-parsing figure: each mode runs in a fresh interpreter.

    python -m bench.parsing bare                 # import airflow.sdk only
    python -m bench.parsing factory              # + parse dags/plantops_dags.py (PLANTOPS_USE_CASES)
    python -m bench.parsing floor SHAPE.json     # + the same DAG and task counts as EmptyOperators

Each prints one JSON line: in-process timings, DAG and task counts, and which heavy modules the
process imported. The parent measures the whole process's wall time around it.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAGS_FILE = REPO / "dags" / "plantops_dags.py"
# The libraries a DAG file must not import at parse time (the DAG-integrity test's list).
HEAVY = ("pandas", "pyspark", "mlflow", "great_expectations", "evidently", "sklearn", "shap")


def heavy_modules() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))


def _shape(dags: list) -> list[int]:
    return [len(dag.tasks) for dag in dags]


def main(argv: list[str]) -> int:
    mode = argv[0]
    began = time.perf_counter()
    import airflow.sdk  # noqa: F401

    imported = time.perf_counter()
    report: dict = {"mode": mode, "import_sdk_s": imported - began}
    if mode == "factory":
        from airflow.sdk import DAG

        namespace = runpy.run_path(str(DAGS_FILE))
        dags = [v for v in namespace.values() if isinstance(v, DAG)]
        report["shape"] = _shape(dags)
        report["config_errors"] = [d.dag_id for d in dags if d.dag_id.endswith("__config_error")]
    elif mode == "floor":
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG

        shape = json.loads(Path(argv[1]).read_text())
        dags = []
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for i, n_tasks in enumerate(shape):
            with DAG(dag_id=f"floor_{i:04d}", schedule=None, start_date=start, catchup=False) as dag:
                for j in range(n_tasks):
                    EmptyOperator(task_id=f"task_{j:02d}")
            dags.append(dag)
        report["shape"] = _shape(dags)
    elif mode != "bare":
        raise SystemExit(f"unknown mode {mode!r}: bare | factory | floor SHAPE.json")
    report["build_s"] = time.perf_counter() - imported
    report["dags"] = len(report.get("shape", []))
    report["tasks"] = sum(report.get("shape", []))
    report["heavy_modules"] = heavy_modules()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
