"""The extraction job and its nightly schedule."""

from __future__ import annotations

from typing import Final

import dagster as dg

BILLING_EXTRACT_JOB: Final = "billing_extract"


def billing_extract_job(partitions_def: dg.PartitionsDefinition[str]) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        BILLING_EXTRACT_JOB,
        selection=dg.AssetSelection.groups("billing"),
        partitions_def=partitions_def,
        description="Extract the billing tables changed on a business day into the lake.",
    )


def nightly_extract_schedule(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """After midnight in the finance time zone, extract the day that just closed."""
    return dg.build_schedule_from_partitioned_job(job, hour_of_day=1, minute_of_hour=30)
