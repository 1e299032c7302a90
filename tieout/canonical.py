"""Turn whatever a source returned into a canonical frame, and never lose a row doing it.

Rows whose values break the contract (unknown currency, NULL or text money, missing required
values) are split off into a quarantine table that names the row's primary key, the column,
the value received and why; the good rows load. Money stays integer minor units throughout:
a floating-point money column is refused outright rather than rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tieout.errors import SchemaMismatchError
from tieout.money import CURRENCY_EXPONENTS, minor_to_decimal
from tieout.schema import ARROW_TYPES, Column, TableSpec

WINDOW_COLUMN: Final = "_window_at"

QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field("table", pa.string(), nullable=False),
        pa.field("primary_key", pa.string(), nullable=False),
        pa.field("column", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("changed_at", pa.timestamp("us", tz="UTC")),
    ]
)

_INT_PATTERN: Final = r"^\s*[+-]?[0-9]{1,18}\s*$"
_KNOWN_CURRENCIES: Final = pa.array(sorted(CURRENCY_EXPONENTS), pa.string())


@dataclass(frozen=True)
class Canonical:
    """Good rows in canonical schema, their window timestamps, and the quarantined problems."""

    rows: pa.Table
    window: pa.ChunkedArray
    quarantine: pa.Table

    @property
    def quarantined_keys(self) -> list[str]:
        return sorted(set(self.quarantine.column("primary_key").to_pylist()))


class _Problems:
    """Collects bad rows; touches Python objects only for the (few) rows that are bad."""

    def __init__(self, spec: TableSpec, pk: pa.ChunkedArray) -> None:
        self.spec = spec
        self.pk = pk
        self.bad: set[int] = set()
        self.records: list[dict[str, object]] = []
        self.window: pa.ChunkedArray | None = None

    def key(self, i: int) -> str:
        k = self.pk[i].as_py()
        return f"<row {i + 1}: NULL {self.spec.primary_key}>" if k is None else str(k)

    def add(
        self, mask: pa.Array | pa.ChunkedArray, column: str, values: pa.ChunkedArray, why: str
    ) -> None:
        for i in pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist():
            self.bad.add(i)
            v = values[i].as_py()
            self.records.append(
                {
                    "table": self.spec.name,
                    "primary_key": self.key(i),
                    "column": column,
                    "value": None if v is None else str(v),
                    "reason": why,
                    "changed_at": None if self.window is None else self.window[i].as_py(),
                }
            )

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.records, schema=QUARANTINE_SCHEMA)


def _is_float(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t))


def as_plain(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Unwrap extension types (ADBC returns Postgres numeric as an opaque string extension)."""
    if isinstance(arr.type, pa.BaseExtensionType):
        return pa.chunked_array([c.storage for c in arr.chunks], type=arr.type.storage_type)
    if pa.types.is_dictionary(arr.type):
        return pc.cast(arr, arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        return pc.cast(arr, pa.string())
    return arr


def _integer_column(arr: pa.ChunkedArray, col: Column, problems: _Problems) -> pa.ChunkedArray:
    spec = problems.spec
    if _is_float(arr.type):
        raise SchemaMismatchError(
            f"{spec.name}.{col.name} is a floating-point column in the billing database; "
            "money must be an integer number of minor units. Fix the source type, or map the "
            f'table with [billing.tables.{spec.name}] query = "SELECT ..., CAST(... AS BIGINT) '
            f'AS {col.name} ..." in dagster_project.toml'
        )
    nulls = pc.is_null(arr)
    if arr.null_count:
        what = "NULL money" if col.kind == "money" else "NULL value"
        problems.add(nulls, col.name, arr, f"{what} in {spec.name}.{col.name}")
    if pa.types.is_integer(arr.type):
        return pc.cast(arr, pa.int64())
    text = pc.cast(arr, pa.string())
    ok = pc.match_substring_regex(text, _INT_PATTERN)
    invalid = pc.and_(pc.invert(pc.fill_null(ok, False)), pc.invert(nulls))
    problems.add(
        invalid,
        col.name,
        arr,
        f"{spec.name}.{col.name} must be an integer number of minor units (no decimals, no text)",
    )
    cleaned = pc.if_else(pc.fill_null(ok, False), pc.utf8_trim_whitespace(text), None)
    return pc.cast(cleaned, pa.int64())


def _currency_column(arr: pa.ChunkedArray, col: Column, problems: _Problems) -> pa.ChunkedArray:
    text = pc.utf8_upper(pc.utf8_trim_whitespace(pc.cast(arr, pa.string())))
    known = pc.is_in(text, value_set=_KNOWN_CURRENCIES)
    bad = pc.invert(pc.fill_null(known, False))
    if pc.any(bad).as_py():
        problems.add(
            pc.and_(bad, pc.is_valid(arr)),
            col.name,
            arr,
            "unknown currency code (not ISO 4217 with defined minor units)",
        )
        problems.add(pc.is_null(arr), col.name, arr, "missing currency code")
    return text


_QUANTUM: Final = Decimal("1e-9")


def to_decimals(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.Array]:
    """Exact decimal128(38, 9) from numbers or numeric text, and a mask of what did not parse.

    Floats (SQLite has no exact numeric) go through their shortest repr, never binary.
    """
    target = ARROW_TYPES["numeric"]
    if pa.types.is_decimal(arr.type) or pa.types.is_integer(arr.type):
        return pc.cast(arr, target), pa.array([False] * len(arr), pa.bool_())
    out: list[Decimal | None] = []
    bad: list[bool] = []
    for v in arr.to_pylist():
        try:
            d = None if v is None else Decimal(repr(v) if isinstance(v, float) else str(v).strip())
            if d is not None and not d.is_finite():
                raise InvalidOperation
            out.append(None if d is None else d.quantize(_QUANTUM))
            bad.append(False)
        except (InvalidOperation, ValueError):
            out.append(None)
            bad.append(True)
    return pa.chunked_array([pa.array(out, type=target)]), pa.array(bad, pa.bool_())


def _decimal_column(arr: pa.ChunkedArray, col: Column, problems: _Problems) -> pa.ChunkedArray:
    out, bad = to_decimals(arr)
    problems.add(bad, col.name, arr, f"{problems.spec.name}.{col.name} is not a number")
    return out


def _temporal_column(arr: pa.ChunkedArray, col: Column, problems: _Problems) -> pa.ChunkedArray:
    target = ARROW_TYPES[col.kind]
    t = arr.type
    if col.kind == "timestamp" and pa.types.is_timestamp(t):
        if t.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return pc.cast(arr, target)
    if col.kind == "date" and pa.types.is_date(t):
        return pc.cast(arr, target)
    if col.kind == "date" and pa.types.is_timestamp(t):
        return pc.cast(arr, target)
    # Text (SQLite stores timestamps as ISO strings): parse, report what does not parse.
    values = arr.to_pylist()
    series = pd.Series(values, dtype="object")
    parsed = pd.to_datetime(series, format="ISO8601", utc=True, errors="coerce")
    unparsed = parsed.isna() & series.notna()
    problems.add(pa.array(unparsed.to_numpy()), col.name, arr, f"not a valid {col.kind} (ISO 8601)")
    as_ts = pa.array(parsed.dt.as_unit("us"), type=pa.timestamp("us", tz="UTC"))
    return pa.chunked_array([pc.cast(as_ts, target)])


def canonicalize(spec: TableSpec, raw: pa.Table, source: str) -> Canonical:
    """Cast `raw` (canonical column names, any types, plus `_window_at`) to the contract."""
    missing = [c for c in (*spec.column_names, WINDOW_COLUMN) if c not in raw.column_names]
    if missing:
        raise SchemaMismatchError(
            f"{source} did not return column(s) {', '.join(missing)} for canonical table "
            f"{spec.name}; fix [billing.tables.{spec.name}] in dagster_project.toml"
        )
    problems = _Problems(spec, raw.column(spec.primary_key))
    window_col = (
        spec.column(spec.window_column) if spec.window_column in spec.column_names else None
    )
    window = _temporal_column(
        as_plain(raw.column(WINDOW_COLUMN)),
        window_col or Column(WINDOW_COLUMN, "timestamp"),
        problems,
    )
    problems.window = window
    arrays: list[pa.ChunkedArray] = []
    for col in spec.columns:
        arr = as_plain(raw.column(col.name))
        if col.kind in ("money", "int"):
            out = _integer_column(arr, col, problems)
        elif col.kind == "code3":
            out = _currency_column(arr, col, problems)
        elif col.kind == "numeric":
            out = _decimal_column(arr, col, problems)
        elif col.kind in ("timestamp", "date"):
            out = _temporal_column(arr, col, problems)
        else:
            out = pc.cast(arr, pa.string())
        # NULL in the source, not a value that failed to parse (already reported above).
        if not col.nullable and col.kind not in ("money", "int", "code3") and arr.null_count:
            problems.add(pc.is_null(arr), col.name, arr, "missing required value")
        arrays.append(out)
    table = pa.Table.from_arrays(arrays, schema=spec.arrow_schema())
    if problems.bad:
        bad = pa.array(sorted(problems.bad), pa.int64())
        keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=bad))
        table = table.filter(keep)
        window = window.filter(keep)
    return Canonical(rows=table, window=window, quarantine=problems.table())


def day_windows(days: list[date], timezone: str) -> list[tuple[date, datetime, datetime]]:
    """Each business day as a half-open [start, end) UTC interval in the finance time zone."""
    tz = ZoneInfo(timezone)
    out = []
    for d in days:
        start = datetime(d.year, d.month, d.day, tzinfo=tz)
        nxt = d + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        out.append((d, start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))))
    return out


_UTC: Final = frozenset({"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu"})


def local_days(window: pa.ChunkedArray, timezone: str) -> pa.ChunkedArray:
    """The business day (in the finance time zone) each row's window timestamp falls on."""
    if timezone in _UTC:  # Arrow keeps UTC instants; the time zone database is 10x slower
        return pc.cast(pc.cast(window, pa.timestamp("us")), pa.date32())
    local = pc.local_timestamp(pc.cast(window, pa.timestamp("us", tz=timezone)))
    return pc.cast(local, pa.date32())


def split_by_day(canonical: Canonical, days: list[date], timezone: str) -> dict[date, pa.Table]:
    """One table per day of `days` (empty ones included, so a re-run replaces stale data)."""
    day_of_row = local_days(canonical.window, timezone)
    return {d: canonical.rows.filter(pc.equal(day_of_row, pa.scalar(d, pa.date32()))) for d in days}


def money_totals(spec: TableSpec, table: pa.Table) -> dict[str, dict[str, int]]:
    """Per currency, the sum of each money column, as exact integers of minor units."""
    if not spec.currency_columns or not spec.money_columns or table.num_rows == 0:
        return {}
    cur = spec.currency_columns[0]
    grouped = table.group_by(cur).aggregate([(c, "sum") for c in spec.money_columns])
    out: dict[str, dict[str, int]] = {}
    for row in sorted(grouped.to_pylist(), key=lambda r: str(r[cur])):
        out[str(row[cur])] = {c: int(row[f"{c}_sum"]) for c in spec.money_columns}
    return out


def format_totals(totals: dict[str, dict[str, int]]) -> str:
    """A Markdown table of money totals with each currency's own decimals."""
    if not totals:
        return "_no money in this partition_"
    cols = list(next(iter(totals.values())))
    lines = ["| currency | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for cur, sums in totals.items():
        cells = " | ".join(str(minor_to_decimal(sums[c], cur)) for c in cols)
        lines.append(f"| {cur} | {cells} |")
    return "\n".join(lines)
