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
from typing import Any, Final

import sqlalchemy as sa

from tieout.connectors.state import StateTables

PENDING: Final = "pending"
SENT: Final = "sent"
CONFIRMED: Final = "confirmed"
FAILED: Final = "failed"
STATUSES: Final = (PENDING, SENT, CONFIRMED, FAILED)
_CHUNK: Final = 500


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


def _now() -> datetime:
    return datetime.now(UTC)


class PostingLedger(StateTables):
    def __init__(self, url: str, schema: str | None = "tieout") -> None:
        super().__init__(url, schema)
        self._md, self.table = _metadata(self.schema)
        # SQLite has one writer at a time, and a writer that finds the database locked
        # sleeps in growing steps (up to 100 ms) before it looks again; the poster's threads
        # take turns on this lock instead. Other databases lock rows, not the file.
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else None

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

    def states(self, system: str, external_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """(status, payload_hash) by external id, for the rows that exist: what `rows` says
        about them without reading their payloads."""
        self.ensure()
        t = self.table
        out: dict[str, tuple[str, str]] = {}
        ids = sorted(set(external_ids))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _CHUNK):
                q = sa.select(t.c.external_id, t.c.status, t.c.payload_hash).where(
                    t.c.system == system, t.c.external_id.in_(ids[i : i + _CHUNK])
                )
                for ext, status, digest in conn.execute(q):
                    out[ext] = (status, digest)
        return out

    def stage(
        self,
        system: str,
        record_type: str,
        records: Sequence[tuple[str, str, str, str, Mapping[str, Any]]],
    ) -> None:
        """Write (external_id, base_id, kind, hash, payload) as `pending` before sending.

        A `confirmed` row keeps its status only if its hash is unchanged (an in-place update
        re-sends it); a `sent` row keeps its status (its outcome must be read back first).
        """
        self.ensure()
        t = self.table
        now = _now()
        existing = self.states(system, [r[0] for r in records])
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for ext, base, kind, digest, payload in records:
            state = existing.get(ext)
            values = {
                "record_type": record_type,
                "base_id": base,
                "kind": kind,
                "payload_hash": digest,
                "payload": json.dumps(payload, sort_keys=True),
                "updated_at": now,
            }
            if state is None:
                inserts.append(
                    {"system": system, "external_id": ext, "status": PENDING, "attempts": 0,
                     "created_at": now, **values}
                )  # fmt: skip
            elif state[0] == SENT or state == (CONFIRMED, digest):
                continue
            else:
                updates.append({"_ext": ext, "status": PENDING, "last_error": None, **values})
        with self._write() as conn:
            # One statement per kind, executed for many rows (executemany).
            if inserts:
                conn.execute(sa.insert(t), inserts)
            self._update_each(conn, system, updates)

    def mark_sent(self, system: str, external_ids: Sequence[str]) -> None:
        """Just before the request leaves: from here until the answer, the outcome is unknown."""
        self._set(system, external_ids, status=SENT, sent_at=_now(),
                  attempts=self.table.c.attempts + 1)  # fmt: skip

    def mark_confirmed(self, system: str, internal_ids: Mapping[str, str]) -> None:
        now = _now()
        self._set_each(
            system,
            [{"_ext": ext, "internal_id": iid} for ext, iid in internal_ids.items()],
            status=CONFIRMED, last_error=None, updated_at=now, confirmed_at=now,
        )  # fmt: skip

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
