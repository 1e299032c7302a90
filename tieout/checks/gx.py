"""Great Expectations suites of the canonical billing tables, built in code and run in memory.

Each canonical table gets one suite derived from `tieout.schema.TABLES`, so the suite cannot
drift from the contract: the primary key is unique and present, currency columns hold current
ISO 4217 codes, required money, currency and enum columns are present, enum columns hold their
allowed values, positive amounts are at least one minor unit, and an invoice's total is its
subtotal plus its tax.

GX runs in an ephemeral context (in-memory stores, no analytics, no progress bars): it writes
no files and opens no connections. Every expectation becomes one `CheckResult` named
``<table>_<expectation>_<column>`` (e.g. ``payments_unique_payment_id``).

Frames above `SAMPLE_THRESHOLD` rows are validated on a deterministic sample of `SAMPLE_ROWS`
rows (the result's details say ``sampled_rows``); primary-key uniqueness is still checked on
every row, natively, because a duplicate key is exactly the kind of fault a sample misses.
"""

from __future__ import annotations

import os

# Before GX is imported: no usage statistics, ever (the context config says so again below).
os.environ["GX_ANALYTICS_ENABLED"] = "False"

import functools
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

import duckdb
import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.core import ExpectationValidationResult
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.data_context.data_context.abstract_data_context import (
    AbstractDataContext,
)
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.datasource.fluent.pandas_datasource import PandasDatasource

# The classes `gx.expectations` re-exports, imported from where they live (typed there).
from great_expectations.expectations.core.expect_column_values_to_be_between import (
    ExpectColumnValuesToBeBetween,
)
from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
    ExpectColumnValuesToBeInSet,
)
from great_expectations.expectations.core.expect_column_values_to_be_unique import (
    ExpectColumnValuesToBeUnique,
)
from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
    ExpectColumnValuesToNotBeNull,
)
from great_expectations.expectations.expectation import Expectation

from tieout.checks.result import SAMPLE_SIZE, CheckResult, mask, sample
from tieout.money import CURRENCY_EXPONENTS
from tieout.schema import TABLES, TableSpec

__all__ = [
    "DERIVED_TOTAL",
    "PERSONAL_COLUMNS",
    "SAMPLE_ROWS",
    "SAMPLE_SEED",
    "SAMPLE_THRESHOLD",
    "check_name",
    "run_suite",
    "suite_for",
]

#: Above this many rows the suite runs on a sample (primary-key uniqueness never does).
SAMPLE_THRESHOLD: Final = 1_000_000
#: Rows in that sample: enough to see any systematic fault, small enough to validate in seconds.
SAMPLE_ROWS: Final = 100_000
#: Seed of the sample, so the same frame is always checked on the same rows.
SAMPLE_SEED: Final = 4217
#: Columns whose values are personal data: masked wherever they appear in a sample.
PERSONAL_COLUMNS: Final = frozenset({"email", "name"})
#: invoices: ``total_minor - subtotal_minor - tax_minor``, derived in pandas before validating.
DERIVED_TOTAL: Final = "total_minus_parts"

_PREFIX: Final = "billing/"
_DATASOURCE: Final = "tieout_billing"
_ISO_4217: Final = tuple(sorted(CURRENCY_EXPONENTS))
_SHORT_NAMES: Final = {
    "expect_column_values_to_not_be_null": "not_null",
    "expect_column_values_to_be_unique": "unique",
    "expect_column_values_to_be_in_set": "in_set",
    "expect_column_values_to_be_between": "between",
}
_UNIQUE: Final = "expect_column_values_to_be_unique"
_LOCK: Final = threading.RLock()


def _table_name(dataset: str) -> str:
    name = dataset.removeprefix(_PREFIX)
    if name not in TABLES:
        raise ValueError(f"unknown billing table {dataset!r}; known: {', '.join(TABLES)}")
    return name


def check_name(dataset: str, expectation: Expectation) -> str:
    """``<table>_<short expectation name>_<column>``, e.g. ``payments_in_set_currency``."""
    column = str(getattr(expectation, "column", ""))
    short = _SHORT_NAMES.get(expectation.expectation_type, expectation.expectation_type)
    return f"{_table_name(dataset)}_{short}_{column}"


def _expectations(spec: TableSpec) -> list[Expectation]:
    pk = spec.primary_key
    out: dict[tuple[str, str], Expectation] = {}

    def add(e: Expectation) -> None:
        out.setdefault((e.expectation_type, str(getattr(e, "column", ""))), e)

    add(
        ExpectColumnValuesToNotBeNull(
            column=pk, description=f"Every {spec.name} row has its key {pk}."
        )
    )
    add(
        ExpectColumnValuesToBeUnique(
            column=pk,
            description=f"No two {spec.name} rows share the key {pk}; a duplicate would count "
            "money twice. Always checked on every row.",
        )
    )
    for col in spec.columns:
        required = not col.nullable and col.name != pk
        if col.kind == "money" and required:
            add(
                ExpectColumnValuesToNotBeNull(
                    column=col.name,
                    description=f"{col.name} is always given: a missing amount cannot be tied out.",
                )
            )
        if col.kind == "code3" or col.choices:
            if required:
                add(
                    ExpectColumnValuesToNotBeNull(
                        column=col.name, description=f"{col.name} is always given."
                    )
                )
            if col.kind == "code3":
                add(
                    ExpectColumnValuesToBeInSet(
                        column=col.name,
                        value_set=list(_ISO_4217),
                        description=f"{col.name} is a current ISO 4217 code with a minor unit "
                        "(upper case); amounts in any other code cannot be valued.",
                    )
                )
            else:
                add(
                    ExpectColumnValuesToBeInSet(
                        column=col.name,
                        value_set=list(col.choices),
                        description=f"{col.name} is one of {', '.join(col.choices)}; any other "
                        "value would fall outside every reconciliation rule.",
                    )
                )
        if col.positive:
            add(
                ExpectColumnValuesToBeBetween(
                    column=col.name,
                    min_value=1,
                    description=f"{col.name} is at least one minor unit: it is a magnitude, "
                    "the kind gives the sign.",
                )
            )
    if spec.name == "invoices":
        add(
            ExpectColumnValuesToBeBetween(
                column=DERIVED_TOTAL,
                min_value=0,
                max_value=0,
                description=f"total_minor equals subtotal_minor + tax_minor: {DERIVED_TOTAL} "
                "(total_minor - subtotal_minor - tax_minor, computed in pandas before "
                "validating) is 0 on every invoice.",
            )
        )
    return list(out.values())


@functools.cache
def _suite(name: str) -> gx.ExpectationSuite:
    # Passed to the constructor, not added one by one: `add_expectation` looks the suite up in
    # the current project's store (and needs an active context) to decide whether to save it.
    _context()
    return gx.ExpectationSuite(name=f"billing_{name}", expectations=_expectations(TABLES[name]))


def suite_for(dataset: str) -> gx.ExpectationSuite:
    """The suite of a canonical billing table (``payments`` or ``billing/payments``).

    Built once per process and shared: do not modify it.
    """
    name = _table_name(dataset)
    with _LOCK:
        return _suite(name)


@functools.cache
def _context() -> AbstractDataContext:
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@functools.cache
def _datasource() -> PandasDatasource:
    return _context().data_sources.add_pandas(_DATASOURCE)


@functools.cache
def _batch_definition(name: str) -> BatchDefinition[Any]:
    asset = _datasource().add_dataframe_asset(name)
    return asset.add_batch_definition_whole_dataframe(f"{name}_whole")


def _needed_columns(suite: gx.ExpectationSuite) -> list[str]:
    cols = [str(getattr(e, "column", "")) for e in suite.expectations]
    out = [c for c in cols if c and c != DERIVED_TOTAL]
    if DERIVED_TOTAL in cols:
        out += ["total_minor", "subtotal_minor", "tax_minor"]
    return list(dict.fromkeys(out))


def _sample_positions(rows: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(rows, size=SAMPLE_ROWS, replace=False)).astype(np.int64)


def _frame(
    table: pa.Table | pd.DataFrame, columns: Iterable[str], positions: np.ndarray[Any, Any] | None
) -> pd.DataFrame:
    """The columns GX needs (those present) as pandas, indexed by row position in `table`."""
    if isinstance(table, pa.Table):
        present = [c for c in columns if c in table.column_names]
        sub = table.select(present)
        if positions is not None:
            sub = sub.take(pa.array(positions))
        df: pd.DataFrame = sub.to_pandas()
    else:
        present = [c for c in columns if c in table.columns]
        df = table[present]
        if positions is not None:
            df = df.iloc[positions]
        df = df.copy()
    df.index = pd.RangeIndex(len(df)) if positions is None else pd.Index(positions)
    return df


def _add_total_minus_parts(df: pd.DataFrame) -> None:
    parts = ("total_minor", "subtotal_minor", "tax_minor")
    if all(p in df.columns for p in parts):
        total, subtotal, tax = (pd.to_numeric(df[p], errors="coerce") for p in parts)
        df[DERIVED_TOTAL] = total - subtotal - tax


def _error(info: Mapping[str, Any] | None) -> str | None:
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "expectation raised")
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message") or "expectation raised")
    return None


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def _keys_at(table: pa.Table | pd.DataFrame, key: str, positions: Iterable[int]) -> tuple[str, ...]:
    """`key` values of the rows at `positions` (``row <n>`` where there is none), masked."""
    rows = [int(p) for p in positions]
    if isinstance(table, pa.Table):
        values = (
            table.column(key).take(pa.array(rows, pa.int64())).to_pylist()
            if key in table.column_names
            else [None] * len(rows)
        )
    else:
        values = table[key].iloc[rows].tolist() if key in table.columns else [None] * len(rows)
    shown: list[str] = []
    for row, value in zip(rows, values, strict=True):
        if _is_null(value):
            shown.append(f"row {row}")
        elif key in PERSONAL_COLUMNS:
            shown.append(mask(str(value)))
        else:
            shown.append(str(value))
    return sample(dict.fromkeys(shown))


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _kwargs(result: ExpectationValidationResult) -> dict[str, Any]:
    config = result.expectation_config
    raw = dict(config.kwargs) if config is not None else {}
    out = {k: _plain(v) for k, v in raw.items() if k != "batch_id"}
    if out.get("value_set") == list(_ISO_4217):  # 165 codes: name the list, not its items
        out["value_set"] = f"ISO 4217 ({len(_ISO_4217)} codes, tieout.money.CURRENCY_EXPONENTS)"
    return out


def _any_duplicate(column: pa.ChunkedArray) -> bool:
    con = duckdb.connect()
    try:
        con.register("k", pa.table({"k": column}))
        rows = con.sql("SELECT count(k) - count(DISTINCT k) FROM k").fetchall()
    finally:
        con.close()
    return bool(rows and rows[0][0])


def _duplicates(
    table: pa.Table | pd.DataFrame, pk: str, key: str
) -> tuple[int, tuple[str, ...]] | None:
    """Rows sharing a primary key (nulls aside) over the whole frame, natively, and a sample.

    Counts every row of a duplicated key, as GX does. None when the key column is missing.
    """
    if isinstance(table, pa.Table):
        if pk not in table.column_names:
            return None
        column = table.column(pk)
        if not _any_duplicate(column):  # the usual case, answered by one parallel count
            return 0, ()
        counts = pc.value_counts(column.drop_null())
        dup_mask = pc.greater(counts.field("counts"), 1)
        failing = int(pc.sum(pc.filter(counts.field("counts"), dup_mask)).as_py() or 0)
        if not failing:
            return 0, ()
        rows = pc.is_in(column, value_set=pc.filter(counts.field("values"), dup_mask))
        flags = np.asarray(rows.to_numpy(zero_copy_only=False), dtype=bool)
    else:
        if pk not in table.columns:
            return None
        series = table[pk]
        flags = (series.duplicated(keep=False) & series.notna()).to_numpy(dtype=bool)
        failing = int(flags.sum())
        if not failing:
            return 0, ()
    return failing, _keys_at(table, key, np.flatnonzero(flags)[: 5 * SAMPLE_SIZE])


#: SUMMARY without `unexpected_index_column_names`: GX then lists the first failing rows' index
#: labels (our row positions) cheaply. With index columns it builds a dict per failing row, which
#: takes a minute on a million failing rows.
_RESULT_FORMAT: Final = {"result_format": "SUMMARY", "partial_unexpected_count": 5 * SAMPLE_SIZE}


def run_suite(
    dataset: str, table: pa.Table | pd.DataFrame, *, key: str | None = None
) -> list[CheckResult]:
    """Validate `table` against the suite of `dataset`: one `CheckResult` per expectation.

    `key` names the column whose values make up each failing sample (default: the primary
    key); personal columns are masked. Never raises for bad data: a missing column fails the
    expectations that need it, with the reason in ``details["error"]``.
    """
    name = _table_name(dataset)
    spec = TABLES[name]
    key = key or spec.primary_key
    suite = suite_for(name)
    rows = table.num_rows if isinstance(table, pa.Table) else len(table)
    sampled = rows > SAMPLE_THRESHOLD
    positions = _sample_positions(rows) if sampled else None
    df = _frame(table, dict.fromkeys([*_needed_columns(suite), key]), positions)
    if name == "invoices":
        _add_total_minus_parts(df)

    results: dict[tuple[str, str], ExpectationValidationResult] = {}
    failure: str | None = None
    try:
        with _LOCK:
            batch = _batch_definition(name).get_batch(batch_parameters={"dataframe": df})
            validation = batch.validate(suite, result_format=dict(_RESULT_FORMAT))
    except Exception as exc:  # GX raises all sorts on odd frames; a check reports, never raises
        failure = f"Great Expectations could not validate the frame: {exc!r}"
    else:
        for res in validation.results:
            config = res.expectation_config
            if config is not None:
                results[(config.type, str(config.kwargs.get("column", "")))] = res

    out: list[CheckResult] = []
    for expectation in suite.expectations:
        column = str(getattr(expectation, "column", ""))
        etype = expectation.expectation_type
        evr = results.get((etype, column))
        details: dict[str, Any] = {"expectation": etype}
        if evr is not None:
            details["kwargs"] = _kwargs(evr)
        description = expectation.description or ""
        keys: tuple[str, ...] = ()
        dup = (
            _duplicates(table, column, key)
            if sampled and etype == _UNIQUE and column == spec.primary_key
            else None
        )
        if dup is not None:  # the key's uniqueness, over every row
            failing, keys = dup
            passed, checked = failing == 0, rows
            details["checked_in_full"] = True
        else:
            checked = len(df)
            if sampled:
                details["sampled_rows"] = checked
                details["total_rows"] = rows
                description += (
                    f" Validated on a deterministic sample of {checked:,} of {rows:,} rows."
                )
            error = failure or (
                "no result from Great Expectations" if evr is None else _error(evr.exception_info)
            )
            if error is not None or evr is None:  # e.g. a missing column: every row fails
                details["error"] = error
                passed, failing = False, checked
            else:
                summary = dict(evr.result or {})
                passed = bool(evr.success)
                failing = int(summary.get("unexpected_count") or 0)
                checked = int(summary.get("element_count") or 0)
                if failing:
                    positions_failing = summary.get("partial_unexpected_index_list") or []
                    keys = _keys_at(table, key, positions_failing)
        out.append(
            CheckResult(
                name=check_name(name, expectation),
                dataset=f"{_PREFIX}{name}",
                passed=passed,
                severity="error",
                description=description,
                failing=failing,
                checked=checked,
                sample=keys,
                details=details,
            )
        )
    return out
