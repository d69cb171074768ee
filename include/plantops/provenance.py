"""What a registered artifact is tagged with: the code's git commit."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache

from plantops.settings import REPO_ROOT


@lru_cache(maxsize=1)
def git_commit() -> str:
    if os.environ.get("PLANTOPS_GIT_COMMIT"):
        return os.environ["PLANTOPS_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
