"""The reconciliation asset ["recon", "exceptions"]: billing against settlements for the
business days of the run, exceptions persisted with their life cycle, reports written.

No `from __future__ import annotations` here: Dagster reads the parameter annotations.
"""

import warnings
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from tieout.checks.asset_checks import INTEGRITY, WARNINGS, check_results, check_specs
from tieout.money import format_minor
from tieout.reconcile.model import Summary
from tieout.reconciliation import engine_config, run_reconciliation
from tieout.resources import LakeResource, ReportsResource, StateDatabaseResource
from tieout.settings import Settings

RECON_GROUP = "reconciliation"
RECON_KEY = ["recon", "exceptions"]
RECON_CHECKS = (INTEGRITY, WARNINGS)


class ReconcileConfig(dg.Config):
    """What finance ops choose in the launchpad; the date range is the partition range."""

    gateways: list[str] = Field(
        default_factory=list, description="Only these gateways (empty: all of them)."
    )
    dry_run: bool = Field(
        default=False,
        description="Reconcile and show the result, but record nothing and write no report.",
    )
    out: str = Field(
        default="", description="Write the reports here instead of [reports] path (optional)."
    )


def summary_markdown(summary: Summary) -> str:
    """The state of the books at a glance, for the Dagster UI."""
    rows = [
        "| gateway | currency | payments | matched | pending | exceptions | match rate "
        "| billed | settled | payouts tied out |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.rows:
        rate = "" if r.match_rate is None else f"{r.match_rate:.1%}"
        rows.append(
            f"| {r.gateway} | {r.currency} | {r.payments} | {r.matched_payments} | "
            f"{r.pending_payments} | {r.exception_payments} | {rate} | "
            f"{format_minor(r.billed_minor, r.currency)} | "
            f"{format_minor(r.settled_minor, r.currency)} | {r.payouts_tied_out}/{r.payouts} |"
        )
    kinds = ", ".join(f"{k}: {n}" for k, n in summary.exceptions_by_kind.items()) or "none"
    rows += ["", f"Exceptions by kind: {kinds}"]
    return "\n".join(rows)


def build_reconciliation_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    timezone = partitions_def.timezone

    @dg.asset(
        key=RECON_KEY,
        group_name=RECON_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetKey(["billing", "payments"]),
            dg.AssetKey(["billing", "invoices"]),
            dg.AssetKey(["billing", "credit_notes"]),
            dg.AssetKey(["settlements", "lines"]),
            dg.AssetKey(["settlements", "payouts"]),
        ],
        kinds={"duckdb", "excel", "html"},
        check_specs=check_specs(RECON_KEY, RECON_CHECKS),
        description="Billing payments tied out against gateway settlements for the business "
        "days of the run: matches, pending payments and exceptions (kept open, resolved or "
        "waived across runs), with the accountants' reports.",
    )
    def recon_exceptions(
        context: dg.AssetExecutionContext,
        config: ReconcileConfig,
        lake: LakeResource,
        state_db: StateDatabaseResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        start = date.fromisoformat(context.partition_keys[0])
        end = date.fromisoformat(context.partition_keys[-1])
        store = None if config.dry_run else state_db.exceptions()
        out = None if config.dry_run else reports.open(config.out or None)
        try:
            outcome = run_reconciliation(
                lake=lake.open(),
                store=store,
                reports=out,
                start=start,
                end=end,
                timezone=timezone,
                config=engine_config(settings, config.gateways or None),
                run_id=context.run.run_id,
                progress=context.log.info,
                checks_settings=settings.checks,
            )
        finally:
            if store is not None:
                store.dispose()
        results = outcome.checks
        summary = outcome.result.summary
        for dataset, days in outcome.missing.items():
            context.log.warning(f"{dataset} has no partition for {len(days)} day(s) of the range")
        meta: dict[str, Any] = {
            "dagster/row_count": len(outcome.exceptions),
            "summary": dg.MetadataValue.md(summary_markdown(summary)),
            "exceptions_by_kind": dg.MetadataValue.json(summary.exceptions_by_kind),
            "exceptions_by_age": dg.MetadataValue.json(summary.exceptions_by_age),
            "open_exceptions": sum(1 for x in outcome.exceptions if x.status == "open"),
            "payments_in_scope": summary.totals.get("payments", 0),
            "settlement_lines_in_scope": summary.totals.get("lines", 0),
            "conservation_ok": summary.conservation_ok,
            "dry_run": config.dry_run,
        }
        for name, uri in sorted(outcome.reports.items()):
            meta[f"report/{name}"] = dg.MetadataValue.path(uri)
        if outcome.missing:
            meta["missing_partitions"] = dg.MetadataValue.json(
                {k: [d.isoformat() for d in v] for k, v in outcome.missing.items()}
            )
        return dg.MaterializeResult(
            metadata=meta, check_results=check_results(RECON_KEY, results, RECON_CHECKS)
        )

    return [recon_exceptions]


def reconciliation_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_reconciliation_assets(partitions_def, settings)
