"""The ERP posting asset ["erp", "netsuite"]: journal entries for the business days of the run,
planned against the posting ledger and, unless `dry_run`, posted to NetSuite exactly once.

It depends on the reconciliation and the billing and settlement assets, so their blocking
checks stop it; its own blocking check fails (and nothing is posted) when an entry does not
balance. Launch it with `dry_run: true` from the launchpad to review the plan in the
materialization's metadata, then again without it to post that plan.

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

ERP_GROUP = "erp"
ERP_KEY = ["erp", "netsuite"]
ERP_CHECKS = (INTEGRITY, WARNINGS)
JOURNALS_BALANCED = "journals_balanced"


class PostingConfig(dg.Config):
    """What finance ops choose in the launchpad; the date range is the partition range."""

    dry_run: bool = Field(
        default=False,
        description="Plan only: show what would be created, updated, adjusted or held back "
        "in the metadata, send nothing.",
    )


def plan_markdown(plan: Any) -> str:
    from tieout.money import format_minor

    c = plan.counts()
    rows = [
        f"**{c['create']}** to create, **{c['update']}** to update, **{c['adjust']}** "
        f"adjusting, **{c['retry']}** to retry, {c['unchanged']} unchanged; "
        f"{c['held_lines']} line(s) and {c['held_batches']} batch(es) held back",
        "",
        "| currency | account | debit | credit | lines |",
        "|---|---|---:|---:|---:|",
    ]
    for t in plan.totals():
        rows.append(
            f"| {t['currency']} | {t['account']} | "
            f"{format_minor(t['debit_minor'], t['currency'])} | "
            f"{format_minor(t['credit_minor'], t['currency'])} | {t['lines']} |"
        )
    return "\n".join(rows)


def _build(partitions_def: dg.TimeWindowPartitionsDefinition, settings: Settings) -> Any:
    @dg.asset(
        key=ERP_KEY,
        group_name=ERP_GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            dg.AssetKey(["recon", "exceptions"]),
            dg.AssetKey(["billing", "invoices"]),
            dg.AssetKey(["billing", "invoice_lines"]),
            dg.AssetKey(["billing", "credit_notes"]),
            dg.AssetKey(["settlements", "lines"]),
        ],
        kinds={"netsuite"},
        check_specs=check_specs(ERP_KEY, ERP_CHECKS),
        description="Billing and settlement journal entries for the business days of the "
        "run, posted to NetSuite by external id exactly once (dry_run: plan only).",
    )
    def erp_netsuite(
        context: dg.AssetExecutionContext,
        config: PostingConfig,
        lake: LakeResource,
        state_db: StateDatabaseResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from tieout.connectors.netsuite import NetSuiteTarget
        from tieout.posting import apply_posting, netsuite_settings, plan_posting

        start = date.fromisoformat(context.partition_keys[0])
        end = date.fromisoformat(context.partition_keys[-1])
        if settings.erp.netsuite is None:
            context.log.warning(
                "no [erp.netsuite] in dagster_project.toml: nothing is posted (docs/erp.md)"
            )
            return dg.MaterializeResult(
                metadata={"configured": False, "dagster/row_count": 0},
                check_results=check_results(ERP_KEY, [], ERP_CHECKS),
            )
        store = state_db.exceptions()
        ledger = state_db.ledger()
        try:
            plan = plan_posting(settings, lake.open(), store, ledger, start, end, end)
            check = CheckResult(
                name=JOURNALS_BALANCED,
                dataset="erp/netsuite",
                passed=not plan.problems,
                severity="error",
                description="Every journal entry balances per currency, has one-sided lines "
                "and stays within NetSuite's limits; an entry that fails is not posted.",
                failing=len(plan.problems),
                checked=len(plan.entries) + len(plan.unchanged) + len(plan.problems),
                sample=sample(plan.problems),
            )
            held = [f"line {h['line_id']}" for h in plan.held_lines] + [
                f"batch {b['gateway']}/{b['batch_id']}" for b in plan.held_batches
            ]
            nothing_held = CheckResult(
                name="nothing_held_back",
                dataset="erp/netsuite",
                passed=not held,
                severity="warn",
                description="Settlement lines in open exceptions wait in suspense and batches "
                "whose payout is in question are not posted until the exceptions are resolved.",
                failing=len(held),
                checked=len(held),
                sample=sample(held),
            )
            meta: dict[str, Any] = {
                "plan": dg.MetadataValue.md(plan_markdown(plan)),
                "counts": dg.MetadataValue.json(plan.counts()),
                "held_back": dg.MetadataValue.json(
                    {"lines": plan.held_lines, "batches": plan.held_batches}
                ),
                "dry_run": config.dry_run,
            }
            if not config.dry_run and not plan.problems:
                target = NetSuiteTarget(
                    netsuite_settings(settings), base_dir=Path(settings.base_dir)
                )
                result = apply_posting(settings, plan, ledger, target, progress=context.log.info)
                meta.update(
                    {
                        "confirmed": len(result.confirmed),
                        "already_posted": len(result.skipped),
                        "refused": dg.MetadataValue.json(result.failed),
                        "unresolved": dg.MetadataValue.json(result.unresolved),
                    }
                )
                if result.failed or result.unresolved:
                    context.log.warning(
                        f"{len(result.failed)} record(s) refused and {len(result.unresolved)} "
                        "unresolved; they are retried by the next run"
                    )
            meta["dagster/row_count"] = len(plan.entries)
        finally:
            store.dispose()
            ledger.dispose()
        return dg.MaterializeResult(
            metadata=meta, check_results=check_results(ERP_KEY, [check, nothing_held], ERP_CHECKS)
        )

    return erp_netsuite


def erp_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition, settings: Settings
) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [_build(partitions_def, settings)]
