"""Benchmark: posting journal entries to NetSuite against the sandbox's rate limit.

Builds --entries settlement-like journal entries (3-6 lines each: gateway-clearing credits per
charge, a fee debit and the bank debit; USD/EUR/GBP/JPY), plans them against a fresh posting
ledger in a temporary SQLite state database (`make_plan`), then applies the plan through the
real path: `apply_posting` -> `apply_plan` (ledger stage/sent/confirmed, a thread pool with at
most `concurrency` requests on the wire) -> `NetSuiteTarget.upsert` -> netsuitesdk's
`client.request("upsertList", ...)` over zeep and HTTP to the NetSuite sandbox, which answers
each request --latency after it arrived (its own work included) and refuses requests above
--concurrency in flight with NetSuite's WS_REQUEST_BLOCKED fault.

The sandbox runs in a separate process by default (`--no-sandbox-process` runs it in a thread
of this one): a real NetSuite account is another machine, so the sandbox's own CPU work
(parsing, validating, answering) should not share the poster's interpreter and GIL.

Only the apply (posting) phase is timed; connecting (fetching and parsing the WSDL) and the
plan are timed apart. It prints how busy the sandbox's request slots were, then the CPU of
rendering one request (tieout's direct rendering, and zeep's own for comparison) and of zeep
parsing an answer (which the poster skips for well-formed answers). At the end the
sandbox must hold exactly --entries journal entries and every ledger row must be confirmed,
or the benchmark fails. The last line is

    erp_throughput_vs_limit=<x>

with x = (entries / apply seconds) / (concurrency x batch_size / latency). Target: >= 0.9.

    python benchmarks/erp_post.py [--entries 20000] [--latency 0.2] [--concurrency 5]
        [--batch-size 200] [--no-sandbox-process]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

from tieout.connectors.ledger import CONFIRMED, PostingLedger
from tieout.connectors.netsuite import NetSuiteTarget, journal_records, request_bytes
from tieout.demo_erp import DEMO_ACCOUNTS, DEMO_BANKS, seed_suspense
from tieout.erp.journals import JournalEntry, JournalLine
from tieout.erp.plan import make_plan
from tieout.posting import SYSTEM, apply_posting, netsuite_settings
from tieout.sandbox.netsuite import NetSuiteSandbox
from tieout.settings import Settings, settings_from_mapping

CURRENCIES: Final = ("USD", "EUR", "GBP", "JPY")
CURRENCY_P: Final = (0.50, 0.25, 0.15, 0.10)
CURRENCY_IDS: Final = {"USD": "1", "EUR": "2", "GBP": "3", "JPY": "4"}
BANKS: Final = {"USD": DEMO_ACCOUNTS["bank"], **DEMO_BANKS}
GATEWAYS: Final = ("stripe", "adyen", "paypal", "braintree")
START: Final = date(2026, 3, 2)
ENV: Final = {
    "NETSUITE_CONSUMER_KEY": "consumer_key",
    "NETSUITE_CONSUMER_SECRET": "consumer_secret",
    "NETSUITE_TOKEN_KEY": "token_key",
    "NETSUITE_TOKEN_SECRET": "token_secret",
}


# ------------------------------------------------------------------------------ entries


def settlement_entries(n: int, seed: int = 7) -> list[JournalEntry]:
    """n balanced settlement journals: 1-4 charge lines credited to gateway clearing, the
    gateway fee debited to expense, the payout (charges - fee) debited to the bank."""
    rng = random.Random(seed)
    clearing, fees = DEMO_ACCOUNTS["gateway_clearing"], DEMO_ACCOUNTS["gateway_fees"]
    out = []
    for i in range(n):
        cur = rng.choices(CURRENCIES, CURRENCY_P)[0]
        gateway = GATEWAYS[i % len(GATEWAYS)]
        batch = f"{gateway}-po-{i:07d}"
        scale = 1 if cur == "JPY" else 100
        charges = [rng.randint(5, 2_000) * scale + rng.randint(0, scale - 1)
                   for _ in range(rng.randint(1, 4))]  # fmt: skip
        fee = max(1, sum(charges) * 29 // 1000)
        lines = [
            JournalLine.net(clearing, -amount, f"{gateway} charge ch_{i:07d}_{k}")
            for k, amount in enumerate(charges)
        ]
        lines.append(JournalLine.net(fees, fee, f"{gateway} fees {batch}"))
        lines.append(JournalLine.net(BANKS[cur], sum(charges) - fee, f"{gateway} payout {batch}"))
        entry = JournalEntry(
            external_id=f"tieout-stl-{gateway}-{batch}-{cur}",
            kind="settlement",
            tran_date=START + timedelta(days=i % 28),
            currency=cur,
            subsidiary="2" if cur == "EUR" else "1",
            memo=f"{gateway} payout {batch} ({cur})",
            lines=tuple(lines),
        )
        assert entry.imbalance() == 0
        out.append(entry)
    return out


# ------------------------------------------------------------------------------ sandbox


@dataclass(frozen=True)
class SandboxInfo:
    account: str
    wsdl_url: str
    endpoint_url: str
    credentials: dict[str, str]  # env var -> value (the sandbox's fake token credentials)


def _info(sb: NetSuiteSandbox) -> SandboxInfo:
    creds = {name: getattr(sb, attr) for name, attr in ENV.items()}
    return SandboxInfo(sb.account, sb.wsdl_url, sb.endpoint_url, creds)


def _stats(sb: NetSuiteSandbox) -> dict[str, Any]:
    cpu = time.process_time()  # first: counting the records below copies every one
    requests = sb.requests
    return {
        "journal_entries": len(sb.records("journalEntry")),
        "requests": len(requests),
        "faults": dict(Counter(r.fault_code for r in requests if r.fault_code)),
        "record_errors": sum(len(r.record_errors) for r in requests),
        "max_concurrent": sb.max_concurrent,
        "cpu_seconds": cpu,  # of the process the sandbox runs in
        # monotonic clock (shared by the processes of one machine): when requests arrived
        # and answered, to show how busy the sandbox's request slots were
        "spans": [(r.started_at, r.ended_at) for r in requests],
    }


def _serve(conn: Connection, latency: float, limit: int) -> None:
    """The sandbox process: start, say where, answer `stats` until `stop`."""
    with NetSuiteSandbox(latency=latency, max_concurrent_requests=limit) as sb:
        seed_suspense(sb)
        # A spawned process imports the parent's main module, this script, and with it
        # tieout's posting side (dagster, pandas, sqlalchemy): 200,000 objects against the
        # sandbox's own 20,000, which the cyclic collector walked again on every full
        # collection while requests waited. Set aside for good, as a server does once it has
        # started (the sandbox's CPU per request 25-30 -> 22-27 ms, the ratio +0.01-0.02).
        gc.freeze()
        conn.send(_info(sb))
        while True:
            command = conn.recv()
            if command == "stop":
                break
            conn.send(_stats(sb))


class SandboxHandle:
    def __init__(self, info: SandboxInfo, stats: Callable[[], dict[str, Any]]) -> None:
        self.info = info
        self.stats = stats


@contextmanager
def sandbox(latency: float, limit: int, separate_process: bool) -> Iterator[SandboxHandle]:
    if not separate_process:
        with NetSuiteSandbox(latency=latency, max_concurrent_requests=limit) as sb:
            seed_suspense(sb)
            yield SandboxHandle(_info(sb), lambda: _stats(sb))
        return
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, latency, limit), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the sandbox process did not start within 60 s")
        info: SandboxInfo = parent.recv()

        def stats() -> dict[str, Any]:
            parent.send("stats")
            result: dict[str, Any] = parent.recv()
            return result

        yield SandboxHandle(info, stats)
        parent.send("stop")
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


# ------------------------------------------------------------------------------ settings


def make_settings(tmp: Path, info: SandboxInfo, concurrency: int, batch_size: int) -> Settings:
    data = {
        "state": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "lake": {"root": str(tmp / "lake")},
        "erp": {
            "netsuite": {
                "account": info.account,
                "wsdl_url": info.wsdl_url,
                "endpoint_url": info.endpoint_url,
                "subsidiary": "1",
                "subsidiaries": {"EUR": "2"},
                "currencies": dict(CURRENCY_IDS),
                "accounts": dict(DEMO_ACCOUNTS),
                "concurrency": concurrency,
                "batch_size": batch_size,
                "timeout_seconds": 60,
            }
        },
    }
    return settings_from_mapping(data, tmp, "benchmark")


# ------------------------------------------------------------------------------ zeep's share


def render_share(target: NetSuiteTarget, batch: list[JournalEntry], currencies: Any) -> tuple[
    float, float, float
]:  # fmt: skip
    """CPU milliseconds of one upsertList of `batch`, rendered and serialized: by tieout's
    direct renderer (what the poster does) and by zeep from its own values (what it would
    cost without); and of zeep parsing the answer into objects (which the poster skips for
    well-formed answers)."""
    from tieout.connectors.netsuite import _builder

    client = target._client()
    zeep_client, proxy = client._client, client._service_proxy
    binding = proxy._binding
    builder = _builder(client)
    by_zeep = [builder.zeep_record(e, currencies[e.currency]) for e in batch]
    with zeep_client.settings(raw_response=True):  # one real answer to parse (an update)
        answer = client.request("upsertList", record=journal_records(client, batch, currencies))
    rounds = 5

    def cpu_ms(call: Callable[[], Any]) -> float:
        t = time.process_time()
        for _ in range(rounds):
            call()
        return (time.process_time() - t) / rounds * 1000

    def render(records: Callable[[], list[Any]]) -> Callable[[], Any]:
        """The request's bytes as the transport sends them."""
        return lambda: request_bytes(
            zeep_client.create_message(
                proxy, "upsertList", record=records(), _soapheaders=client._build_soap_headers()
            )
        )

    parse = cpu_ms(lambda: binding.process_reply(zeep_client, binding.get("upsertList"), answer))
    # As the poster does it: the request's entries' texts made together, then rendered.
    direct = render(lambda: journal_records(client, batch, currencies))
    return cpu_ms(direct), cpu_ms(render(lambda: by_zeep)), parse


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--latency", type=float, default=0.2, help="sandbox seconds per request")
    ap.add_argument("--concurrency", type=int, default=5, help="sandbox limit = poster setting")
    ap.add_argument("--batch-size", type=int, default=200, help="records per upsertList")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--sandbox-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the sandbox in its own process (default) or in a thread of this one",
    )
    args = ap.parse_args()
    n, latency, conc, size = args.entries, args.latency, args.concurrency, args.batch_size
    limit = conc * size / latency
    where = "a separate process" if args.sandbox_process else "this process"
    print(f"erp_post: {n} journal entries, sandbox in {where} (latency {latency * 1000:.0f} ms, "
          f"max {conc} concurrent), concurrency {conc}, batch size {size}", flush=True)  # fmt: skip
    print(f"  limit = {conc} x {size} / {latency} s = {limit:,.0f} records/s; ideal "
          f"{n / limit:.2f} s; cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.2f}",
          flush=True)  # fmt: skip

    t0 = time.perf_counter()
    entries = settlement_entries(n, args.seed)
    lines = sum(len(e.lines) for e in entries)
    by_cur = Counter(e.currency for e in entries)
    print(f"  built {n} entries ({lines} lines; "
          + ", ".join(f"{c} {by_cur[c]}" for c in CURRENCIES)
          + f") in {time.perf_counter() - t0:.2f} s", flush=True)  # fmt: skip

    with (
        tempfile.TemporaryDirectory(prefix="tieout-erp-bench-") as tmpdir,
        sandbox(latency, conc, args.sandbox_process) as sb,
    ):
        tmp = Path(tmpdir)
        os.environ.update(sb.info.credentials)
        settings = make_settings(tmp, sb.info, conc, size)
        ledger = PostingLedger(settings.state_url(), settings.state.schema_)
        try:
            t0 = time.perf_counter()
            rows = ledger.rows(SYSTEM, base_ids=[e.external_id for e in entries])
            plan = make_plan(
                entries, list(rows.values()), system=SYSTEM, start=START,
                end=START + timedelta(days=27), as_of=START + timedelta(days=27),
            )  # fmt: skip
            plan_s = time.perf_counter() - t0
            counts = plan.counts()
            print(f"  plan: {counts['create']} to create in {plan_s:.2f} s", flush=True)
            if counts["create"] != n or plan.problems:
                raise SystemExit(f"unexpected plan: {counts} {plan.problems[:3]}")

            ns = netsuite_settings(settings)
            target = NetSuiteTarget(ns, base_dir=tmp)
            # Connecting (fetching and parsing the WSDL) is a one-time cost, not throughput:
            # timed apart, as a caller that connects before posting would see it.
            t0 = time.perf_counter()
            target.prepare()
            print(f"  connected in {time.perf_counter() - t0:.2f} s (WSDL fetched and parsed)")
            load = os.getloadavg()[0]
            sandbox_cpu = sb.stats()["cpu_seconds"]
            cpu0 = time.process_time()
            t0, t_start = time.perf_counter(), time.monotonic()
            result = apply_posting(settings, plan, ledger, target, progress=print)
            apply_s = time.perf_counter() - t0
            cpu_s = time.process_time() - cpu0

            stats = sb.stats()
            statuses = Counter(r.status for r in ledger.rows(SYSTEM).values())
        finally:
            ledger.dispose()
        print(f"  apply: {len(result.confirmed)} confirmed, {len(result.failed)} refused, "
              f"{len(result.unresolved)} unresolved, {result.requests} request(s) in "
              f"{apply_s:.2f} s (load {load:.2f} -> {os.getloadavg()[0]:.2f})")  # fmt: skip
        if args.sandbox_process:
            sandbox_cpu = stats["cpu_seconds"] - sandbox_cpu
            print(f"  cpu during apply: poster {cpu_s:.2f} s, sandbox {sandbox_cpu:.2f} s "
                  f"(per request {cpu_s / max(1, result.requests) * 1000:.0f} ms and "
                  f"{sandbox_cpu / max(1, result.requests) * 1000:.0f} ms)")  # fmt: skip
        else:
            print(f"  cpu during apply: poster and sandbox {cpu_s:.2f} s")
        spans = stats["spans"]
        if spans:
            busy = sum(end - start for start, end in spans)
            first = min(start for start, _ in spans) - t_start
            print(f"  slots: first request {first:.2f} s after apply began; answers took "
                  f"{busy / len(spans) * 1000:.0f} ms on average; {busy / apply_s:.2f} of "
                  f"{conc} slots busy over the apply")  # fmt: skip
        print(f"  sandbox: {stats['journal_entries']} journal entries, {stats['requests']} "
              f"request(s), max {stats['max_concurrent']} concurrent, faults "
              f"{stats['faults'] or 'none'}, record errors {stats['record_errors']}")  # fmt: skip
        print(f"  ledger: {dict(statuses)}")
        direct_ms, zeep_ms, parse_ms = render_share(target, entries[:size], ns.currencies)
        print(f"  rendering a request of {size}: {direct_ms:.0f} ms of CPU (zeep's own rendering "
              f"{zeep_ms:.0f} ms; its parse of the answer, {parse_ms:.0f} ms, is skipped: tieout "
              f"reads well-formed answers with lxml)")  # fmt: skip
        problems = []
        if stats["journal_entries"] != n:
            problems.append(f"the sandbox holds {stats['journal_entries']} entries, not {n}")
        if statuses != Counter({CONFIRMED: n}):
            problems.append(f"ledger rows are not all confirmed: {dict(statuses)}")
        if len(result.confirmed) != n or result.failed or result.unresolved:
            problems.append("apply did not confirm every entry")
        if problems:
            print("FAILED: " + "; ".join(problems), file=sys.stderr)
            return 1

    rate = n / apply_s
    print(f"  throughput {rate:,.0f} records/s vs limit {limit:,.0f} records/s; "
          f"plan {plan_s:.2f} s, apply {apply_s:.2f} s (ideal {n / limit:.2f} s)")  # fmt: skip
    print(f"erp_throughput_vs_limit={rate / limit:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
