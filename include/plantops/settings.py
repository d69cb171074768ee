"""Where plantops keeps its state, from the environment with embedded defaults.

Every location is read from an environment variable so that the three tiers (embedded, native
stack, docker-compose/Kubernetes) differ in configuration only, never in code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HISTORIAN = "plantops_historian"  # the historian connection id a use case reads unless it names another


class UnknownHistorian(LookupError):
    """A use case names a historian connection the tier does not configure."""


def _historians(raw: str) -> dict[str, tuple[str, str]]:
    try:
        entries = json.loads(raw) if raw.strip() else {}
        if not isinstance(entries, dict):
            raise ValueError(f"expected a JSON object, got {type(entries).__name__}")
        return {str(conn): (str(e["url"]), str(e.get("read_url") or e["url"])) for conn, e in entries.items()}
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"PLANTOPS_HISTORIANS: expected {{conn_id: {{\"url\": ..., \"read_url\": ...}}}}: "
                         f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Settings:
    home: Path
    use_cases_dir: Path
    # The plants (include/sites/<site>.yaml) the use cases name: historian, time zone, people, mail.
    sites_dir: Path
    # The default historian connection's (``plantops_historian``) write and read URLs.
    historian_url: str
    historian_read_url: str
    state_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    # Further historian connections (one per site historian): conn_id -> (write URL, read URL).
    historians: dict[str, tuple[str, str]] = field(default_factory=dict, hash=False)
    # True when the default historian's URL comes from the environment (a configured tier): then a
    # connection nobody configured is an error, not a fresh embedded file.
    historian_configured: bool = False

    def historian(self, conn_id: str | None = None) -> tuple[str, str]:
        """The (write, read) URLs of the historian behind an Airflow-style connection id.

        ``plantops_historian`` (or None) is ``PLANTOPS_HISTORIAN_URL`` / ``_READ_URL``; any other id
        must be in ``PLANTOPS_HISTORIANS`` (a JSON mapping ``{conn_id: {"url": ..., "read_url": ...}}``,
        ``read_url`` defaulting to ``url``). The embedded tier, where nothing is configured, keeps each
        connection in its own SQLite file beside ``historian.db`` (docs/sites.md)."""
        if conn_id is None or conn_id == DEFAULT_HISTORIAN:
            return self.historian_url, self.historian_read_url
        if conn_id in self.historians:
            return self.historians[conn_id]
        if self.historian_configured or self.historians:
            raise UnknownHistorian(
                f"historian connection {conn_id!r} is not configured: PLANTOPS_HISTORIANS names "
                f"{sorted(self.historians) or 'none'} (besides {DEFAULT_HISTORIAN}); see docs/sites.md")
        url = f"sqlite:///{self.home / f'historian-{conn_id}.db'}"
        return url, url

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
        historians=_historians(os.environ.get("PLANTOPS_HISTORIANS", "")),
        historian_configured="PLANTOPS_HISTORIAN_URL" in os.environ,
    )
