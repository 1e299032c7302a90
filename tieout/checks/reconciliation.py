"""Native checks of a reconciliation run: conservation, match rate, stale open exceptions.

Decisions are made on integer counts and minor units only; the match rate appears in the
details as a ratio for display, but the thresholds are compared exactly
(``matched x denominator < numerator x payments``, the threshold as an exact fraction).

A check never raises for bad data; it returns a `CheckResult` saying what failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from fractions import Fraction
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from tieout.checks.result import SAMPLE_SIZE, CheckResult, sample
from tieout.connectors.exception_store import StoredException
from tieout.reconcile.engine import ReconResult, check_conservation
from tieout.reconcile.model import BUCKETS
from tieout.settings import ChecksSettings

__all__ = [
    "CONSERVATION",
    "DATASET",
    "MATCH_RATE_FLOOR",
    "MATCH_RATE_TARGET",
    "STALE_EXCEPTIONS",
    "reconciliation_checks",
]

DATASET: Final = "recon/exceptions"

CONSERVATION: Final = "recon_conservation"
MATCH_RATE_FLOOR: Final = "recon_match_rate_floor"
MATCH_RATE_TARGET: Final = "recon_match_rate_target"
STALE_EXCEPTIONS: Final = "recon_stale_exceptions"

_DEFAULT_SETTINGS: Final = ChecksSettings()


def reconciliation_checks(
    result: ReconResult,
    *,
    stored: Sequence[StoredException] = (),
    as_of: date | None = None,
    settings: ChecksSettings = _DEFAULT_SETTINGS,
) -> list[CheckResult]:
    """Every reconciliation check. `stored` is the exception store's content (for the stale
    check); `as_of` defaults to the run's as_of."""
    day = as_of if as_of is not None else result.summary.as_of
    return [
        _conservation_check(result),
        *_match_rate_checks(result, settings),
        _stale_check(stored, day, settings.max_open_age_days),
    ]


# --------------------------------------------------------------------------------------------
# Conservation


def _duplicates(table: pa.Table, key: str) -> list[tuple[str, int]]:
    """Ids that occur more than once in `table[key]`, with their counts, sorted."""
    if table.num_rows == 0 or key not in table.column_names:
        return []
    counts = table.group_by(key, use_threads=False).aggregate([(key, "count")])
    dup = counts.filter(pc.greater(counts.column(f"{key}_count"), 1))
    dup = dup.sort_by([(key, "ascending")])
    return [(str(r[key]), int(r[f"{key}_count"])) for r in dup.to_pylist()]


def _outside_buckets(table: pa.Table, key: str) -> tuple[int, list[str]]:
    """Rows whose bucket is missing or not one of matched/pending/exception."""
    if table.num_rows == 0:
        return 0, []
    bucket = table.column("bucket")
    text = pa.string() if pa.types.is_dictionary(bucket.type) else bucket.type
    known = pc.fill_null(pc.is_in(bucket, value_set=pa.array(BUCKETS, text)), False)
    bad = table.filter(pc.invert(known))
    if bad.num_rows == 0:
        return 0, []
    shown = bad.slice(0, SAMPLE_SIZE).select([key, "bucket"]).to_pylist()
    return bad.num_rows, [f"{key} {r[key]} has bucket {r['bucket']!r}" for r in shown]


def _conservation_check(result: ReconResult) -> CheckResult:
    problems = check_conservation(result.conservation)
    dup_payments = _duplicates(result.payment_buckets, "payment_id")
    dup_lines = _duplicates(result.line_buckets, "line_id")
    stray_p, stray_p_sample = _outside_buckets(result.payment_buckets, "payment_id")
    stray_l, stray_l_sample = _outside_buckets(result.line_buckets, "line_id")
    failing = len(problems) + len(dup_payments) + len(dup_lines) + stray_p + stray_l
    found = [
        *problems,
        *(f"payment_id {i} in {n} bucket rows" for i, n in dup_payments),
        *(f"line_id {i} in {n} bucket rows" for i, n in dup_lines),
        *stray_p_sample,
        *stray_l_sample,
    ]
    details: dict[str, Any] = {}
    if failing:
        details = {
            "totals_not_adding_up": len(problems),
            "payments_in_several_buckets": len(dup_payments),
            "lines_in_several_buckets": len(dup_lines),
            "payments_without_bucket": stray_p,
            "lines_without_bucket": stray_l,
        }
    return CheckResult(
        name=CONSERVATION,
        dataset=DATASET,
        passed=failing == 0,
        severity="error",
        description="Every payment and settlement line in scope sits in exactly one bucket "
        "(matched, pending or exception), and per currency the buckets add back to the inputs, "
        "in count and in money. A failure is a tieout bug, not bad data: do not post the run.",
        failing=failing,
        checked=result.payment_buckets.num_rows + result.line_buckets.num_rows,
        sample=sample(found),
        details=details,
    )


# --------------------------------------------------------------------------------------------
# Match rate


def _exact(rate: float) -> Fraction:
    """The threshold as written in the settings (0.95 is 19/20, not the binary float)."""
    return Fraction(repr(rate))


def _below(matched: int, total: int, threshold: Fraction) -> bool:
    """matched / total < threshold, in integers."""
    return matched * threshold.denominator < threshold.numerator * total


def _unmatched_sample(result: ReconResult) -> tuple[str, ...]:
    table = result.payment_buckets
    if table.num_rows == 0:
        return ()
    bucket = table.column("bucket")
    unmatched = table.filter(pc.fill_null(pc.not_equal(bucket, "matched"), True))
    unmatched = unmatched.sort_by([("payment_id", "ascending")]).slice(0, SAMPLE_SIZE)
    return sample(unmatched.column("payment_id").to_pylist())


def _match_rate_checks(result: ReconResult, settings: ChecksSettings) -> list[CheckResult]:
    rows = result.summary.rows
    # Payments still in transit (pending) are not failures yet: the rate is over the settled
    # or flagged ones, so a quiet day of young payments cannot trip the floor.
    total = sum(r.payments - r.pending_payments for r in rows)
    matched = sum(r.matched_payments for r in rows)
    floor, target = _exact(settings.min_match_rate), _exact(settings.warn_match_rate)
    details: dict[str, Any] = {
        "payments_settled_or_flagged": total,
        "pending_payments": sum(r.pending_payments for r in rows),
        "matched_payments": matched,
        "match_rate": round(matched / total, 6) if total else None,
        "min_match_rate": settings.min_match_rate,
        "warn_match_rate": settings.warn_match_rate,
        "by_gateway_currency": [
            {
                "gateway": r.gateway,
                "currency": r.currency,
                "payments": r.payments,
                "matched_payments": r.matched_payments,
                "match_rate": None if r.match_rate is None else round(r.match_rate, 6),
            }
            for r in rows
            if r.payments
        ],
    }
    below_floor = total > 0 and _below(matched, total, floor)
    below_target = total > 0 and _below(matched, total, target)
    unmatched = _unmatched_sample(result) if below_target else ()
    return [
        CheckResult(
            name=MATCH_RATE_FLOOR,
            dataset=DATASET,
            passed=not below_floor,
            severity="error",
            description="At least min_match_rate of the payments in scope (pending ones left "
            "out) are matched to a settlement line. Below it something systemic is wrong "
            "(a missing settlement file, a changed reference format), so posting is blocked.",
            failing=total - matched if below_floor else 0,
            checked=total,
            sample=unmatched if below_floor else (),
            details=details | {"threshold": settings.min_match_rate},
        ),
        CheckResult(
            name=MATCH_RATE_TARGET,
            dataset=DATASET,
            passed=not below_target,
            severity="warn",
            description="At least warn_match_rate of the payments in scope (pending ones left "
            "out) are matched to a settlement line. Below it the exceptions need attention, "
            "but posting goes on.",
            failing=total - matched if below_target else 0,
            checked=total,
            sample=unmatched,
            details=details | {"threshold": settings.warn_match_rate},
        ),
    ]


# --------------------------------------------------------------------------------------------
# Stale exceptions


def _stale_check(stored: Sequence[StoredException], as_of: date, max_age_days: int) -> CheckResult:
    cutoff = as_of - timedelta(days=max_age_days)
    open_ = [x for x in stored if x.status == "open"]
    stale = sorted(
        (x for x in open_ if x.first_seen < cutoff and not (x.note or "").strip()),
        key=lambda x: (x.first_seen, x.exception_id),
    )
    details: dict[str, Any] = {"max_open_age_days": max_age_days, "as_of": as_of.isoformat()}
    if stale:
        by_kind: dict[str, int] = {}
        for x in stale:
            by_kind[x.kind] = by_kind.get(x.kind, 0) + 1
        details |= {
            "oldest_first_seen": stale[0].first_seen.isoformat(),
            "by_kind": dict(sorted(by_kind.items())),
        }
    return CheckResult(
        name=STALE_EXCEPTIONS,
        dataset=DATASET,
        passed=not stale,
        severity="warn",
        description=f"No open exception is older than max_open_age_days ({max_age_days} days) "
        "without a note. Work it, or write down why it is still open.",
        failing=len(stale),
        checked=len(open_),
        sample=sample(x.exception_id for x in stale),
        details=details,
    )
