"""Adyen Settlement details report (SDR) -> canonical settlement lines, and back.

One SDR covers one merchant account's payable batch: every journal row booked in the batch
(captures, refunds, chargebacks, fees, corrections) plus the MerchantPayout row that empties it.
Columns are read by header name (Adyen adds columns without notice): the standard 30-column
header, the 30 + `Merchant Order Reference` header and the wide 2025-era header all parse.

Amounts. Adyen states each amount as a positive number in a Debit or a Credit column:
net = Net Credit (NC) - Net Debit (NC), in the settlement (net) currency. For transaction rows the
cost is fee = Commission + Markup + Scheme Fees + Interchange (NC) and gross = net + fee; the
format's own arithmetic is checked on every row that states a gross amount:
(Gross Credit (GC) - Gross Debit (GC)) x Exchange Rate, rounded half-up to the net currency's
minor unit, must equal net + fee (exactly, when gross and net currency are the same). Rows of fee
types (Fee, MiscCosts, PaymentCost, ...) are a cost as a whole: gross 0, fee = -net.

Conventions (what the renderer writes and the parser reads back):
- Type per category. Parse: Settled -> charge; Refunded, RefundedReversed -> refund; Chargeback,
  SecondChargeback -> chargeback; ChargebackReversed -> chargeback_reversal; Fee, MiscCosts,
  InvoiceDeduction, PaymentCost, AuthorisationSchemeFee, SettleCost -> fee; MerchantPayout,
  PaidOut, BPPaidOut, AcquirerPayout -> payout; BankInstructionReturned, PaidOutReversed ->
  payout_reversal; DepositCorrection, ManualCorrected, ReserveAdjustment -> adjustment;
  Balancetransfer, MatchedStatement, InternalCompanyPayout -> transfer; SettledExternally,
  RefundedExternally, ChargebackExternally, *ExternallyWithInfo, EpaPaid -> other.
  Render: charge Settled; refund Refunded (RefundedReversed when gross > 0); chargeback
  Chargeback; chargeback_reversal ChargebackReversed; fee PaymentCost when gateway_reference is
  set, else Fee; payout MerchantPayout; payout_reversal BankInstructionReturned; adjustment
  DepositCorrection; transfer Balancetransfer; other SettledExternally when gateway_reference is
  set, else EpaPaid.
- gateway_reference <- Psp Reference (any row; empty -> None). merchant_reference <- Merchant
  Reference (empty -> None; `Merchant Order Reference` is not read).
- modification_reference <- Modification Reference on transaction-level types (Settled,
  Refunded*, Chargeback*, *Externally*, PaymentCost, AuthorisationSchemeFee, SettleCost,
  BPPaidOut). On batch-level types (Fee, MiscCosts, MerchantPayout, DepositCorrection, ...) the
  column is free text (a description): modification_reference is None and the text only feeds
  the line id. The renderer writes a description there for batch-level lines.
- Amounts: non-fee categories write net in Net Debit/Net Credit by sign, fee in Commission (NC)
  (empty when 0), and on transaction-level types the gross in Gross Debit/Gross Credit (GC): the
  presentment amount in the presentment currency with the line's exchange_rate when the line has
  FX, else the gross in the settlement currency with rate 1. Batch-level non-fee types leave the
  gross columns empty (gross = net + fee). Fee category: net only, gross columns empty.
- presentment_currency/_amount_minor/exchange_rate <- Gross Currency / Gross Credit - Gross
  Debit (GC) / Exchange Rate, only when Gross Currency differs from Net Currency and a gross
  amount is stated (never on fee rows); else all three None.
- occurred_at <- Creation Date read in the row's TimeZone (an abbreviation mapped to a fixed
  UTC offset, or GMT+hh:mm); whole seconds only. available_on: always None (not in the format).
- batch_id <- Batch Number (required on every row; the payout batch the row is booked in).
- line_id <- Merchant Account, Psp Reference, Type, Modification Reference, Batch Number, plus
  for batch-level rows the Creation Date (UTC) and net amount; repeats get unique_line_ids.
- Cannot carry: available_on; a fee line with gross != 0 or with FX; a batch-level line with a
  modification_reference; presentment in the settlement currency; sub-second timestamps;
  references with surrounding whitespace. The renderer raises ValueError on such lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Final

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
    csv_text,
    currency,
    decode_text,
    exact_decimal,
    major_to_minor,
    norm_header,
    read_table,
)
from tieout.money import decimal_to_minor, minor_to_decimal

GATEWAY: Final = "adyen"
FORMAT: Final = "adyen.settlement_detail_report"
FORMATS: Final[tuple[str, ...]] = (FORMAT,)

#: The standard 30-column header, in Adyen's order.
HEADER_30: Final[tuple[str, ...]] = (
    "Company Account",
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Payment Method",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Exchange Rate",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
    "Payment Method Variant",
    "Modification Merchant Reference",
    "Batch Number",
    *(f"Reserved{i}" for i in range(4, 11)),
)
#: Columns 2025-era files append to the standard 30.
WIDE_EXTRA: Final[tuple[str, ...]] = (
    "Booking Date",
    "Booking Date TimeZone",
    "Metadata",
    "Balance Currency",
    "Net Debit (BC)",
    "Net Credit (BC)",
    "Payment Fees (NC)",
    "DCC Markup (NC)",
    "Funds Destination",
    "Balance Platform Debit",
    "Balance Platform Credit",
    "Shopper Country",
    "Clearing Network",
    "Merchant Order Reference",
    "Dispute Reference",
    "ARN",
    "Settlement Flow",
    "Authorisation Code",
    "Gross Fees (NC)",
)
HEADER_WIDE: Final[tuple[str, ...]] = HEADER_30 + WIDE_EXTRA

FEE_COLUMNS: Final = ("Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)")
REQUIRED: Final[tuple[str, ...]] = (
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Exchange Rate",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    *FEE_COLUMNS,
    "Batch Number",
)

#: Every journal type Adyen documents (and the ones production parsers have met) -> category.
TYPE_CATEGORY: Final[dict[str, Category]] = {
    "Settled": "charge",
    "Refunded": "refund",
    "RefundedReversed": "refund",  # the refund came back: positive
    "Chargeback": "chargeback",
    "SecondChargeback": "chargeback",
    "ChargebackReversed": "chargeback_reversal",
    "Fee": "fee",
    "PaymentCost": "fee",
    "AuthorisationSchemeFee": "fee",
    "SettleCost": "fee",
    "MiscCosts": "fee",  # either sign
    "InvoiceDeduction": "fee",  # either sign
    "MerchantPayout": "payout",
    "PaidOut": "payout",
    "BPPaidOut": "payout",
    "AcquirerPayout": "payout",  # external SDR: the acquirer's payout of the batch
    "BankInstructionReturned": "payout_reversal",
    "PaidOutReversed": "payout_reversal",
    "DepositCorrection": "adjustment",
    "ManualCorrected": "adjustment",
    "ReserveAdjustment": "adjustment",
    "Balancetransfer": "transfer",
    "MatchedStatement": "transfer",
    "InternalCompanyPayout": "transfer",
    "SettledExternally": "other",
    "RefundedExternally": "other",
    "ChargebackExternally": "other",
    "SettledExternallyWithInfo": "other",
    "RefundedExternallyWithInfo": "other",
    "ChargebackExternallyWithInfo": "other",
    "AdjustmentExternallyWithInfo": "other",
    "EpaPaid": "other",
}
_TYPE_BY_LOWER: Final = {t.lower(): t for t in TYPE_CATEGORY}

#: Types whose Modification Reference is the PSP reference of a modification (not free text).
TRANSACTION_TYPES: Final = frozenset(
    {
        "Settled",
        "Refunded",
        "RefundedReversed",
        "Chargeback",
        "SecondChargeback",
        "ChargebackReversed",
        "PaymentCost",
        "AuthorisationSchemeFee",
        "SettleCost",
        "BPPaidOut",
        "SettledExternally",
        "RefundedExternally",
        "ChargebackExternally",
        "SettledExternallyWithInfo",
        "RefundedExternallyWithInfo",
        "ChargebackExternallyWithInfo",
        "AdjustmentExternallyWithInfo",
    }
)
#: Types that always move a shopper payment: they must state the gross amount.
GROSS_REQUIRED: Final = frozenset(
    {
        "Settled",
        "Refunded",
        "RefundedReversed",
        "Chargeback",
        "SecondChargeback",
        "ChargebackReversed",
    }
)

#: Time zone abbreviations Adyen writes in TimeZone -> fixed UTC offset (hours, minutes).
#: Ambiguous ones follow Adyen's usage: CST/CDT are US Central, IST is India.
TIMEZONES: Final[dict[str, tuple[int, int]]] = {
    "UTC": (0, 0),
    "GMT": (0, 0),
    "Z": (0, 0),
    "WET": (0, 0),
    "WEST": (1, 0),
    "BST": (1, 0),
    "CET": (1, 0),
    "CEST": (2, 0),
    "MET": (1, 0),
    "MEST": (2, 0),
    "EET": (2, 0),
    "EEST": (3, 0),
    "SAST": (2, 0),
    "MSK": (3, 0),
    "GST": (4, 0),
    "IST": (5, 30),
    "ICT": (7, 0),
    "WIB": (7, 0),
    "SGT": (8, 0),
    "HKT": (8, 0),
    "MYT": (8, 0),
    "PHT": (8, 0),
    "AWST": (8, 0),
    "JST": (9, 0),
    "KST": (9, 0),
    "ACST": (9, 30),
    "ACDT": (10, 30),
    "AEST": (10, 0),
    "AEDT": (11, 0),
    "NZST": (12, 0),
    "NZDT": (13, 0),
    "BRT": (-3, 0),
    "BRST": (-2, 0),
    "ART": (-3, 0),
    "NST": (-3, -30),
    "NDT": (-2, -30),
    "AST": (-4, 0),
    "ADT": (-3, 0),
    "EST": (-5, 0),
    "EDT": (-4, 0),
    "CST": (-6, 0),
    "CDT": (-5, 0),
    "MST": (-7, 0),
    "MDT": (-6, 0),
    "PST": (-8, 0),
    "PDT": (-7, 0),
    "AKST": (-9, 0),
    "AKDT": (-8, 0),
    "HST": (-10, 0),
}
_OFFSET_ZONE: Final = re.compile(r"(?:UTC|GMT)([+-])([0-9]{1,2})(?::?([0-9]{2}))?")

_GROSS_COLUMNS: Final = "Gross Currency and Gross Debit (GC) or Gross Credit (GC)"
_NEW_TYPE_FIX: Final = "a new Adyen journal type; tell the tieout team"


def parse(data: bytes, file: str) -> ParsedFile:
    """Every row of a Settlement details report as a canonical line, or SettlementFileError."""
    text = decode_text(data, file)
    records = list(csv_records(text, file))
    if not records:
        raise SettlementFileError("the file is empty", file=file, fix="re-download the report")
    header_line, header = records[0]
    names = {norm_header(h) for h in header}
    if norm_header("Record Type") in names and norm_header("Type") not in names:
        raise SettlementFileError(
            "this is an Adyen Payment accounting report, not a Settlement details report",
            file=file,
            line=header_line,
            fix="download the Settlement details report (settlement_detail_report_batch_N.csv)",
        )
    rows = read_table(records[1:], header, header_line, file, REQUIRED)
    if not rows:
        raise SettlementFileError(
            "the report has a header but no rows (a batch always has at least its payout)",
            file=file,
            line=header_line,
            fix="the file may be truncated; re-download the report",
        )
    width = len(header)
    parsed: list[tuple[tuple[object, ...], SettlementLine]] = []
    for (line_no, fields), row in zip(records[1:], rows, strict=True):
        if len(fields) < width:
            raise SettlementFileError(
                f"only {len(fields)} fields but the header has {width}: the row is cut short",
                file=file,
                line=line_no,
                fix="the file looks truncated; re-download the report",
            )
        parsed.append(_parse_row(row, file))
    ids = unique_line_ids(GATEWAY, [key for key, _ in parsed])
    lines = tuple(
        replace(line, line_id=line_id) for line_id, (_, line) in zip(ids, parsed, strict=True)
    )
    return ParsedFile(
        gateway=GATEWAY,
        format=FORMAT,
        lines=lines,
        findings=tuple(batch_findings(lines, file)),
    )


def _parse_row(row: Row, file: str) -> tuple[tuple[object, ...], SettlementLine]:
    """(natural key, line without its line_id) of one row."""
    ln = row.line
    raw_type = row.get("Type")
    type_ = _TYPE_BY_LOWER.get(raw_type.lower())
    if type_ is None:
        raise SettlementFileError(
            f"unknown journal Type {raw_type!r}" if raw_type else "the Type column is empty",
            file=file,
            line=ln,
            fix=_NEW_TYPE_FIX if raw_type else "the row may be truncated; re-download the report",
        )
    category = TYPE_CATEGORY[type_]
    batch = row.get("Batch Number")
    if not batch:
        raise SettlementFileError(
            "Batch Number is empty",
            file=file,
            line=ln,
            fix="every SDR row names its payout batch; re-download the report",
        )
    occurred_at = _creation_date(row, file)
    net_cur = currency(row.get("Net Currency"), file, ln, "Net Currency")
    net = _debit_credit(row, "Net Debit (NC)", "Net Credit (NC)", net_cur, file)
    if net is None:
        raise SettlementFileError(
            "no amount in Net Debit (NC) or Net Credit (NC)",
            file=file,
            line=ln,
            fix="the row may be truncated; re-download the report",
        )
    presentment_cur: str | None = None
    presentment: int | None = None
    rate: str | None = None
    if category == "fee":  # a cost as a whole; its gross columns, if any, are not read
        gross, fee = 0, -net
    else:
        fee = sum(
            major_to_minor(row.get(c), net_cur, file, ln, c) for c in FEE_COLUMNS if row.get(c)
        )
        gross = net + fee
        presentment_cur, presentment, rate = _check_gross(row, type_, net_cur, gross, file)
    psp = row.get("Psp Reference") or None
    mod_text = row.get("Modification Reference")
    merchant_account = row.get("Merchant Account")
    key: tuple[object, ...] = (merchant_account, psp, type_, mod_text, batch)
    if type_ not in TRANSACTION_TYPES:
        key += (occurred_at.isoformat(), net_cur, net)
    line = SettlementLine(
        gateway=GATEWAY,
        line_id="",
        batch_id=batch,
        category=category,
        gateway_reference=psp,
        modification_reference=(mod_text or None) if type_ in TRANSACTION_TYPES else None,
        merchant_reference=row.get("Merchant Reference") or None,
        occurred_at=occurred_at,
        available_on=None,
        currency=net_cur,
        gross_minor=gross,
        fee_minor=fee,
        net_minor=net,
        presentment_currency=presentment_cur,
        presentment_amount_minor=presentment,
        exchange_rate=rate,
        source_file=file,
        source_row=ln,
    )
    return key, line


def _check_gross(
    row: Row, type_: str, net_cur: str, gross: int, file: str
) -> tuple[str | None, int | None, str | None]:
    """Check the stated gross against net + fees (Adyen's arithmetic) and return the
    presentment (currency, amount, rate) when the gross is in another currency."""
    ln = row.line
    gross_cur_text = row.get("Gross Currency")
    if not gross_cur_text:
        if row.get("Gross Debit (GC)") or row.get("Gross Credit (GC)") or type_ in GROSS_REQUIRED:
            needs = "its Gross Currency" if type_ not in GROSS_REQUIRED else _GROSS_COLUMNS
            raise SettlementFileError(
                f"a {type_} row needs {needs}",
                file=file,
                line=ln,
                fix="the row may be truncated; re-download the report",
            )
        return None, None, None
    gross_cur = currency(gross_cur_text, file, ln, "Gross Currency")
    stated = _debit_credit(row, "Gross Debit (GC)", "Gross Credit (GC)", gross_cur, file)
    if stated is None:
        if type_ in GROSS_REQUIRED:
            raise SettlementFileError(
                f"a {type_} row needs {_GROSS_COLUMNS}",
                file=file,
                line=ln,
                fix="the row may be truncated; re-download the report",
            )
        return None, None, None  # batch-level rows name a Gross Currency but no gross amount
    rate_text = exact_decimal(row.get("Exchange Rate"), file, ln, "Exchange Rate")
    if gross_cur == net_cur:
        expected, rate = stated, None
    else:
        if rate_text is None or Decimal(rate_text) <= 0:
            raise SettlementFileError(
                f"Gross Currency {gross_cur} differs from Net Currency {net_cur} but "
                f"Exchange Rate is {row.get('Exchange Rate')!r}",
                file=file,
                line=ln,
                fix="a converted row needs its positive exchange rate",
            )
        expected, rate = converted_minor(stated, gross_cur, rate_text, net_cur), rate_text
    if expected != gross:
        raise SettlementFileError(
            f"gross {minor_to_decimal(stated, gross_cur)} {gross_cur} x rate {rate or '1'} = "
            f"{minor_to_decimal(expected, net_cur)} {net_cur} does not equal net + fees = "
            f"{minor_to_decimal(gross, net_cur)} {net_cur}",
            file=file,
            line=ln,
            fix="the row's amounts break Adyen's arithmetic; the file may be corrupt",
        )
    if rate is None:
        return None, None, None
    return gross_cur, stated, rate


def _debit_credit(row: Row, debit: str, credit: str, cur: str, file: str) -> int | None:
    """credit - debit in minor units; None when both columns are empty."""
    d, c = row.get(debit), row.get(credit)
    if not d and not c:
        return None
    total = 0
    if c:
        total += major_to_minor(c, cur, file, row.line, credit)
    if d:
        total -= major_to_minor(d, cur, file, row.line, debit)
    return total


def converted_minor(amount_minor: int, from_cur: str, rate: str, to_cur: str) -> int:
    """amount x rate in `to_cur` minor units, rounded half-up (away from zero on ties)."""
    with localcontext() as ctx:
        ctx.prec = 200
        product = minor_to_decimal(amount_minor, from_cur) * Decimal(rate)
    return decimal_to_minor(product, to_cur, ROUND_HALF_UP)


def zone_offset(name: str) -> timedelta | None:
    """The fixed UTC offset of a TimeZone value (CET, PDT, GMT+02:00), or None if unknown."""
    t = name.strip().upper()
    if t in TIMEZONES:
        hours, minutes = TIMEZONES[t]
        return timedelta(hours=hours, minutes=minutes)
    m = _OFFSET_ZONE.fullmatch(t)
    if m is None:
        return None
    sign = -1 if m.group(1) == "-" else 1
    delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
    return sign * delta if delta <= timedelta(hours=14) else None


def _creation_date(row: Row, file: str) -> datetime:
    zone = row.get("TimeZone")
    offset = zone_offset(zone)
    if offset is None:
        raise SettlementFileError(
            f"unknown TimeZone {zone!r}" if zone else "TimeZone is empty",
            file=file,
            line=row.line,
            fix="a time zone abbreviation tieout does not know yet; tell the tieout team",
        )
    text = row.get("Creation Date")
    try:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise SettlementFileError(
            f"column Creation Date: {text!r} is not a date and time (YYYY-MM-DD HH:MM:SS)",
            file=file,
            line=row.line,
        ) from None
    return local.replace(tzinfo=timezone(offset)).astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Renderer


_RENDER_DESCRIPTION: Final[dict[str, str]] = {
    "Fee": "Transaction Fees",
    "MerchantPayout": "Payout",
    "BankInstructionReturned": "Returned payout",
    "DepositCorrection": "Deposit Correction",
    "Balancetransfer": "Balance transfer",
    "EpaPaid": "EPA paid",
}


def _render_type(line: SettlementLine) -> str:
    c = line.category
    if c == "charge":
        return "Settled"
    if c == "refund":
        return "RefundedReversed" if line.gross_minor > 0 else "Refunded"
    if c == "chargeback":
        return "Chargeback"
    if c == "chargeback_reversal":
        return "ChargebackReversed"
    if c == "fee":
        return "PaymentCost" if line.gateway_reference else "Fee"
    if c == "payout":
        return "MerchantPayout"
    if c == "payout_reversal":
        return "BankInstructionReturned"
    if c == "adjustment":
        return "DepositCorrection"
    if c == "transfer":
        return "Balancetransfer"
    return "SettledExternally" if line.gateway_reference else "EpaPaid"


def _amount_pair(amount: int, cur: str) -> tuple[str, str]:
    """(debit, credit) column texts for a signed amount; zero is written as a credit."""
    text = str(minor_to_decimal(abs(amount), cur))
    return (text, "") if amount < 0 else ("", text)


def _cannot_carry(line: SettlementLine, i: int, why: str) -> ValueError:
    return ValueError(f"line {i} ({line.line_id}): the Adyen SDR cannot carry {why}")


def render_sdr(
    lines: Sequence[SettlementLine],
    company_account: str = "TieoutCo",
    merchant_account: str = "TieoutCoCOM",
    wide: bool = False,
    timezone: str = "CET",  # shadows datetime.timezone in this function only
) -> bytes:
    """A Settlement details report holding `lines`, one row each, in order (see Conventions).

    Creation Date is written in `timezone` (an abbreviation from TIMEZONES); `wide` writes the
    2025-era header with its extra columns left empty. Raises ValueError for a line the format
    cannot carry, so the demo generator never writes a file that parses back differently.
    """
    offset = zone_offset(timezone)
    if offset is None:
        raise ValueError(f"unknown time zone {timezone!r}: use one of {', '.join(TIMEZONES)}")
    header = HEADER_WIDE if wide else HEADER_30
    out: list[list[str]] = [list(header)]
    for i, line in enumerate(lines):
        out.append(_render_row(line, i, company_account, merchant_account, timezone, offset))
        out[-1].extend([""] * (len(header) - len(out[-1])))
    return csv_text(out).encode("utf-8")


def _render_row(
    line: SettlementLine,
    i: int,
    company_account: str,
    merchant_account: str,
    zone: str,
    offset: timedelta,
) -> list[str]:
    _check_renderable(line, i)
    type_ = _render_type(line)
    cur = line.currency
    net_debit, net_credit = _amount_pair(line.net_minor, cur)
    gross_cur, gross_debit, gross_credit, rate = cur, "", "", ""
    commission = ""
    if line.category != "fee":
        commission = str(minor_to_decimal(line.fee_minor, cur)) if line.fee_minor else ""
        if line.presentment_currency is not None and line.presentment_amount_minor is not None:
            gross_cur = line.presentment_currency
            gross_debit, gross_credit = _amount_pair(line.presentment_amount_minor, gross_cur)
            rate = line.exchange_rate or ""
        elif type_ in TRANSACTION_TYPES:
            gross_debit, gross_credit = _amount_pair(line.gross_minor, cur)
            rate = "1"
    if type_ in TRANSACTION_TYPES:
        modification = line.modification_reference or ""
    else:
        modification = f"{_RENDER_DESCRIPTION[type_]} batch {line.batch_id}"
    local = line.occurred_at.astimezone(timezone(offset)).strftime("%Y-%m-%d %H:%M:%S")
    return [
        company_account,
        merchant_account,
        line.gateway_reference or "",
        line.merchant_reference or "",
        "visa" if type_ in GROSS_REQUIRED else "",
        local,
        zone,
        type_,
        modification,
        gross_cur,
        gross_debit,
        gross_credit,
        rate,
        cur,
        net_debit,
        net_credit,
        commission,
        "",
        "",
        "",
        "visaclassic" if type_ in GROSS_REQUIRED else "",
        "",
        line.batch_id,
    ]


def _check_renderable(line: SettlementLine, i: int) -> None:
    """Refuse lines that would parse back differently (see Conventions: Cannot carry)."""
    if line.gateway != GATEWAY:
        raise _cannot_carry(line, i, f"a {line.gateway!r} line")
    if line.available_on is not None:
        raise _cannot_carry(line, i, "available_on")
    if line.occurred_at.microsecond:
        raise _cannot_carry(line, i, "sub-second occurred_at")
    if not line.batch_id or line.batch_id != line.batch_id.strip():
        raise _cannot_carry(line, i, f"batch_id {line.batch_id!r}")
    for name in ("gateway_reference", "modification_reference", "merchant_reference"):
        value = getattr(line, name)
        if value is not None and (not value or value != value.strip()):
            raise _cannot_carry(line, i, f"{name} {value!r} (empty or padded)")
    fx = (line.presentment_currency, line.presentment_amount_minor, line.exchange_rate)
    has_fx = any(v is not None for v in fx)
    if line.category == "fee" and (line.gross_minor != 0 or has_fx):
        raise _cannot_carry(line, i, "a fee line with a gross amount or FX")
    if has_fx:
        cur, amount, rate = fx
        if cur is None or amount is None or rate is None:
            raise _cannot_carry(line, i, "partial presentment/exchange_rate")
        if cur == line.currency:
            raise _cannot_carry(line, i, "a presentment in the settlement currency")
        if Decimal(rate) <= 0 or converted_minor(amount, cur, rate, line.currency) != (
            line.gross_minor
        ):
            raise _cannot_carry(line, i, "a gross that is not presentment x exchange_rate")
    type_ = _render_type(line)
    if type_ not in TRANSACTION_TYPES and line.modification_reference is not None:
        raise _cannot_carry(line, i, f"a modification_reference on a batch-level {type_} line")
