"""What every data check returns, whether Great Expectations or native arithmetic ran it.

The Dagster asset checks turn these into `AssetCheckResult`s; the reports list them; tests
assert on them. A check never raises for bad data: it says what failed, how much, and shows a
sample of the failing keys (masked where a key is personal), so an accountant can act on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Severity = Literal["error", "warn"]

#: Failing keys shown per check: enough to act on, small enough for metadata.
SAMPLE_SIZE: Final = 20


@dataclass(frozen=True)
class CheckResult:
    name: str  # a module constant, e.g. "payments_primary_key"
    dataset: str  # e.g. "billing/payments"
    passed: bool
    severity: Severity  # what a failure means: "error" blocks posting, "warn" only tells
    description: str  # what is checked and why, in an accountant's words
    failing: int = 0  # how many rows (or groups) fail
    checked: int = 0  # how many were looked at
    sample: tuple[str, ...] = ()  # failing keys, at most SAMPLE_SIZE
    details: Mapping[str, Any] = field(default_factory=dict)  # thresholds, expectation, ...

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata and the reports."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "failing": self.failing,
            "checked": self.checked,
        }
        if self.sample:
            out["sample"] = list(self.sample)
        out.update(self.details)
        return out


def sample(keys: Iterable[object], limit: int = SAMPLE_SIZE) -> tuple[str, ...]:
    out: list[str] = []
    for k in keys:
        if len(out) >= limit:
            break
        out.append(str(k))
    return tuple(out)


def mask(value: str | None) -> str:
    """A personal value (an email, a name) shown only enough to find it again."""
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return value[:2] + "***"
