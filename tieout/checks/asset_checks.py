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
from typing import Any, Final

import dagster as dg

from tieout.checks.result import CheckResult

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
