"""Money as integer minor units, with each currency's exponent taken from ISO 4217.

Every amount tieout compares is an ``int`` count of the currency's minor unit (cents for USD,
yen for JPY, fils for KWD), because integers add, subtract and compare exactly and two systems
that agree on an amount then agree on its representation. The exponent (how many minor units
make one major unit) comes from the ISO 4217 list, not from a guess of "2 decimals".

Floats are never accepted: a float in a money path is a bug, so it is an error rather than a
silent conversion. Converting text or ``Decimal`` to minor units is exact by default; the only
place a rounding decision can be made is :func:`decimal_to_minor`, and only when the caller
names a ``decimal`` rounding mode explicitly.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from tieout.errors import InputDataError

__all__ = [
    "CURRENCY_EXPONENTS",
    "MoneyParseError",
    "UnknownCurrencyError",
    "decimal_to_minor",
    "exponent",
    "format_minor",
    "is_known_currency",
    "minor_to_decimal",
    "normalize_currency",
    "parse_minor",
]

# ISO 4217 list one (table A.1) as published 2025-05-12 (amendment 179), code -> minor unit
# exponent. Funds codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW, XAD) are included.
#
# Left out on purpose:
# - Codes whose minor unit is "N.A." in the list: the precious metals XAU, XAG, XPD, XPT, the
#   bond-market units XBA, XBB, XBC, XBD, and XDR, XSU, XUA, XTS (testing) and XXX (no
#   currency). Money in minor units needs a defined exponent, so these cannot be amounts here.
# - Withdrawn codes: ANG (replaced by XCG, 2025-03-31), BGN (Bulgaria adopted the euro on
#   2026-01-01), CUC, HRK, SLL (replaced by SLE), ZWL (replaced by ZWG), VEF (replaced by VES),
#   STD (replaced by STN), MRO (replaced by MRU) and older ones.
# Add a code here only when ISO 4217 lists it as current with a numeric minor unit.
_ISO_4217_EXPONENTS: dict[str, int] = {
    "AED": 2,
    "AFN": 2,
    "ALL": 2,
    "AMD": 2,
    "AOA": 2,
    "ARS": 2,
    "AUD": 2,
    "AWG": 2,
    "AZN": 2,
    "BAM": 2,
    "BBD": 2,
    "BDT": 2,
    "BHD": 3,
    "BIF": 0,
    "BMD": 2,
    "BND": 2,
    "BOB": 2,
    "BOV": 2,
    "BRL": 2,
    "BSD": 2,
    "BTN": 2,
    "BWP": 2,
    "BYN": 2,
    "BZD": 2,
    "CAD": 2,
    "CDF": 2,
    "CHE": 2,
    "CHF": 2,
    "CHW": 2,
    "CLF": 4,
    "CLP": 0,
    "CNY": 2,
    "COP": 2,
    "COU": 2,
    "CRC": 2,
    "CUP": 2,
    "CVE": 2,
    "CZK": 2,
    "DJF": 0,
    "DKK": 2,
    "DOP": 2,
    "DZD": 2,
    "EGP": 2,
    "ERN": 2,
    "ETB": 2,
    "EUR": 2,
    "FJD": 2,
    "FKP": 2,
    "GBP": 2,
    "GEL": 2,
    "GHS": 2,
    "GIP": 2,
    "GMD": 2,
    "GNF": 0,
    "GTQ": 2,
    "GYD": 2,
    "HKD": 2,
    "HNL": 2,
    "HTG": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "IQD": 3,
    "IRR": 2,
    "ISK": 0,
    "JMD": 2,
    "JOD": 3,
    "JPY": 0,
    "KES": 2,
    "KGS": 2,
    "KHR": 2,
    "KMF": 0,
    "KPW": 2,
    "KRW": 0,
    "KWD": 3,
    "KYD": 2,
    "KZT": 2,
    "LAK": 2,
    "LBP": 2,
    "LKR": 2,
    "LRD": 2,
    "LSL": 2,
    "LYD": 3,
    "MAD": 2,
    "MDL": 2,
    "MGA": 2,
    "MKD": 2,
    "MMK": 2,
    "MNT": 2,
    "MOP": 2,
    "MRU": 2,
    "MUR": 2,
    "MVR": 2,
    "MWK": 2,
    "MXN": 2,
    "MXV": 2,
    "MYR": 2,
    "MZN": 2,
    "NAD": 2,
    "NGN": 2,
    "NIO": 2,
    "NOK": 2,
    "NPR": 2,
    "NZD": 2,
    "OMR": 3,
    "PAB": 2,
    "PEN": 2,
    "PGK": 2,
    "PHP": 2,
    "PKR": 2,
    "PLN": 2,
    "PYG": 0,
    "QAR": 2,
    "RON": 2,
    "RSD": 2,
    "RUB": 2,
    "RWF": 0,
    "SAR": 2,
    "SBD": 2,
    "SCR": 2,
    "SDG": 2,
    "SEK": 2,
    "SGD": 2,
    "SHP": 2,
    "SLE": 2,
    "SOS": 2,
    "SRD": 2,
    "SSP": 2,
    "STN": 2,
    "SVC": 2,
    "SYP": 2,
    "SZL": 2,
    "THB": 2,
    "TJS": 2,
    "TMT": 2,
    "TND": 3,
    "TOP": 2,
    "TRY": 2,
    "TTD": 2,
    "TWD": 2,
    "TZS": 2,
    "UAH": 2,
    "UGX": 0,
    "USD": 2,
    "USN": 2,
    "UYI": 0,
    "UYU": 2,
    "UYW": 4,
    "UZS": 2,
    "VED": 2,
    "VES": 2,
    "VND": 0,
    "VUV": 0,
    "WST": 2,
    "XAD": 2,
    "XAF": 0,
    "XCD": 2,
    "XCG": 2,
    "XOF": 0,
    "XPF": 0,
    "YER": 2,
    "ZAR": 2,
    "ZMW": 2,
    "ZWG": 2,
}

#: Read-only view of the table: ISO 4217 alphabetic code -> minor unit exponent.
CURRENCY_EXPONENTS: Final[Mapping[str, int]] = MappingProxyType(_ISO_4217_EXPONENTS)

_ROUNDING_MODES: Final[frozenset[str]] = frozenset(
    {
        decimal.ROUND_05UP,
        decimal.ROUND_CEILING,
        decimal.ROUND_DOWN,
        decimal.ROUND_FLOOR,
        decimal.ROUND_HALF_DOWN,
        decimal.ROUND_HALF_EVEN,
        decimal.ROUND_HALF_UP,
        decimal.ROUND_UP,
    }
)

# A Decimal such as 1E+999999999 is finite but would build an absurd integer; nothing real
# has more than this many digits before the decimal point.
_MAX_INTEGER_DIGITS: Final = 1000

_PLAIN_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_NON_FINITE_WORDS: Final = frozenset(
    {"nan", "snan", "inf", "infinity", "+nan", "-nan", "+inf", "-inf", "+infinity", "-infinity"}
)


class UnknownCurrencyError(InputDataError):
    """A currency code that is not an ISO 4217 code with a defined minor unit."""

    def __init__(self, message: str, *, code: object = None) -> None:
        super().__init__(message)
        self.code = code


class MoneyParseError(InputDataError):
    """An amount that cannot be turned into integer minor units exactly (or at all)."""

    def __init__(self, message: str, *, value: object = None, currency: str | None = None) -> None:
        super().__init__(message)
        self.value = value
        self.currency = currency


def normalize_currency(code: str) -> str:
    """Return the canonical upper-case ISO 4217 code for ``code`` (``' usd '`` -> ``'USD'``).

    Raises UnknownCurrencyError for non-strings, empty text and codes not in
    :data:`CURRENCY_EXPONENTS`.
    """
    if not isinstance(code, str):
        raise UnknownCurrencyError(
            f"currency code must be a string such as 'USD', got {type(code).__name__} {code!r}",
            code=code,
        )
    candidate = code.strip()
    # Only ASCII is considered: str.upper() maps some non-ASCII letters onto ASCII ones.
    normalized = candidate.upper() if candidate.isascii() else candidate
    if normalized not in _ISO_4217_EXPONENTS:
        reason = f"unknown currency code {code!r}" if candidate else "empty currency code"
        raise UnknownCurrencyError(
            f"{reason}: not an ISO 4217 code with defined minor units (e.g. USD, EUR, JPY)",
            code=code,
        )
    return normalized


def is_known_currency(code: str) -> bool:
    """True when ``code`` normalises to a code in the table; never raises."""
    try:
        normalize_currency(code)
    except UnknownCurrencyError:
        return False
    return True


def exponent(code: str) -> int:
    """Minor unit exponent of ``code`` (USD 2, JPY 0, KWD 3, CLF 4)."""
    return _ISO_4217_EXPONENTS[normalize_currency(code)]


def parse_minor(
    text: str | int | Decimal, currency: str, *, thousands_sep: str | None = None
) -> int:
    """Parse an amount in MAJOR units into integer minor units, exactly.

    ``text`` may be a decimal string (``"12.34"``, ``" -0.5 "``, ``"+7"``), an ``int`` (a whole
    number of major units) or a finite ``Decimal``. Digits beyond the currency's exponent must
    be zeros (``"12.3400"`` USD is 1234, ``"12.345"`` USD is an error). Digit grouping such as
    ``"1,234.56"`` is rejected unless ``thousands_sep`` names the separator; exponent notation
    in strings (``"1e3"``) is rejected. Floats, bools, NaN and infinities raise MoneyParseError.
    """
    code = normalize_currency(currency)
    if isinstance(text, bool | float):
        raise MoneyParseError(
            f"cannot parse {text!r} as {code}: a {type(text).__name__} is not an amount; "
            "pass a decimal string, an int of major units or a Decimal (never a float)",
            value=text,
            currency=code,
        )
    if isinstance(text, int):
        return text * _pow10(_ISO_4217_EXPONENTS[code])
    if isinstance(text, Decimal):
        return _decimal_to_minor(text, code, None, shown=text)
    if not isinstance(text, str):
        raise MoneyParseError(
            f"cannot parse {text!r} as {code}: expected str, int or Decimal, "
            f"got {type(text).__name__}",
            value=text,
            currency=code,
        )
    return _decimal_to_minor(_parse_text(text, code, thousands_sep), code, None, shown=text)


def _parse_text(text: str, code: str, thousands_sep: str | None) -> Decimal:
    stripped = text.strip()
    if not stripped:
        raise MoneyParseError(
            f"cannot parse {text!r} as {code}: empty amount", value=text, currency=code
        )
    if stripped.lower() in _NON_FINITE_WORDS:
        raise MoneyParseError(
            f"cannot parse {text!r} as {code}: amounts must be finite numbers",
            value=text,
            currency=code,
        )
    number = stripped
    if thousands_sep is not None:
        if len(thousands_sep) != 1 or thousands_sep in "0123456789.+-":
            raise ValueError(
                f"thousands_sep must be a single character other than a digit, '.', '+' or '-', "
                f"got {thousands_sep!r}"
            )
        sep = re.escape(thousands_sep)
        grouped = re.compile(
            rf"[+-]?(?:[0-9]{{1,3}}(?:{sep}[0-9]{{3}})+|[0-9]+)(?:\.[0-9]*)?|[+-]?\.[0-9]+",
            re.ASCII,
        )
        if grouped.fullmatch(stripped) is None:
            raise MoneyParseError(
                f"cannot parse {text!r} as {code}: not a decimal number with digits grouped "
                f"by {thousands_sep!r} in threes (e.g. '-1{thousands_sep}234.56')",
                value=text,
                currency=code,
            )
        number = stripped.replace(thousands_sep, "")
    elif _PLAIN_NUMBER.fullmatch(stripped) is None:
        hint = ""
        if re.fullmatch(r"[+-]?[0-9]{1,3}(?:[,' _][0-9]{3})+(?:\.[0-9]*)?", stripped):
            hint = "; digit grouping needs an explicit thousands_sep"
        raise MoneyParseError(
            f"cannot parse {text!r} as {code}: expected a plain decimal number such as "
            f"'-1234.56' (optional sign, ASCII digits, '.' as decimal point){hint}",
            value=text,
            currency=code,
        )
    return Decimal(number)


def decimal_to_minor(value: Decimal, currency: str, rounding: str | None = None) -> int:
    """Convert a major-unit ``Decimal`` to integer minor units.

    Exact by default: a value with non-zero digits beyond the currency's exponent raises
    MoneyParseError. With ``rounding`` set to a ``decimal`` module mode (``ROUND_HALF_EVEN``,
    ``ROUND_HALF_UP``, ...) such a value is rounded to the exponent with that mode. This is the
    one place tieout rounds money.
    """
    code = normalize_currency(currency)
    if rounding is not None and rounding not in _ROUNDING_MODES:
        raise ValueError(
            f"unknown rounding mode {rounding!r}: use a decimal module constant, one of "
            f"{', '.join(sorted(_ROUNDING_MODES))}"
        )
    return _decimal_to_minor(value, code, rounding, shown=value)


def _decimal_to_minor(value: Decimal, code: str, rounding: str | None, *, shown: object) -> int:
    if not isinstance(value, Decimal):
        raise MoneyParseError(
            f"cannot convert {value!r} to {code} minor units: expected a Decimal, got "
            f"{type(value).__name__} (never a float)",
            value=value,
            currency=code,
        )
    if not value.is_finite():
        raise MoneyParseError(
            f"cannot convert {shown!r} to {code} minor units: amounts must be finite numbers",
            value=shown,
            currency=code,
        )
    if value.adjusted() >= _MAX_INTEGER_DIGITS:
        raise MoneyParseError(
            f"cannot convert {shown!r} to {code} minor units: more than "
            f"{_MAX_INTEGER_DIGITS} digits before the decimal point",
            value=shown,
            currency=code,
        )
    exp = _ISO_4217_EXPONENTS[code]
    sign, digits, value_exp = value.as_tuple()
    if not isinstance(value_exp, int):  # pragma: no cover - finite values have an int exponent
        raise AssertionError(value_exp)
    # Built from the digit tuple so no decimal context (precision 28) can round it.
    coefficient = int(Decimal((0, digits, 0)))
    shift = value_exp + exp
    if shift >= 0:
        magnitude = coefficient * _pow10(shift)
    else:
        if -shift > len(digits):  # every digit is below the minor unit; skip a huge divisor
            magnitude, remainder = 0, coefficient
        else:
            magnitude, remainder = divmod(coefficient, _pow10(-shift))
        if remainder:
            if rounding is None:
                raise MoneyParseError(
                    f"cannot convert {shown!r} to {code} minor units exactly: {code} has "
                    f"{exp} decimal place{'' if exp == 1 else 's'} (ISO 4217 exponent {exp}) "
                    f"and the value has non-zero digits beyond that; pass an explicit "
                    f"rounding mode to decimal_to_minor if rounding is intended",
                    value=shown,
                    currency=code,
                )
            context = decimal.Context(
                prec=len(digits) + 2, rounding=rounding, Emax=decimal.MAX_EMAX
            )
            rounded = value.quantize(Decimal((0, (1,), -exp)), context=context)
            return _decimal_to_minor(rounded, code, None, shown=shown)
    return -magnitude if sign else magnitude


def _pow10(n: int) -> int:
    """10**n for n >= 0, typed as int (``int ** int`` is ``Any`` to mypy)."""
    result: int = 10**n
    return result


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Exact major-unit ``Decimal`` with exactly the currency's decimals (1234 USD -> 12.34)."""
    code = normalize_currency(currency)
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise MoneyParseError(
            f"minor-unit amount for {code} must be an int, got {type(amount_minor).__name__} "
            f"{amount_minor!r}",
            value=amount_minor,
            currency=code,
        )
    digits = Decimal(abs(amount_minor)).as_tuple().digits
    return Decimal((1 if amount_minor < 0 else 0, digits, -_ISO_4217_EXPONENTS[code]))


def format_minor(amount_minor: int, currency: str) -> str:
    """``'<amount> <CODE>'`` with exactly the currency's decimals: ``'-1234.56 EUR'``, ``'5 JPY'``.

    No digit grouping, so the text parses back with :func:`parse_minor` after splitting off the
    code.
    """
    code = normalize_currency(currency)
    exponent = _ISO_4217_EXPONENTS[code]
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or exponent > 6:
        return f"{minor_to_decimal(amount_minor, code)} {code}"  # or its error
    # Integer arithmetic, as Decimal's text would give it (plain notation to 6 decimals):
    # reconciliation explanations format a few hundred thousand amounts per run.
    if not exponent:
        return f"{amount_minor} {code}"
    units, cents = divmod(abs(amount_minor), 10**exponent)
    return f"{'-' if amount_minor < 0 else ''}{units}.{cents:0{exponent}d} {code}"
