"""The demo's revenue leg: an in-process Salesforce sandbox (TLS, REST and Bulk API 2.0), the
`[revenue.salesforce]` settings that aim tieout at it, and what the demo prints about it.

Like the NetSuite leg, the sandbox lives only while `tieout demo` runs: its login domain, CA
bundle and credentials reach the settings through `${TIEOUT_DEMO_SALESFORCE_*}` variables the
demo sets for that time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from tieout.demo_erp import temporary_env
from tieout.sandbox.salesforce import SalesforceSandbox
from tieout.settings import SALESFORCE_KINDS, SalesforceObjects

ENV_PREFIX: Final = "TIEOUT_DEMO_SALESFORCE_"


def salesforce_toml() -> list[str]:
    """The `[revenue.salesforce]` section of the demo's dagster_project.toml."""
    return [
        "[revenue.salesforce]",
        "# `tieout demo` loads into an in-process Salesforce sandbox that exists only while the",
        "# demo runs; it sets these variables for that time (python -m tieout.sandbox.salesforce",
        "# runs one of your own).",
        f'username = "${{{ENV_PREFIX}USERNAME}}"',
        f'password = "${{{ENV_PREFIX}PASSWORD}}"',
        f'security_token = "${{{ENV_PREFIX}SECURITY_TOKEN}}"',
        f'domain = "${{{ENV_PREFIX}DOMAIN}}"',
        f'ca_bundle = "${{{ENV_PREFIX}CA_BUNDLE}}"',
    ]


def sandbox_env(sb: SalesforceSandbox) -> dict[str, str]:
    creds = sb.credentials
    return {
        f"{ENV_PREFIX}USERNAME": creds.username,
        f"{ENV_PREFIX}PASSWORD": creds.password,
        f"{ENV_PREFIX}SECURITY_TOKEN": creds.security_token,
        f"{ENV_PREFIX}DOMAIN": sb.login_domain,
        f"{ENV_PREFIX}CA_BUNDLE": sb.ca_bundle,
    }


@contextmanager
def salesforce_sandbox() -> Iterator[SalesforceSandbox]:
    """A running sandbox with tieout's default objects, its address in the environment."""
    with SalesforceSandbox() as sb, temporary_env(sandbox_env(sb)):
        yield sb


def sandbox_summary(sb: SalesforceSandbox) -> str:
    objects = SalesforceObjects()
    counts = [
        f"{sb.record_count(objects.of(kind).name)} {objects.of(kind).name}"
        for kind in SALESFORCE_KINDS
    ]
    return "Salesforce sandbox now holds " + ", ".join(counts)
