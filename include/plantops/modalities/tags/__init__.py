"""Tags: historian time series and landed tabular tag files (wide or long), bucketed into feature
rows by ``spark_jobs/build_features.py`` with the use case's lookback; the kinds alarm per row.

The work is in the modules beside this one: :mod:`.ingest` (historian window and landed files),
:mod:`.features` (lookback, feature rows, GX gate), :mod:`.training` (rows, labels, unchallenged
upsets), :mod:`.scoring` (predictions written back), :mod:`.monitoring` (evidence, messages),
:mod:`.view` (the newest scored day). Landing and the historian pull are in
:mod:`plantops.stages.ingest`, the GX suites in :mod:`plantops.stages.validation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import Modality, TrainingRows, Words
from plantops.settings import get_settings

if TYPE_CHECKING:
    from plantops.config import UseCase
    from plantops.modalities.page import Page


def feature_job_args(use_case: UseCase) -> list[str]:
    """``spark_jobs/build_features.py``'s arguments but the days: where bronze is read and features
    written, the tags and the feature settings (tests and the bench add ``--ranges`` or ``--start``)."""
    settings = get_settings()
    return [
        "--input", str(settings.bronze_root / use_case.id),
        "--output", str(settings.features_root / use_case.id),
        "--tags", ",".join(use_case.tag_names),
        "--bucket-seconds", str(use_case.features.bucket_seconds),
        "--rolling-buckets", str(use_case.features.rolling_buckets),
        "--lookback-days", str(use_case.features.lookback_days),
        "--max-gap-seconds", str(use_case.features.max_gap_seconds),
    ]


class Tags(Modality):
    name = "tags"
    summary = "historian and landed tag time series, one feature row per asset and bucket"
    spark_job = "build_features.py"
    kind_outputs = frozenset({"detector", "regression"})
    described = "of tags"
    words = Words(drifted="tags", column="tag", output="alarm", outputs="alarms", scope="this window as normal")
    headline = ("far", "detection_rate", "detection_delay", "rmse", "mae")

    def landing(self) -> tuple[str, list[str]] | None:
        spec = self.use_case.landing
        return None if spec is None else (spec.folder, list(spec.patterns))

    def ingest(self, run_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        from plantops.modalities.tags import ingest

        return ingest.ingest(self.use_case, run_id, start, end)

    def bronze_days(self) -> list[str]:
        from plantops.modalities.tags.features import bronze_days

        return bronze_days(self.use_case.id)

    def spark_args(self, ranges: str) -> list[str]:
        return [*feature_job_args(self.use_case), "--ranges", ranges]

    def built_feature_days(self) -> list[str]:
        from plantops.modalities.tags.features import built_feature_days

        return built_feature_days(self.use_case.id)

    def feature_plan(self, days: Iterable[str]) -> dict[str, Any]:
        from plantops.modalities.tags.features import feature_plan

        return feature_plan(self.use_case, days)

    def check_features(self, spans: list[tuple[str, str]], asset: str | None) -> dict[str, Any]:
        from plantops.modalities.tags.features import check_features

        return check_features(self.use_case, spans, asset)

    def training_rows(self, asset: str | None) -> TrainingRows:
        from plantops.modalities.tags.training import training_rows

        return training_rows(self.use_case, asset)

    def train(self, rows: TrainingRows, reference_start: datetime | None, run_tags: dict[str, str],
              asset: str | None) -> dict[str, Any]:
        from plantops.modalities.tags.training import train

        return train(self.use_case, rows, reference_start, run_tags, asset)

    def score(self, kind: Any, model: Any, version: str, day: str, asset: str, name: str) -> dict[str, Any]:
        from plantops.modalities.tags.scoring import score

        return score(self.use_case, kind, model, version, day, asset, name)

    def evidence(self, asset: str, name: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
        from plantops.modalities.tags.monitoring import evidence

        return evidence(self.use_case, asset, run_id, day, start, end)

    def approval_lines(self, record: dict[str, Any]) -> list[str]:
        from plantops.modalities.tags.monitoring import approval_lines

        return approval_lines(record)

    def labelled_line(self, performance: dict[str, Any] | None) -> str:
        from plantops.modalities.tags.monitoring import labelled_line

        return labelled_line(performance)

    def alert(self, assessment: dict[str, Any], subject: str) -> dict[str, str]:
        from plantops.modalities.tags.monitoring import alert

        return alert(self.use_case, assessment, subject)

    def view(self, asset: str, champion_version: str | None) -> dict[str, Any]:
        from plantops.modalities.tags.view import latest_scores

        return {"scores": latest_scores(asset, conn_id=self.use_case.historian_conn), "inspection": None}

    @classmethod
    def page(cls) -> Page:
        from plantops.modalities.tags.view import TagsPage

        return TagsPage()
