"""Stripe settlement files -> canonical settlement lines, and the renderers that write them back.

Three variants, told apart by content (never by file name):

- ``stripe.itemized_csv``: the itemized balance reports ``balance_change_from_activity.itemized.*``
  and ``payout_reconciliation.itemized.*`` (also ``.by_id``); one row per balance transaction,
  header with ``balance_transaction_id`` and no ``payout_id``. Any column subset Stripe allows
  that still holds the required columns: balance_transaction_id, created_utc (or created),
  currency, gross, fee, net, reporting_category.
- ``stripe.payouts_itemized_csv``: ``payouts.itemized.*``; one row per payout (header has
  ``payout_id``). Required: payout_id, effective_at_utc (or effective_at), currency, gross, fee,
  net, reporting_category.
- ``stripe.balance_transactions_json``: what ``GET /v1/balance_transactions`` returns, either the
  list envelope ``{"object": "list", "data": [...]}`` or a bare JSON list of objects.

CSV amounts are decimal strings in major units and are converted exactly with the currency's
ISO 4217 exponent; JSON amounts are integer minor units. JSON is parsed with
``parse_float=Decimal`` so no amount or rate ever passes through a float. Every row must satisfy
net = gross - fee, or the whole file is rejected: Stripe's own arithmetic is the only check a
Stripe file carries (it has no footer, so a file cut exactly at a row end cannot be detected).

Conventions
-----------
line_id: ``make_line_id("stripe", balance_transaction_id)`` (the JSON ``id``), so the same
  balance transaction delivered in two reports gets the same id; a repeat of the same id inside
  one file gets a suffix (``unique_line_ids``). payouts.itemized without a balance_transaction_id
  column: ``make_line_id("stripe", "payout", payout_id, reporting_category)``.
category: ``reporting_category`` (JSON: ``type`` when reporting_category is absent) through
  ``REPORTING_CATEGORY_MAP`` / ``TYPE_MAP``. Renderers write charge->charge,
  refund->refund (refund_failure when net > 0), chargeback->dispute,
  chargeback_reversal->dispute_reversal, fee->fee, adjustment->other_adjustment, payout->payout,
  payout_reversal->payout_reversal, transfer->transfer (transfer_reversal when net > 0),
  other->topup (topup_reversal when net < 0); JSON also writes the matching ``type``.
occurred_at: created_utc (else ``created``, read as UTC: the file does not say its time zone);
  JSON ``created``; payouts.itemized effective_at_utc (else effective_at).
available_on: available_on_utc (else available_on) as a date; JSON ``available_on`` (unix
  time, UTC date); None when the column is absent or empty; payouts.itemized: None.
batch_id: automatic_payout_id when non-empty; else, for a payout/payout_reversal line whose
  source is a payout (``po_``), that payout id; else the available_on date (yyyy-mm-dd); else
  the created date (UTC). payouts.itemized: payout_id. JSON has no automatic_payout_id, so JSON
  batch ids always follow the fallback (payout id for the payout's own transaction, else the
  available_on date).
gateway_reference: charge_id; else payment_intent_id; for a charge line, source_id comes before
  payment_intent_id (the charge's own ch_/py_ id). JSON: for a charge, ``source`` (id);
  otherwise ``source.charge`` when the source is expanded and carries it; else None.
modification_reference: source_id for every category except charge (re_ refund, dp_/du_
  dispute, po_ payout, tr_ transfer, fee and adjustment objects); None for charges.
  payouts.itemized: payout_id. JSON: ``source`` (or ``source.id`` when expanded) likewise.
merchant_reference: invoice_id; else the first non-empty ``payment_metadata[<key>]`` column in
  header order (request the one key that holds your order reference). JSON: the expanded
  source's ``invoice`` (an id, or an object with ``id``); else None.
presentment_currency / presentment_amount_minor: CSV customer_facing_currency /
  customer_facing_amount (major units of that currency) when both are present and the currency
  differs from ``currency``; the amount is signed like gross (a positive amount on a
  negative-gross line is negated, since Stripe may state it unsigned). JSON: the expanded
  source's ``currency`` / ``amount`` (Stripe objects state positive amounts; negated when gross
  is negative).
exchange_rate: CSV: None (the itemized reports have no rate column). JSON: ``exchange_rate``
  as the exact decimal string of the JSON number.
amounts: gross/fee/net from gross/fee/net (JSON amount/fee/net), except fee lines (fee,
  network_cost, tax): Stripe states them as amount -cost, fee 0; canonical is gross 0,
  fee = stated fee - stated gross, net unchanged; the renderers write a fee line back as
  amount = net, fee 0 (so a fee line must have gross 0 to round-trip). CSV amounts may use
  ``,`` as the decimal separator (reports run with decimal_separator=',').
findings: batch_findings over the batches the file itemizes: a batch holding only payout
  lines (every payouts.itemized batch, a JSON payout) is skipped, since its transactions are
  in another file.
Not carried: CSV: exchange_rate; a charge's modification_reference; presentment in the
  settlement currency; and whatever the chosen columns leave out (non-charge gateway_reference
  needs charge_id, merchant_reference invoice_id, presentment customer_facing_*, a batch_id
  other than the fallback automatic_payout_id). JSON: a batch_id other than the fallback;
  sub-second occurred_at; a charge's modification_reference; and, for a charge without
  gateway_reference or another line without modification_reference, its gateway_reference,
  merchant_reference and presentment (they ride on the expanded source object, which needs an
  id).
payouts.itemized signs: the reference does not say which sign Stripe gives payouts there, so a
  payout row with a positive net (and a payout_reversal row with a negative net) is negated to
  the merchant's-balance convention (a payout is money out).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Final

from tieout.connectors.settlements.base import (
    Category,
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
    major_to_minor,
    norm_header,
    parse_date,
    parse_datetime,
)
from tieout.money import minor_to_decimal

GATEWAY: Final = "stripe"
ITEMIZED_CSV: Final = "stripe.itemized_csv"
PAYOUTS_ITEMIZED_CSV: Final = "stripe.payouts_itemized_csv"
BALANCE_TRANSACTIONS_JSON: Final = "stripe.balance_transactions_json"
FORMATS: Final[tuple[str, ...]] = (ITEMIZED_CSV, PAYOUTS_ITEMIZED_CSV, BALANCE_TRANSACTIONS_JSON)

_NEW_CATEGORY_FIX: Final = "a new Stripe reporting category; tell the tieout team"

#: Every reporting_category Stripe documents (settlement-formats.md §1.2) -> canonical category.
REPORTING_CATEGORY_MAP: Final[Mapping[str, Category]] = {
    "charge": "charge",
    "refund": "refund",
    "refund_failure": "refund",  # money back in: the refund did not go out
    "dispute": "chargeback",
    "dispute_reversal": "chargeback_reversal",
    "fee": "fee",
    "network_cost": "fee",
    "tax": "fee",
    "payout": "payout",
    "payout_reversal": "payout_reversal",
    "transfer": "transfer",
    "transfer_reversal": "transfer",
    "other_adjustment": "adjustment",
    "partial_capture_reversal": "adjustment",
    "charge_failure": "adjustment",
    **{
        name: "other"
        for name in (
            "advance",
            "advance_funding",
            "anticipation_repayment",
            "climate_order_purchase",
            "climate_order_refund",
            "connect_collection_transfer",
            "connect_reserved_funds",
            "contribution",
            "financing_paydown",
            "financing_paydown_reversal",
            "financing_payout",
            "financing_payout_reversal",
            "issuing_authorization_hold",
            "issuing_authorization_release",
            "issuing_dispute",
            "issuing_transaction",
            "platform_earning",
            "platform_earning_refund",
            "risk_reserved_funds",
            "topup",
            "topup_reversal",
            "unreconciled_customer_funds",
        )
    },
}

#: Balance transaction ``type`` -> canonical category, used only when the JSON object has no
#: reporting_category (older API versions). ``adjustment`` cannot tell a dispute from other
#: adjustments without reporting_category, so it stays an adjustment.
TYPE_MAP: Final[Mapping[str, Category]] = {
    "charge": "charge",
    "payment": "charge",
    "refund": "refund",
    "payment_refund": "refund",
    "refund_failure": "refund",
    "payment_failure_refund": "refund",
    "adjustment": "adjustment",
    "payment_reversal": "adjustment",
    "payout": "payout",
    "payout_cancel": "payout_reversal",
    "payout_failure": "payout_reversal",
    "transfer": "transfer",
    "transfer_cancel": "transfer",
    "transfer_failure": "transfer",
    "transfer_refund": "transfer",
    "stripe_fee": "fee",
    "stripe_fx_fee": "fee",
    "tax_fee": "fee",
    **{
        name: "other"
        for name in (
            "advance",
            "advance_funding",
            "anticipation_repayment",
            "application_fee",
            "application_fee_refund",
            "connect_collection_transfer",
            "contribution",
            "issuing_authorization_hold",
            "issuing_authorization_release",
            "issuing_dispute",
            "issuing_transaction",
            "obligation_inbound",
            "obligation_outbound",
            "obligation_payout",
            "obligation_payout_failure",
            "obligation_reversal_inbound",
            "obligation_reversal_outbound",
            "reserve_transaction",
            "reserved_funds",
            "topup",
            "topup_reversal",
        )
    },
}

#: The columns render_itemized_csv writes by default (balance_change_from_activity.itemized
#: order, plus charge_id and invoice_id so every reference survives a round trip).
DEFAULT_CSV_COLUMNS: Final[tuple[str, ...]] = (
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "automatic_payout_id",
    "charge_id",
    "invoice_id",
)

_ITEMIZED_REQUIRED: Final = ("balance_transaction_id", "currency", "gross", "fee", "net")
_PAYOUTS_REQUIRED: Final = ("payout_id", "currency", "gross", "fee", "net")
_HEADER_FIX: Final = (
    "download an itemized Stripe report (balance change from activity, payout reconciliation "
    "or payouts) as CSV with at least its default columns"
)


# --------------------------------------------------------------------------------------------
# parsing


def parse(data: bytes, file: str) -> ParsedFile:
    """Parse one Stripe file (itemized CSV report or balance-transactions JSON), all or nothing."""
    text = decode_text(data, file)
    if text.lstrip()[:1] in ("[", "{"):
        fmt, lines = BALANCE_TRANSACTIONS_JSON, _parse_json(text, file)
    else:
        fmt, lines = _parse_csv(text, file)
    return ParsedFile(
        gateway=GATEWAY, format=fmt, lines=tuple(lines), findings=_findings(lines, file)
    )


def _findings(lines: Sequence[SettlementLine], file: str) -> tuple[Finding, ...]:
    """batch_findings for the batches this file itemizes. A batch of nothing but payout lines
    (every payouts.itemized batch; a JSON payout, whose constituents JSON cannot link; a payout
    whose transactions fell before the report's interval) is not itemized here, so its
    "imbalance" says nothing."""
    itemized = {
        (line.batch_id, line.currency)
        for line in lines
        if line.category not in ("payout", "payout_reversal")
    }
    return tuple(f for f in batch_findings(lines, file) if (f.batch_id, f.currency) in itemized)


def _map_category(
    code: str, mapping: Mapping[str, Category], what: str, file: str, line: int
) -> Category:
    cat = mapping.get(code.strip().lower())
    if cat is None:
        raise SettlementFileError(
            f"unknown {what} {code!r}", file=file, line=line, fix=_NEW_CATEGORY_FIX
        )
    return cat


def _fallback_batch(
    category: str, modification_reference: str | None, available_on: date | None, created: datetime
) -> str:
    """The batch id when the file names no automatic payout (see Conventions)."""
    if (
        category in ("payout", "payout_reversal")
        and modification_reference
        and modification_reference.startswith("po_")
    ):
        return modification_reference
    return (available_on or created.date()).isoformat()


def _check_arithmetic(gross: int, fee: int, net: int, file: str, line: int, cur: str) -> None:
    if net != gross - fee:
        raise SettlementFileError(
            f"net {minor_to_decimal(net, cur)} != gross {minor_to_decimal(gross, cur)} - fee "
            f"{minor_to_decimal(fee, cur)}",
            file=file,
            line=line,
            fix="the row is corrupt; re-download the report",
        )


def _canonical_fee(category: str, gross: int, fee: int) -> tuple[int, int]:
    """Stripe states a fee transaction as amount -cost, fee 0; the canonical fee-only line is
    gross 0, fee +cost (net unchanged)."""
    return (0, fee - gross) if category == "fee" else (gross, fee)


def _stripe_amounts(line: SettlementLine) -> tuple[int, int, int]:
    """(amount, fee, net) as Stripe states them; the inverse of _canonical_fee."""
    if line.category == "fee":
        return line.net_minor, 0, line.net_minor
    return line.gross_minor, line.fee_minor, line.net_minor


def _presentment(
    amount: int, cur: str, settlement_cur: str, gross: int
) -> tuple[str | None, int | None]:
    if cur == settlement_cur:
        return None, None
    return cur, (-amount if gross < 0 < amount else amount)


def _csv_amount(text: str, cur: str, file: str, line: int, column: str) -> int:
    """Major units; a report run with decimal_separator=',' writes '12,34' (Stripe never
    groups digits, so a lone comma between digits can only be the decimal separator)."""
    if not text.strip():
        raise SettlementFileError(f"column {column} is empty", file=file, line=line)
    if re.fullmatch(r"\s*[+-]?[0-9]+,[0-9]+\s*", text):
        text = text.replace(",", ".")
    return major_to_minor(text, cur, file, line, column)


def _parse_csv(text: str, file: str) -> tuple[str, list[SettlementLine]]:
    records = iter(csv_records(text, file))
    first = next(records, None)
    if first is None:
        raise SettlementFileError("the file is empty", file=file, fix="re-download the report")
    header_line, header = first
    names = [norm_header(h) for h in header]
    if "payout_id" in names:
        fmt, required, time_cols = (
            PAYOUTS_ITEMIZED_CSV,
            _PAYOUTS_REQUIRED,
            (
                "effective_at_utc",
                "effective_at",
            ),
        )
    elif "balance_transaction_id" in names:
        fmt, required, time_cols = ITEMIZED_CSV, _ITEMIZED_REQUIRED, ("created_utc", "created")
    else:
        raise SettlementFileError(
            "not a Stripe itemized report: the header has neither balance_transaction_id nor "
            "payout_id",
            file=file,
            line=header_line,
            fix=_HEADER_FIX,
        )
    missing = [c for c in (*required, "reporting_category") if c not in names]
    if not any(t in names for t in time_cols):
        missing.append(f"{time_cols[0]} (or {time_cols[1]})")
    if missing:
        raise SettlementFileError(
            f"missing required column(s) {', '.join(missing)}",
            file=file,
            line=header_line,
            fix=_HEADER_FIX,
        )
    optional_tail = {n for n in names if n not in required and n not in time_cols}
    optional_tail.discard("reporting_category")
    rows: list[Row] = []
    for line, fields in records:
        if len(fields) > len(names) and any(f.strip() for f in fields[len(names) :]):
            raise SettlementFileError(
                f"{len(fields)} fields but the header has {len(names)}", file=file, line=line
            )
        # hledger's sample shows a row whose empty last field is missing altogether; one
        # missing optional field is that, more (or a required one) is a truncated row.
        if len(fields) < len(names) and (
            len(fields) < len(names) - 1 or names[-1] not in optional_tail
        ):
            raise SettlementFileError(
                f"{len(fields)} fields but the header has {len(names)}: the row is cut short",
                file=file,
                line=line,
                fix="the file looks truncated; re-download the report",
            )
        values = {n: (fields[i].strip() if i < len(fields) else "") for i, n in enumerate(names)}
        rows.append(Row(line, values))
    if fmt == PAYOUTS_ITEMIZED_CSV:
        return fmt, _payout_lines(rows, names, time_cols, file)
    return fmt, _itemized_lines(rows, names, time_cols, file)


def _first(row: Row, names: Sequence[str], columns: Sequence[str]) -> tuple[str, str]:
    """(column, value) of the first of `columns` the header has, preferring the _utc twin."""
    for c in columns:
        if c in names:
            return c, row.get(c)
    return columns[0], ""


def _row_money(row: Row, file: str) -> tuple[str, int, int, int]:
    cur = currency(row.get("currency"), file, row.line, "currency")
    gross = _csv_amount(row.get("gross"), cur, file, row.line, "gross")
    fee = _csv_amount(row.get("fee"), cur, file, row.line, "fee")
    net = _csv_amount(row.get("net"), cur, file, row.line, "net")
    _check_arithmetic(gross, fee, net, file, row.line, cur)
    return cur, gross, fee, net


def _itemized_lines(
    rows: Sequence[Row], names: Sequence[str], time_cols: Sequence[str], file: str
) -> list[SettlementLine]:
    metadata_cols = [n for n in names if n.startswith("payment_metadata[")]
    txn_ids = []
    for row in rows:
        txn = row.get("balance_transaction_id")
        if not txn:
            raise SettlementFileError(
                "column balance_transaction_id is empty", file=file, line=row.line
            )
        txn_ids.append((txn,))
    ids = unique_line_ids(GATEWAY, txn_ids)
    out = []
    for row, line_id in zip(rows, ids, strict=True):
        col, created_text = _first(row, names, time_cols)
        occurred = parse_datetime(created_text, file, row.line, col)
        col, avail_text = _first(row, names, ("available_on_utc", "available_on"))
        available_on = parse_date(avail_text, file, row.line, col) if avail_text else None
        cur, gross, fee, net = _row_money(row, file)
        category = _map_category(
            row.get("reporting_category"),
            REPORTING_CATEGORY_MAP,
            "reporting_category",
            file,
            row.line,
        )
        gross, fee = _canonical_fee(category, gross, fee)
        source = row.get("source_id") or None
        if category == "charge":
            gateway_ref = row.get("charge_id") or source or row.get("payment_intent_id") or None
            modification_ref = None
        else:
            gateway_ref = row.get("charge_id") or row.get("payment_intent_id") or None
            modification_ref = source
        merchant_ref = row.get("invoice_id") or next(
            (row.get(m) for m in metadata_cols if row.get(m)), None
        )
        p_cur: str | None = None
        p_amount: int | None = None
        cf_cur_text, cf_amount_text = (
            row.get("customer_facing_currency"),
            row.get("customer_facing_amount"),
        )
        if cf_cur_text and cf_amount_text:
            cf_cur = currency(cf_cur_text, file, row.line, "customer_facing_currency")
            cf_amount = _csv_amount(
                cf_amount_text, cf_cur, file, row.line, "customer_facing_amount"
            )
            p_cur, p_amount = _presentment(cf_amount, cf_cur, cur, gross)
        batch = row.get("automatic_payout_id") or _fallback_batch(
            category, modification_ref, available_on, occurred
        )
        out.append(
            SettlementLine(
                gateway=GATEWAY,
                line_id=line_id,
                batch_id=batch,
                category=category,
                gateway_reference=gateway_ref,
                modification_reference=modification_ref,
                merchant_reference=merchant_ref,
                occurred_at=occurred,
                available_on=available_on,
                currency=cur,
                gross_minor=gross,
                fee_minor=fee,
                net_minor=net,
                presentment_currency=p_cur,
                presentment_amount_minor=p_amount,
                exchange_rate=None,
                source_file=file,
                source_row=row.line,
            )
        )
    return out


def _payout_lines(
    rows: Sequence[Row], names: Sequence[str], time_cols: Sequence[str], file: str
) -> list[SettlementLine]:
    keys: list[tuple[object, ...]] = []
    for row in rows:
        payout = row.get("payout_id")
        if not payout:
            raise SettlementFileError("column payout_id is empty", file=file, line=row.line)
        txn = row.get("balance_transaction_id")
        keys.append((txn,) if txn else ("payout", payout, row.get("reporting_category")))
    ids = unique_line_ids(GATEWAY, keys)
    out = []
    for row, line_id in zip(rows, ids, strict=True):
        col, effective_text = _first(row, names, time_cols)
        occurred = parse_datetime(effective_text, file, row.line, col)
        cur, gross, fee, net = _row_money(row, file)
        category = _map_category(
            row.get("reporting_category"),
            REPORTING_CATEGORY_MAP,
            "reporting_category",
            file,
            row.line,
        )
        if (category == "payout" and net > 0) or (category == "payout_reversal" and net < 0):
            gross, fee, net = -gross, -fee, -net
        payout = row.get("payout_id")
        out.append(
            SettlementLine(
                gateway=GATEWAY,
                line_id=line_id,
                batch_id=payout,
                category=category,
                gateway_reference=None,
                modification_reference=payout,
                merchant_reference=None,
                occurred_at=occurred,
                available_on=None,
                currency=cur,
                gross_minor=gross,
                fee_minor=fee,
                net_minor=net,
                presentment_currency=None,
                presentment_amount_minor=None,
                exchange_rate=None,
                source_file=file,
                source_row=row.line,
            )
        )
    return out


def _item_lines(text: str, doc: object) -> list[int]:
    """The 1-based physical line on which each balance transaction object starts, so errors
    point into the file (source_row stays the object's position in the list)."""
    decoder = json.JSONDecoder(parse_float=Decimal)

    def skip(idx: int) -> int:
        while text[idx] in " \t\n\r":
            idx += 1
        return idx

    idx = skip(0)
    start = idx
    if isinstance(doc, dict):  # find the "data" array of the envelope (the last one wins)
        idx = skip(idx + 1)
        while text[idx] != "}":
            key, idx = decoder.raw_decode(text, idx)
            idx = skip(skip(idx) + 1)
            if key == "data":
                start = idx
            _, idx = decoder.raw_decode(text, idx)
            idx = skip(idx)
            if text[idx] == ",":
                idx = skip(idx + 1)
    out = []
    idx = skip(start + 1)
    while text[idx] != "]":
        out.append(text.count("\n", 0, idx) + 1)
        _, idx = decoder.raw_decode(text, idx)
        idx = skip(idx)
        if text[idx] == ",":
            idx = skip(idx + 1)
    return out


def _parse_json(text: str, file: str) -> list[SettlementLine]:
    try:
        doc = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise SettlementFileError(
            f"not valid JSON: {exc.msg} (column {exc.colno})",
            file=file,
            line=exc.lineno,
            fix="the file may be truncated; re-download the balance transactions",
        ) from None
    if isinstance(doc, dict):
        data = doc.get("data")
        if doc.get("object") != "list" or not isinstance(data, list):
            raise SettlementFileError(
                'a JSON object that is not a Stripe list ({"object": "list", "data": [...]})',
                file=file,
                line=1,
                fix="save the response of GET /v1/balance_transactions, or a JSON list of "
                "balance_transaction objects",
            )
    elif isinstance(doc, list):
        data = doc
    else:  # pragma: no cover - only [ or { reach here
        raise SettlementFileError("not a JSON list", file=file, line=1)
    physical = _item_lines(text, doc)
    objs: list[Mapping[str, object]] = []
    for pos, obj in enumerate(data, start=1):
        if not isinstance(obj, dict) or obj.get("object", "balance_transaction") != (
            "balance_transaction"
        ):
            raise SettlementFileError(
                f"item {pos} of the list is not a balance_transaction object",
                file=file,
                line=physical[pos - 1],
                fix="the file must list balance transactions only",
            )
        if not isinstance(obj.get("id"), str) or not obj["id"]:
            raise SettlementFileError(
                f"item {pos}: field id is missing or not a string",
                file=file,
                line=physical[pos - 1],
            )
        objs.append(obj)
    ids = unique_line_ids(GATEWAY, [(o["id"],) for o in objs])
    out = []
    for pos, (obj, line_id) in enumerate(zip(objs, ids, strict=True), start=1):
        try:
            out.append(_json_line(obj, pos, line_id, file))
        except SettlementFileError as exc:  # the helpers know the position, not the line
            raise SettlementFileError(
                exc.reason, file=file, line=physical[pos - 1], fix=exc.fix
            ) from None
    return out


def _shown(value: object) -> str:
    """A JSON value as the file wrote it (a Decimal is a JSON number, not Decimal('...'))."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value, default=str)


def _json_int(obj: Mapping[str, object], key: str, pos: int, file: str) -> int:
    value = obj.get(key)
    if type(value) is not int:
        what = "missing" if value is None else f"{_shown(value)} is not an integer of minor units"
        raise SettlementFileError(f"item {pos}: field {key}: {what}", file=file, line=pos)
    return value


def _json_str(obj: Mapping[str, object], key: str, pos: int, file: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SettlementFileError(
            f"item {pos}: field {key}: {_shown(value)} is not a string", file=file, line=pos
        )
    return value


def _json_time(obj: Mapping[str, object], key: str, pos: int, file: str) -> datetime:
    value = obj.get(key)
    if type(value) is not int or not 0 <= value < 253402300800:
        raise SettlementFileError(
            f"item {pos}: field {key}: {_shown(value)} is not a unix timestamp", file=file, line=pos
        )
    return datetime.fromtimestamp(value, UTC)


def _json_line(obj: Mapping[str, object], pos: int, line_id: str, file: str) -> SettlementLine:
    cur_text = obj.get("currency")
    if not isinstance(cur_text, str):
        raise SettlementFileError(
            f"item {pos}: field currency is missing or not a string", file=file, line=pos
        )
    cur = currency(cur_text, file, pos, "currency")
    gross = _json_int(obj, "amount", pos, file)
    fee = _json_int(obj, "fee", pos, file)
    net = _json_int(obj, "net", pos, file)
    _check_arithmetic(gross, fee, net, file, pos, cur)
    occurred = _json_time(obj, "created", pos, file)
    available_on = (
        _json_time(obj, "available_on", pos, file).date()
        if obj.get("available_on") is not None
        else None
    )
    reporting = _json_str(obj, "reporting_category", pos, file)
    if reporting is not None:
        category = _map_category(reporting, REPORTING_CATEGORY_MAP, "reporting_category", file, pos)
    else:
        type_code = _json_str(obj, "type", pos, file)
        if type_code is None:
            raise SettlementFileError(
                f"item {pos}: neither reporting_category nor type is given", file=file, line=pos
            )
        category = _map_category(type_code, TYPE_MAP, "type", file, pos)
    gross, fee = _canonical_fee(category, gross, fee)
    rate_value = obj.get("exchange_rate")
    rate: str | None = None
    if rate_value is not None:
        if isinstance(rate_value, bool) or not isinstance(rate_value, int | Decimal):
            raise SettlementFileError(
                f"item {pos}: field exchange_rate: {_shown(rate_value)} is not a number",
                file=file,
                line=pos,
            )
        rate = str(rate_value)
    source_value = obj.get("source")
    source_id: str | None
    expanded: Mapping[str, object] = {}
    if isinstance(source_value, dict):
        expanded = source_value
        source_id = _json_str(expanded, "id", pos, file)
    elif source_value is None or isinstance(source_value, str):
        source_id = source_value or None
    else:
        raise SettlementFileError(
            f"item {pos}: field source: {_shown(source_value)} is neither an id nor an object",
            file=file,
            line=pos,
        )
    if category == "charge":
        gateway_ref, modification_ref = source_id, None
    else:
        gateway_ref, modification_ref = _expanded_id(expanded, "charge", pos, file), source_id
    merchant_ref = _expanded_id(expanded, "invoice", pos, file)
    p_cur: str | None = None
    p_amount: int | None = None
    if expanded.get("currency") is not None and expanded.get("amount") is not None:
        src_cur = currency(str(expanded["currency"]), file, pos, "source.currency")
        src_amount = _json_int(expanded, "amount", pos, file)
        p_cur, p_amount = _presentment(src_amount, src_cur, cur, gross)
    return SettlementLine(
        gateway=GATEWAY,
        line_id=line_id,
        batch_id=_fallback_batch(category, modification_ref, available_on, occurred),
        category=category,
        gateway_reference=gateway_ref,
        modification_reference=modification_ref,
        merchant_reference=merchant_ref,
        occurred_at=occurred,
        available_on=available_on,
        currency=cur,
        gross_minor=gross,
        fee_minor=fee,
        net_minor=net,
        presentment_currency=p_cur,
        presentment_amount_minor=p_amount,
        exchange_rate=rate,
        source_file=file,
        source_row=pos,
    )


def _expanded_id(expanded: Mapping[str, object], key: str, pos: int, file: str) -> str | None:
    """An id field of an expanded object, itself either an id or an expanded object."""
    value = expanded.get(key)
    if isinstance(value, dict):
        return _json_str(value, "id", pos, file)
    return _json_str(expanded, key, pos, file)


# --------------------------------------------------------------------------------------------
# rendering

_RENDER_CATEGORY: Final[Mapping[str, tuple[str, str]]] = {
    # canonical -> (reporting_category, type); refund/transfer/other pick a variant by sign
    "charge": ("charge", "charge"),
    "refund": ("refund", "refund"),
    "chargeback": ("dispute", "adjustment"),
    "chargeback_reversal": ("dispute_reversal", "adjustment"),
    "fee": ("fee", "stripe_fee"),
    "adjustment": ("other_adjustment", "adjustment"),
    "payout": ("payout", "payout"),
    "payout_reversal": ("payout_reversal", "payout_failure"),
    "transfer": ("transfer", "transfer"),
    "other": ("topup", "topup"),
}


def _render_category(line: SettlementLine) -> tuple[str, str]:
    if line.category == "refund" and line.net_minor > 0:
        return "refund_failure", "refund_failure"
    if line.category == "transfer" and line.net_minor > 0:
        return "transfer_reversal", "transfer_cancel"
    if line.category == "other" and line.net_minor < 0:
        return "topup_reversal", "topup_reversal"
    return _RENDER_CATEGORY[line.category]


def balance_transaction_id(line: SettlementLine) -> str:
    """A deterministic ``txn_`` id for a canonical line (its line_id and content)."""
    key = "\x1f".join(
        str(v)
        for v in (
            line.line_id,
            line.batch_id,
            line.category,
            line.gateway_reference,
            line.modification_reference,
            line.occurred_at.isoformat(),
            line.currency,
            line.gross_minor,
            line.fee_minor,
        )
    )
    return "txn_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _utc_text(moment: datetime) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "")


def _major(amount: int, cur: str) -> str:
    return str(minor_to_decimal(amount, cur))


_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "refund": "REFUND FOR PAYMENT",
    "payout": "STRIPE PAYOUT",
    "chargeback": "Chargeback withdrawal",
    "chargeback_reversal": "Chargeback reversal",
}


def _csv_values(line: SettlementLine) -> dict[str, str]:
    cur = line.currency
    reporting_category, _ = _render_category(line)
    gross, fee, net = _stripe_amounts(line)
    if line.category == "charge":
        source, charge = line.gateway_reference, line.gateway_reference
    else:
        source, charge = line.modification_reference, line.gateway_reference
    fallback = _fallback_batch(
        line.category, line.modification_reference, line.available_on, line.occurred_at
    )
    available = "" if line.available_on is None else f"{line.available_on.isoformat()} 00:00:00"
    p_amount = ""
    if line.presentment_currency is not None and line.presentment_amount_minor is not None:
        p_amount = _major(line.presentment_amount_minor, line.presentment_currency)
    return {
        "balance_transaction_id": balance_transaction_id(line),
        "created_utc": _utc_text(line.occurred_at),
        "created": _utc_text(line.occurred_at),
        "available_on_utc": available,
        "available_on": available,
        "currency": cur.lower(),
        "gross": _major(gross, cur),
        "fee": _major(fee, cur),
        "net": _major(net, cur),
        "reporting_category": reporting_category,
        "source_id": source or "",
        "description": _DESCRIPTIONS.get(line.category, ""),
        "customer_facing_amount": p_amount,
        "customer_facing_currency": (line.presentment_currency or "").lower() if p_amount else "",
        "automatic_payout_id": "" if line.batch_id == fallback else line.batch_id,
        "charge_id": charge or "",
        "invoice_id": line.merchant_reference or "",
    }


def render_itemized_csv(
    lines: Sequence[SettlementLine],
    columns: Sequence[str] = DEFAULT_CSV_COLUMNS,
    *,
    quote_all: bool = False,
) -> bytes:
    """An itemized balance report (balance_change_from_activity / payout_reconciliation
    layout) with one row per line; `columns` picks and orders the Stripe columns (names this
    renderer does not fill are written empty). `quote_all` quotes every field, as some
    Dashboard downloads do."""
    required = {"balance_transaction_id", "currency", "gross", "fee", "net", "reporting_category"}
    missing = required - set(columns)
    if missing or not {"created_utc", "created"} & set(columns):
        raise ValueError(
            f"columns must include {sorted(required)} and created_utc or created; "
            f"missing {sorted(missing) or ['created_utc']}"
        )
    body = [[_csv_values(line).get(c, "") for c in columns] for line in lines]
    if not quote_all:
        return csv_text([list(columns), *body]).encode("utf-8")
    out = []
    for row in [list(columns), *body]:
        out.append(",".join('"' + v.replace('"', '""') + '"' for v in row))
    return ("\n".join(out) + "\n").encode("utf-8")


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _json_object(line: SettlementLine) -> dict[str, object]:
    reporting_category, type_code = _render_category(line)
    source_id = line.gateway_reference if line.category == "charge" else line.modification_reference
    source: object = source_id
    if source_id is not None:
        expanded: dict[str, object] = {"id": source_id}
        if line.category != "charge" and line.gateway_reference is not None:
            expanded["charge"] = line.gateway_reference
        if line.merchant_reference is not None:
            expanded["invoice"] = line.merchant_reference
        if line.presentment_currency is not None and line.presentment_amount_minor is not None:
            expanded["amount"] = abs(line.presentment_amount_minor)
            expanded["currency"] = line.presentment_currency.lower()
        if len(expanded) > 1:
            source = expanded
    available_on = (
        None
        if line.available_on is None
        else _unix(datetime.combine(line.available_on, time(), UTC))
    )
    amount, fee, net = _stripe_amounts(line)
    return {
        "id": balance_transaction_id(line),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": available_on,
        "created": _unix(line.occurred_at),
        "currency": line.currency.lower(),
        "description": _DESCRIPTIONS.get(line.category),
        "exchange_rate": None if line.exchange_rate is None else Decimal(line.exchange_rate),
        "fee": fee,
        "fee_details": [],
        "net": net,
        "reporting_category": reporting_category,
        "source": source,
        "status": "available",
        "type": type_code,
    }


def _dump(value: object, indent: str = "") -> str:
    """JSON text with Decimals written as exact JSON numbers (json.dumps would need floats)."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dump(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _dump(v, inner) for v in value) + f"\n{indent}]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


def render_balance_transactions_json(lines: Sequence[SettlementLine]) -> bytes:
    """The list envelope GET /v1/balance_transactions returns, one object per line."""
    doc = {
        "object": "list",
        "data": [_json_object(line) for line in lines],
        "has_more": False,
        "url": "/v1/balance_transactions",
    }
    return (_dump(doc) + "\n").encode("utf-8")


__all__ = [
    "BALANCE_TRANSACTIONS_JSON",
    "DEFAULT_CSV_COLUMNS",
    "FORMATS",
    "ITEMIZED_CSV",
    "PAYOUTS_ITEMIZED_CSV",
    "REPORTING_CATEGORY_MAP",
    "TYPE_MAP",
    "balance_transaction_id",
    "parse",
    "render_balance_transactions_json",
    "render_itemized_csv",
]
