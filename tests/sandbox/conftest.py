"""A fresh NetSuite sandbox and a real netsuitesdk client aimed at it, per test.

Fixture names carry a `netsuite_` prefix: this directory may also hold other sandboxes'
tests, and a bare `sandbox`/`client` fixture here would be handed to them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tieout.sandbox.netsuite import NetSuiteSandbox
from tieout.sandbox.netsuite.client import sandbox_client


@pytest.fixture
def netsuite_sandbox() -> Iterator[NetSuiteSandbox]:
    with NetSuiteSandbox() as running:
        yield running


@pytest.fixture
def netsuite_client(netsuite_sandbox: NetSuiteSandbox) -> Any:
    # A timeout keeps a sandbox bug from hanging the suite; the timeout test sets its own.
    return sandbox_client(netsuite_sandbox, operation_timeout=10)
