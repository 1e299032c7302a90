"""Helpers the CSV, Excel and HTML reports share, so the three always agree on order and money."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Final

from tieout.money import exponent, format_minor, is_known_currency, minor_to_decimal
from tieout.reconcile.model import EXCEPTION_KINDS, ReconException

#: Sheet name of the Excel summary; never used for an exception kind.
SUMMARY_SHEET: Final = "Summary"
#: Excel's limit on sheet names, and the characters it refuses in them.
_SHEET_NAME_MAX: Final = 31
_SHEET_NAME_BAD: Final = frozenset("[]:*?/\\")


def sort_key(e: ReconException) -> tuple[str, str, str]:
    """(kind, gateway, exception_id): one deterministic order for every report."""
    return (e.kind, e.gateway or "", e.exception_id)


def sort_exceptions(exceptions: Iterable[ReconException]) -> list[ReconException]:
    return sorted(exceptions, key=sort_key)


def ordered_kinds(kinds: Iterable[str]) -> list[str]:
    """Known kinds in the model's order (the order accountants learn), unknown ones after."""
    present = set(kinds)
    known = [k for k in EXCEPTION_KINDS if k in present]
    return known + sorted(present.difference(EXCEPTION_KINDS))


def known_currency(currency: str | None) -> str | None:
    """The ISO code if `currency` has a defined exponent, else None (amount shown raw)."""
    if currency is None or not is_known_currency(currency):
        return None
    return currency.strip().upper()


def money_decimal(amount_minor: int, currency: str | None) -> Decimal | None:
    """Exact major-unit amount, or None when the currency's decimals are unknown."""
    code = known_currency(currency)
    return None if code is None else minor_to_decimal(amount_minor, code)


def money_text(amount_minor: int, currency: str | None) -> str:
    """format_minor when possible; otherwise say plainly that the number is in minor units."""
    code = known_currency(currency)
    if code is None:
        return f"{amount_minor} minor units {currency or '(no currency)'}"
    return format_minor(amount_minor, code)


def excel_money_format(currency: str | None) -> str:
    """'#,##0' / '#,##0.00' / '#,##0.000': the currency's decimals, never a guess of two."""
    code = known_currency(currency)
    if code is None:
        return "0"  # raw minor units: no decimals to invent
    exp = exponent(code)
    return "#,##0" if exp == 0 else "#,##0." + "0" * exp


def sheet_names(kinds: Sequence[str]) -> dict[str, str]:
    """Kind -> a valid, unique (case-insensitively, and never 'Summary') Excel sheet name."""
    taken = {SUMMARY_SHEET.lower()}
    out: dict[str, str] = {}
    for kind in kinds:
        base = "".join("_" if ch in _SHEET_NAME_BAD else ch for ch in kind).strip("'") or "sheet"
        name = base[:_SHEET_NAME_MAX]
        n = 2
        while name.lower() in taken:
            suffix = f"~{n}"
            name = base[: _SHEET_NAME_MAX - len(suffix)] + suffix
            n += 1
        taken.add(name.lower())
        out[kind] = name
    return out
