"""`tieout demo` and `tieout reconcile` end to end: the whole chain through Dagster, reports on
disk, exceptions equal to the demo's answer key, re-runs that change nothing, and the
nightly_close schedule."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from tieout.cli import main
from tieout.reconcile.model import EXCEPTION_COLUMNS

START = date(2026, 3, 1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TIEOUT_SETTINGS", "DAGSTER_HOME", "BILLING_DATABASE_URL", "TIEOUT_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def keyed(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    """What identifies an exception of each kind, as the answer key names it."""
    out = set()
    for r in rows:
        kind = r["kind"]
        line = r.get("settlement_line_id") or r.get("line_id") or ""
        key = {
            "missing_in_gateway": r["payment_id"],
            "missing_in_billing": line,
            "duplicate_settlement": line,
            "fee_variance": line,
            "amount_mismatch": f"{r['payment_id']}/{line}",
            "payout_mismatch": r["batch_id"],
            "invoice_payment_mismatch": r["invoice_id"],
        }.get(kind, json.dumps(r, sort_keys=True))
        out.add((kind, key))
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_demo_runs_the_whole_chain_and_finds_exactly_the_answer_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("demo", "--customers", "60")
    assert result.exit_code == 0, result.output
    demo = tmp_path / "data" / "demo"
    reports = demo / "reports"
    for name in ("exceptions.csv", "summary.json", "report.xlsx", "report.html"):
        assert (reports / name).is_file(), name
    assert str(reports / "report.html") in result.stdout
    assert "dagster dev -m tieout.definitions" in result.stdout
    found = read_csv(reports / "exceptions.csv")
    assert tuple(found[0]) == EXCEPTION_COLUMNS
    answers = read_csv(demo / "settlements" / "answer_key.csv")
    assert keyed(found) == keyed(answers)
    assert all(r["status"] == "open" for r in found)
    summary = json.loads((reports / "summary.json").read_text(encoding="utf-8"))
    assert summary["conservation_ok"] is True
    # The validation summary: every upstream asset's checks and the reconciliation's own.
    checked = {c["dataset"] for c in summary["checks"]}
    assert {"billing/payments", "billing/invoices", "settlements/lines", "recon/exceptions"} <= (
        checked
    )
    failed = {c["name"] for c in summary["checks"] if not c["passed"]}
    assert failed == {"settlement_payouts_tie_out", "recon_match_rate_target"}
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert "Data checks (" in page
    assert "settlement_payouts_tie_out" in page
    assert sum(summary["exceptions_by_kind"].values()) == len(found)
    # The run is recorded in the demo's own Dagster instance, which the UI command points at.
    assert "DAGSTER_HOME" not in os.environ  # the demo does not leak its instance
    monkeypatch.setenv("DAGSTER_HOME", str(demo / "dagster_home"))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert [r.job_name for r in runs] == [
            "revenue_load", "revenue_schedule", "erp_posting", "nightly_close",
        ]  # fmt: skip
        assert all(r.is_success for r in runs)
    # ... and then posted its journals to an in-process NetSuite sandbox, plan first.
    assert "ERP plan 2026-" in result.stdout
    created = int(re.search(r"for netsuite: (\d+) to create", result.stdout).group(1))  # type: ignore[union-attr]
    assert created > 0
    assert f"NetSuite sandbox now holds {created} journal entr(ies)" in result.stdout
    assert "every one balanced" in result.stdout
    assert f"posting ledger (state database): {created} confirmed" in result.stdout
    # ... and built the revenue schedules and loaded Salesforce, plan first.
    loaded = int(re.search(r"for salesforce: (\d+) to create", result.stdout).group(1))  # type: ignore[union-attr]
    assert f"posting ledger (state database): {loaded} confirmed" in result.stdout
    held = re.search(
        r"Salesforce sandbox now holds (\d+) Account, (\d+) Tieout_Invoice__c, "
        r"(\d+) Tieout_Payment__c, (\d+) Tieout_Revenue_Schedule__c",
        result.stdout,
    )
    assert held is not None
    assert sum(map(int, held.groups())) == loaded
    assert summary["revenue_waterfall"]
    assert "Revenue waterfall" in page


def test_reconcile_twice_keeps_resolutions_and_ids(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        "[billing]\n"
        'url = "sqlite:///billing.db"\n'
        f"partitions_start = {START.isoformat()}\n"
        '[lake]\nroot = "lake"\n'
        '[settlements]\npath = "settle"\n'
        '[state]\nurl = "sqlite:///state.db"\n'
        '[reports]\npath = "reports"\n'
        # a small demo with its injected discrepancies matches well under the 95% default
        "[checks]\nmin_match_rate = 0.5\nwarn_match_rate = 0.9\n",
        encoding="utf-8",
    )
    made = invoke(
        "demo-data",
        "--billing-url",
        "sqlite:///billing.db",
        "--start",
        START.isoformat(),
        "--days",
        "20",
        "--customers",
        "60",
        "--settlements",
        "settle",
    )
    assert made.exit_code == 0, made.output
    args = ("reconcile", "--config", str(settings), "--start", "2026-03-01", "--end", "2026-03-20")
    first = invoke(*args, "--out", "out1")
    assert first.exit_code == 0, first.output
    assert "recon/exceptions:" in first.stdout
    rows = read_csv(tmp_path / "out1" / "exceptions.csv")
    assert rows
    target = rows[0]["exception_id"]
    resolved = invoke(
        "--settings",
        str(settings),
        "exceptions",
        "resolve",
        target,
        "--note",
        "checked",
        "--by",
        "ann",
    )
    assert resolved.exit_code == 0, resolved.output
    files = sorted((tmp_path / "lake" / "recon").rglob("*.parquet"))
    first_files = {f: f.read_bytes() for f in files}
    second = invoke(*args, "--out", "out2")
    assert second.exit_code == 0, second.output
    # The lake keeps plain text (the engine's tables hold labels dictionary-encoded), each
    # day's file ordered by its key, and the same run writes the same bytes again.
    assert {d.name for d in (tmp_path / "lake" / "recon").iterdir()} == {
        "matches", "payments", "lines"
    }  # fmt: skip
    for f in files:
        table = pq.read_table(f)
        assert not any(pa.types.is_dictionary(field.type) for field in table.schema), f
        key = "line_id" if f.parts[-3] == "lines" else "payment_id"
        ids = table.column(key).to_pylist()
        assert ids == sorted(ids), f
    assert {f: f.read_bytes() for f in files} == first_files
    again = read_csv(tmp_path / "out2" / "exceptions.csv")
    assert [r["exception_id"] for r in again] == [r["exception_id"] for r in rows]
    status = {r["exception_id"]: r["status"] for r in again}
    assert status[target] == "resolved"  # the accountant's resolution survives the re-run
    assert all(s == "open" for x, s in status.items() if x != target)
    # Only one gateway: the other gateways' exceptions are neither reported nor auto-resolved.
    only = invoke(*args, "--out", "out3", "--gateway", "stripe")
    assert only.exit_code == 0, only.output
    stripe_rows = read_csv(tmp_path / "out3" / "exceptions.csv")
    assert {r["gateway"] for r in stripe_rows} <= {"stripe"}
    listed = invoke("--settings", str(settings), "exceptions", "list", "--status", "open")
    assert len([r for r in again if r["status"] == "open"]) <= listed.stdout.count("\n")
    workbook = openpyxl.load_workbook(tmp_path / "out2" / "report.xlsx")
    assert workbook.sheetnames[0] == "Summary"


def test_reconcile_with_bad_settings_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[reconciliation]\nsettlement_window_days = -3\n", encoding="utf-8")
    result = invoke(
        "reconcile", "--config", str(bad), "--start", "2026-03-01", "--end", "2026-03-02"
    )
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "reconciliation.settlement_window_days" in errors[0]


def test_nightly_close_schedule_closes_the_previous_business_day(tmp_path: Path) -> None:
    from tieout.definitions import build_definitions
    from tieout.settings import settings_from_mapping

    settings = settings_from_mapping(
        {
            "reconciliation": {
                "finance_timezone": "America/New_York",
                "nightly_close_cron": "15 3 * * *",
            }
        },
        tmp_path,
        "test",
    )
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("nightly_close_schedule")
    assert schedule.cron_schedule == "15 3 * * *"
    assert schedule.execution_timezone == "America/New_York"
    tick = datetime(2026, 11, 25, 8, 15, tzinfo=UTC)  # 03:15 in New York
    repository = defs.get_repository_def()
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=repository
    ) as context:
        request = schedule.evaluate_tick(context).run_requests
    assert request is not None
    assert [r.partition_key for r in request] == ["2026-11-24"]


def test_reconcile_stops_with_exit_2_when_a_blocking_check_fails(tmp_path: Path) -> None:
    import sqlalchemy as sa

    settings = tmp_path / "settings.toml"
    settings.write_text(
        "[billing]\n"
        'url = "sqlite:///billing.db"\n'
        f"partitions_start = {START.isoformat()}\n"
        '[lake]\nroot = "lake"\n'
        '[settlements]\npath = "settle"\n'
        '[state]\nurl = "sqlite:///state.db"\n'
        '[reports]\npath = "reports"\n',
        encoding="utf-8",
    )
    made = invoke(
        "demo-data", "--billing-url", "sqlite:///billing.db", "--start", START.isoformat(),
        "--days", "10", "--customers", "40", "--settlements", "settle",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE invoices SET total_minor = total_minor + 1 "
                "WHERE substr(updated_at, 1, 10) = '2026-03-06'"
            )
        )
    engine.dispose()
    result = invoke(
        "reconcile", "--config", str(settings), "--start", "2026-03-06", "--end", "2026-03-06"
    )
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "billing/invoices invoices_expectations" in errors[0]
    assert "invoices_between_total_minus_parts" in errors[0]
    assert not (tmp_path / "reports" / "exceptions.csv").exists()
