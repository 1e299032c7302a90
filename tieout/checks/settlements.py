"""Native checks of the canonical settlement lines and the payouts view.

Every check runs in DuckDB over the Arrow tables in place (one scan for the row-level checks,
one grouped pass for the key): no Python touches a row except the few failures shown as a
sample, so ten million lines take seconds. Money is compared in integers only: the presentment
check converts with exact integer arithmetic (HUGEINT), never floats.

A check never raises for bad data; it returns a `CheckResult` saying what failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tieout.checks.result import SAMPLE_SIZE, CheckResult, sample
from tieout.connectors.settlements.base import CATEGORIES
from tieout.errors import InputDataError
from tieout.money import CURRENCY_EXPONENTS, format_minor

__all__ = [
    "LINES_CATEGORY",
    "LINES_CURRENCY",
    "LINES_DATASET",
    "LINES_NET",
    "LINES_PRESENTMENT",
    "LINES_PRIMARY_KEY",
    "PAYOUTS_DATASET",
    "PAYOUTS_TIE_OUT",
    "QUARANTINED_FILES",
    "settlement_checks",
]

LINES_DATASET: Final = "settlements/lines"
PAYOUTS_DATASET: Final = "settlements/payouts"

LINES_NET: Final = "settlement_lines_net"
LINES_PRIMARY_KEY: Final = "settlement_lines_primary_key"
LINES_CATEGORY: Final = "settlement_lines_category"
LINES_CURRENCY: Final = "settlement_lines_currency"
LINES_PRESENTMENT: Final = "settlement_lines_presentment"
PAYOUTS_TIE_OUT: Final = "settlement_payouts_tie_out"
QUARANTINED_FILES: Final = "settlement_files_quarantined"

#: Converted presentment amounts may differ from the gross by this many minor units (the
#: gateway may round the rate it states, or convert before its own rounding).
PRESENTMENT_TOLERANCE_MINOR: Final = 1
#: Rates with more significant digits than this (or finer than `_MAX_RATE_SCALE` decimals)
#: are converted in Python instead of DuckDB, so the HUGEINT product cannot overflow:
#: |amount| < 2**63 < 10**19, so |amount x rate digits x 10**4| < 10**38 < 2**127.
_MAX_RATE_DIGITS: Final = 15
_MAX_RATE_SCALE: Final = 30

#: The lines with each row-level verdict as a column: every query below reads this view.
_CHECKED_VIEW: Final = """
CREATE TEMP VIEW checked AS
SELECT gateway, line_id, gateway || '/' || line_id AS key, source_file, source_row, category,
       currency, gross_minor, fee_minor, net_minor, presentment_currency,
       presentment_amount_minor, exchange_rate,
       coalesce(net_minor::HUGEINT = gross_minor::HUGEINT - fee_minor::HUGEINT, false)
           AS net_ok,
       coalesce(category IN (SELECT category FROM allowed_categories), false) AS category_ok,
       coalesce(currency IN (SELECT code FROM currencies), false) AS currency_known,
       presentment_currency IS NULL
           OR coalesce(presentment_currency IN (SELECT code FROM currencies), false)
           AS presentment_currency_known,
       exchange_rate IS NOT NULL AND presentment_amount_minor IS NOT NULL AS has_fx
FROM lines
"""

#: One scan for every row-level count.
_COUNTS_SQL: Final = """
SELECT count(*) AS n,
       count(*) FILTER (WHERE NOT net_ok) AS net_bad,
       count(*) FILTER (WHERE NOT category_ok) AS category_bad,
       count(*) FILTER (WHERE NOT (currency_known AND presentment_currency_known))
           AS currency_bad,
       count(*) FILTER (WHERE has_fx) AS fx
FROM checked
"""

_NET_SAMPLE_SQL: Final = """
SELECT key, source_file, source_row, gross_minor, fee_minor, net_minor
FROM checked WHERE NOT net_ok
ORDER BY gateway, line_id LIMIT ?
"""

_CATEGORY_SAMPLE_SQL: Final = """
SELECT key, source_file, source_row, category
FROM checked WHERE NOT category_ok
ORDER BY gateway, line_id LIMIT ?
"""

_CATEGORY_VALUES_SQL: Final = """
SELECT category AS value, count(*) AS lines
FROM checked WHERE NOT category_ok
GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST LIMIT ?
"""

_CURRENCY_SAMPLE_SQL: Final = """
SELECT key, source_file, source_row, currency, presentment_currency
FROM checked WHERE NOT (currency_known AND presentment_currency_known)
ORDER BY gateway, line_id LIMIT ?
"""

_CURRENCY_VALUES_SQL: Final = """
SELECT value, count(*) AS lines FROM (
    SELECT currency AS value FROM checked WHERE NOT currency_known
    UNION ALL
    SELECT presentment_currency FROM checked WHERE NOT presentment_currency_known
) GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST LIMIT ?
"""

#: Keys seen more than once, and lines without a key at all.
_KEY_COUNTS_SQL: Final = """
SELECT count(*) FILTER (WHERE gateway IS NOT NULL AND line_id IS NOT NULL AND n > 1) AS dup_keys,
       coalesce(sum(n) FILTER (WHERE gateway IS NOT NULL AND line_id IS NOT NULL AND n > 1), 0)
           AS dup_rows,
       coalesce(sum(n) FILTER (WHERE gateway IS NULL OR line_id IS NULL), 0) AS null_rows
FROM (SELECT gateway, line_id, count(*) AS n FROM lines GROUP BY gateway, line_id)
"""

_KEY_SAMPLE_SQL: Final = """
SELECT coalesce(gateway, '<null>') || '/' || coalesce(line_id, '<null>') AS key,
       count(*) AS n, list(DISTINCT source_file ORDER BY source_file)[1:5] AS files
FROM lines
GROUP BY gateway, line_id
HAVING count(*) > 1 OR gateway IS NULL OR line_id IS NULL
ORDER BY gateway NULLS FIRST, line_id NULLS FIRST LIMIT ?
"""

#: The distinct exchange rates, to be parsed in Python (few, compared with the lines).
_RATES_SQL: Final = "SELECT DISTINCT exchange_rate FROM checked WHERE has_fx"

_POW10_SQL: Final = """
CREATE TEMP TABLE pow10 AS
SELECT i::INTEGER AS i, CAST('1' || repeat('0', i::INTEGER) AS HUGEINT) AS p
FROM range(0, 39) t(i)
"""

#: presentment x rate in settlement minor units, half-up, as exact integers:
#: amount_minor x num x 10^(e_to - e_from - scale), where rate = num / 10^scale. `bad`: the
#: converted amount is off by more than the tolerance (?), or cannot be computed at all.
_FX_SQL: Final = """
CREATE TEMP VIEW fx AS
WITH c AS (
    SELECT l.gateway, l.line_id, l.key, l.source_file, l.source_row, l.currency,
           l.presentment_currency, l.presentment_amount_minor, l.exchange_rate,
           l.gross_minor, r.num, r.status, et.e - ef.e - r.scale AS k
    FROM checked l
    JOIN rates r ON r.rate = l.exchange_rate
    LEFT JOIN currencies et ON et.code = l.currency
    LEFT JOIN currencies ef ON ef.code = l.presentment_currency
    WHERE l.has_fx
), p AS (
    SELECT c.*, c.presentment_amount_minor::HUGEINT * c.num::HUGEINT AS prod, pw.p AS pw
    FROM c LEFT JOIN pow10 pw ON pw.i = abs(c.k)
), v AS (
    SELECT p.*,
           CASE WHEN status <> 'ok' OR k IS NULL OR gross_minor IS NULL THEN NULL
                WHEN k >= 0 THEN prod * pw
                ELSE sign(prod) * ((abs(prod) + pw // 2) // pw) END AS converted
    FROM p
)
SELECT gateway, line_id, key, source_file, source_row, currency, gross_minor,
       presentment_currency, presentment_amount_minor, exchange_rate, status,
       converted::VARCHAR AS converted_minor,
       status = 'invalid' OR (status = 'ok' AND converted IS NULL) AS unconvertible,
       status = 'invalid'
           OR (status = 'ok' AND (converted IS NULL
                                  OR abs(converted - gross_minor::HUGEINT)
                                     > (SELECT tolerance_minor FROM fx_params))) AS bad
FROM v
"""

_FX_COUNTS_SQL: Final = """
SELECT count(*) FILTER (WHERE bad), count(*) FILTER (WHERE unconvertible),
       count(*) FILTER (WHERE status = 'big')
FROM fx
"""

_FX_SAMPLE_SQL: Final = """
SELECT key, source_file, source_row, currency, gross_minor, presentment_currency,
       presentment_amount_minor, exchange_rate, converted_minor
FROM fx WHERE bad ORDER BY gateway, line_id LIMIT ?
"""

#: Rates too long for the HUGEINT product: converted in Python (rare).
_FX_BIG_SQL: Final = """
SELECT key, source_file, source_row, currency, gross_minor, presentment_currency,
       presentment_amount_minor, exchange_rate
FROM fx WHERE status = 'big' ORDER BY gateway, line_id
"""

_PAYOUTS_VIEW: Final = """
CREATE TEMP VIEW unresolved AS
SELECT * FROM payouts WHERE coalesce(has_payout, false) AND NOT coalesce(ties_out, false)
"""

_PAYOUTS_COUNTS_SQL: Final = """
SELECT (SELECT count(*) FROM payouts WHERE has_payout), (SELECT count(*) FROM unresolved)
"""

_PAYOUTS_SAMPLE_SQL: Final = """
SELECT gateway, batch_id, currency, payout_day::VARCHAR AS payout_day, lines, net_minor,
       payout_minor, difference_minor
FROM unresolved
ORDER BY abs(difference_minor) DESC NULLS LAST, gateway, batch_id, currency LIMIT ?
"""

_PAYOUTS_BY_CURRENCY_SQL: Final = """
SELECT currency, sum(difference_minor)::HUGEINT::VARCHAR AS difference_minor
FROM unresolved GROUP BY 1 ORDER BY 1 NULLS FIRST
"""


def settlement_checks(
    lines: pa.Table, payouts: pa.Table | None = None, *, quarantined_files: int = 0
) -> list[CheckResult]:
    """Every settlement check: the lines' arithmetic, keys, codes and FX, the payouts' tie-out
    (only when `payouts` is given) and the files the last scan quarantined."""
    con = duckdb.connect()
    try:
        con.execute("SET threads TO 2")
        con.register("lines", lines)
        con.register("allowed_categories", pa.table({"category": pa.array(CATEGORIES)}))
        con.register(
            "currencies",
            pa.table(
                {
                    "code": pa.array(list(CURRENCY_EXPONENTS), pa.string()),
                    "e": pa.array(list(CURRENCY_EXPONENTS.values()), pa.int32()),
                }
            ),
        )
        con.execute(_CHECKED_VIEW)
        out = _line_checks(con)
        if payouts is not None:
            out.append(_payouts_check(con, payouts))
    finally:
        con.close()
    out.append(_quarantine_check(quarantined_files))
    return out


# --------------------------------------------------------------------------------------------
# Lines


def _rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        con.sql(sql, params=list(params) or None).to_arrow_table().to_pylist()
    )
    return rows


def _sample(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    return _rows(con, sql, [SAMPLE_SIZE])


def _examples(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sampled lines with what is wrong with them (`line` is the sample key)."""
    return [{"line": r["key"]} | {k: v for k, v in r.items() if k != "key"} for r in rows]


def _line_checks(con: duckdb.DuckDBPyConnection) -> list[CheckResult]:
    counts = _rows(con, _COUNTS_SQL)[0]
    n = int(counts["n"])

    net_bad = int(counts["net_bad"])
    net_rows = _sample(con, _NET_SAMPLE_SQL) if net_bad else []
    net = CheckResult(
        name=LINES_NET,
        dataset=LINES_DATASET,
        passed=net_bad == 0,
        severity="error",
        description="Every settlement line's net equals its gross less its fee "
        "(net_minor = gross_minor - fee_minor), so the fees posted add up to what was paid out.",
        failing=net_bad,
        checked=n,
        sample=tuple(r["key"] for r in net_rows),
        details={"examples": _examples(net_rows)} if net_rows else {},
    )

    key = _key_check(con, n)

    cat_bad = int(counts["category_bad"])
    cat_rows = _sample(con, _CATEGORY_SAMPLE_SQL) if cat_bad else []
    cat_details: dict[str, Any] = {}
    if cat_bad:
        cat_details["allowed"] = list(CATEGORIES)
        cat_details["bad_values"] = _sample(con, _CATEGORY_VALUES_SQL)
        cat_details["examples"] = _examples(cat_rows)
    category = CheckResult(
        name=LINES_CATEGORY,
        dataset=LINES_DATASET,
        passed=cat_bad == 0,
        severity="error",
        description="Every settlement line has a known category (charge, refund, fee, "
        "payout, ...), so it is reconciled and posted to the right account.",
        failing=cat_bad,
        checked=n,
        sample=tuple(r["key"] for r in cat_rows),
        details=cat_details,
    )

    cur_bad = int(counts["currency_bad"])
    cur_rows = _sample(con, _CURRENCY_SAMPLE_SQL) if cur_bad else []
    cur_details: dict[str, Any] = {}
    if cur_bad:
        cur_details["bad_values"] = _sample(con, _CURRENCY_VALUES_SQL)
        cur_details["examples"] = _examples(cur_rows)
    currency = CheckResult(
        name=LINES_CURRENCY,
        dataset=LINES_DATASET,
        passed=cur_bad == 0,
        severity="error",
        description="Every settlement currency and presentment currency is an upper-case ISO "
        "4217 code with defined minor units (USD, EUR, JPY), so amounts are read with the right "
        "number of decimals.",
        failing=cur_bad,
        checked=n,
        sample=tuple(r["key"] for r in cur_rows),
        details=cur_details,
    )

    presentment = _presentment_check(con, int(counts["fx"]))
    return [net, key, category, currency, presentment]


def _key_check(con: duckdb.DuckDBPyConnection, n: int) -> CheckResult:
    counts = _rows(con, _KEY_COUNTS_SQL)[0]
    dup_keys = int(counts["dup_keys"])
    dup_rows = int(counts["dup_rows"])
    null_rows = int(counts["null_rows"])
    failing = dup_keys + null_rows
    rows = _sample(con, _KEY_SAMPLE_SQL) if failing else []
    details: dict[str, Any] = {}
    if failing:
        details = {
            "duplicate_keys": dup_keys,
            "duplicate_rows": dup_rows,
            "lines_without_key": null_rows,
            "examples": [{"line": r["key"], "rows": r["n"], "files": r["files"]} for r in rows],
        }
    return CheckResult(
        name=LINES_PRIMARY_KEY,
        dataset=LINES_DATASET,
        passed=failing == 0,
        severity="error",
        description="No settlement line (gateway, line_id) is loaded twice, so no money movement "
        "is counted twice. Failing counts the keys seen more than once plus lines without a key.",
        failing=failing,
        checked=n,
        sample=tuple(r["key"] for r in rows),
        details=details,
    )


def _parse_rate(text: str) -> tuple[int | None, int | None, str]:
    """(num, scale, status) with rate = num / 10**scale exactly; status ok | big | invalid.

    `big`: too many digits for DuckDB's 128-bit product; such lines are converted in Python.
    """
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError, TypeError):
        return None, None, "invalid"
    if not value.is_finite():
        return None, None, "invalid"
    sign, digits, exp = value.as_tuple()
    if not isinstance(exp, int):  # pragma: no cover - finite values have an int exponent
        return None, None, "invalid"
    num = int("".join(map(str, digits)) or "0")
    scale = -exp
    if scale < 0:
        if -scale > _MAX_RATE_DIGITS:
            return None, None, "big"
        num, scale = num * _pow10(-scale), 0
    while scale > 0 and num % 10 == 0:
        num, scale = num // 10, scale - 1
    if num >= _pow10(_MAX_RATE_DIGITS) or scale > _MAX_RATE_SCALE:
        return None, None, "big"
    return (-num if sign else num), scale, "ok"


def _pow10(n: int) -> int:
    result: int = 10**n
    return result


def _converted_exact(amount_minor: int, from_exp: int, rate: Decimal, to_exp: int) -> int:
    """amount x rate in the settlement currency's minor units, rounded half-up (away from zero
    on ties), in Python integers: the same arithmetic as the DuckDB pass, without a bound."""
    sign, digits, exp = rate.as_tuple()
    if not isinstance(exp, int):  # pragma: no cover - callers pass finite rates
        raise ValueError(rate)
    num = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    k = to_exp - from_exp + exp  # exp is minus the rate's scale
    prod = amount_minor * num
    if k >= 0:
        return prod * _pow10(k)
    den = _pow10(-k)
    q = (abs(prod) + den // 2) // den
    return q if prod >= 0 else -q


def _big_converted(r: Mapping[str, Any]) -> int | None:
    to_exp = CURRENCY_EXPONENTS.get(r["currency"] or "")
    from_exp = CURRENCY_EXPONENTS.get(r["presentment_currency"] or "")
    if to_exp is None or from_exp is None or r["gross_minor"] is None:
        return None
    try:
        rate = Decimal(r["exchange_rate"])
    except (InvalidOperation, ValueError, TypeError):
        return None
    if not rate.is_finite():
        return None
    return _converted_exact(int(r["presentment_amount_minor"]), from_exp, rate, to_exp)


def _presentment_check(con: duckdb.DuckDBPyConnection, fx: int) -> CheckResult:
    failing = unconvertible = 0
    bad_rows: list[dict[str, Any]] = []
    if fx:
        parsed = [(r, *_parse_rate(r)) for (r,) in con.sql(_RATES_SQL).fetchall()]
        con.register(
            "rates",
            pa.table(
                {
                    "rate": pa.array([p[0] for p in parsed], pa.string()),
                    "num": pa.array([p[1] for p in parsed], pa.int64()),
                    "scale": pa.array([p[2] for p in parsed], pa.int32()),
                    "status": pa.array([p[3] for p in parsed], pa.string()),
                }
            ),
        )
        con.execute(_POW10_SQL)
        con.register("fx_params", pa.table({"tolerance_minor": [PRESENTMENT_TOLERANCE_MINOR]}))
        con.execute(_FX_SQL)
        bad, none, big = (int(v) for v in con.sql(_FX_COUNTS_SQL).fetchall()[0])
        failing, unconvertible = bad, none
        bad_rows = _sample(con, _FX_SAMPLE_SQL) if failing else []
        for r in _rows(con, _FX_BIG_SQL) if big else []:
            converted = _big_converted(r)
            if converted is not None and (
                abs(converted - r["gross_minor"]) <= PRESENTMENT_TOLERANCE_MINOR
            ):
                continue
            unconvertible += converted is None
            failing += 1
            bad_rows.append(r | {"converted_minor": None if converted is None else str(converted)})
        bad_rows = sorted(bad_rows, key=lambda r: str(r["key"]))[:SAMPLE_SIZE]
    details: dict[str, Any] = {"tolerance_minor": PRESENTMENT_TOLERANCE_MINOR}
    if failing:
        details["unconvertible"] = unconvertible
        details["examples"] = _examples(bad_rows)
    return CheckResult(
        name=LINES_PRESENTMENT,
        dataset=LINES_DATASET,
        passed=failing == 0,
        severity="error",
        description="Where a line states a presentment amount and an exchange rate, the "
        "presentment amount times the rate, rounded half-up to the settlement currency's minor "
        f"unit, is within {PRESENTMENT_TOLERANCE_MINOR} minor unit of the gross (exact decimal "
        "arithmetic). A rate that is not a number, or a currency that is missing or unknown, "
        "cannot be converted and fails too (unconvertible).",
        failing=failing,
        checked=fx,
        sample=tuple(str(r["key"]) for r in bad_rows),
        details=details,
    )


# --------------------------------------------------------------------------------------------
# Payouts and files


def _shown(amount: int, currency: str | None) -> str:
    try:
        return format_minor(amount, currency or "")
    except InputDataError:  # an unknown currency is another check's finding, not a crash here
        return f"{amount} minor units of {currency!r}"


def _payouts_check(con: duckdb.DuckDBPyConnection, payouts: pa.Table) -> CheckResult:
    con.register("payouts", payouts)
    con.execute(_PAYOUTS_VIEW)
    total, failing = (int(v) for v in con.sql(_PAYOUTS_COUNTS_SQL).fetchall()[0])
    batches: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    if failing:
        batches = _sample(con, _PAYOUTS_SAMPLE_SQL)
        for b in batches:
            if b["difference_minor"] is not None:
                b["difference"] = _shown(b["difference_minor"], b["currency"])
        details = {
            "batches": batches,
            "difference_by_currency": {
                r["currency"]: _shown(int(r["difference_minor"]), r["currency"])
                for r in _rows(con, _PAYOUTS_BY_CURRENCY_SQL)
                if r["difference_minor"] is not None
            },
        }
    return CheckResult(
        name=PAYOUTS_TIE_OUT,
        dataset=PAYOUTS_DATASET,
        passed=failing == 0,
        severity="warn",
        description="Every paid-out batch ties out: its lines and its payout net to zero. A "
        "batch that does not is a reconciliation exception (payout_mismatch) that accountants "
        "work from the exception report, so this check warns instead of blocking every other "
        "posting.",
        failing=failing,
        checked=total,
        sample=tuple(f"{b['gateway']}/{b['batch_id']} ({b['currency']})" for b in batches),
        details=details,
    )


def _quarantine_check(quarantined_files: int) -> CheckResult:
    details: dict[str, Any] = {}
    if quarantined_files > 0:
        details["message"] = f"{quarantined_files} files quarantined, see the .error.json sidecars"
    return CheckResult(
        name=QUARANTINED_FILES,
        dataset=LINES_DATASET,
        passed=quarantined_files <= 0,
        severity="warn",
        description="No settlement file was quarantined by the scan. A quarantined file could "
        "not be read as a whole, so none of its lines are loaded: read its .error.json sidecar, "
        "then fix or replace the file.",
        failing=max(quarantined_files, 0),
        details=details,
    )


PAYOUTS_CONSISTENT: Final = "settlement_payouts_consistent"


def payouts_consistent(payouts: pa.Table) -> CheckResult:
    """The payouts view adds up: difference = lines' net + payout, and a batch ties out exactly
    when it has a payout and no difference. A failure means the view itself is wrong."""
    diff = pc.subtract(
        payouts.column("difference_minor"),
        pc.add(payouts.column("net_minor"), payouts.column("payout_minor")),
    )
    wrong_diff = pc.not_equal(diff, 0)
    should_tie = pc.and_(
        payouts.column("has_payout"), pc.equal(payouts.column("difference_minor"), 0)
    )
    wrong_flag = pc.not_equal(should_tie, payouts.column("ties_out"))
    bad = pc.fill_null(pc.or_(wrong_diff, wrong_flag), True)
    failing = int(pc.sum(pc.cast(bad, pa.int64())).as_py() or 0)
    rows = payouts.filter(bad).slice(0, SAMPLE_SIZE).to_pylist() if failing else []
    return CheckResult(
        name=PAYOUTS_CONSISTENT,
        dataset=PAYOUTS_DATASET,
        passed=failing == 0,
        severity="error",
        description="Each batch's difference is its lines' net plus its payout, and it ties "
        "out exactly when it was paid out with no difference.",
        failing=failing,
        checked=payouts.num_rows,
        sample=sample(f"{r['gateway']}/{r['batch_id']} ({r['currency']})" for r in rows),
    )
