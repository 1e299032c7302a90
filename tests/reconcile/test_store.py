"""The exception store's life cycle: new, found again, resolved by a person or by a run,
waived and reopened on a changed amount; scoping of auto-resolution; idempotent re-runs;
all-or-nothing status updates; SQLite and Postgres."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tieout.connectors.exception_store import AUTO_BY, Event, ExceptionStore, StoredException
from tieout.errors import InputDataError
from tieout.reconcile.model import ReconException, exception_id

START = date(2026, 3, 1)
END = date(2026, 3, 7)
GATEWAYS = ("stripe", "adyen")


def ex(
    key: str,
    amount: int = 1000,
    day: date | None = date(2026, 3, 2),
    gateway: str | None = "stripe",
    kind: str = "missing_in_gateway",
    currency: str | None = "USD",
    explanation: str = "payment not in any settlement",
) -> ReconException:
    return ReconException(
        exception_id=exception_id(kind, gateway, key),
        kind=kind,
        severity="high",
        gateway=gateway,
        currency=currency,
        amount_minor=amount,
        payment_id=key,
        invoice_id=None,
        settlement_line_id=None,
        batch_id=None,
        first_seen=date(2000, 1, 1),  # what a run computes is ignored: the store decides
        last_seen=date(2000, 1, 1),
        status="open",
        explanation=explanation,
        day=day,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExceptionStore]:
    s = ExceptionStore(f"sqlite:///{tmp_path / 'state' / 'state.db'}")
    yield s
    s.dispose()


def run(
    store: ExceptionStore,
    run_id: str,
    as_of: date,
    found: list[ReconException],
    start: date = START,
    end: date = END,
    gateways: tuple[str, ...] = GATEWAYS,
) -> list[ReconException]:
    return store.record_run(run_id, start, end, as_of, gateways, found)


def got(store: ExceptionStore, e: ReconException) -> StoredException:
    stored = store.get(e.exception_id)
    assert stored is not None
    return stored


def moves(store: ExceptionStore, e: ReconException) -> list[tuple[str | None, str, str]]:
    return [(v.from_status, v.to_status, v.by) for v in store.history(e.exception_id)]


AUTO_NOTE = (
    "no longer found on run r2 (2026-03-09): the cause disappeared, e.g. the late settlement "
    "arrived"
)


# -- the life cycle, one rule at a time ------------------------------------------------------


def test_new_exception_is_stored_open_seen_on_as_of(store: ExceptionStore) -> None:
    a = ex("p1")
    (stored,) = run(store, "r1", date(2026, 3, 8), [a])
    assert isinstance(stored, StoredException)
    assert stored.status == "open"
    assert stored.first_seen == stored.last_seen == date(2026, 3, 8)
    assert stored.status_by == AUTO_BY
    assert stored.status_at is not None
    assert stored.status_at.tzinfo == UTC
    assert dataclasses.replace(stored, status_at=None) == StoredException(
        **{
            **dataclasses.asdict(a),
            "first_seen": date(2026, 3, 8),
            "last_seen": date(2026, 3, 8),
            "status_by": AUTO_BY,
        }
    )
    (event,) = store.history(a.exception_id)
    assert (event.from_status, event.to_status, event.run_id, event.by) == (
        None,
        "open",
        "r1",
        AUTO_BY,
    )
    assert event.at.tzinfo == UTC


def test_open_found_again_moves_last_seen_and_takes_latest_values(store: ExceptionStore) -> None:
    a = ex("p1", amount=1000)
    run(store, "r1", date(2026, 3, 8), [a])
    changed = dataclasses.replace(a, amount_minor=1250, explanation="now 12.50", severity="medium")
    (stored,) = run(store, "r2", date(2026, 3, 9), [changed])
    assert (stored.status, stored.first_seen, stored.last_seen) == (
        "open",
        date(2026, 3, 8),
        date(2026, 3, 9),
    )
    assert (stored.amount_minor, stored.explanation, stored.severity) == (
        1250,
        "now 12.50",
        "medium",
    )
    assert moves(store, a) == [(None, "open", AUTO_BY)]  # no transition, no event


def test_persons_resolution_is_kept_when_found_again(store: ExceptionStore) -> None:
    a = ex("p1")
    run(store, "r1", date(2026, 3, 8), [a])
    store.set_status(a.exception_id, "resolved", "alice", "refund booked manually")
    (stored,) = run(store, "r2", date(2026, 3, 9), [a])
    assert stored.status == "resolved"
    assert isinstance(stored, StoredException)
    assert (stored.status_by, stored.note) == ("alice", "refund booked manually")
    assert (stored.first_seen, stored.last_seen) == (date(2026, 3, 8), date(2026, 3, 9))
    assert moves(store, a) == [(None, "open", AUTO_BY), ("open", "resolved", "alice")]


def test_open_not_found_is_auto_resolved_with_reason(store: ExceptionStore) -> None:
    a, b = ex("p1"), ex("p2")
    run(store, "r1", date(2026, 3, 8), [a, b])
    run(store, "r2", date(2026, 3, 9), [b])
    gone = got(store, a)
    assert (gone.status, gone.status_by, gone.note) == ("resolved", AUTO_BY, AUTO_NOTE)
    assert gone.last_seen == date(2026, 3, 8)  # it was not seen on the 9th
    last = store.history(a.exception_id)[-1]
    assert (last.from_status, last.to_status, last.by, last.run_id, last.note) == (
        "open",
        "resolved",
        AUTO_BY,
        "r2",
        AUTO_NOTE,
    )
    assert got(store, b).status == "open"


def test_auto_resolved_found_again_is_reopened(store: ExceptionStore) -> None:
    a = ex("p1")
    run(store, "r1", date(2026, 3, 8), [a])
    run(store, "r2", date(2026, 3, 9), [])
    (stored,) = run(store, "r3", date(2026, 3, 10), [a])
    assert (stored.status, stored.first_seen, stored.last_seen) == (
        "open",
        date(2026, 3, 8),
        date(2026, 3, 10),
    )
    last = store.history(a.exception_id)[-1]
    assert (last.from_status, last.to_status, last.run_id) == ("resolved", "open", "r3")
    assert last.note is not None
    assert "found again" in last.note


def test_waived_stays_waived_while_the_amount_is_the_same(store: ExceptionStore) -> None:
    a = ex("p1", amount=1000)
    run(store, "r1", date(2026, 3, 8), [a])
    store.set_status(a.exception_id, "waived", "bob", "below materiality")
    (stored,) = run(store, "r2", date(2026, 3, 9), [a])
    assert stored.status == "waived"
    assert isinstance(stored, StoredException)
    assert (stored.status_by, stored.note, stored.last_seen) == (
        "bob",
        "below materiality",
        date(2026, 3, 9),
    )
    assert moves(store, a)[-1] == ("open", "waived", "bob")


def test_waived_reopens_when_the_amount_changes(store: ExceptionStore) -> None:
    a = ex("p1", amount=1000)
    run(store, "r1", date(2026, 3, 8), [a])
    store.set_status(a.exception_id, "waived", "bob", "below materiality")
    (stored,) = run(store, "r2", date(2026, 3, 9), [dataclasses.replace(a, amount_minor=1250)])
    assert (stored.status, stored.amount_minor, stored.first_seen) == (
        "open",
        1250,
        date(2026, 3, 8),
    )
    last = store.history(a.exception_id)[-1]
    assert (last.from_status, last.to_status, last.by, last.run_id) == (
        "waived",
        "open",
        AUTO_BY,
        "r2",
    )
    assert last.note is not None
    assert "10.00 USD" in last.note
    assert "12.50 USD" in last.note


def test_auto_resolve_only_within_the_runs_days(store: ExceptionStore) -> None:
    before = ex("early", day=date(2026, 2, 28))
    first = ex("first", day=START)
    last = ex("last", day=END)
    after = ex("late", day=date(2026, 3, 8))
    no_day = ex("noday", day=None)
    everything = [before, first, last, after, no_day]
    run(store, "r1", date(2026, 3, 9), everything, start=date(2026, 2, 1), end=date(2026, 3, 31))
    run(store, "r2", date(2026, 3, 10), [])
    assert {e.payment_id: got(store, e).status for e in everything} == {
        "early": "open",
        "first": "resolved",
        "last": "resolved",
        "late": "open",
        "noday": "open",  # nothing says which run covers it
    }


def test_auto_resolve_only_for_the_runs_gateways(store: ExceptionStore) -> None:
    stripe = ex("a", gateway="stripe")
    paypal = ex("b", gateway="paypal")
    no_gateway = ex("c", gateway=None, kind="missing_in_billing")
    run(store, "r1", date(2026, 3, 8), [stripe, paypal, no_gateway], gateways=("stripe", "paypal"))
    run(store, "r2", date(2026, 3, 9), [], gateways=("stripe",))
    assert got(store, stripe).status == "resolved"
    assert got(store, paypal).status == "open"  # that run did not look at paypal
    assert got(store, no_gateway).status == "resolved"


def test_auto_resolve_leaves_resolved_and_waived_alone(store: ExceptionStore) -> None:
    a, b = ex("a"), ex("b")
    run(store, "r1", date(2026, 3, 8), [a, b])
    store.set_status(a.exception_id, "waived", "bob", "known")
    store.set_status(b.exception_id, "resolved", "alice", "fixed")
    run(store, "r2", date(2026, 3, 9), [])
    assert (got(store, a).status, got(store, a).status_by) == ("waived", "bob")
    assert (got(store, b).status, got(store, b).status_by) == ("resolved", "alice")
    assert len(store.history(a.exception_id)) == len(store.history(b.exception_id)) == 2


def test_a_back_dated_run_does_not_resolve_a_newer_finding(store: ExceptionStore) -> None:
    a = ex("p1")
    run(store, "r1", date(2026, 3, 9), [a])
    run(store, "r0", date(2026, 3, 8), [ex("p2")])
    stored = got(store, a)
    assert (stored.status, stored.last_seen) == ("open", date(2026, 3, 9))


# -- runs --------------------------------------------------------------------------------------


def _snapshot(store: ExceptionStore) -> tuple[list[StoredException], list[list[Event]]]:
    rows = store.list()
    return rows, [store.history(r.exception_id) for r in rows]


def test_recording_the_same_run_again_changes_nothing(store: ExceptionStore) -> None:
    a, b, c, d = ex("a"), ex("b"), ex("c"), ex("d")
    run(store, "r1", date(2026, 3, 8), [a, b, c, d])
    store.set_status(b.exception_id, "resolved", "alice", "fixed")
    store.set_status(c.exception_id, "waived", "bob", "known")
    found = [a, b, dataclasses.replace(c, amount_minor=5), ex("e")]  # d disappears, c changes
    first = run(store, "r2", date(2026, 3, 9), found)
    before = _snapshot(store)
    again = run(store, "r2", date(2026, 3, 9), found)
    assert again == first
    assert _snapshot(store) == before
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.runs)).scalar() == 2


def test_record_run_returns_the_found_ids_in_order(store: ExceptionStore) -> None:
    a, b, c = ex("a"), ex("b"), ex("c")
    run(store, "r1", date(2026, 3, 8), [a])
    store.set_status(a.exception_id, "resolved", "alice", "fixed")
    result = run(store, "r2", date(2026, 3, 9), [c, a, b])
    assert [r.exception_id for r in result] == [c.exception_id, a.exception_id, b.exception_id]
    assert [r.status for r in result] == ["open", "resolved", "open"]
    assert [r.first_seen for r in result] == [date(2026, 3, 9), date(2026, 3, 8), date(2026, 3, 9)]


def test_the_run_is_recorded_with_its_summary(store: ExceptionStore) -> None:
    store.record_run(
        "r1",
        START,
        END,
        date(2026, 3, 8),
        ["stripe"],
        [ex("a")],
        summary={"as_of": date(2026, 3, 8)},
    )
    recorded = store.run("r1")
    assert recorded is not None
    assert (recorded["start_day"], recorded["end_day"], recorded["as_of"]) == (
        START,
        END,
        date(2026, 3, 8),
    )
    assert recorded["gateways"] == ["stripe"]
    assert recorded["found"] == 1
    assert recorded["summary"] == {"as_of": "2026-03-08"}
    assert store.run("nope") is None


def test_a_failing_run_leaves_nothing_behind(store: ExceptionStore) -> None:
    a = ex("a")
    run(store, "r1", date(2026, 3, 8), [a])
    broken = dataclasses.replace(ex("b"), amount_minor=None)  # type: ignore[arg-type]
    with pytest.raises(sa.exc.IntegrityError):
        run(store, "r2", date(2026, 3, 9), [broken])  # a disappears, b cannot be stored
    assert got(store, a).status == "open"
    assert store.run("r2") is None
    assert len(store.history(a.exception_id)) == 1


def test_end_before_start_is_refused(store: ExceptionStore) -> None:
    with pytest.raises(InputDataError, match="before start"):
        run(store, "r1", date(2026, 3, 8), [], start=END, end=START)


# -- reading -----------------------------------------------------------------------------------


def test_list_filters_and_find_by_prefix(store: ExceptionStore) -> None:
    a = ex("a", gateway="stripe")
    b = ex("b", gateway="adyen", kind="fee_variance")
    run(store, "r1", date(2026, 3, 8), [a, b])
    store.set_status(b.exception_id, "waived", "bob", "fee agreed")
    assert [e.exception_id for e in store.list(status="open")] == [a.exception_id]
    assert [e.exception_id for e in store.list(kind="fee_variance")] == [b.exception_id]
    assert [e.exception_id for e in store.list(gateway="adyen")] == [b.exception_id]
    assert len(store.list()) == 2
    with pytest.raises(InputDataError, match="unknown status"):
        store.list(status="closed")
    assert store.find(a.exception_id[:12].upper()).exception_id == a.exception_id
    assert store.get("ex_nope") is None
    with pytest.raises(InputDataError, match="no exception has an id starting"):
        store.find("ex_zzz")
    with pytest.raises(InputDataError, match="more than one"):
        store.find("ex_")
    with pytest.raises(InputDataError, match="no exception has an id starting"):
        store.find("%")  # LIKE wildcards are literal


# -- a person's decisions ----------------------------------------------------------------------


def test_set_status_checks_and_reopens(store: ExceptionStore) -> None:
    a = ex("a")
    run(store, "r1", date(2026, 3, 8), [a])
    xid = a.exception_id
    with pytest.raises(InputDataError, match="resolved needs a note"):
        store.set_status(xid, "resolved", "alice", "  ")
    with pytest.raises(InputDataError, match="waived needs a note"):
        store.set_status(xid, "waived", "alice", None)
    with pytest.raises(InputDataError, match="'closed' is not one of open, resolved, waived"):
        store.set_status(xid, "closed", "alice", "x")
    with pytest.raises(InputDataError, match="no exception 'ex_nope'"):
        store.set_status("ex_nope", "resolved", "alice", "x")
    resolved = store.set_status(xid, "resolved", "alice", "fixed")
    assert (resolved.status, resolved.status_by, resolved.note) == ("resolved", "alice", "fixed")
    assert resolved.status_at is not None
    assert resolved.status_at.tzinfo == UTC
    assert abs((datetime.now(UTC) - resolved.status_at).total_seconds()) < 60
    reopened = store.set_status(xid, "open", "carol", None)
    assert (reopened.status, reopened.status_by, reopened.note) == ("open", "carol", None)
    assert moves(store, a) == [
        (None, "open", AUTO_BY),
        ("open", "resolved", "alice"),
        ("resolved", "open", "carol"),
    ]
    # A reopened exception a person chose to reopen is resolved again by a run that no longer
    # finds it, like any open one.
    run(store, "r2", date(2026, 3, 9), [])
    assert got(store, a).status == "resolved"


def test_apply_updates_reports_every_bad_row_and_changes_nothing(store: ExceptionStore) -> None:
    a, b = ex("a"), ex("b")
    run(store, "r1", date(2026, 3, 8), [a, b])
    before = _snapshot(store)
    updates: list[tuple[str, str, str | None]] = [
        (a.exception_id, "resolved", "fixed"),  # fine on its own
        ("ex_unknown", "resolved", "x"),
        (b.exception_id, "closed", "x"),
        (b.exception_id, "waived", ""),
        (a.exception_id, "waived", "other"),  # contradicts the first row
    ]
    with pytest.raises(InputDataError) as err:
        store.apply_updates(updates, "alice", labels=[f"row {n}" for n in range(2, 7)])
    message = str(err.value)
    assert "4 bad status update(s), nothing changed" in message
    assert "row 3 (ex_unknown): unknown exception id" in message
    assert f"row 4 ({b.exception_id}): status 'closed'" in message
    assert f"row 5 ({b.exception_id}): waived needs a note" in message
    assert f"row 6 ({a.exception_id}): conflicts with row 2" in message
    assert "row 2 " not in message.split("conflicts with row 2")[0]
    assert _snapshot(store) == before


def test_apply_updates_applies_changes_and_skips_unchanged_rows(store: ExceptionStore) -> None:
    a, b, c = ex("a"), ex("b"), ex("c")
    run(store, "r1", date(2026, 3, 8), [a, b, c])
    store.set_status(c.exception_id, "waived", "bob", "known")
    changed = store.apply_updates(
        [
            (a.exception_id.upper(), " Resolved ", "fixed in billing"),
            (b.exception_id, "open", ""),  # already open: skipped
            (c.exception_id, "waived", None),  # still waived, no new note: skipped
            (c.exception_id, "waived", None),  # the same row twice is not a conflict
        ],
        "alice",
    )
    assert changed == 1
    assert (got(store, a).status, got(store, a).status_by, got(store, a).note) == (
        "resolved",
        "alice",
        "fixed in billing",
    )
    assert len(store.history(b.exception_id)) == 1
    assert (got(store, c).status_by, got(store, c).note) == ("bob", "known")
    # A new note on the same status is a change, recorded in the history.
    assert store.apply_updates([(c.exception_id, "waived", "agreed with finance")], "bob") == 1
    assert moves(store, c)[-1] == ("waived", "waived", "bob")
    assert store.apply_updates([(c.exception_id, "waived", "agreed with finance")], "bob") == 0
    with pytest.raises(InputDataError, match="say who"):
        store.apply_updates([(a.exception_id, "open", None)], " ")


# -- setup -------------------------------------------------------------------------------------


def test_tables_are_created_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'dir' / 'state.db'}"
    store = ExceptionStore(url, schema="ignored_by_sqlite")
    try:
        assert store.list() == []
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"recon_runs", "recon_exceptions", "recon_exception_events"} <= tables
    finally:
        store.dispose()


def test_lifecycle_on_postgres(pg_url: str, pg_schema: str) -> None:
    store = ExceptionStore(pg_url, pg_schema)
    try:
        a, b, c = ex("a", amount=1000), ex("b"), ex("c", gateway=None)
        run(store, "r1", date(2026, 3, 8), [a, b, c])
        store.set_status(a.exception_id, "waived", "bob", "below materiality")
        found = [dataclasses.replace(a, amount_minor=1250), b]
        first = run(store, "r2", date(2026, 3, 9), found)
        before = _snapshot(store)
        assert run(store, "r2", date(2026, 3, 9), found) == first
        assert _snapshot(store) == before
        assert [(r.status, r.first_seen) for r in first] == [
            ("open", date(2026, 3, 8)),
            ("open", date(2026, 3, 8)),
        ]
        gone = got(store, c)
        assert (gone.status, gone.note) == ("resolved", AUTO_NOTE)
        assert gone.status_at is not None
        assert gone.status_at.tzinfo == UTC
        assert moves(store, a) == [
            (None, "open", AUTO_BY),
            ("open", "waived", "bob"),
            ("waived", "open", AUTO_BY),
        ]
        with pytest.raises(InputDataError, match="2 bad status update"):
            store.apply_updates(
                [
                    (b.exception_id, "resolved", "ok"),
                    ("ex_x", "open", None),
                    (a.exception_id, "x", None),
                ],
                "alice",
            )
        assert got(store, b).status == "open"
        assert store.find(b.exception_id[:10]).exception_id == b.exception_id
        inspector = sa.inspect(store.engine)
        assert "recon_exception_events" in inspector.get_table_names(schema=pg_schema)
    finally:
        store.dispose()
