#!/bin/bash
# docker-compose tier: PostgreSQL runs this once, on the first start of an empty data volume
# (/docker-entrypoint-initdb.d/). One server, one database per concern, as on the native stack:
# airflow (metadata), historian (tags, predictions, plant events), historian_coast (site coast's
# historian, include/sites/coast.yaml), plantops (decisions, landing ledger) and mlflow (tracking
# and registry). Idempotent, so a re-run is harmless.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
SELECT format('CREATE DATABASE %I', name)
FROM unnest(ARRAY['airflow', 'historian', 'historian_coast', 'plantops', 'mlflow']) AS name
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = name)
\gexec
SQL
