"""Shared by the inspection tests: image-feature partitions written without Spark."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def write_image_features(use_case_id: str, size: int, days: Iterable[str] | None = None) -> int:
    """The feature job's output (``features/<uc>/images/day=D/``) for ``days`` (default: every bronze
    day), from the bronze rows and images with the numpy reference the Spark job is tested against
    (test_image_features.py); a day written again is replaced. Returns the rows written."""
    from plantops.image_features import downsample, image_stats
    from plantops.settings import get_settings
    from plantops.modalities.images.ingest import judge_image

    settings = get_settings()
    bronze = settings.bronze_root / use_case_id
    folders = (sorted((bronze / "inspections").glob("day=*")) if days is None
               else [bronze / "inspections" / f"day={day}" for day in days])
    written = 0
    for folder in folders:
        rows = pd.read_parquet(folder)
        out = []
        for r in rows.itertuples(index=False):
            image = judge_image((bronze / r.image).read_bytes()).pixels
            out.append({"run_id": r.run_id, "cell_id": r.cell_id, "module_id": r.module_id,
                        "module_type": r.module_type, "line": r.line, "camera_id": r.camera_id,
                        "captured_at": r.captured_at, "sha256": r.sha256, **image_stats(image), "size": size,
                        "pixels": downsample(image, size).ravel()})
        target = settings.features_root / use_case_id / "images" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(out).sort_values("captured_at").to_parquet(target / "part-00000.parquet", index=False)
        written += len(out)
    return written


@contextmanager
def private_line(root: Path, use_case: dict) -> Iterator[Path]:
    """A private PLANTOPS_HOME (``root/home``) and use-case folder holding ``use_case`` for a module's
    tests, the stores' URLs unset so every store lives in that home; yields the home."""
    import pytest
    import yaml

    from plantops import db

    (root / "use_cases").mkdir()
    (root / "use_cases" / f"{use_case['id']}.yaml").write_text(yaml.safe_dump(use_case))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLANTOPS_HOME", str(root / "home"))
        mp.setenv("PLANTOPS_USE_CASES", str(root / "use_cases"))
        for var in ("PLANTOPS_HISTORIAN_URL", "PLANTOPS_HISTORIAN_READ_URL", "PLANTOPS_STATE_URL",
                    "MLFLOW_TRACKING_URI", "PLANTOPS_MLFLOW_ARTIFACTS"):
            mp.delenv(var, raising=False)
        db.reset()
        try:
            yield root / "home"
        finally:
            db.reset()
