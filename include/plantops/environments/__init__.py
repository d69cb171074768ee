"""Running environments: the embedded tier (localenv, up), the native stack (PostgreSQL, Trino, MLflow server) and the Trino lake catalog. What changes between them is configuration, never code."""
