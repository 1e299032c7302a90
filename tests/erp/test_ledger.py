"""The posting ledger's key lookups and staging, on SQLite and PostgreSQL: a lookup of many
keys scans the system's rows when they are not many more than the keys, and chunks `IN (...)`
otherwise; both must give what reading every row gives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tieout.connectors import ledger as ledger_module
from tieout.connectors.ledger import CONFIRMED, PENDING, SENT, PostingLedger

N = 16_000  # above the scan threshold, and over 3x it


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostingLedger]:
    if request.param == "sqlite":
        led = PostingLedger(f"sqlite:///{tmp_path / 'state.db'}", None)
    else:
        url = request.getfixturevalue("pg_url")
        led = PostingLedger(url, request.getfixturevalue("pg_schema"))
    yield led
    led.dispose()


def _stage(led: PostingLedger, system: str, n: int, prefix: str = "r") -> None:
    led.stage(
        system,
        "Thing",
        [(f"{prefix}{i:05d}", f"b{i // 3:05d}", "k", f"h{i}", f'{{"i":{i}}}') for i in range(n)],
    )


def test_lookups_agree_whichever_path_they_take(ledger: PostingLedger) -> None:
    _stage(ledger, "salesforce", N)
    _stage(ledger, "netsuite", 50)  # another system's rows never leak into the answers
    ledger.mark_confirmed("salesforce", {f"r{i:05d}": f"id{i}" for i in range(0, N, 2)})
    every = ledger.rows("salesforce")
    assert len(every) == N

    def expected(ids: list[str]) -> dict[str, tuple[str, str]]:
        return {x: (every[x].status, every[x].payload_hash) for x in ids if x in every}

    # All keys plus unknown ones: one scan (the system has no more rows than the keys).
    wanted = [f"r{i:05d}" for i in range(N)] + [f"zz{i}" for i in range(100)]
    assert ledger.states("salesforce", wanted) == expected(wanted)
    # Fewer keys than the threshold: chunked lookups.
    some = [f"r{i:05d}" for i in range(0, N, 10)]
    assert ledger.states("salesforce", some) == expected(some)
    assert ledger.states("salesforce", ["r00007", "nope"]) == expected(["r00007"])
    # Many keys, but the system has over 3x as many rows: chunked; just under: one scan.
    for n in (5_000, 6_000):
        part = [f"r{i:05d}" for i in range(1, N, N // n)][:n]
        assert ledger.states("salesforce", part) == expected(part)

    bases = sorted({every[x].base_id for x in every})
    states = ledger.key_states("salesforce", base_ids=bases)
    assert {x: (s.base_id, s.status, s.payload_hash) for x, s in states.items()} == {
        x: (r.base_id, r.status, r.payload_hash) for x, r in every.items()
    }
    few = ledger.key_states("salesforce", base_ids=["b00001"])
    assert sorted(few) == ["r00003", "r00004", "r00005"]
    assert ledger.key_states("netsuite", base_ids=bases[:10])  # its own rows, by its bases
    assert ledger.states("netsuite", wanted[:N]) == {
        f"r{i:05d}": (PENDING, f"h{i}") for i in range(50)
    }


def test_the_thresholds_are_the_ones_the_test_above_crosses() -> None:
    assert ledger_module._SCAN_FROM <= 5_000
    assert 5_000 * ledger_module._SCAN_RATIO < N <= 6_000 * ledger_module._SCAN_RATIO


def test_stage_reports_what_it_left_and_what_it_wrote(ledger: PostingLedger) -> None:
    _stage(ledger, "salesforce", 4)
    ledger.mark_confirmed("salesforce", {"r00000": "id0", "r00001": "id1"})
    ledger.mark_sent("salesforce", ["r00002"])
    after = ledger.stage(
        "salesforce",
        "Thing",
        [
            ("r00000", "b00000", "k", "h0", "{}"),  # confirmed, same content: kept
            ("r00001", "b00000", "k", "CHANGED", "{}"),  # confirmed, new content: pending
            ("r00002", "b00000", "k", "CHANGED", "{}"),  # sent: kept until read back
            ("r00003", "b00001", "k", "h3", "{}"),  # pending: rewritten
            ("r00009", "b00003", "k", "h9", "{}"),  # new
        ],
    )
    assert after == {
        "r00000": (CONFIRMED, "h0"),
        "r00001": (PENDING, "CHANGED"),
        "r00002": (SENT, "h2"),
        "r00003": (PENDING, "h3"),
        "r00009": (PENDING, "h9"),
    }
    assert after == ledger.states("salesforce", list(after))


def test_every_record_is_staged_before_it_is_sent_window_by_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply stages a window of records, sends its requests while it stages the next: each
    record must be `pending` in the ledger when its request leaves, every one is sent once,
    and the ones confirmed with the same content since the plan are skipped."""
    from datetime import date

    from tieout.connectors.netsuite import RecordOutcome
    from tieout.erp import plan as plan_module
    from tieout.erp.plan import apply_plan, make_record_plan
    from tieout.revenue.model import SalesforceRecord

    monkeypatch.setattr(plan_module, "STAGE_WINDOW", 50)
    led = PostingLedger(f"sqlite:///{tmp_path / 'state.db'}", None)
    records = [
        SalesforceRecord("schedules", "Thing__c", "Ext__c", f"k{i:03d}", {"Amount__c": str(i)})
        for i in range(230)
    ]
    day = date(2026, 3, 31)
    plan = make_record_plan(records, [], system="salesforce", start=day, end=day, as_of=day)
    # Confirmed meanwhile (a crashed run of this plan got that far): not sent again.
    done = records[:7]
    led.stage("salesforce", "Thing", [(r.external_id, r.base, r.kind, r.payload_hash(),
                                       r.payload_text) for r in done])  # fmt: skip
    led.mark_confirmed("salesforce", {r.external_id: "sf-old" for r in done})
    sent: list[str] = []

    class Recording:
        system, record_type, idempotent = "salesforce", "Thing", True

        def upsert(self, entries: list[SalesforceRecord]) -> dict[str, RecordOutcome]:
            states = led.states("salesforce", [e.external_id for e in entries])
            assert all(states[e.external_id] == (PENDING, e.payload_hash()) for e in entries)
            sent.extend(e.external_id for e in entries)
            return {e.external_id: RecordOutcome(True, f"sf-{e.key}") for e in entries}

        def read_back(self, external_ids: list[str]) -> dict[str, str | None]:
            raise AssertionError("nothing was left unknown")

    staged: list[int] = []
    stage = led.stage

    def counting_stage(*args: Any, **kwargs: Any) -> dict[str, tuple[str, str]]:
        staged.append(len(args[2]))
        return stage(*args, **kwargs)

    monkeypatch.setattr(led, "stage", counting_stage)
    result = apply_plan(plan, led, Recording(), batch_size=10, concurrency=3)
    assert staged == [50, 50, 50, 50, 30]  # windows of whole requests
    assert sorted(sent) == sorted(r.external_id for r in records[7:])  # once each
    assert result.skipped == sorted(r.external_id for r in done)
    assert result.confirmed == sorted(sent)
    rows = led.rows("salesforce")
    assert {x: r.status for x, r in rows.items()} == {r.external_id: CONFIRMED for r in records}
    led.dispose()


def test_marks_reach_every_record_across_statement_chunks(ledger: PostingLedger) -> None:
    """mark_sent and mark_confirmed write many rows per statement, a few hundred at a time;
    every row must get its own values, and no other row any."""
    _stage(ledger, "netsuite", 1_234)
    _stage(ledger, "salesforce", 30)
    ids = [f"r{i:05d}" for i in range(1_234)]
    ledger.mark_sent("netsuite", ids[:1_201])
    ledger.mark_confirmed("netsuite", {x: f"iid-{x}" for x in ids[:1_100]})
    rows = ledger.rows("netsuite")
    assert {x for x, r in rows.items() if r.status == CONFIRMED} == set(ids[:1_100])
    assert all(rows[x].internal_id == f"iid-{x}" for x in ids[:1_100])
    assert {x for x, r in rows.items() if r.status == SENT} == set(ids[1_100:1_201])
    assert {x for x, r in rows.items() if r.status == PENDING} == set(ids[1_201:])
    assert [rows[x].attempts for x in ids] == [1] * 1_201 + [0] * 33
    assert all(r.internal_id is None for x, r in rows.items() if x not in ids[:1_100])
    assert {r.status for r in ledger.rows("salesforce").values()} == {PENDING}


@pytest.mark.parametrize("fails", [False, True])
def test_apply_prepares_the_target_in_the_background(tmp_path: Path, fails: bool) -> None:
    """A target's `prepare` (NetSuite: connect) runs while the ledger is read and written; if
    it fails, the requests still go (the first one connects again and reports any error)."""
    import gc
    import threading
    from datetime import date

    from tieout.connectors.netsuite import RecordOutcome
    from tieout.erp.plan import apply_plan, make_record_plan
    from tieout.revenue.model import SalesforceRecord

    led = PostingLedger(f"sqlite:///{tmp_path / 'state.db'}", None)
    records = [
        SalesforceRecord("s", "Thing__c", "Ext__c", f"k{i}", {"A__c": "1"}) for i in range(5)
    ]
    day = date(2026, 3, 31)
    plan = make_record_plan(records, [], system="salesforce", start=day, end=day, as_of=day)
    prepared = threading.Event()

    class Preparing:
        system, record_type, idempotent = "salesforce", "Thing", True

        def prepare(self) -> None:
            prepared.set()
            if fails:
                raise ConnectionError("the WSDL could not be fetched")

        def upsert(self, entries: list[SalesforceRecord]) -> dict[str, RecordOutcome]:
            assert prepared.wait(5)
            # What existed before posting is set aside from the garbage collector meanwhile.
            assert gc.get_freeze_count() > 0
            return {e.external_id: RecordOutcome(True, f"sf-{e.key}") for e in entries}

        def read_back(self, external_ids: list[str]) -> dict[str, str | None]:
            raise AssertionError("nothing was left unknown")

    result = apply_plan(plan, led, Preparing(), batch_size=2, concurrency=2)
    assert gc.get_freeze_count() == 0  # and handed back
    assert prepared.is_set()
    assert len(result.confirmed) == 5
    led.dispose()
