"""Gateway settlement reports -> canonical settlement lines (one module per gateway).

`parse_file` picks the gateway's parser; each parser detects its own format variants from the
content (never from the file name), so a report renamed on its way to us still parses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Final, cast

from tieout.connectors.settlements.base import (
    GATEWAYS,
    ControlTotal,
    Finding,
    ParsedFile,
    SettlementFileError,
    SettlementLine,
)

__all__ = [
    "GATEWAYS",
    "ControlTotal",
    "Finding",
    "ParsedFile",
    "SettlementFileError",
    "SettlementLine",
    "check_controls",
    "parse_file",
]

_MODULES: Final = {g: f"tieout.connectors.settlements.{g}" for g in GATEWAYS}

Parser = Callable[[bytes, str], ParsedFile]
ControlCheck = Callable[[Sequence[ControlTotal], Sequence[SettlementLine]], list[Finding]]


def parse_file(gateway: str, data: bytes, file: str) -> ParsedFile:
    """Every line of the file, or `SettlementFileError` naming the file, line and fix."""
    if gateway not in _MODULES:
        raise SettlementFileError(
            f"unknown gateway {gateway!r}",
            file=file,
            fix=f"settlement files go under one of {', '.join(GATEWAYS)}",
        )
    parse = cast(Parser, importlib.import_module(_MODULES[gateway]).parse)
    return parse(data, file)


def check_controls(
    gateway: str, controls: Sequence[ControlTotal], lines: Sequence[SettlementLine]
) -> list[Finding]:
    """Stated totals (e.g. Braintree batch summaries) against the itemized lines."""
    if not controls:
        return []
    check = getattr(importlib.import_module(_MODULES[gateway]), "check_controls", None)
    return [] if check is None else cast(ControlCheck, check)(controls, lines)
