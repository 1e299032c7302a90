"""A local NetSuite SuiteTalk (SOAP 2023_2) sandbox that the real netsuitesdk client can use.

Start it with `with NetSuiteSandbox() as sandbox:` (or `python -m tieout.sandbox.netsuite`),
get a client with `sandbox_client(sandbox)`, inspect what was posted with
`sandbox.records("journalEntry")`, and make it fail with `sandbox.inject(...)`.
`sandbox_client` lives in `tieout.sandbox.netsuite.client` (it imports netsuitesdk).
"""

from tieout.sandbox.netsuite.faults import FaultKind, InjectedFault
from tieout.sandbox.netsuite.server import (
    DEFAULT_ACCOUNT,
    DEFAULT_CREDENTIALS,
    MAX_LIST_RECORDS,
    NetSuiteSandbox,
    RequestLogEntry,
    TokenCredentials,
)
from tieout.sandbox.netsuite.store import (
    CODE_INVALID_REF,
    CODE_NOT_FOUND,
    CODE_TOO_MANY_LINES,
    CODE_UNBALANCED,
    CODE_USER_ERROR,
    DEFAULT_ACCOUNTS,
    DEFAULT_CURRENCIES,
    DEFAULT_SUBSIDIARIES,
    MAX_JOURNAL_LINES,
)

__all__ = [
    "CODE_INVALID_REF",
    "CODE_NOT_FOUND",
    "CODE_TOO_MANY_LINES",
    "CODE_UNBALANCED",
    "CODE_USER_ERROR",
    "DEFAULT_ACCOUNT",
    "DEFAULT_ACCOUNTS",
    "DEFAULT_CREDENTIALS",
    "DEFAULT_CURRENCIES",
    "DEFAULT_SUBSIDIARIES",
    "MAX_JOURNAL_LINES",
    "MAX_LIST_RECORDS",
    "FaultKind",
    "InjectedFault",
    "NetSuiteSandbox",
    "RequestLogEntry",
    "TokenCredentials",
]
