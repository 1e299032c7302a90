"""Daily settlement assets: canonical lines ["settlements", "lines"] and batch totals
["settlements", "payouts"].

No `from __future__ import annotations` here: Dagster reads the parameter annotations.
"""

import warnings
from collections.abc import Sequence
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa

from tieout.assets.billing import column_schema
from tieout.checks.asset_checks import (
    INTEGRITY,
    WARNINGS,
    check_results,
    check_specs,
    record_results,
)
from tieout.checks.settlements import payouts_consistent, settlement_checks
from tieout.connectors.lake import Lake
from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA
from tieout.money import format_minor
from tieout.resources import LakeResource, SettlementSourceResource, StateDatabaseResource
from tieout.settlements import (
    PAYOUT_SCHEMA,
    PAYOUTS,
    SETTLEMENT_LINES,
    LinesOutcome,
    ScanOutcome,
    StagedCache,
    build_lines_partition,
    build_payouts_partition,
    scan_settlements,
)

SAMPLE = 20
LINES_KEY = ["settlements", "lines"]
PAYOUTS_KEY = ["settlements", "payouts"]
LINES_CHECKS = (INTEGRITY, WARNINGS)
PAYOUTS_CHECKS = (INTEGRITY, WARNINGS)


def _days(keys: Sequence[str]) -> list[date]:
    return [date.fromisoformat(k) for k in keys]


def _read_days(
    lake: Lake, dataset: tuple[str, str], keys: Sequence[str], schema: pa.Schema
) -> pa.Table:
    parts = [lake.read(dataset, k) for k in keys if lake.exists(dataset, k)]
    return pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()


def _totals_md(outcomes: list[LinesOutcome]) -> str:
    acc: dict[tuple[str, str], list[int]] = {}
    for o in outcomes:
        for gateway, by_cur in o.totals.items():
            for cur, t in by_cur.items():
                a = acc.setdefault((gateway, cur), [0, 0, 0])
                a[0] += t["gross_minor"]
                a[1] += t["fee_minor"]
                a[2] += t["net_minor"]
    rows = ["| gateway | currency | gross | fee | net |", "|---|---|---:|---:|---:|"]
    for (gateway, cur), (g, f, n) in sorted(acc.items()):
        rows.append(
            f"| {gateway} | {cur} | {format_minor(g, cur)} | {format_minor(f, cur)} "
            f"| {format_minor(n, cur)} |"
        )
    return "\n".join(rows)


def _scan_md(scan: ScanOutcome) -> str:
    rows = ["| file | status | lines | reason |", "|---|---|---:|---|"]
    shown = [f for f in scan.files if f.status != "known"][:SAMPLE]
    rows += [f"| {f.path} | {f.status} | {f.lines} | {f.reason or ''} |" for f in shown]
    return "\n".join(rows)


def _findings_md(findings: list[dict[str, Any]]) -> str:
    rows = ["| gateway | kind | batch | message |", "|---|---|---|---|"]
    rows += [
        f"| {f['gateway']} | {f['kind']} | {f['batch_id']} | {f['message']} |"
        for f in findings[:SAMPLE]
    ]
    return "\n".join(rows)


def build_settlement_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> list[dg.AssetsDefinition]:
    timezone = partitions_def.timezone

    @dg.asset(
        key=LINES_KEY,
        group_name="settlements",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"csv", "parquet"},
        check_specs=check_specs(LINES_KEY, LINES_CHECKS),
        description="Canonical gateway settlement lines whose movement happened on the "
        "business day, from every settlement file delivered so far (each file counted once; "
        "unreadable files quarantined with a reason).",
    )
    def settlement_lines(
        context: dg.AssetExecutionContext,
        settlement_source: SettlementSourceResource,
        state_db: StateDatabaseResource,
        lake: LakeResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        source, quarantine = settlement_source.open()
        state = state_db.open()
        the_lake = lake.open()
        try:
            scan = scan_settlements(
                source, quarantine, state, the_lake, timezone, progress=context.log.info
            )
            cache: StagedCache = {}
            outcomes = [
                build_lines_partition(state, the_lake, date.fromisoformat(k), timezone, cache)
                for k in context.partition_keys
            ]
        finally:
            state.dispose()
        if scan.missing_source:
            context.log.warning(
                f"the settlement folder {source.root} does not exist: check settlements.path "
                "in dagster_project.toml; the partitions were built from files read earlier"
            )
        if scan.count("quarantined"):
            context.log.warning(
                f"{scan.count('quarantined')} settlement file(s) quarantined to "
                f"{quarantine.root}; each has a .error.json sidecar saying what is wrong"
            )
        rows = sum(o.rows for o in outcomes)
        findings = [f for o in outcomes for f in o.findings]
        count_key = "dagster/row_count" if len(outcomes) == 1 else "rows_in_run"
        meta: dict[str, Any] = {
            count_key: rows,
            "dagster/column_schema": column_schema(SETTLEMENT_LINE_SCHEMA),
            "rows_by_day": dg.MetadataValue.json({o.day.isoformat(): o.rows for o in outcomes}),
            "duplicate_lines_dropped": sum(o.duplicates_dropped for o in outcomes),
            "files_scanned": dg.MetadataValue.md(_scan_md(scan)),
            "files_loaded": scan.count("loaded"),
            "files_quarantined": scan.count("quarantined"),
            "files_duplicate": scan.count("duplicate"),
            "money_totals": dg.MetadataValue.md(_totals_md(outcomes)),
            "findings": len(findings),
        }
        if findings:
            meta["findings_sample"] = dg.MetadataValue.md(_findings_md(findings))
        written = _read_days(
            the_lake, SETTLEMENT_LINES, context.partition_keys, SETTLEMENT_LINE_SCHEMA
        )
        results = settlement_checks(written, quarantined_files=scan.count("quarantined"))
        record_results(the_lake, LINES_KEY, _days(context.partition_keys), results)
        return dg.MaterializeResult(
            metadata=meta, check_results=check_results(LINES_KEY, results, LINES_CHECKS)
        )

    @dg.asset(
        key=PAYOUTS_KEY,
        group_name="settlements",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[settlement_lines],
        kinds={"parquet"},
        check_specs=check_specs(PAYOUTS_KEY, PAYOUTS_CHECKS),
        description="Per payout/batch whose payout falls on the business day: its lines' "
        "totals, the payout, and whether they tie out (net to zero).",
    )
    def payouts(
        context: dg.AssetExecutionContext,
        state_db: StateDatabaseResource,
        lake: LakeResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        state = state_db.open()
        the_lake = lake.open()
        try:
            cache: StagedCache = {}
            outcomes = [
                build_payouts_partition(state, the_lake, date.fromisoformat(k), timezone, cache)
                for k in context.partition_keys
            ]
        finally:
            state.dispose()
        not_tied = [b for o in outcomes for b in o.not_tied]
        for b in not_tied[:SAMPLE]:
            context.log.warning(
                f"{b['gateway']} batch {b['batch_id']} ({b['currency']}) does not tie out: "
                f"difference {format_minor(b['difference_minor'], b['currency'])}"
            )
        count_key = "dagster/row_count" if len(outcomes) == 1 else "rows_in_run"
        meta: dict[str, Any] = {
            count_key: sum(o.batches for o in outcomes),
            "dagster/column_schema": column_schema(PAYOUT_SCHEMA),
            "batches_not_tied_out": len(not_tied),
        }
        if not_tied:
            rows = ["| gateway | batch | currency | difference |", "|---|---|---|---:|"]
            rows += [
                f"| {b['gateway']} | {b['batch_id']} | {b['currency']} | "
                f"{format_minor(b['difference_minor'], b['currency'])} |"
                for b in not_tied[:SAMPLE]
            ]
            meta["not_tied_out"] = dg.MetadataValue.md("\n".join(rows))
        written = _read_days(the_lake, PAYOUTS, context.partition_keys, PAYOUT_SCHEMA)
        results = [
            r
            for r in settlement_checks(SETTLEMENT_LINE_SCHEMA.empty_table(), written)
            if r.dataset == "settlements/payouts"
        ]
        results.append(payouts_consistent(written))
        record_results(the_lake, PAYOUTS_KEY, _days(context.partition_keys), results)
        return dg.MaterializeResult(
            metadata=meta, check_results=check_results(PAYOUTS_KEY, results, PAYOUTS_CHECKS)
        )

    return [settlement_lines, payouts]


def settlement_assets(
    partitions_def: dg.TimeWindowPartitionsDefinition,
) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return build_settlement_assets(partitions_def)
