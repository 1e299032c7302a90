"""The extraction job and its nightly schedule."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Final

import dagster as dg

BILLING_EXTRACT_JOB: Final = "billing_extract"
SETTLEMENTS_LOAD_JOB: Final = "settlements_load"
NIGHTLY_CLOSE_JOB: Final = "nightly_close"


def billing_extract_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        BILLING_EXTRACT_JOB,
        selection=dg.AssetSelection.groups("billing"),
        description="Extract the billing tables changed on a business day into the lake.",
    )


def nightly_extract_schedule(
    job: dg.UnresolvedAssetJobDefinition,
) -> Any:
    """After midnight in the finance time zone, extract the day that just closed.

    Typed `Any`: Dagster returns a private unresolved-schedule type for asset jobs.
    """
    return dg.build_schedule_from_partitioned_job(job, hour_of_day=1, minute_of_hour=30)


def settlements_load_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        SETTLEMENTS_LOAD_JOB,
        selection=dg.AssetSelection.groups("settlements"),
        description="Read new gateway settlement files, then rebuild the business day's "
        "settlement lines and payout tie-outs.",
    )


def nightly_close_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        NIGHTLY_CLOSE_JOB,
        selection=dg.AssetSelection.groups("billing", "settlements", "reconciliation"),
        description="The whole chain for business days: extract billing, load settlements, "
        "reconcile, write the reports.",
    )


def erp_posting_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "erp_posting",
        selection=dg.AssetSelection.groups("erp"),
        description="Post the business days' journal entries to NetSuite (dry_run: plan only); "
        "run it after nightly_close has reconciled the days.",
    )


def revenue_schedule_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "revenue_schedule",
        selection=dg.AssetSelection.assets(dg.AssetKey(["revenue", "schedule"])),
        description="Build the months' revenue schedules (monthly partitions) and check them.",
    )


def revenue_load_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "revenue_load",
        selection=dg.AssetSelection.assets(dg.AssetKey(["revenue", "salesforce"])),
        description="Load the business days' billing status and revenue schedules into "
        "Salesforce (dry_run: plan only); run it after the billing extraction.",
    )


def nightly_close_schedule(
    job: dg.UnresolvedAssetJobDefinition, cron: str, timezone: str
) -> dg.ScheduleDefinition:
    """On `cron` in the finance time zone, close the business day before the tick."""

    @dg.schedule(
        name=f"{NIGHTLY_CLOSE_JOB}_schedule",
        cron_schedule=cron,
        job=job,
        execution_timezone=timezone,
        description="Closes the previous business day (cron from dagster_project.toml).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time
        day = (tick.date() if tick is not None else date.today()) - timedelta(days=1)
        return dg.RunRequest(run_key=f"close-{day.isoformat()}", partition_key=day.isoformat())

    return _schedule
