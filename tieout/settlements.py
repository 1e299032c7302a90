"""Load gateway settlement files into daily canonical partitions: the library the assets call.

Two steps, both safe to re-run:

1. `scan_settlements` walks `<path>/<gateway>/...`, recognizes every file by the SHA-256 of its
   bytes (a re-delivery, under any name, is a sighting of a known file, never a second load),
   parses each new file whole, stages its canonical lines in the lake and registers it in the
   state database. A file that cannot be used is copied to the quarantine with a `.error.json`
   sidecar (file, line, reason, fix) and registered as quarantined; the other files still load.
2. `build_lines_partition` assembles one business day from the staged lines of the files that
   cover it, keeping one line per (gateway, line_id): the same balance transaction in two Stripe
   reports, or a payout report delivered twice, is counted once. `build_payouts_partition`
   totals every batch whose payout falls on the day, from all its lines, and says whether it
   ties out (its lines and its payout net to zero).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from tieout.canonical import local_days
from tieout.connectors.lake import Lake
from tieout.connectors.settlements import (
    GATEWAYS,
    ControlTotal,
    SettlementFileError,
    check_controls,
    parse_file,
)
from tieout.connectors.settlements.base import SETTLEMENT_LINE_SCHEMA, lines_to_arrow
from tieout.connectors.state import LOADED, QUARANTINED, FileRecord, StateDatabase
from tieout.connectors.storage import Storage
from tieout.errors import ConfigError

SETTLEMENT_LINES: Final = ("settlements", "lines")
PAYOUTS: Final = ("settlements", "payouts")
STAGE_PREFIX: Final = "settlements/_files"
#: How far back a payout's lines may lie (Stripe's longest standard payout delay is 30 days).
PAYOUT_LOOKBACK_DAYS: Final = 62

PAYOUT_SCHEMA: Final = pa.schema(
    [
        pa.field("gateway", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("payout_day", pa.date32(), nullable=False),
        pa.field("lines", pa.int64(), nullable=False),
        pa.field("gross_minor", pa.int64(), nullable=False),
        pa.field("fee_minor", pa.int64(), nullable=False),
        pa.field("net_minor", pa.int64(), nullable=False),  # the lines, payout lines excluded
        pa.field("payout_minor", pa.int64(), nullable=False),  # the payout lines' net (signed)
        pa.field("difference_minor", pa.int64(), nullable=False),  # net + payout; 0 ties out
        pa.field("has_payout", pa.bool_(), nullable=False),
        pa.field("ties_out", pa.bool_(), nullable=False),
    ]
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class FileOutcome:
    path: str
    gateway: str | None
    status: str  # loaded | quarantined | duplicate | known | ignored
    sha256: str | None = None
    lines: int = 0
    format: str | None = None
    reason: str | None = None
    quarantined_to: str | None = None


@dataclass
class ScanOutcome:
    files: list[FileOutcome] = field(default_factory=list)
    missing_source: bool = False  # the local settlement folder does not exist

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    def summary(self) -> str:
        parts = [
            f"{self.count(s)} {s}"
            for s in ("loaded", "quarantined", "duplicate", "known", "ignored")
            if self.count(s)
        ]
        return ", ".join(parts) or "no files"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gateway_of(key: str) -> tuple[str | None, str | None]:
    """The gateway folder a key sits in, or why the key is not a settlement file."""
    parts = PurePosixPath(key).parts
    if any(p.startswith((".", "_")) for p in parts):
        return None, None  # hidden files, _quarantine and other tieout folders: not input
    if len(parts) < 2:
        return None, f"not under a gateway folder ({', '.join(GATEWAYS)})"
    if parts[0] not in GATEWAYS:
        return None, f"folder {parts[0]!r} is not a gateway ({', '.join(GATEWAYS)})"
    return parts[0], None


def _days(lines: pa.Table, timezone: str) -> tuple[date | None, date | None]:
    if lines.num_rows == 0:
        return None, None
    days = local_days(lines.column("occurred_at"), timezone)
    lo, hi = pc.min(days).as_py(), pc.max(days).as_py()
    return lo, hi


def _control_days(controls: Sequence[ControlTotal]) -> tuple[date | None, date | None]:
    """A file of stated totals covers the days its batches name (`YYYY-MM-DD/...`)."""
    found = []
    for c in controls:
        try:
            found.append(date.fromisoformat(c.batch_id[:10]))
        except ValueError:
            continue
    return (min(found), max(found)) if found else (None, None)


def _quarantine(
    quarantine: Storage, gateway: str, key: str, uri: str, sha: str, data: bytes, error: Exception
) -> str:
    name = PurePosixPath(key).name
    target = f"{gateway}/{sha[:12]}-{name}"
    where = quarantine.write(target, data)
    sidecar: dict[str, Any] = {
        "file": uri,
        "gateway": gateway,
        "sha256": sha,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if isinstance(error, SettlementFileError):
        sidecar.update(line=error.line, reason=error.reason, fix=error.fix, error=str(error))
    else:  # a parser bug must not stop the other files either
        sidecar.update(
            line=None,
            reason=f"unexpected {type(error).__name__}: {error}",
            fix="this is a tieout bug: report it with the file",
            error=str(error),
        )
    quarantine.write(target + ".error.json", (json.dumps(sidecar, indent=2) + "\n").encode())
    return where


def scan_settlements(
    source: Storage,
    quarantine: Storage,
    state: StateDatabase,
    lake: Lake,
    timezone: str,
    progress: Progress | None = None,
) -> ScanOutcome:
    """Register and stage every new settlement file under `source`; see the module docstring."""
    outcome = ScanOutcome()
    if not source.is_s3 and not Path(source.root).is_dir():
        outcome.missing_source = True
        if progress:
            progress(f"no settlement folder at {source.root} (settlements.path): no files read")
        return outcome
    unchanged = state.unchanged()
    records = {r.sha256: r for r in state.records()}
    for stored in source.list():
        gateway, why_not = _gateway_of(stored.key)
        uri = source.uri(stored.key)
        if gateway is None:
            if why_not is not None:
                outcome.files.append(FileOutcome(uri, None, "ignored", reason=why_not))
            continue
        seen = unchanged.get((uri, stored.size, stored.stamp)) if stored.stamp else None
        if seen is not None and seen in records:  # same path, size and stamp: not read again
            r = records[seen]
            outcome.files.append(FileOutcome(uri, gateway, "known", seen, r.lines, r.format))
            continue
        data = source.read(stored.key)
        sha = content_hash(data)
        new_sighting = state.sight(sha, uri, stored.size, stored.stamp)
        known = state.get(sha)
        if known is not None:
            status = "known" if known.path == uri or not new_sighting else "duplicate"
            reason = None if status == "known" else f"same content as {known.path}"
            outcome.files.append(
                FileOutcome(uri, gateway, status, sha, known.lines, known.format, reason)
            )
            continue
        now = datetime.now(UTC)
        try:
            parsed = parse_file(gateway, data, uri)
        except Exception as exc:
            where = _quarantine(quarantine, gateway, stored.key, uri, sha, data, exc)
            line = exc.line if isinstance(exc, SettlementFileError) else None
            reason = exc.reason if isinstance(exc, SettlementFileError) else str(exc)
            state.register(
                FileRecord(
                    sha256=sha,
                    gateway=gateway,
                    path=uri,
                    status=QUARANTINED,
                    format=None,
                    lines=0,
                    first_day=None,
                    last_day=None,
                    staged=None,
                    findings=[],
                    controls=[],
                    error=str(exc),
                    error_line=line,
                    registered_at=now,
                )
            )
            outcome.files.append(
                FileOutcome(uri, gateway, "quarantined", sha, 0, None, reason, where)
            )
            if progress:
                progress(f"quarantined {uri}: {exc}")
            continue
        table = lines_to_arrow(parsed.lines)
        first, last = _days(table, timezone)
        if first is None:
            first, last = _control_days(parsed.controls)
        staged = f"{STAGE_PREFIX}/{gateway}/{sha}.parquet"
        lake.put_table(staged, table)
        state.register(
            FileRecord(
                sha256=sha,
                gateway=gateway,
                path=uri,
                status=LOADED,
                format=parsed.format,
                lines=table.num_rows,
                first_day=first,
                last_day=last,
                staged=staged,
                findings=[asdict(f) for f in parsed.findings],
                controls=[asdict(c) for c in parsed.controls],
                error=None,
                error_line=None,
                registered_at=now,
            )
        )
        outcome.files.append(
            FileOutcome(uri, gateway, "loaded", sha, table.num_rows, parsed.format)
        )
    if progress:
        progress(f"settlement files under {source.root}: {outcome.summary()}")
    return outcome


def _dedupe(table: pa.Table) -> tuple[pa.Table, int]:
    """One row per (gateway, line_id), the first delivered winning."""
    if table.num_rows == 0:
        return table, 0
    indexed = table.append_column("__i", pa.array(range(table.num_rows), pa.int64()))
    firsts = indexed.group_by(["gateway", "line_id"], use_threads=False).aggregate([("__i", "min")])
    keep = pc.sort_indices(firsts.column("__i_min"))
    idx = pc.take(firsts.column("__i_min"), keep)
    return table.take(idx), table.num_rows - len(idx)


#: Staged tables by lake key, shared by the days of one run so each file is read once.
StagedCache = dict[str, pa.Table]


def _staged_lines(
    lake: Lake, records: Sequence[FileRecord], cache: StagedCache | None = None
) -> pa.Table:
    cache = {} if cache is None else cache
    tables = []
    for r in records:
        if r.staged and r.lines:
            if r.staged not in cache:
                try:
                    cache[r.staged] = lake.get_table(r.staged)
                except Exception as exc:
                    raise ConfigError(
                        f"the staged lines of {r.path} are missing from the lake "
                        f"({lake.root}/{r.staged}: {type(exc).__name__}); the lake was moved or "
                        "wiped without the state database: point lake.root back, or delete the "
                        "state database's settlement_files and settlement_file_sightings tables "
                        "so every file is read again"
                    ) from None
            tables.append(cache[r.staged])
    if not tables:
        return SETTLEMENT_LINE_SCHEMA.empty_table()
    return pa.concat_tables([t.cast(SETTLEMENT_LINE_SCHEMA) for t in tables])


def _sorted(table: pa.Table) -> pa.Table:
    order = [("gateway", "ascending"), ("occurred_at", "ascending"), ("line_id", "ascending")]
    return table.sort_by(order)


@dataclass
class LinesOutcome:
    day: date
    uri: str
    rows: int
    duplicates_dropped: int
    files: list[str]
    totals: dict[str, dict[str, dict[str, int]]]  # gateway -> currency -> gross/fee/net
    categories: dict[str, int]
    findings: list[dict[str, Any]]


def _totals(table: pa.Table) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    if table.num_rows == 0:
        return out
    agg = table.group_by(["gateway", "currency"], use_threads=False).aggregate(
        [("gross_minor", "sum"), ("fee_minor", "sum"), ("net_minor", "sum")]
    )
    for r in sorted(agg.to_pylist(), key=lambda r: (r["gateway"], r["currency"])):
        out.setdefault(r["gateway"], {})[r["currency"]] = {
            "gross_minor": r["gross_minor_sum"],
            "fee_minor": r["fee_minor_sum"],
            "net_minor": r["net_minor_sum"],
        }
    return out


def build_lines_partition(
    state: StateDatabase, lake: Lake, day: date, timezone: str, cache: StagedCache | None = None
) -> LinesOutcome:
    """Replace the day's partition of canonical settlement lines; see the module docstring."""
    records = state.records(status=LOADED, day=day)
    all_lines = _staged_lines(lake, records, cache)
    on_day = all_lines.filter(
        pc.equal(local_days(all_lines.column("occurred_at"), timezone), pa.scalar(day, pa.date32()))
    )
    lines, dropped = _dedupe(on_day)
    lines = _sorted(lines)
    uri = lake.write(SETTLEMENT_LINES, day.isoformat(), lines)
    findings: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in records:
        if r.last_day != day:
            continue  # a file's findings are reported once, on the last day it covers
        for f in r.findings:
            key = json.dumps(f, sort_keys=True)
            if key not in seen:
                seen.add(key)
                findings.append(f)
    by_gateway: dict[str, list[ControlTotal]] = {}
    for r in records:
        for c in r.controls:
            by_gateway.setdefault(r.gateway, []).append(ControlTotal(**c))
    if by_gateway:
        line_objs = _line_objects(lines)
        for gateway, controls in sorted(by_gateway.items()):
            gw_lines = [ln for ln in line_objs if ln.gateway == gateway]
            findings += [asdict(f) for f in check_controls(gateway, controls, gw_lines)]
    cats = lines.group_by("category", use_threads=False).aggregate([("line_id", "count")])
    categories = {r["category"]: r["line_id_count"] for r in cats.to_pylist()}
    return LinesOutcome(
        day=day,
        uri=uri,
        rows=lines.num_rows,
        duplicates_dropped=dropped,
        files=[r.path for r in records],
        totals=_totals(lines),
        categories=dict(sorted(categories.items())),
        findings=findings,
    )


def _line_objects(table: pa.Table) -> list[Any]:
    from tieout.connectors.settlements.base import SettlementLine

    return [SettlementLine(**row) for row in table.to_pylist()]


@dataclass
class PayoutsOutcome:
    day: date
    uri: str
    batches: int
    not_tied: list[dict[str, Any]]


def batch_totals(lines: pa.Table, timezone: str) -> pa.Table:
    """Per (gateway, batch, currency): the lines' totals, the payout and whether they tie out.

    A batch's day is its payout line's business day, or, for batches without a payout line
    (Braintree disbursements, PayPal days without a withdrawal), its last line's day.
    """
    if lines.num_rows == 0:
        return PAYOUT_SCHEMA.empty_table()
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    days = local_days(lines.column("occurred_at"), timezone).to_pylist()
    cols = ["gateway", "batch_id", "currency", "category", "gross_minor", "fee_minor", "net_minor"]
    for line, day in zip(lines.select(cols).to_pylist(), days, strict=True):
        key = (line["gateway"], line["batch_id"], line["currency"])
        acc = rows.setdefault(
            key,
            {"lines": 0, "gross": 0, "fee": 0, "net": 0, "payout": 0, "pday": None, "last": day},
        )
        if line["category"] in ("payout", "payout_reversal"):
            acc["payout"] += line["net_minor"]
            acc["pday"] = day if acc["pday"] is None else max(acc["pday"], day)
        else:
            acc["lines"] += 1
            acc["gross"] += line["gross_minor"]
            acc["fee"] += line["fee_minor"]
            acc["net"] += line["net_minor"]
        acc["last"] = max(acc["last"], day)
    out = []
    for (gateway, batch, cur), a in sorted(rows.items()):
        has_payout = a["pday"] is not None
        diff = a["net"] + a["payout"]
        out.append(
            {
                "gateway": gateway,
                "batch_id": batch,
                "currency": cur,
                "payout_day": a["pday"] if has_payout else a["last"],
                "lines": a["lines"],
                "gross_minor": a["gross"],
                "fee_minor": a["fee"],
                "net_minor": a["net"],
                "payout_minor": a["payout"],
                "difference_minor": diff,
                "has_payout": has_payout,
                "ties_out": has_payout and diff == 0,
            }
        )
    return pa.Table.from_pylist(out, schema=PAYOUT_SCHEMA)


def build_payouts_partition(
    state: StateDatabase, lake: Lake, day: date, timezone: str, cache: StagedCache | None = None
) -> PayoutsOutcome:
    """Replace the day's partition of batch totals (batches whose payout falls on `day`)."""
    since = day - timedelta(days=PAYOUT_LOOKBACK_DAYS)
    records = [
        r
        for r in state.records(status=LOADED)
        if r.first_day is not None
        and r.last_day is not None
        and r.first_day <= day
        and r.last_day >= since
    ]
    lines, _ = _dedupe(_staged_lines(lake, records, cache))
    totals = batch_totals(lines, timezone)
    today = totals.filter(pc.equal(totals.column("payout_day"), pa.scalar(day, pa.date32())))
    uri = lake.write(PAYOUTS, day.isoformat(), today)
    not_tied = [r for r in today.to_pylist() if r["has_payout"] and not r["ties_out"]]
    return PayoutsOutcome(day=day, uri=uri, batches=today.num_rows, not_tied=not_tied)
