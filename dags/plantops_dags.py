"""plantops Airflow DAGs: one set per use case in include/use_cases/*.yaml (see plantops.orchestration.dagfactory).

This file only wires: the factory builds ingest, features, train, score, monitor and feedback DAGs from each
YAML, and a broken YAML yields a visible `<id>__config_error` DAG instead of hiding the others.
"""

from __future__ import annotations

from airflow.sdk import get_parsing_context

from plantops.orchestration.dagfactory import build_all

# A worker parsing this file to run one task sets the context's dag_id: only that use case is built.
globals().update(build_all(dag_id=get_parsing_context().dag_id))
