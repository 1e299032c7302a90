"""Stripe settlement parser and renderers: golden files, tolerance, bad files, round trips."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tieout.connectors.settlements import stripe
from tieout.connectors.settlements.base import (
    CATEGORIES,
    ParsedFile,
    SettlementFileError,
    SettlementLine,
    make_line_id,
)
from tieout.money import minor_to_decimal

from .helpers import assert_same_lines

DATA = Path(__file__).parent / "data" / "stripe"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def line(**kw: Any) -> SettlementLine:
    """A canonical line with the fields a test does not care about defaulted."""
    base: dict[str, Any] = {
        "gateway": "stripe",
        "line_id": "x",
        "batch_id": "2024-03-04",
        "category": "charge",
        "gateway_reference": None,
        "modification_reference": None,
        "merchant_reference": None,
        "occurred_at": at("2024-03-01 10:15:00"),
        "available_on": date(2024, 3, 4),
        "currency": "USD",
        "gross_minor": 0,
        "fee_minor": 0,
        "net_minor": 0,
        "presentment_currency": None,
        "presentment_amount_minor": None,
        "exchange_rate": None,
        "source_file": "f",
        "source_row": 2,
    }
    base.update(kw)
    return SettlementLine(**base)


def check_golden(name: str, want: list[tuple[str, dict[str, Any]]]) -> ParsedFile:
    """Every field of every line, written out by hand; line ids from the txn ids."""
    parsed = stripe.parse(read(name), name)
    assert len(parsed.lines) == len(want)
    for got, (txn, fields) in zip(parsed.lines, want, strict=True):
        assert got.line_id == make_line_id("stripe", txn)
        expected = asdict(line(line_id=got.line_id, source_file=name, **fields))
        assert asdict(got) == expected
    return parsed


# ------------------------------------------------------------------------------------ golden


def test_hledger_default_columns_sample() -> None:
    """The vendor-layout sample: all quoted, lowercase currency, missing trailing field."""
    parsed = check_golden(
        "hledger_default.csv",
        [
            (
                "txn_14G11HjubSIHf9IKrvJdwN",
                {
                    "batch_id": "2020-01-27",
                    "occurred_at": at("2020-01-23 08:26:29"),
                    "available_on": date(2020, 1, 27),
                    "gross_minor": 1200,
                    "net_minor": 1200,
                    "source_row": 2,
                },
            ),
            (
                "txn_14G11HjHgubIH9ZvbPgYO7",
                {
                    "batch_id": "2020-01-27",
                    "category": "refund",
                    "occurred_at": at("2020-01-23 08:26:31"),
                    "available_on": date(2020, 1, 27),
                    "gross_minor": -77,
                    "net_minor": -77,
                    "source_row": 3,
                },
            ),
        ],
    )
    assert parsed.format == "stripe.itemized_csv"
    assert parsed.gateway == "stripe"
    assert parsed.findings == ()


def test_payout_reconciliation_rich_columns() -> None:
    payout = "po_1OaPay"
    parsed = check_golden(
        "payout_reconciliation.csv",
        [
            (
                "txn_1OaCharge",
                {
                    "batch_id": payout,
                    "gateway_reference": "ch_1OaCharge",
                    "merchant_reference": "in_1OaInvoice",
                    "gross_minor": 1100,
                    "fee_minor": 62,
                    "net_minor": 1038,
                    "presentment_currency": "EUR",
                    "presentment_amount_minor": 1000,
                    "source_row": 2,
                },
            ),
            (
                # no charge_id: the charge's own source id; same-currency customer amount
                # is not presentment; merchant reference from payment_metadata[order_id]
                "txn_1OaCharge2",
                {
                    "batch_id": payout,
                    "gateway_reference": "py_1OaAch",
                    "merchant_reference": "ORD-1001",
                    "occurred_at": at("2024-03-01 11:00:00"),
                    "gross_minor": 10000,
                    "fee_minor": 320,
                    "net_minor": 9680,
                    "source_row": 3,
                },
            ),
            (
                "txn_1OaRefund",
                {
                    "batch_id": payout,
                    "category": "refund",
                    "gateway_reference": "ch_1OaOld",
                    "modification_reference": "re_1OaRefund",
                    "merchant_reference": "ORD-0007",
                    "occurred_at": at("2024-03-02 09:00:00"),
                    "gross_minor": -500,
                    "net_minor": -500,
                    "source_row": 4,
                },
            ),
            (
                "txn_1OaDispute",
                {
                    "batch_id": payout,
                    "category": "chargeback",
                    "gateway_reference": "ch_1OaDisputed",
                    "modification_reference": "du_1OaDispute",
                    "occurred_at": at("2024-03-02 12:30:00"),
                    "gross_minor": -2000,
                    "fee_minor": 1500,
                    "net_minor": -3500,
                    "source_row": 5,
                },
            ),
            (
                # Stripe's -0.10 amount / 0 fee becomes the canonical fee-only line
                "txn_1OaNetCost",
                {
                    "batch_id": payout,
                    "category": "fee",
                    "occurred_at": at("2024-03-03 00:00:05"),
                    "gross_minor": 0,
                    "fee_minor": 10,
                    "net_minor": -10,
                    "source_row": 6,
                },
            ),
            (
                "txn_1OaPayout",
                {
                    "batch_id": payout,
                    "category": "payout",
                    "modification_reference": payout,
                    "occurred_at": at("2024-03-05 02:00:00"),
                    "available_on": date(2024, 3, 6),
                    "gross_minor": -6708,
                    "net_minor": -6708,
                    "source_row": 7,
                },
            ),
            (
                "txn_1ObLater",
                {
                    "batch_id": "2024-03-08",
                    "gateway_reference": "ch_1ObLater",
                    "merchant_reference": "in_1ObInvoice",
                    "occurred_at": at("2024-03-05 18:00:00"),
                    "available_on": date(2024, 3, 8),
                    "gross_minor": 5000,
                    "fee_minor": 175,
                    "net_minor": 4825,
                    "source_row": 8,
                },
            ),
        ],
    )
    assert parsed.format == "stripe.itemized_csv"
    assert parsed.findings == ()  # po_1OaPay nets to zero with its payout line


def test_reordered_columns_header_variants_jpy_kwd() -> None:
    """Reordered, mixed-case, padded headers; created/available_on without _utc; JPY whole
    yen; KWD three decimals; an ISO timestamp; no available_on -> created date batch."""
    check_golden(
        "balance_change_reordered.csv",
        [
            (
                "txn_1JpCharge",
                {
                    "batch_id": "2024-04-05",
                    "occurred_at": at("2024-04-01 03:04:05"),
                    "available_on": date(2024, 4, 5),
                    "currency": "JPY",
                    "gross_minor": 5000,
                    "fee_minor": 360,
                    "net_minor": 4640,
                    "source_row": 2,
                },
            ),
            (
                "txn_1JpRefundFail",
                {
                    "batch_id": "2024-04-05",
                    "category": "refund",
                    "occurred_at": at("2024-04-02 00:00:00"),
                    "available_on": date(2024, 4, 5),
                    "currency": "JPY",
                    "gross_minor": 1000,
                    "net_minor": 1000,
                    "source_row": 3,
                },
            ),
            (
                "txn_1KwTax",
                {
                    "batch_id": "2024-04-02",
                    "category": "fee",
                    "occurred_at": at("2024-04-02 10:00:00"),
                    "available_on": None,
                    "currency": "KWD",
                    "gross_minor": 0,
                    "fee_minor": 1250,
                    "net_minor": -1250,
                    "source_row": 4,
                },
            ),
        ],
    )


def test_bom_and_crlf() -> None:
    check_golden(
        "bom_crlf.csv",
        [
            (
                "txn_1Bom",
                {
                    "batch_id": "2024-05-03",
                    "occurred_at": at("2024-05-01 00:00:00"),
                    "available_on": date(2024, 5, 3),
                    "currency": "EUR",
                    "gross_minor": 750,
                    "fee_minor": 36,
                    "net_minor": 714,
                    "source_row": 2,
                },
            ),
        ],
    )


def test_payouts_itemized() -> None:
    """Payout amounts stated positive become money out; a failed payout money back in."""
    parsed = check_golden(
        "payouts_itemized.csv",
        [
            (
                "txn_1OaPayout",
                {
                    "batch_id": "po_1OaPay",
                    "category": "payout",
                    "modification_reference": "po_1OaPay",
                    "occurred_at": at("2024-03-06 00:00:00"),
                    "available_on": None,
                    "gross_minor": -6708,
                    "net_minor": -6708,
                    "source_row": 2,
                },
            ),
            (
                "txn_1OcFail",
                {
                    "batch_id": "po_1OcFail",
                    "category": "payout_reversal",
                    "modification_reference": "po_1OcFail",
                    "occurred_at": at("2024-03-07 00:00:00"),
                    "available_on": None,
                    "currency": "EUR",
                    "gross_minor": 1200,
                    "net_minor": 1200,
                    "source_row": 3,
                },
            ),
        ],
    )
    assert parsed.format == "stripe.payouts_itemized_csv"
    assert parsed.findings == ()  # the payouts alone do not itemize their batches


def test_same_balance_transaction_in_two_reports_has_one_line_id() -> None:
    recon = stripe.parse(read("payout_reconciliation.csv"), "a.csv").lines
    payouts = stripe.parse(read("payouts_itemized.csv"), "b.csv").lines
    assert recon[5].line_id == payouts[0].line_id


def test_vendor_example_json_list() -> None:
    parsed = stripe.parse(read("vendor_example.json"), "v.json")
    assert parsed.format == "stripe.balance_transactions_json"
    assert asdict(parsed.lines[0]) == asdict(
        line(
            line_id=make_line_id("stripe", "txn_1MiN3gLkdIwHu7ixxapQrznl"),
            batch_id="2023-03-05",
            category="transfer",
            modification_reference="tr_1MiN3gLkdIwHu7ixNCZvFdgA",
            occurred_at=at("2023-03-05 19:17:24"),
            available_on=date(2023, 3, 5),
            gross_minor=-400,
            net_minor=-400,
            source_file="v.json",
            source_row=1,
        )
    )


def test_json_envelope_expanded_sources_fx_and_type_fallback() -> None:
    parsed = stripe.parse(read("envelope.json"), "e.json")
    assert parsed.format == "stripe.balance_transactions_json"
    ids = ["txn_1PqCharge", "txn_1PqRefund", "txn_1PqFee", "txn_1PqPayout"]
    want = [
        line(
            gateway_reference="ch_1PqCharge",
            merchant_reference="in_1PqInvoice",
            gross_minor=1234,
            fee_minor=66,
            net_minor=1168,
            presentment_currency="EUR",
            presentment_amount_minor=1000,
            exchange_rate="1.234",
            source_row=1,
        ),
        line(
            category="refund",
            gateway_reference="ch_1PqCharge",
            modification_reference="re_1PqRefund",
            occurred_at=at("2024-03-02 09:30:00"),
            gross_minor=-617,
            net_minor=-617,
            presentment_currency="EUR",
            presentment_amount_minor=-500,
            exchange_rate="1.234",
            source_row=2,
        ),
        line(  # no reporting_category: type stripe_fee
            category="fee",
            modification_reference="bfee_1PqFee",
            occurred_at=at("2024-03-02 09:30:00"),
            gross_minor=0,
            fee_minor=200,
            net_minor=-200,
            source_row=3,
        ),
        line(
            batch_id="po_1PqPayout",
            category="payout",
            modification_reference="po_1PqPayout",
            occurred_at=at("2024-03-05 02:00:00"),
            available_on=date(2024, 3, 6),
            gross_minor=-351,
            net_minor=-351,
            source_row=4,
        ),
    ]
    for got, txn, w in zip(parsed.lines, ids, want, strict=True):
        assert asdict(got) == asdict(
            replace(w, line_id=make_line_id("stripe", txn), source_file="e.json")
        )
    assert parsed.findings == ()  # the JSON payout alone does not itemize its batch


def test_json_never_goes_through_float() -> None:
    rate = "1.23456789012345678901234567890123"
    doc = json.loads(read("envelope.json"))
    text = json.dumps(doc).replace("1.234", rate, 1).encode()
    assert stripe.parse(text, "f").lines[0].exchange_rate == rate


# --------------------------------------------------------------------------------- tolerance

HEADER = (
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category"
)
ROW = "txn_1,2024-01-01 00:00:00,2024-01-03 00:00:00,usd,1.00,0.03,0.97,charge"


def test_extra_columns_and_metadata_do_not_matter() -> None:
    plain = stripe.parse(f"{HEADER}\n{ROW}\n".encode(), "a").lines
    extra = stripe.parse(
        f"customer_email,{HEADER},card_brand,trace_id\nx@example.com,{ROW},visa,T1\n".encode(), "b"
    ).lines
    assert_same_lines(extra, plain)
    assert extra[0].line_id == plain[0].line_id


def test_comma_decimal_separator() -> None:
    """Reports run with decimal_separator=',' (Stripe never groups digits)."""
    row = 'txn_1,2024-01-01 00:00:00,2024-01-03 00:00:00,kwd,"1,250","0,030","1,220",charge'
    got = stripe.parse(f"{HEADER}\n{row}\n".encode(), "c").lines[0]
    assert (got.gross_minor, got.fee_minor, got.net_minor) == (1250, 30, 1220)


def test_utf16_file() -> None:
    parsed = stripe.parse(f"{HEADER}\n{ROW}\n".encode("utf-16"), "u16")
    assert parsed.lines[0].net_minor == 97


def test_header_only_file_has_no_lines() -> None:
    parsed = stripe.parse(f"{HEADER}\n".encode(), "h")
    assert parsed.lines == ()
    assert parsed.format == "stripe.itemized_csv"


def test_payment_intent_only_reference() -> None:
    header = f"{HEADER},payment_intent_id,source_id"
    parsed = stripe.parse(f"{header}\n{ROW},pi_9,ch_9\n".encode(), "p")
    assert parsed.lines[0].gateway_reference == "ch_9"  # the charge's own id first
    row = ROW.replace("1.00,0.03,0.97,charge", "-1.00,0.00,-1.00,refund")
    parsed = stripe.parse(f"{header}\n{row},pi_9,re_9\n".encode(), "p")
    assert parsed.lines[0].gateway_reference == "pi_9"
    assert parsed.lines[0].modification_reference == "re_9"


def test_unsigned_customer_facing_amount_on_refund_is_signed_like_gross() -> None:
    header = f"{HEADER},customer_facing_amount,customer_facing_currency"
    row = ROW.replace("1.00,0.03,0.97,charge", "-1.10,0.00,-1.10,refund")
    got = stripe.parse(f"{header}\n{row},1.00,EUR\n".encode(), "p").lines[0]
    assert (got.presentment_currency, got.presentment_amount_minor) == ("EUR", -100)


def test_unbalanced_batch_is_a_finding_not_an_error() -> None:
    header = f"{HEADER},source_id,automatic_payout_id"
    rows = [
        f"{ROW},ch_1,po_9",
        "txn_2,2024-01-02 00:00:00,2024-01-03 00:00:00,usd,-0.90,0.00,-0.90,payout,po_9,po_9",
    ]
    parsed = stripe.parse("\n".join([header, *rows, ""]).encode(), "u.csv")
    assert len(parsed.lines) == 2
    [finding] = parsed.findings
    assert (finding.batch_id, finding.currency, finding.actual_minor) == ("po_9", "USD", 7)
    assert finding.kind == "batch_not_zero"


# ---------------------------------------------------------------------------------- line ids


def test_line_ids_do_not_depend_on_file_name() -> None:
    a = stripe.parse(read("payout_reconciliation.csv"), "one.csv").lines
    b = stripe.parse(read("payout_reconciliation.csv"), "other/name.csv").lines
    assert [x.line_id for x in a] == [x.line_id for x in b]
    assert len({x.line_id for x in a}) == len(a)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_identical_rows_get_distinct_line_ids(fmt: str) -> None:
    if fmt == "csv":
        data = f"{HEADER}\n{ROW}\n{ROW}\n".encode()
    else:
        obj = json.loads(read("vendor_example.json"))[0]
        data = json.dumps([obj, obj]).encode()
    first, second = stripe.parse(data, "dup").lines
    assert first.line_id != second.line_id
    assert first.line_id == stripe.parse(data, "again").lines[0].line_id


# ---------------------------------------------------------------------------------- malformed

BAD = [
    ("empty.csv", None, "the file is empty"),
    ("not_stripe.csv", 1, "neither balance_transaction_id nor payout_id"),
    ("missing_net.csv", 1, "missing required column(s) net"),
    ("payouts_no_effective_at.csv", 1, "missing required column(s) effective_at_utc"),
    ("truncated_row.csv", 3, "5 fields but the header has 9: the row is cut short"),
    ("unterminated_quote.csv", 3, "malformed CSV"),
    ("too_many_fields.csv", 2, "10 fields but the header has 9"),
    ("latin1.csv", 3, "not valid UTF-8"),
    ("bad_amount.csv", 2, "column gross: '1.O0' is not an amount in USD"),
    ("jpy_decimals.csv", 2, "column gross: '1000.5' is not an amount in JPY"),
    ("bad_currency.csv", 3, "'usx' is not an ISO 4217 currency code"),
    ("bad_date.csv", 3, "column created_utc: '2024-13-01 00:00:00' is not a date"),
    ("unknown_category.csv", 2, "unknown reporting_category 'crypto_payout'"),
    ("net_mismatch.csv", 3, "net 12.00 != gross 12.00 - fee 0.50"),
    ("empty_txn_id.csv", 2, "column balance_transaction_id is empty"),
    ("truncated.json", 13, "not valid JSON"),
    ("not_a_list.json", 1, "not a Stripe list"),
    ("not_balance_transaction.json", 18, "item 2 of the list is not a balance_transaction"),
    ("float_amount.json", 18, "item 2: field amount: 100.5 is not an integer of minor units"),
    ("unknown_type.json", 18, "unknown type 'crypto_thing'"),
    ("json_net_mismatch.json", 2, "net 1.00 != gross 1.00 - fee 0.03"),
    ("bad_timestamp.json", 4, 'field created: "2024-03-01" is not a unix timestamp'),
    ("json_bad_currency.json", 4, "'bitcoin' is not an ISO 4217 currency code"),
]


@pytest.mark.parametrize(("name", "line_no", "fragment"), BAD)
def test_malformed_file_is_rejected_whole(name: str, line_no: int | None, fragment: str) -> None:
    path = DATA / "bad" / name
    with pytest.raises(SettlementFileError) as info:
        stripe.parse(path.read_bytes(), str(path))
    assert fragment in info.value.reason
    assert info.value.line == line_no
    assert info.value.file == str(path)


def test_every_bad_file_is_tested() -> None:
    assert {p.name for p in (DATA / "bad").iterdir()} == {name for name, _, _ in BAD}


def test_unknown_category_names_the_fix() -> None:
    with pytest.raises(SettlementFileError) as info:
        stripe.parse(read("bad/unknown_category.csv"), "f")
    assert info.value.fix == "a new Stripe reporting category; tell the tieout team"


# --------------------------------------------------------------------------------- renderers


def golden_lines() -> list[SettlementLine]:
    out: list[SettlementLine] = []
    for name in (
        "payout_reconciliation.csv",
        "balance_change_reordered.csv",
        "hledger_default.csv",
    ):
        out.extend(stripe.parse(read(name), name).lines)
    return out


def test_render_itemized_csv_round_trip() -> None:
    lines = golden_lines()
    data = stripe.render_itemized_csv(lines)
    parsed = stripe.parse(data, "r.csv")
    assert parsed.format == "stripe.itemized_csv"
    assert_same_lines(parsed.lines, lines)
    assert data == stripe.render_itemized_csv(lines)  # deterministic


def test_render_itemized_csv_writes_vendor_layout() -> None:
    lines = stripe.parse(read("hledger_default.csv"), "h").lines
    data = stripe.render_itemized_csv(
        lines,
        columns=[*HEADER.split(","), "description"],
        quote_all=True,
    ).decode()
    rows = data.splitlines()
    assert rows[0] == (
        '"balance_transaction_id","created_utc","available_on_utc","currency","gross","fee",'
        '"net","reporting_category","description"'
    )
    assert rows[2].endswith(
        '"2020-01-23 08:26:31","2020-01-27 00:00:00","usd","-0.77","0.00","-0.77","refund",'
        '"REFUND FOR PAYMENT"'
    )
    assert rows[1].startswith('"txn_')
    assert_same_lines(stripe.parse(data.encode(), "r").lines, lines)


def test_render_itemized_csv_needs_the_required_columns() -> None:
    with pytest.raises(ValueError, match="columns must include"):
        stripe.render_itemized_csv([], columns=("balance_transaction_id", "net"))


def test_render_fee_line_as_stripe_states_it() -> None:
    fee = line(category="fee", gross_minor=0, fee_minor=10, net_minor=-10)
    row = stripe.render_itemized_csv([fee]).decode().splitlines()[1]
    assert ",usd,-0.10,0.00,-0.10,fee," in row


def json_carried(lines: list[SettlementLine]) -> list[SettlementLine]:
    """What JSON carries: batch ids follow the fallback (no automatic_payout_id), whole seconds."""
    out = []
    for x in lines:
        po = x.modification_reference or ""
        batch = (
            po
            if x.category in ("payout", "payout_reversal") and po.startswith("po_")
            else (x.available_on or x.occurred_at.date()).isoformat()
        )
        out.append(replace(x, batch_id=batch))
    return out


def test_render_balance_transactions_json_round_trip() -> None:
    lines = stripe.parse(read("envelope.json"), "e.json").lines
    data = stripe.render_balance_transactions_json(lines)
    doc = json.loads(data)
    assert doc["object"] == "list"
    assert doc["has_more"] is False
    assert [o["object"] for o in doc["data"]] == ["balance_transaction"] * 4
    assert b"1.234" in data
    assert_same_lines(stripe.parse(data, "r.json").lines, lines)
    csv_lines = json_carried(golden_lines())
    assert_same_lines(
        stripe.parse(stripe.render_balance_transactions_json(csv_lines), "r.json").lines,
        csv_lines,
    )
    assert data == stripe.render_balance_transactions_json(lines)


# ---------------------------------------------------------------------------------- property

CURRENCIES = ["USD", "EUR", "JPY", "KWD"]
refs = st.none() | st.from_regex(r"[a-z]{2}_[A-Za-z0-9]{4,10}", fullmatch=True)


@st.composite
def batch(draw: st.DrawFn) -> list[SettlementLine]:
    """An automatic payout: random movements and the payout that empties them."""
    cur = draw(st.sampled_from(CURRENCIES))
    payout_id = "po_" + draw(st.from_regex(r"[A-Za-z0-9]{8}", fullmatch=True))
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 10**8)))
    lines = []
    categories = [c for c in CATEGORIES if c not in ("payout", "payout_reversal")]
    for i in range(draw(st.integers(1, 6))):
        category = draw(st.sampled_from(categories))
        gross = 0 if category == "fee" else draw(st.integers(-(10**7), 10**7))
        fee = draw(st.integers(-500, 5000))
        pcur = draw(st.sampled_from([None, *CURRENCIES]))
        pamount = None
        if pcur == cur:
            pcur = None
        if pcur is not None and category != "fee":
            pamount = draw(st.integers(0, 10**7)) * (-1 if gross < 0 else 1)
        else:
            pcur = None
        lines.append(
            line(
                batch_id=payout_id,
                category=category,
                gateway_reference=draw(refs),
                modification_reference=None if category == "charge" else draw(refs),
                merchant_reference=draw(refs),
                occurred_at=start + timedelta(seconds=i),
                available_on=draw(st.none() | st.dates(date(2023, 1, 1), date(2026, 1, 1))),
                currency=cur,
                gross_minor=gross,
                fee_minor=fee,
                net_minor=gross - fee,
                presentment_currency=pcur,
                presentment_amount_minor=pamount,
            )
        )
    total = sum(x.net_minor for x in lines)
    lines.append(
        line(
            batch_id=payout_id,
            category="payout" if total >= 0 else "payout_reversal",
            modification_reference=payout_id,
            occurred_at=start + timedelta(days=2),
            available_on=(start + timedelta(days=2)).date(),
            currency=cur,
            gross_minor=-total,
            net_minor=-total,
        )
    )
    return lines


@settings(max_examples=40, deadline=None)
@given(batch())
def test_property_csv_round_trip_and_batches_tie_out(lines: list[SettlementLine]) -> None:
    parsed = stripe.parse(stripe.render_itemized_csv(lines), "p.csv")
    assert_same_lines(parsed.lines, lines)
    for x in parsed.lines:
        assert x.net_minor == x.gross_minor - x.fee_minor
    assert sum(x.net_minor for x in parsed.lines) == 0
    assert parsed.findings == ()
    # the amounts are written exactly, in major units
    text = stripe.render_itemized_csv(lines).decode()
    assert str(minor_to_decimal(lines[-1].net_minor, lines[-1].currency)) in text


def json_can_carry(x: SettlementLine) -> SettlementLine:
    """References, invoice and presentment ride on the source object, which needs its id."""
    source = x.gateway_reference if x.category == "charge" else x.modification_reference
    if source is not None:
        return x
    return replace(
        x,
        gateway_reference=None,
        merchant_reference=None,
        presentment_currency=None,
        presentment_amount_minor=None,
    )


@settings(max_examples=40, deadline=None)
@given(batch())
def test_property_json_round_trip(lines: list[SettlementLine]) -> None:
    want = json_carried([json_can_carry(x) for x in lines])
    parsed = stripe.parse(stripe.render_balance_transactions_json(want), "p.json")
    assert_same_lines(parsed.lines, want)
    for x in parsed.lines:
        assert x.net_minor == x.gross_minor - x.fee_minor
