"""The Parquet lake: one file per dataset and business day, on local disk or S3.

A partition is exactly one object, written whole and swapped in (an atomic rename locally, a
single PUT on S3), so re-materializing a day replaces it and can never append twice.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from tieout.connectors.storage import s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _write_options() -> dict[str, Any]:
    return {"compression": "zstd", "use_dictionary": True, "write_statistics": True}


class Lake:
    def __init__(self, root: str, s3_endpoint_url: str | None = None) -> None:
        self.root = root.rstrip("/")
        self.s3_endpoint_url = s3_endpoint_url
        self._s3: S3Client | None = None

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, dataset: Sequence[str], partition: str, zone: str = "") -> str:
        parts = [p for p in (zone, *dataset) if p]
        return f"{self.root}/{'/'.join(parts)}/date={partition}/part-0.parquet"

    def _client(self) -> S3Client:
        if self._s3 is None:
            self._s3 = s3_client(self.s3_endpoint_url)
        return self._s3

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def write(self, dataset: Sequence[str], partition: str, table: pa.Table, zone: str = "") -> str:
        """Replace the partition with `table`; returns where it went."""
        return self._write_uri(self.uri(dataset, partition, zone), table)

    def put_table(self, key: str, table: pa.Table) -> str:
        """Write `table` whole at `key` (relative to the root), outside the partition layout."""
        return self._write_uri(f"{self.root}/{key}", table)

    def get_table(self, key: str) -> pa.Table:
        return self._read_uri(f"{self.root}/{key}")

    def _write_uri(self, uri: str, table: pa.Table) -> str:
        if self.is_s3:
            buf = io.BytesIO()
            pq.write_table(table, buf, **_write_options())
            bucket, key = self._split(uri)
            self._client().put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
            return uri
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp, **_write_options())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return uri

    def delete(self, dataset: Sequence[str], partition: str, zone: str = "") -> None:
        uri = self.uri(dataset, partition, zone)
        if self.is_s3:
            bucket, key = self._split(uri)
            self._client().delete_object(Bucket=bucket, Key=key)
        else:
            Path(uri).unlink(missing_ok=True)

    def exists(self, dataset: Sequence[str], partition: str, zone: str = "") -> bool:
        uri = self.uri(dataset, partition, zone)
        if not self.is_s3:
            return Path(uri).is_file()
        bucket, key = self._split(uri)
        resp = self._client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(o.get("Key") == key for o in resp.get("Contents", []))

    def read(self, dataset: Sequence[str], partition: str, zone: str = "") -> pa.Table:
        return self._read_uri(self.uri(dataset, partition, zone))

    def num_rows(self, dataset: Sequence[str], partition: str, zone: str = "") -> int:
        """A partition's row count from its Parquet footer, without reading its data."""
        uri = self.uri(dataset, partition, zone)
        if self.is_s3:
            bucket, key = self._split(uri)
            body = self._client().get_object(Bucket=bucket, Key=key)["Body"].read()
            return int(pq.read_metadata(io.BytesIO(body)).num_rows)
        return int(pq.read_metadata(uri).num_rows)

    def _read_uri(self, uri: str) -> pa.Table:
        if self.is_s3:
            bucket, key = self._split(uri)
            body = self._client().get_object(Bucket=bucket, Key=key)["Body"].read()
            return pq.read_table(io.BytesIO(body))
        return pq.read_table(uri)
