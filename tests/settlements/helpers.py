"""Assertions the per-gateway settlement tests share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from tieout.connectors.settlements.base import SettlementLine

#: Fields a parser derives itself (ids, lineage) and a round trip therefore cannot preserve.
DERIVED = ("line_id", "source_file", "source_row")


def comparable(line: SettlementLine) -> dict[str, object]:
    return {k: v for k, v in asdict(line).items() if k not in DERIVED}


def assert_same_lines(got: Sequence[SettlementLine], want: Sequence[SettlementLine]) -> None:
    """One-to-one and in order, equal in every field except the derived ones."""
    assert len(got) == len(want), f"{len(got)} lines, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert comparable(g) == comparable(w), f"line {i}: {comparable(g)} != {comparable(w)}"
