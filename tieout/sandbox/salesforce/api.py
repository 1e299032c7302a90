"""Request handling: routing, auth, fault injection, the request log, and every endpoint.

Transport-free on purpose (a :class:`Request` in, a :class:`Response` out), so the HTTP layer
in ``server.py`` stays a thin TLS shell and the logic can be reasoned about on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal
from urllib.parse import parse_qsl

from tieout.sandbox.salesforce.auth import (
    Authenticator,
    LoginError,
    Sessions,
    soap_fault,
    soap_login_response,
)
from tieout.sandbox.salesforce.bulk import (
    COLUMN_DELIMITERS,
    FINAL_STATES,
    LINE_ENDINGS,
    OPERATIONS,
    IngestJob,
    JobState,
    ResultKind,
    process_job,
    result_csv,
)
from tieout.sandbox.salesforce.faults import FaultKind, FaultRegistry, Operation
from tieout.sandbox.salesforce.rest import (
    ApiError,
    collections_upsert,
    dumps,
    not_found,
    record_json,
)
from tieout.sandbox.salesforce.schema import id_factory
from tieout.sandbox.salesforce.store import ObjectStore, Store

__all__ = ["Request", "RequestRecord", "Response", "SandboxApi"]

log = logging.getLogger("tieout.sandbox.salesforce")

LOG_LIMIT = 100_000  # newest requests kept; a long-running sandbox must not grow forever
JSON = "application/json;charset=UTF-8"
CSV = "text/csv; charset=UTF-8"
BulkProcessing = Literal["background", "sync"]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    """Header names lower-cased."""
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    records: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One line of the request log. Paths only: no headers, bodies or tokens are kept."""

    method: str
    path: str
    status: int
    operation: Operation
    sobject: str | None
    records: int | None
    elapsed_ms: float


def _json_response(status: int, payload: object, records: int | None = None) -> Response:
    return Response(status, dumps(payload), JSON, records=records)


def _error_response(exc: ApiError) -> Response:
    return _json_response(exc.status, exc.body())


_SESSION_INVALID = ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
_LOGIN_PREFIX = re.compile(r"^/[A-Za-z0-9.-]+\.salesforce\.com(?=/services/(?:oauth2|Soap)/)")
_V = r"/services/data/v(?P<version>\d{2,3}\.\d)"

Handler = Callable[..., Response]


class SandboxApi:
    """Everything behind the socket. Thread-safe: each piece of state has its own lock."""

    def __init__(
        self,
        *,
        store: Store,
        authenticator: Authenticator,
        sessions: Sessions,
        faults: FaultRegistry,
        instance_url: Callable[[], str],
        org_id: str,
        user_id: str,
        bulk_processing: BulkProcessing,
        bulk_in_progress_polls: int,
        max_upload_bytes: int,
        api_limit: int,
    ) -> None:
        self.store = store
        self.auth = authenticator
        self.sessions = sessions
        self.faults = faults
        self._instance_url = instance_url
        self.org_id = org_id
        self.user_id = user_id
        self.bulk_processing = bulk_processing
        self.bulk_in_progress_polls = bulk_in_progress_polls
        self.max_upload_bytes = max_upload_bytes
        self.api_limit = api_limit
        self.jobs: dict[str, IngestJob] = {}
        self._jobs_lock = threading.Lock()
        self._job_ids = id_factory("750")
        self._job_counter = 0
        self._job_threads: list[threading.Thread] = []
        self._log: deque[RequestRecord] = deque(maxlen=LOG_LIMIT)
        self._counters: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._api_calls = 0
        rest: list[tuple[str, str, Operation, Handler]] = [
            ("GET", r"/services/data/?", Operation.VERSIONS, self._versions),
            ("GET", _V + r"/limits/?", Operation.LIMITS, self._limits),
            ("GET", _V + r"/sobjects/?", Operation.DESCRIBE_GLOBAL, self._describe_global),
            ("GET", _V + r"/sobjects/(?P<sobject>\w+)/describe/?", Operation.DESCRIBE,
             self._describe),
            ("GET", _V + r"/sobjects/(?P<sobject>\w+)/?", Operation.DESCRIBE, self._metadata),
            ("GET", _V + r"/sobjects/(?P<sobject>\w+)/(?P<record_id>\w+)/?",
             Operation.SOBJECT_GET, self._get_record),
            ("GET", _V + r"/sobjects/(?P<sobject>\w+)/(?P<field>\w+)/(?P<value>[^/]+)/?",
             Operation.SOBJECT_GET, self._get_by_external_id),
            ("PATCH", _V + r"/composite/sobjects/(?P<sobject>\w+)/(?P<field>\w+)/?",
             Operation.COLLECTIONS_UPSERT, self._collections_upsert),
            ("POST", _V + r"/jobs/ingest/?", Operation.BULK_CREATE_JOB, self._create_job),
            ("GET", _V + r"/jobs/ingest/?", Operation.BULK_LIST_JOBS, self._list_jobs),
            ("GET", _V + r"/jobs/ingest/(?P<job_id>\w+)/?", Operation.BULK_JOB_INFO,
             self._job_info),
            ("PATCH", _V + r"/jobs/ingest/(?P<job_id>\w+)/?", Operation.BULK_SET_STATE,
             self._set_job_state),
            ("DELETE", _V + r"/jobs/ingest/(?P<job_id>\w+)/?", Operation.BULK_DELETE_JOB,
             self._delete_job),
            ("PUT", _V + r"/jobs/ingest/(?P<job_id>\w+)/batches/?", Operation.BULK_UPLOAD,
             self._upload),
            ("GET", _V + r"/jobs/ingest/(?P<job_id>\w+)/(?P<kind>successfulResults|"
             r"failedResults|unprocessedRecords)/?", Operation.BULK_RESULTS, self._results),
            ("POST", r"/services/oauth2/token/?", Operation.LOGIN, self._oauth_token),
            ("POST", r"/services/Soap/u/(?P<version>\d{2,3}\.\d)(?:/.*)?", Operation.LOGIN,
             self._soap_login),
        ]  # fmt: skip
        self._routes = [
            (method, re.compile(pattern + "$", re.IGNORECASE), op, fn)
            for method, pattern, op, fn in rest
        ]

    # ------------------------------------------------------------------ dispatch

    def instance_url(self) -> str:
        return self._instance_url()

    def _route(self, method: str, path: str) -> tuple[Operation, Handler | None, dict[str, str]]:
        prefix = _LOGIN_PREFIX.match(path)
        if prefix:
            path = path[prefix.end() :]
        allowed: list[str] = []
        for route_method, pattern, op, fn in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            return op, fn, match.groupdict()
        if allowed:
            return Operation.UNKNOWN, None, {"allowed": ",".join(sorted(set(allowed)))}
        return Operation.UNKNOWN, None, {}

    def handle(self, request: Request) -> Response:
        """Route, apply faults and auth, run the endpoint, record the outcome."""
        started = time.perf_counter()
        path = request.path.partition("?")[0]
        op, fn, params = self._route(request.method, path)
        sobject = params.get("sobject")
        if sobject is None and "job_id" in params:
            job = self.jobs.get(params["job_id"])
            sobject = job.sobject if job else None
        try:
            response = self._guarded(request, op, fn, params, sobject)
        except ApiError as exc:
            response = _error_response(exc)
        except Exception:
            log.exception("sandbox error on %s %s", request.method, path)
            response = _error_response(
                ApiError(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred.")
            )
        if op is not Operation.LOGIN and op is not Operation.VERSIONS:
            response.headers.setdefault(
                "Sforce-Limit-Info", f"api-usage={self._api_calls}/{self.api_limit}"
            )
        record = RequestRecord(
            method=request.method,
            path=path,
            status=response.status,
            operation=op,
            sobject=sobject,
            records=response.records,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )
        with self._stats_lock:
            self._log.append(record)
            self._counters[f"op:{op}"] += 1
            self._counters[f"status:{response.status}"] += 1
        log.debug("%s %s -> %s", request.method, path, response.status)
        return response

    def _guarded(
        self,
        request: Request,
        op: Operation,
        fn: Handler | None,
        params: dict[str, str],
        sobject: str | None,
    ) -> Response:
        latency = self.faults.take(FaultKind.LATENCY, op, sobject)
        if latency is not None:
            time.sleep(latency.seconds)
        if fn is None:
            if "allowed" in params:
                raise ApiError(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{request.method}' not allowed. Allowed are {params['allowed']}",
                )
            raise not_found()
        if self.faults.take(FaultKind.SERVICE_UNAVAILABLE, op, sobject) is not None:
            if op is Operation.LOGIN:
                return Response(503, b"Service Unavailable", "text/plain")
            raise ApiError(503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable")
        if op is Operation.LOGIN or op is Operation.VERSIONS:
            return fn(request, **params)
        authorization = request.headers.get("authorization", "")
        token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
        if not self.sessions.valid(token):
            raise _SESSION_INVALID
        if self.faults.take(FaultKind.SESSION_EXPIRED, op, sobject) is not None:
            self.sessions.expire_all()
            raise _SESSION_INVALID
        if self.faults.take(FaultKind.REQUEST_LIMIT_EXCEEDED, op, sobject) is not None:
            raise ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        with self._stats_lock:
            self._api_calls += 1
        return fn(request, **params)

    # ------------------------------------------------------------------ stats

    def request_log(self) -> list[RequestRecord]:
        with self._stats_lock:
            return list(self._log)

    def counters(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._counters)

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            for key, value in increments.items():
                self._counters[key] += value

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._log.clear()
            self._counters.clear()

    # ------------------------------------------------------------------ login

    def _oauth_token(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            token = self.auth.oauth_token(form, request.headers.get("authorization"))
        except LoginError as exc:
            self.count(login_failures=1)
            return _json_response(400, {"error": exc.error, "error_description": exc.description})
        self.count(logins=1)
        issued = str(int(time.time() * 1000))
        instance = self.instance_url()
        signature = base64.b64encode(
            hmac.new(token.encode(), issued.encode(), hashlib.sha256).digest()
        ).decode()
        return _json_response(
            200,
            {
                "access_token": token,
                "instance_url": instance,
                "id": f"{instance}/id/{self.org_id}/{self.user_id}",
                "token_type": "Bearer",
                "issued_at": issued,
                "signature": signature,
            },
        )

    def _soap_login(self, request: Request, version: str) -> Response:
        try:
            token = self.auth.soap_login(request.body)
        except LoginError as exc:
            self.count(login_failures=1)
            return Response(500, soap_fault(exc.error, exc.description), "text/xml;charset=UTF-8")
        self.count(logins=1)
        body = soap_login_response(
            token=token,
            instance_url=self.instance_url(),
            version=version,
            org_id=self.org_id,
            user_id=self.user_id,
            username=self.auth.credentials.username,
        )
        return Response(200, body, "text/xml;charset=UTF-8")

    # ------------------------------------------------------------------ REST

    def _object(self, name: str) -> ObjectStore:
        target = self.store.object(name)
        if target is None:
            raise not_found()
        return target

    def _versions(self, request: Request) -> Response:
        return _json_response(
            200, [{"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"}]
        )

    def _limits(self, request: Request, version: str) -> Response:
        used = self._api_calls
        return _json_response(
            200,
            {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": self.api_limit - used},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000 - len(self.jobs)},
            },
        )

    def _base(self, version: str) -> str:
        return f"/services/data/v{version}"

    def _describe_global(self, request: Request, version: str) -> Response:
        base = self._base(version)
        sobjects = [o.meta.summary(base) for o in self.store.objects.values()]
        return _json_response(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects})

    def _describe(self, request: Request, version: str, sobject: str) -> Response:
        return _json_response(200, self._object(sobject).meta.describe(self._base(version)))

    def _metadata(self, request: Request, version: str, sobject: str) -> Response:
        summary = self._object(sobject).meta.summary(self._base(version))
        return _json_response(200, {"objectDescribe": summary, "recentItems": []})

    def _get_record(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        target = self._object(sobject)
        with self.store.lock:
            ids = target.find("Id", record_id)
            record = dict(target.by_id[ids[0]]) if ids else None
        if record is None:
            raise not_found()
        return _json_response(200, record_json(target, record, version), records=1)

    def _get_by_external_id(
        self, request: Request, version: str, sobject: str, field: str, value: str
    ) -> Response:
        target = self._object(sobject)
        spec = target.meta.by_lower.get(field.lower())
        if spec is None or not spec.external_id:
            raise not_found(
                f"Provided external ID field does not exist or is not accessible: {field}"
            )
        with self.store.lock:
            ids = target.find(spec.name, value)
            records = [dict(target.by_id[rid]) for rid in ids]
        if not records:
            raise not_found()
        if len(records) > 1:
            base = self._base(version)
            urls = [f"{base}/sobjects/{target.meta.name}/{r['Id']}" for r in records]
            return _json_response(300, urls, records=len(urls))
        return _json_response(200, record_json(target, records[0], version), records=1)

    def _collections_upsert(
        self, request: Request, version: str, sobject: str, field: str
    ) -> Response:
        if float(version) < 46.0:
            raise not_found()
        target = self._object(sobject)
        try:
            payload = json.loads(request.body or b"null", parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None
        results, counts = collections_upsert(target, field, payload)
        self.count(**{f"rows_{k}": v for k, v in counts.items()})
        return _json_response(200, results, records=len(results))

    # ------------------------------------------------------------------ Bulk API 2.0

    def _job(self, job_id: str) -> IngestJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def _create_job(self, request: Request, version: str) -> Response:
        try:
            payload = json.loads(request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "JSON_PARSER_ERROR", "Malformed job definition") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Malformed job definition")
        operation = payload.get("operation")
        if operation not in OPERATIONS:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Operation not supported: {operation}")
        target = self.store.object(str(payload.get("object", "")))
        if target is None:
            raise ApiError(400, "INVALIDJOB", f"Unable to find object: {payload.get('object')}")
        if payload.get("contentType", "CSV") != "CSV":
            raise ApiError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
        delimiter = payload.get("columnDelimiter", "COMMA")
        line_ending = payload.get("lineEnding", "LF")
        if delimiter not in COLUMN_DELIMITERS or line_ending not in LINE_ENDINGS:
            raise ApiError(400, "INVALIDJOB", "InvalidJob : bad columnDelimiter or lineEnding")
        external_id: str | None = None
        if operation == "upsert":
            name = payload.get("externalIdFieldName")
            if not isinstance(name, str) or not name:
                raise ApiError(
                    400, "INVALIDJOB", "InvalidJob : External ID field is required for upsert"
                )
            spec = target.meta.by_lower.get(name.lower())
            if spec is None or not (spec.external_id or spec.name == "Id"):
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field {name} is not an external ID field of {target.meta.name}",
                )
            external_id = spec.name
        with self._jobs_lock:
            self._job_counter += 1
            job = IngestJob(
                job_id=self._job_ids(self._job_counter),
                sobject=target.meta.name,
                operation=operation,
                external_id_field=external_id,
                column_delimiter=delimiter,
                line_ending=line_ending,
                api_version=version,
                created_by=self.user_id,
                created=self.store.now(),
            )
            self.jobs[job.id] = job
        info = job.info()
        info["contentUrl"] = f"services/data/v{version}/jobs/ingest/{job.id}/batches"
        self.count(jobs_created=1)
        return _json_response(200, info)

    def _list_jobs(self, request: Request, version: str) -> Response:
        with self._jobs_lock:
            jobs = list(self.jobs.values())
        records = [job.info() for job in jobs]
        return _json_response(
            200, {"done": True, "records": records, "nextRecordsUrl": None}, len(records)
        )

    def _job_info(self, request: Request, version: str, job_id: str) -> Response:
        return _json_response(200, self._job(job_id).info(poll=True))

    def upload_too_large(self, length: int) -> Response:
        """The answer to an upload whose Content-Length is over the limit (body not read)."""
        exc = ApiError(
            400,
            "CLIENTINPUTERROR",
            f"Failed to read request. Exceeded max size limit of {self.max_upload_bytes}",
        )
        self.count(uploads_rejected=1)
        return _error_response(exc)

    def _upload(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id)
        if len(request.body) > self.max_upload_bytes:
            return self.upload_too_large(len(request.body))
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "CLIENTINPUTERROR", "Invalid UTF-8 in the job data") from None
        with job.lock:
            if job.state is not JobState.OPEN:
                raise ApiError(409, "INVALIDJOBSTATE", f"Job {job.id} is not open for data upload")
            job.uploads += 1
            if job.data is None:
                job.data = text.removeprefix("\ufeff")
        return Response(201, b"", JSON)

    def _set_job_state(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id)
        try:
            payload = json.loads(request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        state = payload.get("state") if isinstance(payload, dict) else None
        if state == JobState.UPLOAD_COMPLETE:
            return self._close_job(job)
        if state == JobState.ABORTED:
            with job.lock:
                if job.state in FINAL_STATES:
                    raise ApiError(
                        400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state} and cannot be aborted"
                    )
                if job.state is JobState.IN_PROGRESS:
                    job.abort_requested = True
                else:
                    job.state = JobState.ABORTED
                    job.error_message = "Job aborted by user"
            info = job.info()
            info["state"] = str(JobState.ABORTED)
            return _json_response(200, info)
        raise ApiError(400, "INVALIDJOBSTATE", f"Invalid job state: {state}")

    def _close_job(self, job: IngestJob) -> Response:
        with job.lock:
            if job.state is not JobState.OPEN:
                raise ApiError(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not Open")
            if job.uploads > 1:
                # Salesforce's wording, typo included, so log searches find both.
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"Found multipe contents for job: <{job.id}>, please 'Close' / 'Abort' / "
                    "'Delete' the current Job then create a new Job and make sure you only do "
                    "'PUT' once on a given Job.",
                )
            job.partial_failure = self.faults.take(
                FaultKind.BULK_PARTIAL_FAILURE, Operation.BULK_SET_STATE, job.sobject
            )
            job.unprocessed = self.faults.take(
                FaultKind.BULK_UNPROCESSED, Operation.BULK_SET_STATE, job.sobject
            )
            job.state = JobState.UPLOAD_COMPLETE
            job.fake_in_progress_polls = self.bulk_in_progress_polls
        info = job.info()
        if self.bulk_processing == "sync":
            self._process(job)
        else:
            thread = threading.Thread(
                target=self._process, args=(job,), name=f"bulk-{job.id}", daemon=True
            )
            with self._jobs_lock:
                self._job_threads = [t for t in self._job_threads if t.is_alive()]
                self._job_threads.append(thread)
            thread.start()
        return _json_response(200, info)

    def _process(self, job: IngestJob) -> None:
        try:
            counts = process_job(job, self.store)
        except Exception:
            log.exception("bulk job %s crashed", job.id)
            with job.lock:
                job.state = JobState.FAILED
                job.error_message = "InternalServerError : unexpected error"
            return
        self.count(**{f"rows_{k}": v for k, v in counts.items()}, jobs_processed=1)

    def wait_for_jobs(self, timeout: float) -> bool:
        """Wait for background job threads; False if some are still running."""
        deadline = time.monotonic() + timeout
        with self._jobs_lock:
            threads = list(self._job_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def _delete_job(self, request: Request, version: str, job_id: str) -> Response:
        job = self._job(job_id)
        with job.lock:
            if job.state in (JobState.OPEN, JobState.IN_PROGRESS):
                raise ApiError(
                    400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state} and cannot be deleted"
                )
        with self._jobs_lock:
            self.jobs.pop(job_id, None)
        job.drop_data()
        return Response(204, b"", JSON)

    def _results(self, request: Request, version: str, job_id: str, kind: str) -> Response:
        job = self._job(job_id)
        result_kind = {k.value.lower(): k for k in ResultKind}[kind.lower()]
        body, count = result_csv(job, result_kind)
        return Response(200, body, CSV, records=count)
