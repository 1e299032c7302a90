"""Checks of one canonical billing dataset: its Great Expectations suite plus native checks.

The suite (`tieout.checks.gx`) looks at one column at a time. The checks here need the schema,
other rows or other tables: money types, invoice totals against their lines, refunds and
chargebacks against the payments they reverse, the partition window and the row count against
earlier partitions. They run on Arrow, so they cost little even on large partitions, and like
every check they report bad data instead of raising.

Names: ``<table>_money_integer``, ``<table>_in_window``, ``<table>_row_count`` (see
`check_name`) and the fixed ``invoices_total_matches_lines``, ``payments_original_present``,
``payments_original_exists``, ``payments_charge_without_original``. All are severity
``error`` except the row count, which only warns.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tieout.checks.gx import PERSONAL_COLUMNS, run_suite
from tieout.checks.result import SAMPLE_SIZE, CheckResult, Severity, mask, sample
from tieout.schema import TABLES, TableSpec
from tieout.settings import ChecksSettings

__all__ = [
    "INVOICES_TOTAL_MATCHES_LINES",
    "IN_WINDOW",
    "MONEY_INTEGER",
    "PAYMENTS_CHARGE_WITHOUT_ORIGINAL",
    "PAYMENTS_ORIGINAL_EXISTS",
    "PAYMENTS_ORIGINAL_PRESENT",
    "REVERSAL_KINDS",
    "ROW_COUNT",
    "billing_checks",
    "check_name",
]

#: Suffix: every money column is an integer Arrow type (``<table>_money_integer``).
MONEY_INTEGER: Final = "money_integer"
#: Suffix: every row's window column lies in the partition window (``<table>_in_window``).
IN_WINDOW: Final = "in_window"
#: Suffix: the partition is not much smaller than the trailing ones (``<table>_row_count``).
ROW_COUNT: Final = "row_count"
INVOICES_TOTAL_MATCHES_LINES: Final = "invoices_total_matches_lines"
PAYMENTS_ORIGINAL_PRESENT: Final = "payments_original_present"
PAYMENTS_ORIGINAL_EXISTS: Final = "payments_original_exists"
PAYMENTS_CHARGE_WITHOUT_ORIGINAL: Final = "payments_charge_without_original"

#: Payment kinds that reverse (part of) an earlier payment and so must name it.
REVERSAL_KINDS: Final = ("refund", "chargeback", "chargeback_reversal")

_DEFAULT_SETTINGS: Final = ChecksSettings()
_PREFIX: Final = "billing/"


def check_name(dataset: str, suffix: str) -> str:
    """The name of a per-table check, e.g. ``check_name("payments", IN_WINDOW)``."""
    return f"{dataset.removeprefix(_PREFIX)}_{suffix}"


class _BadInput(Exception):
    """A frame a check cannot read (missing column, unusable type): the check fails."""


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise _BadInput(f"column {name} is missing")
    return table.column(name)


def _keys(table: pa.Table, spec: TableSpec, flags: pa.ChunkedArray | pa.Array) -> tuple[str, ...]:
    """Primary keys of the flagged rows (``row <n>`` for a row without one)."""
    positions = np.flatnonzero(
        np.asarray(pc.fill_null(flags, False).to_numpy(zero_copy_only=False), dtype=bool)
    )[:SAMPLE_SIZE]
    pk = spec.primary_key
    if pk in table.column_names:
        values = table.column(pk).take(pa.array(positions, pa.int64())).to_pylist()
    else:
        values = [None] * len(positions)
    shown = [
        f"row {row}" if v is None else mask(str(v)) if pk in PERSONAL_COLUMNS else str(v)
        for row, v in zip(positions.tolist(), values, strict=True)
    ]
    return sample(shown)


def _count(flags: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(flags, False).cast(pa.int64())).as_py() or 0)


def _guarded(
    name: str,
    dataset: str,
    description: str,
    rows: int,
    run: Callable[[], CheckResult],
    severity: Severity = "error",
) -> CheckResult:
    """Run one check; if the frame cannot even be read for it, the check fails and says why."""
    try:
        return run()
    except (_BadInput, pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        return CheckResult(
            name=name,
            dataset=f"{_PREFIX}{dataset}",
            passed=False,
            severity=severity,
            description=description,
            failing=rows,
            checked=rows,
            details={"error": str(exc) or type(exc).__name__},
        )


def _result(
    name: str,
    dataset: str,
    description: str,
    *,
    failing: int,
    checked: int,
    keys: tuple[str, ...] = (),
    details: dict[str, Any] | None = None,
    severity: Severity = "error",
) -> CheckResult:
    return CheckResult(
        name=name,
        dataset=f"{_PREFIX}{dataset}",
        passed=failing == 0,
        severity=severity,
        description=description,
        failing=failing,
        checked=checked,
        sample=keys,
        details=details or {},
    )


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def money_integer(dataset: str, table: pa.Table) -> CheckResult:
    """Money columns are integer minor units: a float cannot hold cents exactly and text
    cannot be summed, so either means the extraction or the source broke the contract."""
    spec = TABLES[dataset]
    name = check_name(dataset, MONEY_INTEGER)
    description = (
        f"Money columns of {dataset} ({', '.join(spec.money_columns)}) are integer minor units "
        "(Arrow integer type); floats lose cents and text cannot be summed."
    )
    types = {
        c: str(table.schema.field(c).type) if c in table.column_names else "missing"
        for c in spec.money_columns
    }
    bad = [
        c
        for c in spec.money_columns
        if c not in table.column_names or not pa.types.is_integer(table.schema.field(c).type)
    ]
    return _result(
        name,
        dataset,
        description,
        failing=len(bad),
        checked=len(spec.money_columns),
        keys=sample(f"{c}: {types[c]}" for c in bad),
        details={"types": types},
    )


def invoices_total_matches_lines(invoices: pa.Table, lines: pa.Table) -> CheckResult:
    """An invoice's total is the sum of its lines (tax and discount lines included): otherwise
    revenue posted from the lines and receivables posted from the total disagree. Only invoices
    whose lines are in `lines` are checked."""
    description = (
        "Each invoice's total_minor equals the sum of its lines' amount_minor (tax lines count "
        "toward tax, discount lines are negative); invoices without lines here are skipped, an "
        "invoice with a line without amount fails."
    )

    def run() -> CheckResult:
        sums = (
            pa.table(
                {
                    "invoice_id": _column(lines, "invoice_id"),
                    "amount_minor": _column(lines, "amount_minor"),
                }
            )
            .group_by("invoice_id")
            .aggregate(
                [
                    ("amount_minor", "sum"),
                    ("amount_minor", "count", pc.CountOptions(mode="only_null")),
                ]
            )
        )
        heads = pa.table(
            {
                "invoice_id": _column(invoices, "invoice_id"),
                "total_minor": _column(invoices, "total_minor"),
            }
        )
        joined = heads.join(sums, "invoice_id", join_type="inner")
        lines_sum = joined.column("amount_minor_sum")
        total = joined.column("total_minor")
        differs = pc.or_(
            pc.fill_null(pc.not_equal(total, lines_sum.cast(total.type)), True),
            pc.greater(joined.column("amount_minor_count"), 0),  # a line without an amount
        )
        failing = _count(differs)
        keys: tuple[str, ...] = ()
        if failing:
            keys = sample(joined.column("invoice_id").filter(differs).to_pylist())
        return _result(
            INVOICES_TOTAL_MATCHES_LINES,
            "invoices",
            description,
            failing=failing,
            checked=joined.num_rows,
            keys=keys,
            details={"invoices_without_lines": invoices.num_rows - joined.num_rows},
        )

    return _guarded(INVOICES_TOTAL_MATCHES_LINES, "invoices", description, invoices.num_rows, run)


def _has_original(table: pa.Table) -> pa.ChunkedArray:
    original = _column(table, "original_payment_id")
    return pc.fill_null(pc.greater(pc.utf8_length(original), 0), False)


def payments_original_present(table: pa.Table) -> CheckResult:
    """A refund, chargeback or chargeback reversal names the payment it reverses: without it
    the reversal cannot be netted against its charge, nor matched to the gateway's record."""
    spec = TABLES["payments"]
    description = (
        f"Every {', '.join(REVERSAL_KINDS)} has an original_payment_id (the payment it reverses)."
    )

    def run() -> CheckResult:
        reversal = pc.fill_null(
            pc.is_in(_column(table, "kind"), value_set=pa.array(REVERSAL_KINDS)), False
        )
        missing = pc.and_(reversal, pc.invert(_has_original(table)))
        failing = _count(missing)
        return _result(
            PAYMENTS_ORIGINAL_PRESENT,
            "payments",
            description,
            failing=failing,
            checked=_count(reversal),
            keys=_keys(table, spec, missing) if failing else (),
        )

    return _guarded(PAYMENTS_ORIGINAL_PRESENT, "payments", description, table.num_rows, run)


def payments_original_exists(
    table: pa.Table, known_payment_ids: Collection[str] | None = None
) -> CheckResult:
    """An original_payment_id points at a real payment, in this frame or among
    `known_payment_ids` (earlier payments the caller looked up; None means none): a dangling
    original is a reversal of nothing, and its money cannot be placed."""
    spec = TABLES["payments"]
    description = (
        "Every original_payment_id is the payment_id of a payment in this partition or an "
        "earlier one."
    )

    def run() -> CheckResult:
        has = _has_original(table)
        known = pa.array(sorted(set(known_payment_ids or ())), pa.string())
        original = _column(table, "original_payment_id")
        # The few distinct originals, anti-joined in DuckDB against the frame's ids and the
        # known ones: one parallel hash join, no per-row Python.
        con = duckdb.connect()
        try:
            con.register("p", pa.table({"id": _column(table, "payment_id"), "o": original}))
            con.register("known", pa.table({"id": known}))
            missing = (
                con.sql(
                    """SELECT DISTINCT o FROM p WHERE o IS NOT NULL AND o <> ''
                   AND o NOT IN (SELECT id FROM p WHERE id IS NOT NULL)
                   AND o NOT IN (SELECT id FROM known)"""
                )
                .to_arrow_table()
                .column("o")
            )
        finally:
            con.close()
        dangling = pc.and_(has, pc.fill_null(pc.is_in(original, value_set=missing), False))
        failing = _count(dangling)
        keys: tuple[str, ...] = ()
        if failing:
            keys = _keys(table, spec, dangling)
        return _result(
            PAYMENTS_ORIGINAL_EXISTS,
            "payments",
            description,
            failing=failing,
            checked=_count(has),
            keys=keys,
            details={"known_payment_ids": len(known)},
        )

    return _guarded(PAYMENTS_ORIGINAL_EXISTS, "payments", description, table.num_rows, run)


def payments_charge_without_original(table: pa.Table) -> CheckResult:
    """A charge is new money and reverses nothing: an original on a charge means the kind is
    wrong (a refund recorded as a charge would be counted with the wrong sign)."""
    spec = TABLES["payments"]
    description = "No charge has an original_payment_id (only reversals have one)."

    def run() -> CheckResult:
        charge = pc.fill_null(pc.equal(_column(table, "kind"), "charge"), False)
        wrong = pc.and_(charge, _has_original(table))
        failing = _count(wrong)
        return _result(
            PAYMENTS_CHARGE_WITHOUT_ORIGINAL,
            "payments",
            description,
            failing=failing,
            checked=_count(charge),
            keys=_keys(table, spec, wrong) if failing else (),
        )

    return _guarded(PAYMENTS_CHARGE_WITHOUT_ORIGINAL, "payments", description, table.num_rows, run)


def in_window(dataset: str, table: pa.Table, window: tuple[datetime, datetime]) -> CheckResult:
    """Every row's window column lies in [start, end) of the partition: a row outside was read
    by the wrong partition and would be counted twice (or never) across days."""
    spec = TABLES[dataset]
    column = spec.window_column
    name = check_name(dataset, IN_WINDOW)
    start, end = window
    description = (
        f"{column} of every {dataset} row lies in the partition window [{start.isoformat()}, "
        f"{end.isoformat()}); a row outside belongs to another day."
    )

    def run() -> CheckResult:
        values = _column(table, column)
        if not pa.types.is_timestamp(values.type):
            raise _BadInput(f"{column} is {values.type}, not a timestamp")
        lo, hi = pa.scalar(start, values.type), pa.scalar(end, values.type)
        inside = pc.and_(pc.greater_equal(values, lo), pc.less(values, hi))
        outside = pc.invert(pc.fill_null(inside, False))
        failing = _count(outside)
        return _result(
            name,
            dataset,
            description,
            failing=failing,
            checked=table.num_rows,
            keys=_keys(table, spec, outside) if failing else (),
            details={"column": column, "start": start.isoformat(), "end": end.isoformat()},
        )

    return _guarded(name, dataset, description, table.num_rows, run)


def row_count(
    dataset: str, rows: int, trailing_counts: Sequence[int], settings: ChecksSettings
) -> CheckResult:
    """A partition with far fewer rows than the ones before it usually means a broken
    extraction or a source outage, not a quiet day: worth a look, not worth blocking."""
    name = check_name(dataset, ROW_COUNT)
    share = settings.row_count_drop
    description = (
        f"The partition has at least {share:.0%} of the average rows of the trailing "
        "partitions (passes when there are none)."
    )
    if not trailing_counts:
        return _result(
            name,
            dataset,
            description,
            failing=0,
            checked=0,
            details={"rows": rows, "trailing_partitions": 0},
            severity="warn",
        )
    mean = sum(trailing_counts) / len(trailing_counts)
    threshold = share * mean
    low = rows < threshold
    return _result(
        name,
        dataset,
        description,
        failing=int(low),
        checked=1,
        details={
            "rows": rows,
            "trailing_partitions": len(trailing_counts),
            "trailing_mean": round(mean, 2),
            "threshold": round(threshold, 2),
        },
        severity="warn",
    )


def billing_checks(
    dataset: str,
    table: pa.Table,
    *,
    window: tuple[datetime, datetime] | None = None,
    invoice_lines: pa.Table | None = None,
    known_payment_ids: Collection[str] | None = None,
    trailing_counts: Sequence[int] = (),
    settings: ChecksSettings = _DEFAULT_SETTINGS,
) -> list[CheckResult]:
    """Every check of one canonical billing table: its GX suite, then the native checks.

    `window` enables the window check (tables with their own window column only: invoice
    lines travel with their invoice); `invoice_lines` enables the invoice total check;
    `known_payment_ids` are originals found outside this frame (None: none were looked up).
    """
    name = dataset.removeprefix(_PREFIX)
    if name not in TABLES:
        raise ValueError(f"unknown billing table {dataset!r}; known: {', '.join(TABLES)}")
    spec = TABLES[name]
    results = run_suite(name, table)
    if spec.money_columns:
        results.append(money_integer(name, table))
    if name == "invoices" and invoice_lines is not None:
        results.append(invoices_total_matches_lines(table, invoice_lines))
    if name == "payments":
        results.append(payments_original_present(table))
        results.append(payments_original_exists(table, known_payment_ids))
        results.append(payments_charge_without_original(table))
    if window is not None and spec.window_column in spec.column_names:
        results.append(in_window(name, table, window))
    results.append(row_count(name, table.num_rows, trailing_counts, settings))
    return results


USAGE_KEYS_PRESENT: Final = "usage_daily_keys_present"
USAGE_QUANTITY_NOT_NEGATIVE: Final = "usage_daily_quantity_not_negative"


def usage_checks(
    table: pa.Table,
    *,
    trailing_counts: Sequence[int] = (),
    settings: ChecksSettings = _DEFAULT_SETTINGS,
) -> list[CheckResult]:
    """The daily usage aggregates: every row names its customer, subscription and metric (or it
    cannot be billed), and quantities are not negative (metered usage only grows)."""
    dataset = "billing/usage_daily"
    keys = ("customer_id", "subscription_id", "metric")
    missing = pc.or_kleene(
        pc.or_kleene(pc.is_null(table.column(keys[0])), pc.is_null(table.column(keys[1]))),
        pc.is_null(table.column(keys[2])),
    )
    qty = pc.cast(table.column("quantity"), pa.decimal128(38, 9))
    negative = pc.fill_null(pc.less(qty, pa.scalar(0, pa.decimal128(38, 9))), False)

    def sample_of(flags: pa.ChunkedArray) -> tuple[str, ...]:
        rows = table.filter(flags).slice(0, 20).to_pylist()
        return tuple(f"{r['usage_date']}/{r['customer_id']}/{r['metric']}" for r in rows)

    n_missing = _count(missing)
    n_negative = _count(negative)
    return [
        CheckResult(
            name=USAGE_KEYS_PRESENT,
            dataset=dataset,
            passed=n_missing == 0,
            severity="error",
            description="Every usage aggregate names its customer, subscription and metric.",
            failing=n_missing,
            checked=table.num_rows,
            sample=sample_of(missing) if n_missing else (),
        ),
        CheckResult(
            name=USAGE_QUANTITY_NOT_NEGATIVE,
            dataset=dataset,
            passed=n_negative == 0,
            severity="error",
            description="Usage quantities are not negative.",
            failing=n_negative,
            checked=table.num_rows,
            sample=sample_of(negative) if n_negative else (),
        ),
        row_count("usage_daily", table.num_rows, trailing_counts, settings),
    ]
