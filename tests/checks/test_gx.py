"""The Great Expectations suites: every expectation passes on demo data and fails on a crafted
bad frame with the right name, count and sample; GX writes nothing; big frames are sampled."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import great_expectations as gx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tieout.checks import gx as gx_checks
from tieout.checks.gx import (
    SAMPLE_ROWS,
    SAMPLE_THRESHOLD,
    run_suite,
    suite_for,
)
from tieout.checks.result import CheckResult, mask
from tieout.demo import DemoConfig, DemoData, generate
from tieout.schema import TABLES

BILLING = ("customers", "subscriptions", "invoices", "invoice_lines", "payments", "credit_notes")

EXPECTED_NAMES: dict[str, list[str]] = {
    "customers": [
        "customers_not_null_customer_id",
        "customers_unique_customer_id",
        "customers_not_null_currency",
        "customers_in_set_currency",
    ],
    "subscriptions": [
        "subscriptions_not_null_subscription_id",
        "subscriptions_unique_subscription_id",
        "subscriptions_not_null_status",
        "subscriptions_in_set_status",
        "subscriptions_not_null_currency",
        "subscriptions_in_set_currency",
        "subscriptions_not_null_unit_amount_minor",
        "subscriptions_not_null_interval",
        "subscriptions_in_set_interval",
    ],
    "invoices": [
        "invoices_not_null_invoice_id",
        "invoices_unique_invoice_id",
        "invoices_not_null_currency",
        "invoices_in_set_currency",
        "invoices_not_null_status",
        "invoices_in_set_status",
        "invoices_not_null_subtotal_minor",
        "invoices_not_null_tax_minor",
        "invoices_not_null_total_minor",
        "invoices_between_total_minus_parts",
    ],
    "invoice_lines": [
        "invoice_lines_not_null_line_id",
        "invoice_lines_unique_line_id",
        "invoice_lines_not_null_kind",
        "invoice_lines_in_set_kind",
        "invoice_lines_not_null_amount_minor",
    ],
    "payments": [
        "payments_not_null_payment_id",
        "payments_unique_payment_id",
        "payments_not_null_kind",
        "payments_in_set_kind",
        "payments_not_null_amount_minor",
        "payments_between_amount_minor",
        "payments_not_null_currency",
        "payments_in_set_currency",
        "payments_not_null_status",
        "payments_in_set_status",
    ],
    "credit_notes": [
        "credit_notes_not_null_credit_note_id",
        "credit_notes_unique_credit_note_id",
        "credit_notes_not_null_amount_minor",
        "credit_notes_not_null_currency",
        "credit_notes_in_set_currency",
    ],
}


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate(DemoConfig(start=date(2026, 1, 1), days=30, customers=200))


def with_values(table: pa.Table, column: str, changes: Mapping[int, object]) -> pa.Table:
    """A copy of `table` with some values of `column` replaced (nulls allowed)."""
    values = table.column(column).to_pylist()
    for row, value in changes.items():
        values[row] = value
    field = table.schema.field(column).with_nullable(True)
    return table.set_column(
        table.schema.get_field_index(column), field, pa.array(values, field.type)
    )


def failed(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results if not r.passed}


# --- suites -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", BILLING)
def test_suite_for_builds_one_expectation_per_rule(dataset: str) -> None:
    suite = suite_for(dataset)
    assert isinstance(suite, gx.ExpectationSuite)
    assert [gx_checks.check_name(dataset, e) for e in suite.expectations] == EXPECTED_NAMES[dataset]
    assert suite_for(f"billing/{dataset}") is suite  # built once, shared


def test_suite_sets_come_from_the_schema() -> None:
    def kwargs(dataset: str) -> dict[str, dict[str, object]]:
        return {
            gx_checks.check_name(dataset, e): dict(e.configuration.kwargs)
            for e in suite_for(dataset).expectations
        }

    payments = kwargs("payments")
    kinds = ["charge", "refund", "chargeback", "chargeback_reversal"]
    assert payments["payments_in_set_kind"]["value_set"] == kinds
    currencies = payments["payments_in_set_currency"]["value_set"]
    assert isinstance(currencies, list)
    assert "USD" in currencies
    assert "BGN" not in currencies  # withdrawn: Bulgaria uses the euro since 2026
    assert payments["payments_between_amount_minor"]["min_value"] == 1
    total = kwargs("invoices")["invoices_between_total_minus_parts"]
    assert (total["min_value"], total["max_value"]) == (0, 0)
    derived = suite_for("invoices").expectations[-1]
    assert "computed in pandas" in (derived.description or "")


def test_unknown_dataset_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown billing table"):
        suite_for("payouts")


# --- good frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", BILLING)
def test_demo_tables_pass(demo: DemoData, dataset: str) -> None:
    table = demo.to_arrow(dataset)
    results = run_suite(dataset, table)
    assert [r.name for r in results] == EXPECTED_NAMES[dataset]
    for r in results:
        assert r.passed, r
        assert (r.failing, r.checked, r.sample) == (0, table.num_rows, ())
        assert r.severity == "error"
        assert r.dataset == f"billing/{dataset}"
        assert r.details["expectation"].startswith("expect_column_values_to_")
        assert "column" in r.details["kwargs"]
        assert "batch_id" not in r.details["kwargs"]
        assert "sampled_rows" not in r.details
        assert r.description


def test_empty_frame_passes() -> None:
    results = run_suite("payments", TABLES["payments"].arrow_schema().empty_table())
    assert all(r.passed and r.checked == 0 for r in results)


# --- bad frames -------------------------------------------------------------------------------

# (dataset, column, {row: new value}, failing check, failing count, rows whose keys are shown)
BAD_CASES = [
    ("payments", "payment_id", {4: None}, "payments_not_null_payment_id", 1, None),
    ("payments", "kind", {6: "payout"}, "payments_in_set_kind", 1, (6,)),
    ("payments", "kind", {6: None}, "payments_not_null_kind", 1, (6,)),
    ("payments", "amount_minor", {8: 0, 9: -5}, "payments_between_amount_minor", 2, (8, 9)),
    ("payments", "amount_minor", {10: None}, "payments_not_null_amount_minor", 1, (10,)),
    ("payments", "currency", {2: "usd", 3: "XAU"}, "payments_in_set_currency", 2, (2, 3)),
    ("payments", "currency", {5: None}, "payments_not_null_currency", 1, (5,)),
    ("payments", "status", {7: "settled"}, "payments_in_set_status", 1, (7,)),
    ("payments", "status", {7: None}, "payments_not_null_status", 1, (7,)),
    ("invoices", "invoice_id", {3: None}, "invoices_not_null_invoice_id", 1, None),
    ("invoices", "currency", {0: "EURO"}, "invoices_in_set_currency", 1, (0,)),
    ("invoices", "currency", {0: None}, "invoices_not_null_currency", 1, (0,)),
    ("invoices", "status", {1: "paid_late"}, "invoices_in_set_status", 1, (1,)),
    ("invoices", "status", {1: None}, "invoices_not_null_status", 1, (1,)),
    ("invoices", "subtotal_minor", {2: None}, "invoices_not_null_subtotal_minor", 1, (2,)),
    ("invoices", "tax_minor", {3: None}, "invoices_not_null_tax_minor", 1, (3,)),
    ("invoices", "total_minor", {4: None}, "invoices_not_null_total_minor", 1, (4,)),
    ("invoices", "tax_minor", {5: 1, 6: -1}, "invoices_between_total_minus_parts", 2, (5, 6)),
    ("customers", "customer_id", {0: None}, "customers_not_null_customer_id", 1, None),
    ("customers", "currency", {1: "BGN"}, "customers_in_set_currency", 1, (1,)),
    ("customers", "currency", {1: None}, "customers_not_null_currency", 1, (1,)),
    (
        "subscriptions",
        "subscription_id",
        {0: None},
        "subscriptions_not_null_subscription_id",
        1,
        None,
    ),
    ("subscriptions", "status", {0: "paused"}, "subscriptions_in_set_status", 1, (0,)),
    ("subscriptions", "status", {0: None}, "subscriptions_not_null_status", 1, (0,)),
    ("subscriptions", "interval", {1: "week"}, "subscriptions_in_set_interval", 1, (1,)),
    ("subscriptions", "interval", {1: None}, "subscriptions_not_null_interval", 1, (1,)),
    ("subscriptions", "currency", {2: "XXX"}, "subscriptions_in_set_currency", 1, (2,)),
    ("subscriptions", "currency", {2: None}, "subscriptions_not_null_currency", 1, (2,)),
    (
        "subscriptions",
        "unit_amount_minor",
        {3: None},
        "subscriptions_not_null_unit_amount_minor",
        1,
        (3,),
    ),
    ("invoice_lines", "line_id", {0: None}, "invoice_lines_not_null_line_id", 1, None),
    ("invoice_lines", "kind", {0: "fee"}, "invoice_lines_in_set_kind", 1, (0,)),
    ("invoice_lines", "kind", {0: None}, "invoice_lines_not_null_kind", 1, (0,)),
    ("invoice_lines", "amount_minor", {1: None}, "invoice_lines_not_null_amount_minor", 1, (1,)),
    ("credit_notes", "credit_note_id", {0: None}, "credit_notes_not_null_credit_note_id", 1, None),
    ("credit_notes", "currency", {0: "eur"}, "credit_notes_in_set_currency", 1, (0,)),
    ("credit_notes", "currency", {0: None}, "credit_notes_not_null_currency", 1, (0,)),
    ("credit_notes", "amount_minor", {1: None}, "credit_notes_not_null_amount_minor", 1, (1,)),
]


@pytest.mark.parametrize(
    ("dataset", "column", "changes", "check", "count", "rows"),
    BAD_CASES,
    ids=[f"{c[3]}-{i}" for i, c in enumerate(BAD_CASES)],
)
def test_bad_frame_fails_exactly_its_check(
    demo: DemoData,
    dataset: str,
    column: str,
    changes: dict[int, object],
    check: str,
    count: int,
    rows: tuple[int, ...] | None,
) -> None:
    good = demo.to_arrow(dataset)
    pk = TABLES[dataset].primary_key
    keys = good.column(pk).to_pylist()
    bad = with_values(good, column, changes)
    results = failed(run_suite(dataset, bad))
    assert set(results) == {check}
    r = results[check]
    assert (r.failing, r.checked, r.severity) == (count, good.num_rows, "error")
    expected = (
        tuple(f"row {row}" for row in changes)
        if rows is None
        else tuple(str(keys[row]) for row in rows)
    )
    assert r.sample == expected
    assert r.details["kwargs"]["column"] == (
        gx_checks.DERIVED_TOTAL if check.endswith("total_minus_parts") else column
    )


@pytest.mark.parametrize("dataset", BILLING)
def test_duplicate_primary_key_fails_unique(demo: DemoData, dataset: str) -> None:
    good = demo.to_arrow(dataset)
    pk = TABLES[dataset].primary_key
    first = good.column(pk)[0].as_py()
    bad = with_values(good, pk, {1: first, 2: first})
    results = failed(run_suite(dataset, bad))
    assert set(results) == {f"{dataset}_unique_{pk}"}
    r = results[f"{dataset}_unique_{pk}"]
    assert (r.failing, r.checked, r.sample) == (3, good.num_rows, (first,))


def test_pandas_frames_are_validated_too(demo: DemoData) -> None:
    bad = with_values(demo.to_arrow("payments"), "currency", {2: "usd"}).to_pandas()
    r = failed(run_suite("payments", bad))["payments_in_set_currency"]
    assert (r.failing, r.sample) == (1, (str(bad["payment_id"].iloc[2]),))


@pytest.mark.parametrize("key", ["email", "name"])
def test_personal_sample_keys_are_masked(demo: DemoData, key: str) -> None:
    good = demo.to_arrow("customers")
    row = next(i for i, v in enumerate(good.column(key).to_pylist()) if v)
    bad = with_values(good, "currency", {row: "usd"})
    r = failed(run_suite("customers", bad, key=key))["customers_in_set_currency"]
    value = good.column(key)[row].as_py()
    assert r.sample == (mask(value),)
    assert value not in r.sample


def test_missing_column_fails_its_expectations_without_raising(demo: DemoData) -> None:
    table = demo.to_arrow("payments").drop_columns(["kind"])
    results = failed(run_suite("payments", table))
    assert set(results) == {"payments_not_null_kind", "payments_in_set_kind"}
    for r in results.values():
        assert r.failing == r.checked == table.num_rows
        assert "kind" in r.details["error"]


def test_missing_total_part_fails_the_derived_total(demo: DemoData) -> None:
    table = demo.to_arrow("invoices").drop_columns(["tax_minor"])
    results = failed(run_suite("invoices", table))
    assert set(results) == {"invoices_not_null_tax_minor", "invoices_between_total_minus_parts"}


# --- no files, no network ---------------------------------------------------------------------


def test_gx_writes_no_files_and_opens_no_connections(
    demo: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("Great Expectations tried to open a connection")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    for cached in (
        gx_checks._context,
        gx_checks._datasource,
        gx_checks._batch_definition,
        gx_checks._suite,
    ):
        cached.cache_clear()  # a fresh context, created here
    for dataset in BILLING:
        bad = with_values(demo.to_arrow(dataset), TABLES[dataset].primary_key, {0: None})
        assert failed(run_suite(dataset, bad))
    assert list(tmp_path.iterdir()) == []
    assert os.environ["GX_ANALYTICS_ENABLED"] == "False"
    assert gx_checks._context().config.analytics_enabled is False
    assert type(gx_checks._context()).__name__ == "EphemeralDataContext"


# --- big frames -------------------------------------------------------------------------------


def test_big_frame_is_sampled_but_keys_are_checked_in_full(demo: DemoData) -> None:
    rows = 2_000_000
    assert rows > SAMPLE_THRESHOLD
    base = demo.to_arrow("payments")
    big = base.take(pa.array(np.arange(rows) % base.num_rows))
    ids = pc.binary_join_element_wise("pay_", pc.cast(pa.array(np.arange(rows)), pa.string()), "")
    dup_rows = np.zeros(rows, dtype=bool)
    dup_rows[[17, rows - 3]] = True  # far apart: a sample would almost surely miss the pair
    ids = pc.replace_with_mask(ids, pa.array(dup_rows), pa.array(["pay_dup", "pay_dup"]))
    big = big.set_column(0, big.schema.field("payment_id"), ids)
    currency = np.where(np.arange(rows) % 10 == 0, "usd", "USD")  # 10% bad, everywhere
    big = big.set_column(8, big.schema.field("currency"), pa.array(currency, pa.string()))

    started = time.perf_counter()
    results = {r.name: r for r in run_suite("payments", big)}
    assert time.perf_counter() - started < 10

    unique = results["payments_unique_payment_id"]
    assert not unique.passed
    assert (unique.failing, unique.checked, unique.sample) == (2, rows, ("pay_dup",))
    assert unique.details["checked_in_full"] is True
    assert "sampled_rows" not in unique.details

    for name, r in results.items():
        if name == "payments_unique_payment_id":
            continue
        assert r.details["sampled_rows"] == SAMPLE_ROWS == r.checked, name
        assert r.details["total_rows"] == rows
        assert "sample of 100,000 of 2,000,000 rows" in r.description
    currency_check = results["payments_in_set_currency"]
    assert not currency_check.passed
    assert 0.08 * SAMPLE_ROWS < currency_check.failing < 0.12 * SAMPLE_ROWS
    assert all(int(k.removeprefix("pay_")) % 10 == 0 for k in currency_check.sample)
    assert {n for n, r in results.items() if not r.passed} == {
        "payments_unique_payment_id",
        "payments_in_set_currency",
    }


def test_sample_is_deterministic() -> None:
    first = gx_checks._sample_positions(3_000_000)
    assert len(first) == SAMPLE_ROWS
    assert np.array_equal(first, gx_checks._sample_positions(3_000_000))
    assert np.all(np.diff(first) > 0)
