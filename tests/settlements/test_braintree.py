"""Braintree: Transaction Level Fee Report (flat and IC+) and settlement batch summary JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.settlements.helpers import assert_same_lines
from tieout.connectors.settlements import braintree
from tieout.connectors.settlements.base import (
    ControlTotal,
    SettlementFileError,
    SettlementLine,
    make_line_id,
)
from tieout.connectors.settlements.braintree import (
    FLAT_HEADER,
    ICPLUS_HEADER,
    check_controls,
    parse,
    render_batch_summary,
    render_tlfr,
    render_tlfr_flat,
    render_tlfr_icplus,
)

DATA = Path(__file__).parent / "data" / "braintree"


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _line(**kw: object) -> SettlementLine:
    base: dict[str, object] = {
        "gateway": "braintree",
        "line_id": "x",
        "batch_id": "2018-03-06/ACME-anvils",
        "category": "charge",
        "gateway_reference": None,
        "modification_reference": None,
        "merchant_reference": None,
        "occurred_at": datetime(2018, 3, 3, tzinfo=UTC),
        "available_on": date(2018, 3, 6),
        "currency": "USD",
        "gross_minor": 0,
        "fee_minor": 0,
        "net_minor": 0,
        "presentment_currency": None,
        "presentment_amount_minor": None,
        "exchange_rate": None,
        "source_file": "tlfr_flat.csv",
        "source_row": 0,
    }
    base.update(kw)
    return SettlementLine(**base)  # type: ignore[arg-type]


FLAT_EXPECTED = [
    _line(
        gateway_reference="lsikdfsm",
        merchant_reference="5a9a0c",
        gross_minor=2418,
        fee_minor=57,
        net_minor=2361,
        source_row=2,
    ),
    _line(
        gateway_reference="k48dsk1t",
        merchant_reference="5a9a21",
        gross_minor=225,
        fee_minor=17,
        net_minor=208,
        source_row=3,
    ),
    _line(
        gateway_reference="ksdf05sp",
        merchant_reference="5a9ac6",
        gross_minor=4860,
        fee_minor=102,
        net_minor=4758,
        source_row=4,
    ),
    _line(
        category="refund",
        gateway_reference="lsikdfsm",
        modification_reference="cr3dit01",
        merchant_reference="5a9a0c",
        occurred_at=datetime(2018, 3, 4, tzinfo=UTC),
        gross_minor=-1000,
        fee_minor=-18,
        net_minor=-982,
        source_row=5,
    ),
    _line(
        gateway_reference="fxsale01",
        merchant_reference="order-fx",
        gross_minor=2160,
        fee_minor=74,
        net_minor=2086,
        presentment_currency="EUR",
        presentment_amount_minor=2000,
        exchange_rate="1.08",
        source_row=6,
    ),
]

_IC = {
    "batch_id": "2018-03-15/ACME-anvils",
    "occurred_at": datetime(2018, 3, 14, tzinfo=UTC),
    "available_on": date(2018, 3, 15),
    "source_file": "tlfr_icplus.csv",
}
ICPLUS_EXPECTED = [
    _line(
        **_IC,
        gateway_reference="lskdjfkb",
        merchant_reference="472ee959",
        gross_minor=927,
        fee_minor=22,
        net_minor=905,
        source_row=2,
    ),
    _line(
        **_IC,
        gateway_reference="iemchsld",
        merchant_reference="9e6327c9",
        gross_minor=1053,
        fee_minor=23,
        net_minor=1030,
        source_row=3,
    ),
    _line(
        **_IC,
        gateway_reference="ksljdflm",
        merchant_reference="89aa42c8",
        gross_minor=743,
        fee_minor=29,
        net_minor=714,
        source_row=4,
    ),
    _line(
        **{**_IC, "occurred_at": datetime(2018, 3, 15, tzinfo=UTC)},
        category="refund",
        gateway_reference="lskdjfkb",
        modification_reference="icref001",
        merchant_reference="472ee959",
        gross_minor=-927,
        fee_minor=0,
        net_minor=-927,
        source_row=5,
    ),
    _line(
        **_IC,
        gateway_reference="icfx0001",
        merchant_reference="ord-fx",
        gross_minor=5400,
        fee_minor=117,
        net_minor=5283,
        presentment_currency="EUR",
        exchange_rate="1.08",
        source_row=6,
    ),
]


# ---------------------------------------------------------------------------- golden files


def test_golden_flat() -> None:
    parsed = parse(_read("tlfr_flat.csv"), "tlfr_flat.csv")
    assert parsed.gateway == "braintree"
    assert parsed.format == "braintree.tlfr_flat"
    assert_same_lines(parsed.lines, FLAT_EXPECTED)
    assert [ln.source_row for ln in parsed.lines] == [2, 3, 4, 5, 6]
    assert all(ln.source_file == "tlfr_flat.csv" for ln in parsed.lines)
    assert parsed.lines[0].line_id == make_line_id("braintree", "lsikdfsm", "sale", "2018-03-06")
    assert parsed.lines[3].line_id == make_line_id("braintree", "cr3dit01", "credit", "2018-03-06")
    # the TLFR has no payout row: nothing to tie out inside the file
    assert parsed.findings == ()
    assert parsed.controls == ()


def test_golden_icplus() -> None:
    parsed = parse(_read("tlfr_icplus.csv"), "tlfr_icplus.csv")
    assert parsed.format == "braintree.tlfr_icplus"
    assert_same_lines(parsed.lines, ICPLUS_EXPECTED)
    assert [ln.source_row for ln in parsed.lines] == [2, 3, 4, 5, 6]
    assert parsed.findings == ()


def test_golden_summary_vendor_example() -> None:
    parsed = parse(_read("settlement_batch_summary.json"), "s.json")
    assert parsed.format == "braintree.settlement_batch_summary_json"
    assert parsed.lines == ()
    assert parsed.controls == (
        ControlTotal(
            gateway="braintree",
            batch_id="2018-03-03/your_merchant_account_id",
            kind="sale",
            amount="1200.00",
            currency=None,
            count=24,
            source_file="s.json",
            source_row=1,
        ),
        ControlTotal(
            gateway="braintree",
            batch_id="2018-03-03/your_merchant_account_id",
            kind="sale",
            amount="1234.00",
            currency=None,
            count=42,
            source_file="s.json",
            source_row=2,
        ),
    )


def test_summary_bare_list_camel_case_date_from_file_name() -> None:
    name = "exports/settlement_batch_summary_2026-10-05.json"
    parsed = parse(_read("settlement_batch_summary_2026-10-05.json"), name)
    assert [(c.batch_id, c.kind, c.amount, c.count, c.source_row) for c in parsed.controls] == [
        ("2026-10-05/ACME-anvils", "sale", "75.03", 3, 1),
        # JSON numbers are read exactly as written (never through float)
        ("2026-10-05/ACME-anvils", "credit", "10.00", 1, 2),
    ]


# ---------------------------------------------------------------------------- tolerance


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


def test_reordered_and_extra_columns_and_header_variants() -> None:
    text = _read("tlfr_flat.csv").decode()
    records = list(csv.reader(io.StringIO(text)))
    order = list(reversed(range(len(records[0]))))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for i, rec in enumerate(records):
        row = [rec[j] for j in order]
        if i == 0:
            row = [f"  {h.upper()} " for h in row] + ["Some New Column"]
        else:
            row += ["whatever"]
        writer.writerow(row)
    parsed = parse(b"\xef\xbb\xbf" + out.getvalue().encode(), "f.csv")
    assert parsed.format == "braintree.tlfr_flat"
    assert_same_lines(parsed.lines, FLAT_EXPECTED)


def test_utf16_and_blank_lines() -> None:
    text = _read("tlfr_icplus.csv").decode().replace("\r\n", "\r\n\r\n")
    parsed = parse(text.encode("utf-16"), "f.csv")
    assert_same_lines(parsed.lines, ICPLUS_EXPECTED)
    assert [ln.source_row for ln in parsed.lines] == [3, 5, 7, 9, 11]


def test_credit_written_positive_or_negative_is_the_same_refund() -> None:
    pos = _read("tlfr_icplus.csv").replace(b",-9.27,", b",9.27,")
    assert b",-9.27," not in pos
    a = parse(pos, "a.csv").lines[3]
    b = parse(_read("tlfr_icplus.csv"), "b.csv").lines[3]
    assert (a.gross_minor, a.net_minor) == (b.gross_minor, b.net_minor) == (-927, -927)


def test_header_only_file_has_no_lines() -> None:
    parsed = parse((",".join(FLAT_HEADER) + "\n").encode(), "f.csv")
    assert parsed.lines == ()
    assert parsed.format == "braintree.tlfr_flat"


def test_same_currency_presentment_is_none_and_jpy_exponent() -> None:
    row = dict.fromkeys(FLAT_HEADER, "")
    row.update(
        {
            "Merchant Account ID": "tokyo",
            "Transaction ID": "jp1",
            "Transaction Type": "SALE",
            "Presentment Currency": "JPY",
            "Original Sale Amount": "1000",
            "Settlement Currency": "jpy",
            "Settlement Amount": "1000",
            "Settlement Date": "2018-03-03",
            "Disbursement Date": "2018-03-05",
            "Exchange Rate": "1.00",
            "Discount": "0.029",
            "Per Transaction Fee": "40",
            "Total Fee Amount": "69",
        }
    )
    (line,) = parse(_csv(list(row), [list(row.values())]), "f.csv").lines
    assert (line.currency, line.gross_minor, line.fee_minor, line.net_minor) == (
        "JPY",
        1000,
        69,
        931,
    )
    assert (line.presentment_currency, line.presentment_amount_minor, line.exchange_rate) == (
        None,
        None,
        None,
    )
    assert line.merchant_reference is None
    assert line.batch_id == "2018-03-05/tokyo"


# ---------------------------------------------------------------------------- malformed corpus

BAD = [
    ("empty.csv", None, "the file is empty"),
    ("not_braintree.csv", 1, "not a Braintree Transaction Level Fee Report"),
    ("missing_column.csv", 1, "missing required column(s) Settlement Amount"),
    ("truncated_row.csv", 3, "19 fields but the header has 28"),
    ("unterminated_quote.csv", 3, "malformed CSV"),
    ("bad_amount.csv", 2, "column Settlement Amount: '24,18' is not an amount in USD"),
    ("unknown_currency.csv", 3, "'USX' is not an ISO 4217 currency code"),
    ("bad_date.csv", 4, "column Disbursement Date: '2018-02-30' is not a date"),
    ("unknown_type.csv", 3, "unknown Transaction Type 'void'"),
    ("fee_mismatch.csv", 4, "Total Fee Amount 1.20 is not Settlement Amount x Discount"),
    ("fee_too_precise.csv", 2, "column Total Fee Amount: '0.575' is not an amount in USD"),
    ("negative_sale.csv", 3, "a sale of -2.25 is negative"),
    ("empty_transaction_id.csv", 2, "column Transaction ID is empty"),
    ("latin1.csv", 3, "not valid UTF-8"),
    ("icplus_total_mismatch.csv", 3, "Est. Total Fee Amount 0.25 is not Est. Interchange Total"),
    ("icplus_interchange_mismatch.csv", 2, "Est. Interchange Total Amount 0.50 is not"),
    ("summary_truncated.json", 5, "not valid JSON"),
    ("summary_missing_amount.json", 2, "record 2: amount_settled is missing"),
    ("summary_bad_kind.json", 1, "unknown kind 'refund'"),
    ("summary_bad_count.json", 2, "count '2.5' is not a whole number"),
    ("summary_bad_amount.json", 1, "amount_settled '1,200.00' is not a decimal amount"),
    ("summary_bad_date.json", 1, "'2018-13-03' is not a date"),
    ("settlement_batch_summary_latest.json", None, "has no settlement date"),
]


@pytest.mark.parametrize(("name", "line", "fragment"), BAD)
def test_malformed_corpus(name: str, line: int | None, fragment: str) -> None:
    with pytest.raises(SettlementFileError) as info:
        parse(_read(f"bad/{name}"), name)
    assert fragment in info.value.reason
    assert info.value.line == line
    assert info.value.file == name


def test_corpus_is_complete() -> None:
    assert sorted(p.name for p in (DATA / "bad").iterdir()) == sorted(n for n, _, _ in BAD)


# ---------------------------------------------------------------------------- line ids


def test_line_ids_stable_across_file_names() -> None:
    a = parse(_read("tlfr_flat.csv"), "a.csv")
    b = parse(_read("tlfr_flat.csv"), "elsewhere/b.csv")
    assert [x.line_id for x in a.lines] == [x.line_id for x in b.lines]
    assert len({x.line_id for x in a.lines}) == len(a.lines)


def test_identical_rows_get_distinct_ids() -> None:
    rows = _read("tlfr_icplus.csv").decode().splitlines()
    data = ("\n".join([rows[0], rows[1], rows[1]]) + "\n").encode()
    lines = parse(data, "f.csv").lines
    assert len(lines) == 2
    assert lines[0].line_id != lines[1].line_id
    assert lines[0].line_id == make_line_id("braintree", "lskdjfkb", "sale", "2018-03-15")
    assert lines[1].line_id == make_line_id("braintree", "lskdjfkb", "sale", "2018-03-15", 1)


# ---------------------------------------------------------------------------- renderers


def test_render_round_trip_golden_lines() -> None:
    flat = render_tlfr(FLAT_EXPECTED)
    assert flat.decode().splitlines()[0] == ",".join(FLAT_HEADER)
    assert_same_lines(parse(flat, "f").lines, FLAT_EXPECTED)
    assert parse(flat, "f").format == "braintree.tlfr_flat"
    ic = render_tlfr_icplus(ICPLUS_EXPECTED)
    assert ic.decode().splitlines()[0] == ",".join(ICPLUS_HEADER)
    assert parse(ic, "f").format == "braintree.tlfr_icplus"
    assert_same_lines(parse(ic, "f").lines, ICPLUS_EXPECTED)
    assert render_tlfr_flat(FLAT_EXPECTED) == flat  # deterministic


def test_render_writes_credits_as_magnitudes_and_fees_that_add_up() -> None:
    text = render_tlfr(FLAT_EXPECTED).decode()
    credit = text.splitlines()[4].split(",")
    col = dict(zip(FLAT_HEADER, credit, strict=True))
    assert (col["Transaction Type"], col["Settlement Amount"], col["Total Fee Amount"]) == (
        "credit",
        "10.00",
        "-0.18",
    )
    sale = dict(zip(FLAT_HEADER, text.splitlines()[5].split(","), strict=True))
    assert (sale["Original Sale Amount"], sale["Per Transaction Fee"], sale["Discount"]) == (
        "20.00",
        "0.74",
        "0",
    )


def test_render_rejects_lines_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="only charge and refund"):
        render_tlfr([replace(FLAT_EXPECTED[0], category="payout")])
    with pytest.raises(ValueError, match="IC\\+ layout has no presentment amount"):
        render_tlfr([FLAT_EXPECTED[4]], layout="icplus")
    with pytest.raises(ValueError, match="batch_id"):
        render_tlfr([replace(FLAT_EXPECTED[0], batch_id="ACME-anvils")])
    with pytest.raises(ValueError, match="midnight"):
        render_tlfr([replace(FLAT_EXPECTED[0], occurred_at=datetime(2018, 3, 3, 5, tzinfo=UTC))])
    with pytest.raises(ValueError, match="layout"):
        render_tlfr(FLAT_EXPECTED, layout="other")  # type: ignore[arg-type]


_CODES = ("USD", "EUR", "JPY", "KWD", "GBP")
_CURRENCIES = st.sampled_from(_CODES)


@st.composite
def _tlfr_lines(draw: st.DrawFn, layout: str) -> list[SettlementLine]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        cur = draw(_CURRENCIES)
        refund = draw(st.booleans())
        magnitude = draw(st.integers(0, 10**9))
        fee = draw(st.integers(-(10**5), 10**6))
        gross = -magnitude if refund else magnitude
        disbursed = draw(st.dates(date(2020, 1, 1), date(2030, 12, 31)))
        settled = draw(st.dates(date(2020, 1, 1), disbursed))
        fx = draw(st.booleans())
        p_cur = draw(st.sampled_from([c for c in _CODES if c != cur])) if fx else None
        p_amount = None
        if fx and layout == "flat" and draw(st.booleans()):
            m = draw(st.integers(1, 10**9))  # a zero presentment amount has no sign to carry
            p_amount = -m if refund else m
        rate = draw(st.sampled_from(["1.08", "0.0091", "151.2345", "1"])) if fx else None
        ref = draw(st.sampled_from([None, "order-1", "ORD,2", 'q"3']))
        out.append(
            _line(
                batch_id=f"{disbursed.isoformat()}/{draw(st.sampled_from(['m1', 'acme eu']))}",
                category="refund" if refund else "charge",
                gateway_reference=draw(st.sampled_from([None, f"orig{i}"])) if refund else f"t{i}",
                modification_reference=f"r{i}" if refund else None,
                merchant_reference=ref,
                occurred_at=datetime(settled.year, settled.month, settled.day, tzinfo=UTC),
                available_on=disbursed,
                currency=cur,
                gross_minor=gross,
                fee_minor=fee,
                net_minor=gross - fee,
                presentment_currency=p_cur,
                presentment_amount_minor=p_amount,
                exchange_rate=rate,
            )
        )
    return out


@settings(max_examples=40, deadline=None)
@given(lines=_tlfr_lines("flat"))
def test_property_flat_round_trip(lines: list[SettlementLine]) -> None:
    parsed = parse(render_tlfr(lines, layout="flat"), "p.csv")
    assert_same_lines(parsed.lines, lines)
    assert all(ln.net_minor == ln.gross_minor - ln.fee_minor for ln in parsed.lines)
    assert parsed.findings == ()  # no payout line in a TLFR


@settings(max_examples=40, deadline=None)
@given(lines=_tlfr_lines("icplus"))
def test_property_icplus_round_trip_and_batch_nets(lines: list[SettlementLine]) -> None:
    parsed = parse(render_tlfr(lines, layout="icplus"), "p.csv")
    assert_same_lines(parsed.lines, lines)
    nets: dict[tuple[str, str], int] = {}
    for ln in lines:
        nets[(ln.batch_id, ln.currency)] = nets.get((ln.batch_id, ln.currency), 0) + ln.net_minor
    got: dict[tuple[str, str], int] = {}
    for ln in parsed.lines:
        assert ln.net_minor == ln.gross_minor - ln.fee_minor
        got[(ln.batch_id, ln.currency)] = got.get((ln.batch_id, ln.currency), 0) + ln.net_minor
    assert got == nets


def test_render_batch_summary_round_trip() -> None:
    controls = parse(_read("settlement_batch_summary.json"), "s.json").controls
    data = render_batch_summary("2018-03-03", controls)
    assert json.loads(data)["settlement_date"] == "2018-03-03"
    again = parse(data, "other.json").controls
    assert [replace(c, source_file="s.json") for c in again] == list(controls)
    assert render_batch_summary(date(2018, 3, 3), controls) == data
    with pytest.raises(ValueError, match="does not fit"):
        render_batch_summary("2018-03-04", controls)


# ---------------------------------------------------------------------------- check_controls


def _control(kind: str, amount: str, count: int, merchant: str = "ACME-anvils") -> ControlTotal:
    return ControlTotal("braintree", f"2018-03-03/{merchant}", kind, amount, None, count, "s", 1)


def test_check_controls_match_and_mismatch() -> None:
    lines = parse(_read("tlfr_flat.csv"), "tlfr_flat.csv").lines
    # settlement date 2018-03-03: sales 24.18 + 2.25 + 48.60 + 21.60 = 96.63 (4); the credit
    # settled on 2018-03-04 is outside this summary's date
    ok = [_control("sale", "96.63", 4)]
    assert check_controls(ok, lines) == []
    split = [_control("sale", "90.00", 3), _control("sale", "6.63", 1)]
    assert check_controls(split, lines) == []

    (f,) = check_controls([_control("sale", "96.00", 4)], lines)
    assert (f.kind, f.batch_id, f.currency, f.expected_minor, f.actual_minor) == (
        "control_mismatch",
        "2018-03-03/ACME-anvils",
        "USD",
        9600,
        9663,
    )
    (f,) = check_controls([_control("sale", "96.63", 5)], lines)
    assert "5 sale(s)" in f.message


def test_check_controls_missing_either_side() -> None:
    lines = parse(_read("tlfr_flat.csv"), "tlfr_flat.csv").lines
    findings = check_controls(
        [_control("sale", "96.63", 4), _control("credit", "5.00", 1, "other")], lines
    )
    assert [(f.batch_id, f.expected_minor, f.actual_minor) for f in findings] == [
        ("2018-03-03/other", 500, 0)
    ]
    assert "no lines" in findings[0].message
    # a control for 2018-03-04 with only sales: the credit line of that date has no control
    c = ControlTotal("braintree", "2018-03-04/ACME-anvils", "sale", "0.00", None, 0, "s", 1)
    findings = check_controls([c], lines)
    assert [(f.batch_id, f.expected_minor, f.actual_minor) for f in findings] == [
        ("2018-03-04/ACME-anvils", 0, 1000)
    ]
    assert "no credit record" in findings[0].message


def test_formats_constant() -> None:
    assert braintree.FORMATS == (
        "braintree.tlfr_flat",
        "braintree.tlfr_icplus",
        "braintree.settlement_batch_summary_json",
    )


_GOLDEN = ("tlfr_flat.csv", "tlfr_icplus.csv", "settlement_batch_summary.json")


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(_GOLDEN),
    cut=st.integers(0, 10_000),
    junk=st.binary(max_size=3),
)
def test_property_damaged_files_fail_whole_or_parse(name: str, cut: int, junk: bytes) -> None:
    """Any damage gives a SettlementFileError or a full parse, never another exception."""
    data = _read(name)
    cut %= len(data)
    damaged = data[:cut] + junk + data[cut + len(junk) :]
    try:
        parsed = parse(damaged, "f_2018-03-03.json")
    except SettlementFileError as exc:
        error: SettlementFileError | None = exc
    else:
        error = None
    if error is not None:
        assert error.file == "f_2018-03-03.json"
    else:
        assert all(ln.net_minor == ln.gross_minor - ln.fee_minor for ln in parsed.lines)


def test_blank_only_file_has_no_header() -> None:
    with pytest.raises(SettlementFileError, match="no header row") as info:
        parse(b",,,\n\n", "f.csv")
    assert info.value.line == 1
