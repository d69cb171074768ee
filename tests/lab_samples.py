"""A toy third modality, for the contract tests only: sparse manual lab analyses.

A lab technician lands one CSV per batch of samples (``sample_id, ts, analyte, value``) in the use
case's landing folder. Ingest judges each row (a known analyte, a number inside the tag's range,
a time) and writes the good ones as long bronze rows per day; a file without one good row is
quarantined whole. Features are hourly buckets of the analytes (the pandas twin of the Spark
feature job, which is enough for a few samples a day); training rows feed any tabular kind.
docs/adding-a-modality.md walks through this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from plantops.modalities.base import Modality, NoFeatures, TrainingRows, Words, days_between, rate
from plantops.modalities.page import Page, e
from plantops.settings import get_settings

COLUMNS = ["sample_id", "ts", "analyte", "value"]


class LabSamples(Modality):
    name = "lab_samples"
    summary = "manual lab analyses: a few samples a day, landed as CSV by the lab"
    spark_job = "build_features.py"  # a real modality would name its own job; the toy builds in pandas
    kind_outputs = frozenset({"detector"})  # a lab line has no fault labels: detectors of unusual samples
    described = "of lab samples"
    words = Words(drifted="analytes", column="analyte", output="alarm", outputs="alarms",
                  scope="the labelled samples as normal")
    headline = ("far", "detection_rate")

    # -- where things live -------------------------------------------------------------------------
    def _landing(self):
        return get_settings().landing_root / self.use_case.landing.folder

    def _bronze(self):
        return get_settings().bronze_root / self.use_case.id / "lab"

    def _features(self):
        return get_settings().features_root / self.use_case.id / "lab"

    # -- ingest ------------------------------------------------------------------------------------
    def landing(self) -> tuple[str, list[str]] | None:
        return self.use_case.landing.folder, ["*.csv"]

    def ingest(self, run_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        tags = {t.name: t for t in self.use_case.tags}
        files, days, quarantined = [], set(), 0
        for path in sorted(self._landing().glob("*.csv")):
            frame = pd.read_csv(path)
            frame["ts"] = pd.to_datetime(frame["ts"], utc=True, errors="coerce")
            frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
            known = frame["analyte"].isin(tags)
            in_range = frame.apply(lambda r: r["analyte"] in tags and tags[r["analyte"]].min <= r["value"]
                                   <= tags[r["analyte"]].max, axis=1) if len(frame) else known
            good = frame[known & in_range & frame["ts"].notna()]
            if good.empty:
                target = self._landing() / "quarantine" / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
                quarantined += 1
                files.append({"file": path.name, "status": "quarantined", "rows": len(frame), "accepted": 0})
                continue
            long = pd.DataFrame({"asset": self.use_case.assets[0], "tag": good["analyte"], "ts": good["ts"],
                                 "value": good["value"].astype(float), "quality": "good"})
            for day, rows in long.groupby(long["ts"].dt.strftime("%Y-%m-%d")):
                folder = self._bronze() / f"day={day}"
                folder.mkdir(parents=True, exist_ok=True)
                rows.to_parquet(folder / f"{path.stem}.parquet", index=False)
                days.add(day)
            path.unlink()
            files.append({"file": path.name, "status": "ingested", "rows": len(frame), "accepted": len(good)})
        return {"use_case": self.use_case.id, "days": sorted(days), "files": files, "quarantined_files": quarantined}

    def bronze_days(self) -> list[str]:
        return sorted(p.name.removeprefix("day=") for p in self._bronze().glob("day=*") if any(p.glob("*.parquet")))

    # -- features ----------------------------------------------------------------------------------
    def spark_args(self, ranges: str) -> list[str]:
        # What the job would be given; the toy's own build_features below is what the test runs.
        return ["--use-case", self.use_case.id, "--analytes", ",".join(self.use_case.tag_names), "--ranges", ranges]

    def built_feature_days(self) -> list[str]:
        return sorted(p.stem.removeprefix("day=") for p in self._features().glob("day=*.parquet"))

    def feature_plan(self, days: Iterable[str]) -> dict[str, Any]:
        changed = sorted(set(days))
        if not changed:
            raise ValueError("no days to build features for: the triggering ingest wrote nothing")
        return {"ranges": ",".join(f"{d}:{_next(d)}" for d in changed),
                "days": changed, "lookahead": []}

    def build_features(self, days: Iterable[str]) -> list[str]:
        """The toy's feature job (what ``spark_job`` does for a real modality): hourly buckets."""
        from plantops.features import wide_features_pandas

        features = self.use_case.features
        built = []
        for day in days:
            long = pd.concat([pd.read_parquet(p) for p in sorted((self._bronze() / f"day={day}").glob("*.parquet"))])
            wide = wide_features_pandas(long, list(self.use_case.tag_names), features.bucket_seconds,
                                        features.rolling_buckets)
            self._features().mkdir(parents=True, exist_ok=True)
            wide.to_parquet(self._features() / f"day={day}.parquet", index=False)
            built.append(day)
        return built

    def check_features(self, spans: list[tuple[str, str]], asset: str | None) -> dict[str, Any]:
        days = [d for a, b in spans for d in days_between(a, b) if d in self.built_feature_days()]
        frame = self._read(days)
        if frame[list(self.use_case.tag_names)].isna().all(axis=None):
            raise ValueError(f"feature gate failed for {self.use_case.id}: no analyte measured in {days}")
        return {"asset": asset, "rows": len(frame), "days": days, "missing": {}}

    def _read(self, days: Iterable[str] | None = None) -> pd.DataFrame:
        wanted = self.built_feature_days() if days is None else list(days)
        if not wanted:
            raise NoFeatures(f"no lab features for {self.use_case.id} yet")
        frame = pd.concat([pd.read_parquet(self._features() / f"day={d}.parquet") for d in wanted], ignore_index=True)
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame.sort_values(["asset", "ts"]).reset_index(drop=True)

    # -- train -------------------------------------------------------------------------------------
    def training_rows(self, asset: str | None) -> TrainingRows:
        # No labels: every sample is taken as normal operation (a lab line has no fault labels yet).
        return TrainingRows(self._read(), pd.DataFrame(columns=["asset", "start_ts", "end_ts", "label"]))

    def train(self, rows: TrainingRows, reference_start: datetime | None, run_tags: dict[str, str],
              asset: str | None) -> dict[str, Any]:
        """Fit the use case's kind on the rows and judge it on the held-out ones (no registry: a toy)."""
        from plantops.kinds import get_kind
        from plantops.stages.training import select_training_data

        kind = get_kind(self.use_case)
        end = rows.features["ts"].max() + pd.Timedelta(seconds=self.use_case.features.bucket_seconds)
        data = select_training_data(rows.features, rows.labels, end, self.use_case.model.train_days)
        model = kind.fit(kind.build(), data.fit)
        metrics = kind.evaluate(model, data)
        return {"promoted": False, "reason": "a toy modality registers nothing", "metrics": metrics,
                "model": model, "fit_rows": len(data.fit), "champion_metrics": {}}

    # -- score -------------------------------------------------------------------------------------
    def score(self, kind: Any, model: Any, version: str, day: str, asset: str, name: str) -> dict[str, Any]:
        scored = kind.score(model, self._read([day]))
        return {"day": day, "asset": asset, "rows": len(scored), "alarms": int(scored["alarm"].sum()),
                "model_version": version, "model_kind": kind.name}

    # -- monitor -----------------------------------------------------------------------------------
    def evidence(self, asset: str, name: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
        from plantops.stages.monitoring import Confirmation

        return {"current": self._read([day]), "columns": list(self.use_case.tag_names), "alarm_rate": None,
                "performance": None, "rejected_share": None, "confirmation": Confirmation(),
                "record": {"n_predictions": 0, "alarm_tags": [], "feedback": []}}

    def approval_lines(self, record: dict[str, Any]) -> list[str]:
        return ["", f"Lab samples in the window: {record.get('n_predictions', 0)}."]

    def labelled_line(self, performance: dict[str, Any] | None) -> str:
        if performance is None:
            return "on labelled samples: not applicable (the lab labels nothing)"
        return f"on {performance['n_labelled']} samples: false alarms {rate(performance['far'], 'n/a')}"

    def alert(self, assessment: dict[str, Any], subject: str) -> dict[str, str]:
        return {"subject": f"{subject}: upset in the lab results", "body": assessment["reason"]}

    # -- view --------------------------------------------------------------------------------------
    def view(self, asset: str, champion_version: str | None) -> dict[str, Any]:
        return {"scores": None, "inspection": None}

    @classmethod
    def page(cls) -> Page:
        return LabPage()


class LabPage(Page):
    """The lab's pieces of the Plant ML page: the analytes that alarmed; no chart of its own yet."""

    evidence_headers = ("alarms", "analytes alarmed")

    def evidence(self, day: dict[str, Any]) -> str:
        return ", ".join(e(t["tag"]) for t in day["alarm_tags"]) or "&mdash;"

    def chart(self, v: dict[str, Any]) -> str:
        return "<p>The lab's samples are charted in LIMS.</p>"


def _next(day: str) -> str:
    return (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
