"""Reading helpers every gateway parser uses, so errors read the same everywhere.

All of them raise `SettlementFileError` naming the file and the 1-based line of the file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tieout.connectors.settlements.base import SettlementFileError
from tieout.money import MoneyParseError, UnknownCurrencyError, normalize_currency, parse_minor


def decode_text(data: bytes, file: str) -> str:
    """UTF-8 (with or without BOM) or UTF-16 (with BOM, or detected by NUL bytes)."""
    if not data.strip():
        raise SettlementFileError("the file is empty", file=file, fix="re-download the report")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif len(data) >= 4 and (data[1:2] == b"\x00" or data[0:1] == b"\x00"):
        encoding = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
    else:
        encoding = "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SettlementFileError(
            f"not valid {encoding.upper()} text (byte {exc.start})",
            file=file,
            line=line,
            fix="gateways deliver UTF-8 or UTF-16; re-download the original file",
        ) from None
    return text.lstrip("\ufeff")


def norm_header(name: str) -> str:
    """Header names compare without case, surrounding space or doubled inner spaces."""
    return re.sub(r"\s+", " ", name.strip().strip('"')).lower()


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file
    values: Mapping[str, str]  # normalized header -> raw (stripped) text; '' when absent

    def get(self, column: str) -> str:
        return self.values.get(norm_header(column), "")


def csv_records(text: str, file: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each CSV record, skipping blank lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                yield reader.line_num, fields
    except csv.Error as exc:
        raise SettlementFileError(
            f"malformed CSV: {exc}",
            file=file,
            line=reader.line_num,
            fix="the file may be truncated",
        ) from None


def read_table(
    records: Iterable[tuple[int, list[str]]],
    header: list[str],
    header_line: int,
    file: str,
    required: Iterable[str],
) -> list[Row]:
    """Rows keyed by header name (never by position); extra columns are kept, order ignored."""
    names = [norm_header(h) for h in header]
    missing = [r for r in required if norm_header(r) not in names]
    if missing:
        raise SettlementFileError(
            f"missing required column(s) {', '.join(missing)}",
            file=file,
            line=header_line,
            fix="check the report type and that the header row is intact",
        )
    rows = []
    for line, fields in records:
        if len(fields) > len(names) and any(f.strip() for f in fields[len(names) :]):
            raise SettlementFileError(
                f"{len(fields)} fields but the header has {len(names)}", file=file, line=line
            )
        values = {n: (fields[i].strip() if i < len(fields) else "") for i, n in enumerate(names)}
        rows.append(Row(line, values))
    return rows


def currency(text: str, file: str, line: int, column: str) -> str:
    try:
        return normalize_currency(text)
    except UnknownCurrencyError:
        raise SettlementFileError(
            f"column {column}: {text!r} is not an ISO 4217 currency code", file=file, line=line
        ) from None


def major_to_minor(text: str, cur: str, file: str, line: int, column: str) -> int:
    """A decimal string in major units ('12.34', '-0.77') to exact minor units."""
    try:
        return parse_minor(text.strip(), cur)
    except MoneyParseError as exc:
        raise SettlementFileError(
            f"column {column}: {text!r} is not an amount in {cur} ({exc})", file=file, line=line
        ) from None


def minor_int(text: str, file: str, line: int, column: str, *, unsigned: bool = False) -> int:
    """An integer of minor units ('1234', '-400')."""
    t = text.strip()
    pattern = r"[0-9]{1,18}" if unsigned else r"[+-]?[0-9]{1,18}"
    if not re.fullmatch(pattern, t):
        kind = "an unsigned integer" if unsigned else "an integer"
        raise SettlementFileError(
            f"column {column}: {text!r} is not {kind} of minor units", file=file, line=line
        )
    return int(t)


def exact_decimal(text: str, file: str, line: int, column: str) -> str | None:
    """An exact decimal string (exchange rates), or None when empty."""
    t = text.strip()
    if not t:
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        d = Decimal("NaN")
    if not d.is_finite():
        raise SettlementFileError(
            f"column {column}: {text!r} is not a number", file=file, line=line
        )
    return str(d)


def parse_datetime(
    text: str, file: str, line: int, column: str, default_tz: str = "UTC"
) -> datetime:
    """'YYYY-MM-DD HH:MM:SS', ISO 8601, or PayPal's 'YYYY/MM/DD HH:MM:SS -0800'; naive values
    are in `default_tz`. Returned as timezone-aware UTC."""
    t = text.strip()
    formats = ("%Y/%m/%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %z")
    parsed: datetime | None = None
    for fmt in formats:
        try:
            parsed = datetime.strptime(t, fmt)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(t.replace("/", "-"))
        except ValueError:
            raise SettlementFileError(
                f"column {column}: {text!r} is not a date and time", file=file, line=line
            ) from None
    if parsed.tzinfo is None:
        try:
            parsed = parsed.replace(tzinfo=ZoneInfo(default_tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise SettlementFileError(
                f"unknown time zone {default_tz!r}", file=file, line=line
            ) from None
    return parsed.astimezone(UTC)


def parse_date(text: str, file: str, line: int, column: str) -> date:
    t = text.strip()[:10].replace("/", "-")
    try:
        return date.fromisoformat(t)
    except ValueError:
        raise SettlementFileError(
            f"column {column}: {text!r} is not a date", file=file, line=line
        ) from None


def from_unix(value: object, file: str, line: int, column: str) -> datetime:
    if type(value) is not int:
        raise SettlementFileError(
            f"field {column}: {value!r} is not a unix timestamp", file=file, line=line
        )
    return datetime.fromtimestamp(value, UTC)


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    """CSV text for writers (demo files, tests): QUOTE_MINIMAL, \\n line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
