"""The posting ledger: one row per record tieout sends to an outside system, by external id.

It is what makes posting exactly-once in effect. A row is written `pending` with its payload
and hash before anything is sent, moved to `sent` (attempts + 1) in its own transaction just
before the request leaves, and to `confirmed` (with the system's internal id) or `failed`
(with the error) when the answer comes. A row left `sent` means the outcome is unknown (a
timeout after the write, a killed process): the poster reads the record back by external id
before sending anything again. Re-runs skip `confirmed` rows whose hash is unchanged.

Shared by every target system (`system` column: netsuite, salesforce), in tieout's state
database beside the exception store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Final

import sqlalchemy as sa

from tieout.connectors.state import StateTables

PENDING: Final = "pending"
SENT: Final = "sent"
CONFIRMED: Final = "confirmed"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, SENT, CONFIRMED, FAILED)
_CHUNK: Final = 500
#: From this many keys, a lookup scans the system's rows if they are at most _SCAN_RATIO
#: times as many (see `PostingLedger._keyed`).
_SCAN_FROM: Final = 5_000
_SCAN_RATIO: Final = 3


def _metadata(schema: str | None) -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData(schema=schema)
    ledger = sa.Table(
        "posting_ledger",
        md,
        sa.Column("system", sa.String(32), primary_key=True),
        sa.Column("external_id", sa.String(255), primary_key=True),
        sa.Column("record_type", sa.String(64), nullable=False),
        sa.Column("base_id", sa.String(255), nullable=False),  # the entry it belongs to
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),  # JSON, what was (to be) sent
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("last_error", sa.Text),
        sa.Column("internal_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
    )
    sa.Index("ix_posting_ledger_base", ledger.c.system, ledger.c.base_id)
    return md, ledger


@dataclass(frozen=True)
class LedgerRow:
    system: str
    external_id: str
    record_type: str
    base_id: str
    kind: str
    payload_hash: str
    payload: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    internal_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class KeyState:
    """A ledger row without its payload."""

    external_id: str
    base_id: str
    status: str
    payload_hash: str


def _now() -> datetime:
    return datetime.now(UTC)


_STAGE_TRANSACTION: Final = 1_000


class PostingLedger(StateTables):
    def __init__(self, url: str, schema: str | None = "tieout") -> None:
        super().__init__(url, schema)
        self._md, self.table = _metadata(self.schema)
        # SQLite has one writer at a time, and a writer that finds the database locked
        # sleeps in growing steps (up to 100 ms) before it looks again; the poster's threads
        # take turns on this lock instead. Other databases lock rows, not the file.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None

    def _sql(self, conn: sa.Connection, sql: str) -> str:
        table = conn.dialect.identifier_preparer.format_table(self.table)
        sql = sql.replace("{t}", table)
        return sql.replace("?", "%s") if conn.dialect.paramstyle in ("format", "pyformat") else sql

    def _chunked(
        self, conn: sa.Connection, sql: str, rows: Sequence[tuple[Any, ...]], *,
        before: tuple[Any, ...] = (), after: tuple[Any, ...] = (),
    ) -> None:  # fmt: skip
        """`sql` with `{rows}` standing for `(?, ...), (?, ...)`: many rows in a few statements.

        One statement is one step of the database, where executemany steps once a row;
        sqlite3 lets go of the GIL for each step and must win it back, which with the
        poster's threads busy took a 200-row update from about 1 ms to about 30 ms. `before`
        and `after`: parameters of the statement's other placeholders, around the rows'."""
        if not rows:
            return
        width = len(rows[0])
        per = max(1, min(500, 30_000 // width))  # SQLite allows 32,766 parameters
        one = "(" + ", ".join("?" * width) + ")"
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            text = self._sql(conn, sql.replace("{rows}", ", ".join([one] * len(chunk))))
            params = (*before, *chain.from_iterable(chunk), *after)
            conn.exec_driver_sql(text, params)

    def _stamp(self, conn: sa.Connection, moment: datetime) -> Any:
        """A timestamp as the driver takes it for this ledger's DateTime columns."""
        impl = self.table.c.updated_at.type.dialect_impl(conn.dialect)
        process = impl.bind_processor(conn.dialect)  # SQLite: the same text Core writes
        return process(moment) if process else moment

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (one writer of this ledger at a time on SQLite)."""
        with self._write_lock or nullcontext(), self.engine.begin() as conn:
            yield conn

    def rows(
        self,
        system: str,
        *,
        external_ids: Iterable[str] | None = None,
        base_ids: Iterable[str] | None = None,
        statuses: Sequence[str] | None = None,
    ) -> dict[str, LedgerRow]:
        """Rows by external id (all of `system`'s when no filter is given)."""
        self.ensure()
        t = self.table
        out: dict[str, LedgerRow] = {}

        def fetch(cond: Any) -> None:
            q = sa.select(t).where(t.c.system == system)
            if cond is not None:
                q = q.where(cond)
            if statuses is not None:
                q = q.where(t.c.status.in_(list(statuses)))
            with self.engine.connect() as conn:
                for m in conn.execute(q.order_by(t.c.external_id)).mappings():
                    out[m["external_id"]] = _row(m)

        if external_ids is None and base_ids is None:
            fetch(None)
            return out
        for col, values in ((t.c.external_id, external_ids), (t.c.base_id, base_ids)):
            if values is None:
                continue
            ids = sorted(set(values))
            for i in range(0, len(ids), _CHUNK):
                fetch(col.in_(ids[i : i + _CHUNK]))
        return dict(sorted(out.items()))

    def _keyed(
        self, system: str, columns: Sequence[Any], key: Any, ids: Iterable[str]
    ) -> Iterator[tuple[Any, ...]]:
        """`columns` of `system`'s rows whose `key` is one of `ids` (`key` first in each row).

        Many ids against a ledger not much bigger than them (a first load, a re-run of the
        same plan) are read in one scan of the system's rows: a million keys in chunks of
        `IN (...)` cost seconds more than the scan. Otherwise the rows come in chunks."""
        self.ensure()
        t = self.table
        wanted = set(ids)
        if not wanted:
            return
        with self.engine.connect() as conn:
            if len(wanted) >= _SCAN_FROM:
                count = sa.select(sa.func.count()).select_from(t).where(t.c.system == system)
                if conn.execute(count).scalar_one() <= _SCAN_RATIO * len(wanted):
                    scan = sa.select(key, *columns).where(t.c.system == system)
                    for row in conn.execute(scan):
                        if row[0] in wanted:
                            yield tuple(row)
                    return
            chunks = sorted(wanted)  # sorted only for chunks (a scan needs no order)
            for i in range(0, len(chunks), _CHUNK):
                q = sa.select(key, *columns).where(
                    t.c.system == system, key.in_(chunks[i : i + _CHUNK])
                )
                for row in conn.execute(q):
                    yield tuple(row)

    def key_states(self, system: str, *, base_ids: Iterable[str]) -> dict[str, KeyState]:
        """The rows of these bases without their payloads, by external id."""
        t = self.table
        cols = (t.c.external_id, t.c.status, t.c.payload_hash)
        return {
            ext: KeyState(ext, base, status, digest)
            for base, ext, status, digest in self._keyed(system, cols, t.c.base_id, base_ids)
        }

    def states(self, system: str, external_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(status, payload_hash) by external id, for the rows that exist: what `rows` says
        about them without reading their payloads."""
        t = self.table
        cols = (t.c.status, t.c.payload_hash)
        return {
            ext: (status, digest)
            for ext, status, digest in self._keyed(system, cols, t.c.external_id, external_ids)
        }

    def stage(
        self,
        system: str,
        record_type: str,
        records: Sequence[tuple[str, str, str, str, Mapping[str, Any] | str]],
        existing: Mapping[str, tuple[str, str]] | None = None,
    ) -> dict[str, tuple[str, str]]:
        """Write (external_id, base_id, kind, hash, payload) as `pending` before sending;
        returns each record's (status, payload_hash) as staged, as `states` would.

        A `confirmed` row keeps its status only if its hash is unchanged (an in-place update
        re-sends it); a `sent` row keeps its status (its outcome must be read back first).
        `existing`: the records' `states`, when the caller read them for many stages at once.
        """
        self.ensure()
        now = _now()
        if existing is None:
            existing = self.states(system, [r[0] for r in records])
        after: dict[str, tuple[str, str]] = {}
        inserts: list[tuple[str, str, str, str, str]] = []
        updates: list[dict[str, Any]] = []
        for ext, base, kind, digest, payload in records:
            state = existing.get(ext)
            if state is not None and (state[0] == SENT or state == (CONFIRMED, digest)):
                after[ext] = state
                continue
            after[ext] = (PENDING, digest)
            # A str payload is already canonical JSON (made for its hash).
            text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
            if state is None:
                inserts.append((ext, base, kind, digest, text))
            else:
                updates.append(
                    {"_ext": ext, "status": PENDING, "last_error": None, "record_type": record_type,
                     "base_id": base, "kind": kind, "payload_hash": digest, "payload": text,
                     "updated_at": now}
                )  # fmt: skip
        columns = ("system", "external_id", "record_type", "base_id", "kind", "payload_hash",
                   "payload", "status", "attempts", "created_at", "updated_at")  # fmt: skip
        # Written a thousand rows a transaction: the poster's threads mark their requests
        # sent and confirmed between them instead of waiting for a whole window.
        step = _STAGE_TRANSACTION
        for start in range(0, max(len(inserts), len(updates)), step):
            with self._write() as conn:
                stamp = self._stamp(conn, now)
                self._chunked(
                    conn,
                    # Fixed column names, no input: nothing to inject.
                    f"INSERT INTO {{t}} ({', '.join(columns)}) VALUES {{rows}}",  # noqa: S608
                    [(system, ext, record_type, base, kind, digest, text, PENDING, 0, stamp, stamp)
                     for ext, base, kind, digest, text in inserts[start : start + step]],
                )  # fmt: skip
                self._update_each(conn, system, updates[start : start + step])
        return after

    def mark_sent(self, system: str, external_ids: Sequence[str]) -> None:
        """Just before the request leaves: from here until the answer, the outcome is unknown."""
        self.ensure()
        with self._write() as conn:
            stamp = self._stamp(conn, _now())
            self._chunked(
                conn,
                "UPDATE {t} SET status = ?, sent_at = ?, updated_at = ?, attempts = attempts + 1 "
                "WHERE system = ? AND external_id IN ({rows})",
                [(ext,) for ext in external_ids],
                before=(SENT, stamp, stamp, system),
            )

    def mark_confirmed(self, system: str, internal_ids: Mapping[str, str]) -> None:
        self.ensure()
        if not internal_ids:
            return
        with self._write() as conn:
            stamp = self._stamp(conn, _now())
            # VALUES rows are named column1, column2, ... by SQLite and PostgreSQL alike.
            self._chunked(
                conn,
                "UPDATE {t} SET status = ?, internal_id = v.column2, last_error = NULL, "
                "updated_at = ?, confirmed_at = ? FROM (VALUES {rows}) AS v "
                "WHERE {t}.system = ? AND {t}.external_id = v.column1",
                list(internal_ids.items()),
                before=(CONFIRMED, stamp, stamp),
                after=(system,),
            )

    def mark_failed(self, system: str, errors: Mapping[str, str]) -> None:
        self._set_each(
            system,
            [{"_ext": ext, "last_error": err[:2000]} for ext, err in errors.items()],
            status=FAILED, updated_at=_now(),
        )  # fmt: skip

    def _set_each(self, system: str, params: Sequence[dict[str, Any]], **values: Any) -> None:
        self.ensure()
        if not params:
            return
        with self._write() as conn:
            self._update_each(conn, system, params, **values)

    def _update_each(
        self, conn: sa.Connection, system: str, params: Sequence[dict[str, Any]], **values: Any
    ) -> None:
        """Per-row values (`params`, each keyed by `_ext`, the external id, and all with the
        same keys) and shared `values`: one UPDATE statement executed for all the rows."""
        if not params:
            return
        t = self.table
        # Bind names must differ from the names of the columns they set.
        per_row: dict[str, Any] = {k: sa.bindparam(f"_v_{k}") for k in params[0] if k != "_ext"}
        stmt = (
            sa.update(t)
            .where(t.c.system == system, t.c.external_id == sa.bindparam("_ext"))
            .values(**values, **per_row)
        )
        conn.execute(stmt, [{(k if k == "_ext" else f"_v_{k}"): v for k, v in p.items()}
                            for p in params])  # fmt: skip

    def mark_pending(self, system: str, external_ids: Sequence[str], error: str) -> None:
        """Read back and not there: it was never written; send it again."""
        self._set(system, external_ids, status=PENDING, last_error=error[:2000])

    def _set(self, system: str, external_ids: Sequence[str], **values: Any) -> None:
        self.ensure()
        t = self.table
        ids = list(external_ids)
        with self._write() as conn:
            for i in range(0, len(ids), _CHUNK):
                conn.execute(
                    sa.update(t)
                    .where(t.c.system == system, t.c.external_id.in_(ids[i : i + _CHUNK]))
                    .values(updated_at=_now(), **values)
                )


def _row(m: Any) -> LedgerRow:
    return LedgerRow(
        system=m["system"],
        external_id=m["external_id"],
        record_type=m["record_type"],
        base_id=m["base_id"],
        kind=m["kind"],
        payload_hash=m["payload_hash"],
        payload=json.loads(m["payload"]),
        status=m["status"],
        attempts=int(m["attempts"] or 0),
        last_error=m["last_error"],
        internal_id=m["internal_id"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )
