"""Dagster resources: typed config, secrets as `dg.EnvVar`, built from settings in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from tieout.connectors.billing import BillingDatabase
from tieout.connectors.lake import Lake
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


def _env_or_template(template: str) -> str:
    """A pure `${NAME}` becomes `dg.EnvVar` so Dagster itself keeps the value out of config."""
    name = pure_env_reference(template)
    return dg.EnvVar(name) if name else template


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    lake_root = settings.lake.root
    if "://" not in lake_root and "${" not in lake_root:
        lake_root = str((settings.base_dir / lake_root).resolve())
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
    }
