"""The Parquet lake: one object per dataset and day, replaced whole, locally and on S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tieout.connectors.lake import Lake

DATASET = ("billing", "payments")
DAY = "2026-03-02"

FIRST = pa.table(
    {"payment_id": ["p1", "p2", "p3"], "amount_minor": pa.array([1, 2, 3], pa.int64())}
)
SECOND = pa.table({"payment_id": ["p9"], "amount_minor": pa.array([900], pa.int64())})


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- local ----------------------------------------------------------------------------------


def test_local_write_read_and_layout(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake") + "/")  # a trailing slash is tolerated
    uri = lake.write(DATASET, DAY, FIRST)
    assert uri == f"{tmp_path}/lake/billing/payments/date={DAY}/part-0.parquet"
    assert lake.exists(DATASET, DAY)
    assert not lake.exists(DATASET, "2026-03-03")
    assert lake.read(DATASET, DAY).equals(FIRST)
    assert pq.read_table(uri).equals(FIRST)  # plain Parquet, readable by anything


def test_local_rewrite_replaces_the_partition(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = Lake(str(root))
    lake.write(DATASET, DAY, FIRST)
    other_day = lake.write(DATASET, "2026-03-03", FIRST)
    lake.write(DATASET, DAY, SECOND)
    assert lake.read(DATASET, DAY).equals(SECOND)  # replaced, not appended
    assert lake.read(DATASET, "2026-03-03").equals(FIRST)  # other partitions untouched
    # Exactly one file per partition: no second part, no temporary file left behind.
    assert files_under(root) == sorted(
        [Path(lake.uri(DATASET, DAY)), Path(other_day)],
    )


def test_local_zone_is_a_separate_tree(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write(DATASET, DAY, FIRST)
    q_uri = lake.write(DATASET, DAY, SECOND, zone="_quarantine")
    assert q_uri == f"{tmp_path}/_quarantine/billing/payments/date={DAY}/part-0.parquet"
    assert lake.read(DATASET, DAY, zone="_quarantine").equals(SECOND)
    assert lake.read(DATASET, DAY).equals(FIRST)
    lake.delete(DATASET, DAY, zone="_quarantine")
    assert not lake.exists(DATASET, DAY, zone="_quarantine")
    assert lake.exists(DATASET, DAY)


def test_local_delete(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    uri = lake.write(DATASET, DAY, FIRST)
    lake.delete(DATASET, DAY)
    assert not Path(uri).exists()
    assert not lake.exists(DATASET, DAY)
    lake.delete(DATASET, DAY)  # deleting a missing partition is not an error


def test_local_failed_write_keeps_the_old_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "lake"
    lake = Lake(str(root))
    uri = lake.write(DATASET, DAY, FIRST)

    def broken_write(table: pa.Table, where: Any, **kwargs: Any) -> None:
        Path(where).write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr("tieout.connectors.lake.pq.write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        lake.write(DATASET, DAY, SECOND)
    monkeypatch.undo()
    assert lake.read(DATASET, DAY).equals(FIRST)
    assert files_under(root) == [Path(uri)]


def test_empty_table_is_written_as_an_empty_partition(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write(DATASET, DAY, FIRST)
    lake.write(DATASET, DAY, FIRST.schema.empty_table())
    back = lake.read(DATASET, DAY)
    assert back.num_rows == 0
    assert back.schema.equals(FIRST.schema)


# -- S3 (moto server) -------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = "lake-" + request.node.name.lower().replace("_", "-")[:40]
    client.create_bucket(Bucket=name)
    yield name, client
    for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


def keys(client: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.mark.s3
def test_s3_write_twice_leaves_one_object_with_the_second_content(
    s3_endpoint: str, bucket: tuple[str, Any]
) -> None:
    name, client = bucket
    lake = Lake(f"s3://{name}/prefix", s3_endpoint_url=s3_endpoint)
    uri = lake.write(DATASET, DAY, FIRST)
    key = f"prefix/billing/payments/date={DAY}/part-0.parquet"
    assert uri == f"s3://{name}/{key}"
    assert lake.read(DATASET, DAY).equals(FIRST)
    lake.write(DATASET, DAY, SECOND)
    assert keys(client, name) == [key]
    assert lake.read(DATASET, DAY).equals(SECOND)
    body = client.get_object(Bucket=name, Key=key)["Body"].read()
    assert pq.read_table(pa.BufferReader(body)).equals(SECOND)


@pytest.mark.s3
def test_s3_exists_delete_and_zones(s3_endpoint: str, bucket: tuple[str, Any]) -> None:
    name, client = bucket
    lake = Lake(f"s3://{name}/p", s3_endpoint_url=s3_endpoint)
    lake.write(DATASET, DAY, FIRST)
    lake.write(DATASET, DAY, SECOND, zone="_quarantine")
    lake.write(DATASET, "2026-03-03", FIRST)
    assert lake.exists(DATASET, DAY)
    assert lake.exists(DATASET, DAY, zone="_quarantine")
    assert not lake.exists(DATASET, "2026-03-04")
    # A key that is only a prefix of the partition's key does not count as the partition.
    client.put_object(
        Bucket=name, Key=f"p/billing/payments/date={DAY}/part-0.parquet.bak", Body=b""
    )
    lake.delete(DATASET, DAY)
    assert not lake.exists(DATASET, DAY)
    assert keys(client, name) == sorted(
        [
            f"p/_quarantine/billing/payments/date={DAY}/part-0.parquet",
            "p/billing/payments/date=2026-03-03/part-0.parquet",
            f"p/billing/payments/date={DAY}/part-0.parquet.bak",
        ]
    )
    lake.delete(DATASET, DAY)  # idempotent
    assert lake.read(DATASET, DAY, zone="_quarantine").equals(SECOND)


def test_num_rows_reads_the_footer_count(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    lake.write(DATASET, DAY, FIRST)
    assert lake.num_rows(DATASET, DAY) == FIRST.num_rows


@pytest.mark.s3
def test_num_rows_on_s3(s3_endpoint: str, bucket: tuple[str, Any]) -> None:
    name, _client = bucket
    lake = Lake(f"s3://{name}/prefix", s3_endpoint_url=s3_endpoint)
    lake.write(DATASET, DAY, SECOND)
    assert lake.num_rows(DATASET, DAY) == SECOND.num_rows
