"""One exception family for tieout, so callers (CLI, retry code, assets) can decide by type.

`ConfigError` and `InputDataError` are the user's to fix and map to exit code 2 in the CLI;
`TransientError` may be retried, `TerminalError` must not be.
"""

from __future__ import annotations


class TieoutError(Exception):
    """Base of every error tieout raises on purpose."""


class ConfigError(TieoutError, ValueError):
    """A setting in dagster_project.toml (or its environment) is missing or wrong."""


class InputDataError(TieoutError, ValueError):
    """Source data cannot be used as it is: the message names the table/file, keys and fix."""


class SchemaMismatchError(InputDataError):
    """A mapped table or column does not exist in the source database."""


class BadValuesError(InputDataError):
    """Rows whose values break the canonical contract (unknown currency, NULL or text money).

    Carries the offending keys so the caller can quarantine them and load the rest.
    """

    def __init__(self, message: str, table: str, bad_keys: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.table = table
        self.bad_keys = bad_keys


class TransientError(TieoutError):
    """Marker: the operation may succeed if retried (timeouts, throttling, 5xx)."""


class RetryableError(TransientError):
    """A request to an outside system failed as a whole and may succeed later (throttled,
    5xx, timeout). `maybe_written` is True when it may have reached the server (a timeout, a
    dropped connection): its records must be read back before they are sent again."""

    def __init__(self, message: str, maybe_written: bool) -> None:
        super().__init__(message)
        self.maybe_written = maybe_written


class TerminalError(TieoutError):
    """Marker: retrying will not help; stop and explain."""


class BillingDatabaseUnavailable(TransientError):
    """The billing database could not be reached or dropped the connection: retry later."""
