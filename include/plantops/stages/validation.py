"""Great Expectations 1.x gates built from the use-case config.

Four suites: landed files, wide (``ts`` plus one column per tag) or long (one value per row),
historian pulls (long rows) and the feature table. Each run returns a :class:`ValidationOutcome`
naming every failed expectation, and, for row-level expectations, the rows that broke them (GX's
unexpected index list), so that good rows are kept and bad rows are rejected with a reason
instead of silently dropped.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from plantops.config import UseCase

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

QUALITIES = ("good", "bad", "questionable", "substituted")


@dataclass(frozen=True)
class ValidationOutcome:
    suite: str
    success: bool
    evaluated: int
    failures: tuple[str, ...] = ()
    structural: bool = False  # the batch as a whole is unusable (schema, order, emptiness)
    bad_rows: frozenset[int] = field(default_factory=frozenset)  # positional row numbers
    row_reasons: dict[int, str] = field(default_factory=dict)

    def reason(self) -> str:
        return "; ".join(self.failures) if self.failures else "ok"


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@lru_cache(maxsize=1)
def _context():
    # No usage analytics: the plant network has no route out, and a blocked call only adds latency.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars are noise in task logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("plantops")
    asset = source.add_dataframe_asset("batch")
    return context, asset.add_batch_definition_whole_dataframe("whole")


def _run(suite_name: str, frame: pd.DataFrame, expectations: list, structural_types: set[str]) -> ValidationOutcome:
    import great_expectations as gx

    context, batch_definition = _context()
    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations)
    frame = frame.reset_index(drop=True)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5})
    failures: list[str] = []
    bad_rows: set[int] = set()
    row_reasons: dict[int, str] = {}
    structural = False
    for item in result.results:
        if item.success:
            continue
        cfg = item.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
        column = kwargs.get("column") or "/".join(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs)
        res = item.result or {}
        detail = f"{cfg.type}({column})" if column else cfg.type
        if "unexpected_count" in res:
            # A digital state or a missing cell is NaN in the frame GX sees: a list of NaN says nothing,
            # the values' own reasons (counted per tag and state) say what the cells held.
            examples = [v for v in res.get("partial_unexpected_list") or [] if not _is_nan(v)][:3]
            detail += f": {res['unexpected_count']} rows" + (f", e.g. {examples}" if examples else "")
        elif "observed_value" in res:
            detail += f": observed {res['observed_value']}"
        if item.exception_info and item.exception_info.get("raised_exception"):
            detail += f": {item.exception_info.get('exception_message')}"
        failures.append(detail)
        indices = res.get("unexpected_index_list")
        if cfg.type in structural_types or indices is None:
            structural = True
        else:
            for idx in indices:
                position = idx if isinstance(idx, int) else int(next(iter(idx.values())))
                bad_rows.add(position)
                row_reasons.setdefault(position, detail.split(":")[0])
    return ValidationOutcome(
        suite=suite_name,
        success=bool(result.success),
        evaluated=len(frame),
        failures=tuple(failures),
        structural=structural,
        bad_rows=frozenset(bad_rows),
        row_reasons=row_reasons,
    )


STRUCTURAL = {
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_be_increasing",
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_be_in_type_list",
    "expect_compound_columns_to_be_unique",
    "expect_column_values_to_be_unique",
}


def validate_landed(use_case: UseCase, frame: pd.DataFrame, max_rows: int = 1_000_000) -> ValidationOutcome:
    """A NiFi-landed file: ``ts`` plus the use case's landing tags, ordered, in range."""
    import great_expectations as gx

    tags = use_case.tags_from("landing")
    ex = gx.expectations
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(column_set=["ts", *(t.name for t in tags)], exact_match=True),
        ex.ExpectTableRowCountToBeBetween(min_value=1, max_value=max_rows),
    ]
    if "ts" in frame.columns:
        expectations += [
            ex.ExpectColumnValuesToNotBeNull(column="ts"),
            ex.ExpectColumnValuesToBeIncreasing(column="ts", strictly=True),
        ]
    for tag in tags:
        if tag.name not in frame.columns:
            continue
        expectations.append(ex.ExpectColumnValuesToBeInTypeList(column=tag.name, type_list=["float64", "float32", "int64", "int32"]))
        expectations.append(ex.ExpectColumnValuesToNotBeNull(column=tag.name))
        expectations.append(ex.ExpectColumnValuesToBeBetween(column=tag.name, min_value=tag.min, max_value=tag.max))
    return _run(f"{use_case.id}.landed", frame, expectations, STRUCTURAL)


def validate_landed_long(use_case: UseCase, frame: pd.DataFrame, max_rows: int = 1_000_000) -> ValidationOutcome:
    """A NiFi-landed file in long layout, one value per row: its columns, size and (asset, tag, ts)
    uniqueness are the file's; assets, tags, qualities and values are checked per row."""
    import great_expectations as gx

    ex = gx.expectations
    limits = {t.name: (t.min, t.max) for t in use_case.tags_from("landing")}
    checked = frame.assign(
        lo=frame["tag"].map(lambda t: limits.get(t, (float("nan"),) * 2)[0]).astype(float),
        hi=frame["tag"].map(lambda t: limits.get(t, (float("nan"),) * 2)[1]).astype(float),
    )
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(column_set=["asset", "tag", "ts", "value", "quality", "lo", "hi"], exact_match=True),
        ex.ExpectTableRowCountToBeBetween(min_value=1, max_value=max_rows),
        ex.ExpectCompoundColumnsToBeUnique(column_list=["asset", "tag", "ts"]),
        ex.ExpectColumnValuesToBeInTypeList(column="value", type_list=["float64", "float32", "int64", "int32"]),
        ex.ExpectColumnValuesToNotBeNull(column="ts"),
        ex.ExpectColumnValuesToBeInSet(column="asset", value_set=list(use_case.assets)),
        ex.ExpectColumnValuesToBeInSet(column="tag", value_set=list(limits)),
        ex.ExpectColumnValuesToBeInSet(column="quality", value_set=list(QUALITIES)),
        ex.ExpectColumnValuesToNotBeNull(column="value", row_condition='quality=="good"', condition_parser="pandas"),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="lo", or_equal=True, ignore_row_if="either_value_is_missing"),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="hi", column_B="value", or_equal=True, ignore_row_if="either_value_is_missing"),
    ]
    return _run(f"{use_case.id}.landed_long", checked, expectations, STRUCTURAL)


def validate_historian(use_case: UseCase, frame: pd.DataFrame) -> ValidationOutcome:
    """A historian pull in long format: known tags, known qualities, values within the tag's range."""
    import great_expectations as gx

    ex = gx.expectations
    tags = use_case.tags_from("historian")
    limits = {t.name: (t.min, t.max) for t in tags}
    checked = frame.assign(
        lo=frame["tag"].map(lambda t: limits.get(t, (float("nan"),) * 2)[0]),
        hi=frame["tag"].map(lambda t: limits.get(t, (float("nan"),) * 2)[1]),
    )
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(column_set=["asset", "tag", "ts", "value", "quality", "lo", "hi"], exact_match=True),
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        ex.ExpectColumnValuesToNotBeNull(column="ts"),
        ex.ExpectColumnValuesToBeInSet(column="tag", value_set=list(limits)),
        ex.ExpectColumnValuesToBeInSet(column="quality", value_set=list(QUALITIES)),
        ex.ExpectCompoundColumnsToBeUnique(column_list=["asset", "tag", "ts"]),
        # Values of good quality must be present and inside the tag's physical range.
        ex.ExpectColumnValuesToNotBeNull(column="value", row_condition='quality=="good"', condition_parser="pandas"),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="lo", or_equal=True, ignore_row_if="either_value_is_missing"),
        ex.ExpectColumnPairValuesAToBeGreaterThanB(column_A="hi", column_B="value", or_equal=True, ignore_row_if="either_value_is_missing"),
    ]
    return _run(f"{use_case.id}.historian", checked, expectations, STRUCTURAL)


def validate_features(use_case: UseCase, frame: pd.DataFrame) -> ValidationOutcome:
    """The feature gate: every feature column present; one row per asset and bucket; the rolling
    standard deviations non-null. A tag silent for longer than ``features.max_gap`` is missing by
    the feature contract (NaN in ``<tag>``, and in ``<tag>__rmean`` once its window is empty):
    that is data, not a broken build, so those two columns may be null (every model kind leaves
    incomplete rows out of its fit and scores them without the missing tag)."""
    import great_expectations as gx

    from plantops.features import feature_columns

    ex = gx.expectations
    columns = feature_columns(use_case.tag_names)
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(column_set=["asset", "ts", *columns], exact_match=False),
        ex.ExpectTableRowCountToBeBetween(min_value=1),
        ex.ExpectCompoundColumnsToBeUnique(column_list=["asset", "ts"]),
        ex.ExpectColumnValuesToNotBeNull(column="ts"),
    ]
    present = [c for c in columns if c in frame.columns and c.endswith("__rstd")]
    expectations += [ex.ExpectColumnValuesToNotBeNull(column=c) for c in present]
    return _run(f"{use_case.id}.features", frame, expectations, STRUCTURAL | {"expect_column_values_to_not_be_null"})
