"""Tests for tieout.money: ISO 4217 exponents, exact parsing, and the errors for bad input."""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tieout.errors import InputDataError, TieoutError
from tieout.money import (
    CURRENCY_EXPONENTS,
    MoneyParseError,
    UnknownCurrencyError,
    decimal_to_minor,
    exponent,
    format_minor,
    is_known_currency,
    minor_to_decimal,
    normalize_currency,
    parse_minor,
)

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))

# fmt: off
ZERO_DECIMALS = [
    "JPY", "KRW", "ISK", "CLP", "VND", "XOF", "XAF", "XPF", "UGX", "PYG", "RWF", "KMF", "GNF",
    "DJF", "BIF", "VUV", "UYI",
]
TWO_DECIMALS = [
    "USD", "EUR", "GBP", "CHF", "CAD", "AUD", "CNY", "INR", "HUF", "IDR", "BOV", "CHE", "CHW",
    "COU", "MXV", "USN", "VES", "VED", "SLE", "ZWG", "XCG", "XAD",
]
THREE_DECIMALS = ["KWD", "BHD", "OMR", "JOD", "IQD", "LYD", "TND"]
FOUR_DECIMALS = ["CLF", "UYW"]
# "N.A." minor units in ISO 4217 (metals, bond-market units, XDR, ...), then withdrawn codes.
NOT_MONEY = [
    "XAU", "XAG", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XTS", "XXX",
    "ANG", "BGN", "CUC", "HRK", "SLL", "ZWL", "VEF", "STD", "MRO",
]
# fmt: on

EXPECTED_EXPONENTS = {
    **dict.fromkeys(ZERO_DECIMALS, 0),
    **dict.fromkeys(TWO_DECIMALS, 2),
    **dict.fromkeys(THREE_DECIMALS, 3),
    **dict.fromkeys(FOUR_DECIMALS, 4),
}


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED_EXPONENTS.items()))
def test_exponent_of_listed_currencies(code: str, expected: int) -> None:
    assert exponent(code) == expected
    assert CURRENCY_EXPONENTS[code] == expected


def test_table_has_exactly_the_zero_three_and_four_decimal_currencies() -> None:
    by_exponent: dict[int, set[str]] = {}
    for code, exp in CURRENCY_EXPONENTS.items():
        by_exponent.setdefault(exp, set()).add(code)
    assert set(by_exponent) == {0, 2, 3, 4}
    assert by_exponent[0] == set(ZERO_DECIMALS)
    assert by_exponent[3] == set(THREE_DECIMALS)
    assert by_exponent[4] == set(FOUR_DECIMALS)


def test_table_codes_are_three_upper_case_letters() -> None:
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in CURRENCY_EXPONENTS)
    assert len(CURRENCY_EXPONENTS) > 150


@pytest.mark.parametrize("code", NOT_MONEY)
def test_codes_without_minor_units_or_withdrawn_are_not_money(code: str) -> None:
    assert code not in CURRENCY_EXPONENTS
    assert not is_known_currency(code)
    with pytest.raises(UnknownCurrencyError, match=code):
        exponent(code)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["ABC"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("usd", "USD"), ("usd ", "USD"), ("  Eur\t", "EUR"), ("\njpy\n", "JPY"), ("KWD", "KWD")],
)
def test_normalize_currency_strips_and_upper_cases(raw: str, expected: str) -> None:
    assert normalize_currency(raw) == expected
    assert is_known_currency(raw)


@pytest.mark.parametrize("raw", ["XYZ", "US D", "USDD", "US", "ısk", "€"])
def test_normalize_currency_rejects_unknown_codes_naming_them(raw: str) -> None:
    with pytest.raises(UnknownCurrencyError) as info:
        normalize_currency(raw)
    message = str(info.value)
    assert repr(raw) in message
    assert "ISO 4217" in message
    assert "USD" in message  # tells what a valid code looks like
    assert info.value.code == raw
    assert not is_known_currency(raw)


@pytest.mark.parametrize("raw", ["", "   "])
def test_normalize_currency_rejects_empty(raw: str) -> None:
    with pytest.raises(UnknownCurrencyError, match="empty currency code"):
        normalize_currency(raw)


@pytest.mark.parametrize("raw", [None, 840, b"USD", ["USD"]])
def test_normalize_currency_rejects_non_strings(raw: object) -> None:
    with pytest.raises(UnknownCurrencyError, match=re.escape(repr(raw))):
        normalize_currency(raw)  # type: ignore[arg-type]
    assert not is_known_currency(raw)  # type: ignore[arg-type]


def test_errors_belong_to_the_tieout_family() -> None:
    for cls in (UnknownCurrencyError, MoneyParseError):
        assert issubclass(cls, InputDataError)
        assert issubclass(cls, TieoutError)
        assert issubclass(cls, ValueError)


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("12.34", "USD", 1234),
        ("-0.5", "EUR", -50),
        ("1234", "JPY", 1234),
        ("12.345", "KWD", 12345),
        ("12.3400", "USD", 1234),
        ("+7", "GBP", 700),
        ("  -3.1  ", "usd", -310),
        ("0", "USD", 0),
        ("-0.00", "USD", 0),
        ("5.", "USD", 500),
        (".5", "USD", 50),
        ("1.0001", "CLF", 10001),
        ("7.000", "JPY", 7),
        ("123456789012345678901234567890.12", "USD", 12345678901234567890123456789012),
        (Decimal("12.34"), "USD", 1234),
        (Decimal("1E+3"), "USD", 100000),
        (Decimal("-0.005"), "KWD", -5),
        (12, "USD", 1200),
        (-3, "KWD", -3000),
        (5, "JPY", 5),
    ],
)
def test_parse_minor_exact(text: str | int | Decimal, currency: str, expected: int) -> None:
    result = parse_minor(text, currency)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "sep", "expected"),
    [
        ("1,234.56", ",", 123456),
        ("-1,234,567", ",", -123456700),
        ("1234.56", ",", 123456),
        ("1 234.56", " ", 123456),
        ("1'234.5", "'", 123450),
    ],
)
def test_parse_minor_thousands_separator_when_asked(text: str, sep: str, expected: int) -> None:
    assert parse_minor(text, "USD", thousands_sep=sep) == expected


@pytest.mark.parametrize("text", ["1,23.4", "12,34", "1,,234", ",123", "1,234,5"])
def test_parse_minor_rejects_misgrouped_digits(text: str) -> None:
    with pytest.raises(MoneyParseError, match=re.escape(repr(text))):
        parse_minor(text, "USD", thousands_sep=",")


@pytest.mark.parametrize("sep", ["", ".", "0", "-", ",,"])
def test_parse_minor_rejects_unusable_thousands_separator(sep: str) -> None:
    with pytest.raises(ValueError, match="thousands_sep"):
        parse_minor("1", "USD", thousands_sep=sep)


def test_parse_minor_rejects_grouping_without_separator_and_says_how() -> None:
    with pytest.raises(MoneyParseError) as info:
        parse_minor("1,234.56", "USD")
    assert "'1,234.56'" in str(info.value)
    assert "thousands_sep" in str(info.value)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.345", "USD"), ("0.001", "EUR"), ("1.5", "JPY"), ("0.0001", "KWD"), ("1.00001", "CLF")],
)
def test_parse_minor_rejects_lost_precision_naming_value_currency_exponent(
    text: str, currency: str
) -> None:
    with pytest.raises(MoneyParseError) as info:
        parse_minor(text, currency)
    message = str(info.value)
    assert repr(text) in message
    assert currency in message
    assert f"exponent {CURRENCY_EXPONENTS[currency]}" in message
    assert info.value.value == text
    assert info.value.currency == currency


@pytest.mark.parametrize("value", [1.5, 0.0, 12.34, float("nan"), float("inf")])
def test_parse_minor_rejects_floats(value: float) -> None:
    with pytest.raises(MoneyParseError, match="float") as info:
        parse_minor(value, "USD")  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [True, False, None, b"12", [1]])
def test_parse_minor_rejects_other_types(value: object) -> None:
    with pytest.raises(MoneyParseError, match=re.escape(repr(value))):
        parse_minor(value, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["NaN", "nan", "-Infinity", "inf", "sNaN", Decimal("NaN"), Decimal("-Infinity")]
)
def test_parse_minor_rejects_non_finite(value: str | Decimal) -> None:
    with pytest.raises(MoneyParseError, match="finite") as info:
        parse_minor(value, "USD")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "12abc",
        "1e3",
        "1E-2",
        "12.34.56",
        "--1",
        "+-1",
        "0x10",
        "1_000",
        "$12",
        "12 34",
        "١٢",
    ],
)
def test_parse_minor_rejects_garbage(text: str) -> None:
    with pytest.raises(MoneyParseError) as info:
        parse_minor(text, "USD")
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_parse_minor_rejects_empty(text: str) -> None:
    with pytest.raises(MoneyParseError, match="empty") as info:
        parse_minor(text, "USD")
    assert repr(text) in str(info.value)


def test_parse_minor_rejects_unknown_currency() -> None:
    with pytest.raises(UnknownCurrencyError, match="'XYZ'"):
        parse_minor("1.00", "XYZ")


def test_parse_minor_rejects_absurd_magnitude_without_building_it() -> None:
    with pytest.raises(MoneyParseError, match="digits before the decimal point"):
        parse_minor(Decimal("1E+999999999"), "USD")


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (1234, "USD", "12.34"),
        (5, "JPY", "5"),
        (-5, "KWD", "-0.005"),
        (0, "USD", "0.00"),
        (-1, "CLF", "-0.0001"),
        (100, "EUR", "1.00"),
        (10**40 + 1, "USD", "1" + "0" * 37 + "0.01"),
    ],
)
def test_minor_to_decimal_exact_and_quantized(minor: int, currency: str, expected: str) -> None:
    result = minor_to_decimal(minor, currency)
    assert result == Decimal(expected)
    assert str(result) == expected  # same digits and exponent, not just equal value
    assert result.as_tuple().exponent == -CURRENCY_EXPONENTS[currency]


@pytest.mark.parametrize("bad", [1.0, True, "12", Decimal(12)])
def test_minor_to_decimal_rejects_non_int(bad: object) -> None:
    with pytest.raises(MoneyParseError, match=re.escape(repr(bad))):
        minor_to_decimal(bad, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (-123456, "eur", "-1234.56 EUR"),
        (123456, "JPY", "123456 JPY"),
        (5, "KWD", "0.005 KWD"),
        (0, "USD", "0.00 USD"),
    ],
)
def test_format_minor(minor: int, currency: str, expected: str) -> None:
    assert format_minor(minor, currency) == expected


@pytest.mark.parametrize(
    ("value", "rounding", "expected"),
    [
        ("0.125", decimal.ROUND_HALF_EVEN, 12),
        ("0.135", decimal.ROUND_HALF_EVEN, 14),
        ("0.125", decimal.ROUND_HALF_UP, 13),
        ("-0.125", decimal.ROUND_HALF_UP, -13),
        ("-0.125", decimal.ROUND_FLOOR, -13),
        ("-0.125", decimal.ROUND_CEILING, -12),
        ("9.999", decimal.ROUND_HALF_UP, 1000),
        ("0.001", decimal.ROUND_UP, 1),
        ("0.001", decimal.ROUND_DOWN, 0),
        ("1E-50", decimal.ROUND_UP, 1),
        ("12.34", decimal.ROUND_HALF_EVEN, 1234),
        (
            "123456789012345678901234567890.125",
            decimal.ROUND_HALF_EVEN,
            12345678901234567890123456789012,
        ),
    ],
)
def test_decimal_to_minor_rounds_only_when_asked(value: str, rounding: str, expected: int) -> None:
    assert decimal_to_minor(Decimal(value), "USD", rounding) == expected


def test_decimal_to_minor_is_exact_by_default() -> None:
    assert decimal_to_minor(Decimal("12.340"), "USD") == 1234
    with pytest.raises(MoneyParseError, match=r"'0\.125'.*USD.*exponent 2"):
        decimal_to_minor(Decimal("0.125"), "USD")


def test_decimal_to_minor_rejects_unknown_rounding_mode() -> None:
    with pytest.raises(ValueError, match="'HALF_UP'"):
        decimal_to_minor(Decimal("1"), "USD", "HALF_UP")


def test_decimal_to_minor_rejects_float() -> None:
    with pytest.raises(MoneyParseError, match="float"):
        decimal_to_minor(1.25, "USD")  # type: ignore[arg-type]


def test_rounding_ignores_the_ambient_decimal_context() -> None:
    # 40 significant digits: the default context (prec=28) must not be used for the arithmetic.
    value = Decimal("1234567890123456789012345678901234567.895")
    with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_DOWN)):
        assert decimal_to_minor(value, "USD", decimal.ROUND_HALF_UP) == (
            123456789012345678901234567890123456790
        )
        assert minor_to_decimal(10**40 + 1, "USD") == Decimal("1" + "0" * 37 + "0.01")


@given(currency=currencies, n=st.integers())
def test_format_minor_is_decimal_text(currency: str, n: int) -> None:
    assert format_minor(n, currency) == f"{minor_to_decimal(n, currency)} {currency}"


@given(currency=currencies, n=st.integers())
def test_round_trip_through_text(currency: str, n: int) -> None:
    assert parse_minor(str(minor_to_decimal(n, currency)), currency) == n


@given(currency=currencies, n=st.integers())
def test_round_trip_through_decimal_and_format(currency: str, n: int) -> None:
    as_decimal = minor_to_decimal(n, currency)
    assert decimal_to_minor(as_decimal, currency) == n
    assert parse_minor(as_decimal, currency) == n
    amount, code = format_minor(n, currency).split(" ")
    assert code == currency
    assert parse_minor(amount, code) == n


@given(
    currency=currencies,
    n=st.integers(),
    padding=st.sampled_from(["", " ", "\t", "  \n"]),
    zeros=st.integers(min_value=0, max_value=5),
)
def test_parse_tolerates_whitespace_case_and_trailing_zeros(
    currency: str, n: int, padding: str, zeros: int
) -> None:
    text = str(minor_to_decimal(n, currency))
    if zeros and "." not in text:
        text += "."
    text += "0" * zeros
    assert parse_minor(padding + text + padding, padding + currency.lower() + padding) == n


@given(currency=currencies, n=st.integers(), extra=st.integers(min_value=1, max_value=9))
def test_one_digit_too_many_is_rejected(currency: str, n: int, extra: int) -> None:
    text = str(minor_to_decimal(n, currency))
    if "." not in text:
        text += "."
    with pytest.raises(MoneyParseError, match=currency):
        parse_minor(text + str(extra), currency)


@given(
    value=st.decimals(allow_nan=False, allow_infinity=False, places=6),
    currency=currencies,
    rounding=st.sampled_from(
        [decimal.ROUND_HALF_EVEN, decimal.ROUND_HALF_UP, decimal.ROUND_FLOOR, decimal.ROUND_UP]
    ),
)
def test_rounded_result_is_within_one_minor_unit(
    value: Decimal, currency: str, rounding: str
) -> None:
    minor = decimal_to_minor(value, currency, rounding)
    with decimal.localcontext(decimal.Context(prec=100)):
        difference = abs(minor_to_decimal(minor, currency) - value)
        assert difference < Decimal(1).scaleb(-CURRENCY_EXPONENTS[currency])
