"""Images: visual inspection runs (a manifest and its cell images) and the inspectors' late labels,
turned into one feature row per image by ``spark_jobs/build_image_features.py`` (no lookback); the
classifier kinds give a verdict per cell.

The work is in the modules beside this one: :mod:`.ingest` (runs and labels landed, images judged
one by one), :mod:`.validation` (the GX suites), :mod:`.features` (feature rows, their gate),
:mod:`.training` (labelled cells, the held-out split), :mod:`.scoring` (verdicts, heat maps,
confusions), :mod:`.monitoring` (evidence, messages), :mod:`.view` (the line's latest day).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from plantops.modalities.base import Modality, NoFeatures, TrainingRows, Words

if TYPE_CHECKING:
    from plantops.modalities.page import Page

# What completes a delivery in the line's landing folder: an inspection run's manifest (written
# after its images) and an inspectors' labels file.
LANDED = ("*.manifest.csv", "*.labels.csv")


class Images(Modality):
    name = "images"
    summary = "visual inspection runs: cell images with a manifest, inspectors' labels a day late"
    spark_job = "build_image_features.py"
    kind_outputs = frozenset({"classifier"})
    described = "with an inspection section (images)"
    words = Words(drifted="image statistics and model outputs", column="column", output="reject",
                  outputs="rejects", scope="every labelled cell, this window's included")
    headline = ("accuracy", "balanced_accuracy", "defect_recall", "false_reject_rate")

    def landing(self) -> tuple[str, list[str]] | None:
        return self.use_case.inspection.folder, list(LANDED)

    def ingest(self, run_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        """Every completely landed inspection run (images judged one by one, the good ones to
        bronze) and every inspectors' labels file; rejected images of a run are in its result and
        in quarantine with their reasons."""
        from plantops.modalities.images.ingest import ingest_inspections, ingest_labels

        spec = self.use_case.inspection
        landed = ingest_inspections(self.use_case.id, spec.folder, run_id, spec.images)
        labels = ingest_labels(self.use_case.id, spec.folder, spec.line, run_id)
        runs = landed["runs"]
        days = sorted({r["day"] for r in runs if r["status"] == "ingested" and r.get("accepted") and r.get("day")})
        quarantined = [r for r in runs if r["status"] == "quarantined"] + [f for f in labels if f["status"] == "quarantined"]
        return {
            "use_case": self.use_case.id,
            "days": days,
            "runs": [{k: v for k, v in r.items() if k != "rejected_items"} for r in runs],
            "images": {key: sum(r.get(key, 0) for r in runs) for key in ("items", "accepted", "rejected")},
            "labels": labels,
            "incomplete": landed["incomplete"],
            "quarantined_files": len(quarantined),
        }

    def bronze_days(self) -> list[str]:
        from plantops.modalities.images.features import bronze_days

        return bronze_days(self.use_case.id)

    def spark_args(self, ranges: str) -> list[str]:
        """The use case, the model input's side and the days."""
        return ["--use-case", self.use_case.id, "--size", str(self.use_case.inspection.input_size), "--ranges", ranges]

    def built_feature_days(self) -> list[str]:
        from plantops.modalities.images.features import built_feature_days

        return built_feature_days(self.use_case.id)

    def feature_plan(self, days: Iterable[str]) -> dict[str, Any]:
        from plantops.modalities.images.features import feature_plan

        return feature_plan(days)

    def check_features(self, spans: list[tuple[str, str]], asset: str | None) -> dict[str, Any]:
        from plantops.modalities.base import days_between
        from plantops.modalities.images.features import check_features

        return check_features(self.use_case, [d for a, b in spans for d in days_between(a, b)])

    def training_rows(self, asset: str | None) -> TrainingRows:
        from plantops.modalities.images.features import load_image_features
        from plantops.sources import inspections

        return TrainingRows(load_image_features(self.use_case.id), inspections.read_labels(self.use_case.inspection.line))

    def train(self, rows: TrainingRows, reference_start: datetime | None, run_tags: dict[str, str],
              asset: str | None) -> dict[str, Any]:
        from plantops.modalities.images.training import NotEnoughLabels, train_inspection

        try:
            return train_inspection(self.use_case, rows.features, rows.labels, reference_start, run_tags)
        except NotEnoughLabels as exc:  # labels come late: a fresh line has images but no labels yet
            raise NoFeatures(str(exc)) from exc

    def score(self, kind: Any, model: Any, version: str, day: str, asset: str, name: str) -> dict[str, Any]:
        from plantops.modalities.images.scoring import score

        return score(self.use_case, kind, model, version, day)

    def evidence(self, asset: str, name: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
        from plantops.modalities.images.monitoring import evidence

        return evidence(self.use_case, name, day, start, end)

    def approval_lines(self, record: dict[str, Any]) -> list[str]:
        from plantops.modalities.images.monitoring import approval_lines

        return approval_lines(record)

    def labelled_line(self, performance: dict[str, Any] | None) -> str:
        from plantops.modalities.images.monitoring import labelled_line

        return labelled_line(performance)

    def alert(self, assessment: dict[str, Any], subject: str) -> dict[str, str]:
        from plantops.modalities.images.monitoring import alert

        return alert(assessment, subject)

    def view(self, asset: str, champion_version: str | None) -> dict[str, Any]:
        from plantops.modalities.images.view import inspection

        return {"scores": None, "inspection": inspection(self.use_case, champion_version)}

    @classmethod
    def page(cls) -> Page:
        from plantops.modalities.images.view import InspectionPage

        return InspectionPage()
