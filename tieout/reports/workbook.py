"""report.xlsx: the workbook accountants work in, and reading their status edits back.

Layout: a "Summary" sheet, then one sheet per exception kind present. Exception sheets carry
EXCEPTION_COLUMNS with `amount` (exact Decimal, formatted in the currency's decimals) after
`amount_minor`, `age_bucket` after `last_seen`, and an editable `note` right after `status`.
A hidden last column keeps the status as written. Only `status` and `note` are meant to be
edited; `read_status_updates` reads them back and
refuses the whole file, listing every problem, rather than importing half an edit.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from io import BytesIO
from typing import Any, Final

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

from tieout.errors import InputDataError
from tieout.reconcile.model import (
    AGING_BUCKETS,
    EXCEPTION_COLUMNS,
    EXCEPTION_KINDS,
    STATUSES,
    ReconException,
    Summary,
    aging_bucket,
)
from tieout.reports._common import (
    SUMMARY_SHEET,
    excel_money_format,
    money_decimal,
    ordered_kinds,
    sheet_names,
    sort_exceptions,
)

__all__ = ["SHEET_COLUMNS", "StatusUpdate", "build_workbook", "read_status_updates"]


def _sheet_columns() -> tuple[str, ...]:
    cols: list[str] = []
    for c in EXCEPTION_COLUMNS:
        cols.append(c)
        if c == "amount_minor":
            cols.append("amount")
        elif c == "last_seen":
            cols.append("age_bucket")
        elif c == "status":
            cols.append("note")
    return (*cols, _WRITTEN)


#: Hidden last column: the status as written, so an exception that was already resolved or
#: waived before this report (its note lives in the state database) needs no new note.
_WRITTEN: Final = "status_as_written"
#: Columns of every exception sheet, in order.
SHEET_COLUMNS: Final[tuple[str, ...]] = _sheet_columns()
#: What read_status_updates needs in an exception sheet's header row.
_REQUIRED: Final = ("exception_id", "status", "note")
#: Statuses that close an exception: the accountant must say why.
_NEEDS_NOTE: Final = frozenset({"resolved", "waived"})

_DATE_FORMAT: Final = "yyyy-mm-dd"
_HEADER_FILL: Final = PatternFill("solid", fgColor="DDE3EA")
_EDITABLE_FILL: Final = PatternFill("solid", fgColor="FFF2CC")
_BOLD: Final = Font(bold=True)
_TITLE: Final = Font(bold=True, size=14)
_MAX_WIDTH: Final = {"explanation": 80, "note": 40}


@dataclass(frozen=True)
class StatusUpdate:
    """One exception row of an edited report.xlsx, with where it came from for messages."""

    exception_id: str
    status: str
    note: str
    sheet: str
    row: int


# ---------------------------------------------------------------------------------------------
# Writing


def build_workbook(exceptions: Sequence[ReconException], summary: Summary) -> bytes:
    """The .xlsx bytes; same input, same bytes (fixed dates in the properties and the zip)."""
    wb = Workbook()
    ws = wb.active
    assert isinstance(ws, Worksheet)
    ws.title = SUMMARY_SHEET
    _write_summary(ws, summary)

    by_kind: dict[str, list[ReconException]] = {}
    for e in sort_exceptions(exceptions):
        by_kind.setdefault(e.kind, []).append(e)
    names = sheet_names(ordered_kinds(by_kind))
    for kind, sheet in names.items():
        _write_exception_sheet(wb.create_sheet(sheet), by_kind[kind], summary.as_of)

    stamp = datetime.combine(summary.as_of, time(0, 0))
    wb.properties.created = stamp
    wb.properties.modified = stamp
    wb.properties.creator = "tieout"
    wb.properties.title = _clean(f"tieout reconciliation {summary.run_id}")
    buf = BytesIO()
    # ExcelWriter rather than wb.save(): save() stamps properties.modified with the clock.
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        ExcelWriter(wb, archive).save()
    return _stable_zip(buf.getvalue(), stamp)


def _stable_zip(data: bytes, stamp: datetime) -> bytes:
    """Rewrite the archive with one fixed timestamp: openpyxl stamps entries with 'now'."""
    when = (max(stamp.year, 1980), stamp.month, stamp.day, 0, 0, 0)
    out = BytesIO()
    with (
        zipfile.ZipFile(BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=when)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, src.read(info.filename))
    return out.getvalue()


def _clean(text: str) -> str:
    """Excel refuses control characters; drop them rather than fail the whole report."""
    return ILLEGAL_CHARACTERS_RE.sub("", text)


def _set(ws: Worksheet, row: int, col: int, value: Any, fmt: str | None = None) -> Cell:
    cell = ws.cell(row=row, column=col)
    assert isinstance(cell, Cell)  # nothing in these sheets is merged
    if isinstance(value, str):
        cell.value = _clean(value)
        cell.data_type = "s"  # text that starts with '=' stays text, never a formula
    else:
        cell.value = value
    if fmt is not None:
        cell.number_format = fmt
    return cell


def _header(ws: Worksheet, row: int, names: Sequence[str], editable: frozenset[str]) -> None:
    for i, name in enumerate(names, start=1):
        cell = _set(ws, row, i, name)
        cell.font = _BOLD
        cell.fill = _EDITABLE_FILL if name in editable else _HEADER_FILL


def _write_summary(ws: Worksheet, summary: Summary) -> None:
    """Run facts, the per gateway/currency table, then exceptions by kind and by age."""
    _set(ws, 1, 1, "tieout reconciliation report").font = _TITLE
    facts: list[tuple[str, Any, str | None]] = [
        ("Run", summary.run_id, None),
        ("From", summary.start, _DATE_FORMAT),
        ("To", summary.end, _DATE_FORMAT),
        ("As of", summary.as_of, _DATE_FORMAT),
        ("Gateways", ", ".join(summary.gateways), None),
        ("Money conserved", "yes" if summary.conservation_ok else "NO: check the run", None),
        ("Editing", "Change only the yellow status and note columns of the kind sheets.", None),
    ]
    row = 3
    for label, value, fmt in facts:
        _set(ws, row, 1, label).font = _BOLD
        _set(ws, row, 2, value, fmt).alignment = Alignment(horizontal="left")
        row += 1

    row += 1
    _set(ws, row, 1, "By gateway and currency").font = _TITLE
    row += 1
    kinds = ordered_kinds(k for r in summary.rows for k in r.exceptions_by_kind)
    money_cols = ("billed", "settled", "matched", "pending", "in exceptions")
    head = [
        "gateway",
        "currency",
        "payments",
        "settlement lines",
        "matched payments",
        "pending payments",
        "exception payments",
        *money_cols,
        *kinds,
        "match rate",
        "payouts",
        "payouts tied out",
    ]
    _header(ws, row, head, frozenset())
    for r in summary.rows:
        row += 1
        fmt = excel_money_format(r.currency)
        amounts = (r.billed_minor, r.settled_minor, r.matched_minor, r.pending_minor)
        values: list[tuple[Any, str | None]] = [
            (r.gateway, None),
            (r.currency, None),
            (r.payments, "#,##0"),
            (r.lines, "#,##0"),
            (r.matched_payments, "#,##0"),
            (r.pending_payments, "#,##0"),
            (r.exception_payments, "#,##0"),
            *((_amount(m, r.currency), fmt) for m in (*amounts, r.exception_minor)),
            *((r.exceptions_by_kind.get(k, 0), "#,##0") for k in kinds),
            (r.match_rate, "0.0%"),
            (r.payouts, "#,##0"),
            (r.payouts_tied_out, "#,##0"),
        ]
        for col, (value, number_format) in enumerate(values, start=1):
            _set(ws, row, col, value, number_format)

    row += 2
    _set(ws, row, 1, "Exceptions by kind").font = _TITLE
    _header(ws, row + 1, ["kind", "exceptions"], frozenset())
    row += 1
    for kind in ordered_kinds(summary.exceptions_by_kind):
        row += 1
        _set(ws, row, 1, kind)
        _set(ws, row, 2, summary.exceptions_by_kind[kind], "#,##0")

    row += 2
    _set(ws, row, 1, "Exceptions by age (days since first seen)").font = _TITLE
    _header(ws, row + 1, ["age (days)", "exceptions"], frozenset())
    row += 1
    for bucket, _lo, _hi in AGING_BUCKETS:
        row += 1
        _set(ws, row, 1, bucket)
        _set(ws, row, 2, summary.exceptions_by_age.get(bucket, 0), "#,##0")

    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["B"].width = 14
    for col in range(3, len(head) + 1):
        ws.column_dimensions[get_column_letter(col)].width = max(12, len(head[col - 1]) + 2)


def _amount(amount_minor: int, currency: str | None) -> Decimal | int:
    """Exact Decimal in major units; raw minor units when the currency is unknown."""
    value = money_decimal(amount_minor, currency)
    return amount_minor if value is None else value


def _write_exception_sheet(ws: Worksheet, rows: Sequence[ReconException], as_of: date) -> None:
    """One kind: frozen header, autofilter, a status dropdown and an empty note per row."""
    _header(ws, 1, SHEET_COLUMNS, frozenset({"status", "note"}))
    widths = [len(c) + 2 for c in SHEET_COLUMNS]
    for r, e in enumerate(rows, start=2):
        base = e.as_row()
        values: dict[str, tuple[Any, str | None]] = {
            **{c: (base[c], None) for c in EXCEPTION_COLUMNS},
            "amount_minor": (e.amount_minor, "0"),
            "amount": (money_decimal(e.amount_minor, e.currency), excel_money_format(e.currency)),
            "first_seen": (e.first_seen, _DATE_FORMAT),
            "last_seen": (e.last_seen, _DATE_FORMAT),
            "age_bucket": (aging_bucket(e.first_seen, as_of), None),
            "note": ("", None),
            _WRITTEN: (e.status, None),
        }
        for c, name in enumerate(SHEET_COLUMNS, start=1):
            value, fmt = values[name]
            cell = _set(ws, r, c, value, fmt)
            if name in ("status", "note"):
                cell.fill = _EDITABLE_FILL
            widths[c - 1] = max(widths[c - 1], _display_len(value))

    last = len(rows) + 1
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(SHEET_COLUMNS))}{last}"
    status_col = get_column_letter(SHEET_COLUMNS.index("status") + 1)
    dv = DataValidation(
        type="list",
        formula1='"' + ",".join(STATUSES) + '"',
        allow_blank=False,
        showErrorMessage=True,
        errorTitle="Unknown status",
        error="Choose open, resolved or waived.",
        showInputMessage=True,
        promptTitle="Status",
        prompt="open, resolved or waived; resolved and waived need a note.",
    )
    ws.add_data_validation(dv)
    dv.add(f"{status_col}2:{status_col}{last}")
    for c, name in enumerate(SHEET_COLUMNS, start=1):
        width = min(widths[c - 1] + 2, _MAX_WIDTH.get(name, 60))
        ws.column_dimensions[get_column_letter(c)].width = max(width, _MAX_WIDTH.get(name, 0))
    ws.column_dimensions[get_column_letter(len(SHEET_COLUMNS))].hidden = True


def _display_len(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return len(f"{value:,}")
    if isinstance(value, date):
        return 10
    return len(str(value))


# ---------------------------------------------------------------------------------------------
# Reading back


def read_status_updates(data: bytes, file: str) -> list[StatusUpdate]:
    """Every exception row's status and note, or one InputDataError listing every problem.

    Exception sheets are the sheets named after a kind and any other sheet whose header row
    names one of exception_id/status/note; other sheets (Summary, an accountant's scratch
    sheet) are ignored. Statuses are compared case-insensitively. When an exception appears
    twice with the same status, the first row wins.
    """
    try:
        wb = load_workbook(BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # zip, XML and openpyxl errors all mean: not a usable .xlsx
        raise InputDataError(
            f"{file}: not an Excel workbook ({type(exc).__name__}: {exc}); upload the report.xlsx "
            "tieout wrote, edited and saved as .xlsx"
        ) from None
    kind_sheets = {n.lower() for n in sheet_names(EXCEPTION_KINDS).values()}
    problems: list[str] = []
    updates: list[StatusUpdate] = []
    seen: dict[str, StatusUpdate] = {}
    try:
        for ws in wb.worksheets:
            rows = ws.iter_rows(values_only=True)
            header = [_text(v).lower() for v in next(rows, ())]
            if ws.title.lower() == SUMMARY_SHEET.lower():
                continue
            if ws.title.lower() not in kind_sheets and not set(_REQUIRED) & set(header):
                continue
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                problems.append(
                    f"{file} sheet {ws.title} row 1: header lacks {', '.join(missing)} "
                    "(restore the header row from the report tieout wrote)"
                )
                continue
            cols: tuple[str, ...] = (*_REQUIRED, _WRITTEN)
            idx = {c: header.index(c) for c in cols if c in header}
            for n, values in enumerate(rows, start=2):
                if all(_text(v) == "" for v in values):
                    continue
                cells = {c: _text(values[i]) if i < len(values) else "" for c, i in idx.items()}
                update = _check_row(cells, ws.title, n, file, seen, problems)
                if update is not None:
                    seen[update.exception_id] = update
                    updates.append(update)
    finally:
        wb.close()
    if problems:
        raise InputDataError(
            f"{file}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the status "
            "updates; nothing was imported:\n" + "\n".join(problems)
        )
    return updates


def _check_row(
    cells: dict[str, str],
    sheet: str,
    row: int,
    file: str,
    seen: dict[str, StatusUpdate],
    problems: list[str],
) -> StatusUpdate | None:
    """Validate one row, appending each problem; the update when it is usable and new."""
    where = f"{file} sheet {sheet} row {row}"
    before = len(problems)
    eid, raw, note = cells["exception_id"], cells["status"], cells["note"]
    status = raw.lower()
    unchanged = cells.get(_WRITTEN, "").lower() == status
    if not eid:
        problems.append(
            f"{where}: missing exception_id (copy it back from exceptions.csv or delete the row)"
        )
    if not raw:
        problems.append(f"{where}: missing status (choose one of {', '.join(STATUSES)})")
    elif status not in STATUSES:
        problems.append(f"{where}: unknown status {raw!r} (use one of {', '.join(STATUSES)})")
    elif status in _NEEDS_NOTE and not note and not unchanged:
        problems.append(f"{where}: {status} without a note (say in the note why it is {status})")
    prior = seen.get(eid) if eid else None
    if prior is not None and status in STATUSES and prior.status != status:
        problems.append(
            f"{where}: exception {eid} is {status} here but {prior.status} on sheet "
            f"{prior.sheet} row {prior.row} (give it one status)"
        )
    if len(problems) > before or prior is not None:
        return None
    return StatusUpdate(exception_id=eid, status=status, note=note, sheet=sheet, row=row)


def _text(value: object) -> str:
    """A cell as stripped text: accountants type ids and notes, Excel may turn them into numbers."""
    if value is None:
        return ""
    if isinstance(value, datetime) and value.time() == time(0, 0):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
