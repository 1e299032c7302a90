"""The Dagster side: definitions load, asset specs are stable, one partition materializes."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tieout.definitions import build_definitions
from tieout.demo import DemoConfig, write_demo_data
from tieout.extraction import DATASETS
from tieout.settings import Settings, settings_from_mapping

DAY = date(2026, 3, 3)


def _settings(
    tmp_path: Path, url: str, schema: str | None = "billing", tz: str = "UTC"
) -> Settings:
    return settings_from_mapping(
        {
            "billing": {"url": url, "schema": schema, "partitions_start": "2026-03-01"},
            "reconciliation": {"finance_timezone": tz},
            "lake": {"root": "lake"},
        },
        tmp_path,
        "test.toml",
    )


def test_module_level_definitions_load() -> None:
    from tieout import definitions

    keys = {k.to_user_string() for k in definitions.defs.resolve_all_asset_keys()}
    assert keys == {f"billing/{name}" for name in DATASETS} | {
        "settlements/lines",
        "settlements/payouts",
        "recon/exceptions",
        "erp/netsuite",
        "revenue/schedule",
        "revenue/salesforce",
    }
    assert definitions.defs.resolve_job_def("nightly_close") is not None
    assert definitions.defs.resolve_job_def("revenue_schedule") is not None
    assert definitions.defs.resolve_job_def("revenue_load") is not None
    assert definitions.defs.resolve_job_def("erp_posting") is not None
    assert definitions.defs.resolve_job_def("billing_extract") is not None
    assert definitions.defs.resolve_job_def("settlements_load") is not None


def test_asset_specs_snapshot(tmp_path: Path) -> None:
    """An accidental rename, regroup or repartition of an asset shows up here in review."""
    defs = build_definitions(_settings(tmp_path, "sqlite:///x.db", tz="Europe/Berlin"))
    graph = defs.resolve_asset_graph()
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        pdef = node.partitions_def
        # Business days everywhere; the revenue schedule is by accounting month.
        monthly = key == dg.AssetKey(["revenue", "schedule"])
        kind = dg.MonthlyPartitionsDefinition if monthly else dg.DailyPartitionsDefinition
        assert isinstance(pdef, kind)
        snapshot[key.to_user_string()] = (
            node.group_name,
            pdef.timezone,
            pdef.start.date().isoformat(),
            sorted(node.kinds),
        )
    expected = ("billing", "Europe/Berlin", "2026-03-01", ["parquet", "sql"])
    assert snapshot == {f"billing/{n}": expected for n in sorted(DATASETS)} | {
        "settlements/lines": ("settlements", "Europe/Berlin", "2026-03-01", ["csv", "parquet"]),
        "settlements/payouts": ("settlements", "Europe/Berlin", "2026-03-01", ["parquet"]),
        "recon/exceptions": (
            "reconciliation",
            "Europe/Berlin",
            "2026-03-01",
            ["duckdb", "excel", "html"],
        ),
        "erp/netsuite": ("erp", "Europe/Berlin", "2026-03-01", ["netsuite"]),
        "revenue/schedule": ("revenue", "Europe/Berlin", "2026-03-01", ["duckdb"]),
        "revenue/salesforce": ("revenue", "Europe/Berlin", "2026-03-01", ["salesforce"]),
    }
    deps = graph.get(dg.AssetKey(["settlements", "payouts"])).parent_keys
    assert deps == {dg.AssetKey(["settlements", "lines"])}


def _materialize_one_day(settings: Settings) -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    # One business day of every daily asset (the monthly revenue schedule has its own job).
    assets = [
        a for a in defs.assets or []
        if isinstance(getattr(a, "partitions_def", None), dg.DailyPartitionsDefinition)
    ]  # fmt: skip
    resources = defs.resources or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.materialize(assets, resources=resources, partition_key=DAY.isoformat())  # type: ignore[arg-type]


def _check_day(settings: Settings, url: str, schema: str | None) -> None:
    result = _materialize_one_day(settings)
    assert result.success
    lake = Path(settings.lake_root())
    prefix = f"{schema}." if schema else ""
    engine = sa.create_engine(url)
    tz = UTC if schema else None  # SQLite keeps naive UTC text
    start, end = datetime(2026, 3, 3, tzinfo=tz), datetime(2026, 3, 4, tzinfo=tz)
    with engine.connect() as conn:
        expected_payments = conn.execute(
            sa.text(
                f"SELECT count(*) FROM {prefix}payments WHERE updated_at >= :s AND updated_at < :e"
            ),
            {"s": start, "e": end},
        ).scalar_one()
    engine.dispose()
    assert expected_payments > 0
    part = lake / "billing" / "payments" / f"date={DAY}" / "part-0.parquet"
    table = pq.read_table(part)
    assert table.num_rows == expected_payments
    assert str(table.schema.field("amount_minor").type) == "int64"
    mats = {
        m.asset_key.to_user_string(): m
        for m in result.asset_materializations_for_node("billing__payments")
    }
    mat = mats["billing/payments"]
    assert mat.partition == DAY.isoformat()
    assert mat.metadata["dagster/row_count"].value == expected_payments
    totals = mat.metadata["money_totals_minor"].value
    assert isinstance(totals, dict)
    assert sum(v["amount_minor"] for v in totals.values()) == sum(
        table.column("amount_minor").to_pylist()
    )
    for name in DATASETS:
        assert (lake / "billing" / name / f"date={DAY}" / "part-0.parquet").is_file()


def test_materialize_one_partition_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    write_demo_data(url, DemoConfig(start=date(2026, 3, 1), days=5, customers=40), schema=None)
    settings = _settings(tmp_path, url, schema=None)
    _check_day(settings, url, None)
    # Re-materializing replaces the partition: still exactly one file with the same rows.
    before = pq.read_table(tmp_path / "lake/billing/payments/date=2026-03-03/part-0.parquet")
    assert _materialize_one_day(settings).success
    files = list((tmp_path / "lake/billing/payments/date=2026-03-03").iterdir())
    assert [f.name for f in files] == ["part-0.parquet"]
    assert pq.read_table(files[0]).equals(before)


@pytest.mark.postgres
def test_materialize_one_partition_postgres(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    write_demo_data(pg_url, DemoConfig(start=date(2026, 3, 1), days=5, customers=40), pg_schema)
    settings = _settings(tmp_path, pg_url, schema=pg_schema)
    _check_day(settings, pg_url, pg_schema)


@pytest.mark.s3
def test_materialize_one_partition_into_an_s3_lake(tmp_path: Path, s3_endpoint: str) -> None:
    import io

    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="tieout-lake")
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    write_demo_data(url, DemoConfig(start=date(2026, 3, 1), days=5, customers=40), schema=None)
    settings = settings_from_mapping(
        {
            "billing": {"url": url, "partitions_start": "2026-03-01"},
            "lake": {"root": "s3://tieout-lake/prod", "s3_endpoint_url": s3_endpoint},
        },
        tmp_path,
        "test.toml",
    )
    assert _materialize_one_day(settings).success
    assert _materialize_one_day(settings).success  # a re-run replaces, never appends
    keys = sorted(
        o["Key"]
        for o in s3.list_objects_v2(Bucket="tieout-lake", Prefix="prod/billing/").get(
            "Contents", []
        )
    )
    assert keys == sorted(f"prod/billing/{n}/date={DAY}/part-0.parquet" for n in DATASETS)
    body = s3.get_object(
        Bucket="tieout-lake", Key=f"prod/billing/payments/date={DAY}/part-0.parquet"
    )
    table = pq.read_table(io.BytesIO(body["Body"].read()))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        expected = conn.execute(
            sa.text("SELECT count(*) FROM payments WHERE updated_at >= :s AND updated_at < :e"),
            {"s": datetime(2026, 3, 3), "e": datetime(2026, 3, 4)},
        ).scalar_one()
    engine.dispose()
    assert table.num_rows == expected > 0


def test_every_asset_has_blocking_correctness_checks(tmp_path: Path) -> None:
    """Every asset carries checks the UI shows; correctness checks block what is downstream."""
    defs = build_definitions(_settings(tmp_path, "sqlite:///x.db"))
    for asset in defs.assets or []:
        assert isinstance(asset, dg.AssetsDefinition)
        specs = list(asset.check_specs)
        assert specs, asset.key
        blocking = {s.name for s in specs if s.blocking}
        assert any(n.endswith("_integrity") for n in blocking), (asset.key, blocking)
        assert all(not s.blocking for s in specs if s.name.endswith("_warnings"))
