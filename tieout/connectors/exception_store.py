"""The exception store: every reconciliation exception ever found, with its status and history.

An exception's id is stable across runs (see `model.exception_id`), so each run's findings are
folded into one row per problem rather than appended. `record_run` applies the life cycle:

* new -> `open` (first_seen = last_seen = the run's as_of);
* found again -> last_seen moves, amount/explanation/severity follow the latest finding;
* resolved by a person -> stays resolved (the person decided; a run does not overrule them);
* resolved automatically by an earlier run and found again -> reopened ("found again");
* waived -> stays waived unless its amount changed: a waiver is for one amount;
* `open` but not found by a run that covered its day and gateway -> resolved by "tieout"
  (the cause disappeared, e.g. the late settlement arrived).

Every status change writes an event, so an auditor can see who or what changed what, when and
why. It lives in tieout's state database beside the settlement file registry (SQLite by
default, Postgres in production; tables created on first use). Writers are serialized (a
transaction-level advisory lock on Postgres, BEGIN IMMEDIATE on SQLite) so a run and a person
resolving an exception at the same moment cannot overwrite each other.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, Final

import sqlalchemy as sa

from tieout.connectors.state import StateTables
from tieout.errors import InputDataError
from tieout.money import format_minor
from tieout.reconcile.model import EXCEPTION_KINDS, STATUSES, ReconException

__all__ = ["AUTO_BY", "Event", "ExceptionStore", "StoredException"]

#: Who a run's own status changes are attributed to.
AUTO_BY: Final = "tieout"
#: Statuses a person must explain.
NEEDS_NOTE: Final[frozenset[str]] = frozenset({"resolved", "waived"})
_CHUNK: Final = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


def _metadata(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    runs = sa.Table(
        "recon_runs",
        md,
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("start_day", sa.Date, nullable=False),
        sa.Column("end_day", sa.Date, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("gateways", sa.Text, nullable=False),  # JSON list
        sa.Column("found", sa.Integer, nullable=False),  # exceptions found by the run
        sa.Column("summary", sa.Text),  # JSON object
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),  # last recording
    )
    exceptions = sa.Table(
        "recon_exceptions",
        md,
        sa.Column("exception_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("gateway", sa.String(32)),
        sa.Column("currency", sa.String(3)),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("payment_id", sa.Text),
        sa.Column("invoice_id", sa.Text),
        sa.Column("settlement_line_id", sa.Text),
        sa.Column("batch_id", sa.Text),
        sa.Column("day", sa.Date),  # business day it is about: scopes auto-resolution
        sa.Column("first_seen", sa.Date, nullable=False),
        sa.Column("last_seen", sa.Date, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_by", sa.Text, nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text),
        # True when the current status was set by a run (not a person): only then may a later
        # run change it back.
        sa.Column("auto", sa.Boolean, nullable=False, default=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("last_run_id", sa.String(200)),
        sa.Index("ix_recon_exceptions_status_day", "status", "day"),
    )
    events = sa.Table(
        "recon_exception_events",
        md,
        sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("exception_id", sa.String(64), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(200)),  # None: a person's change
        sa.Column("from_status", sa.String(16)),  # None: first found
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("by", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
    )
    return md, runs, exceptions, events


@dataclass(frozen=True)
class StoredException(ReconException):
    """An exception as the store holds it: the finding plus who set its status, when and why."""

    status_by: str | None = None
    status_at: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class Event:
    """One status change of one exception (`from_status` None: it was first found)."""

    exception_id: str
    at: datetime
    run_id: str | None
    from_status: str | None
    to_status: str
    by: str
    note: str | None


_FINDING_COLUMNS: Final[tuple[str, ...]] = (
    "kind",
    "severity",
    "gateway",
    "currency",
    "amount_minor",
    "payment_id",
    "invoice_id",
    "settlement_line_id",
    "batch_id",
    "day",
    "explanation",
)
_STORED_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(StoredException))


class ExceptionStore(StateTables):
    def __init__(self, url: str, schema: str | None = "tieout") -> None:
        super().__init__(url, schema)
        if self.engine.dialect.name == "sqlite":
            _sqlite_transactions(self.engine)
        self._md, self.runs, self.exceptions, self.events = _metadata(self.schema)
        # Postgres: one lock per schema, held to the end of a writing transaction.
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"tieout.recon_exceptions:{self.schema}".encode()).digest()[:8],
            "big",
            signed=True,
        )

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A transaction that holds the writers' lock from its first statement."""
        self.ensure()
        engine = self.engine.execution_options(tieout_write=True)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(self._lock_key)))
            yield conn

    # -- runs -------------------------------------------------------------------------------

    def record_run(
        self,
        run_id: str,
        start: date,
        end: date,
        as_of: date,
        gateways: Sequence[str],
        found: Sequence[ReconException],
        summary: dict[str, Any] | None = None,
    ) -> builtins.list[ReconException]:
        """Record a run and fold its findings into the store, all in one transaction.

        Returns the stored state of each of `found`, in order. Recording the same run again
        changes nothing (no new rows, no events).
        """
        if end < start:
            raise InputDataError(f"run {run_id}: end {end} is before start {start}")
        latest: dict[str, ReconException] = {}
        for exc in found:
            latest[exc.exception_id] = exc  # the same id twice: the last finding wins
        now = datetime.now(UTC)
        c = self.exceptions.c
        with self._write() as conn:
            self._upsert_run(conn, run_id, start, end, as_of, gateways, len(latest), summary, now)
            stored = self._rows(conn, builtins.list(latest))
            inserts: builtins.list[dict[str, Any]] = []
            updates: builtins.list[dict[str, Any]] = []
            events: builtins.list[dict[str, Any]] = []

            def event(xid: str, before: str | None, after: str, note: str | None) -> None:
                events.append(
                    {
                        "exception_id": xid,
                        "at": now,
                        "run_id": run_id,
                        "from_status": before,
                        "to_status": after,
                        "by": AUTO_BY,
                        "note": note,
                    }
                )

            for xid, exc in latest.items():
                finding = {col: getattr(exc, col) for col in _FINDING_COLUMNS}
                old = stored.get(xid)
                if old is None:
                    inserts.append(
                        {
                            "exception_id": xid,
                            **finding,
                            "first_seen": as_of,
                            "last_seen": as_of,
                            "status": "open",
                            "status_by": AUTO_BY,
                            "status_at": now,
                            "note": None,
                            "auto": True,
                            "last_run_id": run_id,
                        }
                    )
                    event(xid, None, "open", f"first found on run {run_id} ({as_of})")
                    continue
                new = {
                    **finding,
                    "first_seen": min(old["first_seen"], as_of),
                    "last_seen": max(old["last_seen"], as_of),
                    "last_run_id": run_id,
                }
                if old["status"] == "resolved" and old["auto"]:
                    note = f"found again on run {run_id} ({as_of})"
                    new.update(_status("open", AUTO_BY, now, note, auto=True))
                    event(xid, "resolved", "open", note)
                elif old["status"] == "waived" and old["amount_minor"] != exc.amount_minor:
                    note = (
                        f"amount changed from {_money(old['amount_minor'], old['currency'])} "
                        f"to {_money(exc.amount_minor, exc.currency)} on run {run_id} "
                        f"({as_of}); the waiver was for the old amount"
                    )
                    new.update(_status("open", AUTO_BY, now, note, auto=True))
                    event(xid, "waived", "open", note)
                if any(old[k] != v for k, v in new.items()):
                    updates.append({"b_id": xid, **new})

            # Open exceptions in this run's scope that it did not find: their cause is gone.
            scope = sa.select(c.exception_id).where(
                c.status == "open",
                c.day.between(start, end),
                sa.or_(c.gateway.in_(builtins.list(gateways)), c.gateway.is_(None)),
                # A back-dated run (older as_of) does not overrule a newer run's finding.
                c.last_seen <= as_of,
            )
            note = (
                f"no longer found on run {run_id} ({as_of}): the cause disappeared, "
                "e.g. the late settlement arrived"
            )
            for (xid,) in conn.execute(scope):
                if xid in latest:
                    continue
                updates.append({"b_id": xid, **_status("resolved", AUTO_BY, now, note, auto=True)})
                event(xid, "open", "resolved", note)

            if inserts:
                conn.execute(self.exceptions.insert(), inserts)
            self._update_many(conn, updates)
            if events:
                conn.execute(self.events.insert(), events)
            after = self._rows(conn, builtins.list(latest))
        return [_stored(after[exc.exception_id]) for exc in found]

    def _upsert_run(
        self,
        conn: sa.Connection,
        run_id: str,
        start: date,
        end: date,
        as_of: date,
        gateways: Sequence[str],
        found: int,
        summary: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        values = {
            "start_day": start,
            "end_day": end,
            "as_of": as_of,
            "gateways": json.dumps(builtins.list(gateways)),
            "found": found,
            "summary": None if summary is None else json.dumps(summary, default=str),
            "recorded_at": now,
        }
        r = self.runs.c
        if conn.execute(sa.select(r.run_id).where(r.run_id == run_id)).first() is None:
            conn.execute(self.runs.insert().values(run_id=run_id, **values))
        else:
            conn.execute(self.runs.update().where(r.run_id == run_id).values(**values))

    def run(self, run_id: str) -> dict[str, Any] | None:
        """What was recorded about a run (gateways and summary decoded), or None."""
        self.ensure()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.runs).where(self.runs.c.run_id == run_id)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["gateways"] = json.loads(out["gateways"])
        out["summary"] = None if out["summary"] is None else json.loads(out["summary"])
        out["recorded_at"] = _utc(out["recorded_at"])
        return out

    # -- reading ----------------------------------------------------------------------------

    def list(
        self, status: str | None = None, kind: str | None = None, gateway: str | None = None
    ) -> builtins.list[StoredException]:
        """Stored exceptions, oldest first seen first."""
        if status is not None and status not in STATUSES:
            raise InputDataError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        if kind is not None and kind not in EXCEPTION_KINDS:
            raise InputDataError(f"unknown kind {kind!r}; use one of {', '.join(EXCEPTION_KINDS)}")
        self.ensure()
        c = self.exceptions.c
        q = sa.select(self.exceptions)
        if status is not None:
            q = q.where(c.status == status)
        if kind is not None:
            q = q.where(c.kind == kind)
        if gateway is not None:
            q = q.where(c.gateway == gateway)
        q = q.order_by(c.first_seen, c.exception_id)
        with self.engine.connect() as conn:
            return [_stored(r._mapping) for r in conn.execute(q)]

    def get(self, exception_id: str) -> StoredException | None:
        self.ensure()
        c = self.exceptions.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.exceptions).where(c.exception_id == exception_id)
            ).first()
        return None if row is None else _stored(row._mapping)

    def find(self, prefix: str) -> StoredException:
        """The exception whose id is `prefix` or the only one starting with it."""
        prefix = prefix.strip().lower()
        if not prefix:
            raise InputDataError("give an exception id (or the start of one)")
        exact = self.get(prefix)
        if exact is not None:
            return exact
        c = self.exceptions.c
        q = (
            sa.select(self.exceptions)
            .where(c.exception_id.startswith(prefix, autoescape=True))
            .order_by(c.exception_id)
            .limit(2)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        if len(rows) != 1:
            found = "no exception" if not rows else "more than one exception"
            raise InputDataError(
                f"{found} has an id starting {prefix!r}; see `tieout exceptions list`"
            )
        return _stored(rows[0]._mapping)

    def history(self, exception_id: str) -> builtins.list[Event]:
        """The exception's status changes, oldest first."""
        self.ensure()
        e = self.events.c
        q = sa.select(self.events).where(e.exception_id == exception_id).order_by(e.event_id)
        with self.engine.connect() as conn:
            return [
                Event(
                    exception_id=r.exception_id,
                    at=_utc(r.at),
                    run_id=r.run_id,
                    from_status=r.from_status,
                    to_status=r.to_status,
                    by=r.by,
                    note=r.note,
                )
                for r in conn.execute(q)
            ]

    # -- a person's decisions ---------------------------------------------------------------

    def set_status(
        self, exception_id: str, status: str, by: str, note: str | None = None
    ) -> StoredException:
        """Resolve, waive or reopen one exception (resolved and waived need a note)."""
        if status not in STATUSES:
            raise InputDataError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if status in NEEDS_NOTE and not (note or "").strip():
            raise InputDataError(f"{status} needs a note saying why")
        if self.get(exception_id) is None:
            raise InputDataError(f"no exception {exception_id!r}; see `tieout exceptions list`")
        self.apply_updates([(exception_id, status, note)], by)
        result = self.get(exception_id)
        assert result is not None  # apply_updates checked it exists
        return result

    def apply_updates(
        self,
        updates: Sequence[tuple[str, str, str | None]],
        by: str,
        labels: Sequence[str] | None = None,
    ) -> int:
        """Apply (exception_id, status, note) decisions all or nothing; how many changed.

        Every update is checked before anything is written, and one `InputDataError` lists
        every bad one (named by `labels[i]`, e.g. "Exceptions row 12", when given). An update
        that matches what is stored is skipped; a missing note on an unchanged status keeps
        the stored note.
        """
        by = (by or "").strip()
        if not by:
            raise InputDataError("say who made the change (--by or $TIEOUT_USER)")
        if labels is not None and len(labels) != len(updates):
            raise ValueError("labels must name each update")
        wanted: builtins.list[tuple[str, str, str, str | None]] = []
        for i, (xid, status, note) in enumerate(updates):
            label = labels[i] if labels is not None else f"update {i + 1}"
            wanted.append(
                (
                    label,
                    (xid or "").strip().lower(),
                    (status or "").strip().lower(),
                    (note or "").strip() or None,
                )
            )
        now = datetime.now(UTC)
        with self._write() as conn:
            stored = self._rows(conn, [xid for _, xid, _, _ in wanted])
            problems: builtins.list[str] = []
            decided: dict[str, tuple[str, str, str | None]] = {}
            for label, xid, status, note in wanted:
                where = f"{label} ({xid or 'no id'})"
                before = len(problems)
                old = stored.get(xid)
                # Unchanged and already explained (a re-imported report): the note may be left out.
                explained = old is not None and old["status"] == status and bool(old["note"])
                if not xid:
                    problems.append(f"{label}: no exception id")
                elif old is None:
                    problems.append(f"{where}: unknown exception id")
                if status not in STATUSES:
                    problems.append(
                        f"{where}: status {status!r} is not one of {', '.join(STATUSES)}"
                    )
                elif status in NEEDS_NOTE and note is None and not explained:
                    problems.append(f"{where}: {status} needs a note saying why")
                if len(problems) > before:
                    continue
                if xid in decided and decided[xid][1:] != (status, note):
                    problems.append(f"{where}: conflicts with {decided[xid][0]}, same exception")
                decided.setdefault(xid, (label, status, note))
            if problems:
                n = len(problems)
                raise InputDataError(
                    f"{n} bad status update(s), nothing changed: " + "; ".join(problems)
                )
            changes: builtins.list[dict[str, Any]] = []
            events: builtins.list[dict[str, Any]] = []
            for xid, (_, status, note) in decided.items():
                old = stored[xid]
                if status == old["status"] and (note is None or note == old["note"]):
                    continue
                changes.append({"b_id": xid, **_status(status, by, now, note, auto=False)})
                events.append(
                    {
                        "exception_id": xid,
                        "at": now,
                        "run_id": None,
                        "from_status": old["status"],
                        "to_status": status,
                        "by": by,
                        "note": note,
                    }
                )
            self._update_many(conn, changes)
            if events:
                conn.execute(self.events.insert(), events)
        return len(changes)

    # -- helpers ----------------------------------------------------------------------------

    def _rows(self, conn: sa.Connection, ids: Sequence[str]) -> dict[str, sa.RowMapping]:
        c = self.exceptions.c
        unique = sorted(set(ids))
        out: dict[str, sa.RowMapping] = {}
        for i in range(0, len(unique), _CHUNK):
            chunk = unique[i : i + _CHUNK]
            for row in conn.execute(sa.select(self.exceptions).where(c.exception_id.in_(chunk))):
                out[row.exception_id] = row._mapping
        return out

    def _update_many(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        """UPDATE ... WHERE exception_id = :b_id, batched by the set of columns changed."""
        by_columns: dict[tuple[str, ...], builtins.list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(sorted(k for k in row if k != "b_id")), []).append(row)
        c = self.exceptions.c
        for columns, batch in by_columns.items():
            stmt = (
                self.exceptions.update()
                .where(c.exception_id == sa.bindparam("b_id"))
                .values({col: sa.bindparam(col) for col in columns})
            )
            conn.execute(stmt, batch)


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Real transactions on SQLite: pysqlite otherwise runs the reads of a transaction outside
    it; writers take the write lock at BEGIN so read-then-write cannot lose an update."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("tieout_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _status(status: str, by: str, at: datetime, note: str | None, *, auto: bool) -> dict[str, Any]:
    return {"status": status, "status_by": by, "status_at": at, "note": note, "auto": auto}


def _money(amount_minor: int, currency: str | None) -> str:
    if currency:
        try:
            return format_minor(amount_minor, currency)
        except ValueError:
            pass
    return f"{amount_minor} (minor units)"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:  # SQLite drops the zone; it was written as UTC
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _stored(m: sa.RowMapping) -> StoredException:
    values = {name: m[name] for name in _STORED_FIELDS}
    values["status_at"] = _utc(values["status_at"])
    return StoredException(**values)
