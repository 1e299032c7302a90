"""The reconciliation's vocabulary: exception kinds, their columns, ids and the run summary.

Everything downstream (the state database, the reports, the CLI, the Dagster metadata) speaks
these names, so they live in one place. An exception's id is derived from its kind and the keys
that identify it, never from a run: the same problem found again is the same exception.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final, Literal

ExceptionKind = Literal[
    "missing_in_gateway",
    "missing_in_billing",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_settlement",
    "duplicate_payment",
    "status_mismatch",
    "fee_variance",
    "payout_mismatch",
    "invoice_payment_mismatch",
    "suggested_match",
]
EXCEPTION_KINDS: Final[tuple[str, ...]] = (
    "missing_in_gateway",
    "missing_in_billing",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_settlement",
    "duplicate_payment",
    "status_mismatch",
    "fee_variance",
    "payout_mismatch",
    "invoice_payment_mismatch",
    "suggested_match",
)

Severity = Literal["high", "medium", "low"]
SEVERITY: Final[dict[str, str]] = {
    "missing_in_gateway": "high",
    "missing_in_billing": "high",
    "amount_mismatch": "high",
    "currency_mismatch": "high",
    "duplicate_settlement": "high",
    "duplicate_payment": "high",
    "status_mismatch": "high",
    "payout_mismatch": "high",
    "fee_variance": "medium",
    "invoice_payment_mismatch": "medium",
    "suggested_match": "low",
}

Status = Literal["open", "resolved", "waived"]
STATUSES: Final[tuple[str, ...]] = ("open", "resolved", "waived")

#: The columns of exceptions.csv (and of each exception sheet of the Excel report, which adds
#: editable `note` after `status`).
EXCEPTION_COLUMNS: Final[tuple[str, ...]] = (
    "exception_id",
    "kind",
    "severity",
    "gateway",
    "currency",
    "amount_minor",
    "payment_id",
    "invoice_id",
    "settlement_line_id",
    "batch_id",
    "first_seen",
    "last_seen",
    "status",
    "explanation",
)

#: Age buckets (days since first seen) used by the reports.
AGING_BUCKETS: Final[tuple[tuple[str, int, int | None], ...]] = (
    ("0-7", 0, 7),
    ("8-30", 8, 30),
    ("31-60", 31, 60),
    ("60+", 61, None),
)

Bucket = Literal["matched", "pending", "exception"]
BUCKETS: Final[tuple[str, ...]] = ("matched", "pending", "exception")


def exception_id(kind: str, *keys: object) -> str:
    """Stable across runs: the kind and the keys that identify the problem, hashed."""
    text = "\x1f".join([kind, *("" if k is None else str(k) for k in keys)])
    return f"ex_{hashlib.sha256(text.encode('utf-8')).hexdigest()[:20]}"


def aging_bucket(first_seen: date, as_of: date) -> str:
    age = (as_of - first_seen).days
    for name, lo, hi in AGING_BUCKETS:
        if age >= lo and (hi is None or age <= hi):
            return name
    return AGING_BUCKETS[0][0]  # first seen "in the future" (a back-dated run): newest bucket


@dataclass(frozen=True)
class ReconException:
    """One problem an accountant has to look at (a row of exceptions.csv)."""

    exception_id: str
    kind: str
    severity: str
    gateway: str | None
    currency: str | None
    amount_minor: int  # amount at risk, >= 0, in `currency`
    payment_id: str | None
    invoice_id: str | None
    settlement_line_id: str | None
    batch_id: str | None
    first_seen: date
    last_seen: date
    status: str
    explanation: str
    #: The business day of what it is about (the payment's, the line's, the payout's): runs
    #: over a date range only auto-resolve exceptions whose day lies in that range.
    day: date | None = None

    def as_row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in EXCEPTION_COLUMNS}


@dataclass
class GatewayCurrencySummary:
    """One row of the summary sheet: the state of the books for a gateway and currency."""

    gateway: str
    currency: str
    billed_minor: int = 0  # signed sum of billing payments in scope
    settled_minor: int = 0  # signed gross of the payment lines in scope (no fees, no payouts)
    payments: int = 0
    lines: int = 0
    matched_payments: int = 0
    pending_payments: int = 0
    exception_payments: int = 0
    matched_minor: int = 0
    pending_minor: int = 0
    exception_minor: int = 0
    exceptions_by_kind: dict[str, int] = field(default_factory=dict)
    payouts: int = 0
    payouts_tied_out: int = 0

    @property
    def match_rate(self) -> float | None:
        """Matched payments / payments (a ratio for display, never money)."""
        return self.matched_payments / self.payments if self.payments else None


@dataclass
class Summary:
    """What summary.json holds and the reports show."""

    run_id: str
    start: date
    end: date
    as_of: date
    gateways: list[str]
    rows: list[GatewayCurrencySummary]
    exceptions_by_kind: dict[str, int]
    exceptions_by_age: dict[str, int]
    daily: list[dict[str, Any]]  # {"day": iso, "payments": n, "matched": n, "match_rate": r}
    conservation_ok: bool
    totals: dict[str, Any] = field(default_factory=dict)
    #: The validation summary: every data check that ran over the range (dataset, name,
    #: group, severity, passed, failing, checked, description).
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: Revenue waterfall of the invoices and credit notes issued in the range: recognized
    #: per currency and accounting month ({"currency", "month", "recognized_minor"}).
    revenue: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "gateways": self.gateways,
            "by_gateway_currency": [
                {
                    "gateway": r.gateway,
                    "currency": r.currency,
                    "billed_minor": r.billed_minor,
                    "settled_minor": r.settled_minor,
                    "payments": r.payments,
                    "lines": r.lines,
                    "matched_payments": r.matched_payments,
                    "pending_payments": r.pending_payments,
                    "exception_payments": r.exception_payments,
                    "matched_minor": r.matched_minor,
                    "pending_minor": r.pending_minor,
                    "exception_minor": r.exception_minor,
                    "exceptions_by_kind": dict(sorted(r.exceptions_by_kind.items())),
                    "match_rate": None if r.match_rate is None else round(r.match_rate, 6),
                    "payouts": r.payouts,
                    "payouts_tied_out": r.payouts_tied_out,
                }
                for r in self.rows
            ],
            "exceptions_by_kind": dict(sorted(self.exceptions_by_kind.items())),
            "exceptions_by_age": self.exceptions_by_age,
            "daily": self.daily,
            "conservation_ok": self.conservation_ok,
            "totals": self.totals,
            "checks": self.checks,
            "revenue_waterfall": self.revenue,
        }
