"""The four reports: exact CSV, round-tripping JSON, the accountants' workbook and its read-back,
and the static HTML page."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from xml.etree import ElementTree

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.worksheet.worksheet import Worksheet

from tieout.connectors.storage import Storage
from tieout.errors import InputDataError
from tieout.reconcile.model import (
    EXCEPTION_COLUMNS,
    GatewayCurrencySummary,
    ReconException,
    Summary,
)
from tieout.reports import (
    SHEET_COLUMNS,
    StatusUpdate,
    build_workbook,
    exceptions_csv,
    read_status_updates,
    render_html,
    summary_json,
    write_reports,
)

AS_OF = date(2026, 3, 31)


def _ex(
    eid: str,
    kind: str,
    currency: str | None,
    amount_minor: int,
    age_days: int,
    *,
    gateway: str | None = "adyen",
    severity: str = "high",
    status: str = "open",
    explanation: str = "explained",
) -> ReconException:
    first = AS_OF - timedelta(days=age_days)
    return ReconException(
        exception_id=eid,
        kind=kind,
        severity=severity,
        gateway=gateway,
        currency=currency,
        amount_minor=amount_minor,
        payment_id=f"pay_{eid}",
        invoice_id=None,
        settlement_line_id=f"line_{eid}" if kind != "missing_in_gateway" else None,
        batch_id=None,
        first_seen=first,
        last_seen=AS_OF,
        status=status,
        explanation=explanation,
    )


EXCEPTIONS = [
    _ex("ex_b", "amount_mismatch", "USD", 123456, 3, gateway="stripe"),
    _ex("ex_a", "amount_mismatch", "JPY", 1500, 10),
    _ex("ex_c", "missing_in_gateway", "KWD", 1234567, 45, explanation="<script>alert(1)</script>"),
    _ex("ex_d", "fee_variance", "USD", 5, 90, severity="medium", explanation="=1+1"),
    _ex("ex_e", "suggested_match", None, 77, 0, gateway=None, severity="low", status="resolved"),
]

SUMMARY = Summary(
    run_id="run-2026-03",
    start=date(2026, 3, 1),
    end=date(2026, 3, 4),
    as_of=AS_OF,
    gateways=["adyen", "stripe"],
    rows=[
        GatewayCurrencySummary(
            gateway="adyen",
            currency="JPY",
            billed_minor=150000,
            settled_minor=148500,
            payments=4,
            lines=4,
            matched_payments=3,
            pending_payments=0,
            exception_payments=1,
            matched_minor=147000,
            pending_minor=0,
            exception_minor=1500,
            exceptions_by_kind={"amount_mismatch": 1},
            payouts=1,
            payouts_tied_out=1,
        ),
        GatewayCurrencySummary(
            gateway="adyen",
            currency="KWD",
            billed_minor=1234567,
            settled_minor=0,
            payments=1,
            exception_payments=1,
            exception_minor=1234567,
            exceptions_by_kind={"missing_in_gateway": 1},
        ),
        GatewayCurrencySummary(
            gateway="stripe",
            currency="USD",
            billed_minor=1000000,
            settled_minor=876549,
            payments=8,
            lines=8,
            matched_payments=6,
            pending_payments=1,
            exception_payments=1,
            matched_minor=750000,
            pending_minor=2500,
            exception_minor=123456,
            exceptions_by_kind={"amount_mismatch": 1, "fee_variance": 1},
            payouts=2,
            payouts_tied_out=1,
        ),
    ],
    exceptions_by_kind={"amount_mismatch": 2, "missing_in_gateway": 1, "fee_variance": 1},
    exceptions_by_age={"0-7": 1, "8-30": 1, "31-60": 1, "60+": 1},
    daily=[
        {"day": "2026-03-01", "payments": 4, "matched": 2, "match_rate": 0.5},
        {"day": "2026-03-02", "payments": 4, "matched": 3, "match_rate": 0.75},
        {"day": "2026-03-03", "payments": 0, "matched": 0, "match_rate": None},
        {"day": "2026-03-04", "payments": 5, "matched": 5, "match_rate": 1.0},
    ],
    conservation_ok=True,
    totals={"payments": 13},
)


def _wb(data: bytes | None = None) -> Workbook:
    return load_workbook(io.BytesIO(data or build_workbook(EXCEPTIONS, SUMMARY)))


def _sheet(wb: Workbook, name: str) -> Worksheet:
    ws = wb[name]
    assert isinstance(ws, Worksheet)
    return ws


def _row_of(ws: Worksheet, eid: str) -> int:
    for (cell,) in ws.iter_rows(min_row=2, max_col=1):
        if cell.value == eid:
            return cell.row
    raise AssertionError(f"{eid} not on sheet {ws.title}")


def _col(name: str) -> int:
    return SHEET_COLUMNS.index(name) + 1


def _save(wb: Workbook) -> bytes:
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- CSV and JSON -----------------------------------------------------------------------------


def test_exceptions_csv_has_model_header_and_rows_sorted_by_kind_gateway_id() -> None:
    text = exceptions_csv(EXCEPTIONS).decode("utf-8")
    assert text.splitlines()[0] == ",".join(EXCEPTION_COLUMNS)
    assert text == (
        ",".join(EXCEPTION_COLUMNS) + "\n"
        "ex_a,amount_mismatch,high,adyen,JPY,1500,pay_ex_a,,line_ex_a,,2026-03-21,2026-03-31,"
        "open,explained\n"
        "ex_b,amount_mismatch,high,stripe,USD,123456,pay_ex_b,,line_ex_b,,2026-03-28,2026-03-31,"
        "open,explained\n"
        "ex_d,fee_variance,medium,adyen,USD,5,pay_ex_d,,line_ex_d,,2025-12-31,2026-03-31,"
        "open,=1+1\n"
        "ex_c,missing_in_gateway,high,adyen,KWD,1234567,pay_ex_c,,,,2026-02-14,2026-03-31,"
        "open,<script>alert(1)</script>\n"
        "ex_e,suggested_match,low,,,77,pay_ex_e,,line_ex_e,,2026-03-31,2026-03-31,"
        "resolved,explained\n"
    )


def test_summary_json_round_trips_with_sorted_keys() -> None:
    raw = summary_json(SUMMARY)
    loaded = json.loads(raw)
    assert loaded == SUMMARY.to_json()
    assert raw.decode("utf-8") == json.dumps(loaded, sort_keys=True, indent=2) + "\n"
    assert loaded["by_gateway_currency"][1]["billed_minor"] == 1234567


def test_write_reports_writes_four_files_and_returns_their_locations(tmp_path: Path) -> None:
    uris = write_reports(EXCEPTIONS, SUMMARY, Storage(str(tmp_path / "out")))
    assert sorted(uris) == ["exceptions.csv", "report.html", "report.xlsx", "summary.json"]
    for name, uri in uris.items():
        assert Path(uri) == tmp_path / "out" / name
    assert Path(uris["exceptions.csv"]).read_bytes() == exceptions_csv(EXCEPTIONS)
    assert Path(uris["summary.json"]).read_bytes() == summary_json(SUMMARY)
    assert _sheet(_wb(Path(uris["report.xlsx"]).read_bytes()), "fee_variance")["A2"].value == "ex_d"


def test_writing_twice_gives_identical_bytes_even_at_another_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_reports(EXCEPTIONS, SUMMARY, Storage(str(tmp_path / "one")))
    later = time.time() + 86400 * 3
    monkeypatch.setattr(time, "time", lambda: later)  # zip entries would carry "now"
    second = write_reports(list(reversed(EXCEPTIONS)), SUMMARY, Storage(str(tmp_path / "two")))
    for name in first:
        assert Path(first[name]).read_bytes() == Path(second[name]).read_bytes(), name


# --- The workbook ---------------------------------------------------------------------------


def test_workbook_has_summary_then_one_sheet_per_kind_present_in_model_order() -> None:
    wb = _wb()
    assert wb.sheetnames == [
        "Summary",
        "missing_in_gateway",
        "amount_mismatch",
        "fee_variance",
        "suggested_match",
    ]
    with zipfile.ZipFile(io.BytesIO(build_workbook(EXCEPTIONS, SUMMARY))) as z:
        core = z.read("docProps/core.xml").decode()
        stamps = {info.date_time for info in z.infolist()}
    # Where the xsi namespace is declared depends on the XML writer (lxml or not): compare
    # the parsed values, not the text.
    ns = {"dcterms": "http://purl.org/dc/terms/"}
    props = ElementTree.fromstring(core)
    assert props.findtext("dcterms:created", namespaces=ns) == "2026-03-31T00:00:00Z"
    assert props.findtext("dcterms:modified", namespaces=ns) == "2026-03-31T00:00:00Z"
    assert stamps == {(2026, 3, 31, 0, 0, 0)}


def test_exception_sheets_have_note_after_status_frozen_header_filter_and_validation() -> None:
    wb = _wb()
    assert SHEET_COLUMNS.index("note") == SHEET_COLUMNS.index("status") + 1
    added = ("note", "age_bucket", "amount", "status_as_written")
    assert [c for c in SHEET_COLUMNS if c not in added] == list(EXCEPTION_COLUMNS)
    ws = _sheet(wb, "amount_mismatch")
    assert [c.value for c in ws[1]] == list(SHEET_COLUMNS)
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:R3"
    assert [ws.cell(r, 1).value for r in (2, 3)] == ["ex_a", "ex_b"]  # by gateway, then id
    (dv,) = ws.data_validations.dataValidation
    assert dv.type == "list"
    assert dv.formula1 == '"open,resolved,waived"'
    assert str(dv.sqref) == "O2:O3"
    assert SHEET_COLUMNS[14] == "status"
    assert ws.cell(2, _col("note")).value is None  # empty, for the accountant
    assert ws.column_dimensions["Q"].width == 80  # explanation gets room
    assert ws.protection.sheet is False
    assert ws.column_dimensions["R"].hidden is True  # status_as_written
    assert [ws.cell(r, 18).value for r in (2, 3)] == ["open", "open"]


def test_amounts_are_exact_and_shown_in_each_currencys_decimals() -> None:
    wb = _wb()
    cases = [
        ("amount_mismatch", "ex_a", 1500, Decimal("1500"), "#,##0"),
        ("amount_mismatch", "ex_b", 123456, Decimal("1234.56"), "#,##0.00"),
        ("missing_in_gateway", "ex_c", 1234567, Decimal("1234.567"), "#,##0.000"),
        ("fee_variance", "ex_d", 5, Decimal("0.05"), "#,##0.00"),
    ]
    for sheet, eid, minor, major, fmt in cases:
        ws = _sheet(wb, sheet)
        row = _row_of(ws, eid)
        assert ws.cell(row, _col("amount_minor")).value == minor
        amount = ws.cell(row, _col("amount"))
        assert Decimal(str(amount.value)) == major
        assert amount.number_format == fmt
    # the XML holds the exact decimal text, not a binary float's expansion
    with zipfile.ZipFile(io.BytesIO(build_workbook(EXCEPTIONS, SUMMARY))) as z:
        xml = b"".join(z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/"))
    assert b"<v>1234.567</v>" in xml
    assert b"<v>0.05</v>" in xml
    # no currency: no invented decimals, the amount stays in minor units only
    ws = _sheet(wb, "suggested_match")
    assert ws.cell(2, _col("amount")).value is None
    assert ws.cell(2, _col("amount_minor")).value == 77


def test_exception_sheets_show_age_bucket_dates_and_keep_formula_like_text_as_text() -> None:
    wb = _wb()
    assert _sheet(wb, "amount_mismatch").cell(3, _col("age_bucket")).value == "0-7"
    assert _sheet(wb, "amount_mismatch").cell(2, _col("age_bucket")).value == "8-30"
    assert _sheet(wb, "missing_in_gateway").cell(2, _col("age_bucket")).value == "31-60"
    fee = _sheet(wb, "fee_variance")
    assert fee.cell(2, _col("age_bucket")).value == "60+"
    assert fee.cell(2, _col("first_seen")).value == datetime(2025, 12, 31)
    assert fee.cell(2, _col("first_seen")).number_format == "yyyy-mm-dd"
    explanation = fee.cell(2, _col("explanation"))
    assert explanation.value == "=1+1"
    assert explanation.data_type == "s"  # not a formula Excel would evaluate


def test_summary_sheet_shows_each_gateway_currency_with_money_formats_and_aging() -> None:
    ws = _sheet(_wb(), "Summary")
    cells = {c.value: c for row in ws.iter_rows() for c in row if isinstance(c.value, str)}
    assert ws.cell(cells["As of"].row, 2).value == datetime(2026, 3, 31)
    assert ws.cell(cells["From"].row, 2).value == datetime(2026, 3, 1)
    head_row = cells["gateway"].row
    head = [c.value for c in ws[head_row] if c.value is not None]
    assert head == [
        "gateway",
        "currency",
        "payments",
        "settlement lines",
        "matched payments",
        "pending payments",
        "exception payments",
        "billed",
        "settled",
        "matched",
        "pending",
        "in exceptions",
        "missing_in_gateway",
        "amount_mismatch",
        "fee_variance",
        "match rate",
        "payouts",
        "payouts tied out",
    ]
    rows = {
        (ws.cell(r, 1).value, ws.cell(r, 2).value): r
        for r in (head_row + 1, head_row + 2, head_row + 3)
    }
    billed, rate, by_kind = head.index("billed") + 1, head.index("match rate") + 1, 14
    jpy, kwd, usd = rows[("adyen", "JPY")], rows[("adyen", "KWD")], rows[("stripe", "USD")]
    assert ws.cell(jpy, billed).number_format == "#,##0"
    assert ws.cell(usd, billed).number_format == "#,##0.00"
    assert ws.cell(kwd, billed).number_format == "#,##0.000"
    assert Decimal(str(ws.cell(kwd, billed).value)) == Decimal("1234.567")
    assert Decimal(str(ws.cell(usd, billed + 1).value)) == Decimal("8765.49")
    assert ws.cell(usd, rate).value == pytest.approx(0.75)
    assert ws.cell(usd, rate).number_format == "0.0%"
    assert ws.cell(jpy, by_kind).value == 1
    assert ws.cell(usd, by_kind).value == 1
    assert ws.cell(kwd, by_kind).value == 0
    aging = cells["age (days)"].row
    assert [(ws.cell(aging + i, 1).value, ws.cell(aging + i, 2).value) for i in (1, 2, 3, 4)] == [
        ("0-7", 1),
        ("8-30", 1),
        ("31-60", 1),
        ("60+", 1),
    ]


def test_long_unknown_kinds_get_unique_sheet_names_within_excels_limit() -> None:
    long_a = "a_kind_name_far_longer_than_excel_allows_one"
    long_b = "a_kind_name_far_longer_than_excel_allows_two"
    data = build_workbook([_ex("x1", long_a, "USD", 1, 1), _ex("x2", long_b, "USD", 1, 1)], SUMMARY)
    names = _wb(data).sheetnames
    assert names[1:] == [long_a[:31], long_a[:29] + "~2"]
    assert all(len(n) <= 31 for n in names)


# --- Reading edits back -----------------------------------------------------------------------


def test_read_status_updates_returns_every_row_with_the_accountants_edits() -> None:
    wb = _wb()
    ws = _sheet(wb, "amount_mismatch")
    ws.cell(2, _col("status")).value = "Resolved "  # typed by hand, case and space ignored
    ws.cell(2, _col("note")).value = "refund posted 2026-04-02"
    fee = _sheet(wb, "fee_variance")
    fee.cell(2, _col("status")).value = "waived"
    fee.cell(2, _col("note")).value = "below threshold"
    wb.create_sheet("my notes")["A1"] = "call the bank"  # an accountant's own sheet
    ws.append([None] * len(SHEET_COLUMNS))  # a trailing empty row is no problem

    updates = read_status_updates(_save(wb), "report.xlsx")

    assert updates == [
        StatusUpdate("ex_c", "open", "", "missing_in_gateway", 2),
        StatusUpdate("ex_a", "resolved", "refund posted 2026-04-02", "amount_mismatch", 2),
        StatusUpdate("ex_b", "open", "", "amount_mismatch", 3),
        StatusUpdate("ex_d", "waived", "below threshold", "fee_variance", 2),
        StatusUpdate("ex_e", "resolved", "", "suggested_match", 2),
    ]


def test_read_status_updates_unchanged_report_reads_back_as_written() -> None:
    updates = read_status_updates(build_workbook(EXCEPTIONS[:4], SUMMARY), "r.xlsx")
    assert {(u.exception_id, u.status, u.note) for u in updates} == {
        (e.exception_id, e.status, "") for e in EXCEPTIONS[:4]
    }


def _edit_unknown_status(wb: Workbook) -> None:
    _sheet(wb, "amount_mismatch").cell(3, _col("status")).value = "done"


def _edit_missing_id(wb: Workbook) -> None:
    _sheet(wb, "fee_variance").cell(2, 1).value = None


def _edit_resolved_without_note(wb: Workbook) -> None:
    _sheet(wb, "missing_in_gateway").cell(2, _col("status")).value = "resolved"


def _edit_conflicting_duplicate(wb: Workbook) -> None:
    ws = _sheet(wb, "fee_variance")
    ws.cell(3, 1).value = "ex_a"  # also on amount_mismatch row 2, there "open"
    ws.cell(3, _col("status")).value = "waived"
    ws.cell(3, _col("note")).value = "duplicate of the refund"


def _edit_waive_closed_exception_without_note(wb: Workbook) -> None:
    _sheet(wb, "suggested_match").cell(2, _col("status")).value = "waived"


def _edit_header_without_note(wb: Workbook) -> None:
    _sheet(wb, "fee_variance").cell(1, _col("note")).value = "comment"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            _edit_unknown_status,
            "report.xlsx sheet amount_mismatch row 3: unknown status 'done' "
            "(use one of open, resolved, waived)",
        ),
        (
            _edit_missing_id,
            "report.xlsx sheet fee_variance row 2: missing exception_id "
            "(copy it back from exceptions.csv or delete the row)",
        ),
        (
            _edit_resolved_without_note,
            "report.xlsx sheet missing_in_gateway row 2: resolved without a note "
            "(say in the note why it is resolved)",
        ),
        (
            _edit_conflicting_duplicate,
            "report.xlsx sheet fee_variance row 3: exception ex_a is waived here but open on "
            "sheet amount_mismatch row 2 (give it one status)",
        ),
        (
            _edit_waive_closed_exception_without_note,
            "report.xlsx sheet suggested_match row 2: waived without a note "
            "(say in the note why it is waived)",
        ),
        (
            _edit_header_without_note,
            "report.xlsx sheet fee_variance row 1: header lacks note "
            "(restore the header row from the report tieout wrote)",
        ),
    ],
)
def test_each_invalid_edit_is_reported_with_its_sheet_and_row(
    edit: Callable[[Workbook], None], expected: str
) -> None:
    wb = _wb()
    edit(wb)
    with pytest.raises(InputDataError) as info:
        read_status_updates(_save(wb), "report.xlsx")
    lines = str(info.value).splitlines()
    assert lines[1:] == [expected]


def test_all_problems_are_listed_in_one_error() -> None:
    wb = _wb()
    _edit_unknown_status(wb)
    _edit_missing_id(wb)
    _edit_resolved_without_note(wb)
    with pytest.raises(InputDataError) as info:
        read_status_updates(_save(wb), "edited.xlsx")
    message = str(info.value)
    assert message.startswith("edited.xlsx: 3 problems")
    assert "edited.xlsx sheet missing_in_gateway row 2: resolved without a note" in message
    assert "edited.xlsx sheet amount_mismatch row 3: unknown status 'done'" in message
    assert "edited.xlsx sheet fee_variance row 2: missing exception_id" in message


@pytest.mark.parametrize(
    "data",
    [
        b"exception_id,status\nex_a,open\n",
        b"",
        b"PK\x05\x06" + b"\x00" * 18,
    ],  # csv, empty, empty zip
)
def test_a_file_that_is_not_a_workbook_is_an_input_error_naming_it(data: bytes) -> None:
    with pytest.raises(InputDataError, match=r"^statuses\.csv: not an Excel workbook"):
        read_status_updates(data, "statuses.csv")


# --- HTML ----------------------------------------------------------------------------------


def test_html_is_self_contained_with_three_svg_charts() -> None:
    page = render_html(EXCEPTIONS, SUMMARY)
    assert page.count("<svg") == 3
    assert "<script" not in page
    assert "src=" not in page
    assert "href=" not in page
    assert "@import" not in page
    # match rate: days 1-2 joined, day 3 (no payments) breaks the line, 3 dots in all
    assert page.count('class="match-rate"') == 1
    assert page.count("<circle") == 3
    assert "2026-03-04: 100.0%" in page
    # bars: 3 kinds + 4 age buckets
    assert page.count('class="bar"') == 7


def test_html_escapes_text_and_formats_amounts_in_currency_decimals() -> None:
    page = render_html(EXCEPTIONS, SUMMARY)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "1234.567 KWD" in page  # open exception and billed KWD
    assert "1500 JPY" in page
    assert "1234.56 USD" in page
    assert "0.05 USD" in page
    assert "8765.49 USD" in page  # settled, in the summary table
    assert "75.0%" in page
    # ex_e is resolved: not in the open table
    assert "ex_e" not in page


def test_html_lists_first_200_open_exceptions_and_says_how_many_more() -> None:
    many = [_ex(f"ex_{i:04d}", "amount_mismatch", "USD", i, i % 90) for i in range(205)]
    page = render_html(many, SUMMARY)
    assert page.count('<td class="id">') == 200
    assert "Showing the first 200 of 205; 5 more are in report.xlsx" in page
    few = render_html(many[:3], SUMMARY)
    assert few.count('<td class="id">') == 3
    assert "more are in" not in few


def test_row_numbers_in_errors_are_excels_even_after_a_blanked_row() -> None:
    wb = _wb()
    ws = _sheet(wb, "amount_mismatch")
    for col in range(1, len(SHEET_COLUMNS) + 1):
        ws.cell(2, col).value = None  # an accountant cleared row 2
    ws.cell(3, _col("status")).value = "bogus"
    with pytest.raises(InputDataError, match="sheet amount_mismatch row 3: unknown status 'bogus'"):
        read_status_updates(_save(wb), "report.xlsx")
