"""A folder on local disk or under s3://bucket/prefix, with the few verbs tieout needs.

Settlement sources, their quarantine and the lake all sit on one of these, so a deployment can
move any of them to S3 (or MinIO, or any S3-compatible store via an endpoint URL) by changing
a path in dagster_project.toml. Keys are relative, '/'-separated and sorted when listed, so a
scan of the same folder always sees files in the same order.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tieout.errors import ConfigError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class StorageUnavailable(TransientError):
    """The S3 endpoint could not be reached or refused the request: retry later."""


def s3_client(endpoint_url: str | None) -> S3Client:
    """A plain boto3 S3 client; credentials come from the usual AWS environment/profile."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url)


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str  # relative to the storage root, '/'-separated
    size: int
    stamp: str = ""  # changes when the content may have: S3 ETag, local mtime in ns


class Storage:
    def __init__(self, root: str, s3_endpoint_url: str | None = None) -> None:
        self.root = root.rstrip("/")
        self.s3_endpoint_url = s3_endpoint_url
        self._s3: S3Client | None = None

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _client(self) -> S3Client:
        if self._s3 is None:
            self._s3 = s3_client(self.s3_endpoint_url)
        return self._s3

    def _bucket_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.root.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"{self.root}: an S3 location needs a bucket (s3://bucket/prefix)")
        return bucket, (prefix + "/" if prefix else "")

    def list(self, under: str = "") -> list[StoredFile]:
        """Every file below `under` (recursively), sorted by key."""
        out: list[StoredFile] = []
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            full = prefix + (under.strip("/") + "/" if under else "")
            try:
                pages = (
                    self._client()
                    .get_paginator("list_objects_v2")
                    .paginate(Bucket=bucket, Prefix=full)
                )
                for page in pages:
                    for obj in page.get("Contents", []):
                        key = obj.get("Key", "")
                        if key and not key.endswith("/"):
                            size, etag = int(obj.get("Size", 0)), str(obj.get("ETag", ""))
                            out.append(StoredFile(key[len(prefix) :], size, etag))
            except Exception as exc:
                raise _s3_error(exc, self.uri(under)) from None
        else:
            base = Path(self.root)
            start = base / under if under else base
            if not start.is_dir():
                return []
            for dirpath, dirnames, filenames in os.walk(start):
                dirnames.sort()
                for name in filenames:
                    path = Path(dirpath) / name
                    if path.is_file():
                        st = path.stat()
                        key = path.relative_to(base).as_posix()
                        out.append(StoredFile(key, st.st_size, str(st.st_mtime_ns)))
        return sorted(out, key=lambda f: f.key)

    def read(self, key: str) -> bytes:
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            try:
                return self._client().get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
            except Exception as exc:
                raise _s3_error(exc, self.uri(key)) from None
        return (Path(self.root) / key).read_bytes()

    def write(self, key: str, data: bytes) -> str:
        """Write whole (a temp file renamed into place locally; one PUT on S3)."""
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            try:
                self._client().put_object(Bucket=bucket, Key=prefix + key, Body=data)
            except Exception as exc:
                raise _s3_error(exc, self.uri(key)) from None
            return self.uri(key)
        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(path)

    def exists(self, key: str) -> bool:
        if not self.is_s3:
            return (Path(self.root) / key).is_file()
        bucket, prefix = self._bucket_prefix()
        try:
            resp = self._client().list_objects_v2(Bucket=bucket, Prefix=prefix + key, MaxKeys=1)
        except Exception as exc:
            raise _s3_error(exc, self.uri(key)) from None
        return any(o.get("Key") == prefix + key for o in resp.get("Contents", []))


def _s3_error(exc: Exception, where: str) -> Exception:
    """Missing buckets and refused credentials are the user's to fix; the rest may pass."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            f"{where}: no AWS credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return ConfigError(f"{where}: {code}; check the bucket name and the credentials")
        if code in ("NoSuchKey", "404"):
            return FileNotFoundError(where)
    return StorageUnavailable(f"{where}: {type(exc).__name__}: {exc}")
