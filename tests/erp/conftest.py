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


def varied_entries(n: int, seed: int) -> list[JournalEntry]:
    """Entries that reach every branch of the direct renderer: 0-, 2-, 3- and 4-decimal
    currencies, amounts with trailing zeros and of one minor unit, lines with a debit, a
    credit or both, with and without department and class, memos empty, long, non-ASCII
    and full of XML's special characters."""
    import random

    rng = random.Random(seed)
    memos = ["", "plain", "a & b < c > d \" e ' f", "Zürich – 東京 ✓", "x" * 4100, " spaced ",
             "cr\rlf\n\ttab ]]> &amp; &#13;"]  # fmt: skip
    suffixes = ["", "-<&>\"'", "-ü", "-\t\r\n-"]
    out = []
    for i in range(n):
        cur = rng.choice(["USD", "JPY", "KWD", "CLF", "EUR"])
        lines = []
        for _ in range(rng.randint(1, 6)):
            amount = rng.choice([1, 10, 100, 1000, 12345, rng.randint(1, 10**12)])
            debit, credit = rng.choice([(amount, 0), (0, amount), (amount, amount)])
            lines.append(
                JournalLine(
                    str(rng.randint(1, 99)),
                    debit,
                    credit,
                    rng.choice(memos),
                    rng.choice([None, "", "3"]),
                    rng.choice([None, "", "4"]),
                )
            )
        out.append(
            JournalEntry(
                external_id=f"tieout-render-{seed}-{i}" + rng.choice(suffixes),
                kind="settlement",
                tran_date=date.fromordinal(date(2024, 1, 1).toordinal() + i),
                currency=cur,
                subsidiary=str(rng.randint(1, 9)),
                memo=rng.choice(memos),
                lines=tuple(lines),
            )
        )
    return out


def assert_renders_like_zeep(client: Any, entries: list[JournalEntry]) -> None:
    """The poster's direct rendering is in use for `client`'s WSDL, and the upsertList it
    renders is byte for byte the one zeep renders from its own values."""

    from tieout.connectors.netsuite import (
        _builder,
        _PreparedEntries,
        _PreparedEntry,
        journal_records,
        request_bytes,
    )

    builder = _builder(client)
    assert builder.direct is not None, "the direct renderer fell back to zeep's"
    ids = {"USD": "1", "JPY": "2", "KWD": "3", "CLF": "4", "EUR": "5", "GBP": "6"}

    def message(records: list[Any]) -> bytes:
        envelope = client._client.create_message(
            client._service_proxy, "upsertList", record=records
        )
        return request_bytes(envelope)

    direct = [builder.journal_entry(e, ids[e.currency]) for e in entries]
    assert all(isinstance(r, _PreparedEntry) for r in direct)
    by_zeep = [builder.zeep_record(e, ids[e.currency]) for e in entries]
    for start in range(0, len(entries), 50):
        expected = message(by_zeep[start : start + 50])
        assert message(direct[start : start + 50]) == expected
        # As the poster makes them: a request's entries parsed in one call.
        batch = journal_records(client, entries[start : start + 50], ids)
        assert [type(r) for r in batch] == [_PreparedEntries]
        assert message(batch) == expected
        # Rendered again (a value used twice), each record's elements are made again.
        assert message(batch) == expected
