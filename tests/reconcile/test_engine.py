"""The reconciliation engine, one rule per test, on small hand-built frames; then a property test
over random payments and lines (conservation, one bucket per row, determinism).

Every test states the exact exceptions (kind, ids, amount, currency) and buckets it expects, so
a change of behaviour shows up as the rule it broke.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.errors import InputDataError
from tieout.reconcile import engine
from tieout.reconcile.engine import (
    ConservationError,
    EngineConfig,
    FeeSchedule,
    ReconResult,
    check_conservation,
    reconcile,
)
from tieout.reconcile.model import exception_id
from tieout.schema import TABLES

START = date(2026, 3, 1)
END = date(2026, 3, 31)
MID = date(2026, 3, 10)  # old enough at END to be past every settlement window used here

# --------------------------------------------------------------------------------------------
# Building frames with the canonical schemas


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def pay(
    payment_id: str,
    ref: str | None = None,
    amount: int = 1000,
    *,
    kind: str = "charge",
    gateway: str = "stripe",
    currency: str = "USD",
    status: str = "succeeded",
    day: date = MID,
    hour: int = 12,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "customer_id": "cus_1",
        "invoice_id": invoice_id,
        "kind": kind,
        "original_payment_id": None,
        "gateway": gateway,
        "gateway_reference": ref,
        "amount_minor": amount,
        "currency": currency,
        "status": status,
        "created_at": at(day, hour),
        "updated_at": at(day, hour),
    }


def line(
    line_id: str,
    ref: str | None = None,
    gross: int = 1000,
    *,
    category: str = "charge",
    mod_ref: str | None = None,
    merchant_ref: str | None = None,
    gateway: str = "stripe",
    batch_id: str = "b_open",
    currency: str = "USD",
    fee: int = 0,
    presentment: tuple[str, int] | None = None,
    day: date = MID,
    hour: int = 12,
    source_row: int = 1,
) -> dict[str, Any]:
    return {
        "gateway": gateway,
        "line_id": line_id,
        "batch_id": batch_id,
        "category": category,
        "gateway_reference": ref,
        "modification_reference": mod_ref,
        "merchant_reference": merchant_ref,
        "occurred_at": at(day, hour),
        "available_on": None,
        "currency": currency,
        "gross_minor": gross,
        "fee_minor": fee,
        "net_minor": gross - fee,
        "presentment_currency": presentment[0] if presentment else None,
        "presentment_amount_minor": presentment[1] if presentment else None,
        "exchange_rate": None,
        "source_file": f"{gateway}/settlement.csv",
        "source_row": source_row,
    }


def invoice(
    invoice_id: str, total: int, status: str = "paid", currency: str = "USD"
) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "invoice_number": f"N-{invoice_id}",
        "customer_id": "cus_1",
        "subscription_id": None,
        "currency": currency,
        "status": status,
        "issued_at": at(MID),
        "due_at": at(MID + timedelta(days=14)),
        "period_start": MID,
        "period_end": MID + timedelta(days=30),
        "subtotal_minor": total,
        "tax_minor": 0,
        "total_minor": total,
        "updated_at": at(MID),
    }


def credit_note(credit_note_id: str, invoice_id: str, amount: int) -> dict[str, Any]:
    return {
        "credit_note_id": credit_note_id,
        "invoice_id": invoice_id,
        "amount_minor": amount,
        "currency": "USD",
        "reason": "goodwill",
        "issued_at": at(MID),
        "updated_at": at(MID),
    }


def table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def payments_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return table(rows, TABLES["payments"].arrow_schema())


def lines_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return table(rows, SETTLEMENT_LINE_SCHEMA)


def run(
    payments: Sequence[Mapping[str, Any]] = (),
    lines: Sequence[Mapping[str, Any]] = (),
    invoices: Sequence[Mapping[str, Any]] = (),
    credit_notes: Sequence[Mapping[str, Any]] = (),
    *,
    start: date = START,
    end: date = END,
    as_of: date | None = None,
    config: EngineConfig | None = None,
) -> ReconResult:
    return reconcile(
        payments_table(payments),
        lines_table(lines),
        table(invoices, TABLES["invoices"].arrow_schema()),
        table(credit_notes, TABLES["credit_notes"].arrow_schema()),
        start=start,
        end=end,
        as_of=as_of,
        config=config,
        run_id="test",
    )


# --------------------------------------------------------------------------------------------
# Reading results

Found = tuple[str, str | None, str | None, int, str | None]


def found(result: ReconResult) -> list[Found]:
    """(kind, payment_id, settlement_line_id, amount_minor, currency), sorted."""
    return sorted(
        (x.kind, x.payment_id, x.settlement_line_id, x.amount_minor, x.currency)
        for x in result.exceptions
    )


def pbuckets(result: ReconResult) -> dict[str, str]:
    rows = result.payment_buckets.select(["payment_id", "bucket"]).to_pylist()
    return {r["payment_id"]: r["bucket"] for r in rows}


def lbuckets(result: ReconResult) -> dict[str, str]:
    rows = result.line_buckets.select(["line_id", "bucket"]).to_pylist()
    return {r["line_id"]: r["bucket"] for r in rows}


def prules(result: ReconResult) -> dict[str, str]:
    rows = result.payment_buckets.select(["payment_id", "rule"]).to_pylist()
    return {r["payment_id"]: r["rule"] for r in rows}


def matched(result: ReconResult) -> list[tuple[str, str, str]]:
    rows = result.match_table.select(["payment_id", "line_id", "rule"]).to_pylist()
    return sorted((r["payment_id"], r["line_id"], r["rule"]) for r in rows)


def only(result: ReconResult, kind: str) -> Any:
    (x,) = [x for x in result.exceptions if x.kind == kind]
    return x


# --------------------------------------------------------------------------------------------
# Pass 1: references


def test_reference_match_charge_by_gateway_reference() -> None:
    result = run(
        [pay("p1", "ch_1", 1000)],
        # The charge line's modification reference is ignored for charges.
        [line("l1", "ch_1", 1000, mod_ref="other")],
    )
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched"}
    assert prules(result) == {"p1": "reference"}
    assert lbuckets(result) == {"l1": "matched"}
    assert matched(result) == [("p1", "l1", "reference")]
    assert result.matches == []  # only matches made outside the bulk reference pass


def test_reference_charge_does_not_match_on_modification_reference() -> None:
    """A charge line whose own reference differs is not joined through its modification one."""
    result = run([pay("p1", "ch_1", 1000)], [line("l1", "ch_x", 1000, mod_ref="ch_1")])
    assert found(result) == [
        ("missing_in_billing", None, "l1", 1000, "USD"),
        ("missing_in_gateway", "p1", None, 1000, "USD"),
        ("suggested_match", "p1", "l1", 1000, "USD"),
    ]


def test_reference_join_keeps_gateways_apart_and_filters_them() -> None:
    """The join's key codes gateway and kind together: one reference on two gateways is two
    keys, and the gateways left out by `gateways` take no part at all."""
    payments = [pay("p_st", "ch_1", 1000), pay("p_ad", "ch_1", 1000, gateway="adyen")]
    lines = [
        line("l_ad1", "ch_1", 1000, gateway="adyen"),
        line("l_ad2", "ch_1", 1000, gateway="adyen", source_row=2),
    ]
    result = run(payments, lines)
    assert [f[:3] for f in found(result)] == [
        ("duplicate_settlement", "p_ad", "l_ad2"),
        ("missing_in_gateway", "p_st", None),
    ]
    only_stripe = run(payments, lines, config=EngineConfig(gateways=["stripe"]))
    assert found(only_stripe) == [("missing_in_gateway", "p_st", None, 1000, "USD")]
    assert pbuckets(only_stripe) == {"p_st": "exception"}
    assert lbuckets(only_stripe) == {}


def test_reference_join_never_pairs_rows_without_a_gateway() -> None:
    """NULL = NULL is no match: a payment and a line without a gateway, one reference."""
    import numpy as np

    payments = payments_table([pay("p1", "ch_1", 1000), pay("p2", "ch_2", 1000)])
    payments = payments.set_column(
        payments.schema.get_field_index("gateway"),
        "gateway",
        pa.array([None, "stripe"], pa.string()),
    )
    lines = lines_table([line("l1", "ch_1", 1000), line("l2", "ch_2", 1000)])
    lines = lines.set_column(
        lines.schema.get_field_index("gateway"), "gateway", pa.array([None, "stripe"], pa.string())
    )
    empty = pa.table({"invoice_id": pa.array([], pa.string())})
    e = engine._Engine(payments, lines, empty, empty, START, END, END, "UTC", EngineConfig())
    try:
        e.code_join_inputs()
        joined = e.join()
    finally:
        e.con.close()
    rows = zip(*(joined.column(c).to_pylist() for c in ("prn", "lrn", "v")), strict=True)
    pairs = {(p, ln) for p, ln, v in rows if v}
    assert pairs == {(1, 1)}
    assert sorted(np.flatnonzero(e.p_in).tolist()) == [0, 1]


def test_reference_match_modifications_by_modification_reference() -> None:
    """Refunds, chargebacks and reversals join on the line's modification reference; a
    chargeback and its reversal share the dispute id and stay apart by kind."""
    payments = [
        pay("p_ch", "ch_1", 1000),
        pay("p_re", "re_1", 300, kind="refund"),
        pay("p_cb", "dp_1", 700, kind="chargeback"),
        pay("p_cbr", "dp_1", 700, kind="chargeback_reversal"),
    ]
    lines = [
        line("l_ch", "ch_1", 1000),
        line("l_re", "ch_1", -300, category="refund", mod_ref="re_1"),
        line("l_cb", "ch_1", -700, category="chargeback", mod_ref="dp_1"),
        line("l_cbr", "ch_1", 700, category="chargeback_reversal", mod_ref="dp_1"),
    ]
    result = run(payments, lines)
    assert found(result) == []
    assert pbuckets(result) == dict.fromkeys(["p_ch", "p_re", "p_cb", "p_cbr"], "matched")
    assert set(prules(result).values()) == {"reference"}
    assert lbuckets(result) == dict.fromkeys(["l_ch", "l_re", "l_cb", "l_cbr"], "matched")
    # Billing amounts are magnitudes; refunds and chargebacks count negative in the buckets.
    amounts = result.payment_buckets.select(["payment_id", "amount_minor"]).to_pylist()
    assert {r["payment_id"]: r["amount_minor"] for r in amounts} == {
        "p_ch": 1000,
        "p_re": -300,
        "p_cb": -700,
        "p_cbr": 700,
    }


def test_reference_match_by_presentment_amount_when_settlement_currency_differs() -> None:
    result = run(
        [pay("p1", "ch_1", 10_000, currency="JPY")],
        [line("l1", "ch_1", 6600, currency="USD", presentment=("JPY", 10_000))],
    )
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched"}
    assert lbuckets(result) == {"l1": "matched"}


def test_amount_mismatch_same_currency() -> None:
    result = run([pay("p1", "ch_1", 1000)], [line("l1", "ch_1", 990)])
    assert found(result) == [("amount_mismatch", "p1", "l1", 10, "USD")]
    x = only(result, "amount_mismatch")
    assert x.exception_id == exception_id("amount_mismatch", "p1", "l1")
    assert x.severity == "high"
    assert x.gateway == "stripe"
    assert x.day == MID
    assert pbuckets(result) == {"p1": "exception"}
    assert lbuckets(result) == {"l1": "exception"}


def test_amount_mismatch_fx_compares_presentment_amount_in_billing_currency() -> None:
    result = run(
        [pay("p1", "ch_1", 10_000, currency="JPY")],
        [line("l1", "ch_1", 6000, currency="USD", presentment=("JPY", 9000))],
    )
    assert found(result) == [("amount_mismatch", "p1", "l1", 1000, "JPY")]
    assert pbuckets(result) == {"p1": "exception"}
    assert lbuckets(result) == {"l1": "exception"}


def test_amount_mismatch_refund() -> None:
    result = run(
        [pay("p1", "re_1", 300, kind="refund")],
        [line("l1", "ch_1", -250, category="refund", mod_ref="re_1")],
    )
    assert found(result) == [("amount_mismatch", "p1", "l1", 50, "USD")]


@pytest.mark.parametrize("presentment", [None, ("GBP", 1000)], ids=["none", "other"])
def test_currency_mismatch_without_presentment_in_billing_currency(
    presentment: tuple[str, int] | None,
) -> None:
    result = run(
        [pay("p1", "ch_1", 1000, currency="EUR")],
        [line("l1", "ch_1", 1100, currency="USD", presentment=presentment)],
    )
    assert found(result) == [("currency_mismatch", "p1", "l1", 1000, "EUR")]
    assert only(result, "currency_mismatch").exception_id == exception_id(
        "currency_mismatch", "p1", "l1"
    )
    assert pbuckets(result) == {"p1": "exception"}
    assert lbuckets(result) == {"l1": "exception"}


@pytest.mark.parametrize("status", ["failed", "pending"])
def test_status_mismatch_billing_not_succeeded_gateway_settled(status: str) -> None:
    result = run([pay("p1", "ch_1", 1000, status=status)], [line("l1", "ch_1", 1000)])
    assert found(result) == [("status_mismatch", "p1", "l1", 1000, "USD")]
    assert only(result, "status_mismatch").exception_id == exception_id(
        "status_mismatch", "p1", "l1"
    )
    # A failed payment is in scope because a line names it.
    assert pbuckets(result) == {"p1": "exception"}
    assert lbuckets(result) == {"l1": "exception"}


def test_failed_payment_without_line_is_consistent_and_out_of_the_buckets() -> None:
    result = run([pay("p1", "ch_1", 1000, status="failed")], [])
    assert found(result) == []
    assert pbuckets(result) == {}


def test_duplicate_settlement_later_line_is_the_duplicate() -> None:
    # The later line comes first in the input and sorts first by id: time decides.
    lines = [
        line("l_a", "ch_1", 1000, day=MID + timedelta(days=2), source_row=1),
        line("l_b", "ch_1", 1000, day=MID + timedelta(days=1), source_row=2),
    ]
    result = run([pay("p1", "ch_1", 1000)], lines)
    assert found(result) == [("duplicate_settlement", "p1", "l_a", 1000, "USD")]
    x = only(result, "duplicate_settlement")
    assert x.exception_id == exception_id("duplicate_settlement", "l_a")
    assert x.batch_id == "b_open"
    assert x.day == MID + timedelta(days=2)
    assert lbuckets(result) == {"l_a": "exception", "l_b": "matched"}
    # The exception names the (matched) payment, so it is in the exception bucket.
    assert pbuckets(result) == {"p1": "exception"}


def test_duplicate_payment_two_billing_payments_one_reference() -> None:
    payments = [
        pay("p_b", "ch_1", 1000, hour=9),  # earlier: pairs with the line
        pay("p_a", "ch_1", 1000, hour=15),
    ]
    result = run(payments, [line("l1", "ch_1", 1000)])
    assert found(result) == [("duplicate_payment", "p_a", None, 1000, "USD")]
    assert only(result, "duplicate_payment").exception_id == exception_id(
        "duplicate_payment", "p_a"
    )
    assert pbuckets(result) == {"p_a": "exception", "p_b": "matched"}
    assert lbuckets(result) == {"l1": "matched"}


def test_reference_split_two_lines_sum_to_the_payment() -> None:
    lines = [line("l1", "ch_1", 600, source_row=1), line("l2", "ch_1", 400, source_row=2)]
    result = run([pay("p1", "ch_1", 1000)], lines)
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched"}
    assert prules(result) == {"p1": "reference_split"}
    assert lbuckets(result) == {"l1": "matched", "l2": "matched"}
    assert matched(result) == [("p1", "l1", "reference_split"), ("p1", "l2", "reference_split")]
    assert sorted((m.payment_id, m.line_id, m.rule) for m in result.matches) == matched(result)


def test_reference_split_not_summing_is_mismatch_and_duplicate() -> None:
    lines = [
        line("l1", "ch_1", 600, hour=9, source_row=1),
        line("l2", "ch_1", 500, hour=10, source_row=2),
    ]
    result = run([pay("p1", "ch_1", 1000)], lines)
    assert found(result) == [
        ("amount_mismatch", "p1", "l1", 400, "USD"),
        ("duplicate_settlement", "p1", "l2", 500, "USD"),
    ]


def test_reference_merged_two_payments_sum_to_one_line() -> None:
    payments = [pay("p1", "ch_1", 600, hour=9), pay("p2", "ch_1", 400, hour=10)]
    result = run(payments, [line("l1", "ch_1", 1000)])
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched", "p2": "matched"}
    assert prules(result) == {"p1": "reference_merged", "p2": "reference_merged"}
    assert lbuckets(result) == {"l1": "matched"}
    assert matched(result) == [("p1", "l1", "reference_merged"), ("p2", "l1", "reference_merged")]


# --------------------------------------------------------------------------------------------
# Pass 2: merchant reference


def test_merchant_reference_match_when_line_has_no_gateway_reference() -> None:
    result = run(
        [pay("p1", None, 1000, invoice_id="in_1")],
        [line("l1", None, 1000, merchant_ref="in_1")],
    )
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched"}
    assert prules(result) == {"p1": "merchant_reference"}
    assert lbuckets(result) == {"l1": "matched"}
    assert [(m.payment_id, m.line_id, m.rule) for m in result.matches] == [
        ("p1", "l1", "merchant_reference")
    ]


def test_merchant_reference_needs_the_same_amount() -> None:
    result = run(
        [pay("p1", None, 1000, invoice_id="in_1")],
        [line("l1", None, 900, merchant_ref="in_1")],
    )
    assert found(result) == [
        ("missing_in_billing", None, "l1", 900, "USD"),
        ("missing_in_gateway", "p1", None, 1000, "USD"),
    ]


def test_merchant_reference_ambiguous_is_not_matched() -> None:
    """Two payments of one invoice and amount: the line could be either, so neither matches."""
    payments = [
        pay("p1", None, 1000, invoice_id="in_1", hour=9),
        pay("p2", None, 1000, invoice_id="in_1", hour=10),
    ]
    result = run(payments, [line("l1", None, 1000, merchant_ref="in_1")])
    kinds = Counter(x.kind for x in result.exceptions)
    assert kinds == {"missing_in_billing": 1, "missing_in_gateway": 2, "suggested_match": 1}
    assert pbuckets(result) == {"p1": "exception", "p2": "exception"}


# --------------------------------------------------------------------------------------------
# Pass 3: suggestions, pending and missing


def test_suggested_match_is_reported_but_rows_stay_exceptions() -> None:
    result = run(
        [pay("p1", None, 1000, day=MID)],
        [line("l1", None, 1000, day=MID + timedelta(days=2))],
    )
    assert found(result) == [
        ("missing_in_billing", None, "l1", 1000, "USD"),
        ("missing_in_gateway", "p1", None, 1000, "USD"),
        ("suggested_match", "p1", "l1", 1000, "USD"),
    ]
    s = only(result, "suggested_match")
    assert s.exception_id == exception_id("suggested_match", "l1", "p1")
    assert s.severity == "low"
    assert "score 0.5" in s.explanation  # gap 2 days, window 3: 1 - 2/4
    assert result.matches == []
    assert pbuckets(result) == {"p1": "exception"}
    assert lbuckets(result) == {"l1": "exception"}


def test_suggested_match_picks_the_closest_payment() -> None:
    payments = [
        pay("p_far", None, 1000, day=MID),
        pay("p_near", None, 1000, day=MID + timedelta(3)),
    ]
    result = run(payments, [line("l1", None, 1000, day=MID + timedelta(days=2))])
    assert only(result, "suggested_match").payment_id == "p_near"


@pytest.mark.parametrize(
    ("amount", "kind", "gateway"),
    [(999, "charge", "stripe"), (1000, "refund", "stripe"), (1000, "charge", "adyen")],
    ids=["amount", "kind", "gateway"],
)
def test_no_suggested_match_when_amount_kind_or_gateway_differ(
    amount: int, kind: str, gateway: str
) -> None:
    result = run(
        [pay("p1", None, amount, kind=kind, gateway=gateway)],
        [line("l1", None, 1000)],
    )
    assert "suggested_match" not in {x.kind for x in result.exceptions}


def test_no_suggested_match_outside_the_suggest_window() -> None:
    result = run(
        [pay("p1", None, 1000, day=MID)],
        [line("l1", None, 1000, day=MID + timedelta(days=4))],  # window 3
    )
    assert found(result) == [
        ("missing_in_billing", None, "l1", 1000, "USD"),
        ("missing_in_gateway", "p1", None, 1000, "USD"),
    ]
    wider = run(
        [pay("p1", None, 1000, day=MID)],
        [line("l1", None, 1000, day=MID + timedelta(days=4))],
        config=EngineConfig(suggest_window_days=4),
    )
    assert "suggested_match" in {x.kind for x in wider.exceptions}


def test_pending_vs_missing_in_gateway_by_settlement_window() -> None:
    """Younger than the window (age < window days at as_of) is pending; otherwise missing. The
    global window is 7 days; adyen's override is 2."""
    payments = [
        pay("s_pending", "a", day=END - timedelta(days=6)),
        pay("s_missing", "b", day=END - timedelta(days=7)),
        pay("a_pending", "c", gateway="adyen", day=END - timedelta(days=1)),
        pay("a_missing", "d", gateway="adyen", day=END - timedelta(days=2)),
    ]
    config = EngineConfig(gateway_window_days={"adyen": 2})
    result = run(payments, [], config=config)
    assert found(result) == [
        ("missing_in_gateway", "a_missing", None, 1000, "USD"),
        ("missing_in_gateway", "s_missing", None, 1000, "USD"),
    ]
    x = next(x for x in result.exceptions if x.payment_id == "s_missing")
    assert x.exception_id == exception_id("missing_in_gateway", "s_missing")
    assert x.day == END - timedelta(days=7)
    assert pbuckets(result) == {
        "s_pending": "pending",
        "s_missing": "exception",
        "a_pending": "pending",
        "a_missing": "exception",
    }
    assert prules(result)["s_pending"] == "pending"


def test_pending_window_counts_from_as_of_not_end() -> None:
    p = pay("p1", "a", day=END - timedelta(days=3))
    assert pbuckets(run([p], [])) == {"p1": "pending"}
    later = run([p], [], as_of=END + timedelta(days=10))
    assert pbuckets(later) == {"p1": "exception"}
    assert found(later) == [("missing_in_gateway", "p1", None, 1000, "USD")]


def test_expected_kinds_braintree_chargeback_without_line_is_not_an_exception() -> None:
    payments = [
        pay("cb", "dp_1", 500, kind="chargeback", gateway="braintree", day=MID),
        pay("ch", "ch_1", 800, gateway="braintree", day=MID),
    ]
    config = EngineConfig(expected_kinds={"braintree": ("charge", "refund")})
    result = run(payments, [], config=config)
    # The charge is still expected and missing; the chargeback is neither pending nor missing.
    assert found(result) == [("missing_in_gateway", "ch", None, 800, "USD")]
    assert pbuckets(result) == {"ch": "exception"}
    assert result.conservation["USD"]["payments_input_count"] == 1
    # Without the setting the chargeback is missing too.
    plain = run(payments, [])
    assert found(plain) == [
        ("missing_in_gateway", "cb", None, 500, "USD"),
        ("missing_in_gateway", "ch", None, 800, "USD"),
    ]


def test_expected_kinds_unexpected_kind_with_a_line_still_matches() -> None:
    config = EngineConfig(expected_kinds={"braintree": ("charge", "refund")})
    result = run(
        [pay("cb", "dp_1", 500, kind="chargeback", gateway="braintree")],
        [line("l1", "ch_1", -500, category="chargeback", mod_ref="dp_1", gateway="braintree")],
        config=config,
    )
    assert found(result) == []
    assert pbuckets(result) == {"cb": "matched"}
    assert lbuckets(result) == {"l1": "matched"}


def test_expected_kinds_unexpected_kind_matched_by_merchant_reference_is_in_scope() -> None:
    config = EngineConfig(expected_kinds={"braintree": ("charge", "refund")})
    result = run(
        [pay("cb", None, 500, kind="chargeback", gateway="braintree", invoice_id="in_1")],
        [line("l1", None, -500, category="chargeback", merchant_ref="in_1", gateway="braintree")],
        config=config,
    )
    assert found(result) == []
    assert pbuckets(result) == {"cb": "matched"}
    assert prules(result) == {"cb": "merchant_reference"}
    assert result.conservation["USD"]["payments_input_count"] == 1
    assert result.conservation["USD"]["payments_input_minor"] == -500


# --------------------------------------------------------------------------------------------
# Pass 4: payouts


def batch(
    batch_id: str, charge: int, fee: int, batch_fee: int, payout: int | None, day: date
) -> list[dict[str, Any]]:
    """A charge line (matched by p_<batch>), a batch fee line and, unless None, a payout."""
    rows = [
        line(f"{batch_id}_ch", f"ch_{batch_id}", charge, fee=fee, batch_id=batch_id, day=day),
        line(f"{batch_id}_fee", None, -batch_fee, category="fee", batch_id=batch_id, day=day),
    ]
    if payout is not None:
        rows.append(
            line(
                f"{batch_id}_po",
                None,
                -payout,
                category="payout",
                batch_id=batch_id,
                day=day + timedelta(days=1),
            )
        )
    return rows


def test_payout_tied_out_batch_is_matched() -> None:
    lines = batch("b1", 1000, 30, 20, 950, MID)  # 970 - 20 - 950 = 0
    result = run([pay("p_b1", "ch_b1", 1000)], lines)
    assert found(result) == []
    assert lbuckets(result) == {"b1_ch": "matched", "b1_fee": "matched", "b1_po": "matched"}
    row = result.summary.rows[0]
    assert (row.payouts, row.payouts_tied_out) == (1, 1)


def test_payout_mismatch_batch_lines_are_exceptions() -> None:
    lines = batch("b2", 2000, 60, 0, 1900, MID)  # 1940 - 1900 = 40 not paid out
    result = run([pay("p_b2", "ch_b2", 2000)], lines)
    assert found(result) == [("payout_mismatch", None, "b2_po", 40, "USD")]
    x = only(result, "payout_mismatch")
    assert x.exception_id == exception_id("payout_mismatch", "stripe", "b2", "USD")
    assert x.batch_id == "b2"
    assert x.day == MID + timedelta(days=1)
    # The batch's non-payment lines share its fate; the charge line matched its payment.
    assert lbuckets(result) == {"b2_ch": "matched", "b2_fee": "exception", "b2_po": "exception"}
    assert pbuckets(result) == {"p_b2": "matched"}
    row = result.summary.rows[0]
    assert (row.payouts, row.payouts_tied_out) == (1, 0)


def test_payout_not_yet_paid_batch_lines_are_pending() -> None:
    lines = batch("b3", 1000, 30, 20, None, END)
    result = run([pay("p_b3", "ch_b3", 1000, day=END)], lines)
    assert found(result) == []
    assert lbuckets(result) == {"b3_ch": "matched", "b3_fee": "pending"}
    assert pbuckets(result) == {"p_b3": "matched"}


def test_payout_batches_are_per_currency() -> None:
    lines = [
        *batch("b4", 1000, 30, 20, 950, MID),
        line("b4_eur_fee", None, -50, category="fee", batch_id="b4", currency="EUR"),
    ]
    result = run([pay("p_b4", "ch_b4", 1000)], lines)
    assert found(result) == []
    assert lbuckets(result)["b4_eur_fee"] == "pending"
    assert lbuckets(result)["b4_fee"] == "matched"


def test_payout_after_the_range_leaves_the_batch_lines_pending() -> None:
    """A batch paid out after `end` is judged by the run over the payout's day: its in-range
    lines wait (pending) whether or not it ties out, and nothing is reported now."""
    bad = batch("b5", 2000, 60, 0, 1900, END)  # payout on END + 1, outside the range
    result = run([pay("p_b5", "ch_b5", 2000, day=END)], bad)
    assert found(result) == []
    assert lbuckets(result) == {"b5_ch": "matched", "b5_fee": "pending"}
    later = run(
        [pay("p_b5", "ch_b5", 2000, day=END)], bad, start=END + timedelta(1), end=END + timedelta(1)
    )
    assert found(later) == [("payout_mismatch", None, "b5_po", 40, "USD")]
    good = batch("b6", 1000, 30, 20, 950, END)
    result = run([pay("p_b6", "ch_b6", 1000, day=END)], good)
    assert found(result) == []
    assert lbuckets(result) == {"b6_ch": "matched", "b6_fee": "matched"}


# --------------------------------------------------------------------------------------------
# Pass 5: fees

SCHEDULE = FeeSchedule(percent_bps=290, fixed_minor={"USD": 30}, fx_bps=100, tolerance_minor=1)


def test_fee_variance_only_beyond_tolerance_and_with_a_schedule() -> None:
    # stripe 1000 USD: 29 + 30 = 59 expected (tolerance 1); adyen has no schedule.
    payments = [pay(f"p{i}", f"ch_{i}", 1000) for i in range(4)]
    payments.append(pay("p_ad", "ch_ad", 1000, gateway="adyen"))
    lines = [
        line("l0", "ch_0", 1000, fee=59),
        line("l1", "ch_1", 1000, fee=60),  # +1: within tolerance
        line("l2", "ch_2", 1000, fee=61),  # +2: variance
        line("l3", "ch_3", 1000, fee=50),  # -9: variance (undercharged counts too)
        line("l_ad", "ch_ad", 1000, fee=500, gateway="adyen"),
        line("l_re", "ch_0", -100, category="refund", mod_ref="re_x", fee=77),  # not a charge
    ]
    config = EngineConfig(fee_schedules={"stripe": SCHEDULE})
    result = run(payments, lines, config=config)
    assert [f for f in found(result) if f[0] == "fee_variance"] == [
        ("fee_variance", "p2", "l2", 2, "USD"),
        ("fee_variance", "p3", "l3", 9, "USD"),
    ]
    assert only(result, "missing_in_billing").settlement_line_id == "l_re"
    x = next(x for x in result.exceptions if x.settlement_line_id == "l2")
    assert x.exception_id == exception_id("fee_variance", "l2")
    assert x.severity == "medium"
    assert x.batch_id == "b_open"
    # Without any schedule, no fee is checked.
    assert "fee_variance" not in {x.kind for x in run(payments, lines).exceptions}


def test_fee_variance_rounds_half_up_and_zero_tolerance() -> None:
    # 1500 * 2.9% = 43.5 -> 44, + 30 = 74
    schedule = FeeSchedule(percent_bps=290, fixed_minor={"USD": 30}, tolerance_minor=0)
    config = EngineConfig(fee_schedules={"stripe": schedule})
    payments = [pay("p1", "ch_1", 1500), pay("p2", "ch_2", 1500)]
    lines = [line("l1", "ch_1", 1500, fee=74), line("l2", "ch_2", 1500, fee=73)]
    assert found(run(payments, lines, config=config)) == [
        ("fee_variance", "p2", "l2", 1, "USD"),
    ]


@pytest.mark.parametrize("chunk", [None, 3], ids=["whole", "sliced"])
@pytest.mark.parametrize("fx", [False, True], ids=["plain", "fx"])
def test_fee_variance_agrees_with_fee_schedule_expected(
    fx: bool, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's fee arithmetic is FeeSchedule.expected's: a line charged exactly that is
    never a variance at tolerance 0, one minor unit more always is (also when the lines are
    checked a few at a time)."""
    if chunk is not None:
        monkeypatch.setattr(engine, "FEE_CHUNK", chunk)
    schedule = FeeSchedule(percent_bps=259, fixed_minor={"USD": 49}, fx_bps=100, tolerance_minor=0)
    config = EngineConfig(fee_schedules={"stripe": schedule})
    grosses = [1, 17, 50, 193, 1500, 12_345, 99_999, 1_000_001]
    payments, lines = [], []
    for i, gross in enumerate(grosses):
        fee = schedule.expected(gross, "USD", fx)
        presentment = ("JPY", gross * 150) if fx else None
        payments += [pay(f"p{i}", f"ch_{i}", gross), pay(f"q{i}", f"cq_{i}", gross)]
        lines += [
            line(f"l{i}", f"ch_{i}", gross, fee=fee, presentment=presentment),
            line(f"m{i}", f"cq_{i}", gross, fee=fee + 1, presentment=presentment),
        ]
    if fx:  # the payments are in JPY: they match the lines by presentment amount
        for p in payments:
            p["currency"] = "JPY"
            p["amount_minor"] *= 150
    result = run(payments, lines, config=config)
    assert sorted(str(x.settlement_line_id) for x in result.exceptions) == sorted(
        f"m{i}" for i in range(len(grosses))
    )
    assert {(x.kind, x.amount_minor) for x in result.exceptions} == {("fee_variance", 1)}


def test_fee_variance_beyond_int64_safe_amounts_is_worked_out_in_duckdb() -> None:
    """Amounts so large that the vectorized arithmetic could overflow go the SQL way, with
    the same findings."""
    gross = 10**16  # 2 * gross * 290 bps is past what the numpy path accepts
    exact = SCHEDULE.expected(gross, "USD", False)
    payments = [pay("p1", "ch_1", gross), pay("p2", "ch_2", gross)]
    lines = [line("l1", "ch_1", gross, fee=exact), line("l2", "ch_2", gross, fee=exact + 5)]
    config = EngineConfig(fee_schedules={"stripe": SCHEDULE})
    assert found(run(payments, lines, config=config)) == [
        ("fee_variance", "p2", "l2", 5, "USD"),
    ]


def test_fee_variance_applies_fx_surcharge_to_presentment_lines() -> None:
    # FX line: (290 + 100) bps of 1000 = 39, + 30 = 69; without the surcharge it would be 59.
    payments = [
        pay("p1", "ch_1", 15_000, currency="JPY"),
        pay("p2", "ch_2", 15_000, currency="JPY"),
    ]
    lines = [
        line("l1", "ch_1", 1000, fee=69, presentment=("JPY", 15_000)),
        line("l2", "ch_2", 1000, fee=59, presentment=("JPY", 15_000)),
    ]
    config = EngineConfig(fee_schedules={"stripe": SCHEDULE})
    result = run(payments, lines, config=config)
    assert found(result) == [("fee_variance", "p2", "l2", 10, "USD")]
    assert lbuckets(result) == {"l1": "matched", "l2": "exception"}


# --------------------------------------------------------------------------------------------
# Pass 6: invoices


def invoice_case(status: str, total: int, charge: int, refund: int | None) -> dict[str, Any]:
    return {"status": status, "total": total, "charge": charge, "refund": refund}


def run_invoices(cases: Mapping[str, Mapping[str, Any]], credit: Mapping[str, int]) -> ReconResult:
    """One invoice per case, its charge (and refund) settled by a matching line."""
    payments, lines, invoices = [], [], []
    for inv_id, c in cases.items():
        invoices.append(invoice(inv_id, c["total"], c["status"]))
        payments.append(pay(f"{inv_id}_ch", f"ch_{inv_id}", c["charge"], invoice_id=inv_id))
        lines.append(line(f"l_{inv_id}_ch", f"ch_{inv_id}", c["charge"]))
        if c["refund"] is not None:
            payments.append(
                pay(
                    f"{inv_id}_re",
                    f"re_{inv_id}",
                    c["refund"],
                    kind="refund",
                    invoice_id=inv_id,
                )
            )
            lines.append(
                line(
                    f"l_{inv_id}_re",
                    f"ch_{inv_id}",
                    -c["refund"],
                    category="refund",
                    mod_ref=f"re_{inv_id}",
                )
            )
    notes = [credit_note(f"cn_{i}", inv, amount) for i, (inv, amount) in enumerate(credit.items())]
    return run(payments, lines, invoices, notes)


def test_invoice_payment_mismatch_credit_note_without_refund_on_paid_invoice() -> None:
    result = run_invoices({"in_1": invoice_case("paid", 1000, 1000, None)}, {"in_1": 200})
    assert [(x.kind, x.invoice_id, x.amount_minor, x.currency) for x in result.exceptions] == [
        ("invoice_payment_mismatch", "in_1", 200, "USD")
    ]
    x = result.exceptions[0]
    assert x.exception_id == exception_id("invoice_payment_mismatch", "in_1")
    assert x.gateway == "stripe"
    assert x.payment_id is None
    assert x.settlement_line_id is None
    # Billing's own books disagree; the payment and its line still matched each other.
    assert pbuckets(result) == {"in_1_ch": "matched"}
    assert lbuckets(result) == {"l_in_1_ch": "matched"}


def test_invoice_refund_and_credit_note_is_consistent() -> None:
    cases = {
        "in_2": invoice_case("paid", 1000, 1000, 200),
        "in_ok": invoice_case("paid", 500, 500, None),
    }
    result = run_invoices(cases, {"in_2": 200})
    assert found(result) == []


@pytest.mark.parametrize("status", ["void", "uncollectible", "draft"])
def test_invoice_payment_mismatch_void_invoice_with_money(status: str) -> None:
    """Such an invoice expects nothing: all the money received is at risk."""
    result = run_invoices({"in_3": invoice_case(status, 500, 500, None)}, {})
    assert [(x.kind, x.invoice_id, x.amount_minor, x.currency) for x in result.exceptions] == [
        ("invoice_payment_mismatch", "in_3", 500, "USD")
    ]


def test_invoice_payment_mismatch_fully_paid_but_open() -> None:
    cases = {
        "in_4": invoice_case("open", 700, 700, None),
        "in_part": invoice_case("open", 700, 300, None),  # partly paid and open: fine
    }
    result = run_invoices(cases, {})
    assert [(x.kind, x.invoice_id, x.amount_minor, x.currency) for x in result.exceptions] == [
        ("invoice_payment_mismatch", "in_4", 700, "USD")
    ]
    assert "Mark it paid" in result.exceptions[0].explanation


def test_invoice_outside_the_range_is_not_checked() -> None:
    """An invoice is checked by the runs whose range holds one of its payments."""
    inv = invoice("in_5", 1000, "paid")
    p = pay("p5", "ch_5", 1000, invoice_id="in_5", day=START - timedelta(days=3))
    ln = line("l5", "ch_5", 1000, day=START - timedelta(days=2))
    result = run([p], [ln], [inv], [credit_note("cn_5", "in_5", 200)])
    assert found(result) == []


def test_invoice_sums_beyond_int64_safe_amounts_are_worked_out_in_duckdb() -> None:
    """Sums the vectorized invoice check could overflow go the SQL way, same findings."""
    big = 2**61  # two such payments already reach the numpy path's bound
    cases = {
        "in_a": invoice_case("paid", big, big, None),
        "in_b": invoice_case("paid", big, big - 100, None),
    }
    result = run_invoices(cases, {})
    assert [(x.kind, x.invoice_id, x.amount_minor) for x in result.exceptions] == [
        ("invoice_payment_mismatch", "in_b", 100)
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases=st.lists(
        st.tuples(
            st.sampled_from(["paid", "open", "void", "uncollectible", "draft", "odd"]),
            st.integers(-2, 3),  # total, in hundreds
            st.lists(  # payments: kind, status, amount in hundreds (None: no amount)
                st.tuples(
                    st.sampled_from(["charge", "refund", "chargeback", "chargeback_reversal"]),
                    st.sampled_from(["succeeded", "failed", "pending"]),
                    st.one_of(st.none(), st.integers(0, 3)),
                ),
                max_size=3,
            ),
            st.lists(st.integers(0, 2), max_size=2),  # credit notes, in hundreds
        ),
        max_size=8,
    ),
    dup=st.booleans(),
)
def test_property_vectorized_invoice_check_agrees_with_sql(
    cases: list[tuple[str, int, list[tuple[str, str, int | None]], list[int]]], dup: bool
) -> None:
    """The numpy invoice check (`_flagged_fast`) flags exactly the invoices INVOICE_SQL
    flags, with the same sums, over statuses, null amounts, credit notes, invoices without
    payments, payments of unknown invoices and duplicated invoice ids."""
    payments, invoices, notes = [], [], []
    for i, (status, total, pays, credits) in enumerate(cases):
        invoices.append(invoice(f"in_{i}", total * 100, status))
        if dup and i == 0:
            invoices.append(invoice(f"in_{i}", total * 100 + 1, status))
        for j, (kind, pay_status, amount) in enumerate(pays):
            p = pay(
                f"p_{i}_{j}", f"r_{i}_{j}", 0, kind=kind, status=pay_status, invoice_id=f"in_{i}"
            )
            p["amount_minor"] = None if amount is None else amount * 100
            payments.append(p)
        notes += [credit_note(f"cn_{i}_{k}", f"in_{i}", c * 100) for k, c in enumerate(credits)]
    payments.append(pay("p_stray", "r_stray", 500, invoice_id="in_unknown"))
    e = engine._Engine(
        payments_table(payments),
        lines_table([]),
        table(invoices, TABLES["invoices"].arrow_schema()),
        table(notes, TABLES["credit_notes"].arrow_schema()),
        START,
        END,
        END,
        "UTC",
        EngineConfig(),
    )
    try:
        e.code_join_inputs()
        fast = e.on_cursor(e.flagged_invoices)
        sql = e.on_cursor(lambda con: e.flagged_invoices(con, vectorized=False))
    finally:
        e.con.close()
    # Rows of one duplicated invoice id may come in either order from SQL.
    assert sorted(map(sorted, map(dict.items, fast))) == sorted(map(sorted, map(dict.items, sql)))
    assert [r["invoice_id"] for r in fast] == sorted(r["invoice_id"] for r in fast)
    assert all(isinstance(r["received"], int) for r in fast)


def test_rows_breaking_the_canonical_contract_are_rejected_with_their_keys() -> None:
    """A row without a value the engine cannot do without (no gateway to expect a settlement
    from, no day, no amount) would end in no bucket for certain: reconcile() names the rows
    and the fix instead of failing inside (it used to raise a ConservationError)."""
    payments = [pay("p_ok", "ch_ok"), pay("p_nogw", "ch_1", gateway=None)]
    payments += [{**pay(f"p_noday{i}", f"ch_d{i}"), "created_at": None} for i in range(7)]
    payments.append({**pay("x", "ch_x"), "payment_id": None})
    lines = [line("l_ok", "ch_ok"), {**line("l_nocur", "ch_2"), "currency": None}]
    with pytest.raises(InputDataError) as caught:
        run(payments, lines)
    message = str(caught.value)
    assert "1 of the payments have no gateway (payment_id p_nogw)" in message
    assert (
        "7 of the payments have no created_at (payment_id p_noday0, p_noday1, p_noday2, "
        "p_noday3, p_noday4 and 2 more)"
    ) in message
    assert "1 of the payments have no payment_id (payment_id row 9)" in message
    assert "1 of the settlement lines have no currency (line_id l_nocur)" in message
    assert "fix them at the source" in message
    # The same rows, valid, reconcile.
    result = run([pay("p_ok", "ch_ok")], [line("l_ok", "ch_ok")])
    assert pbuckets(result) == {"p_ok": "matched"}


def test_a_missing_column_is_named() -> None:
    lines = lines_table([line("l1", "ch_1")]).drop_columns(["fee_minor"])
    with pytest.raises(InputDataError, match="the settlement lines have no column 'fee_minor'"):
        reconcile(
            payments_table([pay("p1", "ch_1")]),
            lines,
            table([], TABLES["invoices"].arrow_schema()),
            table([], TABLES["credit_notes"].arrow_schema()),
            start=START,
            end=END,
        )


# --------------------------------------------------------------------------------------------
# Scope


def test_rows_outside_the_range_are_context_only() -> None:
    before = START - timedelta(days=2)
    after = END + timedelta(days=1)
    payments = [
        pay("p_ctx", "ch_ctx", 1000, day=START - timedelta(days=1)),  # matched by an in-range line
        pay("p_old_missing", "ch_old", 1000, day=before),  # no line, before start
        pay("p_new_missing", "ch_new", 1000, day=after),  # no line, after end
        pay("p_old_pair", "ch_pair", 1000, day=before),  # mismatch entirely before start
        pay("p_edge", "ch_edge", 1000, day=START - timedelta(days=1)),  # mismatch into range
    ]
    lines = [
        line("l_in", "ch_ctx", 1000, day=START),
        line("l_old_orphan", "ch_orphan", 1000, day=before),
        line("l_old_pair", "ch_pair", 900, day=before),
        line("l_edge", "ch_edge", 900, day=START),
    ]
    result = run(payments, lines)
    assert found(result) == [("amount_mismatch", "p_edge", "l_edge", 100, "USD")]
    assert only(result, "amount_mismatch").day == START  # the in-range side
    assert pbuckets(result) == {}  # every payment lies outside the range
    assert lbuckets(result) == {"l_in": "matched", "l_edge": "exception"}


def test_in_range_payment_matched_by_a_line_after_end() -> None:
    result = run(
        [pay("p1", "ch_1", 1000, day=END)], [line("l1", "ch_1", 1000, day=END + timedelta(2))]
    )
    assert found(result) == []
    assert pbuckets(result) == {"p1": "matched"}
    assert lbuckets(result) == {}


def test_fee_variance_and_payouts_outside_the_range_are_not_reported() -> None:
    before = START - timedelta(days=5)
    lines = batch("b_old", 1000, 500, 0, 400, before)  # bad fee, bad payout, all before start
    config = EngineConfig(fee_schedules={"stripe": SCHEDULE})
    result = run([pay("p_b_old", "ch_b_old", 1000, day=before)], lines, config=config)
    assert found(result) == []
    assert result.summary.rows == []


# --------------------------------------------------------------------------------------------
# Identity and conservation


def messy() -> tuple[list[dict[str, Any]], list[dict[str, Any]], EngineConfig]:
    """A bit of everything, all in range."""
    payments = [
        pay("p_ok", "ch_ok", 1000),
        pay("p_amt", "ch_amt", 1000, currency="EUR"),
        pay("p_cur", "ch_cur", 1000, currency="GBP"),
        pay("p_fail", "ch_fail", 1000, status="failed"),
        pay("p_dup1", "ch_dup", 500, hour=8),
        pay("p_dup2", "ch_dup", 500, hour=9),
        pay("p_miss", None, 700),
        pay("p_pend", "ch_pend", 300, day=END),
        pay("p_re", "re_1", 200, kind="refund"),
        pay("p_jpy", "ch_jpy", 10_000, currency="JPY"),
    ]
    lines = [
        line("l_ok", "ch_ok", 1000, fee=59, batch_id="b1", source_row=1),
        line("l_ok2", "ch_ok", 1000, fee=59, batch_id="b1", hour=13, source_row=2),
        line("l_amt", "ch_amt", 990, currency="EUR", batch_id="b2", source_row=3),
        line("l_cur", "ch_cur", 1000, currency="USD", fee=59, batch_id="b1", source_row=4),
        line("l_fail", "ch_fail", 1000, fee=59, batch_id="b1", source_row=5),
        line("l_dup", "ch_dup", 500, fee=44, batch_id="b1", source_row=6),
        line("l_orphan", None, 700, fee=50, batch_id="b1", source_row=7),
        line("l_re", "ch_ok", -200, category="refund", mod_ref="re_1", batch_id="b1", source_row=8),
        line("l_jpy", "ch_jpy", 6600, fee=99, presentment=("JPY", 10_000), batch_id="b1"),
        line("l_fee", None, -25, category="fee", batch_id="b1", source_row=9),
        line("l_po", None, -5000, category="payout", batch_id="b1", day=MID + timedelta(1)),
        line("l_eur_fee", None, -10, category="fee", batch_id="b2", currency="EUR"),
    ]
    return payments, lines, EngineConfig(fee_schedules={"stripe": SCHEDULE})


def test_exception_ids_stable_across_runs_and_independent_of_row_order() -> None:
    payments, lines, config = messy()
    first = run(payments, lines, config=config)
    again = run(payments, lines, config=config)
    rng = random.Random(7)
    for _ in range(3):
        p, ln = list(payments), list(lines)
        rng.shuffle(p)
        rng.shuffle(ln)
        shuffled = run(list(reversed(p)), ln, config=config)
        assert [x.as_row() for x in shuffled.exceptions] == [x.as_row() for x in first.exceptions]
        assert pbuckets(shuffled) == pbuckets(first)
        assert lbuckets(shuffled) == lbuckets(first)
    assert [x.as_row() for x in again.exceptions] == [x.as_row() for x in first.exceptions]
    ids = [x.exception_id for x in first.exceptions]
    assert len(ids) == len(set(ids))
    assert set(Counter(x.kind for x in first.exceptions)) >= {
        "amount_mismatch",
        "currency_mismatch",
        "status_mismatch",
        "duplicate_settlement",
        "duplicate_payment",
        "missing_in_gateway",
        "missing_in_billing",
        "payout_mismatch",
        "fee_variance",
    }


def test_exception_id_does_not_depend_on_as_of_or_amount() -> None:
    a = run([pay("p1", "ch_1", 1000)], [line("l1", "ch_1", 990)])
    b = run([pay("p1", "ch_1", 1000)], [line("l1", "ch_1", 900)], as_of=END + timedelta(days=9))
    assert [x.exception_id for x in a.exceptions] == [x.exception_id for x in b.exceptions]
    assert b.exceptions[0].first_seen == END + timedelta(days=9)


def totals_by_currency(t: pa.Table, amount: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in t.select(["currency", amount]).to_pylist():
        out[r["currency"]][0] += 1
        out[r["currency"]][1] += r[amount]
    return dict(out)


def test_conservation_inputs_equal_the_sum_of_the_buckets() -> None:
    payments, lines, config = messy()
    result = run(payments, lines, config=config)
    assert check_conservation(result.conservation) == []
    for cur, d in result.conservation.items():
        for side in ("payments", "lines"):
            for unit in ("count", "minor"):
                parts = [
                    d.get(f"{side}_{b}_{unit}", 0) for b in ("matched", "pending", "exception")
                ]
                assert d.get(f"{side}_input_{unit}", 0) == sum(parts), (cur, side, unit)
    # The inputs, counted here from the fixture: in-scope payments are the succeeded ones plus
    # the failed one a line names; every line is in range.
    signed = {
        p["payment_id"]: (-1 if p["kind"] == "refund" else 1) * p["amount_minor"] for p in payments
    }
    want_p: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in payments:
        want_p[p["currency"]][0] += 1
        want_p[p["currency"]][1] += signed[p["payment_id"]]
    want_l: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ln in lines:
        want_l[ln["currency"]][0] += 1
        want_l[ln["currency"]][1] += ln["gross_minor"]
    for cur in set(want_p) | set(want_l):
        d = result.conservation[cur]
        assert [d.get("payments_input_count", 0), d.get("payments_input_minor", 0)] == want_p.get(
            cur, [0, 0]
        )
        assert [d.get("lines_input_count", 0), d.get("lines_input_minor", 0)] == want_l.get(
            cur, [0, 0]
        )
    assert totals_by_currency(result.payment_buckets, "amount_minor") == dict(want_p)
    assert totals_by_currency(result.line_buckets, "gross_minor") == dict(want_l)
    assert result.summary.conservation_ok


def test_check_conservation_reports_a_broken_balance() -> None:
    broken = {
        "USD": {
            "payments_input_count": 2,
            "payments_input_minor": 300,
            "payments_matched_count": 1,
            "payments_matched_minor": 100,
            "payments_pending_count": 1,
            "payments_pending_minor": 100,
        }
    }
    assert check_conservation(broken) == ["USD payments minor: inputs 300 != buckets 200"]
    assert issubclass(ConservationError, AssertionError)


# --------------------------------------------------------------------------------------------
# Property: random payments and lines

P_START = date(2026, 3, 10)
P_END = date(2026, 3, 16)
GATEWAYS = ("stripe", "adyen", "braintree")
CURRENCIES = ("USD", "EUR", "JPY")
KINDS = ("charge", "refund", "chargeback", "chargeback_reversal")
NEGATIVE = ("refund", "chargeback")
REFS = tuple(f"r{i}" for i in range(10))
INVOICES = tuple(f"in_{i}" for i in range(3))
BATCHES = ("b0", "b1", "b2")
AMOUNTS = (100, 250, 500, 1000)
STATUSES = ("succeeded", "succeeded", "succeeded", "succeeded", "failed", "pending")

#: Half in the range, half in and around it (the context a caller loads).
days = st.one_of(st.integers(0, 6), st.integers(-10, 12)).map(lambda n: P_START + timedelta(days=n))


@st.composite
def payment_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(0, 14))):
        rows.append(
            pay(
                f"p{i:02d}",
                draw(st.sampled_from((*REFS, None))),
                draw(st.sampled_from(AMOUNTS)),
                kind=draw(st.sampled_from(KINDS)),
                gateway=draw(st.sampled_from(GATEWAYS)),
                currency=draw(st.sampled_from(CURRENCIES)),
                status=draw(st.sampled_from(STATUSES)),
                day=draw(days),
                hour=draw(st.integers(0, 23)),
                invoice_id=draw(st.sampled_from((*INVOICES, None))),
            )
        )
    return rows


@st.composite
def line_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Lines of no particular payment: any kind, reference, currency, amount and day."""
    rows = []
    for i in range(draw(st.integers(0, 8))):
        category = draw(st.sampled_from((*KINDS, "fee", "payout")))
        ref = draw(st.sampled_from((*REFS, None)))
        gross = draw(st.sampled_from(AMOUNTS))
        if category in (*NEGATIVE, "fee", "payout"):
            gross = -gross
        currency = draw(st.sampled_from(CURRENCIES))
        fx = draw(st.booleans()) and currency == "USD"
        rows.append(
            line(
                f"n{i:02d}",
                ref if category == "charge" else draw(st.sampled_from((*REFS, None))),
                gross,
                category=category,
                mod_ref=None if category == "charge" else ref,
                merchant_ref=draw(st.sampled_from((*INVOICES, None))),
                gateway=draw(st.sampled_from(GATEWAYS)),
                batch_id=draw(st.sampled_from(BATCHES)),
                currency=currency,
                fee=draw(st.integers(0, 40)),
                presentment=("JPY", abs(gross) * 150) if fx else None,
                day=draw(days),
                hour=draw(st.integers(0, 23)),
                source_row=i,
            )
        )
    return rows


SETTLE_MODES = ("none", "exact", "exact", "exact", "fx", "off", "split", "dup", "other_currency")


@st.composite
def settled_lines(draw: st.DrawFn, payments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Lines settling the payments: exactly, in another currency with (fx) or without the
    billed amount, off by a little, split in two, twice; by reference or merchant reference."""
    rows: list[dict[str, Any]] = []

    def add(p: Mapping[str, Any], gross: int, **kw: Any) -> None:
        sign = -1 if p["kind"] in NEGATIVE else 1
        by_reference = p["gateway_reference"] is not None and draw(st.integers(0, 9)) > 0
        ref = p["gateway_reference"] if by_reference else None
        other = draw(st.sampled_from((*REFS, None)))
        rows.append(
            line(
                f"s{len(rows):02d}",
                ref if p["kind"] == "charge" else other,
                sign * gross,
                category=p["kind"],
                mod_ref=None if p["kind"] == "charge" else ref,
                merchant_ref=p["invoice_id"] if draw(st.booleans()) else None,
                gateway=p["gateway"],
                batch_id=draw(st.sampled_from(BATCHES)),
                fee=draw(st.integers(0, 40)),
                day=p["created_at"].date() + timedelta(days=draw(st.integers(0, 3))),
                hour=draw(st.integers(0, 23)),
                source_row=len(rows),
                **kw,
            )
        )

    for p in payments:
        mode = draw(st.sampled_from(SETTLE_MODES))
        amount, cur = p["amount_minor"], p["currency"]
        usd = "EUR" if cur == "USD" else "USD"
        if mode in ("exact", "dup"):
            add(p, amount, currency=cur)
        if mode == "dup":
            add(p, amount, currency=cur)
        if mode == "fx":
            add(p, amount // 2 + 1, currency=usd, presentment=(cur, amount))
        if mode == "other_currency":
            add(p, amount, currency=usd)
        if mode == "off":
            add(p, amount + draw(st.sampled_from((-7, 3, 50))), currency=cur)
        if mode == "split":
            part = draw(st.integers(1, amount - 1))
            add(p, part, currency=cur)
            add(p, amount - part + draw(st.sampled_from((0, 0, 1))), currency=cur)
    return rows


@st.composite
def payouts(draw: st.DrawFn, lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per batch and currency: no payout yet, one that ties out, or one that does not."""
    nets: dict[tuple[str, str, str], list[Any]] = {}
    for ln in lines:
        key = (ln["gateway"], ln["batch_id"], ln["currency"])
        n = nets.setdefault(key, [0, ln["occurred_at"].date()])
        n[0] += ln["net_minor"]
        n[1] = max(n[1], ln["occurred_at"].date())
    rows: list[dict[str, Any]] = []
    for (gateway, batch_id, currency), (net, last) in sorted(nets.items()):
        mode = draw(st.sampled_from(("none", "tied", "tied", "off")))
        if mode == "none":
            continue
        off = 0 if mode == "tied" else draw(st.sampled_from((-5, 10)))
        rows.append(
            line(
                f"po{len(rows):02d}",
                None,
                -net + off,
                category="payout",
                gateway=gateway,
                batch_id=batch_id,
                currency=currency,
                day=last + timedelta(days=draw(st.integers(0, 2))),
            )
        )
    return rows


def signed(p: Mapping[str, Any]) -> tuple[str, int]:
    return p["currency"], (-1 if p["kind"] in NEGATIVE else 1) * p["amount_minor"]


def in_scope_payments(
    payments: Sequence[Mapping[str, Any]],
    lines: Sequence[Mapping[str, Any]],
    config: EngineConfig,
) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """The payments a run must place in a bucket: in range, and either expected to settle or
    named by a line of the same gateway, kind and reference (payment_id -> (currency, signed
    amount)); and those a line's merchant reference could name, which are in scope when that
    pass matches them."""
    named = {
        (ln["gateway"], ln["category"], ln["gateway_reference"])
        if ln["category"] == "charge"
        else (ln["gateway"], ln["category"], ln["modification_reference"])
        for ln in lines
    }
    by_merchant = {(ln["gateway"], ln["category"], ln["merchant_reference"]) for ln in lines}
    required, possible = {}, set()
    for p in payments:
        if not P_START <= p["created_at"].date() <= P_END:
            continue
        expected = p["status"] == "succeeded" and config.expects(p["gateway"], p["kind"])
        key = (p["gateway"], p["kind"], p["gateway_reference"])
        if expected or (p["gateway_reference"] is not None and key in named):
            required[p["payment_id"]] = signed(p)
        elif p["status"] == "succeeded" and (p["gateway"], p["kind"], p["invoice_id"]) in (
            by_merchant
        ):
            possible.add(p["payment_id"])
    return required, possible


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=st.data(),
    payments=payment_rows(),
    noise=line_rows(),
    braintree_disputes_off=st.booleans(),
    with_fees=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_buckets_conserve_money_and_runs_are_deterministic(
    data: st.DataObject,
    payments: list[dict[str, Any]],
    noise: list[dict[str, Any]],
    braintree_disputes_off: bool,
    with_fees: bool,
    seed: int,
) -> None:
    lines = [*noise, *data.draw(settled_lines(payments))]
    lines += data.draw(payouts(lines))
    config = EngineConfig(
        settlement_window_days=5,
        gateway_window_days={"adyen": 2},
        expected_kinds={"braintree": ("charge", "refund")} if braintree_disputes_off else {},
        fee_schedules={"stripe": SCHEDULE} if with_fees else {},
    )
    kw: dict[str, Any] = {"start": P_START, "end": P_END, "config": config}
    result = run(payments, lines, **kw)  # raises ConservationError if the buckets do not add up
    assert check_conservation(result.conservation) == []

    # Every in-scope payment and line is in exactly one bucket.
    required, possible = in_scope_payments(payments, lines, config)
    by_merchant = {m.payment_id for m in result.matches if m.rule == "merchant_reference"}
    extra = by_merchant - set(required)
    in_range = {p["payment_id"] for p in payments if P_START <= p["created_at"].date() <= P_END}
    assert extra & in_range <= possible
    want_p = {
        **required,
        **{p["payment_id"]: signed(p) for p in payments if p["payment_id"] in extra & in_range},
    }
    got_p = result.payment_buckets.select(["payment_id", "bucket"]).to_pylist()
    assert sorted(r["payment_id"] for r in got_p) == sorted(want_p)
    assert {r["bucket"] for r in got_p} <= {"matched", "pending", "exception"}
    want_l = {
        ln["line_id"]: (ln["currency"], ln["gross_minor"])
        for ln in lines
        if P_START <= ln["occurred_at"].date() <= P_END
    }
    got_l = result.line_buckets.select(["line_id", "bucket"]).to_pylist()
    assert sorted(r["line_id"] for r in got_l) == sorted(want_l)
    assert {r["bucket"] for r in got_l} <= {"matched", "pending", "exception"}

    # Money per currency: the buckets hold what went in.
    def sums(rows: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for cur, amount in rows:
            out[cur][0] += 1
            out[cur][1] += amount
        return dict(out)

    assert totals_by_currency(result.payment_buckets, "amount_minor") == sums(want_p.values())
    assert totals_by_currency(result.line_buckets, "gross_minor") == sums(want_l.values())
    for cur, (n, money) in sums(want_p.values()).items():
        assert result.conservation[cur]["payments_input_count"] == n
        assert result.conservation[cur]["payments_input_minor"] == money

    # Every reported exception is about the range, and every exception-bucket payment is named.
    assert all(x.day is not None and P_START <= x.day <= P_END for x in result.exceptions)
    named = [x for x in result.exceptions if x.kind != "suggested_match"]
    named_p = {x.payment_id for x in named}
    assert {r["payment_id"] for r in got_p if r["bucket"] == "exception"} <= named_p
    # ... and every exception-bucket line is named, or its batch's payout mismatch is reported.
    bad_batches = {
        (x.gateway, x.batch_id, x.currency) for x in named if x.kind == "payout_mismatch"
    }
    named_l = {x.settlement_line_id for x in named}
    line_bucket = lbuckets(result)
    for ln in lines:
        bucket = line_bucket.get(ln["line_id"])
        if bucket == "exception" and ln["line_id"] not in named_l:
            assert (ln["gateway"], ln["batch_id"], ln["currency"]) in bad_batches, ln["line_id"]

    # Deterministic: the same input twice, and in another row order, gives the same exceptions.
    again = run(payments, lines, **kw)
    assert [x.as_row() for x in again.exceptions] == [x.as_row() for x in result.exceptions]
    rng = random.Random(seed)
    p2, l2 = list(payments), list(lines)
    rng.shuffle(p2)
    rng.shuffle(l2)
    shuffled = run(p2, l2, **kw)
    assert [x.as_row() for x in shuffled.exceptions] == [x.as_row() for x in result.exceptions]
    assert pbuckets(shuffled) == pbuckets(result)
    assert lbuckets(shuffled) == lbuckets(result)


def test_rows_taken_chunk_by_chunk_are_the_rows_arrow_takes() -> None:
    """The engine reads a few residual rows out of millions chunk by chunk; columns may be
    chunked differently (an appended column is one chunk), and any rows may be asked for."""
    import numpy as np

    from tieout.reconcile.engine import _take_rows

    ids = pa.chunked_array([[f"p{i}" for i in range(j, j + 7)] for j in range(0, 70, 7)])
    amounts = pa.chunked_array([list(range(0, 30)), list(range(30, 70))])
    table = pa.table({"id": ids, "amount": amounts, "rn": np.arange(70)})
    for rns in ([], [0], [69], [6, 7], [0, 13, 14, 29, 30, 31, 55, 69], list(range(70))):
        want = table.take(pa.array(rns, pa.int64()))
        got = _take_rows(table, np.array(rns, dtype=np.int64))
        assert got.equals(want), rns
        assert got.column("rn").to_pylist() == rns


def test_validity_read_from_bitmaps_is_arrows() -> None:
    """Where a column is not null, unpacked from validity bitmaps: chunks with and without
    nulls, sliced chunks (offsets that are not a multiple of 8), empty columns."""
    import numpy as np

    from tieout.reconcile.engine import _valid

    values = [None if i % 3 == 0 or i % 7 == 5 else i for i in range(50)]
    whole = pa.array(values, pa.int64())
    cases = [
        pa.chunked_array([whole]),
        pa.chunked_array([whole.slice(3, 20), pa.array(range(9), pa.int64()), whole.slice(29)]),
        pa.chunked_array([pa.array(range(10), pa.int64())]),
        pa.chunked_array([pa.array([None] * 11, pa.int64())]),
        pa.chunked_array([], pa.int64()),
    ]
    for column in cases:
        want = np.array(pc.is_valid(column).to_pylist(), dtype=bool)
        got = _valid(column)
        assert got.dtype == bool
        assert got.tolist() == want.tolist()
