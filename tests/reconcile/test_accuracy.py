"""The engine against the demo's answer key: on generated billing data and settlement files at
several seeds and sizes, the exceptions found must be exactly the injected discrepancies, kind by
kind. A per-kind confusion table is printed (pytest -s) and is part of any failure message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import pytest

from tieout.connectors.settlements.base import lines_to_arrow
from tieout.demo import DemoConfig, generate
from tieout.demo_settlements import _FEE_BPS, _FEE_FIXED, _FX_BPS, generate_settlements
from tieout.reconcile.engine import EngineConfig, FeeSchedule, ReconResult, reconcile

START = date(2026, 10, 1)
DAYS = 30
END = START + timedelta(days=DAYS - 1)
CASES = [(42, 200), (7, 120), (3, 400)]

#: What identifies an exception of each kind in the answer key.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "missing_in_gateway": ("payment_id",),
    "missing_in_billing": ("line_id",),
    "duplicate_settlement": ("line_id",),
    "fee_variance": ("line_id",),
    "amount_mismatch": ("payment_id", "line_id"),
    "payout_mismatch": ("gateway", "batch_id"),
    "invoice_payment_mismatch": ("invoice_id",),
}
#: Kinds without a rule above (none expected) are keyed by everything they name.
FALLBACK = ("gateway", "payment_id", "line_id", "batch_id", "invoice_id")


def key(kind: str, fields: dict[str, str | None]) -> tuple[Hashable, ...]:
    return (kind, *(fields[f] for f in KEY_FIELDS.get(kind, FALLBACK)))


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score(
    found: Iterable[tuple[Hashable, ...]], want: Iterable[tuple[Hashable, ...]]
) -> dict[str, Score]:
    found_set, want_set = set(found), set(want)
    out: dict[str, Score] = defaultdict(Score)
    for k in found_set & want_set:
        out[str(k[0])].tp += 1
    for k in found_set - want_set:
        out[str(k[0])].fp += 1
    for k in want_set - found_set:
        out[str(k[0])].fn += 1
    return dict(sorted(out.items()))


def table(title: str, scores: dict[str, Score], misses: list[str]) -> str:
    rows = [title, f"{'kind':<26} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"]
    for kind, s in scores.items():
        rows.append(
            f"{kind:<26} {s.tp:>4} {s.fp:>4} {s.fn:>4} {s.precision:>9.3f} {s.recall:>7.3f}"
        )
    rows += misses
    return "\n".join(rows)


@dataclass(frozen=True)
class Run:
    result: ReconResult
    want: list[tuple[Hashable, ...]]
    found: list[tuple[Hashable, ...]]


@pytest.fixture(scope="module", params=CASES, ids=[f"seed{s}-customers{c}" for s, c in CASES])
def demo_run(request: pytest.FixtureRequest) -> Run:
    seed, customers = request.param
    data = generate(DemoConfig(start=START, days=DAYS, seed=seed, customers=customers))
    settlements = generate_settlements(data)
    schedules = {
        g: FeeSchedule(_FEE_BPS[g], _FEE_FIXED[g], _FX_BPS[g], tolerance_minor=0) for g in _FEE_BPS
    }
    config = EngineConfig(
        fee_schedules=schedules,
        # Braintree reports disputes outside its settlement files.
        expected_kinds={"braintree": ("charge", "refund")},
    )
    result = reconcile(
        data.to_arrow("payments"),
        lines_to_arrow(settlements.all_lines()),
        data.to_arrow("invoices"),
        data.to_arrow("credit_notes"),
        start=START,
        end=END,
        as_of=END,
        config=config,
        run_id=f"accuracy-{seed}-{customers}",
    )
    want = [
        key(
            a.kind,
            {
                "gateway": a.gateway,
                "payment_id": a.payment_id,
                "line_id": a.line_id,
                "batch_id": a.batch_id,
                "invoice_id": a.invoice_id,
            },
        )
        for a in settlements.answer_key
    ]
    found = [
        key(
            x.kind,
            {
                "gateway": x.gateway,
                "payment_id": x.payment_id,
                "line_id": x.settlement_line_id,
                "batch_id": x.batch_id,
                "invoice_id": x.invoice_id,
            },
        )
        for x in result.exceptions
    ]
    return Run(result, want, found)


def test_exceptions_equal_the_answer_key_kind_by_kind(
    demo_run: Run, request: pytest.FixtureRequest
) -> None:
    scores = score(demo_run.found, demo_run.want)
    misses = [f"missed: {k}" for k in sorted(set(demo_run.want) - set(demo_run.found), key=str)]
    misses += [f"extra:  {k}" for k in sorted(set(demo_run.found) - set(demo_run.want), key=str)]
    report = table(request.node.callspec.id, scores, misses)
    print("\n" + report)
    # The demo injects every kind it keys: an empty answer key would prove nothing.
    assert set(KEY_FIELDS) <= set(scores), report
    assert len(demo_run.found) == len(set(demo_run.found)), "an exception reported twice\n" + report
    assert all(s.precision == 1.0 and s.recall == 1.0 for s in scores.values()), report


def test_demo_run_conserves_and_matches_most_payments(demo_run: Run) -> None:
    result = demo_run.result
    assert result.summary.conservation_ok
    buckets = result.payment_buckets.column("bucket").to_pylist()
    assert buckets.count("matched") > 0.9 * len(buckets)
    assert "suggested_match" not in result.summary.exceptions_by_kind
