"""The one place that assembles `dagster.Definitions` from dagster_project.toml."""

from __future__ import annotations

import dagster as dg

from tieout.assets.billing import build_billing_assets
from tieout.pipelines.jobs import billing_extract_job, nightly_extract_schedule
from tieout.pipelines.partitions import daily_partitions
from tieout.resources import build_resources
from tieout.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = daily_partitions(settings)
    job = billing_extract_job()
    return dg.Definitions(
        assets=build_billing_assets(partitions),
        jobs=[job],
        schedules=[nightly_extract_schedule(job)],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
