"""Benchmark: revenue schedule rows loaded into Salesforce through Bulk API 2.0.

Generates N revenue schedule rows (default 1,000,000) for 10,000 customers as tieout's
Salesforce records (each row names its Account by external id), plans them against an empty
posting ledger in a temporary SQLite state database, and times the load: `apply_revenue`,
the same code `tieout revenue apply` runs (parent-first phases, Bulk jobs split by records
and bytes, per-record results, the ledger's pending/sent/confirmed bookkeeping), through the
real simple-salesforce client against the Salesforce sandbox over TLS.

The sandbox runs in its own process (`python -m tieout.sandbox.salesforce`), as Salesforce
is another machine: on 2 cores, one process for both would measure the GIL, not tieout.

Target: at least 20,000 rows/s on this 2-core machine, so tieout is never the bottleneck in
front of Salesforce's own ingest (150M records per 24 h is about 1,740 rows/s).
Last line: `revenue_rows_per_s=<x> bulk_jobs=<n>`.

    python benchmarks/revenue_load.py [--rows 1000000] [--accounts 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from tieout.connectors.ledger import CONFIRMED, PostingLedger
from tieout.erp.plan import make_record_plan
from tieout.revenue.loading import apply_revenue, make_target
from tieout.revenue.model import SalesforceRecord
from tieout.settings import settings_from_mapping

DAY = date(2026, 3, 31)
FIELDS = ("instance_url", "ca_bundle", "login domain", "username", "password", "security_token")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_sandbox() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tieout.sandbox.salesforce"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    info: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        for name in FIELDS:
            if line.startswith(name + " "):
                info[name] = line[len(name) :].split()[0]
        if line.startswith("Ctrl-C"):
            break
    missing = set(FIELDS) - set(info)
    if missing:
        proc.kill()
        raise SystemExit(f"the sandbox did not print {sorted(missing)}")
    return proc, info


def make_records(rows: int, accounts: int) -> list[SalesforceRecord]:
    out = [
        SalesforceRecord(
            "accounts",
            "Account",
            "Tieout_Customer_Id__c",
            f"cus_{i:06d}",
            {
                "Name": f"Customer {i}",
                "CurrencyIsoCode": "USD",
                "Tieout_Open_Balance__c": f"{i % 9973}.{i % 100:02d}",
            },
        )
        for i in range(accounts)
    ]
    for i in range(rows):
        month = 1 + i % 12
        out.append(
            SalesforceRecord(
                "schedules",
                "Tieout_Revenue_Schedule__c",
                "Tieout_External_Id__c",
                f"rs-li_{i // 12:07d}-2026-{month:02d}",
                {
                    "Tieout_Account__r.Tieout_Customer_Id__c": f"cus_{(i // 12) % accounts:06d}",
                    "Tieout_Product__c": "pro_monthly",
                    "Tieout_Period_Start__c": f"2026-{month:02d}-01",
                    "Tieout_Recognized_Amount__c": f"{(i * 7919) % 100000}.{i % 100:02d}",
                    "Tieout_Deferred_Amount__c": f"{(i * 104729) % 100000}.{i % 97:02d}",
                    "CurrencyIsoCode": "USD",
                },
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()

    proc, info = start_sandbox()
    try:
        os.environ.update(
            BENCH_SF_USERNAME=info["username"],
            BENCH_SF_PASSWORD=info["password"],
            BENCH_SF_TOKEN=info["security_token"],
        )
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_from_mapping(
                {
                    "state": {"url": f"sqlite:///{Path(tmp) / 'state.db'}"},
                    "revenue": {"salesforce": {
                        "username": "${BENCH_SF_USERNAME}", "password": "${BENCH_SF_PASSWORD}",
                        "security_token": "${BENCH_SF_TOKEN}", "domain": info["login domain"],
                        "ca_bundle": info["ca_bundle"], "bulk_poll_seconds": 0.2,
                    }},
                },
                Path(tmp),
                "benchmark",
            )  # fmt: skip
            t0 = time.perf_counter()
            records = make_records(args.rows, args.accounts)
            log(f"generated {len(records):,} records in {time.perf_counter() - t0:.1f}s")
            ledger = PostingLedger(settings.state_url(), None)
            t0 = time.perf_counter()
            plan = make_record_plan(records, [], system="salesforce", start=DAY, end=DAY,
                                    as_of=DAY)  # fmt: skip
            plan_s = time.perf_counter() - t0
            log(f"planned in {plan_s:.1f}s: {plan.counts()['create']:,} to create")
            target = make_target(settings, plan)
            log(f"Bulk objects: {sorted(target.bulk_objects)}")
            t0 = time.perf_counter()
            result = apply_revenue(settings, plan, ledger, target, progress=log)
            load_s = time.perf_counter() - t0
            rows = ledger.rows("salesforce", statuses=[CONFIRMED])
            ledger.dispose()
            bad = len(records) - len(rows)
            if result.failed or result.unresolved or bad:
                raise SystemExit(
                    f"not everything loaded: {len(result.failed)} refused, "
                    f"{len(result.unresolved)} unresolved, {bad} unconfirmed in the ledger"
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    per_s = len(records) / load_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"records={len(records)} plan_seconds={plan_s:.2f} load_seconds={load_s:.2f}")
    print(f"requests={result.requests} logins={target.logins} peak_rss_mb={peak}")
    print(f"revenue_rows_per_s={per_s:.0f} bulk_jobs={target.bulk_jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
