"""Extract billing tables into daily Parquet partitions: the library code the assets call.

A run covers one or more business days with a single query over the whole range (one scan,
not one per day), then splits rows by the business day of their change timestamp in the
finance time zone and replaces each day's partition. Usage is aggregated in the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tieout.canonical import (
    QUARANTINE_SCHEMA,
    Canonical,
    as_plain,
    canonicalize,
    day_windows,
    local_days,
    money_totals,
    split_by_day,
    to_decimals,
)
from tieout.connectors.billing import BillingDatabase
from tieout.connectors.lake import Lake
from tieout.schema import TABLES, USAGE_DAILY_SCHEMA

#: Canonical tables extracted as they are, in dependency order.
EXTRACTED_TABLES: Final = (
    "customers",
    "subscriptions",
    "invoices",
    "invoice_lines",
    "payments",
    "credit_notes",
)
USAGE_DAILY: Final = "usage_daily"
DATASETS: Final = (*EXTRACTED_TABLES, USAGE_DAILY)
QUARANTINE_ZONE: Final = "_quarantine"

Progress = Callable[[str], None]


def dataset_path(name: str) -> tuple[str, str]:
    return ("billing", name)


@dataclass(frozen=True)
class PartitionOutcome:
    day: date
    uri: str
    rows: int
    money: dict[str, dict[str, int]]
    quarantined: int


@dataclass
class ExtractOutcome:
    dataset: str
    schema: pa.Schema
    partitions: list[PartitionOutcome] = field(default_factory=list)
    quarantine: pa.Table = field(default_factory=QUARANTINE_SCHEMA.empty_table)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def money(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for p in self.partitions:
            for cur, sums in p.money.items():
                acc = out.setdefault(cur, dict.fromkeys(sums, 0))
                for col, v in sums.items():
                    acc[col] += v
        return dict(sorted(out.items()))


def read_canonical(
    db: BillingDatabase, table: str, days: Sequence[date], timezone: str
) -> Canonical:
    """All rows of `table` changed during `days` (contiguous), canonical and checked."""
    windows = day_windows(sorted(days), timezone)
    start, end = windows[0][1], windows[-1][2]
    raw = db.read_table(table, start, end)
    return canonicalize(TABLES[table], raw, source=f"billing table {db.source_table(table)}")


def extract_frame(
    db: BillingDatabase, table: str, days: Sequence[date], timezone: str
) -> pd.DataFrame:
    """The canonical rows as a pandas frame with Arrow-backed dtypes (money stays int64)."""
    frame: pd.DataFrame = read_canonical(db, table, days, timezone).rows.to_pandas(
        types_mapper=pd.ArrowDtype
    )
    return frame


def _write_quarantine(lake: Lake, name: str, day: date, rows: pa.Table) -> None:
    if rows.num_rows:
        lake.write(dataset_path(name), day.isoformat(), rows, zone=QUARANTINE_ZONE)
    else:
        lake.delete(dataset_path(name), day.isoformat(), zone=QUARANTINE_ZONE)


def extract_table(
    db: BillingDatabase,
    lake: Lake,
    table: str,
    days: Sequence[date],
    timezone: str,
    progress: Progress | None = None,
) -> ExtractOutcome:
    spec = TABLES[table]
    days = sorted(days)
    canonical = read_canonical(db, table, days, timezone)
    per_day = split_by_day(canonical, days, timezone)
    q = canonical.quarantine
    q_days = local_days(q.column("changed_at"), timezone) if q.num_rows else None
    outcome = ExtractOutcome(dataset=table, schema=spec.arrow_schema(), quarantine=q)
    for day in days:
        rows = per_day[day]
        day_q = (
            q.filter(pc.equal(q_days, pa.scalar(day, pa.date32())))
            if q_days is not None
            else QUARANTINE_SCHEMA.empty_table()
        )
        uri = lake.write(dataset_path(table), day.isoformat(), rows)
        _write_quarantine(lake, table, day, day_q)
        outcome.partitions.append(
            PartitionOutcome(day, uri, rows.num_rows, money_totals(spec, rows), day_q.num_rows)
        )
    if progress:
        bad = f", {q.num_rows} quarantined value(s)" if q.num_rows else ""
        progress(f"billing/{table}: {outcome.rows} rows over {len(days)} day(s){bad}")
    return outcome


def extract_usage_daily(
    db: BillingDatabase,
    lake: Lake,
    days: Sequence[date],
    timezone: str,
    progress: Progress | None = None,
) -> ExtractOutcome:
    """Usage aggregated per customer, subscription, metric and day by the database itself."""
    outcome = ExtractOutcome(dataset=USAGE_DAILY, schema=USAGE_DAILY_SCHEMA)
    for day, start, end in day_windows(sorted(days), timezone):
        raw = db.read_usage_daily(start, end)
        n = raw.num_rows
        qty, _ = to_decimals(as_plain(raw.column("quantity")))  # sums of numbers: always parse
        table = pa.Table.from_arrays(
            [
                pa.array([day] * n, pa.date32()),
                pc.cast(raw.column("customer_id"), pa.string()),
                pc.cast(raw.column("subscription_id"), pa.string()),
                pc.cast(raw.column("metric"), pa.string()),
                qty,
                pc.cast(raw.column("event_count"), pa.int64()),
            ],
            schema=USAGE_DAILY_SCHEMA,
        )
        uri = lake.write(dataset_path(USAGE_DAILY), day.isoformat(), table)
        outcome.partitions.append(PartitionOutcome(day, uri, n, {}, 0))
    if progress:
        progress(f"billing/{USAGE_DAILY}: {outcome.rows} aggregate rows over {len(days)} day(s)")
    return outcome


def extract_dataset(
    db: BillingDatabase,
    lake: Lake,
    name: str,
    days: Sequence[date],
    timezone: str,
    progress: Progress | None = None,
) -> ExtractOutcome:
    if name == USAGE_DAILY:
        return extract_usage_daily(db, lake, days, timezone, progress)
    return extract_table(db, lake, name, days, timezone, progress)
