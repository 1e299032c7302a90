"""A NetSuite sandbox (real SOAP over HTTP) and settings that aim tieout's poster at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tieout.connectors.ledger import PostingLedger
from tieout.demo_erp import DEMO_ACCOUNTS, seed_suspense
from tieout.erp.journals import JournalEntry, JournalLine
from tieout.sandbox.netsuite import NetSuiteSandbox
from tieout.settings import Settings, settings_from_mapping

#: Sandbox internal ids (tieout.sandbox.netsuite.store.DEFAULT_ACCOUNTS, 1-12) + suspense (13).
ACCOUNTS = dict(DEMO_ACCOUNTS)
ENV = {
    "NETSUITE_CONSUMER_KEY": "consumer_key",
    "NETSUITE_CONSUMER_SECRET": "consumer_secret",
    "NETSUITE_TOKEN_KEY": "token_key",
    "NETSUITE_TOKEN_SECRET": "token_secret",
}


@pytest.fixture
def sandbox() -> Iterator[NetSuiteSandbox]:
    with NetSuiteSandbox() as sb:
        seed_suspense(sb)
        yield sb


def netsuite_section(sb: NetSuiteSandbox, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "account": sb.account,
        "wsdl_url": sb.wsdl_url,
        "endpoint_url": sb.endpoint_url,
        "subsidiary": "1",
        "subsidiaries": {"EUR": "2"},
        "currencies": {"USD": "1", "EUR": "2", "GBP": "3", "JPY": "4"},
        "accounts": dict(ACCOUNTS),
        "backoff_seconds": 0.01,
        "timeout_seconds": 2,
    }
    section.update(overrides)
    return section


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, sandbox: NetSuiteSandbox) -> dict[str, str]:
    env = {name: getattr(sandbox, attr) for name, attr in ENV.items()}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def make_settings(tmp_path: Path, sb: NetSuiteSandbox, **overrides: Any) -> Settings:
    data = {
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "lake": {"root": str(tmp_path / "lake")},
        "erp": {"netsuite": netsuite_section(sb, **overrides)},
    }
    return settings_from_mapping(data, tmp_path, "test")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[PostingLedger]:
    led = PostingLedger(f"sqlite:///{tmp_path / 'state.db'}", None)
    yield led
    led.dispose()


def entry(n: int, amount: int = 1000, cur: str = "USD", lines: int = 2) -> JournalEntry:
    """A balanced settlement-like entry: `lines - 1` clearing credits and one bank debit."""
    credits = [JournalLine.net("11", -(amount + i), f"charge {n}.{i}") for i in range(lines - 1)]
    bank = JournalLine.net("6", sum(amount + i for i in range(lines - 1)), f"payout {n}")
    return JournalEntry(
        external_id=f"tieout-test-{n:04d}",
        kind="settlement",
        tran_date=date(2026, 3, 10),
        currency=cur,
        subsidiary="1" if cur != "EUR" else "2",
        memo=f"test entry {n}",
        lines=(*credits, bank),
    )
