"""PayPal Settlement Report (STL) -> canonical settlement lines, and the inverse renderer.

The STL is a CSV of typed rows: RH report header, FH file header, then sections (SH section
header, CH column names, SB body rows, SF per-currency section footers, SC section record
count), then RF per-currency report footers, RC report record count and FF file footer. Body
rows are read by the CH names (never by position), so extra, reordered, two-space
(``Transaction  Debit or Credit``) and the old UTF-16 CamelCase names (``TransactionID``) all
work. A file either parses whole or raises `SettlementFileError`: the footers are checked
against the body, so a truncated or corrupted file is never loaded partially.

Amounts. PayPal writes amounts unsigned, with the direction in a CR/DR column and "no decimal
separator": "100,00 yen and $100.00 USD are both represented as 10000". The file therefore
always has two implied decimals, whatever the currency's ISO exponent. A file amount is
converted to ISO minor units exactly: JPY 10000 in the file is 100 yen (100 minor units) and
must be divisible by 100; KWD 1234 is 12.340 KWD (12340 minor units).

Direction. ``Transaction Debit or Credit`` CR = money in (positive gross), DR = money out.
``Fee Debit or Credit`` DR = a fee charged (fee positive), CR = a fee given back (fee
negative); an empty fee is 0. net = gross - fee. Fee-only event codes (T01xx, T1108, T1109)
carry the fee in the gross columns: the line gets gross 0, fee = the amount (DR positive, CR
negative), net = -fee.

Footers (the reference marks the SF/RF layout as inferred; this is the layout checked and
written): ``"SF"|"RF", <currency>, <gross CR total>, <gross DR total>, <fee CR total>,
<fee DR total>[, balance pairs ...]`` in file units (the raw column values, per Gross/Fee
Transaction Currency); balance pairs are ignored. ``"SC", <SB rows in the section>`` and
``"RC", <SB rows in the report>`` are checked. FF is required (it proves the file is complete)
but its fields are not checked (their meaning is not documented in the reference).

Conventions
-----------
- batch_id: the date of the SH section start as written (``2026/01/06 00:00:00 -0800`` ->
  ``2026-01-06``), i.e. the report's settlement date in PayPal's reporting time zone.
- line_id: make_line_id("paypal", Transaction ID, Transaction Event Code) via unique_line_ids.
- occurred_at: Transaction Completion Date (fallback Transaction Initiation Date), with its
  offset, converted to UTC; whole seconds only. available_on: always None.
- merchant_reference: Invoice ID. currency: Gross Transaction Currency (a Fee Currency that
  differs is an error: STL shows FX as separate T02xx rows).
- References by event code ("own": the row is the original movement; "mod": it modifies one):
    own  T00xx charge, T03xx/T20xx/T22xx transfer, T04xx payout, other groups other:
         gateway_reference = Transaction ID, modification_reference = None.
    mod  T01xx fee, T02xx transfer (currency conversion; the reference is the converted
         payment), T1101 payout_reversal, T1106 chargeback, T1107 refund, T1108/T1109 fee,
         other T11xx adjustment, T1201 chargeback, T1202/T1205 chargeback_reversal, other
         T12xx adjustment, T15xx/T21xx adjustment:
         gateway_reference = PayPal Reference ID (None when empty),
         modification_reference = Transaction ID.
- Renderer event codes per category: charge T0006 (own), refund T1107, chargeback T1201,
  chargeback_reversal T1202, adjustment T1200, payout_reversal T1101 (all mod), fee T0100 when
  fee >= 0 else T1108 (mod, fee-only), transfer T0200 (mod) when it has a
  modification_reference else T0300 (own), payout T0400, other T9900 (own).
  So an "own" line needs gateway_reference and no modification_reference; a "mod" line needs
  modification_reference (gateway_reference optional); a fee line needs gross 0.
- Cannot be carried (renderer raises ValueError): presentment_currency,
  presentment_amount_minor, exchange_rate (must be None), available_on (must be None),
  sub-second occurred_at, amounts finer than 1/100 of a major unit (e.g. KWD 0.001).
- Renderer sections: one SH section per run of consecutive lines with the same batch_id
  (an ISO date), or a single section dated ``report_date`` when given (then the lines'
  batch_id is not carried). Dates are written in UTC (+0000).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

from tieout.connectors.settlements.base import (
    Category,
    ParsedFile,
    SettlementFileError,
    SettlementLine,
    batch_findings,
    unique_line_ids,
)
from tieout.connectors.settlements.common import (
    Row,
    csv_records,
    currency,
    decode_text,
    minor_int,
    norm_header,
    parse_date,
    parse_datetime,
    read_table,
)
from tieout.money import exponent

GATEWAY: Final = "paypal"
FORMAT_STL: Final = "paypal.stl"
FORMATS: Final[tuple[str, ...]] = (FORMAT_STL,)

#: The v9 CH layout (22 columns after the row type), in PayPal's order.
STL_COLUMNS: Final[tuple[str, ...]] = (
    "Transaction ID",
    "Invoice ID",
    "PayPal Reference ID",
    "PayPal Reference ID Type",
    "Transaction Event Code",
    "Transaction Initiation Date",
    "Transaction Completion Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
    "Fee Debit or Credit",
    "Fee Amount",
    "Fee Currency",
    "Custom Field",
    "Consumer ID",
    "Payment Tracking ID",
    "Store ID",
    "Bank Reference ID",
    "Credit Transactional Fee",
    "Credit Promotional Fee",
    "Credit Term",
)
_REQUIRED: Final = (
    "Transaction ID",
    "Invoice ID",
    "PayPal Reference ID",
    "Transaction Event Code",
    "Transaction Completion Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
    "Fee Debit or Credit",
    "Fee Amount",
)
# Header names compared without spaces, so "TransactionID" (old UTF-16 files) and
# "Transaction  Debit or Credit" both land on the v9 name.
_SQUASHED: Final[dict[str, str]] = {c.replace(" ", "").lower(): c for c in STL_COLUMNS}


def _pow10(n: int) -> int:
    result: int = 10**n
    return result


def _ranges(*spans: tuple[int, int]) -> frozenset[str]:
    return frozenset(f"T{n:04d}" for lo, hi in spans for n in range(lo, hi + 1))


#: Every event code in PayPal's T-code table (reference §3.3). Anything else is rejected: an
#: unknown code could move money in a way this parser would misclassify.
T_CODES: Final[frozenset[str]] = _ranges(
    (0, 19),
    (100, 113),
    (200, 202),
    (300, 303),
    (400, 401),
    (500, 505),
    (600, 600),
    (700, 701),
    (800, 808),
    (900, 905),
    (1000, 1000),
    (1100, 1119),
    (1200, 1205),
    (1207, 1208),
    (1300, 1302),
    (1400, 1400),
    (1500, 1503),
    (1600, 1603),
    (1700, 1701),
    (1800, 1801),
    (1900, 1900),
    (2000, 2003),
    (2101, 2113),
    (2201, 2201),
    (3000, 3000),
    (5000, 5001),
    (9700, 9702),
    (9800, 9800),
    (9900, 9900),
)

Style = Literal["own", "mod", "fee"]


def classify(code: str) -> tuple[Category, Style]:
    """Category and reference style of a known T-code (see Conventions)."""
    group = code[1:3]
    if code in ("T1108", "T1109") or group == "01":
        return "fee", "fee"
    special: dict[str, Category] = {
        "T1101": "payout_reversal",
        "T1106": "chargeback",
        "T1107": "refund",
        "T1201": "chargeback",
        "T1202": "chargeback_reversal",
        "T1205": "chargeback_reversal",
    }
    if code in special:
        return special[code], "mod"
    if group in ("11", "12", "15", "21"):
        return "adjustment", "mod"
    if group == "02":
        return "transfer", "mod"
    own: dict[str, Category] = {
        "00": "charge",
        "03": "transfer",
        "04": "payout",
        "20": "transfer",
        "22": "transfer",
    }
    return own.get(group, "other"), "own"


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass
class _Totals:
    """Footer totals in file units (two implied decimals), per currency."""

    by_currency: dict[str, list[int]] = field(default_factory=dict)
    count: int = 0

    def add(self, cur: str, gross_flag: str, gross: int, fee_flag: str, fee: int) -> None:
        t = self.by_currency.setdefault(cur, [0, 0, 0, 0])
        t[0 if gross_flag == "CR" else 1] += gross
        if fee_flag:
            t[2 if fee_flag == "CR" else 3] += fee
        self.count += 1


_FOOTER_FIELDS: Final = ("gross CR total", "gross DR total", "fee CR total", "fee DR total")


def _file_to_minor(amount: int, cur: str, file: str, line: int, column: str) -> int:
    """File units (two implied decimals for every currency) -> ISO minor units, exactly."""
    exp = exponent(cur)
    if exp >= 2:
        return amount * _pow10(exp - 2)
    scale = _pow10(2 - exp)
    if amount % scale:
        raise SettlementFileError(
            f"column {column}: {amount} is not a whole number of {cur} minor units "
            f"(STL amounts have two implied decimals; {cur} has {exp})",
            file=file,
            line=line,
        )
    return amount // scale


def _flag(text: str, file: str, line: int, column: str, *, optional: bool) -> str:
    t = text.strip().upper()
    if t in ("CR", "DR") or (optional and t == ""):
        return t
    raise SettlementFileError(f"column {column}: {text!r} is not CR or DR", file=file, line=line)


@dataclass
class _Body:
    """One SB row, parsed, waiting for its line id."""

    key: tuple[str, str]
    line: SettlementLine  # line_id still empty


def _parse_body(row: Row, batch_id: str, file: str, totals: list[_Totals]) -> _Body:
    line = row.line
    txn_id = row.get("Transaction ID")
    if not txn_id:
        raise SettlementFileError("Transaction ID is empty", file=file, line=line)
    code = row.get("Transaction Event Code").upper()
    if not re.fullmatch(r"T[0-9]{4}", code):
        raise SettlementFileError(
            f"column Transaction Event Code: {code!r} is not a T-code (Tnnnn)",
            file=file,
            line=line,
        )
    if code not in T_CODES:
        raise SettlementFileError(
            f"unknown transaction event code {code}",
            file=file,
            line=line,
            fix="check PayPal's T-code list and add it to paypal.T_CODES with its category",
        )
    category, style = classify(code)

    cur = currency(row.get("Gross Transaction Currency"), file, line, "Gross Transaction Currency")
    gross_flag = _flag(
        row.get("Transaction Debit or Credit"),
        file,
        line,
        "Transaction Debit or Credit",
        optional=False,
    )
    gross_raw = minor_int(
        row.get("Gross Transaction Amount"), file, line, "Gross Transaction Amount", unsigned=True
    )
    fee_flag = _flag(
        row.get("Fee Debit or Credit"), file, line, "Fee Debit or Credit", optional=True
    )
    fee_text = row.get("Fee Amount")
    fee_raw = minor_int(fee_text, file, line, "Fee Amount", unsigned=True) if fee_text else 0
    if fee_raw and not fee_flag:
        raise SettlementFileError(
            f"Fee Amount {fee_raw} has no Fee Debit or Credit", file=file, line=line
        )
    fee_cur_text = row.get("Fee Currency")
    if fee_flag and fee_cur_text:
        fee_cur = currency(fee_cur_text, file, line, "Fee Currency")
        if fee_cur != cur:
            raise SettlementFileError(
                f"Fee Currency {fee_cur} differs from Gross Transaction Currency {cur}",
                file=file,
                line=line,
                fix="STL states fees in the transaction's currency; check the file",
            )
    for t in totals:
        t.add(cur, gross_flag, gross_raw, fee_flag, fee_raw)

    gross_signed = _file_to_minor(gross_raw, cur, file, line, "Gross Transaction Amount")
    if gross_flag == "DR":
        gross_signed = -gross_signed
    fee_signed = _file_to_minor(fee_raw, cur, file, line, "Fee Amount")
    if fee_flag == "CR":
        fee_signed = -fee_signed
    if style == "fee":
        gross, fee = 0, fee_signed - gross_signed
    else:
        gross, fee = gross_signed, fee_signed

    when_text = row.get("Transaction Completion Date")
    column = "Transaction Completion Date"
    if not when_text:
        when_text, column = row.get("Transaction Initiation Date"), "Transaction Initiation Date"
    if not when_text:
        raise SettlementFileError(
            "Transaction Completion Date and Transaction Initiation Date are both empty",
            file=file,
            line=line,
        )
    occurred_at = parse_datetime(when_text, file, line, column)

    gateway_reference: str | None = txn_id
    modification_reference: str | None = None
    if style != "own":
        gateway_reference = row.get("PayPal Reference ID") or None
        modification_reference = txn_id
    settlement_line = SettlementLine(
        gateway=GATEWAY,
        line_id="",
        batch_id=batch_id,
        category=category,
        gateway_reference=gateway_reference,
        modification_reference=modification_reference,
        merchant_reference=row.get("Invoice ID") or None,
        occurred_at=occurred_at,
        available_on=None,
        currency=cur,
        gross_minor=gross,
        fee_minor=fee,
        net_minor=gross - fee,
        presentment_currency=None,
        presentment_amount_minor=None,
        exchange_rate=None,
        source_file=file,
        source_row=line,
    )
    return _Body((txn_id, code), settlement_line)


def _records(text: str, file: str) -> Iterator[tuple[int, str, list[str]]]:
    """(first physical line, row type, fields after the type) for each non-blank record."""
    for end_line, fields in csv_records(text, file):
        start = end_line - sum(f.count("\n") for f in fields)
        yield start, fields[0].strip().upper(), fields[1:]


def _check_footer(
    kind: str, line: int, fields: list[str], totals: _Totals, seen: set[str], file: str
) -> None:
    if len(fields) < 5:
        raise SettlementFileError(
            f"{kind} footer has {len(fields)} fields after the row type, expected at least 5 "
            "(currency and four totals)",
            file=file,
            line=line,
            fix="the file may be truncated",
        )
    cur = currency(fields[0], file, line, f"{kind} currency")
    if cur in seen:
        raise SettlementFileError(f"a second {kind} footer for {cur}", file=file, line=line)
    seen.add(cur)
    actual = totals.by_currency.get(cur, [0, 0, 0, 0])
    for name, text, got in zip(_FOOTER_FIELDS, fields[1:5], actual, strict=True):
        stated = minor_int(text, file, line, f"{kind} {name}", unsigned=True)
        if stated != got:
            raise SettlementFileError(
                f"{kind} footer {cur} {name} is {stated} but the body rows add up to {got}",
                file=file,
                line=line,
                fix="the file is corrupt or was edited; re-download it",
            )


def _check_all_footed(kind: str, line: int, totals: _Totals, seen: set[str], file: str) -> None:
    missing = sorted(set(totals.by_currency) - seen)
    if missing:
        raise SettlementFileError(
            f"no {kind} footer for {', '.join(missing)} although the body has rows in it",
            file=file,
            line=line,
            fix="the file is corrupt or truncated; re-download it",
        )


def _check_count(kind: str, line: int, fields: list[str], actual: int, file: str) -> None:
    text = fields[0].strip() if fields else ""
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise SettlementFileError(
            f"{kind} record count {text!r} is not a number", file=file, line=line
        )
    stated = int(text)
    if stated != actual:
        raise SettlementFileError(
            f"{kind} record count is {stated} but there are {actual} SB rows",
            file=file,
            line=line,
            fix="the file is corrupt or truncated; re-download it",
        )


def parse(data: bytes, file: str) -> ParsedFile:
    """Parse a whole STL file; any defect raises SettlementFileError (nothing partial)."""
    text = decode_text(data, file)
    # States: start -> report -> (section_head -> section_body -> section_foot -> report)*
    #         -> report_foot -> file_foot -> done
    state = "start"
    header: list[str] = []
    header_line = 0
    batch_id = ""
    section_line = 0
    section = _Totals()
    report = _Totals()
    sf_seen: set[str] = set()
    rf_seen: set[str] = set()
    bodies: list[_Body] = []
    last_line = 0

    def fail(message: str, line: int, fix: str | None = None) -> SettlementFileError:
        return SettlementFileError(message, file=file, line=line, fix=fix)

    for line, kind, fields in _records(text, file):
        last_line = line
        if state == "start":
            if kind != "RH":
                raise fail(
                    f"not a PayPal settlement report: the first row is {kind!r}, expected RH",
                    line,
                    "check that this is an STL-*.CSV settlement report",
                )
            state = "report"
        elif kind == "RH":
            raise fail("a second RH report header", line)
        elif state == "done":
            raise fail(f"{kind!r} row after the FF file footer", line)
        elif kind == "FH":
            if state != "report" or bodies or section_line:
                raise fail("FH file header after the first section", line)
        elif kind == "SH":
            if state != "report":
                raise fail(
                    f"SH section header in state {state!r}: the previous section has no SC", line
                )
            if not fields or not fields[0].strip():
                raise fail("SH section header has no start date", line)
            parse_datetime(fields[0], file, line, "SH section start")
            batch_id = parse_date(fields[0], file, line, "SH section start").isoformat()
            section_line = line
            section = _Totals()
            sf_seen = set()
            state = "section_head"
        elif kind == "CH":
            if state != "section_head":
                raise fail("CH column header outside a section header", line)
            names = [norm_header(h) for h in fields]
            header = [_SQUASHED.get(n.replace(" ", ""), n) for n in names]
            header_line = line
            read_table([], header, line, file, _REQUIRED)
            state = "section_body"
        elif kind == "SB":
            if state != "section_body":
                where = {
                    "section_head": "before the section's CH column header",
                    "section_foot": "after the section's SF footer",
                }.get(state, "outside a section (no SH before it)")
                raise fail(f"SB body row {where}", line)
            needed = max(i for i, n in enumerate(header) if n.strip()) + 1
            if len(fields) < needed:
                raise fail(
                    f"SB row has {len(fields)} fields but the CH header (line {header_line}) "
                    f"has {needed}",
                    line,
                    "the file may be truncated",
                )
            (row,) = read_table([(line, fields)], header, header_line, file, _REQUIRED)
            bodies.append(_parse_body(row, batch_id, file, [section, report]))
        elif kind == "SF":
            if state not in ("section_body", "section_foot"):
                raise fail("SF section footer outside a section", line)
            _check_footer("SF", line, fields, section, sf_seen, file)
            state = "section_foot"
        elif kind == "SC":
            if state not in ("section_body", "section_foot"):
                raise fail("SC section record count outside a section", line)
            _check_all_footed("SF", line, section, sf_seen, file)
            _check_count("SC", line, fields, section.count, file)
            state = "report"
        elif kind == "RF":
            if state not in ("report", "report_foot"):
                raise fail(f"RF report footer inside a section (state {state!r})", line)
            _check_footer("RF", line, fields, report, rf_seen, file)
            state = "report_foot"
        elif kind == "RC":
            if state not in ("report", "report_foot"):
                raise fail(f"RC report record count inside a section (state {state!r})", line)
            _check_all_footed("RF", line, report, rf_seen, file)
            _check_count("RC", line, fields, report.count, file)
            state = "file_foot"
        elif kind == "FF":
            if state != "file_foot":
                raise fail("FF file footer before the RC report record count", line)
            state = "done"
        else:
            raise fail(
                f"unknown row type {kind!r} (expected RH, FH, SH, CH, SB, SF, SC, RF, RC, FF)",
                line,
            )

    if state == "start":
        raise fail("the file has no rows", 1, "re-download the report")
    if state != "done":
        missing = {
            "report": "RC report record count and FF file footer",
            "section_head": "CH, SC, RC and FF rows",
            "section_body": "SC, RC and FF rows",
            "section_foot": "SC, RC and FF rows",
            "report_foot": "RC report record count and FF file footer",
            "file_foot": "FF file footer",
        }[state]
        raise fail(
            f"the file is truncated: it ends without its {missing}",
            last_line,
            "re-download the complete report",
        )

    ids = unique_line_ids(GATEWAY, [b.key for b in bodies])
    lines = tuple(
        dataclasses.replace(b.line, line_id=line_id) for line_id, b in zip(ids, bodies, strict=True)
    )
    return ParsedFile(
        gateway=GATEWAY,
        format=FORMAT_STL,
        lines=lines,
        findings=tuple(batch_findings(lines, file)),
    )


# --------------------------------------------------------------------------------------------
# Rendering

_RENDER_CODE: Final[dict[str, str]] = {
    "charge": "T0006",
    "refund": "T1107",
    "chargeback": "T1201",
    "chargeback_reversal": "T1202",
    "adjustment": "T1200",
    "payout": "T0400",
    "payout_reversal": "T1101",
    "transfer": "T0300",
    "other": "T9900",
}
_DT_FORMAT: Final = "%Y/%m/%d %H:%M:%S %z"


@dataclass(frozen=True)
class _Q:
    """A varchar field: written in double quotes, as PayPal does."""

    text: str


def _minor_to_file(amount: int, cur: str) -> int:
    """ISO minor units -> file units (two implied decimals); ValueError when not exact."""
    exp = exponent(cur)
    if exp <= 2:
        return amount * _pow10(2 - exp)
    scale = _pow10(exp - 2)
    if amount % scale:
        raise ValueError(
            f"{amount} {cur} minor units cannot be written to an STL file exactly "
            "(two implied decimals)"
        )
    return amount // scale


def _write_row(kind: str, fields: Sequence[_Q | int | str]) -> str:
    out = [f'"{kind}"']
    for f in fields:
        if isinstance(f, _Q):
            out.append('"' + f.text.replace('"', '""') + '"')
        else:
            out.append(str(f))
    return ",".join(out)


def _stl_dt(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_DT_FORMAT)


def _body_row(line: SettlementLine) -> tuple[list[_Q | int | str], tuple[str, str, int, str, int]]:
    """The SB fields for one line and its raw footer contribution."""
    if line.gateway != GATEWAY:
        raise ValueError(f"{line.line_id}: gateway {line.gateway!r} is not paypal")
    if (
        line.presentment_currency is not None
        or line.presentment_amount_minor is not None
        or line.exchange_rate is not None
    ):
        raise ValueError(f"{line.line_id}: STL cannot carry presentment amounts or FX rates")
    if line.available_on is not None:
        raise ValueError(f"{line.line_id}: STL cannot carry available_on")
    if line.occurred_at.microsecond:
        raise ValueError(f"{line.line_id}: STL dates have whole seconds only")
    cur = line.currency
    if line.category == "fee":
        if line.gross_minor != 0:
            raise ValueError(f"{line.line_id}: a fee line must have gross 0 in STL")
        code = "T0100" if line.fee_minor >= 0 else "T1108"
        gross_flag = "DR" if line.fee_minor >= 0 else "CR"
        gross_raw = _minor_to_file(abs(line.fee_minor), cur)
        fee_flag, fee_raw = "", 0
    else:
        code = _RENDER_CODE[line.category]
        if line.category == "transfer" and line.modification_reference is not None:
            code = "T0200"  # a currency conversion: references the converted payment
        gross_flag = "CR" if line.gross_minor >= 0 else "DR"
        gross_raw = _minor_to_file(abs(line.gross_minor), cur)
        fee_flag = "" if line.fee_minor == 0 else ("DR" if line.fee_minor > 0 else "CR")
        fee_raw = _minor_to_file(abs(line.fee_minor), cur)
    _, style = classify(code)
    if style == "own":
        if line.gateway_reference is None or line.modification_reference is not None:
            raise ValueError(
                f"{line.line_id}: a {line.category} line needs gateway_reference (its "
                "Transaction ID) and no modification_reference"
            )
        txn_id, reference = line.gateway_reference, ""
    else:
        if line.modification_reference is None:
            raise ValueError(
                f"{line.line_id}: a {line.category} line needs modification_reference (its "
                "Transaction ID)"
            )
        txn_id, reference = line.modification_reference, line.gateway_reference or ""
    when = _stl_dt(line.occurred_at)
    fields: list[_Q | int | str] = [
        _Q(txn_id),
        _Q(line.merchant_reference or ""),
        _Q(reference),
        _Q("TXN" if reference else ""),
        _Q(code),
        _Q(when),
        _Q(when),
        _Q(gross_flag),
        gross_raw,
        _Q(cur),
        _Q(fee_flag),
        fee_raw if fee_flag else "",
        _Q(cur if fee_flag else ""),
        *[_Q("") for _ in range(8)],
    ]
    return fields, (cur, gross_flag, gross_raw, fee_flag, fee_raw)


def _footer(kind: str, totals: _Totals) -> list[str]:
    return [
        _write_row(kind, [_Q(cur), *totals.by_currency[cur]]) for cur in sorted(totals.by_currency)
    ]


def _sections(
    lines: Sequence[SettlementLine], report_date: date | None
) -> list[tuple[date, list[SettlementLine]]]:
    if report_date is not None:
        return [(report_date, list(lines))]
    out: list[tuple[date, list[SettlementLine]]] = []
    for line in lines:
        if out and out[-1][1][-1].batch_id == line.batch_id:
            out[-1][1].append(line)
            continue
        try:
            day = date.fromisoformat(line.batch_id)
        except ValueError:
            raise ValueError(
                f"{line.line_id}: batch_id {line.batch_id!r} is not a date; pass report_date"
            ) from None
        out.append((day, [line]))
    return out


def render_stl(
    lines: Sequence[SettlementLine],
    account_id: str = "TIEOUTMERCHANT1",
    report_date: date | str | None = None,
    encoding: str = "utf-8",
    two_space_header: bool = False,
) -> bytes:
    """An STL file whose parse gives back `lines` (see Conventions for what it can carry).

    encoding: "utf-8", "utf-8-sig" (with BOM) or "utf-16" (with BOM, as old files were).
    two_space_header writes ``Transaction  Debit or Credit`` as some real files spell it.
    """
    if encoding not in ("utf-8", "utf-8-sig", "utf-16"):
        raise ValueError(f"encoding must be utf-8, utf-8-sig or utf-16, not {encoding!r}")
    day = date.fromisoformat(report_date) if isinstance(report_date, str) else report_date
    sections = _sections(lines, day)
    if not sections:
        if day is None:
            raise ValueError("no lines: pass report_date")
        sections = [(day, [])]
    first_day = sections[0][0]
    generated = datetime(first_day.year, first_day.month, first_day.day, 2, 0, tzinfo=UTC)
    columns = [
        "Transaction  Debit or Credit"
        if two_space_header and c == "Transaction Debit or Credit"
        else c
        for c in STL_COLUMNS
    ]
    out = [
        _write_row("RH", [_stl_dt(generated + timedelta(days=1)), _Q("A"), _Q(account_id), "009"]),
        _write_row("FH", ["01"]),
    ]
    report = _Totals()
    for section_day, section_lines in sections:
        start = datetime(section_day.year, section_day.month, section_day.day, tzinfo=UTC)
        out.append(
            _write_row(
                "SH",
                [
                    _Q(_stl_dt(start)),
                    _Q(_stl_dt(start + timedelta(days=1, seconds=-1))),
                    _Q(account_id),
                ],
            )
        )
        out.append(_write_row("CH", [_Q(c) for c in columns]))
        section = _Totals()
        for line in section_lines:
            fields, raw = _body_row(line)
            out.append(_write_row("SB", fields))
            section.add(*raw)
            report.add(*raw)
        out.extend(_footer("SF", section))
        out.append(_write_row("SC", [section.count]))
    out.extend(_footer("RF", report))
    out.append(_write_row("RC", [report.count]))
    out.append(_write_row("FF", [report.count]))
    return ("\n".join(out) + "\n").encode(encoding)
