"""Adyen Settlement details report: golden files, tolerance, malformed corpus, round trips."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.settlements.helpers import assert_same_lines
from tieout.connectors.settlements import adyen
from tieout.connectors.settlements.base import SettlementFileError, SettlementLine
from tieout.money import decimal_to_minor, minor_to_decimal

DATA = Path(__file__).parent / "data" / "adyen"


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def line(
    category: str,
    *,
    gross: int,
    fee: int = 0,
    currency: str = "EUR",
    batch: str = "4",
    gateway_reference: str | None = None,
    modification_reference: str | None = None,
    merchant_reference: str | None = None,
    occurred_at: datetime | None = None,
    presentment: tuple[str, int, str] | None = None,
    row: int = 0,
) -> SettlementLine:
    """An expected canonical line, written out by hand in each test."""
    pcur, pamount, rate = presentment if presentment else (None, None, None)
    return SettlementLine(
        gateway="adyen",
        line_id="",
        batch_id=batch,
        category=category,  # type: ignore[arg-type]
        gateway_reference=gateway_reference,
        modification_reference=modification_reference,
        merchant_reference=merchant_reference,
        occurred_at=occurred_at or utc(2025, 1, 1, 12, 0, 0),
        available_on=None,
        currency=currency,
        gross_minor=gross,
        fee_minor=fee,
        net_minor=gross - fee,
        presentment_currency=pcur,
        presentment_amount_minor=pamount,
        exchange_rate=rate,
        source_file="",
        source_row=row,
    )


# --- golden files -----------------------------------------------------------------------------

VENDOR_EXPECTED = [
    # Adyen's doc sample: Settled 5.00 GBP - (0.04 + 0.01 + 0.07) = 4.88 net.
    line(
        "charge",
        gross=500,
        fee=12,
        currency="GBP",
        gateway_reference="1813702551707653",
        modification_reference="1713702551795048",
        merchant_reference="3vpzf7",
        occurred_at=utc(2013, 6, 3, 10, 26, 49),  # 11:26:49 CET
    ),
    # Chargeback 349.99 EUR + 7.50 commission = 357.49 Net Debit.
    line(
        "chargeback",
        gross=-34999,
        fee=750,
        gateway_reference="1313642467023511",
        modification_reference="2313642467170922",
        merchant_reference="324959451",
        occurred_at=utc(2013, 3, 26, 21, 37, 26),
    ),
    # DepositCorrection: batch-level, free-text Modification Reference is not kept.
    line("adjustment", gross=-7893, occurred_at=utc(2012, 5, 10, 4, 37, 3)),
]


def test_vendor_sample_rows() -> None:
    parsed = adyen.parse(load("vendor_samples.csv"), "settlement_detail_report_batch_4.csv")
    assert parsed.gateway == "adyen"
    assert parsed.format == "adyen.settlement_detail_report"
    assert parsed.format in adyen.FORMATS
    assert_same_lines(parsed.lines, VENDOR_EXPECTED)
    assert [ln.source_row for ln in parsed.lines] == [2, 3, 4]
    assert {ln.source_file for ln in parsed.lines} == {"settlement_detail_report_batch_4.csv"}
    assert parsed.findings == ()  # no payout line in the batch: nothing to tie out
    assert parsed.controls == ()


WIDE_EXPECTED = [
    # 100.00 USD x 0.9235 = 92.35 EUR; fees 1.20 + 0.30; times are PDT (UTC-7).
    line(
        "charge",
        gross=9235,
        fee=150,
        batch="12",
        gateway_reference="8815131768219781",
        modification_reference="8815131768230001",
        merchant_reference="INV-1001",
        occurred_at=utc(2025, 3, 14, 16, 15, 0),
        presentment=("USD", 10000, "0.9235"),
    ),
    # 10.01 USD x 0.92345 = 9.2437345 -> 9.24 EUR (half-up to cents).
    line(
        "charge",
        gross=924,
        fee=12,
        batch="12",
        gateway_reference="8815131768219782",
        modification_reference="8815131768230002",
        merchant_reference="INV-1002",
        occurred_at=utc(2025, 3, 14, 17, 0, 5),
        presentment=("USD", 1001, "0.92345"),
    ),
    # Fees (0.13) exceed the gross (0.10): the net lands in Net Debit.
    line(
        "charge",
        gross=10,
        fee=13,
        batch="12",
        gateway_reference="8815131768219783",
        modification_reference="8815131768230003",
        merchant_reference="INV-1003",
        occurred_at=utc(2025, 3, 15, 6, 59, 59),
    ),
    line(
        "refund",
        gross=-2000,
        fee=5,
        batch="12",
        gateway_reference="8815131768219700",
        modification_reference="8815131768219799",
        merchant_reference="INV-0990",
        occurred_at=utc(2025, 3, 15, 15, 0, 0),
    ),
    line("fee", gross=0, fee=125, batch="12", occurred_at=utc(2025, 3, 16, 11, 55, 40)),
    # MiscCosts credit: a fee given back.
    line("fee", gross=0, fee=-40, batch="12", occurred_at=utc(2025, 3, 16, 11, 55, 41)),
    line("payout", gross=-7904, batch="12", occurred_at=utc(2025, 3, 16, 12, 0, 0)),
]


def test_wide_header_batch_ties_out() -> None:
    parsed = adyen.parse(load("wide_batch_12.csv"), "wide.csv")
    assert_same_lines(parsed.lines, WIDE_EXPECTED)
    assert parsed.findings == ()


ORDER_REF_EXPECTED = [
    line(
        "charge",
        gross=1000,
        fee=30,
        currency="JPY",
        batch="57",
        gateway_reference="9915131768219001",
        modification_reference="9915131768230001",
        merchant_reference="INV-2001",
        occurred_at=utc(2025, 6, 1, 3, 0, 0),  # 12:00 JST
    ),
    line(
        "refund",
        gross=-400,
        currency="JPY",
        batch="57",
        gateway_reference="9915131768219001",
        modification_reference="9915131768240001",
        merchant_reference="INV-2001",
        occurred_at=utc(2025, 6, 2, 0, 30, 0),
    ),
    # 1.00 EUR x 162.5 = 162.5 JPY -> 163 (half-up to whole yen).
    line(
        "chargeback",
        gross=-163,
        currency="JPY",
        batch="57",
        gateway_reference="9915131768219002",
        modification_reference="9915131768250002",
        occurred_at=utc(2025, 6, 2, 1, 0, 0),
        presentment=("EUR", -100, "162.5"),
    ),
    line("payout", gross=-397, currency="JPY", batch="57", occurred_at=utc(2025, 6, 2, 19, 0, 0)),
]


def test_order_reference_header_and_batch_finding() -> None:
    parsed = adyen.parse(load("order_reference_batch_57.csv"), "b57.csv")
    assert_same_lines(parsed.lines, ORDER_REF_EXPECTED)
    # 970 - 400 - 163 - 397 = 10: the batch does not tie out, yet the file loads.
    assert len(parsed.findings) == 1
    finding = parsed.findings[0]
    assert (finding.kind, finding.batch_id, finding.currency) == ("batch_not_zero", "57", "JPY")
    assert (finding.expected_minor, finding.actual_minor) == (0, 10)
    assert finding.source_file == "b57.csv"


# --- tolerance --------------------------------------------------------------------------------


def rewrite(data: bytes, transform: str) -> bytes:
    """The same report with its columns reordered, extended or its header respelled."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if transform == "reversed":
        rows = [list(reversed(r)) for r in rows]
    elif transform == "extra":
        rows = [
            [*r[:5], "Extra Column" if i == 0 else "x", *r[5:], "Trailing"]
            for i, r in enumerate(rows)
        ]
    elif transform == "header-case":
        rows[0] = [f"  {h.upper().replace(' ', '  ')} " for h in rows[0]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


@pytest.mark.parametrize("transform", ["reversed", "extra", "header-case"])
def test_columns_by_header_name(transform: str) -> None:
    original = load("vendor_samples.csv")
    parsed = adyen.parse(rewrite(original, transform), "f.csv")
    assert_same_lines(parsed.lines, VENDOR_EXPECTED)
    assert [ln.line_id for ln in parsed.lines] == [
        ln.line_id for ln in adyen.parse(original, "f.csv").lines
    ]


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda t: b"\xef\xbb\xbf" + t.encode("utf-8"), id="utf8-bom"),
        pytest.param(lambda t: t.encode("utf-16"), id="utf16-bom"),
        pytest.param(lambda t: t.replace("\n", "\r\n").encode("utf-8"), id="crlf"),
        pytest.param(lambda t: t.replace("\n", "\n\n").encode("utf-8"), id="blank-lines"),
    ],
)
def test_encodings_and_line_ends(encode: object) -> None:
    text = load("vendor_samples.csv").decode("utf-8")
    parsed = adyen.parse(encode(text), "f.csv")  # type: ignore[operator]
    assert_same_lines(parsed.lines, VENDOR_EXPECTED)


def test_type_names_are_case_insensitive_and_quoted_fields_allowed() -> None:
    text = load("vendor_samples.csv").decode("utf-8")
    text = text.replace(",Settled,", ",settled,").replace(",3vpzf7,", ',"3vpzf7",')
    assert_same_lines(adyen.parse(text.encode(), "f.csv").lines, VENDOR_EXPECTED)


@pytest.mark.parametrize(
    ("zone", "hours"),
    [("CET", 1), ("CEST", 2), ("GMT", 0), ("BST", 1), ("PST", -8), ("EDT", -4), ("AEDT", 11),
     ("SGT", 8), ("BRT", -3), ("GMT+05:30", 5.5), ("UTC-3", -3)],
)  # fmt: skip
def test_time_zones_are_fixed_offsets(zone: str, hours: float) -> None:
    text = load("vendor_samples.csv").decode("utf-8").replace(",CET,", f",{zone},")
    first = adyen.parse(text.encode(), "f.csv").lines[0]
    assert first.occurred_at == utc(2013, 6, 3, 11, 26, 49) - timedelta(hours=hours)


# --- malformed corpus -------------------------------------------------------------------------

BAD = [
    ("empty.csv", None, "the file is empty"),
    ("header_only.csv", 1, "has a header but no rows"),
    ("missing_column.csv", 1, "missing required column(s) Net Debit (NC)"),
    ("no_header.csv", 1, "missing required column(s) Merchant Account"),
    ("truncated_row.csv", 4, "only 15 fields but the header has 30"),
    ("unterminated_quote.csv", 3, "malformed CSV: unexpected end of data"),
    ("too_many_fields.csv", 3, "32 fields but the header has 30"),
    ("latin1.csv", 3, "not valid UTF-8"),
    ("bad_amount.csv", 2, "column Net Credit (NC): '4.8B' is not an amount in GBP"),
    ("too_many_decimals.csv", 2, "column Gross Credit (GC): '5.001' is not an amount in GBP"),
    ("unknown_currency.csv", 3, "column Net Currency: 'EUX' is not an ISO 4217 currency code"),
    ("bad_date.csv", 2, "column Creation Date: '2013-06-31 11:26:49' is not a date"),
    ("unknown_type.csv", 4, "unknown journal Type 'ReserveRelease'"),
    ("empty_type.csv", 3, "the Type column is empty"),
    ("gross_without_currency.csv", 3, "a DepositCorrection row needs its Gross Currency"),
    ("unknown_timezone.csv", 2, "unknown TimeZone 'XCT'"),
    ("fees_break_gross.csv", 2, "gross 5.00 GBP x rate 1 = 5.00 GBP does not equal net + fees"),
    ("fx_breaks_rate.csv", 2, "gross 100.00 USD x rate 0.9235 = 92.35 EUR does not equal net"),
    ("fx_without_rate.csv", 2, "Gross Currency USD differs from Net Currency EUR"),
    ("no_batch_number.csv", 2, "Batch Number is empty"),
    ("no_net_amount.csv", 2, "no amount in Net Debit (NC) or Net Credit (NC)"),
    ("settled_without_gross.csv", 2, "a Settled row needs Gross Currency"),
    ("payment_accounting_report.csv", 1, "Payment accounting report, not a Settlement details"),
]


@pytest.mark.parametrize(("name", "line_no", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_malformed_file_is_rejected(name: str, line_no: int | None, fragment: str) -> None:
    with pytest.raises(SettlementFileError) as info:
        adyen.parse(load(f"bad/{name}"), name)
    assert fragment in info.value.reason
    assert info.value.line == line_no
    assert info.value.file == name


def test_bad_corpus_is_complete() -> None:
    assert sorted(p.name for p in (DATA / "bad").iterdir()) == sorted(b[0] for b in BAD)


def test_unknown_type_says_what_to_do() -> None:
    with pytest.raises(SettlementFileError) as info:
        adyen.parse(load("bad/unknown_type.csv"), "x.csv")
    assert info.value.fix == "a new Adyen journal type; tell the tieout team"
    assert "x.csv, line 4" in str(info.value)


def test_every_documented_type_is_mapped() -> None:
    documented_text = (
        "Fee MiscCosts MerchantPayout Refunded Settled Chargeback SecondChargeback "
        "ChargebackReversed RefundedReversed DepositCorrection InvoiceDeduction MatchedStatement "
        "ManualCorrected BankInstructionReturned EpaPaid Balancetransfer PaymentCost PaidOut "
        "PaidOutReversed AuthorisationSchemeFee InternalCompanyPayout BPPaidOut SettledExternally "
        "RefundedExternally ChargebackExternally SettleCost ReserveAdjustment AcquirerPayout "
        "AdjustmentExternallyWithInfo SettledExternallyWithInfo ChargebackExternallyWithInfo"
    )  # the reference's list, as written there
    assert set(documented_text.split()) <= set(adyen.TYPE_CATEGORY)
    assert adyen.TYPE_CATEGORY["RefundedReversed"] == "refund"
    assert adyen.TYPE_CATEGORY["BankInstructionReturned"] == "payout_reversal"


# --- line ids ---------------------------------------------------------------------------------


def test_line_ids_do_not_depend_on_file_name() -> None:
    data = load("wide_batch_12.csv")
    a = adyen.parse(data, "settlement_detail_report_batch_12.csv").lines
    b = adyen.parse(data, "redelivered/copy.csv").lines
    assert [x.line_id for x in a] == [y.line_id for y in b]
    assert len({x.line_id for x in a}) == len(a)


def test_identical_rows_get_distinct_ids() -> None:
    text = load("vendor_samples.csv").decode("utf-8")
    rows = text.splitlines()
    doubled = "\n".join([rows[0], rows[3], rows[3], rows[1], rows[1]]) + "\n"
    lines = adyen.parse(doubled.encode(), "f.csv").lines
    assert len({ln.line_id for ln in lines}) == 4
    # the first occurrence keeps the id it has when the row is alone
    alone = adyen.parse("\n".join([rows[0], rows[3]]).encode(), "f.csv").lines
    assert lines[0].line_id == alone[0].line_id


def test_batch_level_description_is_kept_only_in_the_line_id() -> None:
    text = load("vendor_samples.csv").decode("utf-8")
    changed = text.replace("Deposit Correction,", "Deposit Correction May,")
    a = adyen.parse(text.encode(), "f.csv").lines[2]
    b = adyen.parse(changed.encode(), "f.csv").lines[2]
    assert a.modification_reference is None
    assert b.modification_reference is None
    assert a.line_id != b.line_id  # the description is part of the natural key


# --- renderer ---------------------------------------------------------------------------------

EVERY_CATEGORY = [
    line("charge", gross=1000, fee=29, gateway_reference="P1", modification_reference="M1",
         merchant_reference="INV-1", occurred_at=utc(2025, 1, 2, 3, 4, 5)),
    line("charge", gross=923, fee=40, gateway_reference="P2", modification_reference="M2",
         presentment=("USD", 1000, "0.92345")),
    line("refund", gross=-500, fee=0, gateway_reference="P1", modification_reference="M3"),
    line("refund", gross=500, fee=0, gateway_reference="P1", modification_reference="M4"),
    line("chargeback", gross=-1000, fee=750, gateway_reference="P1", modification_reference="M5"),
    line("chargeback_reversal", gross=1000, fee=0, gateway_reference="P1",
         modification_reference="M6"),
    line("fee", gross=0, fee=125),
    line("fee", gross=0, fee=-30),
    line("fee", gross=0, fee=12, gateway_reference="P2", modification_reference="M7"),
    line("adjustment", gross=-7893),
    line("transfer", gross=2500),
    line("other", gross=100, gateway_reference="P9", modification_reference="M9"),
    line("other", gross=-1),
    line("payout_reversal", gross=1),
    line("payout", gross=-3000, occurred_at=utc(2025, 7, 1, 23, 30, 0)),
]  # fmt: skip


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("zone", ["CET", "PDT", "UTC", "GMT+05:30"])
def test_render_round_trip(wide: bool, zone: str) -> None:
    data = adyen.render_sdr(EVERY_CATEGORY, wide=wide, timezone=zone)
    header = data.decode().splitlines()[0].split(",")
    assert len(header) == (len(adyen.HEADER_WIDE) if wide else 30)
    assert_same_lines(adyen.parse(data, "r.csv").lines, EVERY_CATEGORY)
    assert adyen.render_sdr(EVERY_CATEGORY, wide=wide, timezone=zone) == data


def test_render_writes_adyen_layout() -> None:
    data = adyen.render_sdr(VENDOR_EXPECTED[:1], company_account="TestCompany",
                            merchant_account="TestMerchant")  # fmt: skip
    assert data.decode().splitlines()[1] == (
        "TestCompany,TestMerchant,1813702551707653,3vpzf7,visa,2013-06-03 11:26:49,CET,Settled,"
        "1713702551795048,GBP,,5.00,1,GBP,,4.88,0.12,,,,visaclassic,,4,,,,,,,"
    )
    fee = adyen.render_sdr([line("fee", gross=0, fee=125, batch="9")]).decode().splitlines()[1]
    assert ",Fee,Transaction Fees batch 9,EUR,,,,EUR,1.25,," in fee


def test_render_golden_files_round_trip() -> None:
    for name in ("vendor_samples.csv", "wide_batch_12.csv", "order_reference_batch_57.csv"):
        lines = adyen.parse(load(name), name).lines
        assert_same_lines(adyen.parse(adyen.render_sdr(lines), "r.csv").lines, lines)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (line("fee", gross=10, fee=20), "fee line with a gross"),
        (line("adjustment", gross=5, modification_reference="X"), "modification_reference"),
        (line("charge", gross=923, presentment=("EUR", 1000, "0.9")), "settlement currency"),
        (line("charge", gross=924, presentment=("USD", 1000, "0.92345")), "presentment x"),
        (replace(line("charge", gross=1), available_on=utc(2025, 1, 1).date()), "available_on"),
        (line("charge", gross=1, occurred_at=utc(2025, 1, 1) + timedelta(microseconds=5)),
         "sub-second"),
        (line("charge", gross=1, merchant_reference=" padded"), "padded"),
        (line("charge", gross=1, batch=""), "batch_id"),
    ],
)  # fmt: skip
def test_render_refuses_what_it_cannot_carry(bad: SettlementLine, fragment: str) -> None:
    with pytest.raises(ValueError, match="cannot carry") as info:
        adyen.render_sdr([bad])
    assert fragment in str(info.value)


def test_render_rejects_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        adyen.render_sdr(EVERY_CATEGORY, timezone="Mars/Olympus")


# --- property: generated batches tie out ------------------------------------------------------

# rates ending in 5 give half-way ties when rounding to the settlement minor unit
RATES = ["1.1", "0.92345", "162.5", "0.0071", "3.2675", "0.5", "150.5"]
CURRENCIES = ["EUR", "JPY", "KWD", "USD"]


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[SettlementLine], dict[tuple[str, str], int]]:
    """Lines of 1-3 batches, each closed by a payout; the returned offsets are what each payout
    was deliberately moved away from tying out (0 for a batch that ties out)."""
    lines: list[SettlementLine] = []
    offsets: dict[tuple[str, str], int] = {}
    when = utc(2025, 3, 1) + timedelta(seconds=draw(st.integers(0, 10**7)))
    amount = st.integers(1, 10**7)
    for b in range(draw(st.integers(1, 3))):
        cur = draw(st.sampled_from(CURRENCIES))
        batch = str(100 + b)
        body: list[SettlementLine] = []
        for n in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["charge", "fx", "refund", "chargeback", "fee", "adj"]))
            ref = f"{batch}{n:04d}"
            when += timedelta(seconds=draw(st.integers(0, 86400)))
            common = {"currency": cur, "batch": batch, "occurred_at": when}
            if kind == "fee":
                body.append(line("fee", gross=0, fee=draw(amount), **common))  # type: ignore[arg-type]
            elif kind == "adj":
                body.append(line("adjustment", gross=-draw(amount), **common))  # type: ignore[arg-type]
            else:
                pres = None
                sign = 1 if kind in ("charge", "fx") else -1
                gross = sign * draw(amount)
                if kind == "fx":
                    pcur = draw(st.sampled_from([c for c in CURRENCIES if c != cur]))
                    rate = draw(st.sampled_from(RATES))
                    pamount = sign * draw(amount)
                    product = minor_to_decimal(pamount, pcur) * Decimal(rate)
                    gross = decimal_to_minor(product, cur, ROUND_HALF_UP)
                    pres = (pcur, pamount, rate)
                body.append(
                    line(
                        "charge" if kind == "fx" else kind,
                        gross=gross,
                        fee=draw(st.integers(0, 10**5)),  # may exceed the gross
                        gateway_reference=f"PSP{ref}",
                        modification_reference=f"MOD{ref}",
                        merchant_reference=draw(st.sampled_from([None, f"INV-{ref}"])),
                        presentment=pres,
                        **common,  # type: ignore[arg-type]
                    )
                )
        offset = draw(st.sampled_from([0, 0, 1, -7]))
        offsets[(batch, cur)] = offset
        payout = -sum(x.net_minor for x in body) + offset
        body.append(line("payout", gross=payout, currency=cur, batch=batch, occurred_at=when))
        lines.extend(body)
    return lines, offsets


@settings(max_examples=40, deadline=None)
@given(batches(), st.booleans(), st.sampled_from(["CET", "PST", "JST", "UTC"]))
def test_property_rendered_batches_parse_back_and_tie_out(
    generated: tuple[list[SettlementLine], dict[tuple[str, str], int]], wide: bool, zone: str
) -> None:
    lines, offsets = generated
    parsed = adyen.parse(adyen.render_sdr(lines, wide=wide, timezone=zone), "p.csv")
    assert_same_lines(parsed.lines, lines)
    for got in parsed.lines:
        assert got.net_minor == got.gross_minor - got.fee_minor
    assert len({x.line_id for x in parsed.lines}) == len(parsed.lines)
    found = {(f.batch_id, f.currency): f.actual_minor for f in parsed.findings}
    assert found == {key: off for key, off in offsets.items() if off}
