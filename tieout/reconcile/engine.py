"""The reconciliation engine: billing payments against gateway settlement lines.

Plain Python over Arrow tables (no Dagster, no connectors), so it is tested on frames in
milliseconds and the assets only feed it and persist what it returns. The heavy pass, the
reference match over every payment and line, runs in DuckDB as one full outer join of both
tables (no row-by-row Python), and the buckets, totals and matches are read from that join;
what is left after it (a small fraction of the rows: pairs in question, references shared by
several rows, rows without a partner) goes through the remaining passes in Python.

Passes, each recorded as the rule that made the match:

1. ``reference``: same gateway and kind, and the billing payment's ``gateway_reference`` equals
   the line's ``gateway_reference`` (charges) or ``modification_reference`` (refunds,
   chargebacks and their reversals). ``reference_split`` when several lines of one reference
   add up to the payment (a payment settled in parts); ``reference_merged`` when several
   payments of one reference add up to one line.
2. ``merchant_reference``: a line's merchant reference is the payment's invoice, same gateway,
   kind and amount, one candidate each way.
3. suggestions: same gateway, kind, currency and amount (presentment amount where the
   currencies differ) within ``suggest_window_days``; scored, reported as ``suggested_match``,
   never confirmed by the engine.
4. payout tie-out: each batch's lines net against its payout line.
5. fee schedule: a charge line's fee against the gateway's configured schedule.
6. invoices: total minus credit notes against succeeded charges minus refunds.

Scope: rows of the business days ``[start, end]`` are classified; rows of the days around them
(the caller passes a wider context) are only there to be matched against. Every payment and
every settlement line in scope ends in exactly one bucket: ``matched``, ``pending`` (a
succeeded payment younger than its gateway's settlement window, no line yet; a line of a batch
whose payout has not come yet) or ``exception`` (named by at least one exception). The engine
checks that the buckets add back to its inputs, per currency, on every run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

import duckdb
import pyarrow as pa

from tieout.canonical import local_days
from tieout.money import format_minor
from tieout.reconcile.model import (
    SEVERITY,
    GatewayCurrencySummary,
    ReconException,
    Summary,
    aging_bucket,
    exception_id,
)

PAYMENT_KINDS: Final = ("charge", "refund", "chargeback", "chargeback_reversal")
#: Lines that are not a payment: they reconcile through their batch's payout.
BATCH_CATEGORIES: Final = ("fee", "adjustment", "payout", "payout_reversal", "transfer", "other")


class ConservationError(AssertionError):
    """The buckets do not add back to the inputs: a bug in the engine, never bad input."""


@dataclass(frozen=True)
class FeeSchedule:
    """A gateway's contracted fee on charges: basis points of the settled gross plus a fixed
    fee per currency, plus a surcharge in basis points on converted (FX) charges."""

    percent_bps: int
    fixed_minor: Mapping[str, int] = field(default_factory=dict)
    fx_bps: int = 0
    tolerance_minor: int = 1

    def expected(self, gross_minor: int, currency: str, fx: bool) -> int:
        bps = self.percent_bps + (self.fx_bps if fx else 0)
        variable = (Decimal(abs(gross_minor)) * bps / Decimal(10_000)).to_integral_value(
            rounding=ROUND_HALF_UP
        )
        return int(variable) + self.fixed_minor.get(currency, 0)


@dataclass(frozen=True)
class EngineConfig:
    settlement_window_days: int = 7
    gateway_window_days: Mapping[str, int] = field(default_factory=dict)
    suggest_window_days: int = 3
    fee_schedules: Mapping[str, FeeSchedule] = field(default_factory=dict)
    #: Billing payment kinds a gateway's settlement files carry (default: all four).
    expected_kinds: Mapping[str, Sequence[str]] = field(default_factory=dict)
    gateways: Sequence[str] | None = None  # None: every gateway in the data

    def window(self, gateway: str) -> int:
        return self.gateway_window_days.get(gateway, self.settlement_window_days)

    def expects(self, gateway: str, kind: str) -> bool:
        return kind in self.expected_kinds.get(gateway, PAYMENT_KINDS)

    @property
    def context_days(self) -> int:
        """How far around the range the caller should load rows for matching."""
        longest = max([self.settlement_window_days, *self.gateway_window_days.values()])
        return longest + self.suggest_window_days


@dataclass(frozen=True)
class Match:
    payment_id: str
    line_id: str
    gateway: str
    rule: str


@dataclass
class ReconResult:
    exceptions: list[ReconException]
    matches: list[Match]  # made outside the bulk reference pass (splits, merges, merchant)
    match_table: pa.Table  # every match: payment_id, line_id, gateway, rule, payment day
    payment_buckets: pa.Table  # payment_id, gateway, currency, amount_minor, day, bucket
    line_buckets: pa.Table  # line_id, gateway, currency, gross_minor, day, bucket
    summary: Summary
    conservation: dict[str, dict[str, int]]  # currency -> input/bucket totals


# --------------------------------------------------------------------------------------------
# Preparing the inputs


def _with_day(table: pa.Table, column: str, timezone: str) -> pa.Table:
    if table.num_rows == 0:
        return table.append_column("day", pa.array([], pa.date32()))
    return table.append_column("day", local_days(table.column(column), timezone))


def _empty_like(names: Sequence[str]) -> pa.Table:
    return pa.table({n: pa.array([], pa.string()) for n in names})


PAY_SQL: Final = """
SELECT payment_id, invoice_id, kind, gateway, gateway_reference AS ref, currency,
       CASE WHEN kind IN ('charge', 'chargeback_reversal') THEN amount_minor
            ELSE -amount_minor END AS amt,
       status, created_at, day
FROM pay_in
WHERE kind IN ('charge', 'refund', 'chargeback', 'chargeback_reversal') {gateway_filter}
"""

LINE_SQL: Final = """
SELECT line_id, gateway, batch_id, category,
       CASE WHEN category = 'charge' THEN gateway_reference ELSE modification_reference END
           AS ref,
       merchant_reference, currency, gross_minor, fee_minor, net_minor,
       presentment_currency, presentment_amount_minor, occurred_at, day,
       source_file, source_row
FROM line_in
WHERE true {gateway_filter}
"""

#: Pass 1 as one full outer join on (gateway, kind, reference), payment lines only; each row
#: is a payment, a line, or a pair sharing a reference, with the pair's verdict. Keys shared by
#: several payments or lines show as several pair rows and are taken out afterwards (`mk`).
JOIN_SQL: Final = """
CREATE TEMP TABLE j AS
SELECT p.payment_id, l.line_id, coalesce(p.gateway, l.gateway) AS gateway,
       coalesce(p.kind, l.category) AS kind, coalesce(p.ref, l.ref) AS ref,
       p.amt, p.currency AS p_cur, p.status, p.day AS p_day,
       l.gross_minor, l.currency AS l_cur, l.day AS l_day,
       CASE WHEN p.payment_id IS NULL OR l.line_id IS NULL THEN NULL
            WHEN p.status <> 'succeeded' THEN 'status_mismatch'
            WHEN l.currency = p.currency THEN
                CASE WHEN l.gross_minor = p.amt THEN 'matched' ELSE 'amount_mismatch' END
            WHEN l.presentment_currency = p.currency THEN
                CASE WHEN l.presentment_amount_minor = p.amt THEN 'matched'
                     ELSE 'amount_mismatch' END
            ELSE 'currency_mismatch' END AS verdict
FROM p FULL OUTER JOIN (
    SELECT * FROM l WHERE category IN ('charge', 'refund', 'chargeback', 'chargeback_reversal')
) l ON p.gateway = l.gateway AND p.kind = l.category AND p.ref = l.ref
"""

#: Keys with more than one pair row: several payments and/or lines share the reference. Their
#: rows are marked `multi` and settled in Python; every other pair row is a 1:1 key.
MULTI_SQL: Final = """
CREATE TEMP TABLE mk AS
SELECT gateway, kind, ref FROM j WHERE verdict IS NOT NULL
GROUP BY gateway, kind, ref HAVING count(*) > 1
"""

MARK_MULTI_SQL: Final = """
UPDATE j SET verdict = 'multi'
WHERE verdict IS NOT NULL AND (gateway, kind, ref) IN (SELECT (gateway, kind, ref) FROM mk)
"""

#: Buckets of the payments of the range: straight from the join, plus the rows of shared keys.
BUCKET_P_SQL: Final = """
SELECT * FROM (
       SELECT r.payment_id, r.gateway, r.currency, r.kind, r.status,
              r.amt AS amount_minor, r.day,
              CASE WHEN f.payment_id IS NOT NULL THEN 'exception'
                   WHEN r.verdict = 'matched' OR s.rule IN
                       ('reference', 'reference_split', 'reference_merged',
                        'merchant_reference') THEN 'matched'
                   WHEN s.rule = 'pending' THEN 'pending'
                   ELSE NULL END AS bucket,
              coalesce(CASE WHEN r.verdict = 'matched' THEN 'reference' END, s.rule)
                  AS rule
       FROM (SELECT payment_id, gateway, p_cur AS currency, kind, status, amt,
                    p_day AS day, verdict
             FROM j WHERE payment_id IS NOT NULL
                 AND verdict IS DISTINCT FROM 'multi' AND p_day BETWEEN ? AND ?
             {multi_p}) r
       LEFT JOIN flag_p f USING (payment_id)
       LEFT JOIN state_p s USING (payment_id))
   WHERE bucket IS NOT NULL"""

#: Buckets of the lines of the range; batch lines (fees, payouts) follow their batch.
BUCKET_L_SQL: Final = """
SELECT r.*, CASE WHEN f.line_id IS NOT NULL THEN 'exception' ELSE 'matched' END
       AS bucket
   FROM (SELECT line_id, gateway, l_cur AS currency, kind AS category,
                gross_minor, l_day AS day
         FROM j WHERE line_id IS NOT NULL
             AND verdict IS DISTINCT FROM 'multi' AND l_day BETWEEN ? AND ?
         {multi_l}) r
   LEFT JOIN flag_l f USING (line_id)
   UNION ALL
   SELECT l.line_id, l.gateway, l.currency, l.category, l.gross_minor, l.day,
          CASE WHEN f.line_id IS NOT NULL THEN 'exception'
               WHEN b.bstate = 'matched' THEN 'matched'
               WHEN b.bstate = 'exception' THEN 'exception'
               ELSE 'pending' END
   FROM l LEFT JOIN flag_l f USING (line_id)
   LEFT JOIN bstate b USING (gateway, batch_id, currency)
   WHERE l.category NOT IN ('charge', 'refund', 'chargeback', 'chargeback_reversal')
       AND l.day BETWEEN ? AND ?"""

#: The payments a run must place in a bucket, per currency (see `inputs_in_scope`).
INPUT_P_SQL: Final = """
SELECT currency, count(*) AS n, sum(amt)::BIGINT AS total FROM (
       SELECT j.p_cur AS currency, j.amt FROM j
       LEFT JOIN expected e ON e.gateway = j.gateway AND e.kind = j.kind
       WHERE j.payment_id IS NOT NULL AND j.verdict IS DISTINCT FROM 'multi'
         AND j.p_day BETWEEN ? AND ?
         AND ((j.status = 'succeeded' AND e.kind IS NOT NULL)
              OR j.line_id IS NOT NULL
              OR j.payment_id IN (SELECT payment_id FROM matched_ids))
       {multi})
   GROUP BY currency"""


# --------------------------------------------------------------------------------------------
# The engine


class _Engine:
    def __init__(
        self,
        payments: pa.Table,
        lines: pa.Table,
        invoices: pa.Table,
        credit_notes: pa.Table,
        start: date,
        end: date,
        as_of: date,
        timezone: str,
        config: EngineConfig,
    ) -> None:
        self.start, self.end, self.as_of = start, end, as_of
        self.config = config
        self.con = duckdb.connect()
        self.con.execute("SET threads TO 2")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.register("pay_in", _with_day(payments, "created_at", timezone))
        self.con.register("line_in", _with_day(lines, "occurred_at", timezone))
        gateways = config.gateways
        gf = "" if gateways is None else "AND gateway IN (SELECT gateway FROM gateway_filter)"
        self.con.register(
            "gateway_filter", pa.table({"gateway": pa.array(list(gateways or []), pa.string())})
        )
        # Views, not copies: DuckDB scans the Arrow inputs in place, pass after pass.
        self.con.execute(f"CREATE TEMP VIEW p AS {PAY_SQL.format(gateway_filter=gf)}")
        self.con.execute(f"CREATE TEMP VIEW l AS {LINE_SQL.format(gateway_filter=gf)}")
        present = self.con.sql("SELECT DISTINCT gateway FROM p ORDER BY 1").fetchall()
        expected = [
            {"gateway": g, "kind": k}
            for (g,) in present
            for k in PAYMENT_KINDS
            if config.expects(g, k)
        ]
        schema = pa.schema([("gateway", pa.string()), ("kind", pa.string())])
        self.con.register("expected", pa.Table.from_pylist(expected, schema=schema))
        if "invoice_id" not in credit_notes.column_names:
            credit_notes = pa.table(
                {"invoice_id": pa.array([], pa.string()), "amount_minor": pa.array([], pa.int64())}
            )
        self.invoices = invoices
        self.credit_notes = credit_notes
        self.exceptions: dict[str, ReconException] = {}
        self.matches: list[Match] = []
        self.pay_state: dict[str, str] = {}  # payment_id -> rule, for residual payments
        self.line_state: dict[str, str] = {}
        # Rows of keys shared by several payments or lines, settled in Python (`_many`).
        self.multi_pays: list[dict[str, Any]] = []
        self.multi_lines: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------------------------

    def in_scope(self, day: date | None) -> bool:
        return day is not None and self.start <= day <= self.end

    def pick_day(self, *days: date | None) -> date | None:
        """An exception is about the first of its rows that lies in the range, so a problem
        that touches the range is reported by it (and auto-resolved only by runs over it)."""
        return next((d for d in days if self.in_scope(d)), days[0])

    def reported(self) -> list[ReconException]:
        found = sorted(self.exceptions.values(), key=lambda x: (x.kind, x.exception_id))
        return [x for x in found if self.in_scope(x.day)]

    def add(
        self,
        kind: str,
        keys: Sequence[object],
        *,
        gateway: str | None,
        currency: str | None,
        amount: int,
        explanation: str,
        day: date | None,
        payment_id: str | None = None,
        invoice_id: str | None = None,
        line_id: str | None = None,
        batch_id: str | None = None,
    ) -> None:
        xid = exception_id(kind, *keys)
        self.exceptions[xid] = ReconException(
            exception_id=xid,
            kind=kind,
            severity=SEVERITY[kind],
            gateway=gateway,
            currency=currency,
            amount_minor=abs(amount),
            payment_id=payment_id,
            invoice_id=invoice_id,
            settlement_line_id=line_id,
            batch_id=batch_id,
            first_seen=self.as_of,
            last_seen=self.as_of,
            status="open",
            explanation=explanation,
            day=day,
        )

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (
            self.con.sql(sql, params=list(params)).to_arrow_table().to_pylist()
        )
        return rows

    # -- pass 1: references --------------------------------------------------------------------

    def by_reference(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Pass 1; returns the payments and payment lines no reference joined, for the
        later passes (succeeded payments only: a failed or pending one without a line agrees
        with the gateway, and no later pass could match it)."""
        self.con.execute(JOIN_SQL)
        self.con.execute(MULTI_SQL)
        self.multi = self.con.execute("SELECT count(*) FROM mk").fetchall() != [(0,)]
        if self.multi:
            self.con.execute(MARK_MULTI_SQL)
        # Everything but the matched 1:1 pairs (a small share) is fetched in one scan per side
        # and settled in Python: pairs with a problem, shared keys, rows without a partner.
        self.con.execute(
            """CREATE TEMP TABLE resid AS
               SELECT payment_id, line_id, verdict FROM j
               WHERE verdict <> 'matched'
                  OR (line_id IS NULL AND status = 'succeeded') OR payment_id IS NULL"""
        )
        pays = {
            p["payment_id"]: p
            for p in self.rows(
                """SELECT * FROM p WHERE payment_id IN (SELECT payment_id FROM resid)
                   ORDER BY created_at, payment_id"""
            )
        }
        lns = {
            ln["line_id"]: ln
            for ln in self.rows(
                """SELECT * FROM l WHERE line_id IN (SELECT line_id FROM resid)
                   ORDER BY occurred_at, source_file, source_row, line_id"""
            )
        }
        resid = self.rows("SELECT * FROM resid ORDER BY payment_id, line_id")
        # 1:1 keys with a problem: exceptions naming both sides.
        for r in resid:
            if r["verdict"] not in (None, "multi"):
                ln = lns[r["line_id"]]
                self._pair_problem(
                    r["verdict"],
                    {
                        **pays[r["payment_id"]],
                        "l_line_id": ln["line_id"],
                        "l_currency": ln["currency"],
                        "gross_minor": ln["gross_minor"],
                        "presentment_currency": ln["presentment_currency"],
                        "presentment_amount_minor": ln["presentment_amount_minor"],
                        "l_day": ln["day"],
                    },
                )
        # Keys shared by several payments or several lines (splits, merges, duplicates).
        multi_p = {r["payment_id"] for r in resid if r["verdict"] == "multi"}
        multi_l = {r["line_id"] for r in resid if r["verdict"] == "multi"}
        self.multi_pays = [p for p in pays.values() if p["payment_id"] in multi_p]
        self.multi_lines = [ln for ln in lns.values() if ln["line_id"] in multi_l]
        by_key_p: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        by_key_l: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for p in self.multi_pays:
            by_key_p[(p["gateway"], p["kind"], p["ref"])].append(p)
        for ln in self.multi_lines:
            by_key_l[(ln["gateway"], ln["category"], ln["ref"])].append(ln)
        for key in sorted(by_key_p):
            self._many(by_key_p[key], by_key_l[key])
        lone_p = {r["payment_id"] for r in resid if r["line_id"] is None}
        lone_l = {r["line_id"] for r in resid if r["payment_id"] is None}
        return (
            [p for p in pays.values() if p["payment_id"] in lone_p],
            [ln for ln in lns.values() if ln["line_id"] in lone_l],
        )

    def _comparable(self, p: Mapping[str, Any], ln: Mapping[str, Any]) -> int | None:
        """The line's amount in the payment's currency, when the line states one."""
        if ln["currency"] == p["currency"]:
            return int(ln["gross_minor"])
        if (
            ln["presentment_currency"] == p["currency"]
            and ln["presentment_amount_minor"] is not None
        ):
            return int(ln["presentment_amount_minor"])
        return None

    def _pair_problem(self, verdict: str, r: Mapping[str, Any]) -> None:
        p_money = format_minor(r["amt"], r["currency"])
        line = {
            "currency": r["l_currency"],
            "gross_minor": r["gross_minor"],
            "presentment_currency": r["presentment_currency"],
            "presentment_amount_minor": r["presentment_amount_minor"],
        }
        common = {
            "gateway": r["gateway"],
            "payment_id": r["payment_id"],
            "invoice_id": r["invoice_id"],
            "line_id": r["l_line_id"],
            "day": self.pick_day(r["day"], r["l_day"]),
        }
        if verdict == "status_mismatch":
            self.add(
                "status_mismatch",
                (r["payment_id"], r["l_line_id"]),
                currency=r["currency"],
                amount=r["amt"],
                explanation=f"Billing records {r['kind']} {r['payment_id']} ({p_money}) as "
                f"{r['status']}, but {r['gateway']} settled it (line {r['l_line_id']}). "
                "Update the payment in billing or ask the gateway why it settled.",
                **common,
            )
        elif verdict == "amount_mismatch":
            got = self._comparable(r, line)
            assert got is not None
            self.add(
                "amount_mismatch",
                (r["payment_id"], r["l_line_id"]),
                currency=r["currency"],
                amount=got - r["amt"],
                explanation=f"{r['gateway']} settled {format_minor(got, r['currency'])} for "
                f"{r['kind']} {r['payment_id']}, but billing recorded {p_money} "
                f"(difference {format_minor(got - r['amt'], r['currency'])}).",
                **common,
            )
        else:
            self.add(
                "currency_mismatch",
                (r["payment_id"], r["l_line_id"]),
                currency=r["currency"],
                amount=r["amt"],
                explanation=f"Billing recorded {r['kind']} {r['payment_id']} in "
                f"{r['currency']}, but {r['gateway']} settled it in {r['l_currency']} "
                f"without stating the {r['currency']} amount, so the two cannot be compared.",
                **common,
            )

    def _many(self, pays: list[dict[str, Any]], lns: list[dict[str, Any]]) -> None:
        """One reference, several payments and/or lines: splits, merges, then duplicates."""
        gateway = pays[0]["gateway"]
        if len(pays) == 1:
            p = pays[0]
            amounts = [self._comparable(p, ln) for ln in lns]
            if (
                p["status"] == "succeeded"
                and None not in amounts
                and sum(a for a in amounts if a is not None) == p["amt"]
            ):
                for ln in lns:
                    self._matched(p, ln, "reference_split")
                return
        if len(lns) == 1 and all(p["status"] == "succeeded" for p in pays):
            ln = lns[0]
            amounts = [self._comparable(p, ln) for p in pays]
            same_currency = len({p["currency"] for p in pays}) == 1
            if (
                same_currency
                and amounts[0] is not None
                and sum(p["amt"] for p in pays) == amounts[0]
            ):
                for p in pays:
                    self._matched(p, ln, "reference_merged")
                return
        # Pair equal amounts first, in time order; what is left over is a duplicate.
        free = list(lns)
        paired: list[tuple[dict[str, Any], dict[str, Any]]] = []
        unpaired: list[dict[str, Any]] = []
        for p in pays:
            hit = next((ln for ln in free if self._comparable(p, ln) == p["amt"]), None)
            if hit is None:
                unpaired.append(p)
            else:
                free.remove(hit)
                paired.append((p, hit))
        for p in list(unpaired):  # then any line, to report the amount difference
            if free:
                ln = free.pop(0)
                unpaired.remove(p)
                paired.append((p, ln))
        for p, ln in paired:
            got = self._comparable(p, ln)
            verdict = (
                "status_mismatch"
                if p["status"] != "succeeded"
                else "currency_mismatch"
                if got is None
                else "matched"
                if got == p["amt"]
                else "amount_mismatch"
            )
            if verdict == "matched":
                self._matched(p, ln, "reference")
            else:
                self._pair_problem(
                    verdict,
                    {
                        **p,
                        "l_line_id": ln["line_id"],
                        "l_currency": ln["currency"],
                        "gross_minor": ln["gross_minor"],
                        "presentment_currency": ln["presentment_currency"],
                        "presentment_amount_minor": ln["presentment_amount_minor"],
                        "l_day": ln["day"],
                    },
                )
        first = paired[0][0] if paired else pays[0]
        for ln in free:
            self.add(
                "duplicate_settlement",
                (ln["line_id"],),
                gateway=gateway,
                currency=ln["currency"],
                amount=ln["gross_minor"],
                explanation=f"{gateway} settled {first['kind']} {first['payment_id']} more than "
                f"once: line {ln['line_id']} ({format_minor(ln['gross_minor'], ln['currency'])}"
                f", {ln['day']}) repeats a settlement already matched. Ask {gateway} to reverse "
                "it or refund the customer.",
                day=self.pick_day(ln["day"], first["day"]),
                payment_id=first["payment_id"],
                invoice_id=first["invoice_id"],
                line_id=ln["line_id"],
                batch_id=ln["batch_id"],
            )
        for p in unpaired:
            self.add(
                "duplicate_payment",
                (p["payment_id"],),
                gateway=gateway,
                currency=p["currency"],
                amount=p["amt"],
                explanation=f"Billing has more than one {p['kind']} with {gateway} reference "
                f"{p['ref']}: {p['payment_id']} ({format_minor(p['amt'], p['currency'])}) has no "
                "settlement of its own. Remove the duplicate from billing.",
                day=p["day"],
                payment_id=p["payment_id"],
                invoice_id=p["invoice_id"],
            )

    def _matched(self, p: Mapping[str, Any], ln: Mapping[str, Any], rule: str) -> None:
        self.matches.append(Match(p["payment_id"], ln["line_id"], p["gateway"], rule))
        self.pay_state[p["payment_id"]] = rule
        self.line_state[ln["line_id"]] = rule

    # -- pass 2 and 3: unmatched rows ----------------------------------------------------------

    def by_merchant_reference(
        self, pays: list[dict[str, Any]], lns: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        def key_p(p: Mapping[str, Any]) -> tuple[object, ...]:
            return (p["gateway"], p["kind"], p["invoice_id"])

        def key_l(ln: Mapping[str, Any]) -> tuple[object, ...]:
            return (ln["gateway"], ln["category"], ln["merchant_reference"])

        cand_p: dict[tuple[object, ...], list[dict[str, Any]]] = defaultdict(list)
        for p in pays:
            if p["invoice_id"] and p["status"] == "succeeded":
                cand_p[key_p(p)].append(p)
        cand_l: dict[tuple[object, ...], list[dict[str, Any]]] = defaultdict(list)
        for ln in lns:
            if ln["merchant_reference"]:
                cand_l[key_l(ln)].append(ln)
        done_p: set[str] = set()
        done_l: set[str] = set()
        for key, group in cand_l.items():
            ps = cand_p.get(key, [])
            for ln in group:
                hits = [p for p in ps if self._comparable(p, ln) == p["amt"]]
                hits = [p for p in hits if p["payment_id"] not in done_p]
                same = [o for o in group if o is not ln and any(
                    self._comparable(p, o) == p["amt"] for p in hits
                )]  # fmt: skip
                if len(hits) == 1 and not same:
                    self._matched(hits[0], ln, "merchant_reference")
                    done_p.add(hits[0]["payment_id"])
                    done_l.add(ln["line_id"])
        return (
            [p for p in pays if p["payment_id"] not in done_p],
            [ln for ln in lns if ln["line_id"] not in done_l],
        )

    def suggestions_and_leftovers(
        self, pays: list[dict[str, Any]], lns: list[dict[str, Any]]
    ) -> None:
        window = self.config.suggest_window_days
        open_pays = [
            p
            for p in pays
            if p["status"] == "succeeded" and self.config.expects(p["gateway"], p["kind"])
        ]
        # Indexed by what must be equal, so each line looks at its few candidates only.
        by_amount: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
        for p in open_pays:
            by_amount[(p["gateway"], p["kind"], p["currency"], p["amt"])].append(p)
        for ln in lns:
            if not self.in_scope(ln["day"]):
                continue
            amount = format_minor(ln["gross_minor"], ln["currency"])
            self.add(
                "missing_in_billing",
                (ln["line_id"],),
                gateway=ln["gateway"],
                currency=ln["currency"],
                amount=ln["gross_minor"],
                explanation=f"{ln['gateway']} settled a {ln['category']} of {amount} on "
                f"{ln['day']} (reference {ln['ref'] or 'none'}, line {ln['line_id']}) that "
                "billing has no record of. Record it in billing or dispute it with the gateway.",
                day=ln["day"],
                line_id=ln["line_id"],
                batch_id=ln["batch_id"],
            )
            best: tuple[float, dict[str, Any]] | None = None
            keys = [(ln["gateway"], ln["category"], ln["currency"], ln["gross_minor"])]
            if ln["presentment_currency"] and ln["presentment_amount_minor"] is not None:
                keys.append(
                    (
                        ln["gateway"],
                        ln["category"],
                        ln["presentment_currency"],
                        ln["presentment_amount_minor"],
                    )
                )
            candidates = [p for key in keys for p in by_amount.get(key, [])]
            for p in candidates:
                if self._comparable(p, ln) != p["amt"]:
                    continue
                gap = abs((p["day"] - ln["day"]).days)
                if gap > window:
                    continue
                score = round(1.0 - gap / (window + 1), 3)
                if best is None or score > best[0]:
                    best = (score, p)
            if best is not None:
                score, p = best
                self.add(
                    "suggested_match",
                    (ln["line_id"], p["payment_id"]),
                    gateway=ln["gateway"],
                    currency=ln["currency"],
                    amount=ln["gross_minor"],
                    explanation=f"Line {ln['line_id']} ({amount}, {ln['day']}) may be "
                    f"{p['kind']} {p['payment_id']} ({p['day']}): same gateway, kind and amount, "
                    f"no shared reference (score {score}). Confirm by resolving the two "
                    "exceptions with a note, or waive this suggestion.",
                    day=ln["day"],
                    payment_id=p["payment_id"],
                    invoice_id=p["invoice_id"],
                    line_id=ln["line_id"],
                    batch_id=ln["batch_id"],
                )
        for p in pays:
            if not self.in_scope(p["day"]):
                continue
            money = format_minor(p["amt"], p["currency"])
            if p["status"] != "succeeded":
                continue  # failed or still pending in billing, and no gateway line: consistent
            if not self.config.expects(p["gateway"], p["kind"]):
                self.pay_state[p["payment_id"]] = "not_in_settlement_files"
                continue
            age = (self.as_of - p["day"]).days
            window_days = self.config.window(p["gateway"])
            if age < window_days:
                self.pay_state[p["payment_id"]] = "pending"
                continue
            self.add(
                "missing_in_gateway",
                (p["payment_id"],),
                gateway=p["gateway"],
                currency=p["currency"],
                amount=p["amt"],
                explanation=f"Billing recorded {p['kind']} {p['payment_id']} of {money} on "
                f"{p['day']} as succeeded, but {p['gateway']} has not settled it after {age} "
                f"days (settlement window {window_days} days). Check it in the "
                f"{p['gateway']} dashboard.",
                day=p["day"],
                payment_id=p["payment_id"],
                invoice_id=p["invoice_id"],
            )

    # -- pass 4: payouts -----------------------------------------------------------------------

    def payouts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Batch tie-outs; returns (gateway, currency) -> (payouts in scope, tied out)."""
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.batch_state: dict[tuple[str, str, str], str] = {}
        for b in self.rows(
            """SELECT gateway, batch_id, currency,
                      sum(net_minor)::BIGINT AS diff,
                      count(*) FILTER (WHERE category IN ('payout', 'payout_reversal')) AS np,
                      max(day) FILTER (WHERE category IN ('payout', 'payout_reversal')) AS pday,
                      (sum(net_minor) FILTER (
                          WHERE category IN ('payout', 'payout_reversal')))::BIGINT AS paid,
                      min(line_id) FILTER (WHERE category = 'payout') AS payout_line
               FROM l GROUP BY gateway, batch_id, currency
               ORDER BY gateway, batch_id, currency"""
        ):
            key = (b["gateway"], b["batch_id"], b["currency"])
            if not b["np"]:
                self.batch_state[key] = "pending"
                continue
            ok = b["diff"] == 0
            if not self.in_scope(b["pday"]):
                # Paid out outside the range: a run over the payout's day judges it.
                self.batch_state[key] = "matched" if ok else "pending"
                continue
            self.batch_state[key] = "matched" if ok else "exception"
            c = counts[(b["gateway"], b["currency"])]
            c[0] += 1
            c[1] += int(ok)
            if not ok:
                lines_net = b["diff"] - b["paid"]
                self.add(
                    "payout_mismatch",
                    (b["gateway"], b["batch_id"], b["currency"]),
                    gateway=b["gateway"],
                    currency=b["currency"],
                    amount=b["diff"],
                    explanation=f"{b['gateway']} paid out {format_minor(-b['paid'], b['currency'])}"
                    f" for batch {b['batch_id']} on {b['pday']}, but its lines net to "
                    f"{format_minor(lines_net, b['currency'])} (difference "
                    f"{format_minor(b['diff'], b['currency'])}). Ask {b['gateway']} for the "
                    "payout breakdown.",
                    day=b["pday"],
                    line_id=b["payout_line"],
                    batch_id=b["batch_id"],
                )
        return {k: (v[0], v[1]) for k, v in counts.items()}

    # -- pass 5: fees --------------------------------------------------------------------------

    def fees(self) -> None:
        """Fees against the schedules, in SQL: only the lines off schedule come back."""
        schedules = self.config.fee_schedules
        if not schedules:
            return
        rows = []
        for gateway, sch in sorted(schedules.items()):
            fixed = dict(sch.fixed_minor)
            for cur in sorted(set(fixed) | {""}):
                rows.append(
                    {
                        "gateway": gateway,
                        "currency": cur,
                        "bps": sch.percent_bps,
                        "fx_bps": sch.fx_bps,
                        "fixed": fixed.get(cur, 0),
                        "tolerance": sch.tolerance_minor,
                    }
                )
        self.con.register("sched", pa.Table.from_pylist(rows))
        matched = [{"line_id": m.line_id, "payment_id": m.payment_id} for m in self.matches]
        schema = pa.schema([("line_id", pa.string()), ("payment_id", pa.string())])
        self.con.register("m_rule", pa.Table.from_pylist(matched, schema=schema))
        # Half-up of |gross| x bps / 10000 in integers: (2 a b + 10000) // 20000, in BIGINT
        # (DuckDB raises on overflow, which takes a gross above 4e14 minor units). The lines
        # off schedule (few) are found first; only they look up their matched payment.
        self.con.execute(
            """CREATE TEMP TABLE off_fee AS
               SELECT * FROM (
                   SELECT l.*, s.tolerance,
                          ((2 * abs(l.gross_minor)
                             * (s.bps + CASE WHEN l.presentment_currency IS NULL THEN 0
                                             ELSE s.fx_bps END) + 10000) // 20000
                          + coalesce(sc.fixed, 0))::BIGINT AS exp
                   FROM l JOIN sched s ON s.gateway = l.gateway AND s.currency = ''
                   LEFT JOIN sched sc ON sc.gateway = l.gateway AND sc.currency = l.currency
                   WHERE l.category = 'charge' AND l.day BETWEEN ? AND ?)
               WHERE abs(fee_minor - exp) > tolerance""",
            [self.start, self.end],
        )
        for ln in self.rows(
            """SELECT f.*, coalesce(j.payment_id, m.payment_id) AS matched_payment
               FROM off_fee f
               LEFT JOIN (SELECT line_id, payment_id FROM j WHERE verdict = 'matched') j
                   ON j.line_id = f.line_id
               LEFT JOIN m_rule m ON m.line_id = f.line_id
               ORDER BY f.line_id"""
        ):
            expected = int(ln["exp"])
            diff = ln["fee_minor"] - expected
            cur = ln["currency"]
            self.add(
                "fee_variance",
                (ln["line_id"],),
                gateway=ln["gateway"],
                currency=cur,
                amount=diff,
                explanation=f"{ln['gateway']} charged a fee of {format_minor(ln['fee_minor'], cur)}"
                f" on line {ln['line_id']} ({format_minor(ln['gross_minor'], cur)}); the "
                f"configured schedule gives {format_minor(expected, cur)} (difference "
                f"{format_minor(diff, cur)}, tolerance {ln['tolerance']} minor units).",
                day=ln["day"],
                payment_id=ln["matched_payment"],
                line_id=ln["line_id"],
                batch_id=ln["batch_id"],
            )

    # -- pass 6: invoices ----------------------------------------------------------------------

    def invoice_checks(self) -> None:
        if self.invoices.num_rows == 0:
            return
        self.con.register("inv", self.invoices)
        self.con.register("cn", self.credit_notes)
        flagged = self.rows(
            """WITH paid AS (
                   SELECT invoice_id,
                          sum(CASE WHEN kind = 'charge' AND status = 'succeeded' THEN amt
                                   WHEN kind = 'refund' AND status IN ('succeeded', 'pending')
                                       THEN amt
                                   ELSE 0 END)::BIGINT AS received,
                          max(day) FILTER (WHERE status = 'succeeded') AS last_day,
                          bool_or(day BETWEEN ? AND ?) AS touched
                   FROM p WHERE invoice_id IS NOT NULL GROUP BY invoice_id),
               credit AS (SELECT invoice_id, sum(amount_minor)::BIGINT AS credited
                          FROM cn GROUP BY invoice_id)
               SELECT * FROM (
                   SELECT inv.invoice_id, inv.status, inv.currency, inv.total_minor,
                          coalesce(credit.credited, 0) AS credited, paid.received,
                          paid.last_day
                   FROM inv JOIN paid USING (invoice_id)
                   LEFT JOIN credit USING (invoice_id)
                   WHERE paid.touched)
               WHERE (status = 'paid' AND received <> total_minor - credited)
                   OR (status IN ('void', 'uncollectible', 'draft') AND received <> 0)
                   OR (status = 'open' AND total_minor - credited > 0
                       AND received >= total_minor - credited)
               ORDER BY invoice_id""",
            [self.start, self.end],
        )
        # The gateway an accountant looks in, for the few invoices flagged.
        self.con.register(
            "flagged_inv",
            pa.table({"invoice_id": pa.array([r["invoice_id"] for r in flagged], pa.string())}),
        )
        gateways = dict(
            self.con.execute(
                """SELECT invoice_id, min(gateway) FROM p
                   WHERE invoice_id IN (SELECT invoice_id FROM flagged_inv) GROUP BY ALL"""
            ).fetchall()
        )
        for r in flagged:
            r["gateway"] = gateways.get(r["invoice_id"])
            expected = r["total_minor"] - r["credited"]
            received = r["received"]
            status = r["status"]
            bad = (
                (status == "paid" and received != expected)
                or (status in ("void", "uncollectible", "draft") and received != 0)
                or (status == "open" and expected > 0 and received >= expected)
            )
            if not bad:
                continue
            cur = r["currency"]
            # A paid invoice risks the difference; any other status expected nothing yet.
            at_risk = received - expected if status == "paid" else received
            self.add(
                "invoice_payment_mismatch",
                (r["invoice_id"],),
                gateway=r["gateway"],
                currency=cur,
                amount=at_risk,
                explanation=_invoice_explanation(
                    r["invoice_id"], status, r["total_minor"], r["credited"], received, cur
                ),
                day=r["last_day"] or self.end,
                invoice_id=r["invoice_id"],
            )

    # -- buckets and the summary ---------------------------------------------------------------

    def buckets(self, reported: Sequence[ReconException]) -> tuple[pa.Table, pa.Table]:
        """Every in-scope row's bucket: `exception` when a reported exception names it."""
        named = [x for x in reported if x.kind != "suggested_match"]
        flag_p = sorted({x.payment_id for x in named if x.payment_id is not None})
        flag_l = sorted({x.settlement_line_id for x in named if x.settlement_line_id})
        self.con.register("flag_p", pa.table({"payment_id": pa.array(flag_p, pa.string())}))
        self.con.register("flag_l", pa.table({"line_id": pa.array(flag_l, pa.string())}))
        self.con.register(
            "state_p",
            pa.table(
                {
                    "payment_id": pa.array(list(self.pay_state), pa.string()),
                    "rule": pa.array(list(self.pay_state.values()), pa.string()),
                }
            ),
        )
        self.con.register(
            "state_l",
            pa.table(
                {
                    "line_id": pa.array(list(self.line_state), pa.string()),
                    "rule": pa.array(list(self.line_state.values()), pa.string()),
                }
            ),
        )
        batch_rows = [
            {"gateway": g, "batch_id": b, "currency": c, "bstate": s}
            for (g, b, c), s in self.batch_state.items()
        ]
        batch_schema = pa.schema(
            [("gateway", pa.string()), ("batch_id", pa.string()), ("currency", pa.string()),
             ("bstate", pa.string())]
        )  # fmt: skip
        self.con.register("bstate", pa.Table.from_pylist(batch_rows, schema=batch_schema))
        rng = [self.start, self.end]
        # 1:1 keys and unjoined payments straight from the join (one row each); the rows of
        # keys shared by several payments or lines from the inputs (few).
        multi_p = (
            """UNION ALL
               SELECT p.payment_id, p.gateway, p.currency, p.kind, p.status, p.amt, p.day,
                      NULL AS verdict
               FROM p JOIN mk USING (gateway, kind, ref) WHERE p.day BETWEEN ? AND ?"""
            if self.multi
            else ""
        )
        pays = self.con.sql(
            BUCKET_P_SQL.format(multi_p=multi_p),
            params=rng * (2 if self.multi else 1),
        ).to_arrow_table()
        multi_l = (
            """UNION ALL
               SELECT l.line_id, l.gateway, l.currency, l.category, l.gross_minor, l.day
               FROM l JOIN mk ON mk.gateway = l.gateway AND mk.kind = l.category
                   AND mk.ref = l.ref
               WHERE l.day BETWEEN ? AND ?"""
            if self.multi
            else ""
        )
        lns = self.con.sql(
            BUCKET_L_SQL.format(multi_l=multi_l),
            params=rng * (3 if self.multi else 2),
        ).to_arrow_table()
        return pays, lns

    def inputs_in_scope(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per currency, what went in, decided independently of the buckets: the payments of
        the range expected to settle (succeeded, of a kind the gateway's files carry) or named
        by a line, whether by reference or by a later pass; and every line of the range."""
        ids = sorted({m.payment_id for m in self.matches})
        self.con.register("matched_ids", pa.table({"payment_id": pa.array(ids, pa.string())}))
        multi = (
            """UNION ALL
               SELECT p.currency, p.amt FROM p JOIN mk USING (gateway, kind, ref)
               WHERE p.day BETWEEN ? AND ?"""
            if self.multi
            else ""
        )
        pays = self.rows(
            INPUT_P_SQL.format(multi=multi),
            [self.start, self.end] * (2 if self.multi else 1),
        )
        lns = self.rows(
            """SELECT currency, count(*) AS n, sum(gross_minor)::BIGINT AS total FROM l
               WHERE day BETWEEN ? AND ? GROUP BY currency""",
            [self.start, self.end],
        )
        return pays, lns

    def match_table(self) -> pa.Table:
        """Every match of a payment in the range (unordered: the writer orders the files)."""
        extra = sorted(self.matches, key=lambda m: (m.payment_id, m.line_id))
        schema = pa.schema(
            [("payment_id", pa.string()), ("line_id", pa.string()), ("gateway", pa.string()),
             ("rule", pa.string())]
        )  # fmt: skip
        self.con.register(
            "extra_matches", pa.Table.from_pylist([m.__dict__ for m in extra], schema=schema)
        )
        return self.con.sql(
            """SELECT payment_id, line_id, gateway, 'reference' AS rule, p_day AS day
               FROM j WHERE verdict = 'matched' AND p_day BETWEEN ? AND ?
               UNION ALL
               SELECT m.payment_id, m.line_id, m.gateway, m.rule, p.day
               FROM extra_matches m JOIN p USING (payment_id)
               WHERE p.day BETWEEN ? AND ?""",
            params=[self.start, self.end] * 2,
        ).to_arrow_table()


def _invoice_explanation(
    invoice_id: str, status: str, total: int, credited: int, received: int, cur: str
) -> str:
    expected = total - credited
    if status == "paid":
        return (
            f"Invoice {invoice_id} is paid: total {format_minor(total, cur)} less credit notes "
            f"{format_minor(credited, cur)} is {format_minor(expected, cur)}, but its succeeded "
            f"charges less refunds come to {format_minor(received, cur)}. Refund or credit the "
            "difference, or correct the credit note."
        )
    if status == "open":
        return (
            f"Invoice {invoice_id} is still open, but its succeeded charges less refunds "
            f"({format_minor(received, cur)}) already cover its total less credit notes "
            f"({format_minor(expected, cur)}). Mark it paid in billing."
        )
    return (
        f"Invoice {invoice_id} is {status}, yet it received {format_minor(received, cur)} in "
        f"succeeded charges less refunds; a {status} invoice should have received nothing. "
        "Refund the customer or correct the invoice's status."
    )


def _totals(
    con: duckdb.DuckDBPyConnection, pays: pa.Table, lns: pa.Table
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The bucket tables folded to the few groups the conservation check and summary need."""
    con.register("pays_b", pays)
    con.register("lines_b", lns)
    p: list[dict[str, Any]] = (
        con.sql(
            """SELECT gateway, currency, bucket, day, count(*) AS n,
                      sum(amount_minor)::BIGINT AS total
               FROM pays_b GROUP BY ALL ORDER BY ALL"""
        )
        .to_arrow_table()
        .to_pylist()
    )
    ln: list[dict[str, Any]] = (
        con.sql(
            """SELECT gateway, currency, bucket,
                      category IN ('charge', 'refund', 'chargeback', 'chargeback_reversal')
                          AS is_payment,
                      count(*) AS n, sum(gross_minor)::BIGINT AS total
               FROM lines_b GROUP BY ALL ORDER BY ALL"""
        )
        .to_arrow_table()
        .to_pylist()
    )
    return p, ln


def _conservation(
    pays: Iterable[Mapping[str, Any]],
    lns: Iterable[Mapping[str, Any]],
    p_in: Iterable[Mapping[str, Any]],
    l_in: Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, int]]:
    """Per currency: input totals and the bucket totals that must add back to them."""
    out: dict[str, dict[str, int]] = {}

    def acc(rows: Iterable[Mapping[str, Any]], prefix: str, by_bucket: bool) -> None:
        for row in rows:
            d = out.setdefault(row["currency"], defaultdict(int))
            name = f"{prefix}_{row['bucket']}" if by_bucket else f"{prefix}_input"
            d[name + "_minor"] += row["total"] or 0
            d[name + "_count"] += row["n"]

    acc(p_in, "payments", False)
    acc(pays, "payments", True)
    acc(l_in, "lines", False)
    acc(lns, "lines", True)
    return {cur: dict(sorted(v.items())) for cur, v in sorted(out.items())}


def check_conservation(conservation: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Problems with the invariant (empty when it holds)."""
    problems = []
    for cur, d in conservation.items():
        for side in ("payments", "lines"):
            for unit in ("minor", "count"):
                total = d.get(f"{side}_input_{unit}", 0)
                parts = sum(d.get(f"{side}_{b}_{unit}", 0) for b in ("matched", "pending",
                                                                     "exception"))  # fmt: skip
                if total != parts:
                    problems.append(f"{cur} {side} {unit}: inputs {total} != buckets {parts}")
    return problems


def reconcile(
    payments: pa.Table,
    lines: pa.Table,
    invoices: pa.Table,
    credit_notes: pa.Table,
    *,
    start: date,
    end: date,
    as_of: date | None = None,
    timezone: str = "UTC",
    config: EngineConfig | None = None,
    run_id: str = "",
) -> ReconResult:
    """Reconcile the business days [start, end]; rows outside them are context only."""
    config = config or EngineConfig()
    as_of = as_of or end
    e = _Engine(payments, lines, invoices, credit_notes, start, end, as_of, timezone, config)
    try:
        pays, lns = e.by_reference()
        pays, lns = e.by_merchant_reference(pays, lns)
        e.suggestions_and_leftovers(pays, lns)
        payout_counts = e.payouts()
        e.fees()
        e.invoice_checks()
        in_scope = e.reported()
        p_buckets, l_buckets = e.buckets(in_scope)
        p_in, l_in = e.inputs_in_scope()
        p_totals, l_totals = _totals(e.con, p_buckets, l_buckets)
        conservation = _conservation(p_totals, l_totals, p_in, l_in)
        problems = check_conservation(conservation)
        if problems:
            raise ConservationError("; ".join(problems))
        summary = summarize(run_id, start, end, as_of, p_totals, l_totals, in_scope, payout_counts)
        return ReconResult(
            exceptions=in_scope,
            matches=sorted(e.matches, key=lambda m: (m.payment_id, m.line_id)),
            match_table=e.match_table(),
            payment_buckets=p_buckets,
            line_buckets=l_buckets,
            summary=summary,
            conservation=conservation,
        )
    finally:
        e.con.close()


def summarize(
    run_id: str,
    start: date,
    end: date,
    as_of: date,
    pays: Iterable[Mapping[str, Any]],
    lns: Iterable[Mapping[str, Any]],
    exceptions: Iterable[ReconException],
    payout_counts: Mapping[tuple[str, str], tuple[int, int]],
) -> Summary:
    rows: dict[tuple[str, str], GatewayCurrencySummary] = {}

    def row(gateway: str, currency: str) -> GatewayCurrencySummary:
        if (gateway, currency) not in rows:
            rows[(gateway, currency)] = GatewayCurrencySummary(gateway, currency)
        return rows[(gateway, currency)]

    daily: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    n_pays = n_lines = 0
    for a in pays:
        r = row(a["gateway"], a["currency"])
        n, money = a["n"], a["total"] or 0
        n_pays += n
        r.payments += n
        r.billed_minor += money
        setattr(r, f"{a['bucket']}_payments", getattr(r, f"{a['bucket']}_payments") + n)
        setattr(r, f"{a['bucket']}_minor", getattr(r, f"{a['bucket']}_minor") + money)
        daily[a["day"]][0] += n
        if a["bucket"] == "matched":
            daily[a["day"]][1] += n
    for a in lns:
        r = row(a["gateway"], a["currency"])
        n_lines += a["n"]
        r.lines += a["n"]
        if a["is_payment"]:
            r.settled_minor += a["total"] or 0
    by_kind: dict[str, int] = defaultdict(int)
    by_age: dict[str, int] = {"0-7": 0, "8-30": 0, "31-60": 0, "60+": 0}
    for x in exceptions:
        by_kind[x.kind] += 1
        by_age[aging_bucket(x.first_seen, as_of)] += 1
        if x.gateway is not None and x.currency is not None:
            r = row(x.gateway, x.currency)
            r.exceptions_by_kind[x.kind] = r.exceptions_by_kind.get(x.kind, 0) + 1
    for (gateway, currency), (n, tied) in payout_counts.items():
        r = row(gateway, currency)
        r.payouts, r.payouts_tied_out = n, tied
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return Summary(
        run_id=run_id,
        start=start,
        end=end,
        as_of=as_of,
        gateways=sorted({g for g, _ in rows}),
        rows=[rows[k] for k in sorted(rows)],
        exceptions_by_kind=dict(sorted(by_kind.items())),
        exceptions_by_age=by_age,
        daily=[
            {
                "day": d.isoformat(),
                "payments": daily[d][0],
                "matched": daily[d][1],
                "match_rate": round(daily[d][1] / daily[d][0], 6) if daily[d][0] else None,
            }
            for d in days
        ],
        conservation_ok=True,
        totals={
            "payments": n_pays,
            "lines": n_lines,
            "exceptions": sum(by_kind.values()),
        },
    )
