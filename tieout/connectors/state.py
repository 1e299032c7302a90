"""tieout's own state database: the registry of settlement files it has seen.

A file is known by the SHA-256 of its bytes, so the same report delivered twice, or again under
a new name, is recognized and never counted twice; every path it was seen under is kept as a
sighting. SQLite by default (one file beside the settings), Postgres in production; the tables
are created on first use. Registering is an insert that loses gracefully to a concurrent run
that registered the same file first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError

from tieout.errors import ConfigError, TransientError

LOADED: Final = "loaded"
QUARANTINED: Final = "quarantined"


class StateDatabaseUnavailable(TransientError):
    """The state database could not be reached: retry later."""


def _metadata(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    files = sa.Table(
        "settlement_files",
        md,
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("path", sa.Text, nullable=False),  # where it was first seen
        sa.Column("status", sa.String(16), nullable=False),  # loaded | quarantined
        sa.Column("format", sa.String(80)),
        sa.Column("lines", sa.Integer, nullable=False, default=0),
        sa.Column("first_day", sa.Date),  # business days its lines fall in (finance time zone)
        sa.Column("last_day", sa.Date),
        sa.Column("staged", sa.Text),  # lake key of its canonical lines
        sa.Column("findings", sa.Text),  # JSON list
        sa.Column("controls", sa.Text),  # JSON list
        sa.Column("error", sa.Text),
        sa.Column("error_line", sa.Integer),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    )
    sightings = sa.Table(
        "settlement_file_sightings",
        md,
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger),  # with `stamp`: lets a rescan skip unchanged files
        sa.Column("stamp", sa.Text),
    )
    return md, files, sightings


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    gateway: str
    path: str
    status: str
    format: str | None
    lines: int
    first_day: date | None
    last_day: date | None
    staged: str | None
    findings: list[dict[str, Any]]
    controls: list[dict[str, Any]]
    error: str | None
    error_line: int | None
    registered_at: datetime


class StateTables:
    """One connection to tieout's state database and the tables a subclass keeps there:
    created on first use, in `schema` on Postgres (SQLite has none)."""

    _md: sa.MetaData

    def __init__(self, url: str, schema: str | None = "tieout") -> None:
        try:
            self.engine = sa.create_engine(url)
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ConfigError(f"state.url: not a usable SQLAlchemy URL ({exc})") from None
        if self.engine.dialect.name == "sqlite":
            schema = None
            db = self.engine.url.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._ready = False

    def dispose(self) -> None:
        self.engine.dispose()

    def ensure(self) -> None:
        if self._ready:
            return
        try:
            with self.engine.begin() as conn:
                if self.schema:
                    conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                self._md.create_all(conn, checkfirst=True)
        except OperationalError as exc:
            raise StateDatabaseUnavailable(
                f"state database unreachable ({type(exc.orig).__name__}); check state.url"
            ) from None
        self._ready = True


class StateDatabase(StateTables):
    """The registry of settlement files."""

    def __init__(self, url: str, schema: str | None = "tieout") -> None:
        super().__init__(url, schema)
        self._md, self.files, self.sightings = _metadata(self.schema)

    def get(self, sha256: str) -> FileRecord | None:
        self.ensure()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.files).where(self.files.c.sha256 == sha256)).first()
        return None if row is None else _record(row._mapping)

    def sight(self, sha256: str, path: str, size: int | None = None, stamp: str = "") -> bool:
        """Record that `sha256` was seen at `path`; False when that sighting was known."""
        self.ensure()
        c = self.sightings.c
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    self.sightings.insert().values(
                        sha256=sha256,
                        path=path,
                        first_seen_at=datetime.now(UTC),
                        size=size,
                        stamp=stamp or None,
                    )
                )
        except IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(
                    self.sightings.update()
                    .where(c.sha256 == sha256, c.path == path)
                    .values(size=size, stamp=stamp or None)
                )
            return False
        return True

    def unchanged(self) -> dict[tuple[str, int, str], str]:
        """(path, size, stamp) -> sha256 of every sighting with a stamp: what a rescan may
        trust without reading the file again."""
        self.ensure()
        c = self.sightings.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.path, c.size, c.stamp, c.sha256).where(c.stamp.is_not(None))
            )
            return {(r.path, r.size, r.stamp): r.sha256 for r in rows}

    def paths(self, sha256: str) -> list[str]:
        self.ensure()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.sightings.c.path)
                .where(self.sightings.c.sha256 == sha256)
                .order_by(self.sightings.c.path)
            )
            return [r[0] for r in rows]

    def register(self, record: FileRecord) -> bool:
        """Insert `record`; False when another run registered the same content first."""
        self.ensure()
        values = {
            "sha256": record.sha256,
            "gateway": record.gateway,
            "path": record.path,
            "status": record.status,
            "format": record.format,
            "lines": record.lines,
            "first_day": record.first_day,
            "last_day": record.last_day,
            "staged": record.staged,
            "findings": json.dumps(record.findings, sort_keys=True),
            "controls": json.dumps(record.controls, sort_keys=True),
            "error": record.error,
            "error_line": record.error_line,
            "registered_at": record.registered_at,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(self.files.insert().values(**values))
        except IntegrityError:
            return False
        return True

    def forget(self, sha256: str) -> None:
        """Drop a registration (e.g. to re-read a quarantined file after a tieout upgrade)."""
        self.ensure()
        with self.engine.begin() as conn:
            conn.execute(self.sightings.delete().where(self.sightings.c.sha256 == sha256))
            conn.execute(self.files.delete().where(self.files.c.sha256 == sha256))

    def records(
        self,
        *,
        status: str | None = None,
        day: date | None = None,
        gateways: Sequence[str] | None = None,
    ) -> list[FileRecord]:
        """Registered files, oldest registration first (the first delivery wins a tie)."""
        self.ensure()
        q = sa.select(self.files)
        c = self.files.c
        if status is not None:
            q = q.where(c.status == status)
        if day is not None:
            q = q.where(c.first_day <= day, c.last_day >= day)
        if gateways is not None:
            q = q.where(c.gateway.in_(list(gateways)))
        q = q.order_by(c.registered_at, c.sha256)
        with self.engine.connect() as conn:
            return [_record(r._mapping) for r in conn.execute(q)]


def _record(m: Any) -> FileRecord:
    reg = m["registered_at"]
    if reg is not None and reg.tzinfo is None:  # SQLite drops the zone; it was written as UTC
        reg = reg.replace(tzinfo=UTC)
    return FileRecord(
        sha256=m["sha256"],
        gateway=m["gateway"],
        path=m["path"],
        status=m["status"],
        format=m["format"],
        lines=m["lines"],
        first_day=m["first_day"],
        last_day=m["last_day"],
        staged=m["staged"],
        findings=json.loads(m["findings"] or "[]"),
        controls=json.loads(m["controls"] or "[]"),
        error=m["error"],
        error_line=m["error_line"],
        registered_at=reg,
    )
