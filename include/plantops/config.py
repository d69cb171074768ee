"""Use-case configuration: one YAML file per use case, parsed into frozen, typed objects.

A wrong file raises :class:`ConfigError` naming the file, the field and what was expected. The
DAG factory catches it per file, so one broken use case never hides the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from plantops.settings import DEFAULT_HISTORIAN
from plantops.units import parse_duration  # noqa: F401 - re-exported: the config's durations

IDENTIFIER = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"


class ConfigError(ValueError):
    """A use-case file that does not match the schema: file, field and expectation in the text."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tag(_Frozen):
    name: str = Field(pattern=IDENTIFIER)
    description: str
    unit: str = ""
    min: float
    max: float
    source: Literal["historian", "landing"] = "historian"

    @model_validator(mode="after")
    def _range(self) -> Tag:
        if self.min >= self.max:
            hint = ""
            if self.min == self.max:
                # A constant tag (a setpoint, a fixed speed) is fine; its range needs a width.
                tol = abs(self.min) * 0.05 or 1.0
                hint = (f"; for a constant tag give a tolerance around its value, e.g. "
                        f"min: {self.min - tol:g}, max: {self.max + tol:g}")
            raise ValueError(f"tag {self.name}: min ({self.min:g}) must be below max ({self.max:g}){hint}")
        return self


def tag_name(header: str) -> str:
    """A column header as a tag name (the IDENTIFIER pattern): 'FIC-101.PV' -> 'FIC_101_PV'.

    Letters, digits and '_' are kept, every other run of characters becomes one '_'; a name that
    does not start with a letter gets 'T_' in front; at most 63 characters."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", header.strip()).strip("_")
    if not name or not name[0].isalpha():
        name = f"T_{name}".rstrip("_") if name else "T"
    return name[:63].rstrip("_")


class Approver(_Frozen):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)


class Schedules(_Frozen):
    ingest: str = "@daily"
    train: str = "0 2 * * *"


_ASSET = r"^[A-Za-z0-9_.\-]{1,64}$"


class HistorianSource(_Frozen):
    """Where the use case's tags live: one historian asset, or a fleet of assets sharing one template
    (tags, model kind, policy); per-asset work is mapped over ``assets`` in the DAGs."""

    conn_id: str = DEFAULT_HISTORIAN
    asset: str | None = Field(default=None, pattern=_ASSET)
    assets: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_or_fleet(self) -> HistorianSource:
        if (self.asset is None) == (not self.assets):
            raise ValueError("set either 'asset' (one asset) or 'assets' (a fleet), not both or neither")
        bad = [a for a in self.assets if not re.match(_ASSET, a)]
        if bad:
            raise ValueError(f"asset names must match {_ASSET}, got {bad}")
        if len(set(self.assets)) != len(self.assets):
            raise ValueError(f"duplicate assets: {sorted(a for a in set(self.assets) if self.assets.count(a) > 1)}")
        return self


FORMATS: tuple[str, ...] = ("parquet", "csv", "jsonl")
# The format a pattern's suffix implies, when a source does not name it.
SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".txt": "csv", ".jsonl": "jsonl",
                  ".json": "jsonl", ".ndjson": "jsonl"}


def format_of(pattern: str) -> str | None:
    """The format a file pattern's suffix names (``*.csv`` -> csv), None for another suffix."""
    return SUFFIX_FORMATS.get(Path(pattern).suffix.lower())


def _zone(value: str | None) -> str | None:
    if value is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as 'Europe/Berlin'") from None
    return value


ON_CONFLICT = ("keep", "replace")


class LandedFileSource(_Frozen):
    """One kind of file NiFi lands in the folder: which names, which format, which layout.

    ``wide``: a timestamp column and one column per landing tag (one asset). ``long``: one value
    per row, columns ``asset, tag, <ts_column>, value`` and optionally ``quality``.
    """

    name: str = Field(pattern=IDENTIFIER)
    pattern: str = Field(min_length=1, max_length=255)
    format: Literal["parquet", "csv", "jsonl"]
    layout: Literal["wide", "long"] = "wide"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    decimal: str = Field(default=".", min_length=1, max_length=1)
    ts_column: str = Field(default="ts", min_length=1, max_length=255)
    ts_format: str | None = None  # strptime format of text timestamps; None: ISO 8601
    naive_timezone: str | None = None  # None: landing.naive_timezone
    # Columns of the file that hold no tag (a status text, a comment): dropped when read, not counted.
    ignore_columns: tuple[str, ...] = ()
    # A value that differs from bronze's for the same (asset, tag, ts, source): "keep" keeps bronze's
    # and lists the conflict for `cli correct`; "replace" takes the later value at once (historians
    # known to re-send corrected values, as PI's replace mode). Either way an audit record is kept.
    on_conflict: str = "keep"

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        # The format follows from the pattern's suffix, the name from the format, the pattern from
        # the format: a source can be as short as {pattern: "*.csv"}.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        pattern, fmt = data.get("pattern"), data.get("format")
        if fmt is None and isinstance(pattern, str):
            fmt = format_of(pattern)
            if fmt is None:
                raise ValueError(f"format: cannot tell the format from the pattern {pattern!r} (known suffixes: "
                                 f"{', '.join(SUFFIX_FORMATS)}); set format: {' | '.join(FORMATS)}")
            data["format"] = fmt
        if pattern is None and fmt in FORMATS:
            data["pattern"] = f"*.{fmt}"
        if data.get("name") is None and fmt is not None:
            data["name"] = fmt
        return data

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith("."):
            raise ValueError("expected a file-name pattern inside the landing folder (no '/', not hidden)")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("unknown text encoding; e.g. utf-8, latin-1, cp1252") from None
        return value

    @field_validator("ts_format")
    @classmethod
    def _ts_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError("expected a strptime format such as '%d.%m.%Y %H:%M'")
        return value

    @field_validator("naive_timezone")
    @classmethod
    def _naive_timezone(cls, value: str | None) -> str | None:
        return _zone(value)

    @field_validator("on_conflict")
    @classmethod
    def _on_conflict(cls, value: str) -> str:
        if value not in ON_CONFLICT:
            raise ValueError("expected keep (bronze keeps its value; a differing later value is listed by "
                             "`cli conflicts` until `cli correct` takes it) or replace (a differing later value "
                             "replaces bronze's, with an audit record)")
        return value

    @model_validator(mode="after")
    def _only_where_it_applies(self) -> LandedFileSource:
        # A setting the format ignores is refused unless it is the default, so that a decimal
        # comma given to a parquet source is not silently without effect.
        for key, formats in (("delimiter", ("csv",)), ("decimal", ("csv",)), ("encoding", ("csv", "jsonl"))):
            value = getattr(self, key)
            if self.format not in formats and value != type(self).model_fields[key].default:
                raise ValueError(f"{key}: applies to format {' and '.join(formats)} only, not {self.format} "
                                 f"(source {self.name}, got {value!r})")
        if self.format == "csv" and self.delimiter == self.decimal:
            raise ValueError(f"decimal: must differ from the delimiter {self.delimiter!r} (source {self.name})")
        return self

    def describe(self) -> str:
        return f"{self.pattern} ({self.format}, {self.layout})"


class LandingSource(_Frozen):
    folder: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    # Shorthand for one source: its format from the suffix (parquet when the suffix names none), wide.
    pattern: str = "*.parquet"
    # The kinds of file in the folder, when there are several or they are not wide parquet.
    sources: tuple[LandedFileSource, ...] = ()
    # The asset the landed rows belong to: the historian's asset, else this (default: the use case id).
    asset: str | None = Field(default=None, pattern=_ASSET)
    # A file with bad rows: drop them (kept in quarantine with a reason, counted) or quarantine it whole.
    bad_rows: Literal["drop", "quarantine"] = "drop"
    # Timestamps without a zone are ambiguous (DST, site-local clocks): rejected unless a zone is named.
    naive_timezone: str | None = None
    # A file far larger than usual is an export gone wrong, not a day of data.
    max_rows: int = Field(default=1_000_000, ge=1)

    @field_validator("naive_timezone")
    @classmethod
    def _naive_timezone(cls, value: str | None) -> str | None:
        return _zone(value)

    @model_validator(mode="after")
    def _sources(self) -> LandingSource:
        if self.sources and "pattern" in self.model_fields_set:
            raise ValueError("pattern: give either 'pattern' (one wide source) or 'sources', not both; "
                             "move the pattern into a source")
        for field, seen in (("name", [s.name for s in self.sources]), ("pattern", [s.pattern for s in self.sources])):
            twice = sorted({v for v in seen if seen.count(v) > 1})
            if twice:
                raise ValueError(f"sources: each source needs its own {field}; {twice} given twice")
        return self

    @property
    def effective_sources(self) -> tuple[LandedFileSource, ...]:
        """The sources files are matched against: ``sources``, or the legacy ``pattern`` as one wide
        source (parquet unless its suffix names another format), named after its format."""
        if self.sources:
            return self.sources
        fmt = format_of(self.pattern) or "parquet"
        return (LandedFileSource(name=fmt, pattern=self.pattern, format=fmt),)

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every source's pattern: what the landing watcher watches."""
        return tuple(s.pattern for s in self.effective_sources)

    def zone_of(self, source: LandedFileSource) -> str | None:
        """The zone of the source's naive timestamps: its own, else the landing folder's."""
        return source.naive_timezone or self.naive_timezone


class ImageChecks(_Frozen):
    """What a landed cell image must be (``inspection.images``). Defaults measured once over all
    2,624 elpv images (mode L, 300x300 each): the smallest standard deviation is 4.73 (cell1836, a
    dead cell, labelled defective; 1 % are below 16.3), the largest share of pixels >= 250 is 0.537
    (cell0639; the 99th percentile is 0.028), the means span 13.8..228.2. So ``min_std`` 2.0 and
    ``max_saturated_share`` 0.95 reject no real cell, and an exposure change of gain 1.3, offset
    +20 (at most 0.89 saturated on a tenth of the cells) is still accepted: that is drift for the
    monitor to see, not a broken frame."""

    width: int = Field(default=300, ge=8, le=8192)
    height: int = Field(default=300, ge=8, le=8192)
    mode: Literal["L"] = "L"  # 8-bit greyscale, what an EL camera delivers
    min_std: float = Field(default=2.0, ge=0)  # below: a blank frame (near-constant), measured min 4.73
    saturated_at: int = Field(default=250, ge=1, le=255)  # a pixel value this high is clipped
    max_saturated_share: float = Field(default=0.95, gt=0, le=1)  # at or above: a saturated frame, measured max 0.537
    min_mean: float = Field(default=5.0, ge=0, le=255)  # GX range of the mean grey level, measured 13.8..228.2
    max_mean: float = Field(default=250.0, ge=0, le=255)

    @model_validator(mode="after")
    def _mean_range(self) -> ImageChecks:
        if self.min_mean >= self.max_mean:
            raise ValueError(f"min_mean: must be below max_mean ({self.min_mean} >= {self.max_mean})")
        return self


class InspectionSource(_Frozen):
    """Images that NiFi lands per inspection run (visual inspection use cases): the run's PNGs in
    ``<landing>/<folder>/<run_id>/`` and, written last, ``<landing>/<folder>/<run_id>.manifest.csv``
    (see "Inspection images" in docs/visual-inspection.md)."""

    folder: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    line: str = Field(default="line", min_length=1, max_length=64)  # the inspection line, as the manifest names it
    images: ImageChecks = ImageChecks()
    # The side of the model input: each image is reduced to input_size x input_size block means,
    # so it must divide the image's width and height.
    input_size: int = Field(default=60, ge=4, le=1024)

    @model_validator(mode="after")
    def _input_size(self) -> InspectionSource:
        if self.images.width % self.input_size or self.images.height % self.input_size:
            raise ValueError(f"input_size: must divide the images' {self.images.width}x{self.images.height} "
                             f"(e.g. 50, 60, 75, 100, 150 for 300x300)")
        return self


class Features(_Frozen):
    """How bronze becomes features (the contract is in :mod:`plantops.features`).

    ``rolling_buckets``: the rolling window is ``rolling_buckets`` buckets *of time*, however many
    rows a gap left in it. ``max_gap``: how long a tag's last bucket mean is carried forward over
    buckets without a good value; beyond it the tag is missing (NaN), not stale.
    """

    bucket: str = "3min"
    rolling_buckets: int = Field(default=10, ge=2, le=1000)
    lookback_days: int = Field(default=1, ge=0, le=30)
    max_gap: str = "6h"

    @field_validator("bucket", "max_gap")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError(f"expected a positive duration, got {value!r}")
        return value

    @model_validator(mode="after")
    def _gap(self) -> Features:
        if self.max_gap_seconds < self.bucket_seconds:
            raise ValueError(f"max_gap ({self.max_gap}) must be at least one bucket ({self.bucket}): "
                             "a shorter gap would drop a tag between two buckets that both hold it")
        return self

    @property
    def bucket_seconds(self) -> int:
        return int(parse_duration(self.bucket).total_seconds())

    @property
    def max_gap_seconds(self) -> int:
        return int(parse_duration(self.max_gap).total_seconds())


class Model(_Frozen):
    """The model kind (a plug-in of :mod:`plantops.kinds`) and what every kind shares.

    ``params`` is the kind's own block, checked by the kind. ``compare_with`` names other kinds that
    each training run fits on the same rows and evaluates side by side (logged, never promoted),
    each with its block of ``compare_params`` (default: the kind's defaults).
    A fleet trains one model per asset (``per_asset``, each with its own champion) or one for all
    (``pooled``)."""

    kind: str = "mspm_pca"
    params: dict[str, Any] = Field(default_factory=dict)
    compare_with: tuple[str, ...] = ()
    compare_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5)
    train_days: int = Field(default=14, ge=1, le=3650)
    min_train_rows: int = Field(default=200, ge=10)
    training: Literal["per_asset", "pooled"] = "per_asset"


class Drift(_Frozen):
    method: str = "wasserstein"
    column_threshold: float = Field(default=0.5, gt=0)
    share_threshold: float = Field(default=0.3, gt=0, le=1)


# What a rule asks for, weakest first; the strongest action among the rules that fired wins.
Action = Literal["none", "notify", "retrain", "approval"]


class Levels(_Frozen):
    """When data drift counts as mild or severe (severe = the drift share threshold is reached)."""

    mild_share: float = Field(default=0.15, ge=0, le=1)
    # One tag moving far (a single control loop, e.g. TEP faults 4, 11, 14) is severe on its own.
    single_tag_score: float = Field(default=2.0, gt=0)


class Upset(_Frozen):
    """The champion alarming on the window: an upset it detects, unless people confirm the alarms false.

    ``persist``: an upset that lasts longer (consecutive upset windows, this one included)
    without a confirmed fault asks a process engineer whether it is the plant's new normal.
    ``min_false_alarms``: alarms inside periods that people labelled normal (false-alarm feedback,
    lab results) that make the model stale rather than the plant upset.
    """

    max_alarm_rate: float = Field(default=0.2, gt=0, le=1)
    persist: str = "2d"
    min_false_alarms: int = Field(default=10, ge=1)

    @field_validator("persist")
    @classmethod
    def _persist(cls, value: str) -> str:
        parse_duration(value)
        return value


class Performance(_Frozen):
    """Model performance from delayed labels (lab results, confirmed faults) joined by asset and time."""

    lookback: str = "7d"
    min_labelled_rows: int = Field(default=50, ge=1)
    max_detection_drop: float = Field(default=0.2, gt=0, le=1)
    max_far: float = Field(default=0.05, gt=0, le=1)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        parse_duration(value)
        return value


class Quality(_Frozen):
    """Data-quality results of the GX gates: share of rows rejected in the window."""

    max_rejected_share: float = Field(default=0.05, ge=0, le=1)


class Rules(_Frozen):
    """The action of each named rule of the monitor policy (docs/monitoring-policy.md).

    Upset: the champion alarms on the window and nobody said the alarms were false; it detects what
    it was trained to detect, so operators are told and nothing is retrained. Staleness (false
    alarms confirmed by people, a performance drop on delayed labels, drift the champion does not
    alarm on): the model no longer describes the plant, retrain. Plant change: an operator changed
    the plant in the window, so any upset or retrain goes to a process engineer instead.
    """

    upset: Action = "notify"
    persistent_upset: Action = "approval"
    false_alarms: Action = "retrain"
    performance: Action = "retrain"
    unexplained_drift: Action = "retrain"
    mild_drift: Action = "none"
    quality: Action = "approval"
    plant_change: Action = "approval"


class Guardrails(_Frozen):
    """Limits on automatic retraining, in plant time (the monitored windows), not wall-clock time."""

    cooldown: str = "2d"
    max_retrains: int = Field(default=3, ge=1)
    period: str = "7d"

    @field_validator("cooldown", "period")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value


class Policy(_Frozen):
    levels: Levels = Levels()
    upset: Upset = Upset()
    performance: Performance = Performance()
    quality: Quality = Quality()
    rules: Rules = Rules()
    guardrails: Guardrails = Guardrails()


class Monitoring(_Frozen):
    drift: Drift = Drift()
    policy: Policy = Policy()
    window: str = "1d"
    plant_event_lookback: str = "1d"
    approval_timeout: str = "1d"

    @field_validator("window", "plant_event_lookback", "approval_timeout")
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _levels(self) -> Monitoring:
        if self.policy.levels.mild_share > self.drift.share_threshold:
            raise ValueError(
                f"policy.levels.mild_share ({self.policy.levels.mild_share}) must not exceed "
                f"drift.share_threshold ({self.drift.share_threshold}), where drift becomes severe"
            )
        return self


_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_CPU = r"^\d+(\.\d+)?m?$"
_MEMORY = r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_SPARK_MEMORY = r"^\d+[kmgt]?$"


class Compute(_Frozen):
    """CPU and memory in Kubernetes quantities ('500m', '2'; '512Mi', '4Gi')."""

    cpu: str = Field(pattern=_CPU)
    memory: str = Field(pattern=_MEMORY)


class PodResources(_Frozen):
    """Requests and limits of each task pod (ingest, check_features, train, score, assess)."""

    requests: Compute = Compute(cpu="500m", memory="1Gi")
    limits: Compute = Compute(cpu="2", memory="4Gi")


class SparkProcess(_Frozen):
    """A Spark driver or executor: cores and JVM memory in Spark's format ('512m', '2g')."""

    cores: int = Field(default=1, ge=1, le=64)
    memory: str = Field(default="2g", pattern=_SPARK_MEMORY)


class SparkOnKubernetes(_Frozen):
    """The SparkApplication (Kubeflow Spark operator) that builds the features."""

    image: str | None = None  # default: the use case's kubernetes.image
    spark_version: str = "4.3.0"
    service_account: str | None = Field(default=None, pattern=_DNS_NAME)  # default: kubernetes.service_account
    driver: SparkProcess = SparkProcess(cores=1, memory="1g")
    executor: SparkProcess = SparkProcess(cores=1, memory="2g")
    executor_instances: int = Field(default=2, ge=1, le=1000)


class Kubernetes(_Frozen):
    """Where and how the use case's pods run when ``execution: kubernetes``.

    Credentials never appear here or in the DAG: pods read them from the Secrets named in
    ``env_from_secrets``; non-secret settings (historian URL, MLflow URI) come from ``config_map``.
    """

    namespace: str = Field(default="plantops", pattern=_DNS_LABEL)
    image: str | None = Field(default=None, min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str | None = Field(default="plantops", pattern=_DNS_NAME)
    kubernetes_conn_id: str = "kubernetes_default"
    resources: PodResources = PodResources()
    spark: SparkOnKubernetes = SparkOnKubernetes()
    env_from_secrets: tuple[str, ...] = ("plantops-credentials",)
    config_map: str | None = Field(default="plantops-env", pattern=_DNS_NAME)
    # PLANTOPS_HOME (bronze, features, reports) shared by every pod: a ReadWriteMany claim mounted
    # at the same path as on the Airflow side, so the paths in the task arguments hold in the pods.
    data_volume_claim: str | None = Field(default=None, pattern=_DNS_NAME)
    startup_timeout_seconds: int = Field(default=600, ge=10)

    @field_validator("env_from_secrets")
    @classmethod
    def _secret_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not re.match(_DNS_NAME, name)]
        if bad:
            raise ValueError(f"expected Kubernetes Secret names (lowercase, digits, '-', '.'), got {bad}")
        return value

    @property
    def spark_image(self) -> str | None:
        return self.spark.image or self.image


_Audience = Literal["operators", "engineers", "mlops"]
_Event = Literal["upset", "quarantine", "approval", "timeout", "promotion", "failure"]
# Who can be told, and of what: the vocabulary plantops.stages.notify and the DAGs share.
AUDIENCES: tuple[str, ...] = get_args(_Audience)
EVENTS: tuple[str, ...] = get_args(_Event)
_DEFAULT_ROUTES: dict[str, tuple[str, ...]] = {
    "upset": ("operators",),
    "quarantine": ("operators",),
    "approval": ("engineers",),
    "timeout": ("engineers",),
    "promotion": ("mlops",),
    "failure": ("mlops",),
}


def _address(value: str) -> str:
    # Whitespace and list separators are refused too: the SMTP hook splits strings on ',' and ';',
    # and a newline in an address would be a header of its own.
    if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", value):
        raise ValueError("expected an e-mail address: one '@' with text on both sides, no spaces, ',' or ';'")
    return value


_Address = Annotated[str, AfterValidator(_address)]


class Notifications(_Frozen):
    """Who is mailed about which plant event: ``recipients`` gives each audience's addresses,
    ``routes`` each event's audiences. A route set in the YAML replaces that event's default only;
    an audience without addresses is not mailed."""

    smtp_conn_id: str = Field(default="plantops_smtp", pattern=r"^[A-Za-z0-9_.\-]{1,250}$")
    sender: _Address = "plantops@localhost"
    recipients: dict[_Audience, tuple[_Address, ...]] = Field(default_factory=dict)
    routes: dict[_Event, tuple[_Audience, ...]] = Field(default_factory=lambda: dict(_DEFAULT_ROUTES))

    @field_validator("recipients", "routes", mode="before")
    @classmethod
    def _blank_is_empty(cls, value: Any) -> Any:
        # `operators:` with nothing after it in the YAML is an empty list, not an error.
        return {k: () if v is None else v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("routes", mode="before")
    @classmethod
    def _keep_default_routes(cls, value: Any) -> Any:
        return {**_DEFAULT_ROUTES, **value} if isinstance(value, dict) else value

    def recipients_of(self, event: str) -> tuple[str, ...]:
        """The addresses of the event's audiences, in route order, each once (case-insensitively)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {list(EVENTS)}")
        seen: set[str] = set()
        found: list[str] = []
        for audience in self.routes.get(event, ()):
            for address in self.recipients.get(audience, ()):
                if address.casefold() not in seen:
                    seen.add(address.casefold())
                    found.append(address)
        return tuple(found)


_USE_CASE_ID = r"^[a-z][a-z0-9_]{0,40}$"
_CONN_ID = r"^[A-Za-z0-9_.\-]{1,250}$"


class SiteHistorian(_Frozen):
    """The site's historian: the Airflow connection its use cases read through, and the Trino
    catalog over it (on the native stack also the name of its PostgreSQL database: docs/sites.md)."""

    conn_id: str = Field(pattern=_CONN_ID)
    catalog: str = Field(default="historian", pattern=IDENTIFIER)


class Site(_Frozen):
    """One plant (``include/sites/<id>.yaml``): what its use cases share. A use case naming the
    site inherits its historian connection, time zone, approvers and notifications unless its own
    YAML sets them (:func:`load_use_case`; docs/sites.md)."""

    id: str = Field(pattern=_USE_CASE_ID)
    name: str = Field(min_length=1)
    # The plant's clock: the default zone of naive landed timestamps (landing.naive_timezone).
    timezone: str
    historian: SiteHistorian
    # The site's process engineers (Airflow user ids): the only people its use cases may ask.
    approvers: tuple[Approver, ...] = ()
    # Airflow user ids of the people who watch the site's DAGs (the control room).
    operators: tuple[Approver, ...] = ()
    notifications: Notifications = Notifications()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _zone(value)

    @model_validator(mode="after")
    def _unique_people(self) -> Site:
        for field in ("approvers", "operators"):
            ids = [p.id for p in getattr(self, field)]
            twice = sorted({i for i in ids if ids.count(i) > 1})
            if twice:
                raise ValueError(f"{field}: each user id once; {twice} given twice")
        return self


class UseCase(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    # The site (include/sites/<site>.yaml) whose defaults the file inherits; None: none (load_use_case).
    site: str | None = Field(default=None, pattern=_USE_CASE_ID)
    plant: str
    description: str = ""
    owner: str = "plantops"
    schedules: Schedules = Schedules()
    # Optional when every tag comes from landed files (a landing-only use case).
    historian: HistorianSource | None = None
    landing: LandingSource | None = None
    # A visual inspection use case: images per inspection run instead of tag values (no tags then).
    inspection: InspectionSource | None = None
    # The data modality (plantops.modalities): derived when absent, images with an inspection
    # section, else tags.
    modality: str = ""
    tags: tuple[Tag, ...] = ()
    features: Features = Features()
    model: Model = Model()
    monitoring: Monitoring = Monitoring()
    # Required only when the monitor policy can ask a person (see _check_approvers).
    approvers: tuple[Approver, ...] = ()
    execution: Literal["local", "kubernetes"] = "local"
    kubernetes: Kubernetes | None = None
    notifications: Notifications = Notifications()

    @model_validator(mode="before")
    @classmethod
    def _derive_modality(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("modality"):
            data = {**data, "modality": "images" if data.get("inspection") is not None else "tags"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> UseCase:
        if self.inspection is not None:
            return self._consistent_inspection()
        if not self.tags:
            raise ValueError("tags: at least one tag (or an 'inspection' section for a visual inspection use case)")
        names = [t.name for t in self.tags]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tag names: {dupes}")
        historian_tags = [t.name for t in self.tags if t.source == "historian"]
        if self.historian is None and historian_tags:
            raise ValueError(f"historian: required: tags {historian_tags[:5]}{' ...' if len(historian_tags) > 5 else ''} "
                             "have source 'historian' (the default); name the historian asset, or give every tag "
                             "source: landing for a landing-only use case")
        if self.historian is None and self.landing is None:
            raise ValueError("historian: a use case needs a historian or a landing section, or both")
        if self.is_fleet and self.execution == "kubernetes":
            raise ValueError("execution: 'kubernetes' runs one asset per use case so far; run a fleet with "
                             "execution: local (its per-asset tasks are mapped on the Airflow workers)")
        if self.landing is not None and self.is_fleet:
            wide = [s.name for s in self.landing.effective_sources if s.layout == "wide"]
            if wide:
                raise ValueError(f"landing: a wide file holds one asset's tags, but this is a fleet; give the fleet's "
                                 f"landed files layout: long (columns asset, tag, ts, value) or use one use case per "
                                 f"landed asset (wide sources: {wide})")
        if self.landing is None and any(t.source == "landing" for t in self.tags):
            raise ValueError("tags with source 'landing' need a 'landing' section")
        if (self.landing is not None and self.landing.asset is not None and self.historian is not None
                and self.landing.asset != self.historian.asset):
            raise ValueError(f"landing.asset: landed rows belong to the historian asset {self.historian.asset!r}; "
                             f"leave landing.asset out or make it {self.historian.asset!r}")
        self._check_model(names)
        self._check_approvers()
        if self.execution == "kubernetes" and (self.kubernetes is None or not self.kubernetes.image):
            raise ValueError("kubernetes.image: required when execution is 'kubernetes' "
                             "(the container image holding plantops and spark_jobs)")
        return self

    def _consistent_inspection(self) -> UseCase:
        """An inspection use case reads images only: no tags, historian or landed tag files."""
        for field in ("tags", "historian", "landing"):
            if getattr(self, field):
                raise ValueError(f"{field}: a use case with an 'inspection' section reads images only; "
                                 f"move the {field} to a use case of their own")
        if self.execution == "kubernetes":
            raise ValueError("execution: an inspection use case runs with execution: local so far")
        self._check_model([])
        self._check_approvers()
        return self

    def _check_approvers(self) -> None:
        """Approvers are needed when the policy can put a window to a person: a rule whose action is
        'approval', or any rule that retrains (past guardrails.max_retrains a person decides)."""
        if self.approvers:
            return
        rules = self.monitoring.policy.rules
        asking = [n for n in Rules.model_fields if getattr(rules, n) == "approval"]
        retraining = [n for n in Rules.model_fields if getattr(rules, n) == "retrain"]
        if not asking and not retraining:
            return
        needs = []
        if asking:
            needs.append(f"rules with action 'approval': {asking}")
        if retraining:
            needs.append(f"rules with action 'retrain' {retraining} (past guardrails.max_retrains "
                         f"({self.monitoring.policy.guardrails.max_retrains}) a person decides)")
        raise ValueError(f"approvers: required (Airflow user ids of the process engineers): the monitor policy "
                         f"asks a person in {'; and '.join(needs)}. Name approvers, or set those rules to "
                         "'none' or 'notify'")

    def _check_model(self, names: list[str]) -> None:
        from plantops import catalog

        kinds = catalog.provider("kinds")
        modalities = catalog.registered("modalities")
        if self.modality not in modalities:
            raise ValueError(f"modality: unknown modality {self.modality!r}; expected one of {sorted(modalities)}")
        if (self.modality == "images") != (self.inspection is not None):
            raise ValueError("modality: 'images' goes with an 'inspection' section (and only it); leave modality out "
                             "to derive it")

        # The modality names what the kinds that read its rows give (image classifiers for images;
        # detectors and regressions for tags).
        modality = modalities[self.modality]
        suitable = sorted(n for n, k in kinds.KINDS.items() if k.output in modality.kind_outputs)
        for field, name in [("model.kind", self.model.kind), *(("model.compare_with", n) for n in self.model.compare_with)]:
            if name not in kinds.KINDS:
                raise ValueError(f"{field}: unknown model kind {name!r}; expected one of {sorted(kinds.KINDS)}")
            if name not in suitable:
                raise ValueError(f"{field}: kind {name!r} does not suit a use case {modality.described}; "
                                 f"expected one of {suitable}")
        try:
            params = kinds.validate_params(self.model.kind, self.model.params)
        except ValidationError as exc:
            # One field per problem, as the rest of the file: "model.params.<field>: <expected>".
            raise ValueError(_describe(exc, prefix="model.params.")) from None
        stray = sorted(set(self.model.compare_params) - set(self.model.compare_with))
        if stray:
            raise ValueError(f"model.compare_params: {stray} not named in model.compare_with "
                             f"{list(self.model.compare_with)}")
        for name, block in self.model.compare_params.items():
            try:
                kinds.validate_params(name, block)
            except ValidationError as exc:
                raise ValueError(_describe(exc, prefix=f"model.compare_params.{name}.")) from None
        used = [getattr(params, f, None) for f in ("target", "density_temperature")]
        used += [*getattr(params, "drivers", ()), *getattr(params, "angular_drivers", ())]
        unknown = sorted({u for u in used if u and u not in names})
        if unknown:
            raise ValueError(f"model.params: tags not in the use case's tags: {unknown}")

    @property
    def assets(self) -> tuple[str, ...]:
        """The historian assets (one, or the fleet's); an inspection use case's line; without a
        historian the landed files' asset (``landing.asset``, default: the use case id)."""
        if self.inspection is not None:
            return (self.inspection.line,)
        if self.historian is None:
            return (self.landing.asset if self.landing and self.landing.asset else self.id,)
        return self.historian.assets or (self.historian.asset,)

    @property
    def historian_conn(self) -> str | None:
        """The historian connection the use case reads and writes (its site's, unless it names its
        own); None: the default ``plantops_historian`` (a use case without a historian section)."""
        return self.historian.conn_id if self.historian is not None else None

    @property
    def is_fleet(self) -> bool:
        return self.historian is not None and bool(self.historian.assets)

    def model_name(self, asset: str | None = None) -> str:
        """The MLflow registered model of an asset: ``<uc>`` for one asset or a pooled fleet,
        ``<uc>.<asset>`` for a fleet trained per asset (each asset has its own champion)."""
        if not self.is_fleet or self.model.training == "pooled":
            return self.id
        if asset not in self.assets:
            raise ValueError(f"use case {self.id}: {asset!r} is not one of its assets {list(self.assets)}")
        return f"{self.id}.{asset}"

    def model_assets(self) -> tuple[str | None, ...]:
        """One entry per registered model: each asset of a per-asset fleet, else None (one model)."""
        return self.assets if self.is_fleet and self.model.training == "per_asset" else (None,)

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)

    def tags_from(self, source: str) -> tuple[Tag, ...]:
        return tuple(t for t in self.tags if t.source == source)

    def dag_id(self, stage: str) -> str:
        return f"{self.id}__{stage}"


_NAMED_FIELD = re.compile(r"^([a-z_][a-z0-9_.]*): (.*)$", re.S)


def _describe(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in error.errors():
        field = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else (prefix.rstrip(".") or "(file)")
        msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix says nothing to the reader
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        # A check across fields names the field it is about: "kubernetes.image: ...",
        # relative to the model it checks ("landing" + "pattern: ..." -> "landing.pattern: ...").
        named = _NAMED_FIELD.match(msg)
        if named:
            field = f"{field}.{named.group(1)}" if err["loc"] else named.group(1)
            msg = named.group(2)
        parts.append(f"{field}: {msg}{got_text}")
    return "; ".join(parts)


def _yaml_cache() -> Path:
    from plantops.settings import get_settings

    return get_settings().home / "cache" / "use_cases"


def _cached_yaml(path: Path) -> Any:
    """The file's YAML, through a cache of its content as JSON (keyed by the file's SHA-256).

    The DAG processor re-parses every use case on each refresh, and even libyaml's loader builds
    the Python objects in Python (~5 ms for a 52-tag file): the JSON of an unchanged file loads in
    a tenth of that. Only a document that JSON gives back equal is cached (no dates, no non-string
    keys); the cache is best effort (a read-only home parses every time) and validation is not
    cached: every parse still checks the fields."""
    data = path.read_bytes()
    cached = _yaml_cache() / f"{hashlib.sha256(data).hexdigest()}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    # libyaml's loader when present: ~10x faster than the pure-Python one.
    raw = yaml.load(data.decode(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    try:
        text = json.dumps(raw)
        if json.loads(text) == raw:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(cached)
    except (TypeError, ValueError, OSError):
        pass
    return raw


def _read_yaml(path: Path) -> Any:
    try:
        return _cached_yaml(path)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from exc


def load_site(path: Path | str) -> Site:
    """Parse one site file. Raises ConfigError('<file>: <field>: <expected>')."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: (file): expected a mapping of site fields, got {type(raw).__name__}")
    try:
        site = Site.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    if site.id != path.stem:
        raise ConfigError(f"{path}: id: expected the file name {path.stem!r}, got {site.id!r}")
    return site


# site file -> (its mtime and size; what it parsed to): the DAG factory loads every use case on
# each refresh, and a site file is read again only when it changed.
_SITES: dict[str, tuple[tuple[int, int], Site | ConfigError]] = {}


def _sites_dir(sites_dir: Path | str | None) -> Path:
    if sites_dir is not None:
        return Path(sites_dir)
    from plantops.settings import get_settings

    return get_settings().sites_dir


def load_sites(sites_dir: Path | str | None = None) -> dict[str, Site | ConfigError]:
    """Every site of the folder (default: the settings' ``sites_dir``) by file stem: its Site, or
    the ConfigError of a broken file. A file is parsed again only when its mtime or size changed."""
    folder = _sites_dir(sites_dir)
    sites: dict[str, Site | ConfigError] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            st = path.stat()
        except OSError:
            continue  # removed while listed
        key, cached = (st.st_mtime_ns, st.st_size), _SITES.get(str(path))
        if cached is None or cached[0] != key:
            try:
                cached = key, load_site(path)
            except ConfigError as exc:
                cached = key, exc
            _SITES[str(path)] = cached
        sites[path.stem] = cached[1]
    return sites


def _inherit(raw: dict[str, Any], site: Site) -> dict[str, Any]:
    """The use case's fields with the site's defaults filled in where its YAML does not set them."""
    raw = dict(raw)
    historian = raw.get("historian")
    if isinstance(historian, dict) and "conn_id" not in historian:
        raw["historian"] = {**historian, "conn_id": site.historian.conn_id}
    landing = raw.get("landing")
    # Without a site an unset zone refuses naive timestamps; with one they are the plant's clock.
    if isinstance(landing, dict) and "naive_timezone" not in landing:
        raw["landing"] = {**landing, "naive_timezone": site.timezone}
    if "approvers" not in raw:
        raw["approvers"] = [a.model_dump() for a in site.approvers]
    own = raw.get("notifications", {})
    if isinstance(own, dict):
        defaults = site.notifications
        merged = {"smtp_conn_id": defaults.smtp_conn_id, "sender": defaults.sender, **own}
        for key in ("recipients", "routes"):
            mine = own.get(key)
            if mine is None or isinstance(mine, dict):
                # Per audience (recipients) and per event (routes): the use case's entry wins.
                merged[key] = {**{k: list(v) for k, v in getattr(defaults, key).items()}, **(mine or {})}
        raw["notifications"] = merged
    return raw


def _check_site(use_case: UseCase, where: Path | str, site: Site, sites: dict[str, Site | ConfigError],
                site_file: Path) -> None:
    """What the use case sets that its site cannot allow (a plain override of a default is fine)."""
    allowed = [a.id for a in site.approvers]
    outside = [a.id for a in use_case.approvers if a.id not in allowed]
    if outside:
        operators = {o.id for o in site.operators}
        named = [f"{i} (an operator of the site)" if i in operators else i for i in outside]
        raise ConfigError(
            f"{where}: approvers: {named} are not approvers of site {site.id!r} (its approvers: {allowed}); "
            f"approvals are answered by the site's approvers only (access is per site): add them to "
            f"{site_file}, or leave approvers out to inherit the site's")
    if use_case.historian is not None and use_case.historian.conn_id != site.historian.conn_id:
        others = sorted(k for k, s in sites.items()
                        if isinstance(s, Site) and k != site.id and s.historian.conn_id == use_case.historian.conn_id)
        if others:
            raise ConfigError(
                f"{where}: historian.conn_id: {use_case.historian.conn_id!r} is the historian connection of site "
                f"{others[0]!r}, but this use case is at site {site.id!r} (connection {site.historian.conn_id!r}); "
                f"leave conn_id out to read through {site.id!r}'s historian, or set site: {others[0]}")


def parse_use_case(raw: Any, where: Path | str, sites_dir: Path | str | None = None) -> UseCase:
    """A use case's fields (a YAML file's mapping) as a UseCase; with ``site: <id>`` the site's
    defaults are inherited first (docs/sites.md). Raises ConfigError('<where>: <field>: <expected>')."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: (file): expected a mapping of use-case fields, got {type(raw).__name__}")
    site = sites = site_file = None
    name = raw.get("site")
    if name is not None:
        folder = _sites_dir(sites_dir)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: site: expected a site id (a file name in {folder}), got {name!r}")
        sites = load_sites(folder)
        if name not in sites:
            raise ConfigError(f"{where}: site: unknown site {name!r}; expected one of {sorted(sites)} "
                              f"(files in {folder})")
        site, site_file = sites[name], folder / f"{name}.yaml"
        if isinstance(site, ConfigError):
            raise ConfigError(f"{where}: site: site {name!r} does not load: {site}") from site
        raw = _inherit(raw, site)
    try:
        use_case = UseCase.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from exc
    if site is not None:
        _check_site(use_case, where, site, sites, site_file)
    return use_case


def load_use_case(path: Path | str, sites_dir: Path | str | None = None) -> UseCase:
    """Parse one YAML file, inheriting from its site (``sites_dir``, default: the settings').
    Raises ConfigError('<file>: <field>: <expected>')."""
    path = Path(path)
    use_case = parse_use_case(_read_yaml(path), path, sites_dir)
    if use_case.id != path.stem:
        raise ConfigError(f"{path}: id: expected the file name {path.stem!r}, got {use_case.id!r}")
    return use_case


def discover(directory: Path | str, pattern: str = "*.yaml",
             sites_dir: Path | str | None = None) -> tuple[dict[str, UseCase], dict[str, ConfigError]]:
    """All use cases in a folder (or those whose file matches ``pattern``): the valid ones by id,
    and the broken ones by file stem. Site files are read once, not per use case (load_sites)."""
    good: dict[str, UseCase] = {}
    bad: dict[str, ConfigError] = {}
    paths = sorted(Path(directory).glob(pattern))
    # The folder is looked up once; sites only when a use case names one (load_use_case).
    folder = _sites_dir(sites_dir) if paths else None
    for path in paths:
        try:
            good[path.stem] = load_use_case(path, folder)
        except ConfigError as exc:
            bad[path.stem] = exc
    return good, bad


def get_use_case(use_case_id: str) -> UseCase:
    from plantops.settings import get_settings

    settings = get_settings()
    return load_use_case(settings.use_cases_dir / f"{use_case_id}.yaml", settings.sites_dir)
