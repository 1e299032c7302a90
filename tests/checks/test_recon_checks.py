"""The reconciliation checks: each one passes on a good run and fails, with the right name,
severity, failing count and sample, on a run (or exception store) crafted to break exactly it.

Runs come from the real engine on small hand-built frames (builders as in
tests/reconcile/test_engine.py); the states the engine itself refuses to produce (buckets that
do not add up, a row in two buckets) are made by editing a good result."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tieout.checks.reconciliation import (
    CONSERVATION,
    DATASET,
    MATCH_RATE_FLOOR,
    MATCH_RATE_TARGET,
    STALE_EXCEPTIONS,
    reconciliation_checks,
)
from tieout.checks.result import SAMPLE_SIZE, CheckResult
from tieout.connectors.exception_store import StoredException
from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.reconcile.engine import ReconResult, reconcile
from tieout.reconcile.model import exception_id
from tieout.schema import TABLES
from tieout.settings import ChecksSettings

START = date(2026, 3, 1)
END = date(2026, 3, 31)
MID = date(2026, 3, 10)  # old enough at END to be past the settlement window

# --------------------------------------------------------------------------------------------
# Builders (as in tests/reconcile/test_engine.py)


def at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def pay(payment_id: str, ref: str | None, amount: int = 1000) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "customer_id": "cus_1",
        "invoice_id": None,
        "kind": "charge",
        "original_payment_id": None,
        "gateway": "stripe",
        "gateway_reference": ref,
        "amount_minor": amount,
        "currency": "USD",
        "status": "succeeded",
        "created_at": at(MID),
        "updated_at": at(MID),
    }


def line(line_id: str, ref: str, gross: int = 1000) -> dict[str, Any]:
    return {
        "gateway": "stripe",
        "line_id": line_id,
        "batch_id": "b_open",
        "category": "charge",
        "gateway_reference": ref,
        "modification_reference": None,
        "merchant_reference": None,
        "occurred_at": at(MID),
        "available_on": None,
        "currency": "USD",
        "gross_minor": gross,
        "fee_minor": 0,
        "net_minor": gross,
        "presentment_currency": None,
        "presentment_amount_minor": None,
        "exchange_rate": None,
        "source_file": "stripe/settlement.csv",
        "source_row": 1,
    }


def table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def run(payments: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]]) -> ReconResult:
    return reconcile(
        table(payments, TABLES["payments"].arrow_schema()),
        table(lines, SETTLEMENT_LINE_SCHEMA),
        table([], TABLES["invoices"].arrow_schema()),
        table([], TABLES["credit_notes"].arrow_schema()),
        start=START,
        end=END,
        run_id="test",
    )


def run_matching(matched: int, total: int) -> ReconResult:
    """`total` payments of which the first `matched` have their settlement line."""
    payments = [pay(f"p{i:03d}", f"ch_{i}") for i in range(total)]
    lines = [line(f"l{i:03d}", f"ch_{i}") for i in range(matched)]
    return run(payments, lines)


def stored(
    name: str,
    first_seen: date,
    *,
    status: str = "open",
    note: str | None = None,
    kind: str = "missing_in_gateway",
) -> StoredException:
    return StoredException(
        exception_id=exception_id(kind, name),
        kind=kind,
        severity="high",
        gateway="stripe",
        currency="USD",
        amount_minor=1000,
        payment_id=name,
        invoice_id=None,
        settlement_line_id=None,
        batch_id=None,
        first_seen=first_seen,
        last_seen=END,
        status=status,
        explanation="No settlement line.",
        day=first_seen,
        status_by="tieout",
        status_at=None,
        note=note,
    )


def by_name(results: Sequence[CheckResult]) -> dict[str, CheckResult]:
    names = [r.name for r in results]
    assert len(names) == len(set(names))
    return {r.name: r for r in results}


def failures(results: Sequence[CheckResult]) -> list[str]:
    return sorted(r.name for r in results if not r.passed)


def assert_failed(r: CheckResult, *, severity: str, failing: int, sample: Sequence[str]) -> None:
    assert not r.passed
    assert r.severity == severity
    assert r.failing == failing
    assert r.sample == tuple(sample)
    assert r.dataset == DATASET
    assert r.description


@pytest.fixture(scope="module")
def good() -> ReconResult:
    return run_matching(3, 3)


# --------------------------------------------------------------------------------------------
# A good run


def test_good_run_passes_every_check(good: ReconResult) -> None:
    fresh = [stored("p_new", END - timedelta(days=5))]
    results = reconciliation_checks(good, stored=fresh)
    assert [r.name for r in results] == [
        CONSERVATION,
        MATCH_RATE_FLOOR,
        MATCH_RATE_TARGET,
        STALE_EXCEPTIONS,
    ]
    for r in results:
        assert r.passed, r
        assert r.failing == 0
        assert r.sample == ()
        assert r.dataset == DATASET
    checks = by_name(results)
    assert checks[CONSERVATION].severity == "error"
    assert checks[CONSERVATION].checked == 6  # 3 payments + 3 lines
    assert checks[MATCH_RATE_FLOOR].severity == "error"
    assert checks[MATCH_RATE_TARGET].severity == "warn"
    assert checks[MATCH_RATE_FLOOR].details["match_rate"] == 1.0
    assert checks[STALE_EXCEPTIONS].severity == "warn"
    assert checks[STALE_EXCEPTIONS].checked == 1


# --------------------------------------------------------------------------------------------
# Conservation


def test_buckets_not_adding_up_fail_conservation(good: ReconResult) -> None:
    conservation = {cur: dict(d) for cur, d in good.conservation.items()}
    conservation["USD"]["payments_input_minor"] += 5
    broken = dataclasses.replace(good, conservation=conservation)
    results = reconciliation_checks(broken)
    assert failures(results) == [CONSERVATION]
    assert_failed(
        by_name(results)[CONSERVATION],
        severity="error",
        failing=1,
        sample=["USD payments minor: inputs 3005 != buckets 3000"],
    )
    assert by_name(results)[CONSERVATION].details["totals_not_adding_up"] == 1


def test_row_in_two_buckets_fails_conservation(good: ReconResult) -> None:
    pb = good.payment_buckets
    twice = pb.filter(pc.equal(pb.column("payment_id"), "p001"))
    twice = twice.set_column(
        twice.schema.get_field_index("bucket"),
        "bucket",
        pa.array(["pending"], pa.string()).cast(pb.schema.field("bucket").type),
    )
    lb = good.line_buckets.sort_by("line_id")
    broken = dataclasses.replace(
        good,
        payment_buckets=pa.concat_tables([pb, twice]),
        line_buckets=pa.concat_tables([lb, lb.slice(0, 1), lb.slice(0, 1)]),
    )
    r = by_name(reconciliation_checks(broken))[CONSERVATION]
    assert_failed(
        r,
        severity="error",
        failing=2,
        sample=["payment_id p001 in 2 bucket rows", "line_id l000 in 3 bucket rows"],
    )
    assert r.details["payments_in_several_buckets"] == 1
    assert r.details["lines_in_several_buckets"] == 1


def test_row_without_bucket_fails_conservation(good: ReconResult) -> None:
    pb = good.payment_buckets.sort_by("payment_id")
    i = pb.schema.get_field_index("bucket")
    broken = dataclasses.replace(
        good,
        payment_buckets=pb.set_column(
            i,
            "bucket",
            pa.array([None, "matched", "settled"], pa.string()).cast(pb.schema.field(i).type),
        ),
    )
    r = by_name(reconciliation_checks(broken))[CONSERVATION]
    assert_failed(
        r,
        severity="error",
        failing=2,
        sample=["payment_id p000 has bucket None", "payment_id p002 has bucket 'settled'"],
    )
    assert r.details["payments_without_bucket"] == 2


# --------------------------------------------------------------------------------------------
# Match rate


def test_match_rate_between_floor_and_target_only_warns() -> None:
    """19 of 20 matched: 95% is not below the 95% floor (exactly), but below the 99% target."""
    result = run_matching(19, 20)
    results = reconciliation_checks(result)
    assert failures(results) == [MATCH_RATE_TARGET]
    checks = by_name(results)
    assert checks[MATCH_RATE_FLOOR].passed
    r = checks[MATCH_RATE_TARGET]
    assert_failed(r, severity="warn", failing=1, sample=["p019"])
    assert r.checked == 20
    assert r.details["match_rate"] == 0.95
    assert r.details["payments_settled_or_flagged"] == 20
    assert r.details["pending_payments"] == 0
    assert r.details["matched_payments"] == 19
    assert (r.details["min_match_rate"], r.details["warn_match_rate"]) == (0.95, 0.99)
    assert r.details["threshold"] == 0.99
    assert r.details["by_gateway_currency"] == [
        {
            "gateway": "stripe",
            "currency": "USD",
            "payments": 20,
            "matched_payments": 19,
            "match_rate": 0.95,
        }
    ]


def test_match_rate_below_floor_fails_both() -> None:
    result = run_matching(10, 40)
    results = reconciliation_checks(result)
    assert failures(results) == [MATCH_RATE_FLOOR, MATCH_RATE_TARGET]
    unmatched = [f"p{i:03d}" for i in range(10, 40)]
    floor = by_name(results)[MATCH_RATE_FLOOR]
    assert_failed(floor, severity="error", failing=30, sample=unmatched[:SAMPLE_SIZE])
    assert floor.details["match_rate"] == 0.25
    assert floor.details["threshold"] == 0.95
    target = by_name(results)[MATCH_RATE_TARGET]
    assert_failed(target, severity="warn", failing=30, sample=unmatched[:SAMPLE_SIZE])


def test_match_rate_compares_thresholds_exactly() -> None:
    """7 of 100 against 0.07: in floats 100 x 0.07 is 7.000000000000001 and 7 would be
    "below" it; the check compares the integers 7 x 100 and 7 x 100."""
    result = run_matching(7, 100)
    exact = ChecksSettings(min_match_rate=0.07, warn_match_rate=0.07)
    assert failures(reconciliation_checks(result, settings=exact)) == []
    higher = ChecksSettings(min_match_rate=0.0701, warn_match_rate=0.0701)
    assert failures(reconciliation_checks(result, settings=higher)) == [
        MATCH_RATE_FLOOR,
        MATCH_RATE_TARGET,
    ]


def test_match_rate_with_no_payments_passes() -> None:
    results = reconciliation_checks(run([], []))
    checks = by_name(results)
    assert failures(results) == []
    assert checks[MATCH_RATE_FLOOR].checked == 0
    assert checks[MATCH_RATE_FLOOR].details["match_rate"] is None


# --------------------------------------------------------------------------------------------
# Stale open exceptions


def test_stale_open_exceptions_without_note_warn(good: ReconResult) -> None:
    as_of = END  # the run's as_of
    exceptions = [
        stored("p_fresh", as_of - timedelta(days=30)),  # exactly 30 days: not yet stale
        stored("p_old", as_of - timedelta(days=31)),
        stored("p_older", as_of - timedelta(days=90), kind="amount_mismatch"),
        stored("p_noted", as_of - timedelta(days=90), note="waiting for Stripe support"),
        stored("p_blank", as_of - timedelta(days=45), note="  "),  # a blank note is no note
        stored("p_done", as_of - timedelta(days=90), status="resolved"),
        stored("p_waived", as_of - timedelta(days=90), status="waived"),
    ]
    results = reconciliation_checks(good, stored=exceptions)
    assert failures(results) == [STALE_EXCEPTIONS]
    r = by_name(results)[STALE_EXCEPTIONS]
    assert_failed(
        r,
        severity="warn",
        failing=3,
        sample=[  # oldest first
            exception_id("amount_mismatch", "p_older"),
            exception_id("missing_in_gateway", "p_blank"),
            exception_id("missing_in_gateway", "p_old"),
        ],
    )
    assert r.checked == 5  # the open ones
    assert r.details["max_open_age_days"] == 30
    assert r.details["as_of"] == "2026-03-31"
    assert r.details["oldest_first_seen"] == "2025-12-31"
    assert r.details["by_kind"] == {"amount_mismatch": 1, "missing_in_gateway": 2}


def test_stale_uses_as_of_and_settings(good: ReconResult) -> None:
    exceptions = [stored("p1", date(2026, 3, 1))]
    assert failures(reconciliation_checks(good, stored=exceptions)) == []  # 30 days at END
    later = reconciliation_checks(good, stored=exceptions, as_of=date(2026, 4, 1))
    assert failures(later) == [STALE_EXCEPTIONS]
    strict = reconciliation_checks(
        good, stored=exceptions, settings=ChecksSettings(max_open_age_days=7)
    )
    r = by_name(strict)[STALE_EXCEPTIONS]
    assert_failed(r, severity="warn", failing=1, sample=[exception_id("missing_in_gateway", "p1")])


def test_pending_payments_do_not_count_against_the_match_rate() -> None:
    """A day of payments still in transit is not a failed reconciliation."""
    result = run_matching(0, 20)
    for r in result.summary.rows:  # every unmatched payment is still in transit
        r.pending_payments += r.exception_payments
        r.exception_payments = 0
    results = reconciliation_checks(result)
    assert MATCH_RATE_FLOOR not in failures(results)
    assert MATCH_RATE_TARGET not in failures(results)
