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
from collections.abc import Iterable, Mapping, Sequence
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
        existing = self.rows(system, external_ids=[r[0] for r in records])
        with self.engine.begin() as conn:
            for ext, base, kind, digest, payload in records:
                row = existing.get(ext)
                values = {
                    "record_type": record_type,
                    "base_id": base,
                    "kind": kind,
                    "payload_hash": digest,
                    "payload": json.dumps(payload, sort_keys=True),
                    "updated_at": now,
                }
                if row is None:
                    conn.execute(
                        sa.insert(t).values(
                            system=system,
                            external_id=ext,
                            status=PENDING,
                            attempts=0,
                            created_at=now,
                            **values,
                        )
                    )
                elif row.status == SENT or (row.status == CONFIRMED and row.payload_hash == digest):
                    continue
                else:
                    conn.execute(
                        sa.update(t)
                        .where(t.c.system == system, t.c.external_id == ext)
                        .values(status=PENDING, last_error=None, **values)
                    )

    def mark_sent(self, system: str, external_ids: Sequence[str]) -> None:
        """Just before the request leaves: from here until the answer, the outcome is unknown."""
        self._set(system, external_ids, status=SENT, sent_at=_now(),
                  attempts=self.table.c.attempts + 1)  # fmt: skip

    def mark_confirmed(self, system: str, internal_ids: Mapping[str, str]) -> None:
        self.ensure()
        t = self.table
        now = _now()
        with self.engine.begin() as conn:
            for ext, iid in internal_ids.items():
                conn.execute(
                    sa.update(t)
                    .where(t.c.system == system, t.c.external_id == ext)
                    .values(
                        status=CONFIRMED,
                        internal_id=iid,
                        last_error=None,
                        updated_at=now,
                        confirmed_at=now,
                    )
                )

    def mark_failed(self, system: str, errors: Mapping[str, str]) -> None:
        self.ensure()
        t = self.table
        now = _now()
        with self.engine.begin() as conn:
            for ext, err in errors.items():
                conn.execute(
                    sa.update(t)
                    .where(t.c.system == system, t.c.external_id == ext)
                    .values(status=FAILED, last_error=err[:2000], updated_at=now)
                )

    def mark_pending(self, system: str, external_ids: Sequence[str], error: str) -> None:
        """Read back and not there: it was never written; send it again."""
        self._set(system, external_ids, status=PENDING, last_error=error[:2000])

    def _set(self, system: str, external_ids: Sequence[str], **values: Any) -> None:
        self.ensure()
        t = self.table
        ids = list(external_ids)
        with self.engine.begin() as conn:
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
