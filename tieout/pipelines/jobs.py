"""The extraction job and its nightly schedule."""

from __future__ import annotations

from typing import Any, Final

import dagster as dg

BILLING_EXTRACT_JOB: Final = "billing_extract"
SETTLEMENTS_LOAD_JOB: Final = "settlements_load"


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
