"""plantops: the logic behind the plant MLOps DAGs, importable and testable without a scheduler."""
