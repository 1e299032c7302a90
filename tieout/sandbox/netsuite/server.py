"""A local NetSuite SuiteTalk (SOAP 2023_2) server for tests and the demo.

`NetSuiteSandbox` answers the requests the real `netsuitesdk` / zeep client sends, so the
ERP connector is exercised end to end (HTTP, SOAP, token passport, per-record statuses)
without a NetSuite account and without mocking the client. It listens on 127.0.0.1 on an
OS-chosen port, serves its own minimal WSDL, keeps records in memory, validates journal
entries the way NetSuite does, and fails on demand (`inject`) so retry and idempotency
paths can be tested. Every request is logged (`requests`, `max_concurrent`) so tests can
assert batch sizes and bounded concurrency.

    with NetSuiteSandbox() as sandbox:
        client = sandbox_client(sandbox)          # tieout.sandbox.netsuite.client
        client.upsert(journal_entry)
        assert sandbox.record("journalEntry", "je-1")["lineList"]["line"][0]["debit"] == ...
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import math
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

from tieout.sandbox.netsuite.faults import (
    AFTER_COMMIT,
    FaultBook,
    FaultKind,
    InjectedFault,
)
from tieout.sandbox.netsuite.schema import (
    ACCOUNTING,
    GENERAL,
    WSDL_DIR,
    QName,
    SchemaViolation,
    load_schema,
)
from tieout.sandbox.netsuite.search import matches
from tieout.sandbox.netsuite.soap import (
    SoapFaultError,
    SoapRequest,
    WriteResponses,
    concurrent_session,
    fault_envelope,
    invalid_login,
    login_required,
    parse_request,
    request_blocked,
    response_envelope,
    status,
    unexpected,
    unsupported,
)
from tieout.sandbox.netsuite.store import (
    CODE_INVALID_REF,
    CODE_NOT_FOUND,
    CODE_USER_ERROR,
    DEFAULT_ACCOUNTS,
    DEFAULT_CURRENCIES,
    DEFAULT_SUBSIDIARIES,
    MAX_JOURNAL_LINES,
    RECORD_TYPES,
    RecordError,
    RecordStore,
    References,
    normalize_journal_entry,
)

logger = logging.getLogger(__name__)

WSDL_VERSION: Final = "2023_2"
WSDL_URL_PATH: Final = "/wsdl/v2023_2_0/"
ENDPOINT_PATH: Final = "/services/NetSuitePort_2023_2"
WSDL_FILE: Final = WSDL_DIR / "netsuite.wsdl"
MAX_LIST_RECORDS: Final = 200
"""NetSuite's limit on records in one synchronous add/update/upsertList request."""
_WSDL_ADDRESS_PLACEHOLDER: Final = 'location="http://127.0.0.1/services/NetSuitePort_2023_2"'
_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_KEPT_SEARCHES: Final = 100

RECORD_QNAMES: Final[Mapping[str, QName]] = {
    "journalEntry": (GENERAL, "JournalEntry"),
    "account": (ACCOUNTING, "Account"),
    "subsidiary": (ACCOUNTING, "Subsidiary"),
    "currency": (ACCOUNTING, "Currency"),
}
_TYPE_BY_XSI: Final = {qname[1]: rtype for rtype, qname in RECORD_QNAMES.items()}
_SEARCH_TARGETS: Final = {
    "AccountSearchBasic": "account",
    "AccountSearch": "account",
    "SubsidiarySearchBasic": "subsidiary",
    "SubsidiarySearch": "subsidiary",
    "TransactionSearchBasic": "journalEntry",
    "TransactionSearch": "journalEntry",
}
_SUBLISTS: Final = {"journalEntry": ("lineList",)}
"""Left out of search results when searchPreferences.bodyFieldsOnly is true (the default)."""
_READ_ONLY: Final = ("internalId", "nullFieldList", "createdDate", "lastModifiedDate")


@dataclass(frozen=True)
class TokenCredentials:
    """The token-based-authentication secrets the sandbox accepts (repr hides the secrets)."""

    consumer_key: str
    consumer_secret: str = field(repr=False)
    token_key: str
    token_secret: str = field(repr=False)


DEFAULT_ACCOUNT: Final = "TSTDRV123456"
DEFAULT_CREDENTIALS: Final = TokenCredentials(
    consumer_key="fake-consumer-key-tieout-sandbox",
    consumer_secret="fake-consumer-secret-tieout-sandbox",
    token_key="fake-token-id-tieout-sandbox",
    token_secret="fake-token-secret-tieout-sandbox",
)


@dataclass(frozen=True)
class RequestLogEntry:
    """One SOAP request as the sandbox saw it.

    `http_status` is None when the connection was dropped without an answer (after-commit
    faults); `fault_code` is the SOAP fault's code, or `HTTP_503`/`HTTP_429`, or the
    after-commit fault kind. `record_errors` lists (externalId, code) of records answered
    with isSuccess="false". Times are `time.monotonic()` seconds.
    """

    operation: str | None
    record_count: int
    external_ids: tuple[str | None, ...]
    http_status: int | None
    fault_code: str | None
    record_errors: tuple[tuple[str | None, str], ...]
    started_at: float
    ended_at: float

    @property
    def duration(self) -> float:
        return self.ended_at - self.started_at


@dataclass
class _Exchange:
    """What is learnt about a request while it is processed (becomes a RequestLogEntry)."""

    started_at: float
    operation: str | None = None
    external_ids: tuple[str | None, ...] = ()
    fault_code: str | None = None
    record_errors: list[tuple[str | None, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    drop_after: float | None = None
    """If set: send nothing, wait this many seconds, then close the connection."""


@dataclass
class _SearchSnapshot:
    records: list[dict[str, Any]]
    page_size: int


class NetSuiteSandbox:
    """An in-process NetSuite SOAP endpoint; start with `with NetSuiteSandbox() as sandbox:`.

    Arguments: `account` (the NetSuite account id clients must send), `credentials` (the
    one token the sandbox accepts), `port` (0: the OS picks), `accounts` / `subsidiaries` /
    `currencies` (seed records, decoded shape, each with an externalId; None: the defaults
    in `store.py`), `latency` (the response time: an answer leaves no sooner than this many
    seconds after its request arrived, the sandbox's own work included),
    `max_concurrent_requests` (None: unlimited; above it, requests get NetSuite's
    WS_REQUEST_BLOCKED fault),
    `max_records_per_list` and `max_lines_per_journal` (NetSuite's 200 and 1,000).
    """

    def __init__(
        self,
        *,
        account: str = DEFAULT_ACCOUNT,
        credentials: TokenCredentials = DEFAULT_CREDENTIALS,
        port: int = 0,
        accounts: Iterable[Mapping[str, Any]] | None = None,
        subsidiaries: Iterable[Mapping[str, Any]] | None = None,
        currencies: Iterable[Mapping[str, Any]] | None = None,
        latency: float = 0.0,
        max_concurrent_requests: int | None = None,
        max_records_per_list: int = MAX_LIST_RECORDS,
        max_lines_per_journal: int = MAX_JOURNAL_LINES,
    ) -> None:
        self._account = account
        self._credentials = credentials
        self._requested_port = port
        self._schema = load_schema()
        self._written = WriteResponses(self._schema)
        self._store = RecordStore()
        self._faults = FaultBook()
        self._lock = threading.Lock()
        self._latency = latency
        self._max_concurrent_requests = max_concurrent_requests
        self._max_records_per_list = max_records_per_list
        self._max_lines_per_journal = max_lines_per_journal
        self._seeds: dict[str, tuple[Mapping[str, Any], ...]] = {
            "currency": tuple(DEFAULT_CURRENCIES if currencies is None else currencies),
            "subsidiary": tuple(DEFAULT_SUBSIDIARIES if subsidiaries is None else subsidiaries),
            "account": tuple(DEFAULT_ACCOUNTS if accounts is None else accounts),
        }
        self._log: list[RequestLogEntry] = []
        self._in_flight = 0
        self._max_concurrent = 0
        self._nonces: set[tuple[str, int]] = set()
        self._searches: OrderedDict[str, _SearchSnapshot] = OrderedDict()
        self._counter = 0
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reseed()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._stop.clear()
        server = _Server(("127.0.0.1", self._requested_port), _Handler)
        server.sandbox = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"netsuite-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("NetSuite sandbox listening on %s", self.endpoint_url)
        return self

    def close(self) -> None:
        """Stop serving; requests still hanging (after-commit faults) are dropped at once."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses and credentials

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() or use `with`")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """Where SOAP requests go (NetSuite's `.../services/NetSuitePort_2023_2`)."""
        return f"{self.base_url}{ENDPOINT_PATH}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.base_url}{WSDL_URL_PATH}netsuite.wsdl"

    @property
    def wsdl_path(self) -> Path:
        """The WSDL as a file (its soap:address is a placeholder; netsuitesdk ignores it)."""
        return WSDL_FILE

    @property
    def wsdl_url_template(self) -> str:
        """For `NetSuiteClient.WSDL_URL_TEMPLATE` (netsuitesdk fills in `wsdl_version`)."""
        return f"{self.base_url}/wsdl/{{wsdl_version}}/netsuite.wsdl"

    @property
    def datacenter_url_template(self) -> str:
        """For `NetSuiteClient.DATACENTER_URL_TEMPLATE` (netsuitesdk fills in the port name)."""
        return f"{self.base_url}/services/{{netsuite_port_version}}"

    @property
    def account(self) -> str:
        return self._account

    @property
    def credentials(self) -> TokenCredentials:
        return self._credentials

    @property
    def consumer_key(self) -> str:
        return self._credentials.consumer_key

    @property
    def consumer_secret(self) -> str:
        return self._credentials.consumer_secret

    @property
    def token_key(self) -> str:
        return self._credentials.token_key

    @property
    def token_secret(self) -> str:
        return self._credentials.token_secret

    def client_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for a netsuitesdk client class aimed at this sandbox."""
        return {"account": self._account, "caching": False, "wsdl_version": WSDL_VERSION}

    def tba_kwargs(self) -> dict[str, str]:
        """Arguments for `NetSuiteClient.connect_tba` that this sandbox accepts."""
        return {
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "token_key": self.token_key,
            "token_secret": self.token_secret,
        }

    # ------------------------------------------------------------------ settings

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = seconds

    @property
    def max_concurrent_requests(self) -> int | None:
        with self._lock:
            return self._max_concurrent_requests

    @max_concurrent_requests.setter
    def max_concurrent_requests(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("max_concurrent_requests must be >= 1 or None")
        with self._lock:
            self._max_concurrent_requests = limit

    # ------------------------------------------------------------------ records

    def records(self, record_type: str) -> dict[str, dict[str, Any]]:
        """Copies of all records of a type, by externalId, in internalId order."""
        return self._store.by_external_id(_check_type(record_type))

    def record(self, record_type: str, external_id: str) -> dict[str, Any] | None:
        """A copy of one record, or None."""
        return self._store.get(_check_type(record_type), external_id=external_id)

    def seed(self, record_type: str, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert or replace records directly (no journal-entry checks); returns internalIds.

        Records use the decoded shape and need an externalId; an `internalId` is honoured.
        Unknown fields raise ValueError here rather than breaking a later response.
        """
        record_type = _check_type(record_type)
        checked = list(records)
        qname = RECORD_QNAMES[record_type]
        for record in checked:
            self._schema.encode([], qname[0], "record", qname, dict(record))
        return self._store.seed(record_type, checked)

    def reset(self) -> None:
        """Back to the seeded records, no faults, an empty log and fresh statistics."""
        self._faults.clear()
        with self._lock:
            self._log.clear()
            self._max_concurrent = self._in_flight
            self._nonces.clear()
            self._searches.clear()
        self._reseed()

    def _reseed(self) -> None:
        self._store.clear()
        for record_type in ("currency", "subsidiary", "account"):
            self.seed(record_type, self._seeds[record_type])

    # ------------------------------------------------------------------ fault injection

    def inject(self, fault: InjectedFault | FaultKind | str, /, **options: Any) -> InjectedFault:
        """Queue a fault: `inject(InjectedFault(...))` or `inject("http_503", times=2)`."""
        if not isinstance(fault, InjectedFault):
            fault = InjectedFault(kind=FaultKind(fault), **options)
        elif options:
            raise TypeError("pass options either in the InjectedFault or as keywords")
        self._faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def pending_faults(self) -> list[tuple[InjectedFault, int | None]]:
        """Queued faults with how many more matching requests each will fire on."""
        return self._faults.pending()

    # ------------------------------------------------------------------ observations

    @property
    def requests(self) -> tuple[RequestLogEntry, ...]:
        """Every SOAP request answered (or dropped) so far, in completion order."""
        with self._lock:
            return tuple(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()
            self._max_concurrent = self._in_flight

    @property
    def max_concurrent(self) -> int:
        """The most SOAP requests in flight at once since start / the last clear."""
        with self._lock:
            return self._max_concurrent

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # ------------------------------------------------------------------ HTTP

    def _serve_get(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        name = path.removeprefix(WSDL_URL_PATH) if path.startswith(WSDL_URL_PATH) else ""
        files = {p.name: p for p in WSDL_DIR.iterdir() if p.suffix in (".wsdl", ".xsd")}
        if name not in files:
            _send(handler, _Reply(404, b"Not Found", content_type="text/plain"))
            return
        body = files[name].read_bytes()
        if name == WSDL_FILE.name:
            # Point the WSDL's own service address at this sandbox.
            body = body.replace(
                _WSDL_ADDRESS_PLACEHOLDER.encode(), f'location="{self.endpoint_url}"'.encode()
            )
        _send(handler, _Reply(200, body))

    def _serve_post(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.split("?", 1)[0] != ENDPOINT_PATH:
            _send(handler, _Reply(404, b"Not Found", content_type="text/plain"))
            return
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            _send(handler, _Reply(400, b"Bad Content-Length", content_type="text/plain"))
            return
        if length > _MAX_BODY_BYTES:
            _send(handler, _Reply(413, b"Request Entity Too Large", content_type="text/plain"))
            return
        data = handler.rfile.read(length)
        exchange = _Exchange(started_at=time.monotonic())
        with self._lock:
            self._in_flight += 1
            in_flight = self._in_flight
            self._max_concurrent = max(self._max_concurrent, in_flight)
            latency = self._latency
            cap = self._max_concurrent_requests
        # The request leaves the log/in-flight count *before* its answer is sent: once a
        # client has its response, `requests` already shows it, and a client that fires its
        # next request at once is never counted as two requests in flight.
        finished = False
        try:
            try:
                reply = self._process(data, exchange, in_flight, cap)
            except Exception as exc:  # a sandbox bug must still answer like a server
                logger.exception("NetSuite sandbox failed on a %s request", exchange.operation)
                exchange.fault_code = "UNEXPECTED_ERROR"
                reply = _Reply(500, fault_envelope(unexpected(f"Sandbox error: {exc!r}")))
            # Latency is the response time, the sandbox's own work included (a real
            # account's latency includes its processing): the answer leaves `latency` after
            # the request arrived, or when the work is done if that took longer.
            remaining = exchange.started_at + latency - time.monotonic()
            if remaining > 0:
                self._stop.wait(remaining)
            if reply.drop_after is not None:
                self._stop.wait(reply.drop_after)
                finished = self._finish(exchange, None)
                _drop(handler)
            else:
                finished = self._finish(exchange, reply.status)
                _send(handler, reply)
        finally:
            if not finished:
                self._finish(exchange, None)

    def _finish(self, exchange: _Exchange, http_status: int | None) -> bool:
        entry = RequestLogEntry(
            operation=exchange.operation,
            record_count=len(exchange.external_ids),
            external_ids=exchange.external_ids,
            http_status=http_status,
            fault_code=exchange.fault_code,
            record_errors=tuple(exchange.record_errors),
            started_at=exchange.started_at,
            ended_at=time.monotonic(),
        )
        with self._lock:
            self._in_flight -= 1
            self._log.append(entry)
        logger.debug(
            "sandbox %s records=%d status=%s fault=%s",
            entry.operation,
            entry.record_count,
            entry.http_status,
            entry.fault_code,
        )
        return True

    # ------------------------------------------------------------------ SOAP

    def _process(self, data: bytes, exchange: _Exchange, in_flight: int, cap: int | None) -> _Reply:
        try:
            request = parse_request(self._schema, data)
        except SchemaViolation as exc:
            return _fault_reply(unexpected(f"The request could not be read: {exc}"), exchange)
        exchange.operation = request.operation
        exchange.external_ids = _request_external_ids(request)

        if cap is not None and in_flight > cap:
            return _fault_reply(request_blocked(), exchange)
        injected = self._faults.take_request_fault(request.operation, exchange.external_ids)
        if injected is not None and injected.kind not in AFTER_COMMIT:
            return _injected_reply(injected, exchange)
        try:
            self._authenticate(request.token_passport)
            value = self._dispatch(request, exchange)
        except SoapFaultError as fault:
            return _fault_reply(fault, exchange)
        body = response_envelope(self._schema, request.operation, value, self._next_id("ns"))
        if injected is not None:
            exchange.fault_code = injected.kind.value
            hang = injected.hang_seconds if injected.kind is FaultKind.TIMEOUT_AFTER_COMMIT else 0
            return _Reply(0, b"", drop_after=hang)
        return _Reply(200, body)

    def _authenticate(self, passport: Mapping[str, Any] | None) -> None:
        """NetSuite token-based authentication: HMAC-SHA256 over
        `account&consumerKey&tokenId&nonce&timestamp`, keyed `consumerSecret&tokenSecret`.

        A replayed nonce/timestamp pair is refused like NetSuite does, which also catches a
        client that reuses one passport for several requests.
        """
        if passport is None:
            raise login_required()
        creds = self._credentials
        account = str(passport.get("account", ""))
        consumer_key = str(passport.get("consumerKey", ""))
        token = str(passport.get("token", ""))
        nonce = str(passport.get("nonce", ""))
        timestamp = int(passport.get("timestamp", 0))
        signature = passport.get("signature") or {}
        if (
            account.upper() != self._account.upper()
            or not hmac.compare_digest(consumer_key.encode(), creds.consumer_key.encode())
            or not hmac.compare_digest(token.encode(), creds.token_key.encode())
            or signature.get("algorithm") != "HMAC-SHA256"
        ):
            raise invalid_login()
        base = "&".join([account, consumer_key, token, nonce, str(timestamp)])
        key = f"{creds.consumer_secret}&{creds.token_secret}"
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, str(signature.get("value", "")).encode()):
            raise invalid_login()
        with self._lock:
            if (nonce, timestamp) in self._nonces:
                raise invalid_login()
            self._nonces.add((nonce, timestamp))

    def _dispatch(self, request: SoapRequest, exchange: _Exchange) -> dict[str, Any]:
        body = request.body
        operation = request.operation
        if operation == "upsert":
            return {"writeResponse": self._upsert_all([body["record"]], operation, exchange)[0]}
        if operation == "upsertList":
            records = body.get("record") or []
            if len(records) > self._max_records_per_list:
                raise SoapFaultError(
                    "exceededRecordCountFault",
                    "MAX_RCRDS_EXCEEDED",
                    f"The request contains {len(records)} records; "
                    f"the maximum for a list operation is {self._max_records_per_list}.",
                )
            responses = self._upsert_all(records, operation, exchange, self._written)
            return {"writeResponseList": {"status": status(True), "writeResponse": responses}}
        if operation == "get":
            return {"readResponse": self._read(body["baseRef"])}
        if operation == "getList":
            reads = [self._read(ref) for ref in body.get("baseRef") or []]
            return {"readResponseList": {"status": status(True), "readResponse": reads}}
        if operation == "getAll":
            record_type = (body.get("record") or {}).get("recordType")
            if record_type != "currency":
                raise unsupported(f"getAll of {record_type!r}")
            found = [self._wire("currency", r) for r in self._store.all("currency")]
            return {
                "getAllResult": {
                    "status": status(True),
                    "totalRecords": len(found),
                    "recordList": {"record": found},
                }
            }
        if operation == "search":
            return {"searchResult": self._search(body["searchRecord"], request.search_preferences)}
        if operation == "searchMoreWithId":
            return {"searchResult": self._search_more(body["searchId"], body["pageIndex"])}
        raise unsupported(f"operation {operation!r}")  # pragma: no cover - parse_request guards

    # -- writes

    def _upsert_all(
        self,
        records: Sequence[Mapping[str, Any]],
        operation: str,
        exchange: _Exchange,
        written: WriteResponses | None = None,
    ) -> list[Any]:
        """One writeResponse per record; a failing record never stops the others. `written`:
        successes already encoded (a list's writeResponses, 200 alike)."""
        record_types = [_record_type_of(r) for r in records]
        external_ids = [r.get("externalId") for r in records]
        injected = self._faults.take_record_failures(operation, external_ids)
        responses: list[Any] = []
        # The store's lock is taken once for the list (NetSuite writes a list's records in
        # turn): taken per record, five requests' threads handed it back and forth 200 times.
        with self._store.locked():
            references = References(self._store)
            for index, (record_type, fields) in enumerate(zip(record_types, records, strict=True)):
                external_id = fields.get("externalId")
                try:
                    if index in injected:
                        raise RecordError(injected[index].code, injected[index].message)
                    internal_id = self._upsert_one(record_type, fields, references)
                except RecordError as err:
                    exchange.record_errors.append((external_id, err.code))
                    responses.append({"status": status(False, err.code, err.message)})
                else:
                    if written is not None and type(external_id) is str:
                        responses.append(written.written(internal_id, external_id, record_type))
                        continue
                    ref = {"xsiType": "RecordRef", "internalId": internal_id, "type": record_type}
                    responses.append(
                        {"status": status(True), "baseRef": {**ref, "externalId": external_id}}
                    )
        return responses

    def _upsert_one(
        self, record_type: str, fields: Mapping[str, Any], references: References | None = None
    ) -> str:
        clean = {k: v for k, v in fields.items() if k != "xsiType" and k not in _READ_ONLY}
        if not clean.get("externalId"):
            raise RecordError(CODE_USER_ERROR, "Upsert requires an externalId.")
        with self._store.locked():
            if record_type == "journalEntry":
                # `clean` and its lines are this request's own decoded values, not shared:
                # the normalized entry may reuse them, and the store may keep it as is.
                record = normalize_journal_entry(
                    self._store,
                    clean,
                    max_lines=self._max_lines_per_journal,
                    owned=True,
                    references=references,
                )
                return self._store.upsert(record_type, record, owned=True).internal_id
            if references is not None:
                references.forget()
            return self._store.upsert(record_type, clean).internal_id

    # -- reads

    def _read(self, ref: Mapping[str, Any]) -> dict[str, Any]:
        record_type = ref.get("type")
        if record_type is None:
            return {"status": status(False, CODE_INVALID_REF, "The record type is required.")}
        if record_type not in RECORD_TYPES:
            raise unsupported(f"record type {record_type!r}")
        if not ref.get("internalId") and not ref.get("externalId"):
            return {
                "status": status(
                    False, CODE_INVALID_REF, "An internalId or externalId is required."
                )
            }
        found = self._store.get(
            record_type, internal_id=ref.get("internalId"), external_id=ref.get("externalId")
        )
        if found is None:
            return {"status": status(False, CODE_NOT_FOUND, "That record does not exist.")}
        return {"status": status(True), "record": self._wire(record_type, found)}

    def _wire(
        self, record_type: str, record: Mapping[str, Any], body_fields_only: bool = False
    ) -> dict[str, Any]:
        """A stored record as a polymorphic `platformCore:Record` value."""
        out = {"xsiType": RECORD_QNAMES[record_type][1], **record}
        if body_fields_only:
            for sublist in _SUBLISTS.get(record_type, ()):
                out.pop(sublist, None)
        return out

    def _search(
        self, search_record: Mapping[str, Any], preferences: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        kind = str(search_record.get("xsiType", ""))
        record_type = _SEARCH_TARGETS.get(kind)
        if record_type is None:
            raise unsupported(f"searching with {kind or 'this search record'}")
        if kind.endswith("SearchBasic"):
            criteria = dict(search_record)
        else:
            criteria = dict(search_record.get("basic") or {})
        criteria.pop("xsiType", None)
        preferences = preferences or {}
        page_size = preferences.get("pageSize") or 1000
        if not 5 <= page_size <= 1000:
            return {
                "status": status(
                    False, "INVALID_SEARCH_PAGE_SIZE", "The page size must be between 5 and 1000."
                )
            }
        body_only = preferences.get("bodyFieldsOnly", True)
        found = [
            self._wire(record_type, r, body_fields_only=body_only)
            for r in self._store.all(record_type)
            if matches(record_type, r, criteria)
        ]
        search_id = self._next_id("search")
        with self._lock:
            self._searches[search_id] = _SearchSnapshot(found, page_size)
            while len(self._searches) > _KEPT_SEARCHES:
                self._searches.popitem(last=False)
        return _page(search_id, found, page_size, 1)

    def _search_more(self, search_id: str, page_index: int) -> dict[str, Any]:
        with self._lock:
            snapshot = self._searches.get(search_id)
        if snapshot is None:
            return {"status": status(False, "INVALID_SEARCH_MORE", "Invalid or expired search id.")}
        pages = math.ceil(len(snapshot.records) / snapshot.page_size)
        if not 1 <= page_index <= max(pages, 1):
            return {
                "status": status(
                    False, "INVALID_SEARCH_PAGE_INDEX", f"The page index must be 1 to {pages}."
                )
            }
        return _page(search_id, snapshot.records, snapshot.page_size, page_index)

    def _next_id(self, kind: str) -> str:
        """NetSuite-looking ids for documentInfo.nsId and searchId (sequential)."""
        with self._lock:
            self._counter += 1
            counter = self._counter
        prefix = "WEBSERVICES" if kind == "ns" else "WEBSERVICES_SEARCH"
        return f"{prefix}_{self._account}_{counter:010d}"


# ---------------------------------------------------------------------- helpers


def _check_type(record_type: str) -> str:
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record type {record_type!r}; expected one of {RECORD_TYPES}")
    return record_type


def _record_type_of(record: Mapping[str, Any]) -> str:
    kind = str(record.get("xsiType", ""))
    if kind not in _TYPE_BY_XSI:
        raise unsupported(f"{kind or 'untyped'} records")
    return _TYPE_BY_XSI[kind]


def _request_external_ids(request: SoapRequest) -> tuple[str | None, ...]:
    body = request.body
    if request.operation == "upsert":
        return (body["record"].get("externalId"),)
    if request.operation == "upsertList":
        return tuple(r.get("externalId") for r in body.get("record") or [])
    if request.operation == "get":
        return (body["baseRef"].get("externalId"),)
    if request.operation == "getList":
        return tuple(r.get("externalId") for r in body.get("baseRef") or [])
    return ()


def _page(
    search_id: str, records: Sequence[dict[str, Any]], page_size: int, page_index: int
) -> dict[str, Any]:
    start = (page_index - 1) * page_size
    return {
        "status": status(True),
        "totalRecords": len(records),
        "pageSize": page_size,
        "totalPages": math.ceil(len(records) / page_size),
        "pageIndex": page_index,
        "searchId": search_id,
        "recordList": {"record": list(records[start : start + page_size])},
    }


def _fault_reply(fault: SoapFaultError, exchange: _Exchange) -> _Reply:
    exchange.fault_code = fault.code
    return _Reply(500, fault_envelope(fault))


def _injected_reply(fault: InjectedFault, exchange: _Exchange) -> _Reply:
    if fault.kind is FaultKind.CONCURRENCY_LIMIT:
        return _fault_reply(request_blocked(), exchange)
    if fault.kind is FaultKind.CONCURRENT_SESSION:
        return _fault_reply(concurrent_session(), exchange)
    if fault.kind is FaultKind.HTTP_503:
        exchange.fault_code = "HTTP_503"
        return _Reply(503, b"Service Unavailable", content_type="text/plain")
    exchange.fault_code = "HTTP_429"
    return _Reply(
        429, b"Too Many Requests", content_type="text/plain", headers=(("Retry-After", "1"),)
    )


def _send(handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
    try:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(reply.body)
    except OSError:  # the client gave up (e.g. its timeout fired); nothing left to do
        handler.close_connection = True


def _drop(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: NetSuiteSandbox


class _Handler(BaseHTTPRequestHandler):
    server_version = "NetSuiteSandbox/1.0"

    def _sandbox(self) -> NetSuiteSandbox:
        return cast(_Server, self.server).sandbox

    def do_GET(self) -> None:
        self._sandbox()._serve_get(self)

    def do_POST(self) -> None:
        self._sandbox()._serve_post(self)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only; bodies (which carry the token passport) are never logged.
        logger.debug("sandbox http: " + format, *args)
