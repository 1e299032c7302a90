"""Revenue assets: ["revenue", "schedule"] (monthly partitions: the ASC 606 schedule rows of the
invoices and credit notes issued in the month, in the lake) and ["revenue", "salesforce"]
(business days: billing status and schedules upserted into Salesforce, `dry_run` to plan).

The schedule's blocking integrity check recomputes both identities from billing (every line's
rows sum to the line; deferred = billed - recognized at every month end) and stops the load
when either fails. The load asset's own blocking check fails on fields Salesforce does not
have (describe), before anything is written.

No `from __future__ import annotations` here: Dagster reads the parameter annotations.
"""

import warnings
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from tieout.checks.asset_checks import INTEGRITY, WARNINGS, check_results, check_specs
from tieout.checks.result import CheckResult, sample
from tieout.resources import LakeResource, StateDatabaseResource
from tieout.settings import Settings

REVENUE_GROUP = "revenue"
SCHEDULE_KEY = ["revenue", "schedule"]
SALESFORCE_KEY = ["revenue", "salesforce"]
CHECK_GROUPS = (INTEGRITY, WARNINGS)


def monthly_partitions(settings: Settings) -> dg.MonthlyPartitionsDefinition:
    return dg.MonthlyPartitionsDefinition(
        start_date=settings.billing.partitions_start.replace(day=1).isoformat(),
        timezone=settings.reconciliation.finance_timezone,
        end_offset=1,  # the current month, as it is billed
    )


def waterfall_markdown(points: list[Any]) -> str:
    from tieout.money import format_minor

    rows = ["| currency | month | recognized |", "|---|---|---:|"]
    rows += [
        f"| {p.currency} | {p.month.isoformat()[:7]} | {format_minor(p.amount_minor, p.currency)} |"
        for p in points
    ]
    return "\n".join(rows)


def _schedule_asset(settings: Settings) -> Any:
    @dg.asset(
        key=SCHEDULE_KEY,
        group_name=REVENUE_GROUP,
        partitions_def=monthly_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetKey(["billing", "invoices"]),
            dg.AssetKey(["billing", "invoice_lines"]),
            dg.AssetKey(["billing", "credit_notes"]),
        ],
        kinds={"duckdb"},
        check_specs=check_specs(SCHEDULE_KEY, CHECK_GROUPS),
        description="ASC 606 revenue schedule: one row per invoice line per accounting "
        "month (largest-remainder allocation), for invoices and credit notes issued in the "
        "month. Blocking checks: rows sum to their lines; deferred = billed - recognized.",
    )
    def revenue_schedule(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from tieout.revenue.loading import read_billing
        from tieout.revenue.records import month_end
        from tieout.revenue.schedules import (
            build_schedules,
            check_deferred,
            check_line_sums,
            to_arrow,
            waterfall,
        )

        months = [date.fromisoformat(k) for k in context.partition_keys]
        tz = settings.reconciliation.finance_timezone
        store = lake.open()
        billing = read_billing(settings, store, month_end(months[-1]))
        result = build_schedules(
            billing.invoices, billing.invoice_lines, billing.credit_notes, finance_timezone=tz
        )
        args = (billing.invoices, billing.invoice_lines, billing.credit_notes)
        sums = check_line_sums(result.rows, *args, finance_timezone=tz)
        deferred = check_deferred(result.rows, *args, finance_timezone=tz)
        mine = [r for r in result.rows if months[0] <= r.billing_month <= months[-1]]
        for month in months:
            part = [r for r in mine if r.billing_month == month]
            store.write(SCHEDULE_KEY, month.isoformat(), to_arrow(part))
        for note in result.skipped + result.warnings:
            context.log.warning(note)
        checks = [
            CheckResult(
                name="schedule_rows_sum_to_lines",
                dataset="revenue/schedule",
                passed=not sums,
                severity="error",
                description="Every billed invoice line's schedule rows add up exactly to the "
                "line (discounts to the discount), credit notes to minus their share.",
                failing=len(sums),
                checked=len(billing.invoice_lines) + len(billing.credit_notes),
                sample=sample(sums),
            ),
            CheckResult(
                name="deferred_equals_billed_minus_recognized",
                dataset="revenue/schedule",
                passed=not deferred,
                severity="error",
                description="At every month end and in every currency, deferred revenue "
                "equals revenue billed to date minus revenue recognized to date.",
                failing=len(deferred),
                checked=len({(r.currency, r.month) for r in result.rows}),
                sample=sample(deferred),
            ),
            CheckResult(
                name="schedule_sources_skipped",
                dataset="revenue/schedule",
                passed=not result.skipped and not result.warnings,
                severity="warn",
                description="Credit notes on void or unknown invoices produce nothing; notes "
                "above their invoice's total are allocated but worth a look.",
                failing=len(result.skipped) + len(result.warnings),
                checked=len(billing.credit_notes),
                sample=sample(result.skipped + result.warnings),
            ),
        ]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(mine),
                "months": [m.isoformat()[:7] for m in months],
                "waterfall": dg.MetadataValue.md(waterfall_markdown(waterfall(mine))),
            },
            check_results=check_results(SCHEDULE_KEY, checks, CHECK_GROUPS),
        )

    return revenue_schedule


class RevenueLoadConfig(dg.Config):
    """What finance ops choose in the launchpad; the date range is the partition range."""

    dry_run: bool = Field(
        default=False,
        description="Plan only: show what would be created, updated or retried in Salesforce "
        "in the metadata, write nothing.",
    )


def _salesforce_asset(settings: Settings, partitions_def: dg.PartitionsDefinition) -> Any:
    @dg.asset(
        key=SALESFORCE_KEY,
        group_name=REVENUE_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetKey(SCHEDULE_KEY),
            dg.AssetKey(["billing", "customers"]),
            dg.AssetKey(["billing", "payments"]),
        ],
        kinds={"salesforce"},
        check_specs=check_specs(SALESFORCE_KEY, CHECK_GROUPS),
        description="Billing status (Accounts), invoices, payments and revenue schedule rows "
        "of the business days of the run, upserted into Salesforce by external id exactly "
        "once in effect (dry_run: plan only).",
    )
    def revenue_salesforce(
        context: dg.AssetExecutionContext,
        config: RevenueLoadConfig,
        lake: LakeResource,
        state_db: StateDatabaseResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from tieout.connectors.salesforce import make_client
        from tieout.revenue.loading import (
            apply_revenue,
            describe_all,
            make_target,
            plan_markdown,
            plan_revenue,
        )

        start = date.fromisoformat(context.partition_keys[0])
        end = date.fromisoformat(context.partition_keys[-1])
        sf = settings.revenue.salesforce
        if sf is None:
            context.log.warning(
                "no [revenue.salesforce] in dagster_project.toml: nothing is loaded "
                "(docs/revenue.md)"
            )
            return dg.MaterializeResult(
                metadata={"configured": False, "dagster/row_count": 0},
                check_results=check_results(SALESFORCE_KEY, [], CHECK_GROUPS),
            )
        ledger = state_db.ledger()
        try:
            client = make_client(sf, Path(settings.base_dir))
            shapes = describe_all(sf, client)
            plan = plan_revenue(settings, lake.open(), ledger, start, end, shapes)
            fields_ok = CheckResult(
                name="salesforce_plan_valid",
                dataset="revenue/salesforce",
                passed=not plan.problems,
                severity="error",
                description="Every mapped object and field exists in Salesforce (describe) "
                "and can be written, and the schedules being loaded pass both identities; "
                "nothing is loaded until they do.",
                failing=len(plan.problems),
                checked=len(sf.send),
                sample=sample(plan.problems),
            )
            meta: dict[str, Any] = {
                "plan": dg.MetadataValue.md(plan_markdown(plan)),
                "counts": dg.MetadataValue.json(plan.counts()),
                "dry_run": config.dry_run,
            }
            refused: dict[str, str] = {}
            if not config.dry_run and not plan.problems:
                target = make_target(settings, plan, client_factory=None)
                result = apply_revenue(settings, plan, ledger, target, progress=context.log.info)
                refused = {**result.failed, **result.unresolved}
                meta.update(
                    {
                        "confirmed": len(result.confirmed),
                        "already_loaded": len(result.skipped),
                        "refused": dg.MetadataValue.json(result.failed),
                        "unresolved": dg.MetadataValue.json(result.unresolved),
                        "bulk_jobs": target.bulk_jobs,
                        "requests": result.requests,
                    }
                )
            meta["dagster/row_count"] = len(plan.entries)
        finally:
            ledger.dispose()
        accepted = CheckResult(
            name="salesforce_records_accepted",
            dataset="revenue/salesforce",
            passed=not refused,
            severity="warn",
            description="Records Salesforce refused (duplicate external ids, validation "
            "rules) or that could not be confirmed; the next run retries them.",
            failing=len(refused),
            checked=len(plan.entries),
            sample=sample(f"{k}: {v}" for k, v in sorted(refused.items())),
        )
        return dg.MaterializeResult(
            metadata=meta,
            check_results=check_results(SALESFORCE_KEY, [fields_ok, accepted], CHECK_GROUPS),
        )

    return revenue_salesforce


def revenue_assets(
    daily: dg.TimeWindowPartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [_schedule_asset(settings), _salesforce_asset(settings, daily)]
