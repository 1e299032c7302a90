"""The canonical settlement line every gateway parser produces, and what parsers share.

One row per money movement, signed from the merchant's balance (money in positive), in the
settlement currency's minor units, with `net_minor = gross_minor - fee_minor` always. A parser
either returns every line of a file or raises `SettlementFileError` naming the file and line:
nothing from a rejected file is ever loaded partially.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Final, Literal, get_args

import pyarrow as pa

from tieout.errors import InputDataError
from tieout.money import is_known_currency

Category = Literal[
    "charge",
    "refund",
    "chargeback",
    "chargeback_reversal",
    "fee",
    "adjustment",
    "payout",
    "payout_reversal",
    "transfer",
    "other",
]
CATEGORIES: Final[tuple[str, ...]] = get_args(Category)
GATEWAYS: Final = ("stripe", "adyen", "paypal", "braintree")


@dataclass(frozen=True, slots=True)
class SettlementLine:
    gateway: str
    line_id: str
    batch_id: str
    category: Category
    gateway_reference: str | None
    modification_reference: str | None
    merchant_reference: str | None
    occurred_at: datetime  # timezone-aware; stored as UTC
    available_on: date | None
    currency: str
    gross_minor: int
    fee_minor: int
    net_minor: int
    presentment_currency: str | None
    presentment_amount_minor: int | None
    exchange_rate: str | None  # exact decimal string
    source_file: str
    source_row: int

    def __post_init__(self) -> None:
        # These are parser bugs, not bad input: a parser must never emit such a line.
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}")
        if self.net_minor != self.gross_minor - self.fee_minor:
            raise ValueError(
                f"{self.line_id}: net {self.net_minor} != gross {self.gross_minor} - fee "
                f"{self.fee_minor}"
            )
        for amount in (self.gross_minor, self.fee_minor, self.net_minor):
            if type(amount) is not int:
                raise TypeError(f"{self.line_id}: money must be int minor units, got {amount!r}")
        if not is_known_currency(self.currency) or self.currency != self.currency.upper():
            raise ValueError(f"{self.line_id}: currency {self.currency!r} is not normalized")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() != timedelta(0):
            raise ValueError(f"{self.line_id}: occurred_at must be timezone-aware UTC")


SETTLEMENT_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(SettlementLine))

SETTLEMENT_LINE_SCHEMA: Final = pa.schema(
    [
        pa.field("gateway", pa.string(), nullable=False),
        pa.field("line_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("gateway_reference", pa.string()),
        pa.field("modification_reference", pa.string()),
        pa.field("merchant_reference", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("available_on", pa.date32()),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("gross_minor", pa.int64(), nullable=False),
        pa.field("fee_minor", pa.int64(), nullable=False),
        pa.field("net_minor", pa.int64(), nullable=False),
        pa.field("presentment_currency", pa.string()),
        pa.field("presentment_amount_minor", pa.int64()),
        pa.field("exchange_rate", pa.string()),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ]
)
assert tuple(SETTLEMENT_LINE_SCHEMA.names) == SETTLEMENT_COLUMNS


FindingKind = Literal["batch_not_zero", "control_mismatch"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A tie-out that did not hold. Reported (a reconciliation exception later), never raised."""

    gateway: str
    kind: FindingKind
    batch_id: str
    currency: str
    expected_minor: int
    actual_minor: int
    source_file: str
    message: str


@dataclass(frozen=True, slots=True)
class ControlTotal:
    """A total a gateway states without itemizing it (e.g. Braintree's settlement batch summary):
    no money movement of its own, it is checked against the lines of other files instead."""

    gateway: str
    batch_id: str  # the batch whose lines it totals (same convention as SettlementLine.batch_id)
    kind: str  # what it totals, in the gateway's words (e.g. "sale", "credit")
    amount: str  # exact decimal string in major units, as stated (the currency may be implicit)
    currency: str | None  # when the file states it
    count: int | None
    source_file: str
    source_row: int


@dataclass(frozen=True)
class ParsedFile:
    gateway: str
    format: str  # e.g. "stripe.balance_change_from_activity.itemized", "paypal.stl"
    lines: tuple[SettlementLine, ...]
    findings: tuple[Finding, ...] = ()
    controls: tuple[ControlTotal, ...] = ()


class SettlementFileError(InputDataError):
    """A file that cannot be used as a whole. Names the file, the line (1-based) and the fix."""

    def __init__(
        self, message: str, *, file: str, line: int | None = None, fix: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.reason = message
        self.fix = fix
        where = f"{file}, line {line}" if line is not None else file
        super().__init__(f"{where}: {message}" + (f" ({fix})" if fix else ""))


def make_line_id(gateway: str, *parts: object) -> str:
    """A line id from the gateway's own keys: stable across re-deliveries and file names."""
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return f"{gateway}_{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}"


def unique_line_ids(gateway: str, keyed: Sequence[tuple[object, ...]]) -> list[str]:
    """Line ids for rows whose natural keys may repeat inside a file (identical rows are two
    movements): the n-th repeat of a key gets n as an extra part, so ids stay stable."""
    seen: dict[tuple[object, ...], int] = defaultdict(int)
    out = []
    for key in keyed:
        n = seen[key]
        seen[key] += 1
        out.append(make_line_id(gateway, *key, n) if n else make_line_id(gateway, *key))
    return out


def batch_findings(lines: Iterable[SettlementLine], source_file: str) -> list[Finding]:
    """Every batch with a payout line must net to zero, the payout line included."""
    nets: dict[tuple[str, str, str], int] = defaultdict(int)
    has_payout: set[tuple[str, str, str]] = set()
    for line in lines:
        key = (line.gateway, line.batch_id, line.currency)
        nets[key] += line.net_minor
        if line.category in ("payout", "payout_reversal"):
            has_payout.add(key)
    out = []
    for key in sorted(has_payout):
        if nets[key] != 0:
            gateway, batch, currency = key
            out.append(
                Finding(
                    gateway=gateway,
                    kind="batch_not_zero",
                    batch_id=batch,
                    currency=currency,
                    expected_minor=0,
                    actual_minor=nets[key],
                    source_file=source_file,
                    message=f"batch {batch} ({currency}) does not tie out: its lines and payout "
                    f"net to {nets[key]} minor units instead of 0",
                )
            )
    return out


def lines_to_arrow(lines: Sequence[SettlementLine]) -> pa.Table:
    cols = {name: [getattr(line, name) for line in lines] for name in SETTLEMENT_COLUMNS}
    return pa.Table.from_pydict(cols, schema=SETTLEMENT_LINE_SCHEMA)
