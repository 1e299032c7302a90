"""Data checks as Dagster asset checks: each asset declares three, with fixed names.

`<asset>_expectations` (the Great Expectations suite) and `<asset>_integrity` (native
arithmetic: tie-outs, conservation, references) are correctness checks: severity ERROR and
blocking, so a failure stops every downstream asset of the run, the reconciliation and the
posting included. `<asset>_warnings` gathers soft thresholds (volume, match-rate target, stale
exceptions): severity WARN, never blocking. Grouping keeps the names stable while the checks
inside a group evolve; each group's metadata lists every check it ran, with counts and samples.

No `from __future__ import annotations` here: Dagster inspects these objects at definition time.
"""

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, Final

import dagster as dg
import pyarrow as pa

from tieout.checks.result import CheckResult
from tieout.connectors.lake import Lake

EXPECTATIONS: Final = "expectations"
INTEGRITY: Final = "integrity"
WARNINGS: Final = "warnings"
GROUPS: Final = (EXPECTATIONS, INTEGRITY, WARNINGS)

_DESCRIPTIONS: Final = {
    EXPECTATIONS: "Great Expectations suite of the canonical dataset (keys, codes, enums, "
    "money types). Blocks downstream assets when it fails.",
    INTEGRITY: "Native tie-outs and references (sums, conservation, originals, windows). "
    "Blocks downstream assets when it fails.",
    WARNINGS: "Soft thresholds (volume against trailing partitions, match-rate target, stale "
    "exceptions, payout tie-outs accountants work as exceptions). Never blocks.",
}


def group_of(result: CheckResult) -> str:
    if result.severity == "warn":
        return WARNINGS
    return EXPECTATIONS if "expectation" in result.details else INTEGRITY


def check_name(asset_key: Sequence[str], group: str) -> str:
    return f"{asset_key[-1]}_{group}"


def check_specs(
    asset_key: Sequence[str], groups: Iterable[str] = GROUPS
) -> list[dg.AssetCheckSpec]:
    key = dg.AssetKey(list(asset_key))
    return [
        dg.AssetCheckSpec(
            check_name(asset_key, g),
            asset=key,
            blocking=g != WARNINGS,
            description=_DESCRIPTIONS[g],
        )
        for g in groups
    ]


def check_results(
    asset_key: Sequence[str], results: Sequence[CheckResult], groups: Iterable[str] = GROUPS
) -> list[dg.AssetCheckResult]:
    """One result per declared group; a group passes when every check in it passed."""
    out = []
    key = dg.AssetKey(list(asset_key))
    for g in groups:
        mine = [r for r in results if group_of(r) == g]
        failed = [r for r in mine if not r.passed]
        meta: dict[str, Any] = {
            "checks_run": len(mine),
            "checks_failed": len(failed),
            "failed": dg.MetadataValue.json(
                {r.name: {"description": r.description, **r.metadata()} for r in failed}
            ),
        }
        if failed:
            rows = ["| check | dataset | failing | checked | sample |", "|---|---|---:|---:|---|"]
            rows += [
                f"| {r.name} | {r.dataset} | {r.failing} | {r.checked} | "
                f"{', '.join(r.sample[:5])} |"
                for r in failed
            ]
            meta["failed_checks"] = dg.MetadataValue.md("\n".join(rows))
        meta["passed"] = dg.MetadataValue.json(sorted(r.name for r in mine if r.passed))
        out.append(
            dg.AssetCheckResult(
                asset_key=key,
                check_name=check_name(asset_key, g),
                passed=not failed,
                severity=dg.AssetCheckSeverity.WARN
                if g == WARNINGS
                else dg.AssetCheckSeverity.ERROR,
                metadata=meta,
            )
        )
    return out


#: Where each asset leaves its check results, so the reconciliation's report can show them.
CHECKS_ZONE: Final = "_checks"
RESULT_SCHEMA: Final = pa.schema(
    [
        ("dataset", pa.string()),
        ("name", pa.string()),
        ("group", pa.string()),
        ("severity", pa.string()),
        ("passed", pa.bool_()),
        ("failing", pa.int64()),
        ("checked", pa.int64()),
        ("description", pa.string()),
    ]
)


def record_results(
    lake: Lake, asset_key: Sequence[str], days: Sequence[date], results: Sequence[CheckResult]
) -> None:
    """The results of a run, stored under every business day it covered (replacing older)."""
    table = pa.Table.from_pylist(
        [
            {
                "dataset": r.dataset,
                "name": r.name,
                "group": group_of(r),
                "severity": r.severity,
                "passed": r.passed,
                "failing": r.failing,
                "checked": r.checked,
                "description": r.description,
            }
            for r in results
        ],
        schema=RESULT_SCHEMA,
    )
    for day in days:
        lake.write(tuple(asset_key), day.isoformat(), table, zone=CHECKS_ZONE)


def recorded_results(
    lake: Lake, asset_keys: Iterable[Sequence[str]], days: Sequence[date]
) -> list[dict[str, Any]]:
    """Per check over `days`: passed when it passed every day; failing rows added up."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for key in asset_keys:
        for day in days:
            if not lake.exists(tuple(key), day.isoformat(), zone=CHECKS_ZONE):
                continue
            table = lake.read(tuple(key), day.isoformat(), zone=CHECKS_ZONE)
            for row in table.to_pylist():
                k = (row["dataset"], row["name"])
                if k not in acc:
                    acc[k] = {**row, "days": 0, "failing": 0, "checked": 0, "passed": True}
                a = acc[k]
                a["days"] += 1
                a["failing"] += row["failing"]
                a["checked"] += row["checked"]
                a["passed"] = a["passed"] and row["passed"]
    return [acc[k] for k in sorted(acc)]
