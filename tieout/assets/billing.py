"""Daily billing extraction assets, one per canonical dataset, keyed ["billing", <name>].

No `from __future__ import annotations` here: Dagster reads the parameter annotations.
"""

import warnings
from datetime import date, timedelta
from typing import Any

import dagster as dg
import pyarrow as pa

from tieout.canonical import day_windows, format_totals
from tieout.checks.asset_checks import (
    GROUPS,
    INTEGRITY,
    WARNINGS,
    check_results,
    check_specs,
    record_results,
)
from tieout.checks.result import CheckResult
from tieout.connectors.billing import BillingDatabase
from tieout.connectors.lake import Lake
from tieout.extraction import (
    DATASETS,
    USAGE_DAILY,
    ExtractOutcome,
    dataset_path,
    extract_dataset,
)
from tieout.resources import BillingDatabaseResource, LakeResource
from tieout.schema import TABLES, USAGE_DAILY_SCHEMA
from tieout.settings import ChecksSettings

_DESCRIPTIONS = {
    "customers": "Customers changed on the business day (by updated_at).",
    "subscriptions": "Subscriptions changed on the business day (by updated_at).",
    "invoices": "Invoices changed on the business day (by updated_at).",
    "invoice_lines": "Lines of the invoices changed on the business day.",
    "payments": "Charges, refunds and chargebacks changed on the business day (by updated_at).",
    "credit_notes": "Credit notes changed on the business day (by updated_at).",
    USAGE_DAILY: "Usage per customer, subscription and metric for the business day, "
    "aggregated in the billing database.",
}

QUARANTINE_SAMPLE = 20


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                f.name,
                str(f.type),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema
        ]
    )


def outcome_metadata(outcome: ExtractOutcome) -> dict[str, Any]:
    """What an accountant or operator needs to trust a partition at a glance."""
    # A range run attaches the same metadata to every partition it wrote, so a per-partition
    # row count is only claimed when the run wrote exactly one partition.
    count_key = "dagster/row_count" if len(outcome.partitions) == 1 else "rows_in_run"
    meta: dict[str, Any] = {
        count_key: outcome.rows,
        "dagster/column_schema": column_schema(outcome.schema),
        "rows_by_day": dg.MetadataValue.json(
            {p.day.isoformat(): p.rows for p in outcome.partitions}
        ),
        "path": dg.MetadataValue.path(outcome.partitions[0].uri.rsplit("/date=", 1)[0]),
        "quarantined_values": outcome.quarantine.num_rows,
    }
    if outcome.dataset in TABLES and TABLES[outcome.dataset].money_columns:
        meta["money_totals_minor"] = dg.MetadataValue.json(outcome.money)
        meta["money_totals"] = dg.MetadataValue.md(format_totals(outcome.money))
    if outcome.quarantine.num_rows:
        sample = outcome.quarantine.slice(0, QUARANTINE_SAMPLE).select(
            ["primary_key", "column", "value", "reason"]
        )
        rows = ["| key | column | value | reason |", "|---|---|---|---|"]
        rows += [
            f"| {r['primary_key']} | {r['column']} | {r['value']} | {r['reason']} |"
            for r in sample.to_pylist()
        ]
        meta["quarantine_sample"] = dg.MetadataValue.md("\n".join(rows))
    return meta


def _trailing(lake: Lake, name: str, days: list[date], settings: ChecksSettings) -> list[int]:
    """Row counts of the partitions just before the run's first day."""
    out = []
    for i in range(1, settings.trailing_partitions + 1):
        before = days[0] - timedelta(days=i)
        if lake.exists(dataset_path(name), before.isoformat()):
            out.append(lake.num_rows(dataset_path(name), before.isoformat()))
    return out


def billing_check_results(
    name: str,
    db: BillingDatabase,
    lake: Lake,
    days: list[date],
    timezone: str,
    settings: ChecksSettings,
) -> list[CheckResult]:
    """Check what landed in the lake for `days` (not what was meant to)."""
    from tieout.checks.billing import billing_checks, usage_checks

    if name == USAGE_DAILY:
        parts = [
            lake.read(dataset_path(name), d.isoformat())
            for d in days
            if lake.exists(dataset_path(name), d.isoformat())
        ]
        usage = pa.concat_tables(parts) if parts else USAGE_DAILY_SCHEMA.empty_table()
        return usage_checks(usage, trailing_counts=_trailing(lake, name, days, settings),
                            settings=settings)  # fmt: skip
    spec = TABLES[name]
    parts = [
        lake.read(dataset_path(name), d.isoformat())
        for d in days
        if lake.exists(dataset_path(name), d.isoformat())
    ]
    table = pa.concat_tables(parts) if parts else spec.arrow_schema().empty_table()
    windows = day_windows(days, timezone)
    invoice_lines = None
    if name == "invoices":
        line_parts = [
            lake.read(dataset_path("invoice_lines"), d.isoformat())
            for d in days
            if lake.exists(dataset_path("invoice_lines"), d.isoformat())
        ]
        invoice_lines = pa.concat_tables(line_parts) if line_parts else None
    known = None
    if name == "payments" and table.num_rows:
        ids = set(table.column("payment_id").to_pylist())
        originals = {o for o in table.column("original_payment_id").to_pylist() if o}
        known = db.existing_keys("payments", sorted(originals - ids))
    trailing = _trailing(lake, name, days, settings)
    return billing_checks(
        name,
        table,
        window=(windows[0][1], windows[-1][2]),
        invoice_lines=invoice_lines,
        known_payment_ids=known,
        trailing_counts=trailing,
        settings=settings,
    )


def build_billing_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition,
    checks: ChecksSettings | None = None,
) -> list[dg.AssetsDefinition]:
    timezone = partitions_def.timezone
    checks = checks or ChecksSettings()

    def make(name: str) -> dg.AssetsDefinition:
        key = ["billing", name]
        groups = (INTEGRITY, WARNINGS) if name == USAGE_DAILY else GROUPS
        deps = [dg.AssetKey(["billing", "invoice_lines"])] if name == "invoices" else []

        @dg.asset(
            key=key,
            group_name="billing",
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
            kinds={"sql", "parquet"},
            description=_DESCRIPTIONS[name],
            check_specs=check_specs(key, groups),
            deps=deps,
        )
        def _asset(
            context: dg.AssetExecutionContext,
            billing_db: BillingDatabaseResource,
            lake: LakeResource,
        ) -> dg.MaterializeResult:  # type: ignore[type-arg]
            days = [date.fromisoformat(k) for k in context.partition_keys]
            db = billing_db.open()
            the_lake = lake.open()
            results: list[CheckResult] = []
            try:
                db.check([name] if name != USAGE_DAILY else ["usage_events"])
                outcome = extract_dataset(
                    db, the_lake, name, days, timezone, progress=context.log.info
                )
                results = billing_check_results(name, db, the_lake, days, timezone, checks)
                record_results(the_lake, key, days, results)
            finally:
                db.dispose()
            if outcome.quarantine.num_rows:
                context.log.warning(
                    f"{outcome.quarantine.num_rows} value(s) of billing/{name} were quarantined "
                    f"({len(set(outcome.quarantine.column('primary_key').to_pylist()))} row(s)); "
                    "see the quarantine_sample metadata and the _quarantine zone of the lake"
                )
            for r in results:
                if not r.passed:
                    context.log.warning(f"check {r.name} failed: {r.failing} of {r.checked}")
            return dg.MaterializeResult(
                metadata=outcome_metadata(outcome),
                check_results=check_results(key, results, groups),
            )

        return _asset

    with warnings.catch_warnings():
        # Single-run backfills are what let one query cover a whole range of days.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [make(name) for name in DATASETS]
