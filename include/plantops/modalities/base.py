"""The modality contract: what the stages ask of a use case's kind of data, and nothing else.

A modality is how a use case's raw data looks and travels: tag time series (historian rows, landed
wide or long files: :mod:`plantops.modalities.tags`) or inspection images with a manifest
(:mod:`plantops.modalities.images`). One :class:`Modality` subclass per package, bound to one use
case (as a model kind is), answers for each stage:

- **ingest**: where deliveries land and which names complete one (``landing``: the DAGs watch
  them), what lands and how it is judged (``ingest``: bronze written, files quarantined), and
  which days have bronze (``bronze_days``);
- **features**: its Spark job (``spark_job``) and the job's arguments (``spark_args``), which days
  a change rebuilds (``feature_plan``: the lookback), which days are built (``built_feature_days``)
  and its GX suite over them (``check_features``);
- **train**: the model kinds that read its rows (``kind_outputs``; ``described`` names such a use
  case in the config's errors), its training rows and labels (``training_rows``) and how they
  reach the kind and the registry (``train``);
- **score**: its scoring rows and where the verdicts are written back (``score``);
- **monitor**: its evidence for the policy (``evidence``: drift rows and columns, alarm rate,
  performance on late labels, the share quality gates rejected, what people confirmed), the lines
  it adds to an engineer's approval (``approval_lines``, ``labelled_line``, ``words``) and the
  operators' upset alert (``alert``);
- **view**: its data on the Plant ML page (``view``, ``headline``) and how the page draws it
  (``page``: a :class:`plantops.modalities.page.Page`).

The stages, the DAG factory, the config and the plugin call these and never ask which modality they
have; :func:`plantops.modalities.modality_of` picks the use case's. Modality modules import only the
light core at import time: DAG parsing reaches the registry (``landing`` and ``spark_args`` run
while a DAG file parses, so they read the use case and nothing else); pandas, Spark and the stores
load inside the other methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from plantops.units import utc_day

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase
    from plantops.modalities.page import Page


class NoFeatures(FileNotFoundError):
    """No feature day exists yet (a fresh installation before its first ingest), or too few labelled rows."""


# How a manual features run names the days to build (the DAG's params, `cli run --start --end`).
FEATURE_PARAMS = '{"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"} (end exclusive)'


def days_between(start: str | None, end: str | None) -> list[str]:
    """The ISO days of [start, end): what a manual rebuild of a range asks for."""
    if not start or not end:
        raise ValueError(f"give both start and end: {FEATURE_PARAMS}; got start={start!r}, end={end!r}")
    try:
        first, after = utc_day(start).date(), utc_day(end).date()
    except ValueError:
        raise ValueError(f"expected days as {FEATURE_PARAMS}; got start={start!r}, end={end!r}") from None
    if after <= first:
        raise ValueError(f"the end ({end}) must be after the start ({start})")
    return [(first + timedelta(days=k)).isoformat() for k in range((after - first).days)]


class TrainingRows(NamedTuple):
    """A modality's training input: its feature rows and the labels that have arrived for them."""

    features: pd.DataFrame
    labels: pd.DataFrame


@dataclass(frozen=True)
class Words:
    """How the monitor's messages name a modality's rows and the model's outputs on them."""

    drifted: str  # "Drifted share of <drifted>"
    column: str  # the drift table's first column
    output: str  # "<output> rate in the window"
    outputs: str  # "the window's <outputs> stand"
    scope: str  # "Retrain now learns <scope>"


class Modality:
    """One modality behind the contract (see the module docstring), bound to a use case."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # spark_jobs/<spark_job>: the job that turns bronze into feature rows.
    spark_job: ClassVar[str]
    # What the model kinds that read this modality's rows give (ModelKind.output): the YAML's
    # model.kind and model.compare_with must be one of them.
    kind_outputs: ClassVar[frozenset[str]]
    # A use case of this modality in the config's messages: "kind 'x' does not suit a use case <described>".
    described: ClassVar[str]
    words: ClassVar[Words]
    # The held-out metrics the Plant ML view shows for a champion.
    headline: ClassVar[tuple[str, ...]]

    def __init__(self, use_case: UseCase) -> None:
        self.use_case = use_case

    @classmethod
    def suits(cls, use_case: UseCase) -> bool:
        """Whether this modality is the use case's (the YAML's ``modality``, derived in the config)."""
        return use_case.modality == cls.name

    # -- ingest -------------------------------------------------------------------------------------

    def landing(self) -> tuple[str, list[str]] | None:
        """The landing folder NiFi fills (under PLANTOPS_HOME/landing) and the file patterns that
        complete a delivery: the ingest DAG watches them. None when nothing lands (a historian only).
        Runs while the DAG file parses: reads the use case, imports nothing heavy."""
        raise NotImplementedError

    def ingest(self, run_id: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        """Land and judge what arrived (and the source window [start, end) where the modality has
        one; None when the run has no data interval); bronze for what passed, quarantine with a reason for what did not. The result holds
        ``days`` (bronze days written) and ``quarantined_files`` (files quarantined whole)."""
        raise NotImplementedError

    def bronze_days(self) -> list[str]:
        """The days that have bronze, oldest first."""
        raise NotImplementedError

    # -- features -----------------------------------------------------------------------------------

    def spark_args(self, ranges: str) -> list[str]:
        """``spark_job``'s arguments (spark-submit's and the SparkApplication's) for the day ranges
        ``ranges`` (START:END[,START:END...]; a template filled from plan_window at run time). Runs
        while the DAG file parses: reads the use case, imports nothing heavy."""
        raise NotImplementedError

    def built_feature_days(self) -> list[str]:
        """The days that have a feature partition, oldest first."""
        raise NotImplementedError

    def feature_plan(self, days: Iterable[str]) -> dict[str, Any]:
        """What the feature job builds for the changed ``days``: ``ranges`` (the job's ``--ranges``),
        ``days`` (the changed ones) and ``lookahead`` (built days rebuilt for their lookback)."""
        raise NotImplementedError

    def check_features(self, spans: list[tuple[str, str]], asset: str | None) -> dict[str, Any]:
        """The GX gate over the feature rows of the day ranges (of ``asset``, or all); raises
        ValueError naming what broke."""
        raise NotImplementedError

    # -- train --------------------------------------------------------------------------------------

    def training_rows(self, asset: str | None) -> TrainingRows:
        """Every feature row of ``asset`` (or the use case) with its labels; NoFeatures when none."""
        raise NotImplementedError

    def train(self, rows: TrainingRows, reference_start: datetime | None, run_tags: dict[str, str],
              asset: str | None) -> dict[str, Any]:
        """Fit the kind on the rows, register the challenger, judge it against the champion."""
        raise NotImplementedError

    # -- score --------------------------------------------------------------------------------------

    def score(self, kind: Any, model: Any, version: str, day: str, asset: str, name: str) -> dict[str, Any]:
        """Score one day with the champion (``model``, version ``version`` of ``name``) and write the
        verdicts back where people and the monitor read them."""
        raise NotImplementedError

    # -- monitor ------------------------------------------------------------------------------------

    def evidence(self, asset: str, name: str, run_id: str, day: str, start: datetime, end: datetime) -> dict[str, Any]:
        """What the monitor weighs for the window: ``current`` rows and drift ``columns``,
        ``alarm_rate``, ``performance``, ``rejected_share``, ``confirmation``, and ``record`` (the
        modality's fields of the decision record)."""
        raise NotImplementedError

    def approval_lines(self, record: dict[str, Any]) -> list[str]:
        """The modality's section of an engineer's approval body (after the plant events)."""
        raise NotImplementedError

    def labelled_line(self, performance: dict[str, Any] | None) -> str:
        """The champion's performance on labelled rows, as the approval body says it."""
        raise NotImplementedError

    def alert(self, assessment: dict[str, Any], subject: str) -> dict[str, str]:
        """The operators' upset alert: ``subject`` (after the given one) and ``body``."""
        raise NotImplementedError

    # -- view ---------------------------------------------------------------------------------------

    def view(self, asset: str, champion_version: str | None) -> dict[str, Any]:
        """The modality's pieces of the Plant ML page: ``scores`` (a scored day of tags) and
        ``inspection`` (an inspection line's day), None where it has none."""
        raise NotImplementedError

    @classmethod
    def page(cls) -> Page:
        """How the Plant ML page draws the modality's pieces of the view (a section of its own, the
        timeline's evidence columns, the chart of a scored day): the plugin calls it with the view's
        ``modality`` and renders the rest."""
        raise NotImplementedError


# The contract's methods, for the contract tests.
CONTRACT = ("landing", "ingest", "bronze_days", "spark_args", "built_feature_days", "feature_plan", "check_features",
            "training_rows", "train", "score", "evidence", "approval_lines", "labelled_line", "alert", "view", "page")


def rate(value: float | None, missing: str) -> str:
    """A share as the messages print it, or what stands for a missing one."""
    return missing if value is None else f"{value:.0%}"
