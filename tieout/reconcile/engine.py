"""The reconciliation engine: billing payments against gateway settlement lines.

Plain Python over Arrow tables (no Dagster, no connectors), so it is tested on frames in
milliseconds and the assets only feed it and persist what it returns. Text columns of few
values (gateway, kind, currency, status) are coded as small integers once. The heavy pass, the
reference match over every payment and line, runs in DuckDB as one full outer join on those
codes and the reference, returning row numbers and each pair's verdict (no row-by-row Python);
buckets, totals and matches are then worked out on numpy arrays indexed by row number, and the
bucket and match tables are cut from the Arrow inputs. What is left after the join (a small
fraction of the rows: pairs in question, references shared by several rows, rows without a
partner) is read back by row number and goes through the remaining passes in Python, while the
passes that group or scan every row (batches, invoices, fees) run beside it in another thread.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from operator import attrgetter
from typing import Any, Final, NamedTuple, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tieout.canonical import local_days
from tieout.errors import InputDataError
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


_T = TypeVar("_T")


class ConservationError(AssertionError):
    """The buckets do not add back to the inputs: a bug in the engine, never bad input."""


#: Per input (what the error calls it, its key column): the columns the engine reads that the
#: canonical schemas require. A row without one could not be put in any bucket for certain
#: (no gateway to expect a settlement from, no day to scope it, no amount to count).
REQUIRED: Final = {
    "payments": (
        "payment_id",
        ("payment_id", "kind", "gateway", "amount_minor", "currency", "status", "created_at"),
    ),
    "settlement lines": (
        "line_id",
        (
            "line_id",
            "gateway",
            "batch_id",
            "category",
            "currency",
            "gross_minor",
            "fee_minor",
            "net_minor",
            "occurred_at",
        ),
    ),
    "invoices": ("invoice_id", ("invoice_id", "status", "currency", "total_minor")),
    "credit notes": ("credit_note_id", ("invoice_id", "amount_minor")),
}


def check_inputs(tables: Mapping[str, pa.Table]) -> None:
    """Raise InputDataError, naming the rows and the fix, for inputs that break the canonical
    contract the engine relies on (billing extraction and the settlement loaders quarantine
    such rows, so the pipeline never passes them; a caller building frames itself might)."""
    problems = []
    for label, table in tables.items():
        key, columns = REQUIRED[label]
        for column in columns:
            if column not in table.column_names:
                if table.num_rows:
                    problems.append(f"the {label} have no column {column!r}")
                continue
            values = table.column(column)
            if not values.null_count:
                continue
            rows = np.flatnonzero(~_valid(values))
            shown = rows[:5]
            keys = (
                table.column(key).take(pa.array(shown)).to_pylist()
                if key in table.column_names
                else [None] * shown.size
            )
            named = ", ".join(
                f"row {r}" if k is None else str(k)
                for r, k in zip(shown.tolist(), keys, strict=True)
            )
            more = f" and {rows.size - shown.size} more" if rows.size > shown.size else ""
            problems.append(f"{rows.size} of the {label} have no {column} ({key} {named}{more})")
    if problems:
        raise InputDataError(
            "reconcile() cannot use its inputs: " + "; ".join(problems) + ". The canonical "
            "schemas require these columns; billing extraction and the settlement loaders "
            "quarantine such rows, so fix them at the source (or leave them out of the "
            "frames passed in) and run again."
        )


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


class _Residual(NamedTuple):
    """Row numbers of pass 1 that Python settles: 1:1 pairs with a problem (and their
    verdicts), the rows of shared keys, and rows without a partner."""

    problem_p: np.ndarray
    problem_l: np.ndarray
    problem_v: np.ndarray
    multi_p: np.ndarray
    multi_l: np.ndarray
    lone_p: np.ndarray
    lone_l: np.ndarray


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


#: The row number each input row is registered with: the join and the later passes speak in
#: row numbers (integers), and only the few rows in question are read back as Python rows.
RN: Final = "_rn"

PAY_SQL: Final = """
SELECT payment_id, invoice_id, kind, gateway, gateway_reference AS ref, currency,
       CASE WHEN kind IN ('charge', 'chargeback_reversal') THEN amount_minor
            ELSE -amount_minor END AS amt,
       status, day, _rn
FROM {src}
WHERE kind IN ('charge', 'refund', 'chargeback', 'chargeback_reversal') {gateway_filter}
"""

LINE_SQL: Final = """
SELECT line_id, gateway, batch_id, category,
       CASE WHEN category = 'charge' THEN gateway_reference ELSE modification_reference END
           AS ref,
       merchant_reference, currency, gross_minor, fee_minor,
       presentment_currency, presentment_amount_minor, day, _rn
FROM {src}
WHERE true {gateway_filter}
"""

#: Kind codes (positions in PAYMENT_KINDS, from 1) of the kinds that take money back.
NEGATIVE_KINDS: Final = (2, 3)
#: Pass 1 as one full outer join on (gateway and kind as one code, reference), payment lines
#: only, over the coded columns it reads (`pj`, `lj`, see `code_join_inputs`): each row is a
#: payment, a line, or a pair sharing a reference with its verdict, by row number (-1: no
#: such side). Joining on a small integer instead of two strings takes about half the time.
#: Keys shared by several payments or lines show as several pair rows and are taken out
#: afterwards (`verdicts`).
JOIN_SQL: Final = """
SELECT coalesce(p.rn, -1) AS prn, coalesce(l.rn, -1) AS lrn,
       (CASE WHEN p.rn IS NULL OR l.rn IS NULL THEN 0
             WHEN p.bad THEN 1
             WHEN p.cur > 0 AND l.cur = p.cur THEN (CASE WHEN l.gross = p.amt THEN 2 ELSE 3 END)
             WHEN p.cur > 0 AND l.pcur = p.cur THEN (CASE WHEN l.pamt = p.amt THEN 2 ELSE 3 END)
             ELSE 4 END)::TINYINT AS v
FROM (
    SELECT gk, ref, rn, bad, cur,
           CASE WHEN neg THEN -amount ELSE amount END AS amt
    FROM pj WHERE gk <> 0
) p
FULL OUTER JOIN (
    SELECT gk, CASE WHEN k = 1 THEN gref ELSE mref END AS ref, rn, cur, gross, pcur, pamt
    FROM lj WHERE gk <> 0
) l ON p.gk = l.gk AND p.ref = l.ref
"""

#: Pair verdicts as the join codes them; `multi` marks the rows of keys shared by several
#: payments or lines, settled in Python (`_many`).
V_STATUS, V_MATCHED, V_AMOUNT, V_CURRENCY, V_MULTI = 1, 2, 3, 4, 5
VERDICTS: Final = {
    V_STATUS: "status_mismatch",
    V_AMOUNT: "amount_mismatch",
    V_CURRENCY: "currency_mismatch",
}
#: Bucket codes (0: no bucket, the row is not reported).
BUCKETS: Final = (None, "matched", "pending", "exception")
B_MATCHED, B_PENDING, B_EXCEPTION = 1, 2, 3
MATCH_RULES: Final = ("reference", "reference_split", "reference_merged", "merchant_reference")

#: Batch tie-outs, and per batch the lines of the range that follow it (not payment lines)
#: and the lines of the range it holds (the input side of the conservation check), over the
#: coded lines `lc` (`role`: 0 a payment line or no category, 1 payout, 2 payout reversal,
#: 3 any other batch line; see `payouts`).
PAYOUT_SQL: Final = """
SELECT g, batch_id, c,
       sum(net)::BIGINT AS diff,
       count(*) FILTER (WHERE role IN (1, 2)) AS np,
       max(day) FILTER (WHERE role IN (1, 2)) AS pday,
       (sum(net) FILTER (WHERE role IN (1, 2)))::BIGINT AS paid,
       min(line_id) FILTER (WHERE role = 1) AS payout_line,
       arg_min(rn, line_id) FILTER (WHERE role = 1) AS payout_rn,
       list(rn) FILTER (WHERE role > 0 AND day BETWEEN $start AND $end) AS batch_rns,
       count(*) FILTER (WHERE day BETWEEN $start AND $end) AS n_in,
       (sum(gross) FILTER (WHERE day BETWEEN $start AND $end))::BIGINT AS gross_in
FROM lc WHERE keep GROUP BY g, batch_id, c
"""

#: Invoices whose succeeded charges less refunds do not add up to their total less credit
#: notes (`inv_part`: each payment's part, see `flagged_invoices`). Each payment finds its
#: invoice's row number first and the parts are summed per row number: cheaper than grouping
#: the payments by invoice id and joining those sums back (an integer key, no text).
INVOICE_SQL: Final = """
WITH paid AS (
    SELECT i._rn, sum(p.rec)::BIGINT AS received
    FROM (SELECT invoice_id, rec FROM inv_part WHERE keep) p
    JOIN inv i ON p.invoice_id = i.invoice_id
    GROUP BY i._rn),
credit AS (SELECT invoice_id, sum(amount_minor)::BIGINT AS credited
           FROM cn GROUP BY invoice_id)
SELECT * FROM (
    SELECT inv.invoice_id, inv.status, inv.currency, inv.total_minor,
           coalesce(credit.credited, 0) AS credited, paid.received
    FROM paid JOIN inv USING (_rn)
    LEFT JOIN credit USING (invoice_id))
WHERE (status = 'paid' AND received <> total_minor - credited)
    OR (status IN ('void', 'uncollectible', 'draft') AND received <> 0)
    OR (status = 'open' AND total_minor - credited > 0 AND received >= total_minor - credited)
ORDER BY invoice_id
"""

#: What the vectorized invoice check (`_flagged_fast`) asks DuckDB: the invoice row of each
#: payment's part and of each credit note (joins by text id), summed and compared in numpy.
INVOICE_PARTS_SQL: Final = """
SELECT i._rn, p.rec
FROM (SELECT invoice_id, rec FROM inv_part WHERE keep) p
JOIN inv i ON p.invoice_id = i.invoice_id
"""
INVOICE_CREDITS_SQL: Final = """
SELECT i._rn, c.amount_minor FROM cn c JOIN inv i ON c.invoice_id = i.invoice_id
"""

#: The invoice columns the check reads.
INVOICE_COLUMNS: Final = ("invoice_id", "status", "currency", "total_minor")

#: Row numbers of ids not read back so far.
P_LOOKUP: Final = "SELECT _rn FROM p WHERE payment_id IN (SELECT id FROM missing_ids)"
L_LOOKUP: Final = "SELECT _rn FROM l WHERE line_id IN (SELECT id FROM missing_ids)"

#: Fees off schedule, in SQL (the vectorized check's fallback, see `fees`).
OFF_FEE_SQL: Final = """
SELECT _rn, exp, tolerance FROM (
    SELECT l._rn, l.fee_minor, s.tolerance,
           ((2 * abs(l.gross_minor)
              * (s.bps + CASE WHEN l.presentment_currency IS NULL THEN 0
                              ELSE s.fx_bps END) + 10000) // 20000
           + coalesce(sc.fixed, 0))::BIGINT AS exp
    FROM l JOIN sched s ON s.gateway = l.gateway AND s.currency = ''
    LEFT JOIN sched sc ON sc.gateway = l.gateway AND sc.currency = l.currency
    WHERE l.category = 'charge' AND l.day BETWEEN ? AND ?)
WHERE abs(fee_minor - exp) > tolerance
"""

#: Low-cardinality text (gateway, currency, kind, status, bucket, rule) is dictionary-encoded
#: in the result tables: at 10M rows plain strings cost over a gigabyte more, and copying them
#: is most of building the tables. `lake_schema` gives the plain-string form the lake keeps.
LABEL: Final = pa.dictionary(pa.int16(), pa.string())
PAYMENT_BUCKETS: Final = pa.schema(
    [("payment_id", pa.string()), ("gateway", LABEL), ("currency", LABEL),
     ("kind", LABEL), ("status", LABEL), ("amount_minor", pa.int64()),
     ("day", pa.date32()), ("bucket", LABEL), ("rule", LABEL)]
)  # fmt: skip
LINE_BUCKETS: Final = pa.schema(
    [("line_id", pa.string()), ("gateway", LABEL), ("currency", LABEL),
     ("category", LABEL), ("gross_minor", pa.int64()), ("day", pa.date32()),
     ("bucket", LABEL)]
)  # fmt: skip
MATCHES: Final = pa.schema(
    [("payment_id", pa.string()), ("line_id", pa.string()), ("gateway", LABEL),
     ("rule", LABEL), ("day", pa.date32())]
)  # fmt: skip
#: What the vectorized checks (fees, invoices) let their int64 arithmetic reach; beyond it
#: they hand over to DuckDB, which raises on an overflow instead of wrapping around.
INT64_SAFE: Final = 2**62
#: Lines per slice of the vectorized fee check.
FEE_CHUNK: Final = 1 << 20
EPOCH: Final = date(1970, 1, 1)


def _numbered(table: pa.Table) -> pa.Table:
    dtype = np.int32 if table.num_rows < 2**31 else np.int64
    return table.append_column(RN, pa.array(np.arange(table.num_rows, dtype=dtype)))


def _day_number(day: date) -> int:
    return (day - EPOCH).days


def _ints(values: pa.ChunkedArray | pa.Array, null: int) -> np.ndarray:
    """An integer (or boolean) Arrow column as numpy, nulls as `null`."""
    if values.null_count:
        values = values.fill_null(null)
    out: np.ndarray = values.to_numpy()
    return out


def _valid(values: pa.ChunkedArray) -> np.ndarray:
    """Where the column is not null, unpacked from its validity bitmaps (Arrow's boolean to
    numpy conversion goes value by value)."""
    if values.null_count == 0:
        return np.ones(len(values), dtype=bool)
    parts = []
    for chunk in values.chunks:
        bitmap = chunk.buffers()[0]
        if bitmap is None:
            parts.append(np.ones(len(chunk), dtype=bool))
            continue
        bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
        parts.append(bits[chunk.offset : chunk.offset + len(chunk)].view(bool))
    return np.concatenate(parts) if parts else np.ones(0, dtype=bool)


def _code(values: pa.ChunkedArray, names: list[str | None], extend: bool = True) -> np.ndarray:
    """A string column as codes into `names` (from 1; 0: null or, unless `extend`, a value
    not in `names`); with `extend`, the values not in `names` yet are appended to it."""
    if extend and len(values):  # first guess from a sample, so one pass usually does
        sample = pc.unique(values.slice(0, 4096).drop_null()).to_pylist()
        names.extend(sorted(set(sample) - set(names)))
    while True:
        at = pc.index_in(values, value_set=pa.array(names[1:], values.type))
        if not extend or at.null_count == values.null_count:  # no value outside `names`
            break
        unknown = pc.and_(pc.is_null(at), pc.is_valid(values))
        names.extend(sorted(pc.unique(values.filter(unknown)).to_pylist()))
    dtype = np.int8 if len(names) < 2**7 else np.int16 if len(names) < 2**15 else np.int32
    out: np.ndarray = (_ints(at, -1) + 1).astype(dtype)
    return out


def _largest(values: np.ndarray) -> int:
    """The largest |x| in `values`, as a Python integer (no int64 overflow)."""
    return max(abs(int(values.max())), abs(int(values.min()))) if values.size else 0


def _among(codes: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Where `codes` is one of a few `values` (np.isin sorts: ten times slower for a few)."""
    out: np.ndarray = codes == values[0]
    for value in values[1:]:
        out |= codes == value
    return out


def _scatter(n: int, at: np.ndarray, values: Any, fill: int = 0) -> np.ndarray:
    """An array of n, `values` at the positions `at`, `fill` elsewhere."""
    dtype = np.asarray(values).dtype
    out = np.full(n, fill, dtype=dtype)
    out[at] = values
    return out


def _take_rows(table: pa.Table, rns: np.ndarray) -> pa.Table:
    """The rows at `rns` (sorted, unique), chunk by chunk: Arrow's take on a chunked table
    joins every chunk of every column first (a second per 10M rows), for a few rows."""
    if table.num_columns == 0 or rns.size == 0:
        return table.take(pa.array(rns, pa.int64()))
    bounds = np.cumsum([0, *(len(c) for c in table.column(0).chunks)])
    cut = np.searchsorted(rns, bounds)
    parts = [
        table.slice(bounds[i], bounds[i + 1] - bounds[i]).take(pa.array(rns[lo:hi] - bounds[i]))
        for i, (lo, hi) in enumerate(pairwise(cut))
        if hi > lo
    ]
    return pa.concat_tables(parts)


def _days(table: pa.Table) -> np.ndarray:
    """The `day` column as day numbers (no day: out of every range)."""
    return _ints(table.column("day").cast(pa.int32()), np.iinfo(np.int32).min)


def _filtered(table: pa.Table, names: Sequence[str], mask: pa.Array) -> list[pa.ChunkedArray]:
    """These columns of `table` where `mask` holds, two at a time (Arrow releases the GIL)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda name: table.column(name).filter(mask), names))


def _string_column(values: pa.ChunkedArray) -> pa.ChunkedArray:
    return values if values.type == pa.string() else values.cast(pa.string())


def _strings(names: Sequence[str | None], codes: np.ndarray) -> pa.DictionaryArray:
    """Codes into `names` as a dictionary column (a None name: null)."""
    nulls = [i for i, name in enumerate(names) if name is None]
    null = _among(codes, nulls) if nulls else None
    mask = null if null is not None and null.any() else None
    indices = pa.array(codes.astype(np.int16, copy=False), mask=mask, type=pa.int16())
    return pa.DictionaryArray.from_arrays(
        indices, pa.array(["" if n is None else n for n in names], pa.string())
    )


def lake_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with its dictionary columns as plain strings: what the lake's files hold."""
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in schema]
    )


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
        self.con.execute("SET allocator_background_threads = true")
        self.pay_in = _numbered(_with_day(payments, "created_at", timezone))
        self.line_in = _numbered(_with_day(lines, "occurred_at", timezone))
        self.con.register("pay_in", self.pay_in)
        self.con.register("line_in", self.line_in)
        gateways = config.gateways
        gf = "" if gateways is None else "AND gateway IN (SELECT gateway FROM gateway_filter)"
        self.gf = gf
        self.con.register(
            "gateway_filter", pa.table({"gateway": pa.array(list(gateways or []), pa.string())})
        )
        # Views, not copies: DuckDB scans the Arrow inputs in place, pass after pass.
        self.con.execute(f"CREATE TEMP VIEW p AS {PAY_SQL.format(src='pay_in', gateway_filter=gf)}")
        self.con.execute(
            f"CREATE TEMP VIEW l AS {LINE_SQL.format(src='line_in', gateway_filter=gf)}"
        )
        # The columns the verdicts, buckets and totals read, by row number: strings as codes
        # into these lists of names (0: null; payment kinds first, so codes 1-4 are the payment
        # kinds and any other kind or category comes after them), money as numpy integers.
        self.gws: list[str | None] = [None]
        self.curs: list[str | None] = [None]
        self.kinds: list[str | None] = [None, *PAYMENT_KINDS]
        self.cats: list[str | None] = [None, *PAYMENT_KINDS]
        self.statuses: list[str | None] = [None, "succeeded", "pending"]
        pay, ln = self.pay_in, self.line_in
        status = pay.column("status")

        def gateways_and_kinds() -> tuple[np.ndarray, ...]:
            return (
                _code(pay.column("gateway"), self.gws),
                _code(ln.column("gateway"), self.gws),
                _code(pay.column("kind"), self.kinds),
                _code(ln.column("category"), self.cats),
            )

        def currencies_and_status() -> tuple[np.ndarray, ...]:
            return (
                _code(pay.column("currency"), self.curs),
                _code(ln.column("currency"), self.curs),
                _code(ln.column("presentment_currency"), self.curs),
                _code(status, self.statuses),
            )

        # Two threads (Arrow hashes without the GIL); each list of names is extended by one
        # thread only, in a fixed order, so the codes are the same every run.
        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.submit(gateways_and_kinds), pool.submit(currencies_and_status)
            self.p_gw, self.l_gw, self.p_kind, self.l_kind = first.result()
            self.p_cur, self.l_cur, self.l_pcur, self.p_stat = second.result()
        self.p_ok = self.p_stat == 1
        # allowed[gateway code]: the gateway is reconciled (config.gateways).
        self.allowed = np.array([gateways is None or g in gateways for g in self.gws])
        self.allowed[0] = gateways is None
        amount = pay.column("amount_minor")
        self.p_amt_ok = _valid(amount)
        self.p_amt = _ints(amount, 0)
        self.p_neg = _among(self.p_kind, NEGATIVE_KINDS)  # kinds that take money back
        self.p_amt = np.where(self.p_neg, -self.p_amt, self.p_amt)
        self.l_gross = _ints(ln.column("gross_minor"), 0)
        # expected[gateway code, kind code]: the gateway's files carry that kind.
        self.expected = np.zeros((len(self.gws), len(self.kinds)), dtype=bool)
        for g, gateway in enumerate(self.gws):
            for k, kind in enumerate(PAYMENT_KINDS, 1):
                self.expected[g, k] = gateway is not None and config.expects(gateway, kind)
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
        # Row numbers of the rows read back as Python rows, by id.
        self.p_rn: dict[str, int] = {}
        self.l_rn: dict[str, int] = {}
        self.p_rows: dict[str, dict[str, Any]] = {}
        self.first, self.last = _day_number(start), _day_number(end)
        self.p_day, self.l_day = _days(self.pay_in), _days(self.line_in)

    def in_scope(self, day: date | None) -> bool:
        return day is not None and self.start <= day <= self.end

    def pick_day(self, *days: date | None) -> date | None:
        """An exception is about the first of its rows that lies in the range, so a problem
        that touches the range is reported by it (and auto-resolved only by runs over it)."""
        return next((d for d in days if self.in_scope(d)), days[0])

    def reported(self, ordered: bool = True) -> list[ReconException]:
        """The exceptions of the range, by kind and id (unless not `ordered`: the buckets
        only look names up)."""
        found = [x for x in self.exceptions.values() if self.in_scope(x.day)]
        return sorted(found, key=attrgetter("kind", "exception_id")) if ordered else found

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

    def rows(
        self,
        sql: str,
        params: Sequence[object] | Mapping[str, object] = (),
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> list[dict[str, Any]]:
        args = dict(params) if isinstance(params, Mapping) else list(params)
        rows: list[dict[str, Any]] = (
            (con or self.con).sql(sql, params=args).to_arrow_table().to_pylist()
        )
        return rows

    def on_cursor(self, work: Callable[[duckdb.DuckDBPyConnection], _T]) -> _T:
        """A pass that groups every row (batches, invoices) on a DuckDB cursor of its own:
        run in another thread while Python settles the reference pass's residual rows
        (DuckDB works without the GIL, so the two overlap). A cursor sees the registered
        tables and temporary views of its own connection only."""
        con = self.con.cursor()
        try:
            return work(con)
        finally:
            con.close()

    # -- pass 1: references --------------------------------------------------------------------

    def join(self) -> pa.Table:
        """Pass 1's join (JOIN_SQL) over the coded inputs (`code_join_inputs`)."""
        try:
            return self.con.sql(JOIN_SQL).to_arrow_table()
        finally:
            self.con.unregister("pj")
            self.con.unregister("lj")

    def verdicts(self, j: pa.Table) -> _Residual:
        """Pass 1's join rows `j` per payment and line (numpy only, before the vectorized
        passes start beside it: fresh memory pages are slow to come by while they run);
        returns the row numbers Python has to settle."""
        # Row numbers as they come (int32 below 2**31 rows, -1: no partner): every copy of
        # ten million rows costs as much in fresh memory pages as in arithmetic.
        prn, lrn, v = (_ints(j.column(name), 0) for name in ("prn", "lrn", "v"))
        del j
        pair = v > 0
        lone_p, lone_l = prn[lrn < 0], lrn[prn < 0]
        prn, lrn, v = prn[pair], lrn[pair], v[pair]
        # A key is shared when one of its pair rows repeats its payment or its line.
        n_p, n_l = self.pay_in.num_rows, self.line_in.num_rows
        multi = np.bincount(prn, minlength=n_p)[prn] > 1
        multi |= np.bincount(lrn, minlength=n_l)[lrn] > 1
        v[multi] = V_MULTI
        # Per payment and per line, by row number (0 / -1: no partner).
        self.p_v = _scatter(n_p, prn, v)
        self.l_v = _scatter(n_l, lrn, v)
        matched = v == V_MATCHED
        self.p_lrn = _scatter(n_p, prn[matched], lrn[matched], fill=-1)
        self.l_prn = _scatter(n_l, lrn[matched], prn[matched], fill=-1)
        del matched
        # Everything but the matched 1:1 pairs (a small share) is read back and settled in
        # Python: pairs with a problem, shared keys, rows without a partner (payments: only
        # succeeded ones).
        problem = ~multi & (v != V_MATCHED)
        return _Residual(
            prn[problem], lrn[problem], v[problem], prn[multi], lrn[multi],
            lone_p[self.p_ok[lone_p]], lone_l,
        )  # fmt: skip

    def by_reference(self, r: _Residual) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Pass 1's residual rows settled; returns the payments and payment lines no
        reference joined, for the later passes (succeeded payments only: a failed or pending
        one without a line agrees with the gateway, and no later pass could match it)."""
        pays_by_rn = self.fetch_pays(np.concatenate([r.problem_p, r.multi_p, r.lone_p]))
        lns_by_rn = self.fetch_lines(np.concatenate([r.problem_l, r.multi_l, r.lone_l]))
        pays = {p["payment_id"]: p for p in pays_by_rn.values()}
        lns = {ln["line_id"]: ln for ln in lns_by_rn.values()}
        # 1:1 keys with a problem: exceptions naming both sides.
        pairs = [
            (pays_by_rn[int(a)], lns_by_rn[int(b)], int(c))
            for a, b, c in zip(r.problem_p, r.problem_l, r.problem_v, strict=True)
        ]
        pairs.sort(key=lambda t: (t[0]["payment_id"], t[1]["line_id"]))
        for p, ln, verdict in pairs:
            self._pair_problem(
                VERDICTS[verdict],
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
        # Keys shared by several payments or several lines (splits, merges, duplicates).
        multi_p = {pays_by_rn[int(rn)]["payment_id"] for rn in r.multi_p}
        multi_l = {lns_by_rn[int(rn)]["line_id"] for rn in r.multi_l}
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
        lone_p_ids = {pays_by_rn[int(rn)]["payment_id"] for rn in r.lone_p}
        lone_l_ids = {lns_by_rn[int(rn)]["line_id"] for rn in r.lone_l}
        return (
            [p for p in pays.values() if p["payment_id"] in lone_p_ids],
            [ln for ln in lns.values() if ln["line_id"] in lone_l_ids],
        )

    def code_join_inputs(self) -> None:
        """The columns the join and its verdicts read, coded and registered: gateway and kind
        as one small integer `gk` (0: not in the join, i.e. not a payment kind or a gateway
        filtered out; a row without a gateway gets a code no row of the other side has, as
        NULL = NULL is not a match), status, currencies and amounts as the verdict needs them.
        Also which rows take part (`p_in`, `l_in`), which every later pass reads."""

        def gk(gw: np.ndarray, kind: np.ndarray, no_gateway: int) -> np.ndarray:
            out: np.ndarray = gw.astype(np.int32) * 8 + kind
            out[gw == 0] = no_gateway * kind[gw == 0]
            out[(kind == 0) | (kind > len(PAYMENT_KINDS)) | ~self.allowed[gw]] = 0
            return out

        p_gk, l_gk = gk(self.p_gw, self.p_kind, 1), gk(self.l_gw, self.l_kind, -1)
        self.p_in, self.l_in = p_gk != 0, l_gk != 0
        pay, ln = self.pay_in, self.line_in
        self.con.register(
            "pj",
            pa.table(
                {
                    "gk": p_gk,
                    "ref": pay.column("gateway_reference"),
                    "rn": pay.column(RN),
                    "bad": self.p_stat > 1,  # a status other than succeeded
                    "cur": self.p_cur,
                    "neg": self.p_neg,
                    "amount": pay.column("amount_minor"),
                }
            ),
        )
        self.con.register(
            "lj",
            pa.table(
                {
                    "gk": l_gk,
                    "k": self.l_kind,
                    "gref": ln.column("gateway_reference"),
                    "mref": ln.column("modification_reference"),
                    "rn": ln.column(RN),
                    "cur": self.l_cur,
                    "gross": ln.column("gross_minor"),
                    "pcur": self.l_pcur,
                    "pamt": ln.column("presentment_amount_minor"),
                }
            ),
        )

    def _fetch(
        self,
        table: pa.Table,
        rns: np.ndarray,
        sql: str,
        order: str,
        key: str,
        rn_of: dict[str, int],
    ) -> dict[int, dict[str, Any]]:
        """The rows of `table` at these row numbers through `sql` (PAY_SQL or LINE_SQL) in
        `order` (columns of `table`), by row number; each row's number is noted in `rn_of`
        under its `key`."""
        self.con.register("fetched", _take_rows(table, np.unique(rns)))
        out = {}
        try:
            for row in self.rows(
                sql.format(src="fetched", gateway_filter=self.gf) + f" ORDER BY {order}"
            ):
                rn = row.pop(RN)
                out[rn] = row
                rn_of[row[key]] = rn
        finally:
            self.con.unregister("fetched")
        return out

    def fetch_pays(self, rns: np.ndarray) -> dict[int, dict[str, Any]]:
        """The payments of these row numbers as rows of `p`, in time order, by row number."""
        out = self._fetch(
            self.pay_in, rns, PAY_SQL, "created_at, payment_id", "payment_id", self.p_rn
        )
        self.p_rows.update((p["payment_id"], p) for p in out.values())
        return out

    def fetch_lines(self, rns: np.ndarray) -> dict[int, dict[str, Any]]:
        """The lines of these row numbers as rows of `l`, in file order, by row number."""
        order = "occurred_at, source_file, source_row, line_id"
        return self._fetch(self.line_in, rns, LINE_SQL, order, "line_id", self.l_rn)

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

    def payouts(self, batches: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
        """Batch tie-outs (`batches`: their rows); returns (gateway, currency) -> (payouts in
        scope, tied out)."""
        counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.batch_state: dict[tuple[str, str, str], str] = {}
        # The batch lines of the range by row number, with their batch's state code.
        batch_rns: list[np.ndarray] = []
        batch_codes: list[int] = []
        self.lines_in: dict[str | None, list[int]] = {}  # currency -> [count, gross] in range
        for b in batches:
            key = (b["gateway"], b["batch_id"], b["currency"])
            if b["n_in"]:
                acc = self.lines_in.setdefault(b["currency"], [0, 0])
                acc[0] += b["n_in"]
                acc[1] += b["gross_in"] or 0
            if b["payout_line"] is not None:
                self.l_rn[b["payout_line"]] = b["payout_rn"]
            if not b["np"]:
                state = "pending"
            elif not self.in_scope(b["pday"]):
                # Paid out outside the range: a run over the payout's day judges it.
                state = "matched" if b["diff"] == 0 else "pending"
            else:
                state = "matched" if b["diff"] == 0 else "exception"
            self.batch_state[key] = state
            if b["batch_rns"]:
                rns = np.array(b["batch_rns"], dtype=np.int64)
                batch_rns.append(rns)
                # A batch without a gateway, id or currency matches no state: pending.
                known = None not in key
                batch_codes.append(BUCKETS.index(state) if known else B_PENDING)
            if not b["np"] or not self.in_scope(b["pday"]):
                continue
            ok = b["diff"] == 0
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
        self.batch_rns = np.concatenate(batch_rns) if batch_rns else np.zeros(0, dtype=np.int64)
        self.batch_bucket = np.repeat(
            np.array(batch_codes, dtype=np.int8), [r.size for r in batch_rns]
        )
        return {k: (v[0], v[1]) for k, v in counts.items()}

    def batches(self, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        """PAYOUT_SQL's rows, with names for the codes, in name order."""
        role = np.zeros(len(self.cats), dtype=np.int8)
        role[len(PAYMENT_KINDS) + 1 :] = 3
        for r, cat in ((1, "payout"), (2, "payout_reversal")):
            if cat in self.cats:
                role[self.cats.index(cat)] = r
        ln = self.line_in
        con.register(
            "lc",
            pa.table(
                {
                    "keep": self.allowed[self.l_gw],
                    "g": self.l_gw,
                    "c": self.l_cur,
                    "batch_id": ln.column("batch_id"),
                    "role": role[self.l_kind],
                    "net": ln.column("net_minor"),
                    "gross": ln.column("gross_minor"),
                    "day": ln.column("day"),
                    "line_id": ln.column("line_id"),
                    "rn": ln.column(RN),
                }
            ),
        )
        rows = self.rows(PAYOUT_SQL, {"start": self.start, "end": self.end}, con)
        con.unregister("lc")
        for b in rows:
            b["gateway"], b["currency"] = self.gws[b.pop("g")], self.curs[b.pop("c")]

        def name_order(b: Mapping[str, Any]) -> tuple[tuple[bool, str], ...]:
            return tuple((b[k] is None, b[k] or "") for k in ("gateway", "batch_id", "currency"))

        return sorted(rows, key=name_order)

    # -- pass 5: fees --------------------------------------------------------------------------

    def off_schedule(self) -> list[tuple[int, int, int]] | None:
        """(row number, expected fee, tolerance) of the charge lines of the range off their
        gateway's schedule, vectorized; None when the amounts could overflow (see `fees`)."""
        schedules = self.config.fee_schedules
        return self._off_schedule_fast(schedules) if schedules else []

    def fees(self, off: list[tuple[int, int, int]] | None) -> None:
        """Fees against the schedules: exceptions for the lines off schedule (`off_schedule`;
        None: worked out here in DuckDB, on the connection that has the `l` view)."""
        if off is None:  # amounts or schedules outside what the int64 arithmetic covers
            off = self._off_schedule_sql(self.config.fee_schedules)
        if not off:
            return
        by_rn = self.fetch_lines(np.array([rn for rn, _, _ in off], dtype=np.int64))
        # The payment each line is matched to: by reference in the join, else by a later rule.
        by_line = {m.line_id: m.payment_id for m in self.matches}
        partner = {rn: int(self.l_prn[rn]) for rn, _, _ in off if self.l_v[rn] == V_MATCHED}
        partner_ids = {}
        if partner:
            rns = sorted(set(partner.values()))
            found = _take_rows(self.pay_in.select(["payment_id"]), np.array(rns, dtype=np.int64))
            ids = found.column(0).to_pylist()
            partner_ids = dict(zip(rns, ids, strict=True))
            self.p_rn.update({pid: rn for rn, pid in partner_ids.items()})
        found = []
        for rn, expected, tolerance in off:
            ln = by_rn[rn]
            matched = partner_ids[partner[rn]] if rn in partner else by_line.get(ln["line_id"])
            found.append((ln, expected, tolerance, matched))
        for ln, expected, tolerance, matched in sorted(found, key=lambda f: f[0]["line_id"]):
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
                f"{format_minor(diff, cur)}, tolerance {tolerance} minor units).",
                day=ln["day"],
                payment_id=matched,
                line_id=ln["line_id"],
                batch_id=ln["batch_id"],
            )

    def _off_schedule_fast(
        self, schedules: Mapping[str, FeeSchedule]
    ) -> list[tuple[int, int, int]] | None:
        """(row number, expected fee, tolerance) of the charge lines of the range off their
        gateway's schedule; None when the amounts could overflow 64-bit integers."""
        n_gw, n_cur = len(self.gws), len(self.curs)
        has = np.zeros(n_gw, dtype=bool)
        rate = np.zeros((n_gw, 2), dtype=np.int64)  # gateway x (plain, converted)
        tol = np.zeros(n_gw, dtype=np.int64)
        fixed = np.zeros((n_gw, n_cur), dtype=np.int64)
        for g, gateway in enumerate(self.gws):
            sch = schedules.get(gateway) if gateway is not None else None
            if sch is None:
                continue
            has[g], tol[g] = True, sch.tolerance_minor
            rate[g] = (sch.percent_bps, sch.percent_bps + sch.fx_bps)
            for c, cur in enumerate(self.curs):
                if cur is not None:
                    fixed[g, c] = sch.fixed_minor.get(cur, 0)
        tops = [s.percent_bps + max(s.fx_bps, 0) for s in schedules.values()]
        fixes = [abs(f) for s in schedules.values() for f in s.fixed_minor.values()]
        if rate.min() < 0 or tol.min() < 0:
            return None
        day = self.l_day
        fee_col = self.line_in.column("fee_minor")
        sel = self.l_in & (self.l_kind == 1) & has[self.l_gw]
        sel &= (day >= self.first) & (day <= self.last)
        sel &= _valid(self.line_in.column("gross_minor")) & _valid(fee_col)
        idx = np.flatnonzero(sel)
        fees = _ints(fee_col, 0)
        limit, top, fix = INT64_SAFE, max(1, *tops), max(fixes, default=0)

        # A million lines at a time: the same few buffers are reused (ten million lines at
        # once cost as much in fresh memory pages as in arithmetic here). Rates and fixed
        # fees are looked up in tables of a handful of entries by (gateway, converted) and
        # (gateway, currency).
        found: list[tuple[int, int, int]] = []
        for lo in range(0, idx.size, FEE_CHUNK):
            at = idx[lo : lo + FEE_CHUNK]
            gross, gap = self.l_gross[at], fees[at]
            if _largest(gross) * 2 * top + 10_000 >= limit or _largest(gap) + fix >= limit // 2:
                return None
            gi = self.l_gw[at].astype(np.intp)
            expected = np.abs(gross)
            expected *= 2 * rate.ravel()[gi * 2 + (self.l_pcur[at] > 0)]
            expected += 10_000
            expected //= 20_000
            expected += fixed.ravel()[gi * n_cur + self.l_cur[at]]
            gap -= expected
            np.abs(gap, out=gap)
            tolerance = tol[gi]
            off = gap > tolerance
            found.extend(
                zip(at[off].tolist(), expected[off].tolist(), tolerance[off].tolist(), strict=True)
            )
        return found

    def _off_schedule_sql(self, schedules: Mapping[str, FeeSchedule]) -> list[tuple[int, int, int]]:
        """The same in DuckDB, which raises on an overflow instead of wrapping around."""
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
        return [
            (r[RN], r["exp"], r["tolerance"])
            for r in self.rows(OFF_FEE_SQL, [self.start, self.end])
        ]

    # -- pass 6: invoices ----------------------------------------------------------------------

    def flagged_invoices(
        self, con: duckdb.DuckDBPyConnection, vectorized: bool = True
    ) -> list[dict[str, Any]]:
        """The invoices whose payments do not add up (INVOICE_SQL's rows, by invoice id);
        `vectorized=False` runs INVOICE_SQL itself (the fallback, and the tests' reference)."""
        if self.invoices.num_rows == 0:
            return []
        con.register("inv", _numbered(self.invoices.select(INVOICE_COLUMNS)))
        con.register("cn", self.credit_notes)
        # Each payment's part in its invoice, worked out by row number (a refund counts while
        # succeeded or pending).
        received = ((self.p_kind == 1) & self.p_ok) | (
            (self.p_kind == 2) & _among(self.p_stat, (1, 2))
        )
        part = np.where(received, self.p_amt, 0)
        con.register(
            "inv_part",
            pa.table(
                {
                    "invoice_id": self.pay_in.column("invoice_id"),
                    "keep": self.p_in,
                    "rec": pa.array(part, mask=received & ~self.p_amt_ok),
                }
            ),
        )
        try:
            fast = self._flagged_fast(con, part) if vectorized else None
            return fast if fast is not None else self.rows(INVOICE_SQL, con=con)
        finally:
            for name in ("inv_part", "inv", "cn"):
                con.unregister(name)

    def _flagged_fast(
        self, con: duckdb.DuckDBPyConnection, part: np.ndarray
    ) -> list[dict[str, Any]] | None:
        """INVOICE_SQL's rows with DuckDB only finding each payment's and credit note's
        invoice row (the part that needs the text ids) and numpy summing per invoice row and
        comparing (a second join and grouping of millions of rows saved); None when the sums
        could overflow 64-bit integers (DuckDB raises there instead of wrapping around)."""
        paid = con.sql(INVOICE_PARTS_SQL).to_arrow_table()
        credits = con.sql(INVOICE_CREDITS_SQL).to_arrow_table()
        inv = self.invoices
        total_col = inv.column("total_minor")
        total = _ints(total_col, 0)
        rn = _ints(paid.column(RN), 0).astype(np.intp)
        rec = _ints(paid.column("rec"), 0)
        c_rn = _ints(credits.column(RN), 0).astype(np.intp)
        c_amt = _ints(credits.column("amount_minor"), 0)

        bound = _largest(rec) * rec.size + _largest(c_amt) * c_amt.size + _largest(total)
        if bound >= INT64_SAFE:
            return None
        m = inv.num_rows
        has = np.bincount(rn, minlength=m) > 0
        # SUM over only nulls is NULL in SQL, and NULL compares as neither equal nor unequal.
        rec_ok = np.bincount(rn[_valid(paid.column("rec"))], minlength=m) > 0
        got = np.zeros(m, dtype=np.int64)
        np.add.at(got, rn, rec)
        credited = np.zeros(m, dtype=np.int64)
        np.add.at(credited, c_rn, c_amt)
        statuses: list[str | None] = [None, "paid", "open", "void", "uncollectible", "draft"]
        st = _code(inv.column("status"), statuses, extend=False)
        expected = total - credited
        total_ok = _valid(total_col)
        flag = (st == 1) & total_ok & (got != expected)
        flag |= (st >= 3) & (got != 0)
        flag |= (st == 2) & total_ok & (expected > 0) & (got >= expected)
        at = np.flatnonzero(flag & has & rec_ok)
        rows: list[dict[str, Any]] = _take_rows(inv.select(INVOICE_COLUMNS), at).to_pylist()
        for row, i in zip(rows, at.tolist(), strict=True):
            row["credited"], row["received"] = int(credited[i]), int(got[i])
        rows.sort(key=lambda r: r["invoice_id"])
        return rows

    def invoice_checks(self, flagged: list[dict[str, Any]]) -> None:
        """Pass 6 over the flagged invoices (`flagged_invoices`)."""
        if not flagged:
            return
        pay = self.pay_in
        # Only for the few flagged invoices: whether the range touches them, their last day
        # of a succeeded payment, and their gateway (the first by name).
        ids = pa.array([r["invoice_id"] for r in flagged], pa.string())
        at = np.flatnonzero(self.p_in & _ints(pc.is_in(pay.column("invoice_id"), ids), 0))
        seen: dict[str, list[Any]] = {}  # invoice -> [last day, touched, gateway]
        none = np.iinfo(np.int32).min
        for invoice_id, rn in zip(
            _take_rows(pay.select(["invoice_id"]), at).column(0).to_pylist(),
            at.tolist(),
            strict=True,
        ):
            acc = seen.setdefault(invoice_id, [None, False, None])
            day = int(self.p_day[rn])
            if self.p_ok[rn] and day != none and (acc[0] is None or day > acc[0]):
                acc[0] = day
            acc[1] = acc[1] or self.first <= day <= self.last
            gateway = self.gws[self.p_gw[rn]]
            if gateway is not None and (acc[2] is None or gateway < acc[2]):
                acc[2] = gateway
        for r in flagged:
            last, touched, r["gateway"] = seen[r["invoice_id"]]
            if not touched:
                continue
            r["last_day"] = None if last is None else EPOCH + timedelta(days=last)
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

    def _rns(self, ids: Iterable[str], known: dict[str, int], lookup: str) -> list[int]:
        """Row numbers of these ids: the rows read back so far, else looked up."""
        out, missing = [], []
        for i in ids:
            if i in known:
                out.append(known[i])
            else:
                missing.append(i)
        if missing:
            self.con.register("missing_ids", pa.table({"id": pa.array(missing, pa.string())}))
            out += [r for (r,) in self.con.execute(lookup).fetchall()]
        return out

    def classify(self, reported: Sequence[ReconException]) -> None:
        """Every in-scope row's bucket: `exception` when a reported exception names it."""
        named = [x for x in reported if x.kind != "suggested_match"]
        flag_p = self._rns(
            sorted({x.payment_id for x in named if x.payment_id is not None}),
            self.p_rn,
            P_LOOKUP,
        )
        flag_l = self._rns(
            sorted({x.settlement_line_id for x in named if x.settlement_line_id}),
            self.l_rn,
            L_LOOKUP,
        )
        # Payments: matched by reference in the join, else by the state a later pass left
        # (a few rows: set by row number). Codes are small integers, worked out in place.
        rules = [None, *sorted({"reference", *self.pay_state.values()})]
        state = np.zeros(self.pay_in.num_rows, dtype=np.int16)
        state[self._rns(self.pay_state, self.p_rn, P_LOOKUP)] = [
            rules.index(r) for r in self.pay_state.values()
        ]
        by_ref = self.p_v == V_MATCHED
        bucket = by_ref.astype(np.int8) * np.int8(B_MATCHED)
        later = np.flatnonzero(state)
        codes = state[later]
        matched = [rules.index(r) for r in MATCH_RULES if r in rules]
        bucket[later[np.isin(codes, matched)]] = B_MATCHED
        if "pending" in rules:
            bucket[later[codes == rules.index("pending")]] = B_PENDING
        bucket[flag_p] = B_EXCEPTION
        self.rules = rules
        state[by_ref] = rules.index("reference")
        self.p_rule = state
        bucket[~(self.p_in & (self.p_day >= self.first) & (self.p_day <= self.last))] = 0
        self.p_bucket = bucket
        # Lines: payment lines are matched unless named; batch lines follow their batch.
        bucket = self.l_in.astype(np.int8) * np.int8(B_MATCHED)
        bucket[self.batch_rns] = self.batch_bucket
        bucket[flag_l] = np.where(bucket[flag_l] > 0, B_EXCEPTION, 0)
        bucket[(self.l_day < self.first) | (self.l_day > self.last)] = 0
        self.l_bucket = bucket

    def release(self) -> None:
        """Drop what only the passes and the totals needed, before the tables are built."""
        self.con.close()
        for name in (
            "p_ok", "p_neg", "p_in", "l_pcur", "l_gross", "l_day", "l_in", "l_v", "l_prn",
            "batch_rns", "batch_bucket",
        ):  # fmt: skip
            delattr(self, name)

    def bucket_tables(self) -> tuple[pa.Table, pa.Table]:
        """The buckets as tables: one row per in-scope payment and line with a bucket."""
        keep = self.p_bucket > 0
        mask = None if keep.all() else pa.array(keep)
        amount = pa.array(self.p_amt[keep], mask=~self.p_amt_ok[keep])
        pay = self.pay_in
        pid = pay.column("payment_id") if mask is None else pay.column("payment_id").filter(mask)
        day = pay.column("day") if mask is None else pay.column("day").filter(mask)
        pays = pa.table(
            [
                _string_column(pid),
                _strings(self.gws, self.p_gw[keep]),
                _strings(self.curs, self.p_cur[keep]),
                _strings(self.kinds, self.p_kind[keep]),
                _strings(self.statuses, self.p_stat[keep]),
                amount,
                day,
                _strings(BUCKETS, self.p_bucket[keep]),
                _strings(self.rules, self.p_rule[keep]),
            ],
            schema=PAYMENT_BUCKETS,
        )
        keep = self.l_bucket > 0
        mask = None if keep.all() else pa.array(keep)
        ln = self.line_in
        lid, gross, day = (
            ln.column(c) if mask is None else ln.column(c).filter(mask)
            for c in ("line_id", "gross_minor", "day")
        )
        lns = pa.table(
            [
                _string_column(lid),
                _strings(self.gws, self.l_gw[keep]),
                _strings(self.curs, self.l_cur[keep]),
                _strings(self.cats, self.l_kind[keep]),
                gross.cast(pa.int64()),
                day,
                _strings(BUCKETS, self.l_bucket[keep]),
            ],
            schema=LINE_BUCKETS,
        )
        return pays, lns

    def totals(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The buckets folded to the few groups the conservation check and summary need."""
        p = [
            {
                "gateway": self.gws[g],
                "currency": self.curs[c],
                "bucket": BUCKETS[b],
                "day": EPOCH + timedelta(days=d),
                "n": n,
                "total": t,
            }
            for g, c, b, d, n, t in self.grouped(
                {"g": self.p_gw, "c": self.p_cur, "b": self.p_bucket, "d": self.p_day},
                self.p_amt,
                self.p_bucket > 0,
            )
        ]
        ln = [
            {
                "gateway": self.gws[g],
                "currency": self.curs[c],
                "bucket": BUCKETS[b],
                "is_payment": bool(k),
                "n": n,
                "total": t,
            }
            for g, c, b, k, n, t in self.grouped(
                {"g": self.l_gw, "c": self.l_cur, "b": self.l_bucket, "k": self.l_in},
                self.l_gross,
                self.l_bucket > 0,
            )
        ]
        return p, ln

    def grouped(
        self, keys: Mapping[str, np.ndarray], amount: np.ndarray, keep: np.ndarray
    ) -> list[tuple[Any, ...]]:
        """count and exact integer sum of `amount` per combination of the key codes, over the
        rows where `keep` holds (filtered by DuckDB, not copied out first)."""
        self.con.register("grouped_in", pa.table({**keys, "amount": amount, "keep": keep}))
        rows: list[tuple[Any, ...]] = self.con.execute(
            """SELECT * EXCLUDE (amount, keep), count(*), coalesce(sum(amount), 0)::BIGINT
               FROM grouped_in WHERE keep GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        self.con.unregister("grouped_in")
        return rows

    def inputs_in_scope(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per currency, what went in, decided independently of the buckets: the payments of
        the range expected to settle (succeeded, of a kind the gateway's files carry) or named
        by a line, whether by reference or by a later pass; and every line of the range."""
        named = np.zeros(self.pay_in.num_rows, dtype=bool)
        named[self._rns({m.payment_id for m in self.matches}, self.p_rn, P_LOOKUP)] = True
        expected = self.p_ok & self.expected[self.p_gw, self.p_kind]
        take = self.p_in & (self.p_day >= self.first) & (self.p_day <= self.last)
        take &= (self.p_v != 0) | expected | named
        pays = [
            {"currency": self.curs[c], "n": n, "total": t}
            for c, n, t in self.grouped({"c": self.p_cur}, self.p_amt, take)
        ]
        lns = [
            {"currency": cur, "n": n, "total": t}
            for cur, (n, t) in sorted(self.lines_in.items(), key=lambda kv: str(kv[0]))
        ]
        return pays, lns

    def match_table(self) -> pa.Table:
        """Every match of a payment in the range (unordered: the writer orders the files)."""
        keep = (self.p_v == V_MATCHED) & (self.p_day >= self.first) & (self.p_day <= self.last)
        mask = pa.array(keep)
        n = int(keep.sum())
        with ThreadPoolExecutor(max_workers=2) as pool:
            lid = pool.submit(self.line_in.column("line_id").take, pa.array(self.p_lrn[keep]))
            pid, day = _filtered(self.pay_in, ("payment_id", "day"), mask)
            line_id = lid.result()
        by_ref = pa.table(
            [
                _string_column(pid),
                _string_column(line_id),
                _strings(self.gws, self.p_gw[keep]),
                _strings(["reference"], np.zeros(n, dtype=np.int8)),
                day,
            ],
            schema=MATCHES,
        )
        extra = [
            {
                "payment_id": m.payment_id,
                "line_id": m.line_id,
                "gateway": m.gateway,
                "rule": m.rule,
                "day": self.p_rows[m.payment_id]["day"],
            }
            for m in sorted(self.matches, key=attrgetter("payment_id", "line_id"))
        ]
        extra = [m for m in extra if self.in_scope(m["day"])]
        return pa.concat_tables([by_ref, pa.Table.from_pylist(extra, schema=MATCHES)])


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
    check_inputs(
        {
            "payments": payments,
            "settlement lines": lines,
            "invoices": invoices,
            "credit notes": credit_notes,
        }
    )
    e = _Engine(payments, lines, invoices, credit_notes, start, end, as_of, timezone, config)
    try:
        e.code_join_inputs()
        residual = e.verdicts(e.join())
        # The vectorized passes run beside the Python that settles the residual rows; the
        # invoices' exceptions name no payment or line, so the buckets do not wait for them.
        with ThreadPoolExecutor(max_workers=2) as pool:
            batches = pool.submit(e.on_cursor, e.batches)
            flagged = pool.submit(e.on_cursor, e.flagged_invoices)
            off_schedule = pool.submit(e.off_schedule)
            pays, lns = e.by_reference(residual)
            pays, lns = e.by_merchant_reference(pays, lns)
            e.suggestions_and_leftovers(pays, lns)
            e.fees(off_schedule.result())
            payout_counts = e.payouts(batches.result())
            e.classify(e.reported(ordered=False))
            p_in, l_in = e.inputs_in_scope()
            p_totals, l_totals = e.totals()
            conservation = _conservation(p_totals, l_totals, p_in, l_in)
            problems = check_conservation(conservation)
            if problems:
                raise ConservationError("; ".join(problems))
            e.invoice_checks(flagged.result())
        in_scope = e.reported()
        summary = summarize(run_id, start, end, as_of, p_totals, l_totals, in_scope, payout_counts)
        e.release()
        # Both mostly cut Arrow columns (without the GIL): side by side, after the passes
        # (made beside them, the tables would raise the peak memory by a few hundred MB).
        with ThreadPoolExecutor(max_workers=1) as pool:
            matches = pool.submit(e.match_table)
            p_buckets, l_buckets = e.bucket_tables()
        return ReconResult(
            exceptions=in_scope,
            matches=sorted(e.matches, key=attrgetter("payment_id", "line_id")),
            match_table=matches.result(),
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
