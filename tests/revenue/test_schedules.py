"""Revenue schedules: worked examples with exact rows, the two identities as properties over
random billing (hypothesis), and the demo data with checks that catch a corrupted row set."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tieout.demo import DemoConfig, generate
from tieout.errors import InputDataError
from tieout.revenue.schedules import (
    SCHEDULE_COLUMNS,
    SCHEDULE_SCHEMA,
    ScheduleRow,
    allocate,
    billed_sources,
    build_schedules,
    check_deferred,
    check_line_sums,
    deferred_balances,
    schedule_id,
    to_arrow,
    waterfall,
)

Row = dict[str, Any]


def invoice(
    invoice_id: str = "in_1",
    issued: datetime = datetime(2026, 3, 5, 12, tzinfo=UTC),
    *,
    status: str = "paid",
    currency: str = "USD",
    customer_id: str = "cus_1",
) -> Row:
    return {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "currency": currency,
        "status": status,
        "issued_at": issued,
    }


def line(
    line_id: str,
    kind: str,
    amount: int,
    start: date | None = None,
    end: date | None = None,
    *,
    invoice_id: str = "in_1",
) -> Row:
    return {
        "line_id": line_id,
        "invoice_id": invoice_id,
        "kind": kind,
        "amount_minor": amount,
        "service_start": start,
        "service_end": end,
    }


def credit_note(
    credit_note_id: str,
    amount: int,
    issued: datetime,
    *,
    invoice_id: str = "in_1",
    currency: str = "USD",
) -> Row:
    return {
        "credit_note_id": credit_note_id,
        "invoice_id": invoice_id,
        "amount_minor": amount,
        "currency": currency,
        "issued_at": issued,
    }


def by_line(rows: list[ScheduleRow]) -> dict[str, dict[str, int]]:
    """line id (or 'cn/line' for credit notes) -> {YYYY-MM: amount}."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        key = r.line_id if r.source == "invoice" else f"{r.source_id}/{r.line_id}"
        out[key][r.month.isoformat()[:7]] = r.amount_minor
    return dict(out)


def assert_clean(rows: list[ScheduleRow], inv: list[Row], lines: list[Row], cns: list[Row]) -> None:
    assert check_line_sums(rows, inv, lines, cns) == []
    assert check_deferred(rows, inv, lines, cns) == []


# --------------------------------------------------------------------------------------------
# Allocation


def test_allocate_gives_leftover_units_to_largest_remainders() -> None:
    # 1000 x 22/61, 30/61, 9/61 = 360.66, 491.80, 147.54: floors 360, 491, 147 leave 2 units
    # for the largest remainders (.80 then .66).
    assert allocate(1000, [22, 30, 9]) == [361, 492, 147]


def test_allocate_breaks_ties_toward_the_earliest() -> None:
    assert allocate(101, [15, 15]) == [51, 50]
    assert allocate(2, [1, 1, 1]) == [1, 1, 0]


def test_allocate_negative_total_mirrors_the_positive_one() -> None:
    assert allocate(-1000, [22, 30, 9]) == [-361, -492, -147]


def test_allocate_refuses_weights_without_a_positive_sum() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        allocate(10, [0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        allocate(10, [3, -1])


# --------------------------------------------------------------------------------------------
# Worked examples (docs/revenue.md walks through the same numbers)


def test_subscription_over_three_months_is_split_by_day_with_remainders() -> None:
    inv = [invoice(issued=datetime(2026, 3, 10, 9, tzinfo=UTC))]
    # [Mar 10, May 10): 22 days in March, 30 in April, 9 in May (end exclusive) = 61 days.
    lines = [line("il_1", "subscription", 1000, date(2026, 3, 10), date(2026, 5, 10))]
    result = build_schedules(inv, lines, [])
    common = {
        "source": "invoice",
        "source_id": "in_1",
        "invoice_id": "in_1",
        "line_id": "il_1",
        "customer_id": "cus_1",
        "currency": "USD",
        "kind": "subscription",
        "billing_month": date(2026, 3, 1),
    }
    assert [r.as_dict() for r in result.rows] == [
        {
            **common,
            "schedule_id": "rs-il_1-2026-03",
            "month": date(2026, 3, 1),
            "amount_minor": 361,
        },
        {
            **common,
            "schedule_id": "rs-il_1-2026-04",
            "month": date(2026, 4, 1),
            "amount_minor": 492,
        },
        {
            **common,
            "schedule_id": "rs-il_1-2026-05",
            "month": date(2026, 5, 1),
            "amount_minor": 147,
        },
    ]
    assert list(result.rows[0].as_dict()) == list(SCHEDULE_COLUMNS)
    assert result.skipped == []
    assert result.warnings == []
    assert_clean(result.rows, inv, lines, [])


def test_equal_halves_leave_the_odd_unit_in_the_earlier_month() -> None:
    # [Mar 17, Apr 16): 15 days each side; 101 does not halve.
    inv = [invoice()]
    lines = [line("il_1", "subscription", 101, date(2026, 3, 17), date(2026, 4, 16))]
    assert by_line(build_schedules(inv, lines, []).rows) == {"il_1": {"2026-03": 51, "2026-04": 50}}


def test_discount_is_spread_over_the_revenue_lines_and_follows_their_months() -> None:
    inv = [invoice(issued=datetime(2026, 3, 20, 12, tzinfo=UTC))]
    lines = [
        line("il_1", "subscription", 6000, date(2026, 3, 1), date(2026, 5, 1)),  # 31 + 30 days
        line("il_2", "one_off", 3000),
        line("il_3", "discount", -1000),
        line("il_4", "tax", 800),
    ]
    result = build_schedules(inv, lines, [])
    # Discount: -1000 x 6000/9000 = -666.67 -> -667 (larger remainder), x 3000/9000 -> -333.
    # The subscription's -667 follows its 31/30 days: -339 March, -328 April; the one-off's
    # -333 falls in March with the one-off. Tax has no rows.
    assert by_line(result.rows) == {
        "il_1": {"2026-03": 3049, "2026-04": 2951},
        "il_2": {"2026-03": 3000},
        "il_3": {"2026-03": -339 - 333, "2026-04": -328},
    }
    assert_clean(result.rows, inv, lines, [])


def test_usage_is_recognized_in_the_period_consumed() -> None:
    inv = [invoice(issued=datetime(2026, 3, 20, 8, tzinfo=UTC))]
    lines = [
        # Billed in arrears: [Feb 20, Mar 20) is 9 February days and 19 March days.
        line("il_1", "usage", 2800, date(2026, 2, 20), date(2026, 3, 20)),
        line("il_2", "usage", 500),  # no period: the issue month
    ]
    result = build_schedules(inv, lines, [])
    assert by_line(result.rows) == {
        "il_1": {"2026-02": 900, "2026-03": 1900},
        "il_2": {"2026-03": 500},
    }
    # The February row belongs to the March billing (its partition): billed in March.
    assert {r.billing_month for r in result.rows} == {date(2026, 3, 1)}
    assert_clean(result.rows, inv, lines, [])


def test_one_off_falls_in_the_local_issue_month_of_the_finance_time_zone() -> None:
    issued = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)  # already April 1 in Tokyo
    lines = [line("il_1", "one_off", 700, date(2026, 1, 1), date(2026, 6, 1))]
    utc = build_schedules([invoice(issued=issued)], lines, [])
    tokyo = build_schedules([invoice(issued=issued)], lines, [], finance_timezone="Asia/Tokyo")
    assert by_line(utc.rows) == {"il_1": {"2026-03": 700}}  # a one-off ignores service dates
    assert by_line(tokyo.rows) == {"il_1": {"2026-04": 700}}
    assert tokyo.rows[0].billing_month == date(2026, 4, 1)
    # pandas Timestamps (what a DataFrame hands over) give the same answer.
    as_pandas = [invoice(issued=pd.Timestamp(issued))]
    assert build_schedules(as_pandas, lines, [], finance_timezone="Asia/Tokyo") == tokyo


def test_subscription_without_a_service_period_falls_back_to_the_issue_month() -> None:
    inv = [invoice(issued=datetime(2026, 5, 2, tzinfo=UTC))]
    lines = [
        line("il_1", "subscription", 1200),
        line("il_2", "subscription", 300, date(2026, 6, 1), date(2026, 6, 1)),  # empty period
        line("il_3", "subscription", 100, date(2026, 6, 1), None),
    ]
    rows = build_schedules(inv, lines, []).rows
    assert by_line(rows) == {
        "il_1": {"2026-05": 1200},
        "il_2": {"2026-05": 300},
        "il_3": {"2026-05": 100},
    }


def test_tax_is_a_liability_with_no_schedule_and_not_billed_revenue() -> None:
    inv = [invoice()]
    lines = [line("il_1", "one_off", 1000), line("il_2", "tax", 190)]
    result = build_schedules(inv, lines, [])
    assert by_line(result.rows) == {"il_1": {"2026-03": 1000}}
    assert [b.amount_minor for b in billed_sources(inv, lines, [])] == [1000]


def test_void_and_draft_invoices_produce_nothing_and_credits_on_them_are_reported() -> None:
    inv = [
        invoice("in_void", status="void"),
        invoice("in_draft", status="draft"),
        invoice("in_open", status="open"),
        invoice("in_bad", status="uncollectible"),
    ]
    lines = [
        line("il_1", "one_off", 1000, invoice_id="in_void"),
        line("il_2", "one_off", 1000, invoice_id="in_draft"),
        line("il_3", "one_off", 1000, invoice_id="in_open"),
        line("il_4", "one_off", 1000, invoice_id="in_bad"),
    ]
    issued = datetime(2026, 3, 9, tzinfo=UTC)
    cns = [
        credit_note("cn_1", 100, issued, invoice_id="in_void"),
        credit_note("cn_2", 100, issued, invoice_id="in_draft"),
        credit_note("cn_3", 100, issued, invoice_id="in_nowhere"),
        credit_note("cn_4", 100, issued, invoice_id="in_open", currency="EUR"),
    ]
    result = build_schedules(inv, lines, cns)
    assert sorted(by_line(result.rows)) == ["il_3", "il_4"]
    assert len(result.skipped) == 4
    assert "cn_1" in result.skipped[0]
    assert "void" in result.skipped[0]
    assert "cn_2" in result.skipped[1]
    assert "draft" in result.skipped[1]
    assert "cn_3" in result.skipped[2]
    assert "not in the input" in result.skipped[2]
    assert "cn_4" in result.skipped[3]
    assert "currency EUR" in result.skipped[3]
    assert_clean(result.rows, inv, lines, cns)


def test_credit_note_reverses_its_revenue_share_with_a_catch_up_in_its_month() -> None:
    inv = [invoice(issued=datetime(2026, 1, 1, 10, tzinfo=UTC))]
    lines = [
        line("il_1", "subscription", 12000, date(2026, 1, 1), date(2027, 1, 1)),  # 365 days
        line("il_2", "tax", 1200),
    ]
    cns = [credit_note("cn_1", 3300, datetime(2026, 4, 10, 15, tzinfo=UTC))]
    result = build_schedules(inv, lines, cns)
    # 3300 x 12000/13200 = 3000 is revenue, 300 tax (dropped). -3000 by day over 2026 gives
    # -255 to 31-day months, -246 to 30-day months (April, the earliest, takes -247) and -230
    # to February; January to April are caught up in April: 255 + 230 + 255 + 247 = 987.
    credit = [r for r in result.rows if r.source == "credit_note"]
    assert by_line(credit) == {
        "cn_1/il_1": {
            "2026-04": -987,
            "2026-05": -255,
            "2026-06": -246,
            "2026-07": -255,
            "2026-08": -255,
            "2026-09": -246,
            "2026-10": -255,
            "2026-11": -246,
            "2026-12": -255,
        }
    }
    assert {
        (r.schedule_id, r.billing_month, r.source_id) for r in credit if r.month.month == 4
    } == {("rs-cn_1-il_1-2026-04", date(2026, 4, 1), "cn_1")}
    # Rows sort by billing month: the invoice's (January) before the credit note's (April).
    assert [r.source for r in result.rows] == ["invoice"] * 12 + ["credit_note"] * 9
    assert_clean(result.rows, inv, lines, cns)


def test_credit_note_is_split_over_lines_net_of_discounts() -> None:
    inv = [invoice(issued=datetime(2026, 3, 20, 12, tzinfo=UTC))]
    lines = [
        line("il_1", "subscription", 6000, date(2026, 3, 1), date(2026, 5, 1)),
        line("il_2", "one_off", 3000),
        line("il_3", "discount", -1000),
        line("il_4", "tax", 800),
    ]
    cns = [credit_note("cn_1", 1000, datetime(2026, 4, 3, tzinfo=UTC))]
    result = build_schedules(inv, lines, cns)
    # Nets 5333 (6000 - 667), 2667 (3000 - 333), tax 800: 606.02, 303.07, 90.91 -> the unit
    # left goes to tax (largest remainder), so 909 is revenue; March collapses into April.
    credit = [r for r in result.rows if r.source == "credit_note"]
    assert by_line(credit) == {"cn_1/il_1": {"2026-04": -606}, "cn_1/il_2": {"2026-04": -303}}
    assert [b.amount_minor for b in billed_sources(inv, lines, cns)] == [8000, -909]
    assert_clean(result.rows, inv, lines, cns)


def test_credit_note_above_the_invoice_total_is_allocated_and_warned_about() -> None:
    inv = [invoice()]
    lines = [line("il_1", "one_off", 1000), line("il_2", "tax", 100)]
    cns = [
        credit_note("cn_1", 800, datetime(2026, 3, 6, tzinfo=UTC)),
        credit_note("cn_2", 800, datetime(2026, 3, 7, tzinfo=UTC)),
    ]
    result = build_schedules(inv, lines, cns)
    assert by_line(result.rows)["cn_2/il_1"] == {"2026-03": -727}  # 800 x 1000/1100
    assert result.skipped == []
    assert len(result.warnings) == 1
    assert "cn_2" in result.warnings[0]
    assert "1600" in result.warnings[0]
    assert_clean(result.rows, inv, lines, cns)


def test_discount_without_positive_revenue_lines_goes_to_the_issue_month() -> None:
    inv = [invoice()]
    lines = [line("il_1", "discount", -500), line("il_2", "one_off", 0)]
    assert by_line(build_schedules(inv, lines, []).rows) == {"il_1": {"2026-03": -500}}


def test_deferred_balances_worked_example() -> None:
    inv = [invoice(issued=datetime(2026, 1, 1, 10, tzinfo=UTC))]
    lines = [
        line("il_1", "subscription", 12000, date(2026, 1, 1), date(2027, 1, 1)),
        line("il_2", "tax", 1200),
    ]
    cns = [credit_note("cn_1", 3300, datetime(2026, 4, 10, 15, tzinfo=UTC))]
    rows = build_schedules(inv, lines, cns).rows
    balances = deferred_balances(rows, billed_sources(inv, lines, cns))
    assert [b.month for b in balances] == [date(2026, m, 1) for m in range(1, 13)]
    march, april = balances[2], balances[3]
    # 12000 by day over 2026: 1019 per 31-day month, 986 per 30-day month and 920 for
    # February, plus the 3 units left to February (.5), April and June (.30 each, earliest).
    # January to March: 1019 + 921 + 1019 recognized of 12000 billed.
    assert (march.billed_to_date, march.recognized_to_date, march.deferred_minor) == (
        12000,
        2959,
        9041,
    )
    assert april.month_end == date(2026, 4, 30)
    # April: the credit note bills -3000; April's 987 is recognized and the note's catch-up
    # reverses 987 (January..April of its own -3000), so recognized to date stays 2959.
    assert (april.billed_to_date, april.recognized_to_date) == (9000, 2959 + 987 - 987)
    assert april.deferred_minor == 9000 - 2959
    assert all(b.difference == 0 for b in balances)
    assert balances[-1].deferred_minor == 0


def test_schedule_ids_of_long_or_odd_ids_are_hashed_and_bounded() -> None:
    month = date(2026, 3, 1)
    assert schedule_id("il_1", month=month) == "rs-il_1-2026-03"
    long_id = "x" * 400
    hashed = schedule_id("cn/1", long_id, month=month)
    assert len(hashed) <= 255
    assert hashed.endswith("-2026-03")
    assert hashed.startswith("rs-cn_1-xxx")
    assert hashed == schedule_id("cn/1", long_id, month=month)
    assert hashed != schedule_id("cn/2", long_id, month=month)


def test_values_from_a_dataframe_are_accepted() -> None:
    frame = pd.DataFrame(
        [
            line("il_1", "subscription", 1000, date(2026, 3, 10), date(2026, 5, 10)),
            line("il_2", "usage", 500),
            line("il_3", "one_off", 1, invoice_id="in_gone"),
        ]
    )
    frame["service_start"] = pd.to_datetime(frame["service_start"])  # Timestamps and NaT
    frame["service_end"] = pd.to_datetime(frame["service_end"])
    lines = frame.to_dict("records")  # amounts are numpy int64
    result = build_schedules([invoice()], lines, [])
    assert by_line(result.rows) == {
        "il_1": {"2026-03": 361, "2026-04": 492, "2026-05": 147},
        "il_2": {"2026-03": 500},
    }
    assert all(type(r.amount_minor) is int for r in result.rows)
    assert result.skipped == ["invoice line il_3: its invoice in_gone is not in the input"]


def test_float_money_is_refused() -> None:
    with pytest.raises(InputDataError, match="il_1"):
        build_schedules([invoice()], [line("il_1", "one_off", 10.5)], [])  # type: ignore[arg-type]


def test_to_arrow_has_the_fixed_schema_even_when_empty() -> None:
    inv = [invoice()]
    rows = build_schedules(inv, [line("il_1", "one_off", 1000)], []).rows
    table = to_arrow(rows)
    assert table.schema == SCHEDULE_SCHEMA
    assert table.schema.field("month").type == pa.date32()
    assert table.schema.field("amount_minor").type == pa.int64()
    assert table.to_pylist() == [r.as_dict() for r in rows]
    assert to_arrow([]).schema == SCHEDULE_SCHEMA


def test_waterfall_sums_recognized_revenue_per_currency_and_month() -> None:
    inv = [invoice("in_1"), invoice("in_2", currency="JPY")]
    lines = [
        line("il_1", "subscription", 6100, date(2026, 3, 1), date(2026, 5, 1)),
        line("il_2", "one_off", 900),
        line("il_3", "one_off", 5000, invoice_id="in_2"),
    ]
    cns = [credit_note("cn_1", 100, datetime(2026, 4, 2, tzinfo=UTC), invoice_id="in_2")]
    cns[0]["currency"] = "JPY"
    points = waterfall(build_schedules(inv, lines, cns).rows)
    assert [(p.currency, p.month.isoformat(), p.amount_minor) for p in points] == [
        ("JPY", "2026-03-01", 5000),
        ("JPY", "2026-04-01", -100),
        ("USD", "2026-03-01", 3100 + 900),
        ("USD", "2026-04-01", 3000),
    ]


# --------------------------------------------------------------------------------------------
# The checks have teeth


def test_check_line_sums_names_a_tampered_line() -> None:
    inv = [invoice()]
    lines = [
        line("il_1", "subscription", 1000, date(2026, 3, 10), date(2026, 5, 10)),
        line("il_2", "tax", 100),
    ]
    rows = build_schedules(inv, lines, []).rows
    off_by_one = [rows[0], rows[1], _with(rows[2], amount_minor=rows[2].amount_minor + 1)]
    problems = check_line_sums(off_by_one, inv, lines, [])
    assert len(problems) == 1
    assert "line il_1" in problems[0]
    assert "1001" in problems[0]
    assert "expected 1000" in problems[0]
    assert check_deferred(off_by_one, inv, lines, []) != []
    tax_row = _with(rows[0], line_id="il_2", kind="tax", schedule_id="rs-il_2-2026-03")
    assert any(
        "il_2" in p and "no revenue" in p for p in check_line_sums([*rows, tax_row], inv, lines, [])
    )
    moved = [_with(rows[0], billing_month=date(2026, 4, 1)), *rows[1:]]
    assert any("billing_month" in p for p in check_line_sums(moved, inv, lines, []))
    assert any("2026-03-31" in p for p in check_deferred(moved, inv, lines, []))


def _with(row: ScheduleRow, **changes: Any) -> ScheduleRow:
    return ScheduleRow(**{**row.as_dict(), **changes})


# --------------------------------------------------------------------------------------------
# Properties over random billing

CURRENCIES = ("USD", "JPY", "EUR", "KWD")
ZONES = ("UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati")
FIRST_DAY = date(2023, 10, 1)  # periods cross 2023/2024/2025 year ends and 2024-02-29


def _stamp(day_offset: int, seconds: int) -> datetime:
    return datetime.combine(FIRST_DAY, datetime.min.time(), UTC) + timedelta(
        days=day_offset, seconds=seconds
    )


@st.composite
def billing(draw: st.DrawFn) -> tuple[list[Row], list[Row], list[Row], str]:
    invoices: list[Row] = []
    lines: list[Row] = []
    notes: list[Row] = []
    n_invoices = draw(st.integers(1, 5))
    for i in range(n_invoices):
        iid = f"in_{i}"
        currency = draw(st.sampled_from(CURRENCIES))
        issued_day = draw(st.integers(0, 500))
        invoices.append(
            invoice(
                iid,
                _stamp(issued_day, draw(st.integers(0, 86399))),
                status=draw(st.sampled_from(("paid", "open", "uncollectible", "void", "draft"))),
                currency=currency,
                customer_id=f"cus_{i % 3}",
            )
        )
        for j in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(("subscription", "usage", "one_off", "discount", "tax")))
            if kind == "discount":
                amount = draw(st.integers(-2_000_000, 0))
            else:
                amount = draw(st.integers(-1_000, 10_000_000))
            start = end = None
            if draw(st.booleans()):
                start = FIRST_DAY + timedelta(days=draw(st.integers(0, 600)))
                end = start + timedelta(days=draw(st.integers(-3, 800)))
            lines.append(line(f"il_{i}_{j}", kind, amount, start, end, invoice_id=iid))
        for k in range(draw(st.integers(0, 2))):
            target = draw(st.sampled_from((iid, iid, iid, "in_missing")))
            notes.append(
                credit_note(
                    f"cn_{i}_{k}",
                    draw(st.integers(0, 12_000_000)),
                    _stamp(issued_day + draw(st.integers(-40, 400)), draw(st.integers(0, 86399))),
                    invoice_id=target,
                    currency=currency if draw(st.integers(0, 9)) else "CHF",
                )
            )
    return invoices, lines, notes, draw(st.sampled_from(ZONES))


def _reference_allocate(total: int, weights: list[int]) -> list[int]:
    """An independent largest-remainder split with Fractions (the test's own arithmetic)."""
    sign, magnitude = (-1, -total) if total < 0 else (1, total)
    exact = [Fraction(magnitude * w, sum(weights)) for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: magnitude - sum(shares)]:
        shares[i] += 1
    return [sign * s for s in shares]


def _expected_credit_revenue(invoice_lines: list[Row], amount: int) -> int | None:
    """Revenue part of a credit note over these invoice lines, computed from scratch."""
    revenue = [x for x in invoice_lines if x["kind"] in ("subscription", "usage", "one_off")]
    positive = sorted((x for x in revenue if x["amount_minor"] > 0), key=lambda x: x["line_id"])
    net = {x["line_id"]: x["amount_minor"] for x in revenue}
    for d in invoice_lines:
        if d["kind"] == "discount" and positive:
            shares = _reference_allocate(d["amount_minor"], [x["amount_minor"] for x in positive])
            for x, s in zip(positive, shares, strict=True):
                net[x["line_id"]] += s
    weighted = sorted(
        [(x["line_id"], net[x["line_id"]], False) for x in revenue]
        + [(x["line_id"], x["amount_minor"], True) for x in invoice_lines if x["kind"] == "tax"]
    )
    weighted = [w for w in weighted if w[1] > 0]
    if not weighted:
        return None
    shares = _reference_allocate(amount, [w[1] for w in weighted])
    return sum(s for w, s in zip(weighted, shares, strict=True) if not w[2])


def _local_month(ts: datetime, zone: str) -> date:
    return ts.astimezone(ZoneInfo(zone)).date().replace(day=1)


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(billing())
def test_rows_of_every_line_sum_exactly_to_the_line(
    data: tuple[list[Row], list[Row], list[Row], str],
) -> None:
    invoices, lines, notes, zone = data
    result = build_schedules(invoices, lines, notes, finance_timezone=zone)
    status = {i["invoice_id"]: i["status"] for i in invoices}
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in result.rows:
        assert r.amount_minor != 0
        sums[(r.source, r.source_id, r.line_id)] += r.amount_minor
    for x in lines:
        got = sums.get(("invoice", x["invoice_id"], x["line_id"]), 0)
        billed = status[x["invoice_id"]] in ("open", "paid", "uncollectible")
        expected = x["amount_minor"] if billed and x["kind"] != "tax" else 0
        assert got == expected, x
    assert len({r.schedule_id for r in result.rows}) == len(result.rows)
    assert check_line_sums(result.rows, invoices, lines, notes, finance_timezone=zone) == []


@PROPERTY
@given(billing())
def test_revenue_lines_are_split_by_day_within_one_unit(
    data: tuple[list[Row], list[Row], list[Row], str],
) -> None:
    invoices, lines, _notes, zone = data
    rows = build_schedules(invoices, lines, [], finance_timezone=zone).rows
    months: dict[str, dict[date, int]] = defaultdict(dict)
    for r in rows:
        months[r.line_id][r.month] = r.amount_minor
    for x in lines:
        start, end = x["service_start"], x["service_end"]
        if x["line_id"] not in months or x["kind"] not in ("subscription", "usage"):
            continue
        if start is None or end is None or end <= start:
            continue
        total = (end - start).days
        day_count: dict[date, int] = defaultdict(int)
        for n in range(total):
            day_count[(start + timedelta(days=n)).replace(day=1)] += 1
        assert set(months[x["line_id"]]) <= set(day_count)
        for month, days in day_count.items():
            exact = Fraction(x["amount_minor"] * days, total)
            assert abs(months[x["line_id"]].get(month, 0) - exact) < 1


@PROPERTY
@given(billing())
def test_credit_notes_reverse_exactly_their_revenue_share_from_their_month_on(
    data: tuple[list[Row], list[Row], list[Row], str],
) -> None:
    invoices, lines, notes, zone = data
    result = build_schedules(invoices, lines, notes, finance_timezone=zone)
    by_invoice = {i["invoice_id"]: i for i in invoices}
    sums: dict[str, int] = defaultdict(int)
    for r in result.rows:
        if r.source == "credit_note":
            sums[r.source_id] += r.amount_minor
    for cn in notes:
        inv = by_invoice.get(cn["invoice_id"])
        expected = None
        billed = inv is not None and inv["status"] in ("open", "paid", "uncollectible")
        if inv is not None and billed and cn["currency"] == inv["currency"]:
            own = [x for x in lines if x["invoice_id"] == inv["invoice_id"]]
            expected = _expected_credit_revenue(own, cn["amount_minor"])
            if cn["amount_minor"] == 0:
                expected = 0
        if expected is None:
            assert any(cn["credit_note_id"] in s for s in result.skipped)
            assert cn["credit_note_id"] not in sums
        else:
            assert sums.get(cn["credit_note_id"], 0) == -expected
    note_month = {cn["credit_note_id"]: _local_month(cn["issued_at"], zone) for cn in notes}
    for r in result.rows:
        if r.source == "credit_note":
            assert r.month >= note_month[r.source_id] == r.billing_month


@PROPERTY
@given(billing())
def test_deferred_equals_billed_minus_recognized_at_every_month_end(
    data: tuple[list[Row], list[Row], list[Row], str],
) -> None:
    invoices, lines, notes, zone = data
    rows = build_schedules(invoices, lines, notes, finance_timezone=zone).rows
    billed = billed_sources(invoices, lines, notes, finance_timezone=zone)
    balances = deferred_balances(rows, billed)
    assert all(b.difference == 0 for b in balances)
    # Recomputed the slow way at each month end, from the rows alone.
    for b in balances:
        deferred = sum(
            r.amount_minor
            for r in rows
            if r.currency == b.currency and r.billing_month <= b.month < r.month
        )
        recognized = sum(
            r.amount_minor
            for r in rows
            if r.currency == b.currency and r.billing_month <= b.month and r.month <= b.month
        )
        assert (b.deferred_minor, b.recognized_to_date) == (deferred, recognized)
    per_currency_last = {b.currency: b for b in balances}
    assert all(b.deferred_minor == 0 for b in per_currency_last.values())
    assert check_deferred(rows, invoices, lines, notes, finance_timezone=zone) == []


@PROPERTY
@given(billing(), st.randoms(use_true_random=False))
def test_output_does_not_depend_on_input_order(
    data: tuple[list[Row], list[Row], list[Row], str], rnd: random.Random
) -> None:
    invoices, lines, notes, zone = data
    first = build_schedules(invoices, lines, notes, finance_timezone=zone)
    shuffled = [list(x) for x in (invoices, lines, notes)]
    for x in shuffled:
        rnd.shuffle(x)
    second = build_schedules(*shuffled, finance_timezone=zone)
    assert second.rows == first.rows
    assert sorted(second.skipped) == sorted(first.skipped)
    keys = [(r.billing_month, r.source_id, r.line_id, r.month) for r in first.rows]
    assert keys == sorted(keys)


# --------------------------------------------------------------------------------------------
# Demo data


@pytest.fixture(scope="module")
def demo() -> Any:
    return generate(DemoConfig(start=date(2026, 3, 1), days=30, customers=60))


def test_demo_schedules_tie_out_and_a_corrupted_row_is_named(demo: Any) -> None:
    args = (demo.invoices, demo.invoice_lines, demo.credit_notes)
    zone = "America/New_York"
    result = build_schedules(*args, finance_timezone=zone)
    assert result.skipped == []
    assert result.warnings == []
    status = {i["invoice_id"]: i["status"] for i in demo.invoices}
    sums: dict[str, int] = defaultdict(int)
    for r in result.rows:
        if r.source == "invoice":
            sums[r.line_id] += r.amount_minor
    revenue_lines = 0
    for x in demo.invoice_lines:
        if status[x["invoice_id"]] in ("void", "draft") or x["kind"] == "tax":
            assert x["line_id"] not in sums
        else:
            revenue_lines += 1
            assert sums[x["line_id"]] == x["amount_minor"], x["line_id"]
    assert revenue_lines > 50
    assert any(r.source == "credit_note" for r in result.rows)
    assert check_line_sums(result.rows, *args, finance_timezone=zone) == []
    assert check_deferred(result.rows, *args, finance_timezone=zone) == []

    victim = next(r for r in result.rows if r.kind == "subscription" and r.source == "invoice")
    corrupted = [
        _with(r, amount_minor=r.amount_minor - 1) if r == victim else r for r in result.rows
    ]
    problems = check_line_sums(corrupted, *args, finance_timezone=zone)
    assert len(problems) == 1
    assert f"line {victim.line_id}" in problems[0]
    assert check_deferred(corrupted, *args, finance_timezone=zone) != []
    dropped = [r for r in result.rows if r != victim]
    assert any(victim.line_id in p for p in check_line_sums(dropped, *args, finance_timezone=zone))
