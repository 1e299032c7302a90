"""Salesforce through simple-salesforce: records upserted by external id, small sets through
sObject Collections (200 a request), large ones through Bulk API 2.0.

Upsert by external id is idempotent, which is what makes re-sending after an unknown outcome
safe: a record sent twice is updated, never doubled (unless two Salesforce records already
share the external id, which Salesforce reports per record and tieout reports by key).

simple-salesforce re-logs in on an expired session for REST calls but not inside `bulk2`
(it copies the session id), so the target logs in again itself, once per failure. Every
request carries a timeout (a session adapter: bulk2 passes none). Credentials come from the
environment and are handed to the client only; errors name objects and keys, never secrets.
"""

from __future__ import annotations

import csv
import io
import operator
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tieout.erp.plan import RecordOutcome
from tieout.errors import ConfigError, RetryableError
from tieout.revenue.model import ObjectShape, SalesforceRecord
from tieout.settings import SalesforceSettings, resolve_env

COLLECTION_SIZE: Final = 200
#: What a Bulk API CSV cell says to set a field to null (an empty cell changes nothing).
NULL: Final = "#N/A"
#: Per-record error codes worth another try (the rest are terminal for that record).
RETRYABLE_RECORD_CODES: Final = frozenset(
    {"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION"}
)


# -------------------------------------------------------------------------------- the client


def _session(settings: SalesforceSettings, base_dir: Path) -> Any:
    """A requests session with a default timeout and, when set, the CA bundle to trust: it
    wins over REQUESTS_CA_BUNDLE, which requests would otherwise prefer."""
    import requests
    from requests.adapters import HTTPAdapter

    timeout = settings.timeout_seconds
    verify: str | None = None
    if settings.ca_bundle:
        path = Path(resolve_env(settings.ca_bundle, "revenue.salesforce.ca_bundle"))
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"revenue.salesforce.ca_bundle: {path} is not a file")
        verify = str(path)

    class _Adapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            if verify is not None:
                kwargs["verify"] = verify
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", _Adapter())
    session.mount("http://", _Adapter())
    return session


def make_client(settings: SalesforceSettings, base_dir: Path) -> Any:
    """A logged-in simple-salesforce client from the settings and the environment."""
    from simple_salesforce.api import Salesforce

    def env(value: str, key: str) -> str:
        return resolve_env(value, f"revenue.salesforce.{key}")

    session = _session(settings, base_dir)
    domain = env(settings.domain, "domain")
    common: dict[str, Any] = {"version": settings.api_version, "session": session}
    if settings.auth == "jwt":
        key_file = Path(env(settings.private_key_file, "private_key_file"))
        if not key_file.is_absolute():
            key_file = base_dir / key_file
        if not key_file.is_file():
            raise ConfigError(f"revenue.salesforce.private_key_file: {key_file} is not a file")
        instance = env(settings.instance_url, "instance_url") if settings.instance_url else None
        kwargs: dict[str, Any] = {"instance_url": instance} if instance else {"domain": domain}
        return Salesforce(
            username=env(settings.username, "username"),
            consumer_key=env(settings.consumer_key, "consumer_key"),
            privatekey_file=str(key_file),
            **kwargs,
            **common,
        )
    return Salesforce(
        username=env(settings.username, "username"),
        password=env(settings.password, "password"),
        security_token=env(settings.security_token, "security_token"),
        domain=domain,
        **common,
    )


# -------------------------------------------------------------------------------- describe


def describe(client: Any, sobject: str) -> ObjectShape:
    from simple_salesforce.exceptions import SalesforceResourceNotFound

    try:
        result = getattr(client, sobject).describe()
    except SalesforceResourceNotFound:
        raise ConfigError(
            f"Salesforce has no object {sobject} (revenue.salesforce.objects): create it or "
            "map another object name"
        ) from None
    return ObjectShape(sobject, {f["name"]: f for f in result["fields"]})


# -------------------------------------------------------------------------------- errors


def _error_codes(exc: Any) -> str:
    content = getattr(exc, "content", None)
    text = content if isinstance(content, str) else repr(content)
    return text


def classify(exc: BaseException) -> RetryableError | None:
    """A failed request as retryable (throttling, 5xx, timeouts), or None (a real error)."""
    import requests
    from simple_salesforce.exceptions import (
        SalesforceError,
        SalesforceGeneralError,
        SalesforceOperationError,
        SalesforceRefusedRequest,
    )

    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return RetryableError(f"{type(exc).__name__}: no answer", maybe_written=True)
    if isinstance(exc, SalesforceRefusedRequest) and "REQUEST_LIMIT_EXCEEDED" in _error_codes(exc):
        return RetryableError("REQUEST_LIMIT_EXCEEDED", maybe_written=False)
    if isinstance(exc, SalesforceGeneralError) and (getattr(exc, "status", 0) or 0) >= 500:
        return RetryableError(f"HTTP {exc.status}", maybe_written=True)
    if isinstance(exc, SalesforceError) and (getattr(exc, "status", 0) or 0) in (429, 503):
        return RetryableError(f"HTTP {exc.status}", maybe_written=True)
    if isinstance(exc, SalesforceOperationError):
        # A Bulk job that timed out or ended Failed/Aborted (e.g. stopped halfway): its rows
        # are sent again in a new job, which upsert makes harmless for the ones that landed.
        return RetryableError(f"Bulk job: {str(exc)[:200]}", maybe_written=True)
    return None


def _record_error(code: str, message: str, fields: Sequence[str] = ()) -> RecordOutcome:
    where = f" ({', '.join(fields)})" if fields else ""
    return RecordOutcome(
        False, error=f"{code}: {message}{where}", retryable=code in RETRYABLE_RECORD_CODES
    )


# -------------------------------------------------------------------------------- the target


def to_csv(records: Sequence[SalesforceRecord]) -> tuple[list[str], str]:
    """Bulk CSV of records of one object: the external id first, then every field any of them
    sets. An empty value is sent as `#N/A`, Bulk API's null: an empty cell would leave the
    field as it was, where sObject Collections (JSON null) clears it; a record loads the same
    whichever path it takes. A field the record does not set at all, or a parent reference
    (`Rel__r.Ext__c`) left empty, is an empty cell: left as it is."""
    columns = sorted({name for r in records for name in r.values})
    ext = records[0].external_id_field
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([ext, *columns])
    getters = [operator.itemgetter(c) for c in columns]
    nullable = [i for i, c in enumerate(columns, start=1) if "." not in c]
    rows = []
    for r in records:
        values = r.values
        try:
            row: list[str | None] = [r.key, *[g(values) for g in getters]]
        except KeyError:
            row = [r.key, *(values.get(c) for c in columns)]
        if "" in row:
            for i in nullable:
                if row[i] == "":
                    row[i] = NULL
        rows.append(row)  # None (not set) is written as an empty cell
    writer.writerows(rows)
    return [ext, *columns], buf.getvalue()


def split_csv(text: str, max_bytes: int, rows: int) -> list[tuple[int, str]]:
    """(row count, CSV) chunks under `max_bytes` each, header repeated, never splitting a row
    (a quoted value may hold a newline). `rows` is the whole text's row count."""
    if len(text.encode()) <= max_bytes:
        return [(rows, text)]
    header, _, body = text.partition("\n")
    chunks: list[tuple[int, str]] = []
    part: list[str] = []
    size = len(header.encode()) + 1
    budget = size
    for row in _csv_rows(body):
        n = len(row.encode())
        if part and budget + n > max_bytes:
            chunks.append((len(part), header + "\n" + "".join(part)))
            part, budget = [], size
        part.append(row)
        budget += n
    if part:
        chunks.append((len(part), header + "\n" + "".join(part)))
    return chunks


def _csv_rows(body: str) -> list[str]:
    """Physical CSV rows (a quoted field may hold a newline) with their line ends."""
    out: list[str] = []
    current: list[str] = []
    quotes = 0
    for line in body.splitlines(keepends=True):
        current.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            out.append("".join(current))
            current, quotes = [], 0
    if current:
        out.append("".join(current))
    return out


def success_ids(text: str, ext: str) -> list[tuple[str, str]]:
    """(external id, Salesforce id) of a Bulk job's successful results.

    A million rows through `csv` cost seconds, and only two fields are needed: rows that start
    `"sf__Id","sf__Created","<ext>"` (Salesforce quotes every field) are cut at the first
    three separators; anything unusual (a quote inside those fields, a row that does not
    split, a quoted line break) sends the whole text through `csv` instead."""
    first, _, body = text.partition("\n")
    header = next(csv.reader([first]), [])
    if header[:3] != ["sf__Id", "sf__Created", ext]:
        return _success_ids_csv(text, ext)
    out: list[tuple[str, str]] = []
    for line in body.splitlines():
        if not line:
            continue
        parts = line.split('","', 3)
        if len(parts) < 3 or not parts[0].startswith('"'):
            return _success_ids_csv(text, ext)
        key = parts[2] if len(parts) == 4 else parts[2].removesuffix('"')
        if '"' in key or '"' in parts[0][1:]:
            return _success_ids_csv(text, ext)
        out.append((key, parts[0][1:]))
    return out


def _success_ids_csv(text: str, ext: str) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    if ext not in header:
        return []
    at, sf_id = header.index(ext), header.index("sf__Id") if "sf__Id" in header else -1
    return [(row[at], row[sf_id] if sf_id >= 0 else "") for row in reader if len(row) > at]


class SalesforceTarget:
    """The two calls the poster needs, over one logged-in client per thread.

    Objects listed in `bulk_objects` (more records than `collections_threshold` in the plan)
    go through Bulk API 2.0, the rest through sObject Collections.
    """

    system: str = "salesforce"
    record_type: str = "sobject"
    #: Upserts by external id: resending after an unknown outcome updates, never doubles.
    idempotent: bool = True

    def __init__(
        self,
        settings: SalesforceSettings,
        client_factory: Callable[[], Any] | None = None,
        base_dir: Path | None = None,
        bulk_objects: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self._factory = client_factory or (lambda: make_client(settings, base_dir or Path.cwd()))
        self._local = threading.local()
        self.bulk_objects = bulk_objects
        self.logins = 0
        self.bulk_jobs = 0
        self._count_lock = threading.Lock()

    def _client(self, fresh: bool = False) -> Any:
        client = None if fresh else getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
            with self._count_lock:
                self.logins += 1
        return client

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(client)`; an expired session logs in again once; failures classified."""
        from simple_salesforce.exceptions import SalesforceExpiredSession

        try:
            try:
                return fn(self._client())
            except SalesforceExpiredSession:
                return fn(self._client(fresh=True))
        except Exception as exc:
            retry = classify(exc)
            if retry is not None:
                raise retry from None
            raise

    def upsert(self, records: Sequence[SalesforceRecord]) -> dict[str, RecordOutcome]:
        by_object: dict[tuple[str, str], list[SalesforceRecord]] = defaultdict(list)
        for r in records:
            by_object[(r.sobject, r.external_id_field)].append(r)
        out: dict[str, RecordOutcome] = {}
        for (sobject, _ext), group in sorted(by_object.items()):
            if sobject in self.bulk_objects:
                out.update(self._bulk(group))
            else:
                for i in range(0, len(group), COLLECTION_SIZE):
                    out.update(self._collection(group[i : i + COLLECTION_SIZE]))
        return out

    def _collection(self, records: Sequence[SalesforceRecord]) -> dict[str, RecordOutcome]:
        first = records[0]
        path = f"composite/sobjects/{first.sobject}/{first.external_id_field}"
        body = {"allOrNone": False, "records": [r.collection_json() for r in records]}
        answer = self._call(lambda sf: sf.restful(path, method="PATCH", json=body))
        out: dict[str, RecordOutcome] = {}
        for record, item in zip(records, answer or [], strict=False):
            if item.get("success"):
                out[record.external_id] = RecordOutcome(True, str(item.get("id") or ""))
            else:
                err = (item.get("errors") or [{}])[0]
                out[record.external_id] = _record_error(
                    str(err.get("statusCode") or "UNKNOWN"),
                    str(err.get("message") or ""),
                    err.get("fields") or (),
                )
        for record in records[len(answer or []) :]:
            out[record.external_id] = RecordOutcome(False, error="no answer", retryable=True)
        return out

    def _bulk(self, records: Sequence[SalesforceRecord]) -> dict[str, RecordOutcome]:
        """One Bulk API 2.0 upsert job per CSV chunk; then per-record results."""
        first = records[0]
        by_key = {r.key: r for r in records}
        _cols, text = to_csv(records)
        out: dict[str, RecordOutcome] = {}
        for rows, chunk in split_csv(text, self.settings.bulk_max_bytes, len(records)):
            out.update(self._bulk_job(first.sobject, first.external_id_field, rows, chunk, by_key))
        for r in records:
            out.setdefault(r.external_id, RecordOutcome(False, error="no result", retryable=True))
        return out

    def _bulk_job(
        self,
        sobject: str,
        ext: str,
        rows: int,
        chunk: str,
        by_key: Mapping[str, SalesforceRecord],
    ) -> dict[str, RecordOutcome]:
        """One Bulk API 2.0 upsert job through simple-salesforce's own job life cycle (create,
        upload, close, poll, abort on failure). The chunk is already below the size limit and
        its rows are counted here, so it goes as one upload (`_upload_data` with a counted
        chunk), not re-read and re-split by `upsert`."""
        from simple_salesforce.bulk2 import Operation

        poll = self.settings.bulk_poll_seconds

        def run(sf: Any) -> dict[str, Any]:
            bulk = getattr(sf.bulk2, sobject)
            result: dict[str, Any] = bulk._upload_data(
                Operation.upsert, (rows, chunk), external_id_field=ext, wait=poll
            )
            return result

        def fetch(job_id: str, which: str) -> tuple[dict[str, int], list[tuple[str, list[str]]]]:
            """The header's positions and (external id, row) pairs of one result set."""
            text = self._call(lambda sf: getattr(getattr(sf.bulk2, sobject), which)(job_id))
            reader = csv.reader(io.StringIO(text or ""))
            header = next(reader, [])
            if ext not in header:
                return {}, []
            at = header.index(ext)
            columns = {name: i for i, name in enumerate(header)}
            return columns, [(row[at], row) for row in reader if len(row) > at]

        result = self._call(run)
        with self._count_lock:
            self.bulk_jobs += 1
        job_id = result["job_id"]
        out: dict[str, RecordOutcome] = {}
        text = self._call(lambda sf: getattr(sf.bulk2, sobject).get_successful_records(job_id))
        for key, sf_id in success_ids(text or "", ext):
            r = by_key.get(key)
            if r is not None:
                out[r.external_id] = RecordOutcome(True, sf_id)
        if int(result.get("numberRecordsFailed") or 0):
            columns, failed = fetch(job_id, "get_failed_records")
            error_at = columns.get("sf__Error", -1)
            for key, row in failed:
                r = by_key.get(key)
                if r is None:
                    continue
                text = row[error_at] if error_at >= 0 else "UNKNOWN:"
                code, _, message = text.partition(":")
                out[r.external_id] = _record_error(code.strip(), message.strip())
        if int(result.get("numberRecordsProcessed") or 0) < int(
            result.get("numberRecordsTotal") or 0
        ):
            for key, _row in fetch(job_id, "get_unprocessed_records")[1]:
                r = by_key.get(key)
                if r is not None:
                    out[r.external_id] = RecordOutcome(
                        False, error="unprocessed by the Bulk job", retryable=True
                    )
        return out

    def read_back(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        """Upserts are idempotent: an unknown outcome is settled by sending again, so nothing
        is read back (None: send it)."""
        return dict.fromkeys(external_ids)
