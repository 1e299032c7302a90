"""Dagster resources: typed config, secrets as `dg.EnvVar`, built from settings in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from tieout.connectors.billing import BillingDatabase
from tieout.connectors.exception_store import ExceptionStore
from tieout.connectors.lake import Lake
from tieout.connectors.ledger import PostingLedger
from tieout.connectors.state import StateDatabase
from tieout.connectors.storage import Storage
from tieout.settings import (
    Settings,
    TableMapping,
    absolutize_sqlite_url,
    pure_env_reference,
    resolve_env,
)


class BillingDatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The billing database. `url` is a `dg.EnvVar` (or a `${ENV:-default}` template)."""

    url: str = Field(description="SQLAlchemy URL; secret, resolved at run time.")
    db_schema: str | None = Field(default="billing", description="Postgres schema.")
    table_mappings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    base_dir: str = Field(default=".", description="Relative SQLite paths start here.")

    def open(self) -> BillingDatabase:
        url = absolutize_sqlite_url(resolve_env(self.url, "billing.url"), Path(self.base_dir))
        mappings = {k: TableMapping.model_validate(v) for k, v in self.table_mappings.items()}
        return BillingDatabase(url, self.db_schema, mappings)


class LakeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where canonical Parquet partitions are written: a folder or s3://bucket/prefix."""

    root: str
    s3_endpoint_url: str | None = None

    def open(self) -> Lake:
        endpoint = (
            resolve_env(self.s3_endpoint_url, "lake.s3_endpoint_url")
            if self.s3_endpoint_url
            else None
        )
        return Lake(resolve_env(self.root, "lake.root"), endpoint or None)


def _resolved(template: str | None, key_path: str) -> str | None:
    return (resolve_env(template, key_path) or None) if template else None


class SettlementSourceResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where gateway settlement files arrive (`<path>/<gateway>/...`) and where bad ones go."""

    path: str = Field(description="A folder or s3://bucket/prefix.")
    quarantine: str = Field(description="A folder or s3://bucket/prefix for unreadable files.")
    s3_endpoint_url: str | None = None

    def open(self) -> tuple[Storage, Storage]:
        endpoint = _resolved(self.s3_endpoint_url, "settlements.s3_endpoint_url")
        return (
            Storage(resolve_env(self.path, "settlements.path"), endpoint),
            Storage(resolve_env(self.quarantine, "settlements.quarantine"), endpoint),
        )


class StateDatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """tieout's state database (the processed-file registry)."""

    url: str = Field(description="SQLAlchemy URL; secret, resolved at run time.")
    db_schema: str | None = Field(default="tieout", description="Postgres schema.")
    base_dir: str = Field(default=".", description="Relative SQLite paths start here.")

    def _url(self) -> str:
        return absolutize_sqlite_url(resolve_env(self.url, "state.url"), Path(self.base_dir))

    def open(self) -> StateDatabase:
        return StateDatabase(self._url(), self.db_schema)

    def exceptions(self) -> ExceptionStore:
        """The reconciliation runs and the exceptions' life cycle, in the same database."""
        return ExceptionStore(self._url(), self.db_schema)

    def ledger(self) -> PostingLedger:
        """What was posted to the ERP and the revenue system, in the same database."""
        return PostingLedger(self._url(), self.db_schema)


class ReportsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the accountants' reports are written: a folder or s3://bucket/prefix."""

    path: str
    s3_endpoint_url: str | None = None

    def open(self, override: str | None = None) -> Storage:
        endpoint = _resolved(self.s3_endpoint_url, "reports.s3_endpoint_url")
        return Storage(override or resolve_env(self.path, "reports.path"), endpoint)


def _env_or_template(template: str) -> str:
    """A pure `${NAME}` becomes `dg.EnvVar` so Dagster itself keeps the value out of config."""
    name = pure_env_reference(template)
    return dg.EnvVar(name) if name else template


def _location(settings: Settings, template: str) -> str:
    """Local folders become absolute here; templates and s3:// stay for run time."""
    if "://" not in template and "${" not in template:
        return str((settings.base_dir / template).resolve())
    return template


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    lake_root = _location(settings, settings.lake.root)
    st = settings.settlements
    source = _location(settings, st.path)
    quarantine = _location(settings, st.quarantine) if st.quarantine else source + "/_quarantine"
    return {
        "billing_db": BillingDatabaseResource(
            url=_env_or_template(settings.billing.url),
            db_schema=settings.billing.schema_,
            table_mappings={
                k: v.model_dump(exclude_defaults=True) for k, v in settings.billing.tables.items()
            },
            base_dir=str(settings.base_dir),
        ),
        "lake": LakeResource(
            root=lake_root,
            s3_endpoint_url=_env_or_template(settings.lake.s3_endpoint_url)
            if settings.lake.s3_endpoint_url
            else None,
        ),
        "settlement_source": SettlementSourceResource(
            path=source,
            quarantine=quarantine,
            s3_endpoint_url=_env_or_template(st.s3_endpoint_url) if st.s3_endpoint_url else None,
        ),
        "reports": ReportsResource(
            path=_location(settings, settings.reports.path),
            s3_endpoint_url=_env_or_template(settings.reports.s3_endpoint_url)
            if settings.reports.s3_endpoint_url
            else None,
        ),
        "state_db": StateDatabaseResource(
            url=_env_or_template(settings.state.url),
            db_schema=settings.state.schema_,
            base_dir=str(settings.base_dir),
        ),
    }
