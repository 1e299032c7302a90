"""The native billing checks: each passes on demo data and fails on a crafted bad frame with
the right name, severity, count and sample; none raises on a frame it cannot read."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tieout.checks.billing import (
    IN_WINDOW,
    INVOICES_TOTAL_MATCHES_LINES,
    MONEY_INTEGER,
    PAYMENTS_CHARGE_WITHOUT_ORIGINAL,
    PAYMENTS_ORIGINAL_EXISTS,
    PAYMENTS_ORIGINAL_PRESENT,
    ROW_COUNT,
    billing_checks,
    check_name,
)
from tieout.checks.result import CheckResult
from tieout.demo import DemoConfig, DemoData, generate
from tieout.schema import TABLES
from tieout.settings import ChecksSettings

BILLING = ("customers", "subscriptions", "invoices", "invoice_lines", "payments", "credit_notes")
CONFIG = DemoConfig(start=date(2026, 1, 1), days=30, customers=200)
WINDOW = (CONFIG.window_start, CONFIG.window_end)


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate(CONFIG)


def with_values(table: pa.Table, column: str, changes: Mapping[int, object]) -> pa.Table:
    values = table.column(column).to_pylist()
    for row, value in changes.items():
        values[row] = value
    field = table.schema.field(column).with_nullable(True)
    return table.set_column(
        table.schema.get_field_index(column), field, pa.array(values, field.type)
    )


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def failed(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results if not r.passed}


def rows_of(table: pa.Table, column: str, value: str) -> list[int]:
    return [i for i, v in enumerate(table.column(column).to_pylist()) if v == value]


def native(dataset: str) -> list[str]:
    names = [check_name(dataset, MONEY_INTEGER)] if TABLES[dataset].money_columns else []
    if dataset == "invoices":
        names.append(INVOICES_TOTAL_MATCHES_LINES)
    if dataset == "payments":
        names += [
            PAYMENTS_ORIGINAL_PRESENT,
            PAYMENTS_ORIGINAL_EXISTS,
            PAYMENTS_CHARGE_WITHOUT_ORIGINAL,
        ]
    if dataset != "invoice_lines":  # lines have no window column: they travel with the invoice
        names.append(check_name(dataset, IN_WINDOW))
    return [*names, check_name(dataset, ROW_COUNT)]


# --- good frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", BILLING)
def test_demo_tables_pass_every_check(demo: DemoData, dataset: str) -> None:
    table = demo.to_arrow(dataset)
    results = billing_checks(
        f"billing/{dataset}",
        table,
        window=WINDOW,
        invoice_lines=demo.to_arrow("invoice_lines") if dataset == "invoices" else None,
        trailing_counts=[table.num_rows, table.num_rows + 10],
    )
    assert not failed(results)
    names = [r.name for r in results]
    assert names[-len(native(dataset)) :] == native(dataset)
    assert len(names) == len(set(names))
    for r in results:
        assert r.dataset == f"billing/{dataset}"
        assert r.severity == ("warn" if r.name.endswith(ROW_COUNT) else "error")
        native_check = r.name in native(dataset)
        assert ("expectation" in r.details) is not native_check  # how asset checks group them
    assert by_name(results)[f"{dataset}_{ROW_COUNT}"].checked == 1


def test_optional_checks_need_their_inputs(demo: DemoData) -> None:
    names = [r.name for r in billing_checks("invoices", demo.to_arrow("invoices"))]
    assert INVOICES_TOTAL_MATCHES_LINES not in names
    assert check_name("invoices", IN_WINDOW) not in names


def test_unknown_dataset_is_a_programming_error(demo: DemoData) -> None:
    with pytest.raises(ValueError, match="unknown billing table"):
        billing_checks("usage_daily", demo.to_arrow("payments"))


# --- money types ------------------------------------------------------------------------------


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.string()])
def test_money_not_integer_fails(demo: DemoData, arrow_type: pa.DataType) -> None:
    good = demo.to_arrow("invoices")
    i = good.schema.get_field_index("tax_minor")
    bad = good.set_column(i, "tax_minor", pc.cast(good.column("tax_minor"), arrow_type))
    results = by_name(billing_checks("invoices", bad, invoice_lines=demo.to_arrow("invoice_lines")))
    r = results["invoices_money_integer"]
    assert not r.passed
    assert (r.severity, r.failing, r.checked) == ("error", 1, 3)
    assert r.sample == (f"tax_minor: {arrow_type}",)
    assert r.details["types"]["total_minor"] == "int64"


# --- invoice totals ---------------------------------------------------------------------------


def test_invoice_total_must_equal_its_lines(demo: DemoData) -> None:
    invoices, lines = demo.to_arrow("invoices"), demo.to_arrow("invoice_lines")
    line_row = 5
    invoice_id = lines.column("invoice_id")[line_row].as_py()
    amount = lines.column("amount_minor")[line_row].as_py()
    bad_lines = with_values(lines, "amount_minor", {line_row: amount + 1})
    results = failed(billing_checks("invoices", invoices, invoice_lines=bad_lines))
    assert set(results) == {INVOICES_TOTAL_MATCHES_LINES}
    r = results[INVOICES_TOTAL_MATCHES_LINES]
    assert (r.severity, r.failing, r.checked, r.sample) == (
        "error",
        1,
        invoices.num_rows,
        (invoice_id,),
    )


def test_invoice_with_a_line_without_amount_fails(demo: DemoData) -> None:
    invoices, lines = demo.to_arrow("invoices"), demo.to_arrow("invoice_lines")
    invoice_id = lines.column("invoice_id")[0].as_py()
    bad_lines = with_values(lines, "amount_minor", {0: None})
    r = by_name(billing_checks("invoices", invoices, invoice_lines=bad_lines))[
        INVOICES_TOTAL_MATCHES_LINES
    ]
    assert (r.passed, r.failing, r.sample) == (False, 1, (invoice_id,))


def test_invoices_without_lines_are_skipped(demo: DemoData) -> None:
    invoices, lines = demo.to_arrow("invoices"), demo.to_arrow("invoice_lines")
    half = set(invoices.column("invoice_id").to_pylist()[: invoices.num_rows // 2])
    some_lines = lines.filter(pc.is_in(lines.column("invoice_id"), pa.array(sorted(half))))
    r = by_name(billing_checks("invoices", invoices, invoice_lines=some_lines))[
        INVOICES_TOTAL_MATCHES_LINES
    ]
    assert r.passed
    assert r.checked == len(half)
    assert r.details["invoices_without_lines"] == invoices.num_rows - len(half)


# --- payment originals ------------------------------------------------------------------------


def test_reversal_without_original_fails(demo: DemoData) -> None:
    payments = demo.to_arrow("payments")
    refund = rows_of(payments, "kind", "refund")[0]
    bad = with_values(payments, "original_payment_id", {refund: None})
    results = failed(billing_checks("payments", bad))
    assert set(results) == {PAYMENTS_ORIGINAL_PRESENT}
    r = results[PAYMENTS_ORIGINAL_PRESENT]
    reversals = sum(
        k in ("refund", "chargeback", "chargeback_reversal")
        for k in payments.column("kind").to_pylist()
    )
    assert (r.severity, r.failing, r.checked) == ("error", 1, reversals)
    assert r.sample == (payments.column("payment_id")[refund].as_py(),)


def test_original_must_exist_here_or_among_known_ids(demo: DemoData) -> None:
    payments = demo.to_arrow("payments")
    chargeback = rows_of(payments, "kind", "chargeback")[0]
    chargeback_id = payments.column("payment_id")[chargeback].as_py()
    bad = with_values(payments, "original_payment_id", {chargeback: "pay_999999"})
    results = failed(billing_checks("payments", bad))
    assert set(results) == {PAYMENTS_ORIGINAL_EXISTS}
    r = results[PAYMENTS_ORIGINAL_EXISTS]
    assert (r.severity, r.failing, r.sample) == ("error", 1, (chargeback_id,))
    assert r.details["known_payment_ids"] == 0

    known = by_name(billing_checks("payments", bad, known_payment_ids={"pay_999999"}))
    assert known[PAYMENTS_ORIGINAL_EXISTS].passed
    assert known[PAYMENTS_ORIGINAL_EXISTS].details["known_payment_ids"] == 1


def test_original_from_an_earlier_partition_needs_looking_up(demo: DemoData) -> None:
    payments = demo.to_arrow("payments")
    refund = rows_of(payments, "kind", "refund")[0]
    original = payments.column("original_payment_id")[refund].as_py()
    refund_ids = [
        p["payment_id"] for p in payments.to_pylist() if p["original_payment_id"] == original
    ]
    without = payments.filter(pc.not_equal(payments.column("payment_id"), original))
    r = by_name(billing_checks("payments", without))[PAYMENTS_ORIGINAL_EXISTS]
    assert (r.passed, r.failing, r.sample) == (False, len(refund_ids), tuple(refund_ids))
    looked_up = billing_checks("payments", without, known_payment_ids=[original])
    assert by_name(looked_up)[PAYMENTS_ORIGINAL_EXISTS].passed


def test_charge_with_original_fails(demo: DemoData) -> None:
    payments = demo.to_arrow("payments")
    first, second = rows_of(payments, "kind", "charge")[:2]
    ids = payments.column("payment_id").to_pylist()
    bad = with_values(payments, "original_payment_id", {second: ids[first]})
    results = failed(billing_checks("payments", bad))
    assert set(results) == {PAYMENTS_CHARGE_WITHOUT_ORIGINAL}
    r = results[PAYMENTS_CHARGE_WITHOUT_ORIGINAL]
    charges = len(rows_of(payments, "kind", "charge"))
    assert (r.severity, r.failing, r.checked, r.sample) == ("error", 1, charges, (ids[second],))


# --- window -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["customers", "payments", "credit_notes"])
def test_rows_outside_the_window_fail(demo: DemoData, dataset: str) -> None:
    good = demo.to_arrow(dataset)
    start, end = WINDOW
    column = TABLES[dataset].window_column
    bad = with_values(
        good,
        column,
        {0: start, 1: end, 2: end - timedelta(microseconds=1), 3: start - timedelta(seconds=1)},
    )
    results = failed(billing_checks(dataset, bad, window=WINDOW))
    name = check_name(dataset, IN_WINDOW)
    assert set(results) == {name}
    r = results[name]
    keys = good.column(TABLES[dataset].primary_key).to_pylist()
    assert (r.severity, r.failing, r.checked) == ("error", 2, good.num_rows)
    assert r.sample == (keys[1], keys[3])  # the end is exclusive, the start inclusive
    assert r.details["column"] == column


def test_window_check_does_not_raise_on_text_timestamps(demo: DemoData) -> None:
    payments = demo.to_arrow("payments")
    i = payments.schema.get_field_index("updated_at")
    text = payments.set_column(i, "updated_at", pc.cast(payments.column("updated_at"), pa.string()))
    r = by_name(billing_checks("payments", text, window=WINDOW))[check_name("payments", IN_WINDOW)]
    assert not r.passed
    assert "not a timestamp" in r.details["error"]


# --- row count --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trailing", "drop", "passed"),
    [
        ((), 0.5, True),  # nothing to compare with
        ((400, 420), 0.5, True),  # 205 >= 0.5 * 410
        ((410, 420), 0.5, False),  # 205 < 0.5 * 415
        ((205,), 1.0, True),  # equal is not a drop
        ((240,), 0.9, False),
    ],
)
def test_row_count_against_trailing_partitions(
    demo: DemoData, trailing: tuple[int, ...], drop: float, passed: bool
) -> None:
    payments = demo.to_arrow("payments")
    assert payments.num_rows == 205
    results = billing_checks(
        "payments",
        payments,
        trailing_counts=trailing,
        settings=ChecksSettings(row_count_drop=drop),
    )
    r = by_name(results)[check_name("payments", ROW_COUNT)]
    assert r.severity == "warn"
    assert r.passed is passed
    assert r.failing == (0 if passed else 1)
    assert r.checked == (1 if trailing else 0)
    assert r.details["rows"] == 205
    assert r.details["trailing_partitions"] == len(trailing)
    assert {x.name for x in results if not x.passed} <= {r.name}


# --- never raises -----------------------------------------------------------------------------


def test_missing_columns_fail_checks_instead_of_raising(demo: DemoData) -> None:
    payments = demo.to_arrow("payments").drop_columns(["original_payment_id", "updated_at"])
    results = failed(billing_checks("payments", payments, window=WINDOW))
    for name in (
        PAYMENTS_ORIGINAL_PRESENT,
        PAYMENTS_ORIGINAL_EXISTS,
        PAYMENTS_CHARGE_WITHOUT_ORIGINAL,
        check_name("payments", IN_WINDOW),
    ):
        assert "is missing" in results[name].details["error"], name
        assert results[name].failing == payments.num_rows

    invoices = demo.to_arrow("invoices").drop_columns(["total_minor"])
    results = failed(
        billing_checks("invoices", invoices, invoice_lines=demo.to_arrow("invoice_lines"))
    )
    assert results[INVOICES_TOTAL_MATCHES_LINES].details["error"] == "column total_minor is missing"
    assert results["invoices_money_integer"].sample == ("total_minor: missing",)


def test_empty_partition_passes(demo: DemoData) -> None:
    empty = TABLES["payments"].arrow_schema().empty_table()
    results = billing_checks("payments", empty, window=WINDOW, trailing_counts=[])
    assert not failed(results)


def test_window_accepts_any_utc_offset(demo: DemoData) -> None:
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    start = datetime(2025, 12, 31, 19, tzinfo=ny)  # 2026-01-01T00:00Z
    end = start + timedelta(days=30)
    r = by_name(billing_checks("payments", demo.to_arrow("payments"), window=(start, end)))
    assert r[check_name("payments", IN_WINDOW)].passed


def test_usage_checks_pass_on_demo_aggregates_and_fail_on_bad_rows() -> None:
    from decimal import Decimal

    from tieout.checks.billing import (
        USAGE_KEYS_PRESENT,
        USAGE_QUANTITY_NOT_NEGATIVE,
        usage_checks,
    )
    from tieout.schema import USAGE_DAILY_SCHEMA

    good = pa.Table.from_pylist(
        [
            {"usage_date": date(2026, 3, 1), "customer_id": "cus_1", "subscription_id": "sub_1",
             "metric": "api_calls", "quantity": Decimal("12"), "event_count": 3},
        ],
        schema=USAGE_DAILY_SCHEMA,
    )  # fmt: skip
    assert all(r.passed for r in usage_checks(good))
    bad = pa.Table.from_pylist(
        [
            {"usage_date": date(2026, 3, 1), "customer_id": None, "subscription_id": "sub_1",
             "metric": "api_calls", "quantity": Decimal("1"), "event_count": 1},
            {"usage_date": date(2026, 3, 1), "customer_id": "cus_2", "subscription_id": "sub_2",
             "metric": "storage_gb", "quantity": Decimal("-0.5"), "event_count": 1},
        ],
        schema=pa.schema([f.with_nullable(True) for f in USAGE_DAILY_SCHEMA]),
    )  # fmt: skip
    results = {r.name: r for r in usage_checks(bad)}
    assert not results[USAGE_KEYS_PRESENT].passed
    assert results[USAGE_KEYS_PRESENT].failing == 1
    assert results[USAGE_KEYS_PRESENT].severity == "error"
    assert not results[USAGE_QUANTITY_NOT_NEGATIVE].passed
    assert results[USAGE_QUANTITY_NOT_NEGATIVE].sample == ("2026-03-01/cus_2/storage_gb",)
