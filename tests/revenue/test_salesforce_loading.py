"""Revenue loading end to end over reconciled demo books, through the real simple-salesforce
client against the Salesforce sandbox (TLS, REST, Bulk API 2.0): plan writes nothing, apply
loads every record once and agrees with billing to the cent, re-runs send nothing, Bulk
partial failures are resubmitted, throttling and outages are retried, an expired session
logs in again, duplicate external ids and unknown fields are reported by name.

The settings are the demo's own `[revenue.salesforce]` (tieout.demo_revenue).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from tests.books import make_books
from tieout.cli import main
from tieout.connectors.lake import Lake
from tieout.connectors.ledger import CONFIRMED, PostingLedger
from tieout.demo_revenue import salesforce_sandbox, salesforce_toml
from tieout.money import minor_to_decimal
from tieout.revenue.loading import read_billing
from tieout.revenue.schedules import build_schedules
from tieout.sandbox.salesforce import FaultKind, Operation, SalesforceSandbox
from tieout.settings import load_settings

START = date(2026, 3, 2)
END = START + timedelta(days=11)
PERIOD = ("--start", START.isoformat(), "--end", END.isoformat())
OBJECTS = ("Account", "Tieout_Invoice__c", "Tieout_Payment__c", "Tieout_Revenue_Schedule__c")
WRITES = {Operation.COLLECTIONS_UPSERT, Operation.BULK_CREATE_JOB, Operation.BULK_UPLOAD}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_books(tmp_path_factory.mktemp("books"), START, 12, salesforce_toml())


@pytest.fixture
def settings_file(books: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "books"
    shutil.copytree(books.parent, copy)
    path = copy / books.name
    # The section is last in the file: more of its keys can simply follow.
    with path.open("a", encoding="utf-8") as f:
        f.write("backoff_seconds = 0.01\nbulk_poll_seconds = 0.05\n")
    return path


def set_options(settings_file: Path, **options: Any) -> None:
    with settings_file.open("a", encoding="utf-8") as f:
        for k, v in options.items():
            f.write(f"{k} = {json.dumps(v)}\n")


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with salesforce_sandbox() as sb:
        yield sb


def revenue(settings_file: Path, *args: str) -> Result:
    return invoke("--settings", str(settings_file), "revenue", *args)


def writes(sb: SalesforceSandbox) -> list[Any]:
    return [r for r in sb.request_log if r.operation in WRITES]


def counts(output: str) -> dict[str, int]:
    m = re.search(r"(\d+) to create, (\d+) to update, (\d+) to retry, (\d+) unchanged", output)
    assert m, output
    return dict(zip(("create", "update", "retry", "unchanged"), map(int, m.groups()), strict=True))


def held(sb: SalesforceSandbox) -> dict[str, int]:
    return {o: sb.record_count(o) for o in OBJECTS}


def doubles(sb: SalesforceSandbox) -> list[str]:
    """External ids held by more than one record, across the objects."""
    out = []
    for sobject, field in (("Account", "Tieout_Customer_Id__c"),
                           *((o, "Tieout_External_Id__c") for o in OBJECTS[1:])):  # fmt: skip
        seen = Counter(r.get(field) for r in sb.all_records(sobject))
        out += [f"{sobject}/{k}" for k, n in seen.items() if n > 1]
    return out


def test_plan_writes_nothing_then_apply_loads_everything_once_and_to_the_cent(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    plan_path = settings_file.parent / "plan.json"
    planned = revenue(settings_file, "plan", *PERIOD, "--out", str(plan_path))
    assert planned.exit_code == 0, planned.output + planned.stderr
    c = counts(planned.output)
    assert c["create"] > 0
    assert c["update"] == c["retry"] == c["unchanged"] == 0
    assert writes(sandbox) == []  # planning only logs in and describes
    plan = json.loads(plan_path.read_text())
    wanted = Counter(e["entry"]["sobject"] for e in plan["entries"])
    assert set(wanted) == set(OBJECTS)

    applied = revenue(settings_file, "apply", "--plan", str(plan_path))
    assert applied.exit_code == 0, applied.output + applied.stderr
    assert f"loaded: {c['create']} confirmed, 0 already loaded, 0 refused" in applied.output
    assert held(sandbox) == dict(wanted)
    assert doubles(sandbox) == []

    # Schedules in Salesforce agree with billing to the cent, row by row.
    settings = load_settings(settings_file)
    billing = read_billing(settings, Lake(settings.lake_root()), END)
    rows = build_schedules(billing.invoices, billing.invoice_lines, billing.credit_notes).rows
    first, last = START.replace(day=1), END.replace(day=1)
    expected = {r.schedule_id: minor_to_decimal(r.amount_minor, r.currency)
                for r in rows if first <= r.billing_month <= last}  # fmt: skip
    loaded = sandbox.records("Tieout_Revenue_Schedule__c", "Tieout_External_Id__c")
    got = {k: Decimal(v["Tieout_Recognized_Amount__c"]) for k, v in loaded.items()}
    assert got == expected
    # ... and each invoice's schedule rows add up to its revenue lines less discounts.
    by_invoice: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        if r.source == "invoice" and first <= r.billing_month <= last:
            by_invoice[r.invoice_id] += minor_to_decimal(r.amount_minor, r.currency)
    lines: dict[str, int] = defaultdict(int)
    for line in billing.invoice_lines:
        if line["kind"] != "tax" and line["invoice_id"] in by_invoice:
            lines[line["invoice_id"]] += int(line["amount_minor"])
    currency = {i["invoice_id"]: i["currency"] for i in billing.invoices}
    assert by_invoice == {i: minor_to_decimal(n, currency[i]) for i, n in lines.items()}

    # Again: nothing to do, nothing sent.
    sandbox.reset_stats()
    again = revenue(settings_file, "plan", *PERIOD)
    assert counts(again.output) == {"create": 0, "update": 0, "retry": 0,
                                    "unchanged": c["create"]}  # fmt: skip
    reapplied = revenue(settings_file, "apply", *PERIOD)
    assert reapplied.exit_code == 0, reapplied.output + reapplied.stderr
    assert writes(sandbox) == []
    assert held(sandbox) == dict(wanted)


def test_bulk_jobs_with_failed_and_unprocessed_rows_are_resubmitted(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    set_options(settings_file, collections_threshold=5)  # all but the smallest go Bulk
    sandbox.inject(FaultKind.BULK_PARTIAL_FAILURE, every=3, sobject="Tieout_Revenue_Schedule__c")
    sandbox.inject(FaultKind.BULK_UNPROCESSED, sobject="Tieout_Payment__c")
    applied = revenue(settings_file, "apply", *PERIOD)
    assert applied.exit_code == 0, applied.output + applied.stderr
    jobs = Counter(j["object"] for j in sandbox.jobs())
    assert jobs["Tieout_Revenue_Schedule__c"] >= 2  # the failed third went again
    assert jobs["Tieout_Payment__c"] >= 2  # the unprocessed half went again
    assert "Bulk job(s)" in applied.output
    assert doubles(sandbox) == []
    c = counts(revenue(settings_file, "plan", *PERIOD).output)
    assert c["create"] == c["retry"] == c["update"] == 0
    assert c["unchanged"] == sum(held(sandbox).values())


def test_throttling_outages_and_an_expired_session_are_retried(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    planned = revenue(settings_file, "plan", *PERIOD, "--out", str(settings_file.parent / "p.json"))
    assert planned.exit_code == 0
    per = Counter(
        e["entry"]["sobject"]
        for e in json.loads((settings_file.parent / "p.json").read_text())["entries"]
    )
    # the smallest object through Collections, the largest through Bulk
    set_options(settings_file, collections_threshold=min(per.values()), concurrency=1)
    assert max(per.values()) > min(per.values())
    limit = sandbox.inject(FaultKind.REQUEST_LIMIT_EXCEEDED, times=2,
                           operation=Operation.COLLECTIONS_UPSERT)  # fmt: skip
    outage = sandbox.inject(FaultKind.SERVICE_UNAVAILABLE, times=2,
                            operation=Operation.COLLECTIONS_UPSERT)  # fmt: skip
    expiry = sandbox.inject(FaultKind.SESSION_EXPIRED, times=1, operation=Operation.BULK_CREATE_JOB)
    before = sandbox.counters.get("logins", 0)
    applied = revenue(settings_file, "apply", *PERIOD)
    assert applied.exit_code == 0, applied.output + applied.stderr
    assert (limit.triggered, outage.triggered, expiry.triggered) == (2, 2, 1)
    assert sandbox.counters["logins"] - before >= 2  # the first login and one more
    assert doubles(sandbox) == []
    settings = load_settings(settings_file)
    ledger = PostingLedger(settings.state_url(), settings.state.schema_)
    try:
        statuses = {r.status for r in ledger.rows("salesforce").values()}
    finally:
        ledger.dispose()
    assert statuses == {CONFIRMED}


def test_a_duplicate_external_id_is_refused_by_key_and_the_rest_loads(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    planned = revenue(settings_file, "plan", *PERIOD, "--out", str(settings_file.parent / "p.json"))
    plan = json.loads((settings_file.parent / "p.json").read_text())
    invoice = next(e["entry"]["key"] for e in plan["entries"]
                   if e["entry"]["sobject"] == "Tieout_Invoice__c")  # fmt: skip
    assert planned.exit_code == 0
    twin = {"Tieout_External_Id__c": invoice, "CurrencyIsoCode": "USD"}
    sandbox.seed("Tieout_Invoice__c", [twin, dict(twin)])
    applied = revenue(settings_file, "apply", *PERIOD)
    assert applied.exit_code == 1
    assert f"refused Tieout_Invoice__c/{invoice}" in applied.stderr
    assert "DUPLICATE" in applied.stderr.upper()
    refused = set(re.findall(r"refused (\S+): ", applied.stderr))
    # The invoice, and the payments and schedule rows that name it as their parent: nothing
    # else. Each is reported by object and key.
    children = {
        f"{e['entry']['sobject']}/{e['entry']['key']}"
        for e in plan["entries"]
        if e["entry"]["values"].get("Tieout_Invoice__r.Tieout_External_Id__c") == invoice
    }
    assert children
    assert refused == {f"Tieout_Invoice__c/{invoice}", *children}
    assert f"{len(refused)} refused" in applied.output
    # Everything else landed (the twins are the two seeded records).
    assert sum(held(sandbox).values()) == len(plan["entries"]) - len(refused) + 2
    assert doubles(sandbox) == [f"Tieout_Invoice__c/{invoice}"]


def test_an_unknown_field_fails_at_plan_time_naming_object_and_field(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    with settings_file.open("a", encoding="utf-8") as f:
        f.write(
            "[revenue.salesforce.objects.invoices]\n"
            'name = "Tieout_Invoice__c"\nexternal_id_field = "Tieout_External_Id__c"\n'
            'fields = { balance = "Tieout_Open_Amount__c" }\n'
        )
    planned = revenue(settings_file, "plan", *PERIOD)
    assert planned.exit_code == 2
    assert "Tieout_Invoice__c has no field Tieout_Open_Amount__c" in planned.output
    assert "mapped from balance" in planned.output
    assert writes(sandbox) == []


def test_the_asset_plans_on_dry_run_and_loads_without_it(
    settings_file: Path, sandbox: SalesforceSandbox
) -> None:
    from tieout.definitions import build_definitions

    settings = load_settings(settings_file)
    job = build_definitions(settings).resolve_job_def("revenue_load")
    tags = {
        "dagster/asset_partition_range_start": START.isoformat(),
        "dagster/asset_partition_range_end": END.isoformat(),
    }

    def run(dry_run: bool) -> dict[str, Any]:
        result = job.execute_in_process(
            run_config={"ops": {"revenue__salesforce": {"config": {"dry_run": dry_run}}}},
            instance=dg.DagsterInstance.ephemeral(),
            tags=tags,
        )
        assert result.success
        mats = [e.step_materialization_data.materialization
                for e in result.get_asset_materialization_events()]  # fmt: skip
        first = next(m for m in mats if m.partition == START.isoformat())
        return {k: v.value for k, v in first.metadata.items()}

    dry = run(True)
    assert dry["dry_run"] is True
    created = dry["counts"]["create"]
    assert created > 0
    assert "| object | action | records |" in str(dry["plan"])
    assert writes(sandbox) == []
    wet = run(False)
    assert wet["confirmed"] == created
    assert sum(held(sandbox).values()) == created
    assert run(False)["counts"]["unchanged"] == created
