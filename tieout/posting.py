"""ERP posting end to end: sources from the lake and the exception store, journal entries,
a plan against the posting ledger, and its application to NetSuite.

The CLI (`tieout erp plan|apply`) and the Dagster posting asset both call these functions, so
a plan reviewed in the launchpad's metadata and one printed in a terminal are the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from tieout.canonical import local_days
from tieout.connectors.exception_store import ExceptionStore
from tieout.connectors.lake import Lake
from tieout.connectors.ledger import PostingLedger
from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.erp.journals import (
    AccountMap,
    HeldBatch,
    JournalEntry,
    billing_journals,
    settlement_journals,
)
from tieout.erp.plan import (
    ApplyResult,
    Plan,
    RetryPolicy,
    Target,
    apply_plan,
    make_plan,
)
from tieout.erp.plan import read_plan as read_plan_file
from tieout.errors import ConfigError
from tieout.reconciliation import business_days, latest_versions, read_days
from tieout.schema import TABLES
from tieout.settings import NetSuiteSettings, Settings

SYSTEM: Final = "netsuite"
SETTLEMENT_LOOKBACK_DAYS: Final = 31  # a batch's lines precede its payout by up to this


def netsuite_settings(settings: Settings) -> NetSuiteSettings:
    ns = settings.erp.netsuite
    if ns is None:
        raise ConfigError(
            "no [erp.netsuite] section in the settings: add the account, subsidiary and "
            "[erp.netsuite.accounts] (see docs/erp.md) before planning or posting"
        )
    return ns


def account_map(ns: NetSuiteSettings) -> AccountMap:
    a = ns.accounts
    gateways: dict[str, dict[str, str]] = {}
    for name, g in ns.gateways.items():
        over: dict[str, str] = {}
        for key in ("bank", "gateway_clearing", "gateway_fees", "department"):
            value = getattr(g, key)
            if value:
                over[key] = value
        if g.class_:
            over["class"] = g.class_
        for cur, acc in g.bank_by_currency.items():
            over[f"bank:{cur}"] = acc
        gateways[name] = over
    return AccountMap(
        accounts_receivable=a.accounts_receivable,
        revenue=a.revenue,
        deferred_revenue=a.deferred_revenue,
        tax_payable=a.tax_payable,
        discounts=a.discounts,
        credit_notes=a.credit_notes or a.revenue,
        gateway_clearing=a.gateway_clearing,
        gateway_fees=a.gateway_fees,
        fx_difference=a.fx_difference,
        bank=a.bank,
        suspense=a.suspense,
        split_clearing=a.split_clearing or a.suspense,
        subsidiary=ns.subsidiary,
        subsidiaries=dict(ns.subsidiaries),
        department=ns.department,
        class_=ns.class_,
        gateways=gateways,
    )


@dataclass
class Sources:
    entries: list[JournalEntry]
    held_batches: list[HeldBatch]
    counts: dict[str, int]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def build_entries(
    settings: Settings,
    lake: Lake,
    store: ExceptionStore | None,
    start: date,
    end: date,
    as_of: date,
) -> Sources:
    """Every journal entry for [start, end] from the lake, holding back what open exceptions
    name. Billing rows are read up to `as_of` (a later update of an invoice issued in the
    range, e.g. a void, changes its entry)."""
    ns = netsuite_settings(settings)
    accounts = account_map(ns)
    tz = settings.reconciliation.finance_timezone
    window = business_days(start, max(end, as_of))
    frames: dict[str, pa.Table] = {}
    for name in ("invoices", "invoice_lines", "credit_notes"):
        spec = TABLES[name]
        table, _ = read_days(lake, ("billing", name), window, spec.arrow_schema())
        frames[name] = latest_versions(table, spec.column_names[0])
    days: dict[str, date] = {}
    for name, key in (("invoices", "invoice_id"), ("credit_notes", "credit_note_id")):
        t = frames[name]
        if t.num_rows:
            issued = local_days(t.column("issued_at"), tz).to_pylist()
            days.update(zip(t.column(key).to_pylist(), issued, strict=True))
    invoices = _rows(frames["invoices"])
    entries = billing_journals(
        invoices,
        _rows(frames["invoice_lines"]),
        _rows(frames["credit_notes"]),
        days=days,
        start=start,
        end=end,
        accounts=accounts,
    )
    lines_window = business_days(start - timedelta(days=SETTLEMENT_LOOKBACK_DAYS), end)
    lines, _ = read_days(lake, ("settlements", "lines"), lines_window, SETTLEMENT_LINE_SCHEMA)
    if lines.num_rows:
        lines = lines.append_column("day", local_days(lines.column("occurred_at"), tz))
    held_lines: dict[str, str] = {}
    held_batch_keys: dict[tuple[str, str, str], str] = {}
    if store is not None:
        for x in store.list(status="open"):
            if x.kind == "suggested_match":
                continue
            if x.kind == "payout_mismatch" and x.gateway and x.batch_id and x.currency:
                held_batch_keys[(x.gateway, x.batch_id, x.currency)] = (
                    f"open payout_mismatch exception {x.exception_id[:12]}"
                )
            elif x.settlement_line_id:
                held_lines[x.settlement_line_id] = f"{x.kind} {x.exception_id[:12]}"
    stl, held = settlement_journals(
        _rows(lines),
        start=start,
        end=end,
        accounts=accounts,
        held_lines=held_lines,
        held_batches=held_batch_keys,
    )
    return Sources(
        entries=entries + stl,
        held_batches=held,
        counts={
            "invoices": len(invoices),
            "settlement_lines": lines.num_rows,
            "billing_entries": len(entries),
            "settlement_entries": len(stl),
        },
    )


def plan_posting(
    settings: Settings,
    lake: Lake,
    store: ExceptionStore | None,
    ledger: PostingLedger,
    start: date,
    end: date,
    as_of: date,
) -> Plan:
    ns = netsuite_settings(settings)
    sources = build_entries(settings, lake, store, start, end, as_of)
    bases = [e.external_id for e in sources.entries]
    rows = ledger.rows(SYSTEM, base_ids=bases) if bases else {}
    return make_plan(
        sources.entries,
        list(rows.values()),
        system=SYSTEM,
        start=start,
        end=end,
        as_of=as_of,
        update_mode=ns.update_mode,
        split_clearing=account_map(ns).split_clearing,
        held_batches=sources.held_batches,
    )


def apply_posting(
    settings: Settings,
    plan: Plan,
    ledger: PostingLedger,
    target: Target,
    progress: Any = None,
) -> ApplyResult:
    ns = netsuite_settings(settings)
    return apply_plan(
        plan,
        ledger,
        target,
        batch_size=ns.batch_size,
        concurrency=ns.concurrency,
        policy=RetryPolicy(max_attempts=ns.max_attempts, backoff_seconds=ns.backoff_seconds),
        progress=progress,
    )


def render_plan(plan: Plan, limit: int | None = None) -> str:
    """The plan as an accountant reads it: counts, totals per currency and account, holds.

    `limit` shortens the per-entry and per-hold listings (the demo's output); problems are
    always listed in full."""
    c = plan.counts()
    out = [
        f"ERP plan {plan.start}..{plan.end} (as of {plan.as_of}) for {plan.system}: "
        f"{c['create']} to create, {c['update']} to update, {c['adjust']} adjusting, "
        f"{c['retry']} to retry, {c['unchanged']} unchanged; "
        f"{c['held_lines']} line(s) and {c['held_batches']} batch(es) held back",
    ]
    from tieout.money import format_minor

    totals = plan.totals()
    if totals:
        out.append("  currency  account      debit             credit            lines")
        for t in totals:
            out.append(
                f"  {t['currency']:<8}  {t['account']:<11}  "
                f"{format_minor(t['debit_minor'], t['currency']):<16}  "
                f"{format_minor(t['credit_minor'], t['currency']):<16}  {t['lines']}"
            )
    listed = [
        f"  {p.action:<7} {p.entry.external_id}  {p.entry.tran_date}  {p.reason}"
        for p in plan.entries
    ]
    held = [
        f"  held    line {h['line_id']} in {h['entry']} (open exception; in suspense)"
        for h in plan.held_lines
    ] + [
        f"  held    batch {b['gateway']}/{b['batch_id']} {b['currency']}: {b['reason']}"
        for b in plan.held_batches
    ]
    for rows in (listed, held):
        shown = rows if limit is None else rows[:limit]
        out += shown
        if len(rows) > len(shown):
            out.append(f"  ... and {len(rows) - len(shown)} more")
    for problem in plan.problems:
        out.append(f"  PROBLEM {problem}")
    return "\n".join(out)


def read_plan(path: Path) -> Plan:
    return read_plan_file(path, SYSTEM)
