"""Run a reconciliation over business days: the library code the Dagster asset calls.

It reads the canonical billing tables and settlement lines of the range from the lake, plus a
context of days around it (late settlements, refunds of earlier charges), hands them to the
engine, records the run and the exceptions' life cycle in the state database, and writes the
accountants' reports. Billing partitions hold the rows changed on a day, so a row may appear
in several partitions: the latest version (by `updated_at`) wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tieout.checks.asset_checks import group_of, recorded_results
from tieout.checks.reconciliation import reconciliation_checks
from tieout.checks.result import CheckResult
from tieout.connectors.exception_store import ExceptionStore
from tieout.connectors.lake import Lake
from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.connectors.storage import Storage
from tieout.reconcile.engine import (
    EngineConfig,
    FeeSchedule,
    ReconResult,
    lake_schema,
    reconcile,
)
from tieout.reconcile.model import ReconException
from tieout.reports import write_reports
from tieout.schema import TABLES
from tieout.settings import PAYMENT_KINDS, ChecksSettings, Settings
from tieout.settlements import SETTLEMENT_LINES

Progress = Callable[[str], None]
BILLING_INPUTS: Final = ("payments", "invoices", "credit_notes")


def engine_config(settings: Settings, gateways: Sequence[str] | None = None) -> EngineConfig:
    """The engine's view of `[reconciliation]`."""
    rc = settings.reconciliation
    known = ("stripe", "adyen", "paypal", "braintree")
    return EngineConfig(
        settlement_window_days=rc.settlement_window_days,
        gateway_window_days={
            g: o.settlement_window_days
            for g, o in rc.gateways.items()
            if o.settlement_window_days is not None
        },
        suggest_window_days=rc.suggest_window_days,
        fee_schedules={
            g: FeeSchedule(
                percent_bps=o.fee_schedule.percent_bps,
                fixed_minor=dict(o.fee_schedule.fixed_minor),
                fx_bps=o.fee_schedule.fx_bps,
                tolerance_minor=o.fee_schedule.tolerance_minor,
            )
            for g, o in rc.gateways.items()
            if o.fee_schedule is not None
        },
        expected_kinds={
            g: rc.expected_kinds(g) for g in known if rc.expected_kinds(g) != PAYMENT_KINDS
        },
        gateways=list(gateways) if gateways else None,
    )


@dataclass
class Inputs:
    payments: pa.Table
    invoices: pa.Table
    credit_notes: pa.Table
    lines: pa.Table
    missing: dict[str, list[date]] = field(default_factory=dict)  # dataset -> days in range


def business_days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def read_days(
    lake: Lake, dataset: tuple[str, str], days: Sequence[date], schema: pa.Schema
) -> tuple[pa.Table, list[date]]:
    tables, missing = [], []
    for day in days:
        if lake.exists(dataset, day.isoformat()):
            tables.append(lake.read(dataset, day.isoformat()).cast(schema))
        else:
            missing.append(day)
    return (pa.concat_tables(tables) if tables else schema.empty_table()), missing


def latest_versions(table: pa.Table, key: str) -> pa.Table:
    """One row per primary key: the most recently updated version."""
    if table.num_rows == 0 or "updated_at" not in table.column_names:
        return table
    con = duckdb.connect()
    try:
        con.register("t", table)
        out: pa.Table = con.sql(
            f"""SELECT * FROM t QUALIFY row_number() OVER (
                    PARTITION BY "{key}" ORDER BY updated_at DESC) = 1
                ORDER BY "{key}" """  # noqa: S608 - `key` is a canonical column name
        ).to_arrow_table()
    finally:
        con.close()
    return out.cast(table.schema)


def load_inputs(lake: Lake, start: date, end: date, context_days: int) -> Inputs:
    """The range and its context from the lake; days not extracted yet are reported."""
    window = business_days(start - timedelta(days=context_days), end + timedelta(days=context_days))
    in_range = set(business_days(start, end))
    missing: dict[str, list[date]] = {}
    frames: dict[str, pa.Table] = {}
    for name in BILLING_INPUTS:
        spec = TABLES[name]
        table, gaps = read_days(lake, ("billing", name), window, spec.arrow_schema())
        frames[name] = latest_versions(table, spec.column_names[0])
        missing[f"billing/{name}"] = sorted(d for d in gaps if d in in_range)
    lines, gaps = read_days(lake, SETTLEMENT_LINES, window, SETTLEMENT_LINE_SCHEMA)
    missing["settlements/lines"] = sorted(d for d in gaps if d in in_range)
    return Inputs(
        payments=frames["payments"],
        invoices=frames["invoices"],
        credit_notes=frames["credit_notes"],
        lines=lines,
        missing={k: v for k, v in missing.items() if v},
    )


#: Dataset -> the result's table and the columns that order its files.
RECON_TABLES: Final = {
    ("recon", "matches"): ("match_table", ["payment_id", "line_id"]),
    ("recon", "payments"): ("payment_buckets", ["payment_id"]),
    ("recon", "lines"): ("line_buckets", ["line_id"]),
}


def _write_partitions(lake: Lake, result: ReconResult, start: date, end: date) -> None:
    """Persist every match and every row's bucket, one partition per business day.

    The engine returns its tables in no particular order (ordering 10M rows would cost more
    than matching them); each day's file is ordered here, so the same inputs write the same
    files.
    """
    for dataset, (attr, order) in RECON_TABLES.items():
        table: pa.Table = getattr(result, attr)
        days = table.column("day")
        plain = lake_schema(table.schema)
        for day in business_days(start, end):
            part = table.filter(pc.equal(days, pa.scalar(day, pa.date32()))).cast(plain)
            lake.write(dataset, day.isoformat(), part.sort_by([(c, "ascending") for c in order]))


def revenue_waterfall(lake: Lake, start: date, end: date, timezone: str) -> list[dict[str, Any]]:
    """What the invoices and credit notes issued in [start, end] recognize, per currency and
    month (lines travel in their invoice's partitions, so the range's days hold them all)."""
    from tieout.revenue.schedules import build_schedules, waterfall

    days = business_days(start, end)
    frames: dict[str, list[dict[str, Any]]] = {}
    for name in ("invoices", "invoice_lines", "credit_notes"):
        spec = TABLES[name]
        table, _ = read_days(lake, ("billing", name), days, spec.arrow_schema())
        frames[name] = latest_versions(table, spec.column_names[0]).to_pylist()
    rows = build_schedules(
        frames["invoices"], frames["invoice_lines"], frames["credit_notes"],
        finance_timezone=timezone,
    ).rows  # fmt: skip
    first, last = start.replace(day=1), end.replace(day=1)
    mine = [r for r in rows if first <= r.billing_month <= last]
    return [
        {"currency": p.currency, "month": p.month.isoformat(), "recognized_minor": p.amount_minor}
        for p in waterfall(mine)
    ]


@dataclass
class RunOutcome:
    result: ReconResult
    exceptions: list[ReconException]  # as stored (statuses, first seen) unless a dry run
    reports: dict[str, str]
    missing: dict[str, list[date]]
    checks: list[CheckResult] = field(default_factory=list)  # the reconciliation's own


#: The upstream assets whose recorded check results the report's validation summary shows.
CHECKED_UPSTREAM: Final = (
    *(("billing", name) for name in ("customers", "subscriptions", "invoices",
                                     "invoice_lines", "payments", "credit_notes")),
    ("settlements", "lines"),
    ("settlements", "payouts"),
)  # fmt: skip


def run_reconciliation(
    *,
    lake: Lake,
    store: ExceptionStore | None,
    reports: Storage | None,
    start: date,
    end: date,
    timezone: str,
    config: EngineConfig,
    run_id: str,
    as_of: date | None = None,
    progress: Progress | None = None,
    checks_settings: ChecksSettings | None = None,
) -> RunOutcome:
    """Reconcile [start, end]; `store`/`reports` None means a dry run (nothing persisted)."""
    say = progress or (lambda _m: None)
    inputs = load_inputs(lake, start, end, config.context_days)
    for dataset, days in inputs.missing.items():
        say(
            f"{dataset}: {len(days)} day(s) of the range not in the lake "
            f"({days[0]}..{days[-1]}); run the extraction/settlement load for them first"
        )
    say(
        f"reconciling {start}..{end}: {inputs.payments.num_rows} billing payment(s) and "
        f"{inputs.lines.num_rows} settlement line(s) with {config.context_days} day(s) of context"
    )
    result = reconcile(
        inputs.payments,
        inputs.lines,
        inputs.invoices,
        inputs.credit_notes,
        start=start,
        end=end,
        as_of=as_of or end,
        timezone=timezone,
        config=config,
        run_id=run_id,
    )
    exceptions: list[ReconException] = list(result.exceptions)
    stored_open: list[Any] = []
    if store is not None:
        _write_partitions(lake, result, start, end)
        exceptions = store.record_run(
            run_id,
            start,
            end,
            as_of or end,
            config.gateways or result.summary.gateways,
            result.exceptions,
            result.summary.to_json(),
        )
        stored_open = store.list(status="open")
    checks = reconciliation_checks(
        result, stored=stored_open, as_of=as_of or end, settings=checks_settings or ChecksSettings()
    )
    result.summary.checks = [
        *recorded_results(lake, CHECKED_UPSTREAM, business_days(start, end)),
        *(
            {
                "dataset": c.dataset,
                "name": c.name,
                "group": group_of(c),
                "severity": c.severity,
                "passed": c.passed,
                "failing": c.failing,
                "checked": c.checked,
                "description": c.description,
                "days": (end - start).days + 1,
            }
            for c in checks
        ),
    ]
    result.summary.revenue = revenue_waterfall(lake, start, end, timezone)
    uris: dict[str, str] = {}
    if reports is not None:
        uris = write_reports(exceptions, result.summary, reports)
        say(f"reports written to {reports.root}")
    by_kind = ", ".join(f"{k} {n}" for k, n in result.summary.exceptions_by_kind.items())
    say(f"{len(exceptions)} exception(s){': ' + by_kind if by_kind else ''}")
    return RunOutcome(result, exceptions, uris, inputs.missing, checks)
