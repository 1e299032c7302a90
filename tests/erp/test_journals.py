"""Journal entries from billing and settlements: balanced, exact, deterministic."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tieout.erp.journals import (
    MAX_LINES,
    AccountMap,
    JournalEntry,
    JournalError,
    JournalLine,
    adjustment,
    billing_journals,
    external_id,
    netsuite_amount,
    problems,
    recognized_share,
    settlement_journals,
    split,
)

ACCOUNTS = AccountMap(
    accounts_receivable="120",
    revenue="400",
    deferred_revenue="250",
    tax_payable="260",
    discounts="410",
    credit_notes="420",
    gateway_clearing="130",
    gateway_fees="610",
    fx_difference="630",
    bank="101",
    suspense="199",
    split_clearing="198",
    subsidiary="1",
    subsidiaries={"EUR": "2"},
    gateways={"adyen": {"bank": "105", "bank:GBP": "106", "department": "7"}},
)
DAY = date(2026, 3, 10)


def net_by_account(entry: JournalEntry) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for line in entry.lines:
        out[line.account] += line.amount
    return dict(out)


def invoice(inv_id: str, total: int, status: str = "paid", cur: str = "USD") -> dict[str, Any]:
    return {"invoice_id": inv_id, "status": status, "currency": cur, "total_minor": total}


def line(inv_id: str, kind: str, amount: int, start: date | None = None,
         end: date | None = None) -> dict[str, Any]:  # fmt: skip
    return {"invoice_id": inv_id, "kind": kind, "amount_minor": amount,
            "service_start": start, "service_end": end}  # fmt: skip


# -- billing -----------------------------------------------------------------------------------


def test_recognized_share_is_elapsed_days_floor() -> None:
    # March 10 .. April 10 (exclusive): 31 days; invoiced on the first day: 1 day earned.
    assert recognized_share(3100, DAY, date(2026, 4, 10), DAY) == 100
    assert recognized_share(3100, DAY, date(2026, 4, 10), date(2026, 4, 30)) == 3100
    assert recognized_share(3100, date(2026, 4, 1), date(2026, 5, 1), DAY) == 0
    assert recognized_share(1000, DAY, date(2026, 3, 13), DAY) == 333  # floor, never over
    assert recognized_share(-1000, DAY, date(2026, 3, 13), DAY) == -333
    assert recognized_share(500, None, None, DAY) == 500


def test_billing_entry_books_ar_revenue_deferred_tax_and_discounts() -> None:
    inv = invoice("in_1", 2800 + 230)  # 3100 plan - 800 discount + 230 tax... see lines
    lines = [
        line("in_1", "subscription", 3100, DAY, date(2026, 4, 10)),
        line("in_1", "discount", -800),
        line("in_1", "usage", 500),
        line("in_1", "tax", 230),
    ]
    inv["total_minor"] = 3100 - 800 + 500 + 230
    [entry] = billing_journals(
        [inv], lines, [], days={"in_1": DAY}, start=DAY, end=DAY, accounts=ACCOUNTS
    )
    assert entry.imbalance() == 0
    assert net_by_account(entry) == {
        "120": 3030,  # AR debited by the total
        "400": -(100 + 500),  # revenue: one day of 31 plus the usage
        "250": -3000,  # the rest of the subscription is deferred
        "260": -230,
        "410": 800,  # discounts debited
    }
    assert entry.external_id == "tieout-bill-2026-03-10-USD-1"
    assert entry.tran_date == DAY
    assert entry.subsidiary == "1"
    assert problems(entry) == []


def test_void_and_draft_invoices_post_nothing_and_credit_notes_reverse_ar() -> None:
    invs = [invoice("in_v", 100, "void"), invoice("in_d", 100, "draft"),
            invoice("in_e", 100, cur="EUR")]  # fmt: skip
    lines = [line(i, "one_off", 100) for i in ("in_v", "in_d", "in_e")]
    cns = [{"credit_note_id": "cn_1", "invoice_id": "in_e", "amount_minor": 40,
            "currency": "EUR"}]  # fmt: skip
    days = {"in_v": DAY, "in_d": DAY, "in_e": DAY, "cn_1": DAY}
    [entry] = billing_journals(invs, lines, cns, days=days, start=DAY, end=DAY, accounts=ACCOUNTS)
    assert entry.currency == "EUR"
    assert entry.subsidiary == "2"
    assert net_by_account(entry) == {"120": 60, "400": -100, "420": 40}
    assert "1 invoice(s), 1 credit note(s)" in entry.memo


def test_invoice_whose_lines_do_not_add_up_is_refused_by_name() -> None:
    with pytest.raises(JournalError, match="in_bad"):
        billing_journals(
            [invoice("in_bad", 999)], [line("in_bad", "one_off", 100)], [],
            days={"in_bad": DAY}, start=DAY, end=DAY, accounts=ACCOUNTS,
        )  # fmt: skip


def test_days_outside_the_range_are_left_out() -> None:
    out = billing_journals(
        [invoice("in_1", 100)], [line("in_1", "one_off", 100)], [],
        days={"in_1": date(2026, 3, 9)}, start=DAY, end=DAY, accounts=ACCOUNTS,
    )  # fmt: skip
    assert out == []


# -- settlements -------------------------------------------------------------------------------


def sline(line_id: str, category: str, gross: int, fee: int = 0, *, gateway: str = "stripe",
          batch: str = "po_1", cur: str = "USD", day: date = DAY,
          presentment: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "line_id": line_id, "gateway": gateway, "batch_id": batch, "currency": cur,
        "category": category, "gross_minor": gross, "fee_minor": fee, "net_minor": gross - fee,
        "day": day, "presentment_currency": presentment, "gateway_reference": f"ref_{line_id}",
        "modification_reference": None,
        "occurred_at": datetime(2026, 3, 9, tzinfo=UTC),
    }  # fmt: skip


def batch(*extra: dict[str, Any], payout_day: date = DAY, **kw: Any) -> list[dict[str, Any]]:
    rows = [
        sline("l1", "charge", 10_000, 320, **kw),
        sline("l2", "charge", 5_000, 175, **kw),
        sline("l3", "refund", -2_000, 0, **kw),
        sline("l4", "fee", 0, 150, **kw),
        *extra,
    ]
    net = sum(r["net_minor"] for r in rows)
    rows.append(sline("l9", "payout", -net, 0, day=payout_day, **kw))
    return rows


def test_settlement_entry_debits_bank_and_fees_and_clears_each_line() -> None:
    [entry], held = settlement_journals(
        batch(), start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={}, held_batches={}
    )
    assert held == []
    assert entry.imbalance() == 0
    assert entry.tran_date == DAY
    assert net_by_account(entry) == {
        "101": 13_000 - 645,  # bank: the payout
        "610": 645,  # fees: 320 + 175 + 150
        "130": -13_000,  # clearing: charges less the refund
    }
    memos = [x.memo for x in entry.lines if x.account == "130"]
    assert any("l1" in m for m in memos)
    assert any("refund l3" in m for m in memos)
    assert entry.external_id == "tieout-stl-stripe-po_1-USD"


def test_held_line_waits_in_suspense_and_the_entry_still_balances() -> None:
    [entry], _ = settlement_journals(
        batch(), start=DAY, end=DAY, accounts=ACCOUNTS,
        held_lines={"l2": "missing_in_billing abc"}, held_batches={},
    )  # fmt: skip
    assert entry.imbalance() == 0
    assert entry.held_back == ("l2",)
    totals = net_by_account(entry)
    assert totals["199"] == -(5_000 - 175)  # the held line's net, in suspense
    assert totals["610"] == 320 + 150  # its fee is not booked while held


def test_fx_charges_clear_through_fx_difference_and_gateway_overrides_apply() -> None:
    fx = sline("l5", "charge", 3_000, 90, gateway="adyen", cur="GBP", presentment="USD")
    rows = batch(fx, gateway="adyen", cur="GBP")
    rows = [r for r in rows if r["line_id"] != "l5"] + [fx]
    net = sum(r["net_minor"] for r in rows if r["category"] != "payout")
    for r in rows:
        if r["category"] == "payout":
            r["gross_minor"] = r["net_minor"] = -net
    [entry], _ = settlement_journals(
        rows, start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={}, held_batches={}
    )
    totals = net_by_account(entry)
    assert totals["630"] == -3_000
    assert "106" in totals
    assert "101" not in totals
    assert all(x.department == "7" for x in entry.lines)


def test_open_batches_and_held_batches_are_not_posted() -> None:
    open_batch = [r for r in batch() if r["category"] != "payout"]
    assert settlement_journals(
        open_batch, start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={}, held_batches={}
    ) == ([], [])
    entries, held = settlement_journals(
        batch(), start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={},
        held_batches={("stripe", "po_1", "USD"): "open payout_mismatch"},
    )  # fmt: skip
    assert entries == []
    assert held[0].reason == "open payout_mismatch"


def test_a_batch_that_does_not_tie_out_is_held_with_the_difference() -> None:
    rows = batch()
    rows[-1]["gross_minor"] -= 7
    entries, held = settlement_journals(
        rows, start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={}, held_batches={}
    )
    assert entries == []
    assert "off by" in held[0].reason


# -- splitting, adjusting, amounts -------------------------------------------------------------


def big_entry(n: int) -> JournalEntry:
    lines = [JournalLine.net("130", -(i + 1), f"line {i}") for i in range(n)]
    lines.append(JournalLine.net("101", sum(i + 1 for i in range(n)), "bank"))
    return JournalEntry("tieout-x", "settlement", DAY, "USD", "1", "big", tuple(lines))


def test_entries_above_the_line_limit_split_into_balanced_parts() -> None:
    entry = big_entry(2_500)
    parts = split(entry, clearing="198")
    assert len(parts) == 3
    assert [p.external_id for p in parts] == ["tieout-x-p1", "tieout-x-p2", "tieout-x-p3"]
    assert all(len(p.lines) <= MAX_LINES and p.imbalance() == 0 for p in parts)
    assert all(p.base == "tieout-x" for p in parts)
    clearing = sum(x.amount for p in parts for x in p.lines if x.account == "198")
    assert clearing == 0
    kept = [x for p in parts for x in p.lines if x.account != "198"]
    assert kept == list(entry.lines)  # nothing lost, nothing doubled
    assert split(big_entry(10), clearing="198") == [big_entry(10)]


def test_adjustment_moves_posted_to_wanted_and_is_none_when_equal() -> None:
    posted = big_entry(3)
    changed = JournalEntry(
        "tieout-x", "settlement", DAY, "USD", "1", "big",
        (JournalLine.net("130", -10, "a"), JournalLine.net("101", 10, "bank")),
    )  # fmt: skip
    adj = adjustment(changed, [posted], 1, date(2026, 3, 20))
    assert adj is not None
    assert adj.external_id == "tieout-x-adj1"
    assert adj.kind == "adjustment"
    assert adj.tran_date == date(2026, 3, 20)
    assert adj.imbalance() == 0
    assert net_by_account(adj) == {"130": -10 + 6, "101": 10 - 6}
    assert adjustment(posted, [posted], 1, DAY) is None
    assert adjustment(changed, [posted, adj], 2, DAY) is None


@pytest.mark.parametrize(
    ("minor", "cur", "text"),
    [(123456, "USD", "1234.56"), (500, "JPY", "500"), (1, "BHD", "0.001"), (-5, "EUR", "-0.05")],
)
def test_netsuite_amounts_are_exact_decimals(minor: int, cur: str, text: str) -> None:
    assert netsuite_amount(minor, cur) == Decimal(text)
    assert str(netsuite_amount(minor, cur)) == text


def test_external_ids_are_deterministic_and_safe() -> None:
    assert external_id("stl", "stripe", "po_1", "USD") == "tieout-stl-stripe-po_1-USD"
    odd = external_id("stl", "paypal", "batch with spaces/and slashes" * 5, "USD")
    assert odd == external_id("stl", "paypal", "batch with spaces/and slashes" * 5, "USD")
    assert len(odd) <= 100
    assert " " not in odd
    assert "/" not in odd


def test_payload_hash_changes_with_content_only() -> None:
    a, b = big_entry(3), big_entry(3)
    assert a.payload_hash() == b.payload_hash()
    assert JournalEntry.from_payload(a.payload()) == a
    assert big_entry(4).payload_hash() != a.payload_hash()


_texts = st.text(max_size=12) | st.sampled_from(["", "ü", '"\\/\b\f\n\r\t', "\x00\x1f\x7f", "𝄞"])
_ids = st.none() | _texts


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_texts, min_size=5, max_size=5),
    lines=st.lists(
        st.tuples(_texts, st.integers(0, 10**15), st.integers(0, 10**15), _texts, _ids, _ids),
        min_size=1,
        max_size=4,
    ),
    base=st.sampled_from(["", "tieout-base"]),
)
def test_payload_text_is_exactly_what_json_dumps_writes(
    texts: list[str], lines: list[tuple[Any, ...]], base: str
) -> None:
    """The ledger has stored `json.dumps(payload, sort_keys=True, separators=(",", ":"))` and
    its hash since the start: the field-by-field text must be the same to the byte, or every
    posted entry would look changed."""
    import json

    entry = JournalEntry(
        external_id=texts[0], kind=texts[1], tran_date=date(2026, 3, 1), currency=texts[2],
        subsidiary=texts[3], memo=texts[4], lines=tuple(JournalLine(*x) for x in lines),
        base_id=base,
    )  # fmt: skip
    assert entry.payload_text == json.dumps(entry.payload(), sort_keys=True, separators=(",", ":"))
    # Other value types (a bool, a Decimal) take json.dumps itself, not a wrong text.
    odd = JournalEntry(
        external_id=texts[0], kind=texts[1], tran_date=date(2026, 3, 1), currency=texts[2],
        subsidiary=texts[3], memo=texts[4], lines=(JournalLine("1", True, 0),),  # type: ignore[arg-type]
    )  # fmt: skip
    assert odd.payload_text == json.dumps(odd.payload(), sort_keys=True, separators=(",", ":"))
