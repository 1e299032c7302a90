"""Business-day partitions in the finance time zone."""

from __future__ import annotations

import dagster as dg

from tieout.settings import Settings


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(
        start_date=settings.billing.partitions_start.isoformat(),
        timezone=settings.reconciliation.finance_timezone,
    )
