"""ASC 606 revenue schedules from billing rows: plain, typed Python (no Dagster, no I/O).

Every billed revenue line becomes rows of (line, accounting month, amount) that sum exactly to
the line, so revenue recognized plus revenue deferred always equals revenue billed
(docs/revenue.md has worked examples):

* Only invoices that were billed count: open, paid and uncollectible. Draft (not billed yet)
  and void invoices produce nothing, exactly as in the ERP billing journal.
* Subscription and usage lines are earned ratably by day over their service period
  ``[service_start, service_end)`` (END EXCLUSIVE, as in billing and the ERP journals); each
  calendar month gets the line amount in proportion to the period's days that fall in it.
  Without a (non-empty) period they, and one-off lines, fall in the invoice's issue month.
* Discount lines are spread over the invoice's positive revenue lines in proportion to their
  amounts, and each share follows the month pattern of the line it discounts.
* Tax lines are a liability, never revenue: no rows, and not "billed" for deferred revenue.
* A credit note is split over its invoice's lines (revenue lines net of discounts, and tax) in
  proportion to their amounts; the tax share is dropped, each revenue share is reversed in that
  line's month pattern, and months already past when the note is issued are caught up in the
  note's own month (revenue that was recognized is reversed when the credit is issued).

All splits are largest-remainder allocations of integer minor units (`allocate`): floor shares,
then one unit each to the largest remainders, ties to the earliest month (or line id), so the
parts always add up and the output never depends on input order. Months and issue dates are
local to the finance time zone. The check functions recompute what the rows must add up to
from the inputs, independently of the month logic, so the Dagster asset can block on them.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa

from tieout.errors import InputDataError

__all__ = [
    "BILLED_INVOICE_STATUSES",
    "REVENUE_KINDS",
    "SCHEDULE_COLUMNS",
    "SCHEDULE_SCHEMA",
    "BilledSource",
    "DeferredBalance",
    "ScheduleResult",
    "ScheduleRow",
    "WaterfallPoint",
    "allocate",
    "billed_sources",
    "build_schedules",
    "check_deferred",
    "check_line_sums",
    "deferred_balances",
    "schedule_id",
    "to_arrow",
    "waterfall",
]

Source = Literal["invoice", "credit_note"]

#: Invoice statuses that were billed (the ERP posts the same ones); draft and void are not.
BILLED_INVOICE_STATUSES: Final = ("open", "paid", "uncollectible")
_UNBILLED_INVOICE_STATUSES: Final = ("draft", "void")
#: Line kinds that are revenue in their own right (discounts reduce them; tax never is).
REVENUE_KINDS: Final = ("subscription", "usage", "one_off")
_LINE_KINDS: Final = (*REVENUE_KINDS, "discount", "tax")
#: Kinds earned over their service period when they have one.
_PERIOD_KINDS: Final = ("subscription", "usage")

#: Column order of schedule rows (as_dict, to_arrow).
SCHEDULE_COLUMNS: Final = (
    "schedule_id",
    "source",
    "source_id",
    "invoice_id",
    "line_id",
    "customer_id",
    "currency",
    "kind",
    "month",
    "amount_minor",
    "billing_month",
)

_ARROW_TYPES: Final = {
    "month": pa.date32(),
    "billing_month": pa.date32(),
    "amount_minor": pa.int64(),
}
#: The fixed Arrow schema of schedule rows; `billing_month` is the partition key.
SCHEDULE_SCHEMA: Final = pa.schema(
    [
        pa.field(name, _ARROW_TYPES.get(name, pa.string()), nullable=False)
        for name in SCHEDULE_COLUMNS
    ]
)

_MAX_ID: Final = 255
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9_.:-]+")
_UNSAFE_ID_CHAR: Final = re.compile(r"[^A-Za-z0-9_.:-]")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """Revenue of one source line recognized in one accounting month (signed minor units)."""

    schedule_id: str
    source: Source
    source_id: str
    invoice_id: str
    line_id: str
    customer_id: str
    currency: str
    kind: str
    #: First day of the accounting month the amount is recognized in.
    month: date
    amount_minor: int
    #: First day of the month the invoice or credit note was issued in (finance time zone).
    billing_month: date

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCHEDULE_COLUMNS}


@dataclass(frozen=True)
class ScheduleResult:
    """The rows, plus what was left out (`skipped`) or allocated despite looking wrong."""

    rows: list[ScheduleRow]
    #: Sources that produced nothing, with the reason (credit note on a void invoice, ...).
    skipped: list[str]
    #: Sources allocated anyway but worth a look (credit notes above their invoice's total).
    warnings: list[str]


@dataclass(frozen=True)
class BilledSource:
    """What one invoice or credit note billed as revenue, recomputed from the inputs."""

    source: Source
    source_id: str
    invoice_id: str
    currency: str
    billing_month: date
    #: Revenue and discount lines of an invoice; minus the revenue share of a credit note.
    amount_minor: int


@dataclass(frozen=True)
class DeferredBalance:
    """Deferred revenue at one month end, computed two ways that must agree."""

    currency: str
    month: date
    month_end: date
    #: Billed by sources issued up to this month.
    billed_to_date: int
    #: Rows with month <= this month, of sources issued up to this month.
    recognized_to_date: int
    #: Rows with month > this month, of sources issued up to this month.
    deferred_minor: int

    @property
    def difference(self) -> int:
        """billed - recognized - deferred: zero when the schedules are whole."""
        return self.billed_to_date - self.recognized_to_date - self.deferred_minor


@dataclass(frozen=True)
class WaterfallPoint:
    currency: str
    month: date
    amount_minor: int


# --------------------------------------------------------------------------------------------
# Arithmetic


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` minor units over non-negative integer `weights` exactly (largest remainder).

    Floor shares of the magnitude, then one unit each to the largest remainders, ties to the
    earliest index; a negative total is split as its magnitude and negated, so +x and -x split
    into mirror images (a reversal undoes its original month by month).
    """
    if total < 0:
        return [-share for share in allocate(-total, weights)]
    whole = sum(weights)
    if whole <= 0 or min(weights) < 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {weights!r}")
    if len(weights) == 1:
        return [total]
    products = [total * w for w in weights]
    shares = [p // whole for p in products]
    left = total - sum(shares)
    if left:
        remainders = [p % whole for p in products]
        # A stable sort keeps equal remainders in index order, even reversed: earliest first.
        for i in sorted(range(len(weights)), key=remainders.__getitem__, reverse=True)[:left]:
            shares[i] += 1
    return shares


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _month_of(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _next_month(m: date) -> date:
    return date(m.year + 1, 1, 1) if m.month == 12 else date(m.year, m.month + 1, 1)


def _day_pattern(start: date, end: date) -> tuple[tuple[date, ...], tuple[int, ...]]:
    """Months touched by [start, end) and the number of the period's days in each."""
    months: list[date] = []
    days: list[int] = []
    cursor, month = start, start.replace(day=1)
    while cursor < end:
        following = _next_month(month)
        months.append(month)
        days.append((min(following, end) - cursor).days)
        cursor = month = following
    return tuple(months), tuple(days)


def schedule_id(*parts: str, month: date) -> str:
    """``rs-<parts>-<YYYY-MM>``: readable and deterministic; long or odd ids are hashed."""
    return f"{_id_stem(parts)}-{_month_text(month)}"


@functools.cache
def _month_text(month: date) -> str:
    return month.isoformat()[:7]


def _id_stem(parts: tuple[str, ...]) -> str:
    """The month-less part of a schedule id (computed once per source line, not per row)."""
    text = "-".join(parts)
    if _SAFE_ID.fullmatch(text) and len(text) + 11 <= _MAX_ID:
        return f"rs-{text}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"rs-{_UNSAFE_ID_CHAR.sub('_', text)[:200]}-{digest}"


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class _Line:
    line_id: str
    kind: str
    amount: int
    #: The months the line is earned in and their weights (days, or a single 1).
    months: tuple[date, ...]
    weights: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Invoice:
    invoice_id: str
    customer_id: str
    currency: str
    status: str
    month: date
    lines: list[_Line]


@dataclass(frozen=True, slots=True)
class _CreditNote:
    credit_note_id: str
    invoice_id: str
    currency: str
    amount: int
    month: date


@dataclass(frozen=True, slots=True)
class _Split:
    """How an invoice's revenue divides between its lines (independent of months)."""

    #: Discount line id -> [(revenue line, share)], or [] when it falls in the issue month.
    discounts: dict[str, list[tuple[_Line, int]]]
    #: Revenue and tax lines with a positive amount net of discounts: what a credit splits over.
    creditable: list[tuple[_Line, int]]


@dataclass
class _Book:
    invoices: dict[str, _Invoice]
    credit_notes: list[_CreditNote]
    skipped: list[str]
    warnings: list[str]


def _missing(value: object) -> bool:
    """None, NaN, NaT or pandas.NA (which refuses to be compared)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:
        return True


def _text(row: Mapping[str, Any], column: str, table: str) -> str:
    value = row.get(column)
    if _missing(value) or value == "":
        raise InputDataError(f"{table}: row {dict(row)!r} has no {column}")
    return str(value)


def _minor(row: Mapping[str, Any], table: str, key: str) -> int:
    value = row.get("amount_minor")
    if isinstance(value, bool) or value is None:
        raise InputDataError(f"{table} {key}: amount_minor {value!r} is not integer minor units")
    try:
        return operator.index(value)
    except TypeError:
        raise InputDataError(
            f"{table} {key}: amount_minor {value!r} ({type(value).__name__}) is not an integer "
            "number of minor units; money is never a float or a decimal here"
        ) from None


def _local_month(value: object, zone: ZoneInfo, what: str) -> date:
    """First day of the local (finance time zone) month of a timestamp; naive means UTC."""
    if not isinstance(value, datetime) or _missing(value):
        raise InputDataError(f"{what}: issued_at {value!r} is not a timestamp")
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(zone).date().replace(day=1)


def _day(value: object, what: str) -> date | None:
    if _missing(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise InputDataError(f"{what} is {value!r}, not a date")


def _load(
    invoices: Iterable[Mapping[str, Any]],
    invoice_lines: Iterable[Mapping[str, Any]],
    credit_notes: Iterable[Mapping[str, Any]],
    finance_timezone: str,
) -> _Book:
    """Parse and validate rows; contract breaks raise, business cases are reported."""
    zone = ZoneInfo(finance_timezone)
    skipped: list[str] = []
    book: dict[str, _Invoice] = {}
    for row in invoices:
        invoice_id = _text(row, "invoice_id", "invoices")
        if invoice_id in book:
            raise InputDataError(f"invoices: invoice_id {invoice_id} appears twice")
        status = _text(row, "status", "invoices")
        if status not in (*BILLED_INVOICE_STATUSES, *_UNBILLED_INVOICE_STATUSES):
            raise InputDataError(f"invoice {invoice_id}: unknown status {status!r}")
        book[invoice_id] = _Invoice(
            invoice_id,
            _text(row, "customer_id", "invoices"),
            _text(row, "currency", "invoices"),
            status,
            _local_month(row.get("issued_at"), zone, f"invoice {invoice_id}"),
            [],
        )
    seen_lines: set[str] = set()
    for row in invoice_lines:
        line_id = _text(row, "line_id", "invoice_lines")
        if line_id in seen_lines:
            raise InputDataError(f"invoice_lines: line_id {line_id} appears twice")
        seen_lines.add(line_id)
        invoice_id = _text(row, "invoice_id", "invoice_lines")
        kind = _text(row, "kind", "invoice_lines")
        if kind not in _LINE_KINDS:
            raise InputDataError(f"invoice line {line_id}: unknown kind {kind!r}")
        amount = _minor(row, "invoice line", line_id)
        inv = book.get(invoice_id)
        if inv is None:
            skipped.append(f"invoice line {line_id}: its invoice {invoice_id} is not in the input")
            continue
        months: tuple[date, ...] = (inv.month,)
        weights: tuple[int, ...] = (1,)
        if kind in _PERIOD_KINDS:
            start = _day(row.get("service_start"), f"invoice line {line_id} service_start")
            end = _day(row.get("service_end"), f"invoice line {line_id} service_end")
            if start is not None and end is not None and end > start:
                months, weights = _day_pattern(start, end)
        inv.lines.append(_Line(line_id, kind, amount, months, weights))
    for inv in book.values():
        inv.lines.sort(key=lambda ln: ln.line_id)
    skipped.sort()

    notes: list[_CreditNote] = []
    seen_notes: set[str] = set()
    for row in credit_notes:
        cn_id = _text(row, "credit_note_id", "credit_notes")
        if cn_id in seen_notes:
            raise InputDataError(f"credit_notes: credit_note_id {cn_id} appears twice")
        seen_notes.add(cn_id)
        notes.append(
            _CreditNote(
                cn_id,
                _text(row, "invoice_id", "credit_notes"),
                _text(row, "currency", "credit_notes"),
                _minor(row, "credit note", cn_id),
                _local_month(row.get("issued_at"), zone, f"credit note {cn_id}"),
            )
        )
    notes.sort(key=lambda n: n.credit_note_id)
    return _Book(book, notes, skipped, [])


def _split(inv: _Invoice) -> _Split:
    """Discount shares per revenue line and the lines' net amounts (what credits split over)."""
    positive = [ln for ln in inv.lines if ln.kind in REVENUE_KINDS and ln.amount > 0]
    net = {ln.line_id: ln.amount for ln in inv.lines if ln.kind in REVENUE_KINDS}
    discounts: dict[str, list[tuple[_Line, int]]] = {}
    for ln in inv.lines:
        if ln.kind != "discount":
            continue
        if not positive:
            discounts[ln.line_id] = []
            continue
        shares = allocate(ln.amount, [p.amount for p in positive])
        discounts[ln.line_id] = list(zip(positive, shares, strict=True))
        for p, share in zip(positive, shares, strict=True):
            net[p.line_id] += share
    creditable = [
        (ln, net[ln.line_id] if ln.kind != "tax" else ln.amount)
        for ln in inv.lines
        if ln.kind in (*REVENUE_KINDS, "tax")
    ]
    return _Split(discounts, [(ln, amount) for ln, amount in creditable if amount > 0])


def _split_of(inv: _Invoice, cache: dict[str, _Split]) -> _Split:
    """`_split`, computed once per invoice and only for those with discounts or credits."""
    split = cache.get(inv.invoice_id)
    if split is None:
        split = cache[inv.invoice_id] = _split(inv)
    return split


def _credit_shares(
    note: _CreditNote, book: _Book, splits: dict[str, _Split], *, report: bool
) -> list[tuple[_Line, int]] | None:
    """The note's share of each creditable line (tax included), or None when it credits
    nothing; reasons go to book.skipped when `report`."""
    inv = book.invoices.get(note.invoice_id)
    reason = None
    if inv is None:
        reason = f"its invoice {note.invoice_id} is not in the input"
    elif inv.status not in BILLED_INVOICE_STATUSES:
        reason = f"its invoice {note.invoice_id} is {inv.status} (never billed)"
    elif note.currency != inv.currency:
        reason = (
            f"its currency {note.currency} differs from invoice {inv.invoice_id}'s {inv.currency}"
        )
    elif note.amount != 0 and not _split_of(inv, splits).creditable:
        reason = f"invoice {inv.invoice_id} has no positive line to credit"
    if reason is not None or inv is None:
        if report:
            book.skipped.append(
                f"credit note {note.credit_note_id} ({note.amount} {note.currency} minor units): "
                f"{reason}; no revenue reversed"
            )
        return None
    creditable = _split_of(inv, splits).creditable
    if note.amount == 0:
        return []
    shares = allocate(note.amount, [amount for _, amount in creditable])
    return [(ln, share) for (ln, _), share in zip(creditable, shares, strict=True)]


# --------------------------------------------------------------------------------------------
# Building


def build_schedules(
    invoices: Iterable[Mapping[str, Any]],
    invoice_lines: Iterable[Mapping[str, Any]],
    credit_notes: Iterable[Mapping[str, Any]],
    *,
    finance_timezone: str = "UTC",
) -> ScheduleResult:
    """Revenue schedule rows of every billed invoice line and credit note (see module doc).

    Pass every invoice a credit note may credit (not just the current partition's): a note
    whose invoice is missing produces nothing and is reported in `skipped`.
    """
    book = _load(invoices, invoice_lines, credit_notes, finance_timezone)
    billed = sorted(i for i, inv in book.invoices.items() if inv.status in BILLED_INVOICE_STATUSES)
    splits: dict[str, _Split] = {}
    rows: list[ScheduleRow] = []
    for invoice_id in billed:
        inv = book.invoices[invoice_id]
        for ln in inv.lines:
            if ln.kind in REVENUE_KINDS:
                pairs = zip(ln.months, allocate(ln.amount, ln.weights), strict=True)
                _emit(rows, "invoice", invoice_id, inv, inv.month, ln, pairs)
                continue
            per_month: dict[date, int] = defaultdict(int)
            if ln.kind == "discount":
                targets = _split_of(inv, splits).discounts[ln.line_id]
                if not targets:  # nothing to discount: the issue month takes it
                    per_month[inv.month] = ln.amount
                for target, share in targets:
                    parts = allocate(share, target.weights)
                    for month, part in zip(target.months, parts, strict=True):
                        per_month[month] += part
            else:  # tax: a liability, not revenue
                continue
            _emit(rows, "invoice", invoice_id, inv, inv.month, ln, per_month.items())

    credited: dict[str, int] = defaultdict(int)
    for note in sorted(book.credit_notes, key=lambda n: (n.month, n.credit_note_id)):
        shares = _credit_shares(note, book, splits, report=True)
        if shares is None:
            continue
        inv = book.invoices[note.invoice_id]
        total = sum(ln.amount for ln in inv.lines)
        credited[inv.invoice_id] += note.amount
        if note.amount < 0 or credited[inv.invoice_id] > total:
            book.warnings.append(
                f"credit note {note.credit_note_id}: credits {note.amount} {note.currency} minor "
                f"units, bringing invoice {inv.invoice_id}'s credits to "
                f"{credited[inv.invoice_id]} against its total of {total}; allocated anyway "
                "(it is the billing system's number)"
            )
        for ln, share in shares:
            if ln.kind == "tax":
                continue  # the tax share reverses tax payable, not revenue
            per_month = defaultdict(int)
            for month, part in zip(ln.months, allocate(-share, ln.weights), strict=True):
                per_month[max(month, note.month)] += part  # catch up months already past
            _emit(rows, "credit_note", note.credit_note_id, inv, note.month, ln, per_month.items())
    rows.sort(key=lambda r: (r.billing_month, r.source_id, r.line_id, r.month))
    return ScheduleResult(rows, book.skipped, book.warnings)


def _emit(
    rows: list[ScheduleRow],
    source: Source,
    source_id: str,
    inv: _Invoice,
    billing_month: date,
    line: _Line,
    amounts: Iterable[tuple[date, int]],
) -> None:
    stem = _id_stem((line.line_id,) if source == "invoice" else (source_id, line.line_id))
    for month, amount in amounts:
        if amount:
            rows.append(
                ScheduleRow(
                    f"{stem}-{_month_text(month)}",
                    source,
                    source_id,
                    inv.invoice_id,
                    line.line_id,
                    inv.customer_id,
                    inv.currency,
                    line.kind,
                    month,
                    amount,
                    billing_month,
                )
            )


# --------------------------------------------------------------------------------------------
# Outputs


def to_arrow(rows: Sequence[ScheduleRow]) -> pa.Table:
    """Rows as an Arrow table with the fixed `SCHEDULE_SCHEMA` (empty input included)."""
    return pa.table(
        [pa.array(list(map(attrgetter(f.name), rows)), type=f.type) for f in SCHEDULE_SCHEMA],
        schema=SCHEDULE_SCHEMA,
    )


def waterfall(rows: Iterable[ScheduleRow]) -> list[WaterfallPoint]:
    """Recognized revenue per (currency, month), credit notes netted in, sorted."""
    sums: dict[tuple[str, date], int] = defaultdict(int)
    for r in rows:
        sums[(r.currency, r.month)] += r.amount_minor
    return [WaterfallPoint(cur, month, amount) for (cur, month), amount in sorted(sums.items())]


# --------------------------------------------------------------------------------------------
# Identities and checks


def billed_sources(
    invoices: Iterable[Mapping[str, Any]],
    invoice_lines: Iterable[Mapping[str, Any]],
    credit_notes: Iterable[Mapping[str, Any]],
    *,
    finance_timezone: str = "UTC",
) -> list[BilledSource]:
    """Revenue billed per invoice and credit note, straight from the inputs (no months)."""
    book = _load(invoices, invoice_lines, credit_notes, finance_timezone)
    return [b for b, _ in _expected(book).values()]


def _expected(book: _Book) -> dict[tuple[str, str], tuple[BilledSource, dict[str, int]]]:
    """(source, source_id) -> (what it billed, line id -> what its rows must sum to)."""
    out: dict[tuple[str, str], tuple[BilledSource, dict[str, int]]] = {}
    splits: dict[str, _Split] = {}
    for inv in book.invoices.values():
        if inv.status not in BILLED_INVOICE_STATUSES:
            continue
        lines = {ln.line_id: ln.amount for ln in inv.lines if ln.kind != "tax"}
        billed = BilledSource(
            "invoice", inv.invoice_id, inv.invoice_id, inv.currency, inv.month, sum(lines.values())
        )
        out[("invoice", inv.invoice_id)] = (billed, lines)
    for note in book.credit_notes:
        shares = _credit_shares(note, book, splits, report=False)
        if shares is None:
            continue
        inv = book.invoices[note.invoice_id]
        lines = {ln.line_id: -share for ln, share in shares if ln.kind != "tax"}
        billed = BilledSource(
            "credit_note",
            note.credit_note_id,
            inv.invoice_id,
            inv.currency,
            note.month,
            sum(lines.values()),
        )
        out[("credit_note", note.credit_note_id)] = (billed, lines)
    return out


def check_line_sums(
    rows: Iterable[ScheduleRow],
    invoices: Iterable[Mapping[str, Any]],
    invoice_lines: Iterable[Mapping[str, Any]],
    credit_notes: Iterable[Mapping[str, Any]],
    *,
    finance_timezone: str = "UTC",
) -> list[str]:
    """Identity 1, recomputed from the inputs: every billed line's rows sum to the line (a
    discount to the discount), a credit note's rows to minus its share of each line; no rows
    for tax, unbilled or unknown sources; rows carry their source's currency, kind and
    billing month, and no credit-note row falls before its note's month. Returns problems."""
    book = _load(invoices, invoice_lines, credit_notes, finance_timezone)
    expected = _expected(book)
    kinds = {ln.line_id: ln.kind for inv in book.invoices.values() for ln in inv.lines}
    sums: dict[tuple[str, str, str], int] = defaultdict(int)
    problems: list[str] = []
    seen: set[tuple[str, str, str, date]] = set()
    ids: set[str] = set()
    for r in rows:
        key = (r.source, r.source_id, r.line_id)
        found = expected.get(key[:2])
        if found is None or r.line_id not in found[1]:
            problems.append(
                f"{_row_name(r)}: {r.amount_minor} {r.currency} minor units for a line that bills "
                "no revenue (tax, draft/void or unknown invoice, or not on the credited invoice)"
            )
            continue
        billed = found[0]
        sums[key] += r.amount_minor
        inv = book.invoices[billed.invoice_id]
        bad: list[str] = []
        if (*key, r.month) in seen:
            bad.append("more than one row")
        seen.add((*key, r.month))
        if r.schedule_id in ids:
            bad.append(f"schedule_id {r.schedule_id} is not unique")
        ids.add(r.schedule_id)
        if r.amount_minor == 0:
            bad.append("zero amount (zero rows are left out)")
        if r.invoice_id != inv.invoice_id or r.customer_id != inv.customer_id:
            bad.append(
                f"invoice/customer {r.invoice_id}/{r.customer_id}, "
                f"should be {inv.invoice_id}/{inv.customer_id}"
            )
        if r.currency != inv.currency:
            bad.append(f"currency {r.currency}, the invoice's is {inv.currency}")
        if r.kind != kinds[r.line_id]:
            bad.append(f"kind {r.kind}, the line's is {kinds[r.line_id]}")
        if r.billing_month != billed.billing_month:
            bad.append(f"billing_month {r.billing_month}, issued in {billed.billing_month}")
        if r.source == "credit_note" and r.month < billed.billing_month:
            bad.append(f"before the credit note's month {billed.billing_month:%Y-%m}")
        if bad:
            problems.append(f"{_row_name(r)}: {'; '.join(bad)}")
    for (source, source_id), (billed, lines) in sorted(expected.items()):
        for line_id, amount in sorted(lines.items()):
            got = sums.get((source, source_id, line_id), 0)
            if got != amount:
                problems.append(
                    f"{source} {source_id} (invoice {billed.invoice_id}) line {line_id} "
                    f"({kinds[line_id]}): rows sum to {got} {billed.currency} minor units, "
                    f"expected {amount}"
                )
    return problems


def _row_name(r: ScheduleRow) -> str:
    return f"{r.source} {r.source_id} line {r.line_id} month {r.month:%Y-%m} ({r.schedule_id})"


def deferred_balances(
    rows: Iterable[ScheduleRow], billed: Iterable[BilledSource]
) -> list[DeferredBalance]:
    """Per currency and month end (first billing month to last recognition month): billed to
    date, recognized to date and the rows still deferred, all of sources issued by then."""
    billed_d: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    recognized_d: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    deferred_d: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for b in billed:
        billed_d[b.currency][_month_index(b.billing_month)] += b.amount_minor
    for r in rows:
        issued, earned = _month_index(r.billing_month), _month_index(r.month)
        # Recognized from the later of its month and its source's issue; deferred in between.
        recognized_d[r.currency][max(issued, earned)] += r.amount_minor
        if earned > issued:
            deferred_d[r.currency][issued] += r.amount_minor
            deferred_d[r.currency][earned] -= r.amount_minor
    out: list[DeferredBalance] = []
    for cur in sorted({*billed_d, *recognized_d}):
        # Every key is some source's issue month or later: nothing is open before the first.
        keys = [*billed_d[cur], *recognized_d[cur], *deferred_d[cur]]
        b_total = r_total = d_total = 0
        for k in range(min(keys), max(keys) + 1):
            b_total += billed_d[cur].get(k, 0)
            r_total += recognized_d[cur].get(k, 0)
            d_total += deferred_d[cur].get(k, 0)
            month = _month_of(k)
            out.append(
                DeferredBalance(
                    cur, month, _next_month(month) - timedelta(days=1), b_total, r_total, d_total
                )
            )
    return out


def check_deferred(
    rows: Iterable[ScheduleRow],
    invoices: Iterable[Mapping[str, Any]],
    invoice_lines: Iterable[Mapping[str, Any]],
    credit_notes: Iterable[Mapping[str, Any]],
    *,
    finance_timezone: str = "UTC",
) -> list[str]:
    """Identity 2: at every month end, billed (from the inputs) minus recognized (rows) equals
    deferred (rows of later months). Returns one problem per currency and month end."""
    billed = billed_sources(
        invoices, invoice_lines, credit_notes, finance_timezone=finance_timezone
    )
    return [
        f"{b.currency} at {b.month_end}: billed to date {b.billed_to_date} - recognized to date "
        f"{b.recognized_to_date} = {b.billed_to_date - b.recognized_to_date} minor units, but "
        f"the rows deferred past it sum to {b.deferred_minor} (off by {b.difference})"
        for b in deferred_balances(rows, billed)
        if b.difference != 0
    ]
