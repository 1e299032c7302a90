"""PayPal Settlement Report (STL): golden files, tolerance, malformed corpus, renderer."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.settlements.helpers import assert_same_lines
from tieout.connectors.settlements import paypal
from tieout.connectors.settlements.base import (
    Category,
    SettlementFileError,
    SettlementLine,
    make_line_id,
)

DATA = Path(__file__).parent / "data" / "paypal"
GOLDEN = "STL-20260106.01.009.CSV"
OLD_UTF16 = "STL-20120302.01.006.old-utf16.CSV"
TOLERANT = "STL-20260210.01.009.tolerant.CSV"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def utc(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def line(
    row: int,
    category: Category,
    gref: str | None,
    mref: str | None,
    merchant: str | None,
    at: datetime,
    cur: str,
    gross: int,
    fee: int,
    *,
    batch: str,
    file: str,
) -> SettlementLine:
    """An expected line, values written out by hand (line_id is compared separately)."""
    return SettlementLine(
        gateway="paypal",
        line_id="",
        batch_id=batch,
        category=category,
        gateway_reference=gref,
        modification_reference=mref,
        merchant_reference=merchant,
        occurred_at=at,
        available_on=None,
        currency=cur,
        gross_minor=gross,
        fee_minor=fee,
        net_minor=gross - fee,
        presentment_currency=None,
        presentment_amount_minor=None,
        exchange_rate=None,
        source_file=file,
        source_row=row,
    )


def without_ids(lines: tuple[SettlementLine, ...]) -> list[SettlementLine]:
    return [dataclasses.replace(x, line_id="") for x in lines]


# --------------------------------------------------------------------------------------------
# Golden files


def test_golden_v9_report() -> None:
    parsed = paypal.parse(read(GOLDEN), GOLDEN)
    assert parsed.gateway == "paypal"
    assert parsed.format == "paypal.stl"
    assert parsed.format in paypal.FORMATS
    kw = {"batch": "2026-01-06", "file": GOLDEN}
    a, b = "8TX11111AA111111A", "9TX22222BB222222B"
    orig, cb, cbfee = "7TX00000ZZ000000Z", "4CB66666FF666666F", "5FE77777GG777777G"
    assert without_ids(parsed.lines) == [
        line(5, "charge", a, None, "INV-1001", utc(2026, 1, 6, 17, 15, 2), "USD", 10000, 320, **kw),
        line(6, "charge", b, None, "INV-1002", utc(2026, 1, 6, 18), "EUR", 5000, 180, **kw),
        line(7, "transfer", b, "0CV33333CC333333C", "INV-1002", utc(2026, 1, 6, 18), "EUR",
             -4820, 0, **kw),
        line(8, "transfer", b, "1CV44444DD444444D", "INV-1002", utc(2026, 1, 6, 18), "USD",
             5210, 0, **kw),
        line(9, "refund", a, "3RF55555EE555555E", "INV-1001", utc(2026, 1, 6, 19, 30, 5), "USD",
             -2500, -80, **kw),
        line(10, "chargeback", orig, cb, "INV-0990", utc(2026, 1, 6, 20), "USD", -3000, 0, **kw),
        line(11, "fee", cb, cbfee, "INV-0990", utc(2026, 1, 6, 20), "USD", 0, 2000, **kw),
        line(12, "chargeback_reversal", orig, "6CR88888HH888888H", "INV-0990",
             utc(2026, 1, 6, 23), "USD", 3000, 0, **kw),
        line(13, "fee", cbfee, "7FR99999II999999I", "INV-0990", utc(2026, 1, 6, 23), "USD",
             0, -2000, **kw),
        # empty completion date: the initiation date is used
        line(14, "adjustment", a, "8HD00000JJ000000J", "INV-1001", utc(2026, 1, 7, 0), "USD",
             -1000, 0, **kw),
        line(15, "adjustment", a, "9RL11111KK111111K", "INV-1001", utc(2026, 1, 7, 1), "USD",
             1000, 0, **kw),
        line(16, "payout", "1WD22222LL222222L", None, None, utc(2026, 1, 7, 7), "USD",
             -12470, 0, **kw),
    ]  # fmt: skip
    assert parsed.lines[0].line_id == make_line_id("paypal", a, "T0006")
    assert parsed.findings == ()  # USD nets to zero with its payout; EUR has no payout
    assert parsed.controls == ()


def test_golden_old_utf16_camelcase_jpy_kwd_two_sections() -> None:
    data = read(OLD_UTF16)
    assert data.startswith(b"\xff\xfe")
    parsed = paypal.parse(data, OLD_UTF16)
    f = OLD_UTF16
    assert without_ids(parsed.lines) == [
        # JPY 1500000 in the file = 15000 yen (two implied decimals for every currency)
        line(5, "charge", "2JP11111AA111111A", None, "ORDER-77", utc(2012, 2, 29, 23), "JPY",
             15000, 520, batch="2012-03-01", file=f),
        # KWD 2500 in the file = 25.00 KWD = 25000 fils
        line(10, "charge", "3KW22222BB222222B", None, "ORDER-78", utc(2012, 3, 2, 0, 30), "KWD",
             25000, 0, batch="2012-03-02", file=f),
        line(11, "payout", "4WD33333CC333333C", None, None, utc(2012, 3, 2, 9), "JPY",
             -14480, 0, batch="2012-03-02", file=f),
    ]  # fmt: skip
    # The payout pays out the previous day's money: its batch does not tie out (a finding).
    assert len(parsed.findings) == 1
    finding = parsed.findings[0]
    assert (finding.kind, finding.batch_id, finding.currency) == (
        "batch_not_zero",
        "2012-03-02",
        "JPY",
    )
    assert (finding.expected_minor, finding.actual_minor) == (0, -14480)
    assert finding.source_file == f


def test_golden_tolerant_layout() -> None:
    """BOM, CRLF, blank lines, trailing commas, two-space/odd-case headers, reordered and
    extra columns, quoted commas and doubled quotes, empty fee."""
    parsed = paypal.parse(read(TOLERANT), TOLERANT)
    kw = {"batch": "2026-02-10", "file": TOLERANT}
    inv = 'INV "quoted", 7'
    assert without_ids(parsed.lines) == [
        line(7, "charge", "6GB11111AA111111A", None, inv, utc(2026, 2, 10, 16), "GBP", 4200, 150,
             **kw),
        line(8, "refund", "6GB11111AA111111A", "7GR22222BB222222B", inv, utc(2026, 2, 10, 17),
             "GBP", -4200, 0, **kw),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tolerance: the same report in other shapes gives the same lines


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def _write(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue().encode("utf-8")


def _transform_columns(data: bytes, change: str) -> bytes:
    rows = _rows(data)
    out = []
    for r in rows:
        if r and r[0] in ("CH", "SB"):
            cols = r[1:]
            if change == "reverse":
                cols = cols[::-1]
            elif change == "extra":
                cols = cols[:3] + (["Surprise Column"] if r[0] == "CH" else ["x"]) + cols[3:]
                cols.append("Another" if r[0] == "CH" else "y")
            elif change == "case" and r[0] == "CH":
                cols = ["  " + c.upper().replace(" ", "  ") + " " for c in cols]
            r = [r[0], *cols]
        out.append(r)
    return _write(out)


@pytest.mark.parametrize("change", ["reverse", "extra", "case"])
def test_columns_by_name_not_position(change: str) -> None:
    want = paypal.parse(read(GOLDEN), GOLDEN).lines
    got = paypal.parse(_transform_columns(read(GOLDEN), change), "other.csv").lines
    assert_same_lines(got, want)
    assert [g.line_id for g in got] == [w.line_id for w in want]


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode("utf-8-sig"),
        lambda t: t.encode("utf-16"),
        lambda t: t.encode("utf-16-le"),
        lambda t: t.replace("\n", "\r\n").encode("utf-8"),
        lambda t: t.replace("\n", ",\n\n").encode("utf-8"),  # trailing commas, blank lines
    ],
    ids=["bom", "utf16", "utf16le-no-bom", "crlf", "trailing-comma-blank-lines"],
)
def test_encodings_and_line_endings(encode: object) -> None:
    text = read(GOLDEN).decode("utf-8")
    want = paypal.parse(read(GOLDEN), GOLDEN).lines
    got = paypal.parse(encode(text), "x.csv").lines  # type: ignore[operator]
    assert_same_lines(got, want)


# --------------------------------------------------------------------------------------------
# Malformed corpus: each file fails as a whole with its own error, naming the line

BAD = [
    ("empty.csv", None, "the file is empty"),
    ("not_stl_adyen_header.csv", 1, "not a PayPal settlement report"),
    ("missing_column.csv", 4, "missing required column(s) Gross Transaction Amount"),
    ("truncated_no_footer.csv", 6, "truncated: it ends without its SC, RC and FF"),
    ("truncated_row.csv", 6, "SB row has 6 fields but the CH header (line 4) has 21"),
    ("unterminated_quote.csv", 6, "malformed CSV"),
    ("bad_encoding.csv", 5, "not valid UTF-8"),
    ("non_numeric_amount.csv", 6, "Gross Transaction Amount: '25.00' is not an unsigned integer"),
    ("unknown_currency.csv", 5, "'XYZ' is not an ISO 4217 currency code"),
    ("bad_date.csv", 6, "'2026/13/45 11:30:05 -0800' is not a date and time"),
    ("unknown_tcode.csv", 6, "unknown transaction event code T0999"),
    ("malformed_tcode.csv", 5, "'PAYMENT' is not a T-code"),
    ("bad_direction_flag.csv", 5, "Transaction Debit or Credit: 'XX' is not CR or DR"),
    ("sf_mismatch.csv", 7, "SF footer USD gross CR total is 10001 but the body rows add up"),
    ("sc_mismatch.csv", 8, "SC record count is 3 but there are 2 SB rows"),
    ("rf_mismatch.csv", 9, "RF footer USD fee DR total is 330 but the body rows add up to 320"),
    ("rc_mismatch.csv", 10, "RC record count is 1 but there are 2 SB rows"),
    ("missing_ff.csv", 10, "truncated: it ends without its FF file footer"),
    ("missing_sf.csv", 7, "no SF footer for USD"),
    ("data_after_ff.csv", 12, "'SB' row after the FF file footer"),
    ("jpy_fraction.csv", 5, "10050 is not a whole number of JPY minor units"),
    ("fee_currency_mismatch.csv", 5, "Fee Currency EUR differs from Gross Transaction Currency"),
    ("bad_record_count.csv", 2, "RC record count 'abc' is not a number"),
    ("sb_before_ch.csv", 4, "SB body row before the section's CH column header"),
]  # fmt: skip


def test_bad_corpus_is_complete() -> None:
    assert sorted(p.name for p in (DATA / "bad").iterdir()) == sorted(b[0] for b in BAD)


@pytest.mark.parametrize(("name", "line_no", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_malformed_file(name: str, line_no: int | None, fragment: str) -> None:
    with pytest.raises(SettlementFileError) as info:
        paypal.parse(read(f"bad/{name}"), name)
    assert fragment in info.value.reason
    assert info.value.line == line_no
    assert info.value.file == name


# --------------------------------------------------------------------------------------------
# Line ids


def test_line_ids_stable_across_file_names() -> None:
    one = paypal.parse(read(GOLDEN), "STL-20260106.01.009.CSV")
    two = paypal.parse(read(GOLDEN), "/elsewhere/redelivered-copy.csv")
    assert [x.line_id for x in one.lines] == [x.line_id for x in two.lines]
    assert len({x.line_id for x in one.lines}) == len(one.lines)
    assert {x.source_file for x in two.lines} == {"/elsewhere/redelivered-copy.csv"}


def test_identical_rows_get_distinct_stable_ids() -> None:
    base = paypal.parse(read(GOLDEN), GOLDEN).lines[0]
    single = paypal.parse(paypal.render_stl([base]), "a").lines
    double = paypal.parse(paypal.render_stl([base, base]), "b").lines
    assert (
        double[0].line_id
        == single[0].line_id
        == make_line_id("paypal", base.gateway_reference, "T0006")
    )
    assert double[1].line_id != double[0].line_id
    # not from the row number: a row inserted before does not change the ids
    other = paypal.parse(read(GOLDEN), GOLDEN).lines[1]
    shifted = paypal.parse(paypal.render_stl([other, base, base]), "c").lines
    assert [x.line_id for x in shifted[1:]] == [x.line_id for x in double]


# --------------------------------------------------------------------------------------------
# Renderer


@pytest.mark.parametrize("name", [GOLDEN, OLD_UTF16, TOLERANT])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_render_round_trip(name: str, encoding: str) -> None:
    lines = paypal.parse(read(name), name).lines
    rendered = paypal.render_stl(lines, encoding=encoding, two_space_header=encoding == "utf-8")
    assert_same_lines(paypal.parse(rendered, "r.csv").lines, lines)


def test_render_is_deterministic_and_quotes_varchar() -> None:
    lines = paypal.parse(read(GOLDEN), GOLDEN).lines
    out = paypal.render_stl(lines, account_id="ACC1")
    assert out == paypal.render_stl(lines, account_id="ACC1")
    text = out.decode("utf-8")
    rows = text.splitlines()
    assert rows[0].startswith('"RH",2026/01/07 02:00:00 +0000,"A","ACC1",009')
    assert rows[2] == '"SH","2026/01/06 00:00:00 +0000","2026/01/06 23:59:59 +0000","ACC1"'
    assert rows[4].startswith(
        '"SB","8TX11111AA111111A","INV-1001","","","T0006","2026/01/06 17:15:02 +0000",'
        '"2026/01/06 17:15:02 +0000","CR",10000,"USD","DR",320,"USD",'
    )
    assert '"SF","USD",21210,20970,80,320' in rows
    assert rows[-3:] == ['"RF","USD",21210,20970,80,320', '"RC",12', '"FF",12']
    two_space = paypal.render_stl(lines, two_space_header=True).decode()
    assert '"Transaction  Debit or Credit"' in two_space


def test_render_amount_scaling_is_exact() -> None:
    base = paypal.parse(read(GOLDEN), GOLDEN).lines[0]
    jpy = dataclasses.replace(base, currency="JPY", gross_minor=1234, fee_minor=34, net_minor=1200)
    text = paypal.render_stl([jpy]).decode()
    assert '"CR",123400,"JPY","DR",3400,"JPY"' in text
    kwd = dataclasses.replace(base, currency="KWD", gross_minor=12340, fee_minor=0, net_minor=12340)
    assert '"CR",1234,"KWD"' in paypal.render_stl([kwd]).decode()
    with pytest.raises(ValueError, match="cannot be written to an STL file exactly"):
        paypal.render_stl([dataclasses.replace(kwd, gross_minor=12345, net_minor=12345)])


def test_render_sections_per_batch_and_report_date() -> None:
    lines = paypal.parse(read(GOLDEN), GOLDEN).lines
    moved = [dataclasses.replace(x, batch_id="2026-01-07") for x in lines[6:]]
    mixed = [*lines[:6], *moved]
    parsed = paypal.parse(paypal.render_stl(mixed), "m")
    assert_same_lines(parsed.lines, mixed)
    assert paypal.render_stl(mixed).decode().count('"SH"') == 2
    one = paypal.parse(paypal.render_stl(mixed, report_date="2026-02-01"), "d").lines
    assert {x.batch_id for x in one} == {"2026-02-01"}
    empty = paypal.parse(paypal.render_stl([], report_date=date(2026, 1, 6)), "e")
    assert empty.lines == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exchange_rate": "1.1"}, "presentment amounts or FX"),
        ({"available_on": date(2026, 1, 8)}, "available_on"),
        ({"occurred_at": utc(2026, 1, 6, 1).replace(microsecond=5)}, "whole seconds"),
        ({"modification_reference": "X1"}, "needs gateway_reference"),
        ({"gateway_reference": None}, "needs gateway_reference"),
        ({"category": "refund"}, "needs modification_reference"),
        ({"category": "fee"}, "gross 0"),
        ({"gateway": "stripe"}, "is not paypal"),
        ({"batch_id": "po_123"}, "is not a date"),
    ],
)
def test_render_refuses_what_stl_cannot_carry(change: dict[str, object], message: str) -> None:
    base = paypal.parse(read(GOLDEN), GOLDEN).lines[0]  # a charge
    with pytest.raises(ValueError, match=message):
        paypal.render_stl([dataclasses.replace(base, **change)])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Properties

_CURRENCIES = ("USD", "EUR", "JPY", "KWD")
_IDS = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=17, max_size=17)


def _scale(cur: str) -> int:
    return 10 if cur == "KWD" else 1  # KWD minor units must be whole 1/100 KWD in STL


@st.composite
def _batch(draw: st.DrawFn) -> list[SettlementLine]:
    cur = draw(st.sampled_from(_CURRENCIES))
    batch = draw(st.dates(min_value=date(2015, 1, 1), max_value=date(2030, 12, 31))).isoformat()
    when = datetime(int(batch[:4]), int(batch[5:7]), int(batch[8:]), 12, tzinfo=UTC)
    amount = st.integers(min_value=0, max_value=10**9).map(lambda n: n * _scale(cur))
    out: list[SettlementLine] = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(("charge", "refund", "fee", "chargeback", "adjustment")))
        gross, fee = draw(amount), draw(amount)
        txn = draw(_IDS)
        ref = draw(st.one_of(st.none(), _IDS))
        inv = draw(st.one_of(st.none(), st.text(min_size=1, max_size=12).filter(str.strip)))
        category: Category = kind  # type: ignore[assignment]
        gref: str | None = txn if kind == "charge" else ref
        mref: str | None = None if kind == "charge" else txn
        if kind in ("refund", "chargeback"):
            gross, fee = -gross, -fee if draw(st.booleans()) else 0
        if kind == "fee":
            gross, fee = 0, fee if draw(st.booleans()) else -fee
        out.append(line(i, category, gref, mref, inv and inv.strip(), when, cur, gross, fee,
                        batch=batch, file="gen"))  # fmt: skip
    total = sum(x.net_minor for x in out)
    out.append(line(99, "payout", draw(_IDS), None, None, when, cur, -total, 0, batch=batch,
                    file="gen"))  # fmt: skip
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(_batch(), min_size=1, max_size=3))
def test_property_round_trip_and_batches_tie_out(batches: list[list[SettlementLine]]) -> None:
    lines = [x for b in batches for x in b]
    parsed = paypal.parse(paypal.render_stl(lines), "prop.csv")
    assert_same_lines(parsed.lines, lines)
    assert all(x.net_minor == x.gross_minor - x.fee_minor for x in parsed.lines)
    # each batch nets to zero with its payout, unless two batches share a date and currency
    keys = [(b[0].batch_id, b[0].currency) for b in batches]
    if len(set(keys)) == len(keys):
        assert parsed.findings == ()
    # dropping a non-zero line breaks the tie-out and is reported, not raised
    nonzero = [i for i, x in enumerate(lines) if x.net_minor and x.category != "payout"]
    if nonzero and len(set(keys)) == len(keys):
        broken = [x for i, x in enumerate(lines) if i != nonzero[0]]
        findings = paypal.parse(paypal.render_stl(broken), "p").findings
        assert [f.actual_minor for f in findings] == [-lines[nonzero[0]].net_minor]
