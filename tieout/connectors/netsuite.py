"""NetSuite through netsuitesdk (SuiteTalk SOAP): journal entries upserted by external id.

netsuitesdk's `upsertList` wrapper is commented out, so list requests go through the client's
own `request("upsertList", ...)`, which adds the token passport and maps NetSuite's
concurrency fault to `NetSuiteRateLimitError`. The WSDL location and the endpoint are
settings: real users point them at a cached WSDL or a sandbox account, and tieout's tests at
the local sandbox (`tieout.sandbox.netsuite`).

Credentials come from the environment only; they are handed to the client and never logged.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from lxml import etree  # type: ignore[import-untyped]

from tieout.erp.journals import JournalEntry, JournalLine, netsuite_amount
from tieout.erp.plan import RecordOutcome
from tieout.errors import ConfigError, RetryableError
from tieout.money import exponent as currency_exponent
from tieout.settings import NetSuiteSettings, resolve_env

RECORD_TYPE: Final = "journalEntry"
#: Fault codes (in a SOAP fault or a list item's status) worth another try.
RETRYABLE_CODES: Final = frozenset(
    {
        "WS_REQUEST_BLOCKED",
        "WS_CONCUR_SESSION_DISALLWD",
        "EXCEEDED_CONCURRENT_REQUEST_LIMIT",
        "EXCEEDED_REQUEST_LIMIT",
        "EXCEEDED_CONCURRENT_REQUEST_LIMIT_FAULT",
        "UNEXPECTED_ERROR",
        "SERVER_UNAVAILABLE",
    }
)


class _MissingTypeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("LookupError: Did not find")


def silence_missing_type_warnings(logger_name: str) -> None:
    """netsuitesdk logs one line per WSDL type it cannot find, on a logger named after the
    client class; a trimmed WSDL (a cached subset, the sandbox's) lacks most of them on
    purpose."""
    logging.getLogger(logger_name).addFilter(_MissingTypeFilter())


silence_missing_type_warnings("TieoutNetSuiteClient")


def _wsdl_template(value: str, base_dir: Path) -> str:
    if "://" in value:
        return value
    path = Path(value)
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise ConfigError(f"erp.netsuite.wsdl_url: {path} does not exist")
    return path.resolve().as_uri()


def make_client(settings: NetSuiteSettings, base_dir: Path) -> Any:
    """A token-authenticated netsuitesdk client built from the settings and environment."""
    from netsuitesdk.internal.client import NetSuiteClient

    attrs: dict[str, Any] = {"__module__": __name__}
    if settings.wsdl_url:
        wsdl = resolve_env(settings.wsdl_url, "erp.netsuite.wsdl_url")
        attrs["WSDL_URL_TEMPLATE"] = (
            _wsdl_template(wsdl, base_dir).replace("{", "{{").replace("}", "}}")
        )
    if settings.endpoint_url:
        endpoint = resolve_env(settings.endpoint_url, "erp.netsuite.endpoint_url").rstrip("/")
        attrs["DATACENTER_URL_TEMPLATE"] = endpoint.replace("{", "{{").replace("}", "}}")
    cls = type("TieoutNetSuiteClient", (NetSuiteClient,), attrs)
    account = resolve_env(settings.account, "erp.netsuite.account")
    client = cls(account=account, caching=False, wsdl_version=settings.wsdl_version)
    client._client.transport.operation_timeout = settings.timeout_seconds
    declare_prefixes(client)
    client.connect_tba(
        consumer_key=resolve_env(settings.consumer_key, "erp.netsuite.consumer_key"),
        consumer_secret=resolve_env(settings.consumer_secret, "erp.netsuite.consumer_secret"),
        token_key=resolve_env(settings.token_key, "erp.netsuite.token_key"),
        token_secret=resolve_env(settings.token_secret, "erp.netsuite.token_secret"),
    )
    return client


def declare_prefixes(client: Any) -> None:
    """Declare a journal entry's namespace (under the prefix zeep already gives it, so
    netsuitesdk's `nsNN:Type` names still resolve) and xsi once, on the SOAP envelope.
    Otherwise every record's every top-level field declared the namespace again: a sixth
    of a 200-entry request's bytes, and of the work of rendering and reading them."""
    types = client._client.wsdl.types
    namespace = etree.QName(client.JournalEntry.qname).namespace
    prefix = {uri: name for name, uri in types.prefix_map.items()}.get(namespace)
    if prefix:
        types.set_ns_prefix(prefix, namespace)
    if "xsi" not in types.prefix_map:
        types.set_ns_prefix("xsi", "http://www.w3.org/2001/XMLSchema-instance")


def clone_client(client: Any) -> Any:
    """Another client like `client` (same class, account, credentials and options) for another
    thread: its own zeep `Client`, HTTP session and service proxy, over the WSDL `client`
    already parsed (zeep takes a parsed `Document`) instead of fetching and parsing it again,
    which for NetSuite's full WSDL takes seconds.

    netsuitesdk keeps only settings and read-only types on its client besides the zeep client
    and its service proxy, which are replaced here; these attribute names are netsuitesdk 3's.
    """
    import zeep
    import zeep.transports

    zeep_client_class: Any = zeep.Client
    transport_class: Any = zeep.transports.Transport
    source = client._client
    zeep_client = zeep_client_class(
        source.wsdl,
        transport=transport_class(operation_timeout=source.transport.operation_timeout),
        settings=source.settings,
    )
    binding = (
        f"{{urn:platform_{client.netsuite_binding_version}.webservices.netsuite.com}}"
        "NetSuiteBinding"
    )
    clone = copy.copy(client)
    clone._client = zeep_client
    clone._service_proxy = zeep_client.create_service(binding, client._datacenter_url)
    return clone


def tran_datetime(day: date) -> datetime:
    """NetSuite types tranDate as xsd:dateTime and reads it in the account's time zone; noon,
    without an offset, stays on the same calendar day wherever the account is."""
    return datetime(day.year, day.month, day.day, 12, 0)


def _defaults(xsd_type: Any) -> dict[str, Any]:
    """The values zeep's own constructor (`CompoundValue.__init__`) gives a complex type's
    fields when none are passed: None for most, a declared default for some (e.g.
    JournalEntryLineList's `replaceAll="true"`). zeep skips a None optional field at once."""
    out: dict[str, Any] = {}
    for name, container in xsd_type.elements_nested:
        value = container.default_value
        if isinstance(value, dict):
            out.update(value)
        else:
            out[name] = value
    for name, attribute in xsd_type.attributes:
        out[name] = attribute.default_value
    return out


def _field_names(xsd_type: Any) -> set[str]:
    names = {name for name, _ in xsd_type.attributes}
    names.update(name for name, _ in xsd_type.elements)
    return names


_LINE_FIELDS: Final = ("account", "memo", "debit", "credit", "department", "class")
_ENTRY_FIELDS: Final = ("externalId", "tranDate", "currency", "subsidiary", "memo", "lineList")


class _RecordBuilder:
    """zeep values for journal entries, built cheaply for one client's schema.

    zeep renders a complex value from a mapping as well as from its generated value objects,
    so only the top-level record (which needs its concrete type, for `xsi:type`) is a zeep
    `JournalEntry` object; its references and lines are plain dicts holding exactly what
    zeep's constructors would have put in their objects (every field, None when unset, and
    the declared defaults). The top-level object is a copy of an empty `JournalEntry` made
    once, instead of a fresh run of zeep's constructor, which matches every field against
    the keyword arguments. The field names are checked against the client's WSDL once; the
    XML zeep renders is byte for byte what it renders from its own constructors' objects.
    """

    def __init__(self, client: Any) -> None:
        for xsd_type, fields in (
            (client.JournalEntry, _ENTRY_FIELDS),
            (client.JournalEntryLineList, ("line",)),
            (client.JournalEntryLine, _LINE_FIELDS),
            (client.RecordRef, ("internalId",)),
        ):
            missing = set(fields) - _field_names(xsd_type)
            if missing:
                raise ConfigError(
                    f"the NetSuite WSDL's {xsd_type.name} has no field(s) {sorted(missing)}"
                )
        self.line_list = _defaults(client.JournalEntryLineList)
        self.line = _defaults(client.JournalEntryLine)
        self.ref = _defaults(client.RecordRef)
        empty = client.JournalEntry()
        self.entry_class: Any = type(empty)
        self.entry = {name: empty[name] for name in empty}
        self.direct = _direct_type(client, self)

    def _new_entry(self) -> Any:
        # CompoundValue keeps its fields in `__values__` (what its __init__ fills in).
        record = self.entry_class.__new__(self.entry_class)
        record.__values__ = dict(self.entry)
        return record

    def _ref(self, internal_id: str | None) -> dict[str, Any] | None:
        return None if internal_id is None else {**self.ref, "internalId": internal_id}

    def journal_entry(self, entry: JournalEntry, currency_id: str) -> Any:
        if self.direct is not None:
            return _PreparedEntry(self.direct, entry, currency_id)
        return self.zeep_record(entry, currency_id)

    def zeep_record(self, entry: JournalEntry, currency_id: str) -> Any:
        """The entry as values zeep's own renderer takes."""
        lines = []
        for line in entry.lines:
            value: dict[str, Any] = {
                **self.line,
                "account": self._ref(line.account),
                "memo": line.memo[:4000],
            }
            if line.debit_minor:
                value["debit"] = netsuite_amount(line.debit_minor, entry.currency)
            if line.credit_minor:
                value["credit"] = netsuite_amount(line.credit_minor, entry.currency)
            if line.department:
                value["department"] = self._ref(line.department)
            if line.class_:
                value["class"] = self._ref(line.class_)
            lines.append(value)
        record = self._new_entry()
        record["externalId"] = entry.external_id
        record["tranDate"] = tran_datetime(entry.tran_date)
        record["currency"] = self._ref(currency_id)
        record["subsidiary"] = self._ref(entry.subsidiary)
        record["memo"] = entry.memo[:4000]
        record["lineList"] = {**self.line_list, "line": lines}
        return record


def _prepared_entry_class() -> type:
    from zeep.xsd.valueobjects import CompoundValue

    class PreparedEntry(CompoundValue):
        """A journal entry waiting in a zeep request. zeep keeps a value object as it is
        (anything else it rebuilds into the declared type's object) and renders it through
        its `_xsd_type` when that is not the declared type (how it renders a subtype with
        `xsi:type`), so this value's `_xsd_type` is a `_DirectJournalEntryType`."""

        def __init__(self, xsd_type: Any, entry: JournalEntry, currency_id: str) -> None:
            # Past CompoundValue's own __setattr__, which is Python code run per attribute.
            set_attribute = object.__setattr__
            set_attribute(self, "_xsd_type", xsd_type)
            set_attribute(self, "__values__", OrderedDict(entry=entry, currency_id=currency_id))

    return PreparedEntry


_PreparedEntry: Final[Any] = _prepared_entry_class()


def _prepared_entries_class() -> type:
    from zeep.xsd.valueobjects import CompoundValue

    class PreparedEntries(CompoundValue):
        """A request's journal entries as one value in zeep's list of records: zeep makes
        one record element for it, which `request_bytes` replaces with every entry's
        element (zeep's work per record element was a third of rendering a request)."""

        def __init__(self, xsd_type: Any, records: list[str]) -> None:
            set_attribute = object.__setattr__
            set_attribute(self, "_xsd_type", xsd_type)
            set_attribute(self, "__values__", OrderedDict(records=records))

    return PreparedEntries


_PreparedEntries: Final[Any] = _prepared_entries_class()


class _Unsupported(Exception):
    """The client's WSDL shapes a journal entry in a way the direct renderer does not cover."""


#: Reference and date texts a direct renderer keeps (a dict lookup instead of escaping).
_REFS_KEPT: Final = 10_000
_AttrStep = tuple[Any, str | None, Any]  # qname, fixed text (None: a used one), type
_ElementStep = tuple[str, Any, Any]  # name, qname, type


def _steps(xsd_type: Any, used: Sequence[str]) -> tuple[list[_AttrStep], list[_ElementStep]]:
    """The attributes zeep sets on a `xsd_type` node (qname, fixed text or None for a used
    one, type) and the used elements (name, qname, type), in the WSDL's order, as zeep's
    `ComplexType.render` visits them. Unused elements must be optional (zeep renders nothing
    for them); unused attributes render their declared default, as zeep's do."""
    attrs: list[_AttrStep] = []
    for name, attribute in xsd_type.attributes:
        if name in used:
            attrs.append((attribute.qname, None, attribute.type))
        elif attribute.default_value is not None:
            attrs.append((attribute.qname, attribute.type.xmlvalue(attribute.default_value), None))
    elements: list[_ElementStep] = []
    for name, element in xsd_type.elements:
        if name in used:
            elements.append((name, element.qname, element.type))
        elif not element.is_optional or element.default_value not in (None, []):
            raise _Unsupported(f"{xsd_type.name}.{name} is required or has a default")
    return attrs, elements


class _DirectJournalEntryType:
    """Renders journal entries into the request zeep is building: the elements and
    attributes zeep's generic renderer makes for the values `_RecordBuilder.zeep_record` gives
    it (in the WSDL's order, with the text zeep's `xmlvalue` gives), written as the XML text
    lxml serializes them to. They stand in the request as a marker comment until it is
    serialized, when `request_bytes` puts the text in its place: for a request's entries
    (`_PreparedEntries`), zeep makes one record element and the marker stands for all the
    records' elements; for one entry (`_PreparedEntry`), zeep makes its element (externalId,
    xsi:type) and the marker stands for its children.

    CPU per 200-entry request, rendered and serialized, on one machine: zeep's own rendering
    about 45 ms, lxml calls per element 13-20, the text parsed by lxml and moved under zeep's
    record elements 9.8, the children as text under them 6.7, this 3.5.

    Names, order and types come from the client's WSDL; the element namespaces must have
    prefixes on the envelope (`declare_prefixes`), which the text uses. `_RecordBuilder`
    renders a probe entry each way when it is made and uses zeep's renderer unless the
    requests are byte for byte the same."""

    def __init__(self, client: Any) -> None:
        entry, line = client.JournalEntry, client.JournalEntryLine
        self.qname = entry.qname
        self._xsd_name = entry._xsd_name
        self.entry_attrs, entry_elements = _steps(entry, _ENTRY_FIELDS)
        list_attrs, list_elements = _steps(client.JournalEntryLineList, ("line",))
        [(_, line_qname, _)] = list_elements
        line_elements = _steps(line, _LINE_FIELDS)[1]
        ref_attrs = _steps(client.RecordRef, ("internalId",))[0]
        if len([a for a in self.entry_attrs if a[1] is None]) != 1:
            raise _Unsupported("the externalId attribute was not found")
        from zeep.xsd.const import xsi_ns
        from zeep.xsd.types.builtins import Double, String

        self.xsi_type = xsi_ns("type")
        # The envelope's prefixes (zeep declares its custom ones there).
        prefixes = {uri: p for p, uri in client._client.wsdl.types._prefix_map_custom.items()}

        def tag(qname: Any) -> str:
            q = etree.QName(qname)
            if q.namespace is None:
                return str(q.localname)
            if q.namespace not in prefixes:
                raise _Unsupported(f"no prefix on the envelope for {q.namespace}")
            return f"{prefixes[q.namespace]}:{q.localname}"

        # zeep's String.xmlvalue of a str is the str itself; its Double's is str(value).
        if len(ref_attrs) != 1 or ref_attrs[0][1] is not None:
            raise _Unsupported("a RecordRef is not one used attribute")
        ref_qname, _, ref_type = ref_attrs[0]
        if type(ref_type) is not String:
            raise _Unsupported("a RecordRef's internalId is not a string")
        self.ref_attr = tag(ref_qname)
        #: Texts written before, by (tag, internal id) for references and by date for days.
        self._kept: dict[object, str] = {}
        # A record's attributes as zeep sets them: the WSDL's (externalId and the defaults),
        # then xsi:type (the second `node.set` in `render` wins).
        self.record_attrs: list[tuple[str, str | None]] = []
        for attr_qname, fixed, attr_type in self.entry_attrs:
            if fixed is None and type(attr_type) is not String:
                raise _Unsupported("a journal entry's externalId is not a string")
            self.record_attrs.append((tag(attr_qname), fixed))
        type_name = tag(self.qname) if self.qname else self._xsd_name
        self.type_attr = f" {tag(self.xsi_type)}={_xml_attr(type_name)}" if type_name else ""
        self.entry_elements = [(name, tag(qname), xsd) for name, qname, xsd in entry_elements]
        self.list_attrs = "".join(
            f" {tag(q)}={_xml_attr(fixed)}" for q, fixed, _ in list_attrs if fixed is not None
        )
        self.line_tag = tag(line_qname)
        self.line_elements = [(name, tag(qname), xsd) for name, qname, xsd in line_elements]
        types = {name: xsd for name, _, xsd in line_elements}
        self.plain_memo = type(types.get("memo")) is String
        self.double = next((t for t in types.values() if type(t) is Double), None)

    def _keep(self, key: object, text: str) -> str:
        if len(self._kept) < _REFS_KEPT:  # they repeat: accounts, subsidiaries, days
            self._kept[key] = text
        return text

    def _ref(self, tag: str, internal_id: str) -> str:
        key = (tag, internal_id)
        return self._kept.get(key) or self._keep(
            key, f"<{tag} {self.ref_attr}={_xml_attr(str(internal_id))}/>"
        )

    def texts(self, entries: Sequence[tuple[JournalEntry, str]], whole: bool = False) -> list[str]:
        """The children of each (entry, currency id)'s record as serialized XML text; `whole`:
        after the record's attributes and the end of its start tag (`_PreparedEntries`)."""
        out = []
        parts: list[str] = []
        add = parts.append
        for entry, currency_id in entries:
            try:
                if whole:
                    for name, fixed in self.record_attrs:
                        add(f" {name}={_xml_attr(entry.external_id if fixed is None else fixed)}")
                    add(self.type_attr)
                    add(">")
                self._entry(add, entry, currency_id)
            except _NotXml:
                raise ValueError(
                    f"journal entry {entry.external_id!r} has text XML cannot carry (a control "
                    "character, U+FFFE/U+FFFF or a lone surrogate): remove it from the source"
                ) from None
            out.append("".join(parts))
            parts.clear()
        return out

    def render(self, node: Any, value: Any, xsd_type: Any, render_path: Any) -> None:
        values = object.__getattribute__(value, "__values__")
        if "records" in values:  # `_PreparedEntries`: the element is replaced as a whole
            node.append(_splices.records_marker(values["records"]))
            return
        entry: JournalEntry = values["entry"]
        for attr_qname, fixed, attr_type in self.entry_attrs:
            node.set(attr_qname, attr_type.xmlvalue(entry.external_id) if fixed is None else fixed)
        node.append(_splices.marker(self.texts([(entry, values["currency_id"])])[0]))
        if self._xsd_name:
            node.set(self.xsi_type, self._xsd_name)
        if self.qname:
            node.set(self.xsi_type, self.qname)

    def _entry(self, add: Callable[[str], None], entry: JournalEntry, currency_id: str) -> None:
        for name, tag, xsd in self.entry_elements:
            if name == "tranDate":
                day = self._kept.get(entry.tran_date) or self._keep(
                    entry.tran_date, _xml_text(xsd.xmlvalue(tran_datetime(entry.tran_date)))
                )
                add(f"<{tag}>{day}</{tag}>")
            elif name == "currency":
                add(self._ref(tag, currency_id))
            elif name == "subsidiary":
                add(self._ref(tag, entry.subsidiary))
            elif name == "memo":
                add(f"<{tag}>{_xml_text(xsd.xmlvalue(entry.memo[:4000]))}</{tag}>")
            elif name == "lineList":
                add(f"<{tag}{self.list_attrs}>")
                self._lines(add, entry)
                add(f"</{tag}>")

    def _amount(self, xsd: Any, minor: int, exponent: int, currency: str) -> str:
        if xsd is not self.double or minor <= 0:
            return _xml_text(str(xsd.xmlvalue(netsuite_amount(minor, currency))))
        # zeep's Double.xmlvalue is str(Decimal): plain digits for ISO 4217 exponents.
        if not exponent:
            return str(minor)
        digits = str(minor).rjust(exponent + 1, "0")
        return f"{digits[:-exponent]}.{digits[-exponent:]}"

    def _lines(self, add: Callable[[str], None], entry: JournalEntry) -> None:
        ref, amount, currency = self._ref, self._amount, entry.currency
        exponent = currency_exponent(currency)
        line_tag, steps, plain_memo = self.line_tag, self.line_elements, self.plain_memo
        for line in entry.lines:
            add(f"<{line_tag}>")
            for name, tag, xsd in steps:
                if name == "account":
                    add(ref(tag, line.account))
                elif name == "memo":
                    memo = line.memo[:4000]
                    add(f"<{tag}>{_xml_text(memo if plain_memo else xsd.xmlvalue(memo))}</{tag}>")
                elif name == "debit":
                    if line.debit_minor:
                        add(f"<{tag}>{amount(xsd, line.debit_minor, exponent, currency)}</{tag}>")
                elif name == "credit":
                    if line.credit_minor:
                        add(f"<{tag}>{amount(xsd, line.credit_minor, exponent, currency)}</{tag}>")
                elif name == "department":
                    if line.department:
                        add(ref(tag, line.department))
                elif name == "class" and line.class_:
                    add(ref(tag, line.class_))
            add(f"</{line_tag}>")


#: A record's children (`_PreparedEntry`), or an element standing for a request's records
#: (`_PreparedEntries`, an element with no attributes holding only its marker).
_MARKER: Final = re.compile(
    rb"<!--tieout-record:(\d+)-->|<([^\s<>/!?]+)><!--tieout-records:(\d+)--></\2>"
)


class _Splices(threading.local):
    """Record texts waiting for their request to be serialized, per thread: zeep renders a
    request and its transport posts it in the thread that called it."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.records: dict[int, list[str]] = {}
        self.count = 0

    def marker(self, text: str) -> Any:
        """The comment that stands for `text` in the request zeep renders."""
        self.count += 1
        self.texts[self.count] = text
        return etree.Comment(f"tieout-record:{self.count}")

    def records_marker(self, records: list[str]) -> Any:
        """The comment that makes its element stand for `records` (each an element's text
        after its tag name, up to its end tag)."""
        self.count += 1
        self.records[self.count] = records
        return etree.Comment(f"tieout-records:{self.count}")

    def fill(self, message: bytes) -> bytes:
        """`message` (a request serialized in UTF-8) with each marker replaced by its text.
        Texts of requests rendered in this thread and never sent are dropped."""
        texts, self.texts = self.texts, {}
        records, self.records = self.records, {}
        if not texts and not records and b"<!--tieout-record" not in message:
            return message

        def put(m: re.Match[bytes]) -> bytes:
            if m[1] is not None:
                return texts.pop(int(m[1])).encode()
            tag = m[2].decode()
            return "".join([f"<{tag}{r}</{tag}>" for r in records.pop(int(m[3]))]).encode()

        try:
            return _MARKER.sub(put, message)
        except KeyError:
            raise RuntimeError(
                "a journal entry rendered in another thread is in this request"
            ) from None


_splices: Final = _Splices()


def request_bytes(envelope: Any) -> bytes:
    """The request as sent: serialized as zeep serializes it (`etree_to_string`: UTF-8, an
    XML declaration), the records' texts in place of their markers. The transport of a
    client tieout uses sends this; anything else that needs a request's bytes must use it."""
    from zeep.wsdl.utils import etree_to_string

    serialized: bytes = etree_to_string(envelope)  # type: ignore[no-untyped-call]
    return _splices.fill(serialized)


#: What XML 1.0 cannot carry (zeep's lxml calls refuse it too).
_NOT_XML: Final = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
# One search per value finds both what must be escaped and what cannot be written.
_TEXT_SPECIAL: Final = re.compile(f"[&<>\r{_NOT_XML}]")
_ATTR_SPECIAL: Final = re.compile(f'[&<>"\r\n\t{_NOT_XML}]')
_NOT_XML_CHAR: Final = re.compile(f"[{_NOT_XML}]")


class _NotXml(ValueError):
    """A value holds a character XML 1.0 cannot carry."""


def _xml_text(text: str) -> str:
    """`text` as element content that parses back to exactly `text` (a bare carriage
    return would be read as a line feed)."""
    if _TEXT_SPECIAL.search(text) is None:
        return text
    if _NOT_XML_CHAR.search(text) is not None:
        raise _NotXml
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _xml_attr(text: str) -> str:
    """`text` as a quoted attribute value that parses back to exactly `text` (whitespace
    in attributes is otherwise normalized to spaces)."""
    if _ATTR_SPECIAL.search(text) is not None:
        if _NOT_XML_CHAR.search(text) is not None:
            raise _NotXml
        text = (
            text.replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace('"', "&quot;")
            .replace("\r", "&#13;")
            .replace("\n", "&#10;")
            .replace("\t", "&#9;")
        )
    return f'"{text}"'


_PROBE: Final = JournalEntry(
    external_id="tieout-probe-<&>\"'-ü",
    kind="settlement",
    tran_date=date(2024, 2, 29),
    currency="JPY",
    subsidiary="3",
    memo="probe & <memo> ü",
    lines=(
        JournalLine("100", 123456, 0, "", "7", "8"),
        JournalLine("200", 0, 123456, "credit ü <x>", None, "9"),
        JournalLine("300", 1, 1, "both", "5", None),
    ),
)


def _direct_type(client: Any, builder: _RecordBuilder) -> _DirectJournalEntryType | None:
    """The direct renderer for this client, if it renders exactly what zeep renders."""
    try:
        direct = _DirectJournalEntryType(client)
    except (_Unsupported, AttributeError, ValueError) as exc:
        logging.getLogger(__name__).info("journal entries rendered by zeep: %s", exc)
        return None
    zeep_client, proxy = client._client, client._service_proxy

    def render(record: Any) -> bytes:
        envelope = zeep_client.create_message(proxy, "upsertList", record=[record, record])
        return request_bytes(envelope)

    by_zeep = render(builder.zeep_record(_PROBE, "4"))
    single = render(_PreparedEntry(direct, _PROBE, "4"))
    batch = _PreparedEntries(direct, direct.texts([(_PROBE, "4")] * 2, whole=True))
    envelope = zeep_client.create_message(proxy, "upsertList", record=[batch])
    if single != by_zeep or request_bytes(envelope) != by_zeep:
        logging.getLogger(__name__).warning(
            "journal entries rendered by zeep: the direct renderer differs for this WSDL"
        )
        return None
    return direct


_BUILDERS_LOCK: Final = threading.Lock()


def _builder(client: Any) -> _RecordBuilder:
    """The record builder of the client's WSDL: clones share the parsed WSDL and its types,
    so they share one builder (and its one probe of the direct renderer)."""
    _fill_on_send(client)
    wsdl = client._client.wsdl
    builder: _RecordBuilder | None = getattr(wsdl, "_tieout_record_builder", None)
    if builder is None:
        with _BUILDERS_LOCK:
            builder = getattr(wsdl, "_tieout_record_builder", None)
            if builder is None:
                builder = wsdl._tieout_record_builder = _RecordBuilder(client)
    return builder


def journal_record(client: Any, entry: JournalEntry, currencies: Mapping[str, str]) -> Any:
    """The zeep JournalEntry for `entry` (amounts exact decimals in the entry's currency)."""
    return _builder(client).journal_entry(entry, _currency_id(entry, currencies))


def journal_records(
    client: Any, entries: Sequence[JournalEntry], currencies: Mapping[str, str]
) -> list[Any]:
    """The records of one request: `journal_record` of each entry, or with the direct
    renderer one value that stands for all of them (an entry XML cannot carry is named
    before anything is sent)."""
    builder = _builder(client)
    pairs = [(e, _currency_id(e, currencies)) for e in entries]
    if builder.direct is None or not pairs:
        return [builder.zeep_record(e, currency_id) for e, currency_id in pairs]
    return [_PreparedEntries(builder.direct, builder.direct.texts(pairs, whole=True))]


def _currency_id(entry: JournalEntry, currencies: Mapping[str, str]) -> str:
    if entry.currency not in currencies:
        raise ConfigError(
            f"erp.netsuite.currencies has no NetSuite id for {entry.currency} (needed by "
            f'{entry.external_id}); add e.g. {entry.currency} = "5"'
        )
    return currencies[entry.currency]


@dataclass(frozen=True)
class WriteStatus:
    """One writeResponse of a list answer."""

    ok: bool
    internal_id: str
    code: str = ""
    message: str = ""


_SOAP_BODY: Final = "{http://schemas.xmlsoap.org/soap/envelope/}Body"


def write_statuses(content: bytes) -> list[WriteStatus] | None:
    """The writeResponse items of an upsertList answer, in order; None unless the answer
    has exactly the shape the WSDL gives it (then zeep reads it instead)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(content, parser=parser)
    except etree.XMLSyntaxError:
        return None
    body = root.find(_SOAP_BODY)
    answer = None if body is None else body.find("{*}upsertListResponse")
    listed = None if answer is None else answer.find("{*}writeResponseList")
    if listed is None:
        return None
    out = []
    # The items are in the list's namespace; lxml filters them by exact tag without Python.
    write_tag = listed.tag[: -len("writeResponseList")] + "writeResponse"
    for item in listed.iterchildren(write_tag):
        status = ref = None
        for child in item:  # two children: cheaper than two namespace-wildcard searches
            tag = child.tag
            name = tag.rpartition("}")[2] if isinstance(tag, str) else ""  # "": a comment
            if name == "status" and status is None:
                status = child
            elif name == "baseRef" and ref is None:
                ref = child
        if status is None:
            return None
        ok = status.get("isSuccess") in ("true", "1")
        detail = status.find("{*}statusDetail") if len(status) else None
        code = message = ""
        if detail is not None:
            code = detail.findtext("{*}code") or ""
            message = detail.findtext("{*}message") or ""
        internal_id = (ref.get("internalId") if ref is not None else None) or ""
        if ok and not internal_id:
            return None
        out.append(WriteStatus(ok, internal_id, code, message))
    return out


def _internal_id(item: Any) -> str:
    ref = getattr(item, "baseRef", None)
    return str(getattr(ref, "internalId", "") or "") if ref is not None else ""


def _status_error(status: Any) -> tuple[str, str]:
    details = getattr(status, "statusDetail", None) or []
    if details:
        d = details[0]
        return str(getattr(d, "code", "") or ""), str(getattr(d, "message", "") or "")
    return "", ""


def _classify(exc: BaseException) -> RetryableError | None:
    """A failed request's exception as retryable (with whether it may have been written)."""
    import requests
    from zeep.exceptions import Fault, TransportError

    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return RetryableError(f"{type(exc).__name__}: the answer never came", maybe_written=True)
    if isinstance(exc, TransportError):
        status = getattr(exc, "status_code", 0) or 0
        if status == 429 or status >= 500:
            return RetryableError(f"HTTP {status}", maybe_written=status >= 500)
        return None
    code = str(getattr(exc, "code", "") or "")
    detail = getattr(exc, "detail", None)
    if detail is not None:
        try:
            text += " " + etree.tostring(detail, encoding="unicode")
        except TypeError:
            text += " " + str(detail)
    if isinstance(exc, Fault) or type(exc).__name__ in ("NetSuiteRateLimitError",):
        for c in RETRYABLE_CODES:
            if c in text or c == code or c in code:
                return RetryableError(f"NetSuite fault {c}", maybe_written=False)
        lowered = text.lower()
        if "concurrent request limit" in lowered or "one request may be made" in lowered:
            return RetryableError("NetSuite concurrency limit", maybe_written=False)
    return None


def _fill_on_send(client: Any, gate: threading.BoundedSemaphore | None = None) -> None:
    """Have `client`'s transport put the records' texts into a request before it leaves
    (`request_bytes`) and, with a `gate`, hold the gate while the request is on the wire, so
    at most the gate's count of requests reach NetSuite at once however many threads build
    requests. The transport object stays (its session, timeouts and cache); only its class
    changes."""
    transport = client._client.transport
    if gate is None and getattr(transport, "_tieout_fills", False):
        return
    plain: Any = type(transport)

    class FillingTransport(plain):  # type: ignore[misc]
        _tieout_fills = True

        def post_xml(self, address: str, envelope: Any, headers: Any) -> Any:
            # zeep's hook for serializing a request another way; done before the gate.
            return self.post(address, request_bytes(envelope), headers)

        def post(self, address: str, message: Any, headers: Any) -> Any:
            if gate is None:
                return super().post(address, message, headers)
            # What `requests` does for `session.post`, with only the exchange itself under
            # the gate: the request is prepared before, and the gate is let go once the
            # answer's headers are in (NetSuite has done the request then), its body read
            # after. Nothing is logged: the body carries the token passport.
            import requests

            session = self.session
            request = session.prepare_request(
                requests.Request("POST", address, data=message, headers=headers)
            )
            options = session.merge_environment_settings(request.url, {}, True, None, None)
            with gate:
                response = session.send(request, timeout=self.operation_timeout, **options)
            response.content  # noqa: B018 - reads the body (`stream` was on)
            return response

    transport.__class__ = FillingTransport


class NetSuiteTarget:
    """The two calls the poster needs, over one netsuitesdk client per thread.

    With the default factory, the first thread's client is made from the settings and the
    other threads' are clones of it (`clone_client`: the WSDL is fetched and parsed once)."""

    system: str = "netsuite"
    record_type: str = RECORD_TYPE

    def __init__(
        self, settings: NetSuiteSettings, client_factory: Callable[[], Any] | None = None,
        base_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self._factory = client_factory or (lambda: make_client(settings, base_dir or Path.cwd()))
        self._clone = client_factory is None
        self._first: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        #: NetSuite caps the requests in flight per account, not the threads building them:
        #: `apply_plan` runs more threads than this (`request_gate`), and each client's
        #: transport holds the gate only while its request is on the wire.
        self.request_gate = threading.BoundedSemaphore(max(1, settings.concurrency))

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            # One at a time: made side by side, ten threads' clients would all be ready
            # late; in turn, the first thread's request leaves while the next is made.
            with self._lock:
                if self._first is None:
                    client = self._first = self._factory()
                elif self._clone:
                    client = clone_client(self._first)
                else:
                    client = self._factory()
                _fill_on_send(client, self.request_gate)
                _builder(client)  # the first one checks the direct renderer
            self._local.client = client
        return client

    def prepare(self) -> None:
        """Connect (fetch and parse the WSDL) before the first request needs it: `apply_plan`
        calls this in the background while it reads and writes the ledger."""
        self._client()

    def upsert(self, entries: Sequence[JournalEntry]) -> dict[str, RecordOutcome]:
        """One upsertList request; per-record outcomes. Raises RetryableError for the whole.

        zeep sends the request; a well-formed answer is read with lxml (zeep's object
        parsing of 200 write responses cost a sixth of the poster's CPU), anything else (a
        fault, an HTTP error, an unexpected shape) goes through zeep as before."""
        client = self._client()
        records = journal_records(client, entries, self.settings.currencies)
        zeep_client = client._client
        try:
            with zeep_client.settings(raw_response=True):
                response = client.request("upsertList", record=records)
            statuses = write_statuses(response.content) if response.status_code == 200 else None
            if statuses is None:
                binding = client._service_proxy._binding
                reply = binding.process_reply(zeep_client, binding.get("upsertList"), response)
                statuses = [
                    WriteStatus(bool(i.status.isSuccess), _internal_id(i), *_status_error(i.status))
                    for i in reply.body.writeResponseList.writeResponse
                ]
        except Exception as exc:
            retry = _classify(exc)
            if retry is not None:
                raise retry from None
            raise
        out: dict[str, RecordOutcome] = {}
        for entry, item in zip(entries, statuses, strict=False):
            if item.ok:
                out[entry.external_id] = RecordOutcome(True, item.internal_id)
            else:
                out[entry.external_id] = RecordOutcome(
                    False,
                    error=f"{item.code}: {item.message}",
                    retryable=item.code in RETRYABLE_CODES,
                )
        for entry in entries[len(statuses) :]:
            out[entry.external_id] = RecordOutcome(
                False, error="no status in the response", retryable=True
            )
        return out

    def read_back(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        """Internal ids of the records that exist, by external id (None: not there)."""
        client = self._client()
        refs = [client.RecordRef(type=RECORD_TYPE, externalId=x) for x in external_ids]
        try:
            response = client.request("getList", baseRef=refs)
        except Exception as exc:
            retry = _classify(exc)
            if retry is not None:
                raise retry from None
            raise
        items = response.body.readResponseList.readResponse
        out: dict[str, str | None] = {}
        for ext, item in zip(external_ids, items, strict=False):
            record = getattr(item, "record", None)
            if item.status.isSuccess and record is not None:
                out[ext] = str(record.internalId)
            else:
                out[ext] = None
        return out
