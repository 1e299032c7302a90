"""The demo's ERP leg: an in-process NetSuite sandbox, the `[erp.netsuite]` settings that aim
tieout at it, and what the demo prints about the plan and the posting.

The sandbox lives only while `tieout demo` runs, so its address and token reach the settings
through environment variables the demo sets for that time (the settings file holds only
`${...}` references, as a real one does for credentials).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from tieout.connectors.ledger import PostingLedger
from tieout.sandbox.netsuite import NetSuiteSandbox

#: Internal ids in the sandbox's default chart (tieout.sandbox.netsuite.store), plus the
#: suspense account the demo seeds as 13.
DEMO_ACCOUNTS: Final = {
    "accounts_receivable": "1",
    "revenue": "2",
    "deferred_revenue": "3",
    "tax_payable": "4",
    "discounts": "5",
    "bank": "6",
    "gateway_fees": "10",
    "gateway_clearing": "11",
    "fx_difference": "12",
    "suspense": "13",
}
DEMO_BANKS: Final = {"EUR": "7", "GBP": "8", "JPY": "9"}
ENV_PREFIX: Final = "TIEOUT_DEMO_NETSUITE_"


def netsuite_toml() -> list[str]:
    """The `[erp.netsuite]` section of the demo's dagster_project.toml."""
    banks = ", ".join(f'{c} = "{i}"' for c, i in DEMO_BANKS.items())
    out = [
        "[erp.netsuite]",
        "# `tieout demo` posts to an in-process NetSuite sandbox that exists only while the demo",
        "# runs; it sets these variables for that time. Point them at a sandbox of your own",
        "# (python -m tieout.sandbox.netsuite) to post again from `tieout erp apply`.",
        f'account = "${{{ENV_PREFIX}ACCOUNT}}"',
        f'wsdl_url = "${{{ENV_PREFIX}WSDL}}"',
        f'endpoint_url = "${{{ENV_PREFIX}ENDPOINT}}"',
        f'consumer_key = "${{{ENV_PREFIX}CONSUMER_KEY}}"',
        f'consumer_secret = "${{{ENV_PREFIX}CONSUMER_SECRET}}"',
        f'token_key = "${{{ENV_PREFIX}TOKEN_KEY}}"',
        f'token_secret = "${{{ENV_PREFIX}TOKEN_SECRET}}"',
        'subsidiary = "1"',
        'subsidiaries = { EUR = "2" }',
        'currencies = { USD = "1", EUR = "2", GBP = "3", JPY = "4" }',
        "[erp.netsuite.accounts]",
        *(f'{name} = "{internal_id}"' for name, internal_id in DEMO_ACCOUNTS.items()),
    ]
    for gateway in ("stripe", "adyen", "paypal", "braintree"):
        out += [f"[erp.netsuite.gateways.{gateway}]", f"bank_by_currency = {{ {banks} }}"]
    return out


def sandbox_env(sb: NetSuiteSandbox) -> dict[str, str]:
    return {
        f"{ENV_PREFIX}ACCOUNT": sb.account,
        f"{ENV_PREFIX}WSDL": sb.wsdl_url,
        f"{ENV_PREFIX}ENDPOINT": sb.endpoint_url,
        f"{ENV_PREFIX}CONSUMER_KEY": sb.consumer_key,
        f"{ENV_PREFIX}CONSUMER_SECRET": sb.consumer_secret,
        f"{ENV_PREFIX}TOKEN_KEY": sb.token_key,
        f"{ENV_PREFIX}TOKEN_SECRET": sb.token_secret,
    }


@contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block, then put back what was there (the demo's
    sandboxes reach the settings' ${...} references this way)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def seed_suspense(sb: NetSuiteSandbox) -> None:
    """The suspense account (internal id 13) held-back settlement lines wait in."""
    sb.seed(
        "account",
        [{"externalId": "acct-suspense", "acctType": "_otherCurrentAsset",
          "acctNumber": "1999", "acctName": "Reconciliation Suspense", "isInactive": False}],
    )  # fmt: skip


@contextmanager
def netsuite_sandbox() -> Iterator[NetSuiteSandbox]:
    """A running sandbox with the demo's chart of accounts, its address in the environment."""
    with NetSuiteSandbox() as sb:
        seed_suspense(sb)
        with temporary_env(sandbox_env(sb)):
            yield sb


def ledger_summary(ledger: PostingLedger, system: str) -> str:
    counts = Counter(row.status for row in ledger.rows(system).values())
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "empty"


@contextmanager
def fast_sqlite() -> Iterator[None]:
    """Dagster's SQLite instance commits every event with a sync; the demo's throwaway files
    (its instance, billing and state databases) do not need that durability, and skipping it
    takes seconds off a one-minute demo."""
    import sqlite3

    import sqlalchemy as sa

    def no_sync(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            dbapi_conn.execute("PRAGMA synchronous=OFF")

    sa.event.listen(sa.engine.Engine, "connect", no_sync)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "connect", no_sync)


def sandbox_summary(sb: NetSuiteSandbox) -> str:
    """What the sandbox holds after posting: entries, lines and whether each balances."""
    entries = sb.records("journalEntry")
    lines = 0
    unbalanced = []
    for ext, record in entries.items():
        rows = (record.get("lineList") or {}).get("line") or []
        lines += len(rows)
        debit = sum(r.get("debit") or 0 for r in rows)
        credit = sum(r.get("credit") or 0 for r in rows)
        if debit != credit:
            unbalanced.append(ext)
    verdict = "every one balanced" if not unbalanced else f"UNBALANCED: {', '.join(unbalanced)}"
    return (
        f"NetSuite sandbox now holds {len(entries)} journal entr(ies), {lines} line(s), {verdict}"
    )
