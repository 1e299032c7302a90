"""Plan and apply: what posting would change, then exactly that, exactly once.

`make_plan` compares the entries built from the sources with the posting ledger and decides,
per entry: `create` (never sent), `retry` (sent before without a confirmation: failed, or
its outcome unknown), `update` (source changed, `update_mode = "update"`), `adjust` (source
changed: a new adjusting entry for the difference, the default) or nothing (confirmed and
unchanged). It sends nothing. `apply` posts a plan: first it settles every record whose
outcome is unknown by reading it back, then it stages the plan's records in the ledger,
sends them in batches with bounded concurrency, retries throttling, 5xx and timeouts with
backoff and jitter (reading back before any re-send), and records each record's outcome.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final, Protocol

from tieout.connectors.ledger import CONFIRMED, SENT, KeyState, LedgerRow, PostingLedger
from tieout.erp.journals import HeldBatch, JournalEntry, adjustment, problems, split
from tieout.errors import ConfigError, InputDataError, RetryableError

logger = logging.getLogger(__name__)

ACTIONS: Final = ("create", "retry", "update", "adjust")
#: Records staged in the ledger at a time while earlier requests are under way. Staging a
#: window holds the interpreter (payload hashes) and the ledger for a while: windows of up
#: to 20,000 held them for 100 ms at a time, longer than the next requests had to spare, and
#: request slots stood idle (the benchmark's throughput 0.83 -> 0.87-0.91).
STAGE_WINDOW: Final = 1_000
#: Threads beyond `concurrency` for a target that gates its requests itself (see apply_plan).
GATED_SPARE: Final = 2


class Outcome(Protocol):
    """One record's answer inside a list response."""

    @property
    def ok(self) -> bool: ...
    @property
    def internal_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def retryable(self) -> bool: ...


@dataclass(frozen=True)
class RecordOutcome:
    """One record's answer, as every target reports it."""

    ok: bool
    internal_id: str | None = None
    error: str | None = None
    retryable: bool = False


class Postable(Protocol):
    """What the poster sends: a NetSuite journal entry or a Salesforce record."""

    @property
    def external_id(self) -> str: ...
    @property
    def base(self) -> str: ...
    @property
    def kind(self) -> str: ...
    def payload(self) -> dict[str, Any]: ...
    def payload_hash(self) -> str: ...


class Target(Protocol):
    system: str
    record_type: str

    def upsert(self, entries: Sequence[Any]) -> Mapping[str, Outcome]: ...

    def read_back(self, external_ids: Sequence[str]) -> dict[str, str | None]: ...


class StalePlanError(InputDataError):
    """The ledger changed since the plan was made: plan again."""


@dataclass(frozen=True)
class PlannedEntry:
    action: str
    entry: Any  # a JournalEntry (netsuite) or a SalesforceRecord (salesforce): a Postable
    reason: str


@dataclass
class Plan:
    system: str
    start: date
    end: date
    as_of: date
    entries: list[PlannedEntry]
    unchanged: list[str]
    held_lines: list[dict[str, str]]
    held_batches: list[dict[str, str]]
    problems: list[str]
    #: base id -> fingerprint of its ledger rows when planned (apply refuses if it moved).
    fingerprints: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in ACTIONS}
        for p in self.entries:
            out[p.action] += 1
        out["unchanged"] = len(self.unchanged)
        out["held_lines"] = len(self.held_lines)
        out["held_batches"] = len(self.held_batches)
        return out

    def totals(self) -> list[dict[str, Any]]:
        """Debits and credits to be posted, per currency and account."""
        sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for p in self.entries:
            for line in getattr(p.entry, "lines", ()):
                s = sums[(p.entry.currency, line.account)]
                s[0] += line.debit_minor
                s[1] += line.credit_minor
                s[2] += 1
        return [
            {"currency": c, "account": a, "debit_minor": d, "credit_minor": cr, "lines": n}
            for (c, a), (d, cr, n) in sorted(sums.items())
        ]

    def to_json(self) -> dict[str, Any]:
        body = {
            "system": self.system,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            "counts": self.counts(),
            "totals": self.totals(),
            "entries": [
                {
                    "action": p.action,
                    "reason": p.reason,
                    "entry": p.entry.payload(),
                    "held_back": list(getattr(p.entry, "held_back", ())),
                }
                for p in self.entries
            ],
            "unchanged": self.unchanged,
            "held_lines": self.held_lines,
            "held_batches": self.held_batches,
            "problems": self.problems,
            "fingerprints": self.fingerprints,
        }
        body["plan_id"] = _digest(body)
        return body

    @staticmethod
    def from_json(
        d: dict[str, Any], decode: Callable[[Mapping[str, Any]], Any] = JournalEntry.from_payload
    ) -> Plan:
        want = d.get("plan_id")
        body = {k: v for k, v in d.items() if k != "plan_id"}
        if want != _digest(body):
            raise InputDataError(
                "the plan file was changed after it was made (its plan_id does not match); "
                "run `tieout erp plan` again instead of editing it"
            )
        return Plan(
            system=d["system"],
            start=date.fromisoformat(d["start"]),
            end=date.fromisoformat(d["end"]),
            as_of=date.fromisoformat(d["as_of"]),
            entries=[
                PlannedEntry(e["action"], decode(e["entry"]), e["reason"]) for e in d["entries"]
            ],
            unchanged=list(d["unchanged"]),
            held_lines=list(d["held_lines"]),
            held_batches=list(d["held_batches"]),
            problems=list(d["problems"]),
            fingerprints=dict(d["fingerprints"]),
        )


def write_plan(plan: Plan, path: Path) -> Path:
    """Save a plan for review and a later `apply --plan` (its plan_id seals it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def read_plan(
    path: Path,
    system: str,
    decode: Callable[[Mapping[str, Any]], Any] = JournalEntry.from_payload,
) -> Plan:
    """A saved plan of `system`, its records decoded by `decode`; a wrong or edited file is
    refused with the reason."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable plan file ({exc})") from None
    if data.get("system") != system:
        raise ConfigError(f"{path}: a {data.get('system')} plan, not a {system} one")
    return Plan.from_json(data, decode=decode)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _fingerprint(rows: Sequence[Any]) -> str:
    """What a base's ledger rows were (external id and hash of each): rows or KeyStates."""
    if not rows:
        return _EMPTY_FINGERPRINT
    return _digest(sorted((r.external_id, r.payload_hash) for r in rows))


_EMPTY_FINGERPRINT: Final = _digest([])


def make_plan(
    entries: Sequence[JournalEntry],
    ledger_rows: Sequence[LedgerRow],
    *,
    system: str,
    start: date,
    end: date,
    as_of: date,
    update_mode: str = "adjust",
    split_clearing: str = "",
    held_batches: Sequence[HeldBatch] = (),
) -> Plan:
    by_base: dict[str, list[LedgerRow]] = defaultdict(list)
    for row in ledger_rows:
        by_base[row.base_id].append(row)
    planned: list[PlannedEntry] = []
    unchanged: list[str] = []
    found: list[str] = []
    held_lines: list[dict[str, str]] = []
    fingerprints: dict[str, str] = {}
    for entry in sorted(entries, key=lambda e: e.external_id):
        bad = problems(entry, check_size=False)  # entries above the line limit are split below
        if bad:
            found += bad
            continue
        for line_id in entry.held_back:
            held_lines.append({"entry": entry.external_id, "line_id": line_id})
        parts = split(entry, clearing=split_clearing)
        rows = by_base.get(entry.external_id, [])
        have = {r.external_id: r for r in rows}
        posted = [r for r in rows if r.status in (CONFIRMED, SENT)]
        if not posted:
            # Nothing landed (or may have): send the current parts as they are now.
            for part in parts:
                prior = have.get(part.external_id)
                action = "create" if prior is None else "retry"
                why = "new" if prior is None else f"earlier attempt {prior.status}"
                planned.append(PlannedEntry(action, part, why))
            continue
        retries = [r for r in rows if r.status not in (CONFIRMED,)]
        for r in retries:  # unconfirmed records already part of the posted picture
            planned.append(
                PlannedEntry(
                    "retry", JournalEntry.from_payload(r.payload), f"earlier attempt {r.status}"
                )
            )
        same = all(
            p.external_id in have and have[p.external_id].payload_hash == p.payload_hash()
            for p in parts
        )
        if same:
            unchanged.append(entry.external_id)
            continue
        part_ids = {p.external_id for p in parts}
        originals = {r.external_id for r in rows if r.kind != "adjustment"}
        has_adjustments = any(r.kind == "adjustment" for r in rows)
        if update_mode == "update" and part_ids == originals and not has_adjustments:
            for p in parts:
                if have[p.external_id].payload_hash != p.payload_hash():
                    planned.append(PlannedEntry("update", p, "source changed; updated in place"))
            continue
        current = [JournalEntry.from_payload(r.payload) for r in rows]
        number = 1 + sum(1 for r in rows if r.kind == "adjustment")
        adj = adjustment(entry, current, number, as_of)
        if adj is None:
            unchanged.append(entry.external_id)
            continue
        for part in split(adj, clearing=split_clearing):
            planned.append(PlannedEntry("adjust", part, "source changed since it was posted"))
    sending = {p.entry.external_id for p in planned}
    for entry in entries:
        rows = [r for r in by_base.get(entry.external_id, []) if r.external_id not in sending]
        fingerprints[entry.external_id] = _fingerprint(rows)
    return Plan(
        system=system,
        start=start,
        end=end,
        as_of=as_of,
        entries=planned,
        unchanged=unchanged,
        held_lines=held_lines,
        held_batches=[
            {
                "gateway": h.gateway,
                "batch_id": h.batch_id,
                "currency": h.currency,
                "reason": h.reason,
            }
            for h in held_batches
        ],
        problems=found,
        fingerprints=fingerprints,
    )


def make_record_plan(
    records: Sequence[Postable],
    ledger_rows: Sequence[LedgerRow | KeyState],
    *,
    system: str,
    start: date,
    end: date,
    as_of: date,
    problems_found: Sequence[str] = (),
) -> Plan:
    """The plan for records that are state, not history (Salesforce upserts): a changed
    source updates the record in place; there are no adjusting records."""
    have = {r.external_id: r for r in ledger_rows}
    planned: list[PlannedEntry] = []
    unchanged: list[str] = []
    fingerprints: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.external_id):
        row = have.get(record.external_id)
        if row is None:
            planned.append(PlannedEntry("create", record, "new"))
        elif row.status != CONFIRMED:
            planned.append(PlannedEntry("retry", record, f"earlier attempt {row.status}"))
        elif row.payload_hash != record.payload_hash():
            planned.append(PlannedEntry("update", record, "source changed; upsert updates it"))
        else:
            unchanged.append(record.external_id)
            fingerprints[record.external_id] = _fingerprint([row])
            continue
        fingerprints[record.external_id] = _fingerprint([])
    return Plan(
        system=system,
        start=start,
        end=end,
        as_of=as_of,
        entries=planned,
        unchanged=unchanged,
        held_lines=[],
        held_batches=[],
        problems=list(problems_found),
        fingerprints=fingerprints,
    )


# --------------------------------------------------------------------------------------------
# Apply


@dataclass
class ApplyResult:
    confirmed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already confirmed, unchanged
    failed: dict[str, str] = field(default_factory=dict)  # per record, terminal this run
    unresolved: dict[str, str] = field(default_factory=dict)  # gave up retrying: unknown/pending
    read_back: int = 0
    requests: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter."""
        cap = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return rng.uniform(cap / 2, cap)


def _settle_unknown(
    ledger: PostingLedger, target: Target, batch_size: int, result: ApplyResult
) -> None:
    sent = ledger.rows(target.system, statuses=[SENT])
    ids = sorted(sent)
    for i in range(0, len(ids), batch_size):
        chunk = ids[i : i + batch_size]
        found = target.read_back(chunk)
        result.read_back += len(chunk)
        ledger.mark_confirmed(target.system, {x: iid for x, iid in found.items() if iid})
        missing = [x for x in chunk if not found.get(x)]
        if missing:
            ledger.mark_pending(target.system, missing, "read back: not in the target; resend")


def apply_plan(
    plan: Plan,
    ledger: PostingLedger,
    target: Target,
    *,
    batch_size: int = 200,
    concurrency: int = 5,
    policy: RetryPolicy | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    batcher: Callable[[list[Any]], list[list[Any]]] | None = None,
) -> ApplyResult:
    """Post `plan` (see the module doc). `batcher` groups the records into requests when
    `batch_size` slices are not right (Salesforce: 200 per Collections call, big Bulk jobs)."""
    say = progress or (lambda _m: None)
    policy = policy or RetryPolicy()
    result = ApplyResult()
    prepare = getattr(target, "prepare", None)
    if prepare is not None and plan.entries:
        # Connecting (NetSuite: fetching and parsing the WSDL) overlaps the ledger work
        # below; a failure here is raised again by the first request, which retries it.
        threading.Thread(target=_quietly, args=(prepare,), daemon=True).start()
    _settle_unknown(ledger, target, batch_size, result)
    _check_fresh(plan, ledger, target.system)
    todo = [p.entry for p in plan.entries]
    if not todo:
        return result
    if batcher is not None:
        batches = batcher(todo)
    else:
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    say(f"posting {len(todo)} record(s) in {len(batches)} request(s), {concurrency} at a time")
    # Read once for every window below: only this run stages these records.
    before = ledger.states(target.system, [e.external_id for e in todo])
    lock = threading.Lock()

    def run(index: int, batch: list[Any]) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        pending = list(batch)
        attempt = 0
        while pending:
            attempt += 1
            ids = [e.external_id for e in pending]
            if not getattr(target, "idempotent", False):
                # An upsert by external id (Salesforce) is safe to resend whatever happened,
                # so its records stay `pending` until confirmed: one ledger write less each.
                ledger.mark_sent(target.system, ids)
            try:
                outcomes = target.upsert(pending)
                with lock:
                    result.requests += 1
            except Exception as exc:  # the target raises RetryableError; anything else is a bug
                retryable = isinstance(exc, RetryableError)
                with lock:
                    result.requests += 1
                if not retryable or attempt >= policy.max_attempts:
                    ledger.mark_pending(target.system, ids, f"{type(exc).__name__}: {exc}")
                    with lock:
                        for x in ids:
                            result.unresolved[x] = str(exc)
                    if not retryable:
                        raise
                    return
                sleep(policy.delay(attempt, rng))
                if isinstance(exc, RetryableError) and exc.maybe_written:
                    found = target.read_back(ids)
                    with lock:
                        result.read_back += len(ids)
                    done = {x: iid for x, iid in found.items() if iid}
                    ledger.mark_confirmed(target.system, done)
                    with lock:
                        result.confirmed += sorted(done)
                    pending = [e for e in pending if e.external_id not in done]
                continue
            ok = {x: o.internal_id or "" for x, o in outcomes.items() if o.ok}
            ledger.mark_confirmed(target.system, ok)
            again = [e for e in pending if not outcomes[e.external_id].ok
                     and outcomes[e.external_id].retryable]  # fmt: skip
            terminal = {x: o.error or "" for x, o in outcomes.items()
                        if not o.ok and not o.retryable}  # fmt: skip
            ledger.mark_failed(target.system, terminal)
            with lock:
                result.confirmed += sorted(ok)
                result.failed.update(terminal)
            if again and attempt >= policy.max_attempts:
                errors = {e.external_id: outcomes[e.external_id].error or "" for e in again}
                ledger.mark_failed(target.system, errors)
                with lock:
                    result.failed.update(errors)
                return
            if again:
                sleep(policy.delay(attempt, rng))
            pending = again

    def stage(group: list[list[Any]]) -> list[list[Any]]:
        """Write the group's records `pending` (see `PostingLedger.stage`); its batches less
        the records already confirmed with the same content."""
        entries = [e for batch in group for e in batch]
        digests = {e.external_id: e.payload_hash() for e in entries}  # serializes: once each
        states = ledger.stage(
            target.system,
            target.record_type,
            [(e.external_id, e.base, e.kind, digests[e.external_id],
              getattr(e, "payload_text", None) or e.payload()) for e in entries],
            existing=before,
        )  # fmt: skip
        out = []
        for batch in group:
            send = []
            for e in batch:
                if states.get(e.external_id) == (CONFIRMED, digests[e.external_id]):
                    result.skipped.append(e.external_id)
                else:
                    send.append(e)
            if send:
                out.append(send)
        return out

    # Staged a window at a time, each window's requests leaving while the next is staged: a
    # record is always `pending` in the ledger before it is sent, and the target works while
    # tieout stages (a million records stage in seconds).
    # A target that bounds its own requests on the wire (`request_gate`, NetSuite) gets
    # `GATED_SPARE` more threads: the next requests are built while `concurrency` are in
    # flight. (More spares only add threads competing for the interpreter.)
    gated = getattr(target, "request_gate", None) is not None
    workers = max(1, concurrency) + (GATED_SPARE if gated else 0)
    # The next window is staged once every request staged so far has a thread: staged ahead
    # greedily, windows took the interpreter (and the ledger) from the first requests.
    waiting = 0
    started = threading.Condition()

    def all_taken() -> bool:
        return waiting <= 0

    def start(index: int, batch: list[Any]) -> None:
        nonlocal waiting
        with started:
            waiting -= 1
            started.notify()
        run(index, batch)

    with _collector_skips_what_exists(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[None]] = []
        group: list[list[Any]] = []
        grouped = 0
        for index, batch in enumerate(batches):
            group.append(batch)
            grouped += len(batch)
            if grouped >= STAGE_WINDOW or index == len(batches) - 1:
                with started:
                    started.wait_for(all_taken)
                for send in stage(group):
                    with started:
                        waiting += 1
                    futures.append(pool.submit(start, len(futures), send))
                group, grouped = [], 0
        for n, f in enumerate(futures, start=1):
            f.result()
            if n % 10 == 0 or n == len(futures):
                say(f"  {n}/{len(futures)} request(s) answered")
    if result.skipped:
        say(f"  {len(result.skipped)} record(s) already confirmed with this content: not sent")
    result.confirmed.sort()
    result.skipped.sort()
    return result


@contextmanager
def _collector_skips_what_exists() -> Iterator[None]:
    """Posting allocates fast (requests, answers), so Python's cyclic garbage collector runs
    often, and each full pass walked every record and plan object made before, which stay
    alive throughout: a fifth of the poster's CPU. They are set aside (`gc.freeze`) while
    posting and handed back after; what posting itself makes is collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # raised again where it matters, see apply_plan
        logger.debug("preparing the target failed; the first request will try again")


def _check_fresh(plan: Plan, ledger: PostingLedger, system: str) -> None:
    """Refuse a plan the ledger has moved past: records outside the plan appeared or changed
    for its entries, or one of its records was confirmed with other content meanwhile. A
    re-apply of the same plan (after a crash) is fresh: only its own records moved."""
    wanted = plan.fingerprints
    # Keys, statuses and hashes only: reading every payload of a million-record plan is slow.
    rows = ledger.key_states(system, base_ids=wanted) if wanted else {}
    sending = {p.entry.external_id: p for p in plan.entries}
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows.values():
        if row.external_id not in sending:
            grouped[row.base_id].append(row)
    # Most bases have no other rows (a first post): their fingerprint is the empty one.
    moved = sorted(
        b
        for b, want in wanted.items()
        if (_fingerprint(grouped[b]) if b in grouped else _EMPTY_FINGERPRINT) != want
    )
    moved += [
        x
        for x, p in sending.items()
        if p.action != "update"
        and x in rows
        and rows[x].status == CONFIRMED
        and rows[x].payload_hash != p.entry.payload_hash()
    ]
    if moved:
        raise StalePlanError(
            f"{len(moved)} entr(ies) were posted or changed since this plan was made "
            f"(e.g. {moved[0]}); run `tieout erp plan` again"
        )
