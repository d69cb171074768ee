"""plantops Airflow DAGs: one set per use case in include/use_cases/*.yaml (see plantops.orchestration.dagfactory).

This file only wires: the factory builds ingest, features, train, score, monitor and feedback DAGs from each
YAML, and a broken YAML yields a visible `<id>__config_error` DAG instead of hiding the others.
"""

from __future__ import annotations

from plantops.orchestration.dagfactory import build_all

globals().update(build_all())
