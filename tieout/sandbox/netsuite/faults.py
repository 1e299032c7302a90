"""Failures the sandbox produces on demand, so a connector's retry paths can be tested.

A test queues `InjectedFault`s with `NetSuiteSandbox.inject`; each fires on the next
`times` requests that match it (operation and/or externalIds), then disappears. Matching and
counting happen under one lock, so concurrent requests never consume a fault twice.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class FaultKind(StrEnum):
    CONCURRENCY_LIMIT = "concurrency_limit"
    """HTTP 500, SOAP fault exceededConcurrentRequestLimitFault, code WS_REQUEST_BLOCKED;
    nothing written."""
    CONCURRENT_SESSION = "concurrent_session"
    """HTTP 500, SOAP fault with code WS_CONCUR_SESSION_DISALLWD; nothing written."""
    HTTP_503 = "http_503"
    """HTTP 503 with a plain-text body (a load balancer, not SuiteTalk); nothing written."""
    HTTP_429 = "http_429"
    """HTTP 429 with a plain-text body and Retry-After; nothing written."""
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"
    """The write is committed, then the server stays silent for `hang_seconds` and drops the
    connection: the client times out although the records exist."""
    DISCONNECT_AFTER_COMMIT = "disconnect_after_commit"
    """The write is committed, then the connection is closed without a response."""
    RECORD_ERROR = "record_error"
    """Matching records get isSuccess="false" with `code`/`message`; the rest of the same
    request succeeds. Matches by `external_ids` and/or `record_index` (0-based position in
    the request); with neither, every record of the request fails."""


REQUEST_LEVEL: frozenset[FaultKind] = frozenset(FaultKind) - {FaultKind.RECORD_ERROR}
AFTER_COMMIT: frozenset[FaultKind] = frozenset(
    {FaultKind.TIMEOUT_AFTER_COMMIT, FaultKind.DISCONNECT_AFTER_COMMIT}
)


@dataclass(frozen=True)
class InjectedFault:
    """One failure to produce; see `FaultKind` for what each kind does.

    `times`: how many matching requests it fires on (None: until `clear_faults`).
    `operation`: only requests of this SOAP operation ("upsertList", "get", ...); None: any.
    `external_ids`: request-level kinds fire only on requests carrying one of these
    externalIds; RECORD_ERROR fails exactly these records.
    """

    kind: FaultKind
    times: int | None = 1
    operation: str | None = None
    external_ids: Collection[str] | None = None
    record_index: int | None = None
    code: str = "UNEXPECTED_ERROR"
    message: str = "An unexpected error occurred (injected by the tieout NetSuite sandbox)."
    hang_seconds: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if self.external_ids is not None and not isinstance(self.external_ids, frozenset):
            object.__setattr__(self, "external_ids", frozenset(self.external_ids))
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for 'until cleared')")
        if self.record_index is not None and self.kind is not FaultKind.RECORD_ERROR:
            raise ValueError("record_index only applies to RECORD_ERROR")
        if self.hang_seconds <= 0:
            raise ValueError("hang_seconds must be > 0")

    def _matches_request(self, operation: str, external_ids: Sequence[str | None]) -> bool:
        if self.operation is not None and self.operation != operation:
            return False
        if self.external_ids is not None:
            return any(e in self.external_ids for e in external_ids if e is not None)
        return True

    def _hits(self, external_ids: Sequence[str | None]) -> list[int]:
        """Positions of the records a RECORD_ERROR fails in a request."""
        if self.external_ids is None and self.record_index is None:
            return list(range(len(external_ids)))
        return [
            i
            for i, ext in enumerate(external_ids)
            if (self.record_index is None or i == self.record_index)
            and (self.external_ids is None or ext in self.external_ids)
        ]


@dataclass
class _Pending:
    fault: InjectedFault
    remaining: int | None
    fired: int = 0


@dataclass(frozen=True)
class RecordFailure:
    code: str
    message: str


@dataclass
class FaultBook:
    """The queue of injected faults, thread-safe."""

    _pending: list[_Pending] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: InjectedFault) -> None:
        with self._lock:
            self._pending.append(_Pending(fault, fault.times))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def pending(self) -> list[tuple[InjectedFault, int | None]]:
        """Faults still queued, with how many more requests each will fire on."""
        with self._lock:
            return [(p.fault, p.remaining) for p in self._pending]

    def _consume(self, entry: _Pending) -> None:
        entry.fired += 1
        if entry.remaining is not None:
            entry.remaining -= 1
            if entry.remaining == 0:
                self._pending.remove(entry)

    def take_request_fault(
        self, operation: str, external_ids: Sequence[str | None]
    ) -> InjectedFault | None:
        """The first queued request-level fault matching this request (consumed), if any."""
        with self._lock:
            for entry in self._pending:
                fault = entry.fault
                if fault.kind in REQUEST_LEVEL and fault._matches_request(operation, external_ids):
                    self._consume(entry)
                    return fault
        return None

    def take_record_failures(
        self, operation: str, external_ids: Sequence[str | None]
    ) -> dict[int, RecordFailure]:
        """Which records of a write request must fail, by position (faults consumed)."""
        failures: dict[int, RecordFailure] = {}
        with self._lock:
            for entry in list(self._pending):
                fault = entry.fault
                if fault.kind is not FaultKind.RECORD_ERROR:
                    continue
                if fault.operation is not None and fault.operation != operation:
                    continue
                hits = fault._hits(external_ids)
                if not hits:
                    continue
                for i in hits:
                    failures.setdefault(i, RecordFailure(fault.code, fault.message))
                self._consume(entry)
        return failures
