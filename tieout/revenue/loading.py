"""Revenue loading end to end: billing from the lake, revenue schedules, Salesforce records, a
plan against the posting ledger (the one ERP posting uses), and its application.

The CLI (`tieout revenue plan|apply`) and the Dagster asset both call these functions, so a
plan reviewed in the launchpad's metadata and one printed in a terminal are the same thing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Final

from tieout.connectors.lake import Lake
from tieout.connectors.ledger import PostingLedger
from tieout.connectors.salesforce import (
    COLLECTION_SIZE,
    SalesforceTarget,
    describe,
)
from tieout.erp.plan import (
    ApplyResult,
    Plan,
    RetryPolicy,
    apply_plan,
    make_record_plan,
)
from tieout.erp.plan import read_plan as read_plan_file
from tieout.errors import ConfigError
from tieout.reconciliation import business_days, latest_versions, read_days
from tieout.revenue.model import ObjectShape, SalesforceRecord
from tieout.revenue.records import Billing, build_records, field_plans
from tieout.revenue.schedules import (
    ScheduleRow,
    build_schedules,
    check_deferred,
    check_line_sums,
)
from tieout.schema import TABLES
from tieout.settings import SalesforceSettings, Settings

SYSTEM: Final = "salesforce"
BILLING_TABLES: Final = ("customers", "invoices", "invoice_lines", "credit_notes", "payments")


def salesforce_settings(settings: Settings) -> SalesforceSettings:
    sf = settings.revenue.salesforce
    if sf is None:
        raise ConfigError(
            "no [revenue.salesforce] section in the settings: add it (see docs/revenue.md) "
            "before planning or loading"
        )
    return sf


def read_billing(settings: Settings, lake: Lake, end: date) -> Billing:
    """Every billing row the lake holds up to `end`, latest version of each: account balances
    and MRR need the whole history, not just the range being loaded."""
    days = business_days(settings.billing.partitions_start, end)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for name in BILLING_TABLES:
        spec = TABLES[name]
        table, _ = read_days(lake, ("billing", name), days, spec.arrow_schema())
        out[name] = latest_versions(table, spec.column_names[0]).to_pylist()
    return Billing(**out)


@dataclass
class Sources:
    billing: Billing
    schedules: list[ScheduleRow]
    records: list[SalesforceRecord]
    problems: list[str]


def build_sources(
    settings: Settings, lake: Lake, start: date, end: date, shapes: Mapping[str, ObjectShape]
) -> Sources:
    sf = salesforce_settings(settings)
    billing = read_billing(settings, lake, end)
    tz = settings.reconciliation.finance_timezone
    result = build_schedules(
        billing.invoices, billing.invoice_lines, billing.credit_notes, finance_timezone=tz
    )
    plans, problems = field_plans(sf, shapes)
    args = (billing.invoices, billing.invoice_lines, billing.credit_notes)
    # The schedule asset blocks on these too; a load run re-checks what it is about to send.
    problems += [f"schedule: {p}" for p in check_line_sums(result.rows, *args, finance_timezone=tz)]
    problems += [f"deferred: {p}" for p in check_deferred(result.rows, *args, finance_timezone=tz)]
    records: list[SalesforceRecord] = []
    if not problems:
        records = build_records(
            billing,
            [r.as_dict() for r in result.rows],
            plans,
            start=start,
            end=end,
            finance_timezone=tz,
        )
    return Sources(billing, result.rows, records, problems)


def describe_all(settings: SalesforceSettings, client: Any) -> dict[str, ObjectShape]:
    """Describe every object that will be sent (a missing object fails here, by name)."""
    names = sorted({settings.objects.of(kind).name for kind in settings.send})
    return {name: describe(client, name) for name in names}


def plan_revenue(
    settings: Settings,
    lake: Lake,
    ledger: PostingLedger,
    start: date,
    end: date,
    shapes: Mapping[str, ObjectShape],
) -> Plan:
    """What loading [start, end] would send; nothing is sent. `shapes` is describe's answer
    for the objects (`describe_all`), so unknown fields fail here, named."""
    sources = build_sources(settings, lake, start, end, shapes)
    # A record is its own base: keys, statuses and hashes are all the plan needs.
    keys = [r.external_id for r in sources.records]
    rows = ledger.key_states(SYSTEM, base_ids=keys) if keys else {}
    return make_record_plan(
        sources.records,
        list(rows.values()),
        system=SYSTEM,
        start=start,
        end=end,
        as_of=end,
        problems_found=sources.problems,
    )


def bulk_objects(plan: Plan, settings: SalesforceSettings) -> frozenset[str]:
    """Objects with more records to send than the Collections threshold go through Bulk."""
    counts = Counter(p.entry.sobject for p in plan.entries)
    return frozenset(o for o, n in counts.items() if n > settings.collections_threshold)


def batches_for(
    settings: SalesforceSettings, bulk: frozenset[str]
) -> Callable[[list[Any]], list[list[Any]]]:
    """Requests of 200 for Collections objects, jobs of `bulk_records_per_job` for Bulk."""

    def batches(records: list[Any]) -> list[list[Any]]:
        by_object: dict[str, list[Any]] = defaultdict(list)
        for r in records:
            by_object[r.sobject].append(r)
        out: list[list[Any]] = []
        for sobject, group in sorted(by_object.items()):
            size = settings.bulk_records_per_job if sobject in bulk else COLLECTION_SIZE
            out += [group[i : i + size] for i in range(0, len(group), size)]
        return out

    return batches


def make_target(settings: Settings, plan: Plan, client_factory: Any = None) -> SalesforceTarget:
    sf = salesforce_settings(settings)
    return SalesforceTarget(
        sf,
        client_factory=client_factory,
        base_dir=Path(settings.base_dir),
        bulk_objects=bulk_objects(plan, sf),
    )


#: Parents before children: a child names its parent by external id, which must exist.
PHASES: Final = (("accounts",), ("invoices",), ("payments", "schedules"))


def apply_revenue(
    settings: Settings,
    plan: Plan,
    ledger: PostingLedger,
    target: SalesforceTarget,
    progress: Any = None,
) -> ApplyResult:
    """Load the plan in phases (accounts, invoices, then payments and schedule rows), each
    phase through the shared poster: batches in parallel, retries, the ledger."""
    sf = salesforce_settings(settings)
    total = ApplyResult()
    for kinds in PHASES:
        entries = [p for p in plan.entries if p.entry.kind in kinds]
        bases = {p.entry.base for p in entries}
        part = replace(
            plan,
            entries=entries,
            fingerprints={b: f for b, f in plan.fingerprints.items() if b in bases},
        )
        if kinds == PHASES[0]:  # the unchanged records' fingerprints are checked once
            part.fingerprints.update(
                {b: f for b, f in plan.fingerprints.items() if b in set(plan.unchanged)}
            )
        result = apply_plan(
            part,
            ledger,
            target,
            batch_size=COLLECTION_SIZE,
            batcher=batches_for(sf, target.bulk_objects),
            concurrency=sf.concurrency,
            policy=RetryPolicy(max_attempts=sf.max_attempts, backoff_seconds=sf.backoff_seconds),
            progress=progress,
        )
        total.confirmed += result.confirmed
        total.skipped += result.skipped
        total.failed.update(result.failed)
        total.unresolved.update(result.unresolved)
        total.read_back += result.read_back
        total.requests += result.requests
    total.confirmed.sort()
    return total


def render_plan(plan: Plan, limit: int | None = None) -> str:
    """Counts per object and action, then the records (shortened to `limit`) and problems."""
    c = plan.counts()
    out = [
        f"Revenue plan {plan.start}..{plan.end} for {plan.system}: {c['create']} to create, "
        f"{c['update']} to update, {c['retry']} to retry, {c['unchanged']} unchanged"
    ]
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for p in plan.entries:
        per[p.entry.sobject][p.action] += 1
    for sobject, counts in sorted(per.items()):
        parts = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
        out.append(f"  {sobject:<28} {parts}")
    listed = [f"  {p.action:<7} {p.entry.external_id}  {p.reason}" for p in plan.entries]
    shown = listed if limit is None else listed[:limit]
    out += shown
    if len(listed) > len(shown):
        out.append(f"  ... and {len(listed) - len(shown)} more")
    for problem in plan.problems:
        out.append(f"  PROBLEM {problem}")
    return "\n".join(out)


def plan_markdown(plan: Plan) -> str:
    c = plan.counts()
    rows = [
        f"**{c['create']}** to create, **{c['update']}** to update, **{c['retry']}** to "
        f"retry, {c['unchanged']} unchanged",
        "",
        "| object | action | records |",
        "|---|---|---:|",
    ]
    per: Counter[tuple[str, str]] = Counter((p.entry.sobject, p.action) for p in plan.entries)
    for (sobject, action), n in sorted(per.items()):
        rows.append(f"| {sobject} | {action} | {n} |")
    rows += [f"- problem: {p}" for p in plan.problems]
    return "\n".join(rows)


def read_plan(path: Path) -> Plan:
    return read_plan_file(path, SYSTEM, decode=SalesforceRecord.from_payload)
