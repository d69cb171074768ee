"""Where plantops keeps its state, from the environment with embedded defaults.

Every location is read from an environment variable so that the three tiers (embedded, native
stack, docker-compose/Kubernetes) differ in configuration only, never in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    home: Path
    use_cases_dir: Path
    # The plants (include/sites/<site>.yaml) the use cases name: historian, time zone, people, mail.
    sites_dir: Path
    historian_url: str
    historian_read_url: str
    state_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str

    @property
    def landing_root(self) -> Path:
        return self.home / "landing"

    @property
    def quarantine_root(self) -> Path:
        return self.home / "quarantine"

    @property
    def archive_root(self) -> Path:
        return self.home / "archive"

    @property
    def bronze_root(self) -> Path:
        return self.home / "bronze"

    @property
    def features_root(self) -> Path:
        return self.home / "features"

    @property
    def reports_root(self) -> Path:
        return self.home / "reports"


def get_settings() -> Settings:
    """Read the settings now (not at import), so tests and tiers can set the environment first."""
    home = Path(os.environ.get("PLANTOPS_HOME", REPO_ROOT / "data")).resolve()
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    historian = os.environ.get("PLANTOPS_HISTORIAN_URL", f"sqlite:///{home / 'historian.db'}")
    return Settings(
        home=home,
        use_cases_dir=Path(os.environ.get("PLANTOPS_USE_CASES", REPO_ROOT / "include" / "use_cases")),
        sites_dir=Path(os.environ.get("PLANTOPS_SITES", REPO_ROOT / "include" / "sites")),
        historian_url=historian,
        # Reads may take another route than writes: on the stack tier they go through Trino.
        historian_read_url=os.environ.get("PLANTOPS_HISTORIAN_READ_URL", historian),
        state_url=os.environ.get("PLANTOPS_STATE_URL", f"sqlite:///{home / 'plantops.db'}"),
        mlflow_tracking_uri=tracking,
        mlflow_artifact_root=os.environ.get(
            "PLANTOPS_MLFLOW_ARTIFACTS", "" if tracking.startswith("http") else (home / "mlartifacts").as_uri()),
    )
