"""Faults a test can switch on: throttling, outages, expired sessions, slow or partial Bulk jobs.

Each fault fires a limited number of ``times`` (``None``: until cleared) and may be narrowed to
one operation (see :class:`Operation`) and/or one sObject, so a test can say "the second
collections call on Tieout_Invoice__c is throttled" without touching anything else.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Fault", "FaultKind", "FaultRegistry", "Operation"]


class Operation(StrEnum):
    """What a request does, as used by fault filters, the request log and the counters."""

    LOGIN = "login"
    VERSIONS = "versions"
    LIMITS = "limits"
    DESCRIBE_GLOBAL = "describe_global"
    DESCRIBE = "describe"
    SOBJECT_GET = "sobject_get"
    COLLECTIONS_UPSERT = "collections_upsert"
    BULK_CREATE_JOB = "bulk_create_job"
    BULK_LIST_JOBS = "bulk_list_jobs"
    BULK_UPLOAD = "bulk_upload"
    BULK_SET_STATE = "bulk_set_state"
    BULK_JOB_INFO = "bulk_job_info"
    BULK_RESULTS = "bulk_results"
    BULK_DELETE_JOB = "bulk_delete_job"
    UNKNOWN = "unknown"


class FaultKind(StrEnum):
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    """HTTP 403 ``REQUEST_LIMIT_EXCEEDED`` (simple-salesforce: SalesforceRefusedRequest)."""
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    """HTTP 503 (simple-salesforce: SalesforceGeneralError; at login: authentication failed)."""
    SESSION_EXPIRED = "SESSION_EXPIRED"
    """Revoke every live session, answer 401 ``INVALID_SESSION_ID`` until the next login."""
    LATENCY = "LATENCY"
    """Sleep ``seconds`` before answering."""
    BULK_PARTIAL_FAILURE = "BULK_PARTIAL_FAILURE"
    """A Bulk job fails every ``every``-th row with ``error_code`` (default UNABLE_TO_LOCK_ROW)."""
    BULK_UNPROCESSED = "BULK_UNPROCESSED"
    """A Bulk job stops after ``processed_fraction`` of its rows: state Failed, rest unprocessed."""


BULK_KINDS = frozenset({FaultKind.BULK_PARTIAL_FAILURE, FaultKind.BULK_UNPROCESSED})
# Kinds that mean nothing before a session exists, so they never fire on login endpoints.
_NOT_AT_LOGIN = BULK_KINDS | {FaultKind.REQUEST_LIMIT_EXCEEDED, FaultKind.SESSION_EXPIRED}


@dataclass
class Fault:
    """One armed fault; ``triggered`` counts how often it fired."""

    kind: FaultKind
    times: int | None = 1
    operation: Operation | None = None
    sobject: str | None = None
    seconds: float = 0.0
    every: int = 2
    processed_fraction: float = 0.5
    error_code: str = "UNABLE_TO_LOCK_ROW"
    triggered: int = field(default=0, init=False)

    def matches(self, kind: FaultKind, operation: Operation, sobject: str | None) -> bool:
        if self.kind is not kind:
            return False
        if operation is Operation.LOGIN:
            # Login faults must be asked for by name; a blanket 503 would also break re-login.
            return self.operation is Operation.LOGIN and kind not in _NOT_AT_LOGIN
        if self.operation is not None and self.operation is not operation:
            return False
        return self.sobject is None or (
            sobject is not None and self.sobject.lower() == sobject.lower()
        )


class FaultRegistry:
    """Thread-safe list of armed faults; :meth:`take` fires (and uses up) the first match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be >= 1 (or None for 'until cleared')")
        if fault.kind in BULK_KINDS and fault.operation is not None:
            raise ValueError("Bulk job faults apply to job processing; filter them by sobject")
        if fault.operation is Operation.LOGIN and fault.kind in _NOT_AT_LOGIN:
            # It could never fire (there is no session yet): refuse it rather than let a
            # test pass without the fault it thinks it armed.
            raise ValueError(f"{fault.kind} cannot happen at login (only 503s and latency)")
        if fault.every < 2:
            raise ValueError("every must be >= 2 (every=2 fails every other row)")
        if not 0.0 <= fault.processed_fraction < 1.0:
            raise ValueError("processed_fraction must be in [0, 1)")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, kind: FaultKind, operation: Operation, sobject: str | None) -> Fault | None:
        if not self._faults:  # the common case: nothing armed, no lock taken
            return None
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind, operation, sobject):
                    fault.triggered += 1
                    if fault.times is not None and fault.triggered >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None
