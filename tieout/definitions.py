"""The one place that assembles `dagster.Definitions` from dagster_project.toml."""

from __future__ import annotations

import dagster as dg

from tieout.assets.billing import build_billing_assets
from tieout.assets.erp import erp_assets
from tieout.assets.reconciliation import reconciliation_assets
from tieout.assets.revenue import revenue_assets
from tieout.assets.settlements import settlement_assets
from tieout.pipelines.jobs import (
    billing_extract_job,
    erp_posting_job,
    nightly_close_job,
    nightly_close_schedule,
    nightly_extract_schedule,
    revenue_load_job,
    revenue_schedule_job,
    settlements_load_job,
)
from tieout.pipelines.partitions import daily_partitions
from tieout.resources import build_resources
from tieout.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings)
    job = billing_extract_job()
    settlements_job = settlements_load_job()
    close = nightly_close_job()
    rc = settings.reconciliation
    return dg.Definitions(
        assets=[
            *build_billing_assets(partitions, settings.checks),
            *settlement_assets(partitions),
            *reconciliation_assets(partitions, settings),
            *erp_assets(partitions, settings),
            *revenue_assets(partitions, settings),
        ],
        jobs=[
            job,
            settlements_job,
            close,
            erp_posting_job(),
            revenue_schedule_job(),
            revenue_load_job(),
        ],
        schedules=[
            nightly_extract_schedule(job),
            nightly_extract_schedule(settlements_job),
            nightly_close_schedule(close, rc.nightly_close_cron, rc.finance_timezone),
        ],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
