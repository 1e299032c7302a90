"""`tieout exceptions`: list, show, resolve, waive, reopen and import, against a SQLite state
database named by a settings file; user errors exit 2 with one `error:` line."""

from __future__ import annotations

from datetime import date
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook

from tieout.cli_exceptions import exceptions
from tieout.connectors.exception_store import ExceptionStore
from tieout.reconcile.model import ReconException, Summary, exception_id

AS_OF = date(2026, 3, 8)


def ex(
    key: str, amount: int, kind: str = "missing_in_gateway", gateway: str = "stripe"
) -> ReconException:
    return ReconException(
        exception_id=exception_id(kind, gateway, key),
        kind=kind,
        severity="high",
        gateway=gateway,
        currency="EUR" if gateway == "adyen" else "USD",
        amount_minor=amount,
        payment_id=key,
        invoice_id=None,
        settlement_line_id=None,
        batch_id=None,
        first_seen=AS_OF,
        last_seen=AS_OF,
        status="open",
        explanation=f"payment {key} is in billing but in no settlement report " * 3,
        day=date(2026, 3, 2),
    )


A = ex("pay_a", 1250)
B = ex("pay_b", 99_900, kind="fee_variance", gateway="adyen")
C = ex("pay_c", 7)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file whose state database already holds A, B and C (all open)."""
    for name in ("TIEOUT_SETTINGS", "TIEOUT_STATE_URL", "TIEOUT_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "login-name")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "dagster_project.toml"
    path.write_text('[state]\nurl = "sqlite:///state/state.db"\n', encoding="utf-8")
    store = ExceptionStore(f"sqlite:///{tmp_path / 'state' / 'state.db'}")
    try:
        store.record_run(
            "r1", date(2026, 3, 1), date(2026, 3, 7), AS_OF, ["stripe", "adyen"], [A, B, C]
        )
    finally:
        store.dispose()
    return path


def invoke(settings: Path, *args: str) -> Result:
    obj = {"settings_path": settings, "debug": False}
    return CliRunner().invoke(exceptions, list(args), obj=obj, catch_exceptions=False)


def stored(settings: Path) -> ExceptionStore:
    return ExceptionStore(f"sqlite:///{settings.parent / 'state' / 'state.db'}")


def status_of(settings: Path, e: ReconException) -> tuple[str, str | None, str | None]:
    store = stored(settings)
    try:
        got = store.get(e.exception_id)
    finally:
        store.dispose()
    assert got is not None
    return got.status, got.status_by, got.note


def one_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_list_shows_ids_amounts_and_filters(settings: Path) -> None:
    result = invoke(settings, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["id", "kind", "gateway", "amount", "status"]
    assert len(lines) == 2 + 3
    assert A.exception_id in result.stdout
    assert "12.50 USD" in result.stdout
    assert "999.00 EUR" in result.stdout
    assert "0.07 USD" in result.stdout
    assert "..." in result.stdout  # the long explanation is cut
    assert "3 exception(s)" in result.stderr
    adyen = invoke(settings, "list", "--gateway", "adyen", "--status", "open")
    assert B.exception_id in adyen.stdout
    assert A.exception_id not in adyen.stdout
    assert invoke(settings, "list", "--kind", "fee_variance").stdout.count("ex_") == 1
    assert invoke(settings, "list", "--status", "waived").stdout == ""
    assert invoke(settings, "list", "--status", "closed").exit_code == 2  # click's own check


def test_show_by_prefix_with_history(settings: Path) -> None:
    result = invoke(settings, "show", A.exception_id[:10])
    assert result.exit_code == 0, result.output
    assert A.exception_id in result.stdout
    assert "12.50 USD" in result.stdout
    assert "pay_a" in result.stdout
    assert "2026-03-02" in result.stdout  # its day
    assert "(new) -> open  by tieout run r1" in result.stdout
    assert "no exception has an id starting 'ex_ffff'" in one_error(
        invoke(settings, "show", "ex_ffff")
    )
    assert "more than one" in one_error(invoke(settings, "show", "ex_"))


def test_resolve_and_waive_need_a_note_and_record_who(
    settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "resolved needs a note" in one_error(invoke(settings, "resolve", A.exception_id))
    assert "waived needs a note" in one_error(
        invoke(settings, "waive", A.exception_id, "--note", " ")
    )
    assert status_of(settings, A)[0] == "open"

    result = invoke(settings, "resolve", A.exception_id[:12], "--note", "refund booked")
    assert result.exit_code == 0, result.output
    assert f"{A.exception_id} resolved by login-name (12.50 USD): refund booked" in result.stdout
    assert status_of(settings, A) == ("resolved", "login-name", "refund booked")

    monkeypatch.setenv("TIEOUT_USER", "alice")
    assert invoke(settings, "waive", B.exception_id, "--note", "fee agreed").exit_code == 0
    assert status_of(settings, B) == ("waived", "alice", "fee agreed")
    assert invoke(settings, "waive", C.exception_id, "--note", "tiny", "--by", "bob").exit_code == 0
    assert status_of(settings, C) == ("waived", "bob", "tiny")

    again = invoke(settings, "waive", C.exception_id, "--note", "tiny")
    assert "already waived" in again.stdout
    reopened = invoke(settings, "reopen", C.exception_id)
    assert reopened.exit_code == 0
    assert status_of(settings, C) == ("open", "alice", None)
    unknown = invoke(settings, "resolve", "ex_ffff", "--note", "x")
    assert "no exception has an id starting 'ex_ffff'" in one_error(unknown)
    history = invoke(settings, "show", C.exception_id).stdout
    assert "open -> waived  by bob: tiny" in history
    assert "waived -> open  by alice" in history


def _report(settings: Path) -> bytes:
    """The report.xlsx tieout writes for the stored exceptions."""
    from tieout.reports import build_workbook

    store = stored(settings)
    try:
        rows = store.list()
    finally:
        store.dispose()
    summary = Summary(
        run_id="r1",
        start=date(2026, 3, 1),
        end=date(2026, 3, 7),
        as_of=AS_OF,
        gateways=["stripe", "adyen"],
        rows=[],
        exceptions_by_kind={},
        exceptions_by_age={},
        daily=[],
        conservation_ok=True,
    )
    return build_workbook(rows, summary)


def _edit(data: bytes, edits: dict[str, tuple[str, str]], out: Path) -> Path:
    """Set (status, note) of the rows whose exception_id is a key, like an accountant would."""
    wb = load_workbook(BytesIO(data))
    for ws in wb.worksheets:
        header = [c.value for c in ws[1]]
        if "exception_id" not in header:
            continue
        id_col = header.index("exception_id")
        status_col, note_col = header.index("status"), header.index("note")
        for row in ws.iter_rows(min_row=2):
            key = str(row[id_col].value)
            if key in edits:
                row[status_col].value, row[note_col].value = edits.pop(key)
    assert not edits, f"not in the report: {edits}"
    wb.save(out)
    return out


def test_import_applies_an_edited_report(settings: Path) -> None:
    edited = _edit(
        _report(settings),
        {A.exception_id: ("Resolved", "booked in ERP"), B.exception_id: ("waived", "fee agreed")},
        settings.parent / "report.xlsx",
    )
    result = invoke(settings, "import", str(edited), "--by", "carol")
    assert result.exit_code == 0, result.output
    assert "2 exception(s) changed (3 row(s) read from report.xlsx)" in result.stdout
    assert status_of(settings, A) == ("resolved", "carol", "booked in ERP")
    assert status_of(settings, B) == ("waived", "carol", "fee agreed")
    assert status_of(settings, C)[0] == "open"
    # The same file again changes nothing.
    assert "0 exception(s) changed" in invoke(settings, "import", str(edited)).stdout


def test_import_is_all_or_nothing(settings: Path) -> None:
    report = _report(settings)
    edited = _edit(
        report,
        {A.exception_id: ("resolved", "booked"), B.exception_id: ("waived", "")},
        settings.parent / "bad.xlsx",
    )
    error = one_error(invoke(settings, "import", str(edited)))
    assert "waived without a note" in error
    assert status_of(settings, A)[0] == "open"  # the good row was not applied either

    # An id the store does not know (e.g. a report from another environment).
    wb = load_workbook(BytesIO(report))
    ws = next(ws for ws in wb.worksheets if ws.cell(1, 1).value == "exception_id")
    ws.cell(2, 1).value = "ex_00000000000000000000"
    status_col = [c.value for c in ws[1]].index("status") + 1
    ws.cell(3, status_col).value = "resolved"
    ws.cell(3, status_col + 1).value = "done"
    foreign = settings.parent / "foreign.xlsx"
    wb.save(foreign)
    error = one_error(invoke(settings, "import", str(foreign)))
    assert "sheet" in error
    assert "ex_00000000000000000000): unknown exception id" in error
    assert [status_of(settings, e)[0] for e in (A, B, C)] == ["open", "open", "open"]

    garbage = settings.parent / "garbage.xlsx"
    garbage.write_bytes(b"not a workbook")
    assert "not an Excel workbook" in one_error(invoke(settings, "import", str(garbage)))
    assert "cannot read the file" in one_error(invoke(settings, "import", "missing.xlsx"))
