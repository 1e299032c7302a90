"""Braintree settlement files -> canonical settlement lines (and control totals).

Two kinds of file, told apart by their content:

- Transaction Level Fee Report (TLFR) CSV, one row per settled sale or credit, in the
  flat-rate ("discount", 28 columns, `Total Fee Amount`) or the interchange-plus layout (32
  columns, `Est. Total Fee Amount`). Formats "braintree.tlfr_flat" and "braintree.tlfr_icplus".
- Settlement batch summary JSON (the API's `records`), which itemizes nothing: it becomes
  `ControlTotal`s, checked against TLFR lines by `check_controls`. Format
  "braintree.settlement_batch_summary_json".

Conventions (TLFR, both layouts; columns are found by header name, never by position):

- category: Transaction Type `sale` -> charge, `credit` -> refund (case-insensitive). Any other
  value is a SettlementFileError: the vendor documents only these two for this report (the
  field docs speak of "sale" rows and "if Transaction Type is credit"); disputes are not rows.
- currency / gross_minor: Settlement Currency / Settlement Amount (major units). A sale is
  money in (gross >= 0; a negative sale amount is an error). A credit is money out: the file
  is read as either the magnitude or a negative number (the vendor does not document the sign)
  and gross = -|Settlement Amount|; the renderer writes credits as positive magnitudes.
- fee_minor: Total Fee Amount (flat) / Est. Total Fee Amount (IC+), exact, as signed in the
  file (negative = fees given back). More decimals than the currency has is an error, never
  rounded. net = gross - fee.
- gateway_reference: Transaction ID for a sale; Original Transaction ID for a credit (None if
  empty). modification_reference: None for a sale; Transaction ID for a credit.
- merchant_reference: Order ID (None if empty).
- occurred_at: Settlement Date at 00:00 UTC (the report has dates only).
- available_on: Disbursement Date (required).
- batch_id: f"{Disbursement Date ISO}/{Merchant Account ID}", e.g. "2018-03-06/ACME-anvils".
- presentment: only when Presentment Currency is given and differs from Settlement Currency:
  presentment_currency = Presentment Currency, exchange_rate = Exchange Rate (exact string),
  presentment_amount_minor = Original Sale Amount (flat layout only, signed like gross; None
  when empty, and always None in IC+, which has no such column). Same currency: all three None
  (the `1.00` rate the vendor writes then is ignored).
- line_id: unique_line_ids over (Transaction ID, Transaction Type, Disbursement Date).
- Not carried: card/bank/ARN/interchange-description columns, Refunded Amount, Refund Type,
  and any category other than charge/refund. The TLFR has no payout rows, so batch_findings
  finds nothing (batches do not net to zero by design).
- Fee sanity checks (whole file rejected when they fail):
  flat sale rows: |Total Fee Amount - (|Settlement Amount| x Discount + Per Transaction Fee +
  Multicurrency Fee Amount)| < 1 minor unit (the vendor truncates the percentage part to the
  cent; Discount is a rate, 0.0185 = 1.85%). IC+ rows: Est. Total Fee Amount = Est. Interchange
  Total Amount + Braintree Total Amount exactly; IC+ sale rows also: Braintree Total Amount
  within 1 minor unit of |amount| x Discount + Per Transaction Fee, and Est. Interchange Total
  Amount within 1 minor unit of |amount| x Est. Interchange Rate + Est. Interchange Fixed / 100
  (Fixed is in cents), unless Interchange Currency differs from the settlement currency.
  Credit rows are not checked against their parts (how the *Credit columns combine on a
  refund is not documented). A check runs only when its columns are present and non-empty.
- Lines render_tlfr can carry (else ValueError): gateway "braintree", category charge (gross
  >= 0, gateway_reference set, no modification_reference) or refund (gross <= 0,
  modification_reference set), occurred_at at midnight UTC, available_on set and batch_id
  f"{available_on}/{merchant account}", no empty-string references, presentment_currency
  either None (with amount and rate None) or different from currency; presentment amount
  only in the flat layout, signed like the category; exchange_rate a canonical decimal string.
- Renderer: Discount and rates written as 0, Per Transaction Fee (= Braintree Total Amount in
  IC+) carries the whole fee, so parts add up to the total exactly.

Conventions (settlement batch summary JSON):

- {"settlement_date": "YYYY-MM-DD", "records": [...]} or a bare list of records, in which case
  the settlement date must be in the file name (e.g. settlement_batch_summary_2026-10-05.json).
  Keys snake_case or camelCase (merchant_account_id / merchantAccountId, amount_settled /
  amountSettled, settlementDate). Values are strings (numbers are accepted; floats are read
  exactly as written).
- Errors inside a record give as `line` the record's 1-based position in the list (the same
  numbering as source_row); JSON syntax errors give the physical line.
- Each record -> ControlTotal(batch_id=f"{settlement_date}/{merchant_account_id}", kind=sale |
  credit (other kinds are an error), amount=amount_settled exact, currency=None,
  count=int(count), source_row = 1-based position in the list). card_type and custom fields
  are not carried.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation, localcontext
from typing import Final, Literal

from tieout.connectors.settlements.base import (
    Category,
    ControlTotal,
    Finding,
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
    parse_date,
    read_table,
)
from tieout.money import exponent, minor_to_decimal

GATEWAY: Final = "braintree"
FORMAT_FLAT: Final = "braintree.tlfr_flat"
FORMAT_ICPLUS: Final = "braintree.tlfr_icplus"
FORMAT_SUMMARY: Final = "braintree.settlement_batch_summary_json"
FORMATS: Final[tuple[str, ...]] = (FORMAT_FLAT, FORMAT_ICPLUS, FORMAT_SUMMARY)

#: Headers exactly as Braintree publishes them (its SDK test fixtures).
FLAT_HEADER: Final[tuple[str, ...]] = (
    "Merchant Account ID",
    "Transaction ID",
    "Original Transaction ID",
    "Transaction Type",
    "Presentment Currency",
    "Original Sale Amount",
    "Settlement Currency",
    "Settlement Amount",
    "Settlement Date",
    "Disbursement Date",
    "Payment Instrument",
    "Card Brand",
    "Card Type",
    "First 6 of CC",
    "Issuing Bank",
    "Refunded Amount",
    "Refund Type",
    "Exchange Rate",
    "Order ID",
    "Acquirer Reference Number",
    "Card Issuing Country",
    "Discount",
    "Discount Credit",
    "Per Transaction Fee",
    "Per Transaction Fee Credit",
    "Multicurrency Fee Amount",
    "Multicurrency Fee Credit",
    "Total Fee Amount",
)
ICPLUS_HEADER: Final[tuple[str, ...]] = (
    "Merchant Account ID",
    "Transaction ID",
    "Original Transaction ID",
    "Transaction Type",
    "Presentment Currency",
    "Settlement Currency",
    "Settlement Amount",
    "Settlement Date",
    "Disbursement Date",
    "Payment Instrument",
    "Card Brand",
    "Card Type",
    "First 6 of CC",
    "Issuing Bank",
    "Interchange Description",
    "Interchange Currency",
    "Refunded Amount",
    "Est. Interchange Rate",
    "Est. Interchange Rate Credit",
    "Est. Interchange Fixed",
    "Est. Interchange Fixed Credit",
    "Est. Interchange Total Amount",
    "Exchange Rate",
    "Order ID",
    "Acquirer Reference Number",
    "Card Issuing Country",
    "Discount",
    "Discount Credit",
    "Per Transaction Fee",
    "Per Transaction Fee Credit",
    "Braintree Total Amount",
    "Est. Total Fee Amount",
)

_COMMON_REQUIRED: Final = (
    "Merchant Account ID",
    "Transaction ID",
    "Original Transaction ID",
    "Transaction Type",
    "Presentment Currency",
    "Settlement Currency",
    "Settlement Amount",
    "Settlement Date",
    "Disbursement Date",
    "Exchange Rate",
    "Order ID",
)
_FLAT_REQUIRED: Final = (*_COMMON_REQUIRED, "Original Sale Amount", "Total Fee Amount")
_ICPLUS_REQUIRED: Final = (*_COMMON_REQUIRED, "Est. Total Fee Amount")

_TYPES: Final[Mapping[str, Category]] = {"sale": "charge", "credit": "refund"}
_KINDS: Final[tuple[str, ...]] = ("sale", "credit")
_DATE_IN_NAME: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")

Layout = Literal["flat", "icplus"]


# --------------------------------------------------------------------------------------------
# parse


def parse(data: bytes, file: str) -> ParsedFile:
    """Parse a Braintree TLFR CSV (either layout) or a settlement batch summary JSON."""
    text = decode_text(data, file)
    if text.lstrip()[:1] in ("{", "["):
        return _parse_summary(text, file)
    return _parse_tlfr(text, file)


def _parse_tlfr(text: str, file: str) -> ParsedFile:
    records = list(csv_records(text, file))
    if not records:
        raise SettlementFileError(
            "the file has no header row (only blank lines)",
            file=file,
            line=1,
            fix="re-download the report",
        )
    header_line, header = records[0]
    names = {norm_header(h) for h in header}
    if not {"merchant account id", "transaction id", "transaction type"} <= names:
        raise SettlementFileError(
            "not a Braintree Transaction Level Fee Report: the first row is not its header "
            "(Merchant Account ID, Transaction ID, Transaction Type, ...)",
            file=file,
            line=header_line,
            fix="download the Transaction Level Fee Report CSV (or the settlement batch summary "
            "JSON) from Braintree",
        )
    icplus = bool({"est. total fee amount", "est. interchange total amount"} & names)
    body = records[1:]
    for line, fields in body:
        if len(fields) < len(header):
            raise SettlementFileError(
                f"{len(fields)} fields but the header has {len(header)}: the row is cut short",
                file=file,
                line=line,
                fix="the file may be truncated; re-download the report",
            )
    rows = read_table(
        body, header, header_line, file, _ICPLUS_REQUIRED if icplus else _FLAT_REQUIRED
    )
    parsed = [_tlfr_row(row, file, icplus) for row in rows]
    ids = unique_line_ids(GATEWAY, [key for key, _ in parsed])
    lines = tuple(
        _line(line_id=line_id, source_file=file, **fields)
        for line_id, (_, fields) in zip(ids, parsed, strict=True)
    )
    return ParsedFile(
        gateway=GATEWAY,
        format=FORMAT_ICPLUS if icplus else FORMAT_FLAT,
        lines=lines,
        findings=tuple(batch_findings(lines, file)),
    )


def _line(**kwargs: object) -> SettlementLine:
    return SettlementLine(gateway=GATEWAY, **kwargs)  # type: ignore[arg-type]


def _required(row: Row, column: str, file: str) -> str:
    value = row.get(column)
    if not value:
        raise SettlementFileError(f"column {column} is empty", file=file, line=row.line)
    return value


def _rate(row: Row, column: str, file: str) -> Decimal | None:
    """A rate or amount used only for the fee sanity checks (None when absent/empty)."""
    text = exact_decimal(row.get(column), file, row.line, column)
    return None if text is None else Decimal(text)


def _tlfr_row(row: Row, file: str, icplus: bool) -> tuple[tuple[object, ...], dict[str, object]]:
    ln = row.line
    merchant = _required(row, "Merchant Account ID", file)
    txn_id = _required(row, "Transaction ID", file)
    raw_type = _required(row, "Transaction Type", file)
    ttype = raw_type.lower()
    if ttype not in _TYPES:
        raise SettlementFileError(
            f"unknown Transaction Type {raw_type!r} (expected sale or credit)",
            file=file,
            line=ln,
            fix="only sales and credits appear in a Transaction Level Fee Report",
        )
    category = _TYPES[ttype]
    cur = currency(_required(row, "Settlement Currency", file), file, ln, "Settlement Currency")
    amount_text = _required(row, "Settlement Amount", file)
    amount = major_to_minor(amount_text, cur, file, ln, "Settlement Amount")
    if category == "charge":
        if amount < 0:
            raise SettlementFileError(
                f"column Settlement Amount: a sale of {amount_text} is negative",
                file=file,
                line=ln,
            )
        gross = amount
    else:
        gross = -abs(amount)
    fee_column = "Est. Total Fee Amount" if icplus else "Total Fee Amount"
    fee_text = _required(row, fee_column, file)
    fee = major_to_minor(fee_text, cur, file, ln, fee_column)
    settled = parse_date(_required(row, "Settlement Date", file), file, ln, "Settlement Date")
    disbursed = parse_date(_required(row, "Disbursement Date", file), file, ln, "Disbursement Date")

    rate_text = exact_decimal(row.get("Exchange Rate"), file, ln, "Exchange Rate")
    p_cur: str | None = None
    p_amount: int | None = None
    p_rate: str | None = None
    if row.get("Presentment Currency"):
        pc = currency(row.get("Presentment Currency"), file, ln, "Presentment Currency")
        if pc != cur:
            p_cur, p_rate = pc, rate_text
            sale_text = "" if icplus else row.get("Original Sale Amount")
            if sale_text:
                p = major_to_minor(sale_text, pc, file, ln, "Original Sale Amount")
                p_amount = abs(p) if category == "charge" else -abs(p)

    if icplus:
        _check_icplus_fees(row, file, cur, category, abs(amount), fee)
    elif category == "charge":
        _check_flat_fees(row, file, cur, abs(amount), fee)

    if category == "charge":
        gateway_ref: str | None = txn_id
        modification_ref: str | None = None
    else:
        gateway_ref = row.get("Original Transaction ID") or None
        modification_ref = txn_id
    fields: dict[str, object] = {
        "batch_id": f"{disbursed.isoformat()}/{merchant}",
        "category": category,
        "gateway_reference": gateway_ref,
        "modification_reference": modification_ref,
        "merchant_reference": row.get("Order ID") or None,
        "occurred_at": datetime.combine(settled, time(0), UTC),
        "available_on": disbursed,
        "currency": cur,
        "gross_minor": gross,
        "fee_minor": fee,
        "net_minor": gross - fee,
        "presentment_currency": p_cur,
        "presentment_amount_minor": p_amount,
        "exchange_rate": p_rate,
        "source_row": ln,
    }
    return (txn_id, ttype, disbursed.isoformat()), fields


def _near(total_minor: int, expected: Decimal, cur: str) -> bool:
    """True when a stated total is within one minor unit of its exact computed value."""
    with localcontext() as ctx:
        ctx.prec = 60
        diff = abs(minor_to_decimal(total_minor, cur) - expected)
        return diff < Decimal(1).scaleb(-exponent(cur))


def _fee_error(message: str, row: Row, file: str) -> SettlementFileError:
    return SettlementFileError(
        message,
        file=file,
        line=row.line,
        fix="the fee columns disagree with each other; the file is corrupt or edited",
    )


def _check_flat_fees(row: Row, file: str, cur: str, magnitude: int, fee: int) -> None:
    discount = _rate(row, "Discount", file)
    per_txn = _rate(row, "Per Transaction Fee", file)
    if discount is None or per_txn is None:
        return
    multi = _rate(row, "Multicurrency Fee Amount", file) or Decimal(0)
    with localcontext() as ctx:
        ctx.prec = 60
        expected = minor_to_decimal(magnitude, cur) * discount + per_txn + multi
    if not _near(fee, expected, cur):
        raise _fee_error(
            f"Total Fee Amount {minor_to_decimal(fee, cur)} is not Settlement Amount x Discount "
            f"+ Per Transaction Fee + Multicurrency Fee Amount ({expected})",
            row,
            file,
        )


def _check_icplus_fees(
    row: Row, file: str, cur: str, category: str, magnitude: int, fee: int
) -> None:
    ln = row.line
    ic_text = row.get("Est. Interchange Total Amount")
    bt_text = row.get("Braintree Total Amount")
    if ic_text and bt_text:
        ic = major_to_minor(ic_text, cur, file, ln, "Est. Interchange Total Amount")
        bt = major_to_minor(bt_text, cur, file, ln, "Braintree Total Amount")
        if ic + bt != fee:
            raise _fee_error(
                f"Est. Total Fee Amount {minor_to_decimal(fee, cur)} is not Est. Interchange "
                f"Total Amount {ic_text} + Braintree Total Amount {bt_text}",
                row,
                file,
            )
    if category != "charge":
        return
    base = minor_to_decimal(magnitude, cur)
    discount = _rate(row, "Discount", file)
    per_txn = _rate(row, "Per Transaction Fee", file)
    if bt_text and discount is not None and per_txn is not None:
        bt = major_to_minor(bt_text, cur, file, ln, "Braintree Total Amount")
        with localcontext() as ctx:
            ctx.prec = 60
            expected = base * discount + per_txn
        if not _near(bt, expected, cur):
            raise _fee_error(
                f"Braintree Total Amount {bt_text} is not Settlement Amount x Discount + "
                f"Per Transaction Fee ({expected})",
                row,
                file,
            )
    ic_cur = row.get("Interchange Currency")
    if ic_cur and ic_cur.upper() != cur:
        return
    ic_rate = _rate(row, "Est. Interchange Rate", file)
    ic_fixed = _rate(row, "Est. Interchange Fixed", file)
    if ic_text and ic_rate is not None and ic_fixed is not None:
        ic = major_to_minor(ic_text, cur, file, ln, "Est. Interchange Total Amount")
        with localcontext() as ctx:
            ctx.prec = 60
            expected = base * ic_rate + ic_fixed / 100
        if not _near(ic, expected, cur):
            raise _fee_error(
                f"Est. Interchange Total Amount {ic_text} is not Settlement Amount x Est. "
                f"Interchange Rate + Est. Interchange Fixed (cents) / 100 ({expected})",
                row,
                file,
            )


# --------------------------------------------------------------------------------------------
# settlement batch summary JSON


def _parse_summary(text: str, file: str) -> ParsedFile:
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)
    except RecursionError:
        raise SettlementFileError(
            "not valid JSON: nested too deeply", file=file, line=1, fix="re-download the file"
        ) from None
    except json.JSONDecodeError as exc:
        raise SettlementFileError(
            f"not valid JSON: {exc.msg}",
            file=file,
            line=exc.lineno,
            fix="the file may be truncated; re-download the settlement batch summary",
        ) from None
    settlement_date: str | None = None
    if isinstance(doc, dict):
        raw_date = doc.get("settlement_date", doc.get("settlementDate"))
        records = doc.get("records")
        if not isinstance(raw_date, str) or not isinstance(records, list):
            raise SettlementFileError(
                "a settlement batch summary object needs a settlement_date string and a "
                "records list",
                file=file,
                line=1,
                fix="give {'settlement_date': 'YYYY-MM-DD', 'records': [...]} or a bare list",
            )
        settlement_date = parse_date(raw_date, file, 1, "settlement_date").isoformat()
        if len(raw_date.strip()) != 10:
            raise SettlementFileError(
                f"settlement_date {raw_date!r} is not YYYY-MM-DD", file=file, line=1
            )
    elif isinstance(doc, list):
        records = doc
        found = _DATE_IN_NAME.findall(file.replace("\\", "/").rsplit("/", 1)[-1])
        if not found:
            raise SettlementFileError(
                "a bare list of settlement batch summary records has no settlement date, and "
                "the file name has none (YYYY-MM-DD)",
                file=file,
                fix="name the file like settlement_batch_summary_2026-10-05.json or wrap it as "
                "{'settlement_date': ..., 'records': [...]}",
            )
        settlement_date = parse_date(found[-1], file, 1, "file name").isoformat()
    else:
        raise SettlementFileError(
            "not a Braintree settlement batch summary (expected a JSON object or list)",
            file=file,
            line=1,
        )
    controls = tuple(
        _control(rec, i, settlement_date, file) for i, rec in enumerate(records, start=1)
    )
    return ParsedFile(gateway=GATEWAY, format=FORMAT_SUMMARY, lines=(), controls=controls)


def _field(rec: Mapping[str, object], snake: str, position: int, file: str) -> str:
    parts = snake.split("_")
    camel = parts[0] + "".join(p.title() for p in parts[1:])
    value = rec.get(snake, rec.get(camel))
    if not isinstance(value, str) or not value.strip():
        raise SettlementFileError(
            f"record {position}: {snake} is missing or empty",
            file=file,
            line=position,
            fix="each record needs merchant_account_id, kind, amount_settled and count",
        )
    return value.strip()


def _control(rec: object, position: int, settlement_date: str, file: str) -> ControlTotal:
    # For JSON the "line" in errors is the record's 1-based position in the list.
    if not isinstance(rec, dict):
        raise SettlementFileError(
            f"record {position} is not a JSON object", file=file, line=position
        )
    merchant = _field(rec, "merchant_account_id", position, file)
    kind = _field(rec, "kind", position, file).lower()
    if kind not in _KINDS:
        raise SettlementFileError(
            f"record {position}: unknown kind {kind!r} (expected sale or credit)",
            file=file,
            line=position,
        )
    amount_text = _field(rec, "amount_settled", position, file)
    try:
        amount = Decimal(amount_text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", amount_text):
        raise SettlementFileError(
            f"record {position}: amount_settled {amount_text!r} is not a decimal amount",
            file=file,
            line=position,
        )
    count_text = _field(rec, "count", position, file)
    if not re.fullmatch(r"[0-9]{1,12}", count_text):
        raise SettlementFileError(
            f"record {position}: count {count_text!r} is not a whole number",
            file=file,
            line=position,
        )
    return ControlTotal(
        gateway=GATEWAY,
        batch_id=f"{settlement_date}/{merchant}",
        kind=kind,
        amount=amount_text,
        currency=None,
        count=int(count_text),
        source_file=file,
        source_row=position,
    )


def check_controls(
    controls: Sequence[ControlTotal], lines: Sequence[SettlementLine]
) -> list[Finding]:
    """Compare summary totals with the TLFR lines of the same settlement date, merchant account
    and kind (sale = charge lines, credit = refund lines; amount = sum of |gross|, count).

    Only settlement dates some control covers are compared (a summary covers one whole date),
    so lines of other dates are out of scope. One finding per differing (date, account, kind),
    including lines without a control and controls without lines.
    """
    covered = {c.batch_id.split("/", 1)[0] for c in controls}
    want_amount: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    want_count: dict[tuple[str, str], int] = defaultdict(int)
    places: dict[tuple[str, str], int] = {}
    sources: dict[tuple[str, str], str] = {}
    for c in controls:
        key = (c.batch_id, c.kind.lower())
        amount = abs(Decimal(c.amount))
        want_amount[key] += amount
        want_count[key] += c.count or 0
        exp = amount.as_tuple().exponent
        places[key] = max(places.get(key, 0), -exp if isinstance(exp, int) and exp < 0 else 0)
        sources.setdefault(key, c.source_file)
    have_minor: dict[tuple[str, str], int] = defaultdict(int)
    have_count: dict[tuple[str, str], int] = defaultdict(int)
    currencies: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in lines:
        day = line.occurred_at.date().isoformat()
        kind = {"charge": "sale", "refund": "credit"}.get(line.category)
        if line.gateway != GATEWAY or day not in covered or kind is None:
            continue
        merchant = line.batch_id.split("/", 1)[-1]
        key = (f"{day}/{merchant}", kind)
        have_minor[key] += abs(line.gross_minor)
        have_count[key] += 1
        currencies[key].add(line.currency)
        sources.setdefault(key, line.source_file)
    findings = []
    for key in sorted(set(want_amount) | set(have_minor)):
        batch, kind = key
        curs = currencies.get(key, set())
        cur = next(iter(curs)) if len(curs) == 1 else ""
        exp = exponent(cur) if cur else places.get(key, 2)
        expected = _to_minor(want_amount.get(key, Decimal(0)), exp)
        actual = have_minor.get(key, 0)
        n_want, n_have = want_count.get(key, 0), have_count.get(key, 0)
        if len(curs) > 1:
            problem = f"its lines are in several currencies ({', '.join(sorted(curs))})"
        elif key not in want_amount:
            problem = f"{n_have} {kind} line(s) but the summary has no {kind} record"
        elif key not in have_minor:
            if expected == 0 and n_want == 0:
                continue  # a zero total with nothing behind it agrees
            problem = f"the summary has {n_want} {kind}(s) but no lines were loaded"
        elif expected != actual or n_want != n_have:
            problem = (
                f"the summary states {n_want} {kind}(s) for {want_amount[key]}, the lines add up "
                f"to {n_have} for {_from_minor(actual, exp)}"
            )
        else:
            continue
        findings.append(
            Finding(
                gateway=GATEWAY,
                kind="control_mismatch",
                batch_id=batch,
                currency=cur,
                expected_minor=expected,
                actual_minor=actual,
                source_file=sources[key],
                message=f"settlement {batch} ({kind}): {problem}",
            )
        )
    return findings


def _to_minor(amount: Decimal, exp: int) -> int:
    """Major units to minor at `exp` places (a control amount has no currency of its own)."""
    with localcontext() as ctx:
        ctx.prec = 60
        return int(amount.scaleb(exp).to_integral_value())


def _from_minor(amount: int, exp: int) -> Decimal:
    return Decimal(amount).scaleb(-exp)


# --------------------------------------------------------------------------------------------
# renderers


def _merchant_of(line: SettlementLine) -> str:
    if line.available_on is None:
        raise ValueError(f"{line.line_id}: a TLFR line needs available_on (Disbursement Date)")
    prefix = f"{line.available_on.isoformat()}/"
    if not line.batch_id.startswith(prefix) or len(line.batch_id) == len(prefix):
        raise ValueError(
            f"{line.line_id}: batch_id {line.batch_id!r} is not "
            f"'<available_on>/<Merchant Account ID>'"
        )
    return line.batch_id[len(prefix) :]


def _check_renderable(line: SettlementLine, layout: Layout) -> None:
    problems = []
    if line.gateway != GATEWAY:
        problems.append(f"gateway {line.gateway!r}")
    if line.category == "charge":
        if not line.gateway_reference or line.modification_reference is not None:
            problems.append("a charge needs gateway_reference and no modification_reference")
        if line.gross_minor < 0:
            problems.append("a charge cannot have negative gross")
    elif line.category == "refund":
        if not line.modification_reference:
            problems.append("a refund needs modification_reference (its Transaction ID)")
        if line.gross_minor > 0:
            problems.append("a refund cannot have positive gross")
    else:
        problems.append(f"category {line.category!r} (only charge and refund)")
    if line.occurred_at.timetz() != time(0, tzinfo=line.occurred_at.tzinfo):
        problems.append("occurred_at must be midnight UTC (the file has dates only)")
    if line.merchant_reference == "" or line.gateway_reference == "":
        problems.append("empty strings read back as None")
    if line.presentment_currency is None:
        if line.presentment_amount_minor is not None or line.exchange_rate is not None:
            problems.append("presentment amount/rate without presentment_currency")
    else:
        if line.presentment_currency == line.currency:
            problems.append("presentment_currency equal to currency reads back as None")
        if line.presentment_amount_minor is not None:
            if layout == "icplus":
                problems.append("the IC+ layout has no presentment amount column")
            elif line.gross_minor and (line.presentment_amount_minor < 0) != (line.gross_minor < 0):
                problems.append("presentment amount must be signed like gross")
            elif line.presentment_amount_minor and (
                (line.presentment_amount_minor < 0) != (line.category == "refund")
            ):
                problems.append("presentment amount must be signed like the category")
        if line.exchange_rate is not None and str(Decimal(line.exchange_rate)) != (
            line.exchange_rate
        ):
            problems.append(f"exchange_rate {line.exchange_rate!r} is not a canonical decimal")
    if problems:
        raise ValueError(f"{line.line_id}: cannot be written as a TLFR row: {'; '.join(problems)}")


def render_tlfr(lines: Sequence[SettlementLine], layout: Layout = "flat") -> bytes:
    """A Transaction Level Fee Report CSV (vendor header, UTF-8, \\n) with one row per line.

    Credits are written as positive magnitudes; the whole fee goes in Per Transaction Fee
    (Discount and interchange rates 0) so every fee check holds exactly.
    """
    if layout not in ("flat", "icplus"):
        raise ValueError(f"layout must be 'flat' or 'icplus', got {layout!r}")
    header = FLAT_HEADER if layout == "flat" else ICPLUS_HEADER
    rows: list[list[object]] = [list(header)]
    for line in lines:
        _check_renderable(line, layout)
        merchant = _merchant_of(line)
        cur = line.currency
        refund = line.category == "refund"
        fee = str(minor_to_decimal(line.fee_minor, cur))
        zero = str(minor_to_decimal(0, cur))
        p_cur = line.presentment_currency or cur
        rate = "1.00" if line.presentment_currency is None else (line.exchange_rate or "")
        original = ""
        if line.presentment_currency and line.presentment_amount_minor is not None:
            original = str(minor_to_decimal(abs(line.presentment_amount_minor), p_cur))
        values: dict[str, object] = {
            "Merchant Account ID": merchant,
            "Transaction ID": line.modification_reference if refund else line.gateway_reference,
            "Original Transaction ID": line.gateway_reference if refund else "",
            "Transaction Type": "credit" if refund else "sale",
            "Presentment Currency": p_cur,
            "Original Sale Amount": original,
            "Settlement Currency": cur,
            "Settlement Amount": str(minor_to_decimal(abs(line.gross_minor), cur)),
            "Settlement Date": line.occurred_at.date().isoformat(),
            "Disbursement Date": line.available_on.isoformat() if line.available_on else "",
            "Payment Instrument": "credit_card",
            "Refunded Amount": zero,
            "Exchange Rate": rate,
            "Order ID": line.merchant_reference or "",
            "Discount": "0",
            "Discount Credit": "0",
            "Per Transaction Fee": zero if refund else fee,
            "Per Transaction Fee Credit": zero,
            "Multicurrency Fee Amount": zero,
            "Multicurrency Fee Credit": zero,
            "Total Fee Amount": fee,
            "Interchange Currency": cur,
            "Est. Interchange Rate": "0",
            "Est. Interchange Rate Credit": zero,
            "Est. Interchange Fixed": "0.0",
            "Est. Interchange Fixed Credit": zero,
            "Est. Interchange Total Amount": zero,
            "Braintree Total Amount": fee,
            "Est. Total Fee Amount": fee,
        }
        rows.append([values.get(name, "") for name in header])
    return csv_text(rows).encode("utf-8")


def render_tlfr_flat(lines: Sequence[SettlementLine]) -> bytes:
    """The flat-rate ("discount") layout; see render_tlfr."""
    return render_tlfr(lines, layout="flat")


def render_tlfr_icplus(lines: Sequence[SettlementLine]) -> bytes:
    """The interchange-plus layout; see render_tlfr."""
    return render_tlfr(lines, layout="icplus")


def render_batch_summary(settlement_date: date | str, controls: Sequence[ControlTotal]) -> bytes:
    """A settlement batch summary JSON ({"settlement_date", "records"}) for `controls`, whose
    batch_id must be f"{settlement_date}/{merchant_account_id}" and count set."""
    day = settlement_date if isinstance(settlement_date, str) else settlement_date.isoformat()
    records = []
    for c in controls:
        prefix = f"{day}/"
        if not c.batch_id.startswith(prefix) or c.count is None or c.kind not in _KINDS:
            raise ValueError(
                f"control {c.batch_id!r}/{c.kind!r} does not fit a summary for {day} "
                "(batch_id '<date>/<merchant>', kind sale|credit, count set)"
            )
        records.append(
            {
                "merchant_account_id": c.batch_id[len(prefix) :],
                "kind": c.kind,
                "count": str(c.count),
                "amount_settled": c.amount,
            }
        )
    doc = {"settlement_date": day, "records": records}
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


__all__ = [
    "FORMATS",
    "check_controls",
    "parse",
    "render_batch_summary",
    "render_tlfr",
    "render_tlfr_flat",
    "render_tlfr_icplus",
]
