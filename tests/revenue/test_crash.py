"""Kill the revenue loader (SIGKILL) at random points, run it again, and find exactly the
expected records in Salesforce: none missing, none doubled, every ledger row confirmed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

from click.testing import CliRunner

from tieout.cli import main
from tieout.connectors.ledger import CONFIRMED, PostingLedger
from tieout.demo_revenue import salesforce_sandbox, salesforce_toml
from tieout.erp.plan import make_record_plan, write_plan
from tieout.revenue.model import SalesforceRecord
from tieout.sandbox.salesforce import FaultKind, Operation, SalesforceSandbox

RUNS = 20
ACCOUNTS = 30
SCHEDULES = 150  # above the threshold below: these go through Bulk API 2.0
DAY = date(2026, 3, 31)


def records(run: int) -> list[SalesforceRecord]:
    accounts = [
        SalesforceRecord(
            "accounts",
            "Account",
            "Tieout_Customer_Id__c",
            f"r{run}-cus{i}",
            {
                "Name": f"Customer {run}.{i}",
                "CurrencyIsoCode": "USD",
                "Tieout_Open_Balance__c": f"{i}.{run:02d}",
            },
        )
        for i in range(ACCOUNTS)
    ]
    schedules = [
        SalesforceRecord(
            "schedules",
            "Tieout_Revenue_Schedule__c",
            "Tieout_External_Id__c",
            f"rs-r{run}-{i}",
            {
                "Tieout_Account__r.Tieout_Customer_Id__c": f"r{run}-cus{i % ACCOUNTS}",
                "Tieout_Recognized_Amount__c": f"{i}.25",
                "CurrencyIsoCode": "USD",
                "Tieout_Period_Start__c": "2026-03-01",
            },
        )
        for i in range(SCHEDULES)
    ]
    return accounts + schedules


def write_settings(tmp: Path) -> Path:
    lines = ["[state]", f'url = "sqlite:///{tmp / "state.db"}"', *salesforce_toml(),
             "concurrency = 2", "collections_threshold = 100", "bulk_poll_seconds = 0.05",
             "backoff_seconds = 0.05", "timeout_seconds = 10"]  # fmt: skip
    path = tmp / "dagster_project.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def writes(sb: SalesforceSandbox) -> list[object]:
    ops = {Operation.COLLECTIONS_UPSERT, Operation.BULK_CREATE_JOB, Operation.BULK_UPLOAD}
    return [r for r in sb.request_log if r.operation in ops]


def held(sb: SalesforceSandbox) -> Counter[str]:
    out: Counter[str] = Counter()
    for r in sb.all_records("Account"):
        out[f"Account/{r['Tieout_Customer_Id__c']}"] += 1
    for r in sb.all_records("Tieout_Revenue_Schedule__c"):
        out[f"Tieout_Revenue_Schedule__c/{r['Tieout_External_Id__c']}"] += 1
    return out


def test_sigkill_at_random_points_never_loses_or_doubles_a_record(tmp_path: Path) -> None:
    rng = random.Random(20261202)
    kills = 0
    with salesforce_sandbox() as sandbox:
        sandbox.inject(FaultKind.LATENCY, times=None, seconds=0.03)  # runs last long enough
        env = dict(os.environ)
        for run in range(RUNS):
            tmp = tmp_path / f"run{run}"
            tmp.mkdir()
            settings = write_settings(tmp)
            wanted = records(run)
            plan = make_record_plan(wanted, [], system="salesforce", start=DAY, end=DAY,
                                    as_of=DAY)  # fmt: skip
            plan_path = write_plan(plan, tmp / "plan.json")
            cmd = [sys.executable, "-m", "tieout.cli", "--settings", str(settings),
                   "revenue", "apply", "--plan", str(plan_path)]  # fmt: skip
            started = len(writes(sandbox))
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # Kill somewhere in the load itself, not in the interpreter's start-up.
            deadline = time.monotonic() + 60
            while len(writes(sandbox)) == started and proc.poll() is None:
                assert time.monotonic() < deadline, "the loader never started writing"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            # Run it again (in-process: the same command, without another start-up).
            done = CliRunner().invoke(main, cmd[3:], catch_exceptions=False)
            assert done.exit_code == 0, done.output
            ids = {r.external_id for r in wanted}
            have = held(sandbox)
            mine = {k: n for k, n in have.items() if k in ids}
            assert set(mine) == ids, f"run {run}: missing {sorted(ids - set(mine))[:5]}"
            assert set(mine.values()) == {1}, f"run {run}: doubled"
            ledger = PostingLedger(f"sqlite:///{tmp / 'state.db'}", None)
            rows = ledger.rows("salesforce")
            ledger.dispose()
            assert set(rows) == ids
            assert {r.status for r in rows.values()} == {CONFIRMED}
        # One record per external id across every run.
        total = held(sandbox)
        assert len(total) == RUNS * (ACCOUNTS + SCHEDULES)
        assert set(total.values()) == {1}
        assert any(j["object"] == "Tieout_Revenue_Schedule__c" for j in sandbox.jobs())
    assert kills >= RUNS // 2  # most runs really were killed mid-way
