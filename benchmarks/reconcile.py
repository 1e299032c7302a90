"""Benchmark: the reconciliation engine against a bare DuckDB full outer join of the same tables.

Generates N canonical billing payments and about N canonical settlement lines (vectorized numpy
and pyarrow, not the demo generator) over 30 business days: four gateways, USD/EUR/GBP/JPY,
mostly charges with some refunds, chargebacks and reversals, FX settlements with presentment
amounts, batches closed by payout lines, invoices (N/2) and credit notes, plus a discrepancy
mix: ~0.2% missing at the gateway, ~0.2% missing in billing, ~0.1% amount off, ~0.05%
duplicate settlements, a few splits, payments without a gateway reference (merchant-reference
pass), fee variances, payouts that do not tie out and invoices that do not add up.

Then times, in the same run and on the same Arrow tables (best of --repeat runs each):
  * tieout: `reconcile(...)`, every pass, the buckets, the conservation check and the summary
  * baseline: payments FULL OUTER JOIN lines on (gateway, kind, reference) in DuckDB, counted
and prints `reconcile_vs_join_ratio=<x> peak_rss_mb=<m>` as its last line (peak RSS of the
whole process, generation included).

    python benchmarks/reconcile.py --rows 1000000 [--seed 7] [--repeat 3] [--no-fees]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.reconcile.engine import EngineConfig, FeeSchedule, reconcile
from tieout.schema import TABLES

START: Final = date(2026, 1, 1)
DAYS: Final = 30
END: Final = START + timedelta(days=DAYS - 1)
DAY_US: Final = 86_400_000_000
START_US: Final = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
END_US: Final = START_US + DAYS * DAY_US - 1  # the last microsecond of the range
EPOCH_DAY: Final = (START - date(1970, 1, 1)).days
PERIOD_DAYS: Final = 2  # a payout every two days; the last period's batches are still open

GATEWAYS: Final = ("stripe", "adyen", "paypal", "braintree")
GATEWAY_P: Final = (0.45, 0.25, 0.15, 0.15)
CURRENCIES: Final = ("USD", "EUR", "GBP", "JPY")
CURRENCY_P: Final = (0.50, 0.25, 0.15, 0.10)
KINDS: Final = ("charge", "refund", "chargeback", "chargeback_reversal")
KIND_P: Final = (0.90, 0.07, 0.025, 0.005)
CATEGORIES: Final = (*KINDS, "fee", "payout")
FEE, PAYOUT = 4, 5
STATUSES: Final = ("succeeded", "failed", "pending")
#: gateway_reference / modification_reference prefixes (codes index this tuple).
PREFIXES: Final = ("ch_", "re_", "dp_", "dpr_", "chx_", "dpx_", "po_")
CHX, DPX, PO = 4, 5, 6
#: Settlement currency per gateway (row) and billing currency (column); another one means FX.
SETTLES_IN: Final = np.array(
    [[0, 1, 2, 0], [0, 1, 1, 0], [0, 1, 2, 3], [0, 1, 2, 0]], dtype=np.int8
)
#: Minor units of the settlement currency per 100 minor units billed (billed row, settled col).
FX_PER_100: Final = np.full((4, 4), 100, dtype=np.int64)
FX_PER_100[3, 0] = 66  # JPY -> USD at 0.0066 (yen have no decimals)
FX_PER_100[2, 1] = 117  # GBP -> EUR at 1.17
RATES: Final = {(3, 0): "0.0066", (2, 1): "1.17"}
FEE_BPS: Final = np.array([290, 180, 349, 259], dtype=np.int64)
FX_BPS: Final = np.array([100, 60, 0, 100], dtype=np.int64)
FEE_FIXED: Final = np.array(  # gateway (row) x settlement currency (column)
    [[30, 25, 20, 0], [11, 11, 0, 0], [49, 39, 30, 40], [49, 35, 30, 0]], dtype=np.int64
)
DISPUTE_FEE: Final = 1500
ADYEN_BATCH_FEE: Final = 500

#: Discrepancy rates, as fractions of the payments.
MISSING_AT_GATEWAY: Final = 0.002
MISSING_IN_BILLING: Final = 0.002
AMOUNT_OFF: Final = 0.001
DUPLICATE: Final = 0.0005
SPLIT: Final = 0.0002
NO_BILLING_REF: Final = 0.0005
FEE_OFF: Final = 0.0002
PAYOUT_OFF: Final = 0.02  # of the payouts
INVOICE_OFF: Final = 0.0005  # of the paid invoices


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


# --------------------------------------------------------------------------------------------
# Arrow helpers


def names(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pc.take(pa.array(values, pa.string()), pa.array(codes))


def nulled(values: pa.Array, null: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(null), pa.scalar(None, values.type), values)


def ids(prefix: str | pa.Array, nums: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    out = pc.binary_join_element_wise(prefix, pc.cast(pa.array(nums), pa.string()), "")
    return out if null is None else nulled(out, null)


def timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def masked(values: np.ndarray, null: np.ndarray) -> pa.Array:
    return pa.array(values, mask=null)


def pick(rng: np.random.Generator, pool: np.ndarray, rate: float, n: int) -> np.ndarray:
    """About rate * n members of pool (at least one when pool is not empty), in pool order."""
    k = min(pool.size, max(1, round(rate * n))) if pool.size else 0
    return np.sort(rng.choice(pool, size=k, replace=False)) if k else pool[:0]


def amounts(rng: np.random.Generator, currency: np.ndarray) -> np.ndarray:
    """Minor units: a median of ~40.00 (~6,000 yen), long tailed."""
    mu = np.where(currency == 3, 8.7, 8.3)
    return np.clip(np.exp(rng.normal(mu, 1.0)), 50, 5_000_000).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Billing


class Billing:
    """The payments as numpy columns (codes into the tuples above), before Arrow."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        kind = rng.choice(4, size=n, p=KIND_P).astype(np.int8)
        gw = rng.choice(4, size=n, p=GATEWAY_P).astype(np.int8)
        cur = rng.choice(4, size=n, p=CURRENCY_P).astype(np.int8)
        self.n_invoices = max(1, n // 2)
        inv_cur = rng.choice(4, size=self.n_invoices, p=CURRENCY_P).astype(np.int8)
        charges = np.flatnonzero(kind == 0)
        inv = np.full(n, -1, dtype=np.int64)
        with_inv = charges[rng.random(charges.size) < 0.92]
        inv[with_inv] = rng.integers(0, self.n_invoices, with_inv.size)
        cur[with_inv] = inv_cur[inv[with_inv]]
        amt = amounts(rng, cur)
        ts = START_US + rng.integers(0, DAYS * DAY_US, n)
        status = np.zeros(n, dtype=np.int8)
        status[charges] = rng.choice(3, size=charges.size, p=(0.97, 0.02, 0.01))
        # Refunds, chargebacks and reversals follow a succeeded charge of the same customer.
        ok = charges[status[charges] == 0]
        mods = np.flatnonzero(kind != 0)
        orig = np.full(n, -1, dtype=np.int64)
        if ok.size:
            orig[mods] = ok[rng.integers(0, ok.size, mods.size)]
        else:
            kind[mods] = 0
            mods = mods[:0]
        o = orig[mods]
        gw[mods], cur[mods], inv[mods] = gw[o], cur[o], inv[o]
        ts[mods] = np.minimum(ts[o] + rng.integers(DAY_US // 5, 6 * DAY_US, mods.size), END_US)
        partial = (kind[mods] == 1) & (rng.random(mods.size) < 0.4)
        amt[mods] = np.where(partial, rng.integers(1, amt[o] + 1), amt[o])
        refunds = mods[kind[mods] == 1]
        status[refunds] = np.where(rng.random(refunds.size) < 0.02, 2, 0)
        self.n = n
        self.kind, self.gw, self.cur, self.amt, self.ts = kind, gw, cur, amt, ts
        self.status, self.inv, self.orig = status, inv, orig
        self.customer = rng.integers(0, max(1_000, n // 20), n)
        succeeded = np.flatnonzero(status == 0)
        billed_charges = succeeded[(kind[succeeded] == 0) & (inv[succeeded] >= 0)]
        self.no_ref = pick(rng, billed_charges, NO_BILLING_REF, n)
        self.settled = np.setdiff1d(
            succeeded, pick(rng, succeeded, MISSING_AT_GATEWAY, n), assume_unique=True
        )

    def signed(self) -> np.ndarray:
        return np.where((self.kind == 0) | (self.kind == 3), self.amt, -self.amt)

    def table(self) -> pa.Table:
        i = np.arange(self.n)
        ref_null = np.zeros(self.n, dtype=bool)
        ref_null[self.no_ref] = True
        ts = timestamps(self.ts)
        cols = {
            "payment_id": ids("pay_", i),
            "customer_id": ids("cus_", self.customer),
            "invoice_id": ids("in_", self.inv, self.inv < 0),
            "kind": names(KINDS, self.kind),
            "original_payment_id": ids("pay_", self.orig, self.orig < 0),
            "gateway": names(GATEWAYS, self.gw),
            "gateway_reference": ids(names(PREFIXES, self.kind), i, ref_null),
            "amount_minor": pa.array(self.amt, pa.int64()),
            "currency": names(CURRENCIES, self.cur),
            "status": names(STATUSES, self.status),
            "created_at": ts,
            "updated_at": ts,
        }
        return pa.table(cols, schema=TABLES["payments"].arrow_schema())

    def invoices(self, rng: np.random.Generator) -> tuple[pa.Table, pa.Table, int]:
        """Invoices whose totals less credit notes equal their succeeded charges less refunds,
        except a few (returned: how many)."""
        m = self.n_invoices
        k, st, inv = self.kind, self.status, self.inv
        charged = (k == 0) & (inv >= 0)
        paid_mask = charged & (st == 0)
        paid = np.bincount(inv[paid_mask], self.amt[paid_mask], minlength=m).astype(np.int64)
        attempted = np.bincount(inv[charged], self.amt[charged], minlength=m).astype(np.int64)
        n_paid = np.bincount(inv[paid_mask], minlength=m)
        n_any = np.bincount(inv[charged], minlength=m)
        currency = np.zeros(m, dtype=np.int8)
        currency[inv[charged]] = self.cur[charged]
        status = np.where(n_paid > 0, "paid", "open").astype(object)
        total = np.where(n_paid > 0, paid, attempted)
        idle = np.flatnonzero(n_any == 0)
        total[idle] = amounts(rng, currency[idle])
        status[idle[rng.random(idle.size) < 0.05]] = "void"
        off = pick(rng, np.flatnonzero(n_paid > 0), INVOICE_OFF, m)
        total[off] += 100
        invoices = pa.table(
            {
                "invoice_id": ids("in_", np.arange(m)),
                "status": pa.array(status, pa.string()),
                "currency": names(CURRENCIES, currency),
                "total_minor": pa.array(total, pa.int64()),
            }
        )
        refund = np.flatnonzero((k == 1) & (inv >= 0) & (st != 1))
        credit_notes = pa.table(
            {
                "invoice_id": ids("in_", inv[refund]),
                "amount_minor": pa.array(self.amt[refund], pa.int64()),
            }
        )
        return invoices, credit_notes, off.size


# --------------------------------------------------------------------------------------------
# Settlement lines


class Lines:
    """Settlement lines as numpy columns, appended in groups, then one Arrow table."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: np.ndarray) -> None:
        self.parts.append(cols)

    def col(self, name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in self.parts])

    def table(self) -> pa.Table:
        c = {name: self.col(name) for name in self.parts[0]}
        n = c["gw"].size
        fx = c["pcur"] >= 0
        day = (c["ts"] - START_US) // DAY_US
        rate_code = np.where(fx, c["pcur"] * 4 + c["cur"], 0)
        rates = tuple(RATES.get((j // 4, j % 4), "") for j in range(16))
        rate = nulled(names(rates, rate_code), ~fx)
        cols = {
            "gateway": names(GATEWAYS, c["gw"]),
            "line_id": ids("ln_", np.arange(n)),
            "batch_id": ids("b_", c["batch"]),
            "category": names(CATEGORIES, c["cat"]),
            "gateway_reference": ids(
                names(PREFIXES, np.maximum(c["gref_p"], 0)), c["gref"], c["gref_p"] < 0
            ),
            "modification_reference": ids(
                names(PREFIXES, np.maximum(c["mref_p"], 0)), c["mref"], c["mref_p"] < 0
            ),
            "merchant_reference": ids("in_", c["inv"], c["inv"] < 0),
            "occurred_at": timestamps(c["ts"]),
            "available_on": pa.array((EPOCH_DAY + day + 2).astype(np.int32)).cast(pa.date32()),
            "currency": names(CURRENCIES, c["cur"]),
            "gross_minor": pa.array(c["gross"], pa.int64()),
            "fee_minor": pa.array(c["fee"], pa.int64()),
            "net_minor": pa.array(c["gross"] - c["fee"], pa.int64()),
            "presentment_currency": nulled(names(CURRENCIES, np.maximum(c["pcur"], 0)), ~fx),
            "presentment_amount_minor": masked(c["pamt"], ~fx),
            "exchange_rate": rate,
            "source_file": ids("settlement_", c["batch"] // 1_000),
            "source_row": pa.array(np.arange(n), pa.int64()),
        }
        return pa.table(cols, schema=SETTLEMENT_LINE_SCHEMA)


def charge_fee(gw: np.ndarray, gross: np.ndarray, cur: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """The schedule's fee, rounded half up exactly like FeeSchedule.expected."""
    bps = FEE_BPS[gw] + np.where(fx, FX_BPS[gw], 0)
    fee: np.ndarray = (np.abs(gross) * bps + 5_000) // 10_000 + FEE_FIXED[gw, cur]
    return fee


def batch_code(gw: np.ndarray, cur: np.ndarray, ts: np.ndarray) -> np.ndarray:
    period = (ts - START_US) // DAY_US // PERIOD_DAYS
    code: np.ndarray = (gw.astype(np.int64) * 4 + cur) * 1_000 + period
    return code


def settle(rng: np.random.Generator, b: Billing) -> tuple[pa.Table, Counter[str]]:
    n = b.n
    injected: Counter[str] = Counter()
    # Which payment each line settles: every settled payment once, plus split second parts and
    # duplicates of some charges.
    src = b.settled
    kind = b.kind[src]
    settle_cur = SETTLES_IN[b.gw[src], b.cur[src]]
    has_ref = ~np.isin(src, b.no_ref, assume_unique=True)
    plain = np.flatnonzero((kind == 0) & (settle_cur == b.cur[src]) & has_ref)
    rng.shuffle(plain)
    n_off, n_split = round(AMOUNT_OFF * n), round(SPLIT * n)
    off, split = plain[:n_off], plain[n_off : n_off + n_split]
    dup = plain[n_off + n_split : n_off + n_split + max(1, round(DUPLICATE * n))]
    injected.update(amount_mismatch=off.size, reference_split=split.size)
    injected.update(duplicate_settlement=dup.size)
    pos = np.concatenate([np.arange(src.size), split, dup])
    p = src[pos]
    kind, gw, pay_cur = b.kind[p], b.gw[p], b.cur[p]
    cur = SETTLES_IN[gw, pay_cur]
    fx = cur != pay_cur
    signed = b.signed()[p]
    gross = np.where(fx, (signed * FX_PER_100[pay_cur, cur] + 50) // 100, signed)
    first = rng.integers(1, b.amt[src[split]])
    gross[split] = first
    gross[src.size : src.size + split.size] = b.amt[src[split]] - first
    gross[off] += rng.choice(np.array([-25, -1, 1, 5, 100]), off.size)
    fee = np.where(kind == 0, charge_fee(gw, gross, cur, fx), 0)
    fee = np.where(kind == 2, DISPUTE_FEE, fee)
    fee_off = pick(rng, np.flatnonzero(kind == 0), FEE_OFF, n)
    fee[fee_off] += 37
    injected.update(fee_variance=fee_off.size)
    lag = rng.integers(DAY_US // 10, DAY_US * 5 // 2, p.size)
    ts = np.minimum(b.ts[p] + lag, END_US)
    is_charge = kind == 0
    out = Lines()
    out.add(
        gw=gw,
        cat=kind,
        gref_p=np.zeros(p.size, dtype=np.int64),
        gref=np.where(is_charge, p, b.orig[p]),
        mref_p=np.where(is_charge, -1, kind.astype(np.int64)),
        mref=p,
        inv=b.inv[p],
        ts=ts,
        cur=cur,
        gross=gross,
        fee=fee,
        pcur=np.where(fx, pay_cur.astype(np.int64), -1),
        pamt=signed,
        batch=batch_code(gw, cur, ts),
    )
    # Lines billing has no record of: unrecorded charges and chargebacks.
    m = max(1, round(MISSING_IN_BILLING * n))
    injected.update(missing_in_billing=m)
    gw = rng.choice(4, size=m, p=GATEWAY_P).astype(np.int8)
    cur = rng.integers(0, 2, m).astype(np.int8)  # USD or EUR: every gateway settles both
    cb = rng.random(m) < 0.2
    gross = np.where(cb, -1, 1) * amounts(rng, cur)
    ts = START_US + rng.integers(0, DAYS * DAY_US, m)
    j = np.arange(m)
    out.add(
        gw=gw,
        cat=np.where(cb, 2, 0).astype(np.int8),
        gref_p=np.where(cb, 0, CHX),
        gref=np.where(cb, n + j, j),
        mref_p=np.where(cb, DPX, -1),
        mref=j,
        inv=np.full(m, -1, dtype=np.int64),
        ts=ts,
        cur=cur,
        gross=gross,
        fee=np.where(cb, DISPUTE_FEE, charge_fee(gw, gross, cur, np.zeros(m, dtype=bool))),
        pcur=np.full(m, -1, dtype=np.int64),
        pamt=np.zeros(m, dtype=np.int64),
        batch=batch_code(gw, cur, ts),
    )
    # Batches: Adyen charges a fee per batch; each closed batch ends with a payout of its net.
    batch, net = out.col("batch"), out.col("gross") - out.col("fee")
    keys, where = np.unique(batch, return_inverse=True)
    sums = np.zeros(keys.size, dtype=np.int64)
    np.add.at(sums, where, net)
    period, gw, cur = keys % 1_000, keys // 1_000 // 4, keys // 1_000 % 4
    closed = period < (DAYS - 1) // PERIOD_DAYS
    keys, period, gw, cur, sums = (a[closed] for a in (keys, period, gw, cur, sums))
    adyen = gw == 1
    paid = -(sums - np.where(adyen, ADYEN_BATCH_FEE, 0))
    off = pick(rng, np.arange(keys.size), PAYOUT_OFF, keys.size)
    paid[off] -= 500
    injected.update(payout_mismatch=off.size)
    close_ts = START_US + ((period + 1) * PERIOD_DAYS * DAY_US) - DAY_US // 24
    fee_keys = keys[adyen]
    k = keys.size + fee_keys.size
    nothing = np.full(k, -1, dtype=np.int64)
    out.add(
        gw=np.concatenate([gw[adyen], gw]).astype(np.int8),
        cat=np.concatenate([np.full(fee_keys.size, FEE), np.full(keys.size, PAYOUT)]),
        gref_p=np.concatenate([np.full(fee_keys.size, -1), np.full(keys.size, PO)]),
        gref=np.concatenate([fee_keys, keys]),
        mref_p=nothing,
        mref=nothing,
        inv=nothing,
        ts=np.concatenate([close_ts[adyen] - 3_600_000_000, close_ts]),
        cur=np.concatenate([cur[adyen], cur]).astype(np.int8),
        gross=np.concatenate([np.zeros(fee_keys.size, dtype=np.int64), paid]),
        fee=np.concatenate(
            [np.full(fee_keys.size, ADYEN_BATCH_FEE), np.zeros(keys.size, dtype=np.int64)]
        ),
        pcur=nothing,
        pamt=np.zeros(k, dtype=np.int64),
        batch=np.concatenate([fee_keys, keys]),
    )
    return out.table(), injected


def config() -> EngineConfig:
    return EngineConfig(
        fee_schedules={
            g: FeeSchedule(
                percent_bps=int(FEE_BPS[i]),
                fixed_minor={c: int(FEE_FIXED[i, j]) for j, c in enumerate(CURRENCIES)},
                fx_bps=int(FX_BPS[i]),
            )
            for i, g in enumerate(GATEWAYS)
        }
    )


def generate(rows: int, seed: int) -> tuple[dict[str, pa.Table], Counter[str]]:
    rng = np.random.default_rng(seed)
    billing = Billing(rng, rows)
    lines, injected = settle(rng, billing)
    invoices, credit_notes, n_inv_off = billing.invoices(rng)
    unsettled = int((billing.status == 0).sum()) - billing.settled.size
    injected.update(
        missing_in_gateway_or_pending=unsettled,
        merchant_reference=billing.no_ref.size,
        invoice_payment_mismatch=n_inv_off,
    )
    tables = {
        "payments": billing.table(),
        "lines": lines,
        "invoices": invoices,
        "credit_notes": credit_notes,
    }
    return tables, injected


# --------------------------------------------------------------------------------------------
# Timing

JOIN_SQL: Final = """
SELECT count(*) FROM (
    SELECT p.payment_id, l.line_id
    FROM payments p FULL OUTER JOIN lines l
      ON p.gateway = l.gateway AND p.kind = l.category
     AND p.gateway_reference = CASE l.category WHEN 'charge' THEN l.gateway_reference
                                               ELSE l.modification_reference END
)
"""


def bare_join(payments: pa.Table, lines: pa.Table) -> int:
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")  # as the engine's connection
        con.register("payments", payments)
        con.register("lines", lines)
        row = con.execute(JOIN_SQL).fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def run_engine(t: dict[str, pa.Table], fees: bool) -> Any:
    return reconcile(
        t["payments"],
        t["lines"],
        t["invoices"],
        t["credit_notes"],
        start=START,
        end=END,
        as_of=END,
        config=config() if fees else EngineConfig(),
        run_id="bench",
    )


def run_checks(tables: dict[str, pa.Table]) -> list[str]:
    """The data checks the nightly chain runs on these tables (GX samples above 1M rows; the
    key, money and tie-out checks scan every row); returns the names of the failed ones."""
    from tieout.checks.billing import billing_checks
    from tieout.checks.settlements import settlement_checks

    results = billing_checks("payments", tables["payments"])
    results += settlement_checks(tables["lines"])
    return sorted(r.name for r in results if not r.passed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, help="default: 3, or 2 from 5,000,000 rows")
    ap.add_argument(
        "--no-fees", action="store_true", help="configure no fee schedules (skips pass 5)"
    )
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.rows >= 5_000_000 else 3)

    t0 = time.perf_counter()
    log(f"generating {args.rows:,} payments ...")
    tables, injected = generate(args.rows, args.seed)
    # Hand the generator's freed scratch memory back to the OS, so that the peak RSS below
    # measures the tables and the engine, not the allocator's cache of the generation.
    pa.default_memory_pool().release_unused()
    pay, lines = tables["payments"], tables["lines"]
    log(
        f"generated in {time.perf_counter() - t0:.1f}s: {pay.num_rows:,} payments, "
        f"{lines.num_rows:,} lines, {tables['invoices'].num_rows:,} invoices, "
        f"{tables['credit_notes'].num_rows:,} credit notes; "
        f"{(pay.nbytes + lines.nbytes) / 2**20:,.0f} MiB of Arrow; peak RSS {rss_mb():,} MB"
    )
    log("injected: " + ", ".join(f"{k} {v:,}" for k, v in sorted(injected.items())))

    best_engine = best_join = float("inf")
    joined = 0
    found: Counter[str] = Counter()
    for i in range(repeat):
        t = time.perf_counter()
        joined = bare_join(pay, lines)
        best_join = min(best_join, time.perf_counter() - t)
        t = time.perf_counter()
        result = run_engine(tables, fees=not args.no_fees)
        best_engine = min(best_engine, time.perf_counter() - t)
        found = Counter(x.kind for x in result.exceptions)
        del result
        log(
            f"run {i + 1}: join {best_join:.2f}s ({joined:,} rows), "
            f"reconcile {best_engine:.2f}s ({sum(found.values()):,} exceptions); "
            f"peak RSS {rss_mb():,} MB"
        )
    log("found: " + ", ".join(f"{k} {v:,}" for k, v in sorted(found.items())))
    import tieout.checks.settlements  # noqa: F401
    from tieout.checks.billing import billing_checks

    # Importing GX and building its context and suites are one-off costs of a process.
    billing_checks("payments", tables["payments"].slice(0, 10))

    best_checks = float("inf")
    failed: list[str] = []
    for _ in range(repeat):
        t = time.perf_counter()
        failed = run_checks(tables)
        best_checks = min(best_checks, time.perf_counter() - t)
    log(f"checks over payments and lines: {best_checks:.2f}s; failed: {', '.join(failed)}")
    print(
        f"rows={pay.num_rows} lines={lines.num_rows} reconcile_seconds={best_engine:.3f} "
        f"join_seconds={best_join:.3f} join_rows={joined} exceptions={sum(found.values())} "
        f"checks_seconds={best_checks:.3f}"
    )
    print(f"checks_vs_join_ratio={best_checks / best_join:.2f}")
    print(f"reconcile_vs_join_ratio={best_engine / best_join:.2f} peak_rss_mb={rss_mb()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
