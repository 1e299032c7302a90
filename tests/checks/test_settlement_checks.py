"""The settlement checks: each one passes on good lines and fails, with the right name, severity,
failing count and sample, on lines crafted to break exactly it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tieout.checks.result import SAMPLE_SIZE, CheckResult
from tieout.checks.settlements import (
    LINES_CATEGORY,
    LINES_CURRENCY,
    LINES_DATASET,
    LINES_NET,
    LINES_PRESENTMENT,
    LINES_PRIMARY_KEY,
    PAYOUTS_DATASET,
    PAYOUTS_TIE_OUT,
    QUARANTINED_FILES,
    settlement_checks,
)
from tieout.connectors.settlements.adyen import converted_minor
from tieout.connectors.settlements.base import (
    SETTLEMENT_LINE_SCHEMA,
    SettlementLine,
    lines_to_arrow,
)
from tieout.money import CURRENCY_EXPONENTS
from tieout.settlements import PAYOUT_SCHEMA

LINE_CHECKS = (LINES_NET, LINES_PRIMARY_KEY, LINES_CATEGORY, LINES_CURRENCY, LINES_PRESENTMENT)


def sl(line_id: str, gross: int = 1000, fee: int = 30, **kw: Any) -> SettlementLine:
    fields: dict[str, Any] = {
        "gateway": "adyen",
        "line_id": line_id,
        "batch_id": "b1",
        "category": "charge",
        "gateway_reference": f"psp_{line_id}",
        "modification_reference": None,
        "merchant_reference": None,
        "occurred_at": datetime(2026, 3, 10, 12, tzinfo=UTC),
        "available_on": None,
        "currency": "USD",
        "gross_minor": gross,
        "fee_minor": fee,
        "net_minor": gross - fee,
        "presentment_currency": None,
        "presentment_amount_minor": None,
        "exchange_rate": None,
        "source_file": "adyen/settlement_detail_report_batch_1.csv",
        "source_row": 2,
    }
    fields.update(kw)
    return SettlementLine(**fields)


def fx(
    line_id: str, gross: int, presentment: str, amount: int, rate: str, **kw: Any
) -> SettlementLine:
    """A line settled from `amount` minor units of `presentment` at `rate`."""
    return sl(
        line_id,
        gross,
        fee=0,
        presentment_currency=presentment,
        presentment_amount_minor=amount,
        exchange_rate=rate,
        **kw,
    )


def good_lines() -> list[SettlementLine]:
    return [
        sl("l1"),
        sl("l2", -500, 0, category="refund", modification_reference="r1"),
        sl("l3", 0, 25, category="fee"),
        sl("l4", -475, 0, category="payout"),
        # 92.00 EUR x 1.0869565 = 99.999998 USD -> 10000 cents
        fx("l5", 10_000, "EUR", 9200, "1.0869565"),
        # a refund converts with its sign: -92.00 EUR -> -100.00 USD
        fx("l6", -10_000, "EUR", -9200, "1.0869565", category="refund"),
        # 10000 JPY x 0.0066 = 66.00 USD (exponents 0 -> 2)
        fx("l7", 6600, "JPY", 10_000, "0.0066"),
        # within one minor unit: 66.01 against 66.00
        fx("l8", 6601, "JPY", 10_000, "0.0066"),
        # 1.000 KWD x 3.25 = 3.25 USD (exponent 3 -> 2)
        fx("l9", 325, "KWD", 1000, "3.25"),
        # a presentment currency alone (no rate) is not converted
        sl("l10", presentment_currency="EUR", presentment_amount_minor=None),
    ]


def table(lines: Sequence[SettlementLine]) -> pa.Table:
    return lines_to_arrow(lines)


def replace_column(t: pa.Table, name: str, values: Sequence[Any]) -> pa.Table:
    """Set a column outside what SettlementLine allows (the checks read any table)."""
    i = t.schema.get_field_index(name)
    return t.set_column(i, t.schema.field(name), pa.array(values, t.schema.field(name).type))


def by_name(results: Sequence[CheckResult]) -> dict[str, CheckResult]:
    names = [r.name for r in results]
    assert len(names) == len(set(names))
    return {r.name: r for r in results}


def assert_failed(
    r: CheckResult, *, severity: str, failing: int, sample: Sequence[str], dataset: str
) -> None:
    assert not r.passed
    assert r.severity == severity
    assert r.failing == failing
    assert r.sample == tuple(sample)
    assert r.dataset == dataset
    assert r.description


def only_failures(results: Sequence[CheckResult]) -> list[str]:
    return sorted(r.name for r in results if not r.passed)


# --------------------------------------------------------------------------------------------
# Good input


def test_good_lines_pass_every_check() -> None:
    results = settlement_checks(table(good_lines()))
    assert [r.name for r in results] == [*LINE_CHECKS, QUARANTINED_FILES]
    for r in results:
        assert r.passed, r
        assert r.failing == 0
        assert r.sample == ()
    checks = by_name(results)
    for name in LINE_CHECKS[:4]:
        assert checks[name].checked == 10
        assert checks[name].severity == "error"
        assert checks[name].dataset == LINES_DATASET
    assert checks[LINES_PRESENTMENT].checked == 5  # the lines with a rate and an amount
    assert checks[QUARANTINED_FILES].severity == "warn"


def test_empty_table_passes() -> None:
    results = settlement_checks(SETTLEMENT_LINE_SCHEMA.empty_table())
    assert all(r.passed and r.checked == 0 for r in results)


def test_payout_check_only_with_payouts() -> None:
    names = [r.name for r in settlement_checks(table(good_lines()))]
    assert PAYOUTS_TIE_OUT not in names
    names = [r.name for r in settlement_checks(table(good_lines()), payouts(()))]
    assert PAYOUTS_TIE_OUT in names


# --------------------------------------------------------------------------------------------
# Net = gross - fee


def test_net_not_gross_minus_fee_fails() -> None:
    t = table([sl("l1"), sl("l2"), sl("l3")])
    t = replace_column(t, "net_minor", [970, 971, 969])  # l2 and l3 are off
    r = by_name(settlement_checks(t))[LINES_NET]
    assert_failed(
        r, severity="error", failing=2, sample=["adyen/l2", "adyen/l3"], dataset=LINES_DATASET
    )
    assert r.checked == 3
    first = r.details["examples"][0]
    assert first["line"] == "adyen/l2"
    assert (first["gross_minor"], first["fee_minor"], first["net_minor"]) == (1000, 30, 971)
    assert first["source_file"] == "adyen/settlement_detail_report_batch_1.csv"
    assert only_failures(settlement_checks(t)) == [LINES_NET]


def test_net_check_survives_overflow_and_nulls() -> None:
    """gross - fee beyond int64, or a missing amount, fails the line instead of raising."""
    t = table([sl("l1"), sl("l2"), sl("l3")])
    big = 2**63 - 1
    t = replace_column(t, "gross_minor", [1000, big, 1000])
    t = replace_column(t, "fee_minor", [30, -1, 30])
    t = t.set_column(
        t.schema.get_field_index("net_minor"),
        pa.field("net_minor", pa.int64()),
        pa.array([970, big, None], pa.int64()),
    )
    r = by_name(settlement_checks(t))[LINES_NET]
    assert_failed(
        r, severity="error", failing=2, sample=["adyen/l2", "adyen/l3"], dataset=LINES_DATASET
    )


# --------------------------------------------------------------------------------------------
# Primary key


def test_duplicate_line_ids_fail_per_key() -> None:
    lines = [
        sl("l1"),
        sl("l2"),
        sl("l2", source_file="adyen/other.csv"),
        sl("l3"),
        sl("l3"),
        sl("l3"),
        # the same line id under another gateway is another key
        sl("l1", gateway="stripe"),
    ]
    r = by_name(settlement_checks(table(lines)))[LINES_PRIMARY_KEY]
    assert_failed(
        r, severity="error", failing=2, sample=["adyen/l2", "adyen/l3"], dataset=LINES_DATASET
    )
    assert r.checked == 7
    assert r.details["duplicate_keys"] == 2
    assert r.details["duplicate_rows"] == 5
    assert r.details["lines_without_key"] == 0
    assert r.details["examples"][0] == {
        "line": "adyen/l2",
        "rows": 2,
        "files": ["adyen/other.csv", "adyen/settlement_detail_report_batch_1.csv"],
    }
    assert only_failures(settlement_checks(table(lines))) == [LINES_PRIMARY_KEY]


def test_missing_line_id_fails_primary_key() -> None:
    t = table([sl("l1"), sl("l2")])
    t = t.set_column(
        t.schema.get_field_index("line_id"),
        pa.field("line_id", pa.string()),
        pa.array(["l1", None], pa.string()),
    )
    r = by_name(settlement_checks(t))[LINES_PRIMARY_KEY]
    assert_failed(r, severity="error", failing=1, sample=["adyen/<null>"], dataset=LINES_DATASET)
    assert r.details["lines_without_key"] == 1


# --------------------------------------------------------------------------------------------
# Category


def test_unknown_category_fails() -> None:
    t = table([sl("l1"), sl("l2"), sl("l3"), sl("l4")])
    t = replace_column(t, "category", ["charge", "Charge", "settlement", "settlement"])
    r = by_name(settlement_checks(t))[LINES_CATEGORY]
    assert_failed(
        r,
        severity="error",
        failing=3,
        sample=["adyen/l2", "adyen/l3", "adyen/l4"],
        dataset=LINES_DATASET,
    )
    assert r.details["bad_values"] == [
        {"value": "settlement", "lines": 2},
        {"value": "Charge", "lines": 1},
    ]
    assert "payout" in r.details["allowed"]
    assert only_failures(settlement_checks(t)) == [LINES_CATEGORY]


def test_null_category_fails() -> None:
    t = table([sl("l1"), sl("l2")])
    t = t.set_column(
        t.schema.get_field_index("category"),
        pa.field("category", pa.string()),
        pa.array([None, "charge"], pa.string()),
    )
    r = by_name(settlement_checks(t))[LINES_CATEGORY]
    assert_failed(r, severity="error", failing=1, sample=["adyen/l1"], dataset=LINES_DATASET)


# --------------------------------------------------------------------------------------------
# Currency codes


def test_bad_currency_codes_fail() -> None:
    t = table([sl("l1"), sl("l2"), sl("l3"), sl("l4"), sl("l5", presentment_currency="EUR")])
    t = replace_column(t, "currency", ["USD", "usd", "XAU", "USD", "USD"])
    t = replace_column(t, "presentment_currency", [None, None, None, "eur", "EUR"])
    r = by_name(settlement_checks(t))[LINES_CURRENCY]
    assert_failed(
        r,
        severity="error",
        failing=3,
        sample=["adyen/l2", "adyen/l3", "adyen/l4"],
        dataset=LINES_DATASET,
    )
    assert r.checked == 5
    assert {v["value"] for v in r.details["bad_values"]} == {"usd", "XAU", "eur"}
    assert r.details["examples"][2]["presentment_currency"] == "eur"
    assert only_failures(settlement_checks(t)) == [LINES_CURRENCY]


# --------------------------------------------------------------------------------------------
# Presentment x rate = gross


def test_presentment_not_matching_gross_fails() -> None:
    lines = [
        *good_lines(),
        # 92.00 EUR x 1.0869565 = 100.00 USD, not 100.02
        fx("x1", 10_002, "EUR", 9200, "1.0869565"),
        # the JPY presentment read as if it had two decimals: 100.00 x 0.0066 would be 0.66
        fx("x2", 66, "JPY", 10_000, "0.0066"),
        # sign flipped
        fx("x3", -325, "KWD", 1000, "3.25"),
    ]
    r = by_name(settlement_checks(table(lines)))[LINES_PRESENTMENT]
    assert_failed(
        r,
        severity="error",
        failing=3,
        sample=["adyen/x1", "adyen/x2", "adyen/x3"],
        dataset=LINES_DATASET,
    )
    assert r.checked == 8
    assert r.details["unconvertible"] == 0
    ex = {e["line"]: e for e in r.details["examples"]}
    assert ex["adyen/x1"]["converted_minor"] == "10000"
    assert ex["adyen/x2"]["converted_minor"] == "6600"
    assert ex["adyen/x3"]["converted_minor"] == "325"
    assert only_failures(settlement_checks(table(lines))) == [LINES_PRESENTMENT]


def test_presentment_rounds_half_up_away_from_zero() -> None:
    """1.50 USD x 1 = 1.5 JPY -> 2 (half-up), -1.5 -> -2; 0 is then two units off."""
    ok = [fx("t1", 2, "USD", 150, "1"), fx("t2", -2, "USD", -150, "1")]
    for line in ok:
        line_jpy = dataclasses.replace(line, currency="JPY")
        assert by_name(settlement_checks(table([line_jpy])))[LINES_PRESENTMENT].passed
    bad = dataclasses.replace(fx("t3", 0, "USD", 150, "1"), currency="JPY")
    r = by_name(settlement_checks(table([bad])))[LINES_PRESENTMENT]
    assert_failed(r, severity="error", failing=1, sample=["adyen/t3"], dataset=LINES_DATASET)
    assert r.details["examples"][0]["converted_minor"] == "2"


def test_unconvertible_presentment_fails() -> None:
    t = table(
        [
            fx("u1", 100, "EUR", 100, "1"),
            fx("u2", 100, "EUR", 100, "1"),
            fx("u3", 100, "EUR", 100, "1"),
            fx("u4", 100, "EUR", 100, "1"),
        ]
    )
    t = replace_column(t, "exchange_rate", ["1", "one", "NaN", "1"])
    t = replace_column(t, "presentment_currency", ["EUR", "EUR", "EUR", None])
    r = by_name(settlement_checks(t))[LINES_PRESENTMENT]
    assert_failed(
        r,
        severity="error",
        failing=3,
        sample=["adyen/u2", "adyen/u3", "adyen/u4"],
        dataset=LINES_DATASET,
    )
    assert r.details["unconvertible"] == 3


def test_presentment_long_rates_are_exact() -> None:
    """Rates too long for the 128-bit product are converted in Python, just as exactly."""
    rate = "1.086956521739130434782608695652173913"  # 100 / 92, to 36 decimals
    lines = [
        fx("p1", 10_000, "EUR", 9200, rate),  # 99.99999999... -> 100.00
        fx("p2", 10_002, "EUR", 9200, rate),
        fx("p3", 100_000_000, "EUR", 92_000_000, "1.0869565217391304347826"),
        fx("p4", 100, "EUR", 100, "1E+2"),  # 1.00 EUR x 100 = 100.00 USD, not 1.00
        fx("p5", 10_000, "EUR", 100, "1E+2"),
    ]
    r = by_name(settlement_checks(table(lines)))[LINES_PRESENTMENT]
    assert_failed(
        r, severity="error", failing=2, sample=["adyen/p2", "adyen/p4"], dataset=LINES_DATASET
    )
    assert r.details["examples"][0]["converted_minor"] == "10000"


def test_presentment_agrees_with_exact_decimal_conversion() -> None:
    """Random lines, half of them off: the check fails exactly the lines where Decimal
    conversion (the Adyen parser's own `converted_minor`) is more than one unit away."""
    rng = random.Random(20260310)
    codes = ["USD", "EUR", "JPY", "KWD", "CLF", "GBP", "BHD", "KRW"]
    lines = []
    expected_bad = []
    for i in range(600):
        cur, pcur = rng.sample(codes, 2)
        amount = rng.choice([-1, 1]) * rng.randrange(1, 10 ** rng.randrange(1, 13))
        # short rates go through DuckDB's 128-bit integers, long ones through Python
        digits = rng.choice([rng.randrange(1, 12), rng.randrange(1, 12), rng.randrange(14, 40)])
        rate = f"{rng.randrange(0, 1000)}.{rng.randrange(0, 10**digits):0{digits}d}"
        if rng.random() < 0.1:
            rate += "0" * rng.randrange(1, 30)  # long, but zeros
        exact = converted_minor(amount, pcur, rate, cur)
        gross = exact + rng.choice([0, 0, 1, -1, 2, -2, rng.randrange(-(10**6), 10**6)])
        line_id = f"r{i:04d}"
        if abs(gross - exact) > 1:
            expected_bad.append(f"adyen/{line_id}")
        lines.append(fx(line_id, gross, pcur, amount, rate, currency=cur))
    r = by_name(settlement_checks(table(lines)))[LINES_PRESENTMENT]
    assert expected_bad, "the generator must plant failures"
    assert r.failing == len(expected_bad)
    assert r.sample == tuple(sorted(expected_bad)[:SAMPLE_SIZE])
    assert r.checked == 600


# --------------------------------------------------------------------------------------------
# Payouts


def payout(
    batch: str, difference: int, *, has_payout: bool = True, currency: str = "USD"
) -> dict[str, Any]:
    return {
        "gateway": "stripe",
        "batch_id": batch,
        "currency": currency,
        "payout_day": date(2026, 3, 12),
        "lines": 3,
        "gross_minor": 1000,
        "fee_minor": 30,
        "net_minor": 970,
        "payout_minor": -970 + difference,
        "difference_minor": difference,
        "has_payout": has_payout,
        "ties_out": has_payout and difference == 0,
    }


def payouts(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=PAYOUT_SCHEMA)


def test_payouts_tying_out_pass() -> None:
    p = payouts([payout("po_1", 0), payout("po_2", 0), payout("po_3", 25, has_payout=False)])
    r = by_name(settlement_checks(table(good_lines()), p))[PAYOUTS_TIE_OUT]
    assert r.passed
    assert r.severity == "warn"
    assert r.dataset == PAYOUTS_DATASET
    assert r.checked == 2  # the batch without a payout yet is not judged
    assert r.failing == 0


def test_payouts_not_tying_out_warn_with_batches() -> None:
    p = payouts(
        [
            payout("po_1", 0),
            payout("po_2", 5),
            payout("po_3", -1200),
            payout("po_4", 7, currency="EUR"),
            payout("po_5", 99, has_payout=False),  # no payout yet: pending, not a warning
        ]
    )
    results = settlement_checks(table(good_lines()), p)
    r = by_name(results)[PAYOUTS_TIE_OUT]
    assert_failed(
        r,
        severity="warn",
        failing=3,
        sample=["stripe/po_3 (USD)", "stripe/po_4 (EUR)", "stripe/po_2 (USD)"],
        dataset=PAYOUTS_DATASET,
    )
    assert r.checked == 4
    assert "exception" in r.description
    assert "block" in r.description
    first = r.details["batches"][0]
    assert first["batch_id"] == "po_3"
    assert first["difference_minor"] == -1200
    assert first["difference"] == "-12.00 USD"
    assert first["payout_day"] == "2026-03-12"
    assert r.details["difference_by_currency"] == {"EUR": "0.07 EUR", "USD": "-11.95 USD"}
    assert only_failures(results) == [PAYOUTS_TIE_OUT]


# --------------------------------------------------------------------------------------------
# Quarantined files


def test_no_quarantined_files_pass() -> None:
    r = by_name(settlement_checks(table(good_lines()), quarantined_files=0))[QUARANTINED_FILES]
    assert r.passed
    assert r.severity == "warn"


def test_quarantined_files_warn() -> None:
    results = settlement_checks(table(good_lines()), quarantined_files=2)
    r = by_name(results)[QUARANTINED_FILES]
    assert_failed(r, severity="warn", failing=2, sample=[], dataset=LINES_DATASET)
    assert r.details["message"] == "2 files quarantined, see the .error.json sidecars"
    assert only_failures(results) == [QUARANTINED_FILES]


# --------------------------------------------------------------------------------------------
# Scale


def big_table(n: int) -> pa.Table:
    """`n` canonical lines built column-wise (a list of SettlementLine would take minutes);
    every tenth line is a EUR charge settled in USD."""
    idx = np.arange(n, dtype=np.int64)
    ids = pc.binary_join_element_wise("ln_", pc.cast(pa.array(idx), pa.string()), "")
    gross = 1000 + (idx % 977)
    fee = np.full(n, 30, dtype=np.int64)
    is_fx = idx % 10 == 0
    # 92.00 EUR x 1.0869565 -> 100.00 USD
    gross = np.where(is_fx, 10_000, gross)
    columns: dict[str, Any] = {
        "gateway": pa.array(np.where(idx % 2 == 0, "stripe", "adyen")),
        "line_id": ids,
        "batch_id": pa.array(np.full(n, "b1")),
        "category": pa.array(np.full(n, "charge")),
        "gateway_reference": pa.nulls(n, pa.string()),
        "modification_reference": pa.nulls(n, pa.string()),
        "merchant_reference": pa.nulls(n, pa.string()),
        "occurred_at": pa.array(
            np.full(n, 1_773_144_000_000_000, dtype=np.int64), pa.timestamp("us", tz="UTC")
        ),
        "available_on": pa.nulls(n, pa.date32()),
        "currency": pa.array(np.full(n, "USD")),
        "gross_minor": gross,
        "fee_minor": fee,
        "net_minor": gross - fee,
        "presentment_currency": pa.array(np.full(n, "EUR"), mask=~is_fx),
        "presentment_amount_minor": pa.array(np.full(n, 9200), mask=~is_fx),
        "exchange_rate": pa.array(np.full(n, "1.0869565"), mask=~is_fx),
        "source_file": pa.array(np.full(n, "stripe/big.csv")),
        "source_row": idx,
    }
    return pa.table(columns).cast(SETTLEMENT_LINE_SCHEMA)


def plant(t: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    """`t` with one cell changed, column-wise."""
    i = t.schema.get_field_index(column)
    field = t.schema.field(column)
    at_row = pc.equal(pa.array(np.arange(t.num_rows)), row)
    changed = pc.if_else(at_row, pa.scalar(value, field.type), t.column(column))
    return t.set_column(i, field, changed)


def test_two_million_lines() -> None:
    """Vectorized: two million lines are checked in seconds and the planted violations found."""
    n = 2_000_000
    t = big_table(n)
    t = plant(t, "net_minor", 1_234_567, 0)  # a net that is not gross - fee
    t = plant(t, "line_id", 1_999_998, "ln_4")  # both on "stripe": a key seen twice
    t = plant(t, "presentment_amount_minor", 1_500_000, 9300)  # 93.00 EUR is not 100.00 USD
    results = settlement_checks(t)
    checks = by_name(results)
    assert only_failures(results) == [LINES_NET, LINES_PRESENTMENT, LINES_PRIMARY_KEY]
    assert (checks[LINES_NET].failing, checks[LINES_NET].sample) == (1, ("adyen/ln_1234567",))
    assert (checks[LINES_PRIMARY_KEY].failing, checks[LINES_PRIMARY_KEY].sample) == (
        1,
        ("stripe/ln_4",),
    )
    assert (checks[LINES_PRESENTMENT].failing, checks[LINES_PRESENTMENT].sample) == (
        1,
        ("stripe/ln_1500000",),
    )
    assert checks[LINES_NET].checked == n
    assert checks[LINES_PRESENTMENT].checked == n // 10


def test_known_currencies_only_upper_case() -> None:
    """The table the currency check reads is ISO 4217, upper case."""
    assert all(code == code.upper() and len(code) == 3 for code in CURRENCY_EXPONENTS)


def test_payouts_view_consistency_catches_a_wrong_difference_or_flag() -> None:
    from tieout.checks.settlements import PAYOUTS_CONSISTENT, payouts_consistent
    from tieout.settlements import PAYOUT_SCHEMA

    def row(
        batch: str, net: int, payout: int, diff: int, has: bool, ties: bool
    ) -> dict[str, object]:
        return {
            "gateway": "stripe", "batch_id": batch, "currency": "USD",
            "payout_day": date(2026, 3, 2), "lines": 2, "gross_minor": net, "fee_minor": 0,
            "net_minor": net, "payout_minor": payout, "difference_minor": diff,
            "has_payout": has, "ties_out": ties,
        }  # fmt: skip

    good = pa.Table.from_pylist(
        [row("po_1", 100, -100, 0, True, True), row("po_2", 100, -90, 10, True, False),
         row("2026-03-02", 50, 0, 50, False, False)],
        schema=PAYOUT_SCHEMA,
    )  # fmt: skip
    assert payouts_consistent(good).passed
    bad = pa.Table.from_pylist(
        [row("po_1", 100, -100, 5, True, False), row("po_2", 100, -90, 10, True, True)],
        schema=PAYOUT_SCHEMA,
    )  # fmt: skip
    result = payouts_consistent(bad)
    assert result.name == PAYOUTS_CONSISTENT
    assert result.severity == "error"
    assert result.failing == 2
    assert result.sample == ("stripe/po_1 (USD)", "stripe/po_2 (USD)")
