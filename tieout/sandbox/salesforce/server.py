"""A local Salesforce org over HTTPS that the real simple-salesforce client can talk to.

Why a server rather than mocks: tieout's Salesforce connector should be tested through the
client's real URL building, login flows, retries on expired sessions and Bulk 2.0 polling.
The sandbox serves TLS on 127.0.0.1 (simple-salesforce only builds ``https://`` URLs) with a
CA it makes at start; clients trust it with ``requests.Session(verify=sandbox.ca_bundle)``.

Use it as a context manager::

    with SalesforceSandbox() as sandbox:
        sf = sandbox_client(sandbox)          # tieout.sandbox.salesforce.client
        sf.Account.describe()

Login through simple-salesforce's public parameters: its login URLs are
``https://{domain}.salesforce.com/services/...``, so passing ``domain=sandbox.login_domain``
(``"127.0.0.1:PORT/login"``) yields ``https://127.0.0.1:PORT/login.salesforce.com/services/...``,
which the sandbox serves like ``login.salesforce.com``. For the JWT flow, pass the same value
as ``instance_url`` instead, so the JWT audience stays ``https://login.salesforce.com``.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tieout.sandbox.salesforce.api import (
    BulkProcessing,
    Request,
    RequestRecord,
    SandboxApi,
    log,
)
from tieout.sandbox.salesforce.auth import Authenticator, Credentials, Sessions
from tieout.sandbox.salesforce.faults import Fault, FaultKind, FaultRegistry, Operation
from tieout.sandbox.salesforce.schema import FieldSpec, build_objects, default_schema, id_factory
from tieout.sandbox.salesforce.store import ObjectStore, Store, ValidationRule
from tieout.sandbox.salesforce.tls import make_key_material

__all__ = ["SalesforceSandbox"]

MAX_UPLOAD_BYTES = 150 * 1024 * 1024  # Bulk API 2.0's per-job upload limit
_DRAIN_CHUNK = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to :class:`SandboxApi`, writes the response."""

    protocol_version = "HTTP/1.1"  # keep-alive: one TLS handshake per client connection
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    timeout = 300  # idle keep-alive connections are dropped after this
    server: _TLSServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: requests go to the sandbox's request log instead of stderr."""

    def _serve(self) -> None:
        api = self.server.api
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._write(400, b"", "text/plain", {})
            return
        if length > api.max_upload_bytes:
            self._drain(length)  # read it all so the client sees our answer, not a reset
            response = api.upload_too_large(length)
        else:
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = api.handle(
                Request(method=self.command, path=self.path, headers=headers, body=body)
            )
        self._write(response.status, response.body, response.content_type, response.headers)

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(_DRAIN_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _write(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


class _TLSServer(ThreadingHTTPServer):
    """Threaded HTTP server whose connections are wrapped in TLS inside the worker thread,
    so a slow or failing handshake never blocks the accept loop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, api: SandboxApi):
        self.ssl_context = context
        self.api = api
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)  # bound the handshake; the handler sets its own idle timeout
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # e.g. a client that does not trust our CA aborts the handshake: not our error.
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            _Handler(conn, client_address, self)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.debug("connection from %s ended: %s", client_address, exc)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving %s", client_address)


class SalesforceSandbox:
    """An in-memory Salesforce org served over TLS on 127.0.0.1.

    Args:
        schema: object name -> fields; defaults to :func:`default_schema` (Account and
            tieout's invoice, payment and revenue-schedule objects).
        port: TCP port, 0 for one chosen by the OS.
        username, password, security_token, consumer_key, consumer_secret: accepted
            credentials; secrets default to fresh random values per sandbox.
        trusted_ip: accept the password without the security token (as for a trusted IP).
        bulk_processing: ``"background"`` (a thread per job, as Salesforce is asynchronous) or
            ``"sync"`` (the job is processed inside the UploadComplete request, so the first
            status poll already sees JobComplete; the fastest end to end).
        bulk_in_progress_polls: status polls that still report ``InProgress`` after a job is
            done, to exercise a client's wait loop deterministically.
        max_upload_bytes: Bulk upload limit (Salesforce: 150 MB).
        api_limit: the daily API request allowance shown in ``Sforce-Limit-Info``.
    """

    def __init__(
        self,
        schema: Mapping[str, Sequence[FieldSpec]] | None = None,
        *,
        port: int = 0,
        username: str = "integration@tieout-sandbox.example",
        password: str | None = None,
        security_token: str | None = None,
        consumer_key: str | None = None,
        consumer_secret: str | None = None,
        trusted_ip: bool = False,
        bulk_processing: BulkProcessing = "background",
        bulk_in_progress_polls: int = 0,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        api_limit: int = 1_000_000,
    ) -> None:
        if bulk_processing not in ("background", "sync"):
            raise ValueError("bulk_processing must be 'background' or 'sync'")
        self._requested_port = port
        self._dir = Path(tempfile.mkdtemp(prefix="tieout-sf-sandbox-"))
        try:
            self._keys = make_key_material(self._dir)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.credentials = Credentials(
            username=username,
            password=password if password is not None else secrets.token_urlsafe(12),
            security_token=(
                security_token if security_token is not None else secrets.token_hex(12).upper()
            ),
            consumer_key=consumer_key or "3MVG9" + secrets.token_urlsafe(30),
            consumer_secret=consumer_secret or secrets.token_hex(32).upper(),
            private_key_file=self._keys.jwt_private_key,
        )
        self.org_id = id_factory("00D")(1)
        self.user_id = id_factory("005")(1)
        self.store = Store(build_objects(schema if schema is not None else default_schema()))
        self.faults = FaultRegistry()
        self.sessions = Sessions(self.org_id)
        self._port = 0
        self.auth = Authenticator(
            self.credentials, self.sessions, trusted_ip=trusted_ip, audiences=frozenset()
        )
        self.auth.register_certificate(self._keys.jwt_certificate.read_bytes())
        self.api = SandboxApi(
            store=self.store,
            authenticator=self.auth,
            sessions=self.sessions,
            faults=self.faults,
            instance_url=lambda: self.instance_url,
            org_id=self.org_id,
            user_id=self.user_id,
            bulk_processing=bulk_processing,
            bulk_in_progress_polls=bulk_in_progress_polls,
            max_upload_bytes=max_upload_bytes,
            api_limit=api_limit,
        )
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        with self._lifecycle:
            if self._server is not None:
                return self
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._keys.server_cert, self._keys.server_key)
            server = _TLSServer(("127.0.0.1", self._requested_port), context, self.api)
            self._port = server.server_address[1]
            self.auth.audiences = frozenset(
                {
                    "https://login.salesforce.com",
                    "https://test.salesforce.com",
                    f"https://{self.login_domain}.salesforce.com",
                    self.instance_url,
                }
            )
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"salesforce-sandbox-{self._port}",
                daemon=True,
            )
            self._thread.start()
            log.info("Salesforce sandbox listening on %s", self.instance_url)
            return self

    def close(self) -> None:
        """Stop serving and delete the key material. Safe to call twice."""
        with self._lifecycle:
            server, self._server = self._server, None
            if server is not None:
                server.shutdown()
                server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
                self._thread = None
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the sandbox is not started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: what simple-salesforce calls the instance."""
        return f"127.0.0.1:{self.port}"

    @property
    def instance_url(self) -> str:
        return f"https://{self.host}"

    @property
    def login_domain(self) -> str:
        """The ``domain`` to give simple-salesforce so its login URL lands on the sandbox."""
        return f"{self.host}/login"

    @property
    def token_url(self) -> str:
        return f"{self.instance_url}/services/oauth2/token"

    @property
    def ca_bundle(self) -> str:
        """PEM file of the sandbox CA: ``requests.Session().verify = sandbox.ca_bundle``."""
        return str(self._keys.ca_bundle)

    @property
    def jwt_private_key_file(self) -> str:
        """The client-side key for the JWT bearer flow (its certificate is pre-registered)."""
        return str(self._keys.jwt_private_key)

    @property
    def jwt_certificate_file(self) -> str:
        return str(self._keys.jwt_certificate)

    # ------------------------------------------------------------------ sessions

    def issue_session(self) -> str:
        """A valid access token without a login round trip (for tests of other layers)."""
        return self.sessions.issue()

    def expire_sessions(self) -> int:
        """Invalidate every live session now; returns how many there were."""
        return self.sessions.expire_all()

    def register_jwt_certificate(self, pem: bytes) -> None:
        """Also accept JWTs signed by the key of this certificate."""
        self.auth.register_certificate(pem)

    # ------------------------------------------------------------------ faults

    def inject(
        self,
        kind: FaultKind | str,
        *,
        times: int | None = 1,
        operation: Operation | str | None = None,
        sobject: str | None = None,
        seconds: float = 0.0,
        every: int = 2,
        processed_fraction: float = 0.5,
        error_code: str = "UNABLE_TO_LOCK_ROW",
    ) -> Fault:
        """Arm a fault; returns it so a test can read ``fault.triggered``.

        ``times=None`` keeps it armed until :meth:`clear_faults`. ``operation`` and
        ``sobject`` narrow it; login endpoints only see faults aimed at
        ``Operation.LOGIN`` explicitly (503 and latency).
        """
        fault = Fault(
            kind=FaultKind(kind),
            times=times,
            operation=Operation(operation) if operation is not None else None,
            sobject=sobject,
            seconds=seconds,
            every=every,
            processed_fraction=processed_fraction,
            error_code=error_code,
        )
        return self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def add_validation_rule(
        self,
        sobject: str,
        external_id: str,
        message: str = "Validation rule failed",
        fields: Iterable[str] = (),
    ) -> None:
        """Fail writes of the record with this external id (FIELD_CUSTOM_VALIDATION_EXCEPTION)."""
        target = self._target(sobject)
        with self.store.lock:
            rules = dict(self.store.validation_rules.get(target.meta.name, {}))
            rules[external_id] = ValidationRule(message, tuple(fields))
            self.store.validation_rules[target.meta.name] = rules

    def clear_validation_rules(self) -> None:
        with self.store.lock:
            self.store.validation_rules = {}

    # ------------------------------------------------------------------ data

    def _target(self, sobject: str) -> ObjectStore:
        target = self.store.object(sobject)
        if target is None:
            raise KeyError(f"unknown object {sobject!r}")
        return target

    def seed(self, sobject: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert records as given, without checks (duplicate external ids allowed)."""
        return self.store.seed(sobject, records)

    def records(self, sobject: str, key_field: str | None = None) -> dict[Any, dict[str, Any]]:
        """Copies of the records keyed by ``key_field`` (default: first external id, else Id).

        When seeding made an external id ambiguous, the first record holding it is shown.
        """
        target = self._target(sobject)
        key = key_field or target.primary_key_field()
        with self.store.lock:
            out: dict[Any, dict[str, Any]] = {}
            for record in target.by_id.values():
                value = record.get(key)
                if value is not None and value not in out:
                    out[value] = dict(record)
            return out

    def all_records(self, sobject: str) -> list[dict[str, Any]]:
        """Copies of every record in insertion order (duplicates included)."""
        target = self._target(sobject)
        with self.store.lock:
            return [dict(record) for record in target.by_id.values()]

    def record_count(self, sobject: str) -> int:
        return len(self._target(sobject).by_id)

    def jobs(self) -> list[dict[str, Any]]:
        """Job-info dicts of every Bulk ingest job, oldest first."""
        with self.api._jobs_lock:
            jobs = list(self.api.jobs.values())
        return [job.info() for job in jobs]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.api.jobs[job_id].info()

    def wait_for_jobs(self, timeout: float = 30.0) -> bool:
        """Wait until background Bulk jobs finish; False on timeout."""
        return self.api.wait_for_jobs(timeout)

    # ------------------------------------------------------------------ stats

    @property
    def request_log(self) -> list[RequestRecord]:
        return self.api.request_log()

    @property
    def counters(self) -> dict[str, int]:
        """``op:<operation>``, ``status:<code>``, ``logins``, ``rows_created``, ... counts."""
        return self.api.counters()

    def reset_stats(self) -> None:
        self.api.reset_stats()
