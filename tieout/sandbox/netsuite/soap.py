"""SOAP 1.1 envelopes in and out, shaped like SuiteTalk's.

Requests are decoded through the sandbox schema (so anything zeep would not have sent for
this WSDL is refused). Responses carry NetSuite's prefixes, a `documentInfo` header, and
faults look like NetSuite's: faultcode `soapenv:Server.userException`, the message as
faultstring, and a `<platformFaults:...Fault>` detail with `code` and `message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from xml.sax.saxutils import escape

from tieout.sandbox.netsuite.schema import (
    MESSAGES,
    PREFIXES,
    SOAP_ENV,
    EncodedXml,
    Schema,
    SchemaViolation,
    XmlDoc,
    _attribute,
    split_tag,
)

OPERATIONS: Final = (
    "upsert",
    "upsertList",
    "get",
    "getList",
    "getAll",
    "search",
    "searchMoreWithId",
)

FAULTCODE: Final = "soapenv:Server.userException"
HOSTNAME: Final = "sandbox.tieout.invalid"


class SoapFaultError(Exception):
    """A request-level failure, answered with a SOAP fault (HTTP 500) and no write."""

    def __init__(self, fault_element: str, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.fault_element = fault_element
        self.code = code
        self.message = message


def invalid_login() -> SoapFaultError:
    return SoapFaultError("invalidCredentialsFault", "USER_ERROR", "Invalid login attempt.")


def login_required() -> SoapFaultError:
    return SoapFaultError(
        "invalidSessionFault",
        "WS_LOG_IN_REQD",
        "You must log in before performing a web service operation.",
    )


def request_blocked() -> SoapFaultError:
    # netsuitesdk's `request()` maps exactly this faultstring to NetSuiteRateLimitError.
    return SoapFaultError(
        "exceededConcurrentRequestLimitFault",
        "WS_REQUEST_BLOCKED",
        "SuiteTalk concurrent request limit exceeded. Request blocked.",
    )


def concurrent_session() -> SoapFaultError:
    return SoapFaultError(
        "exceededConcurrentRequestLimitFault",
        "WS_CONCUR_SESSION_DISALLWD",
        "Only one request may be made against a session at a time",
    )


def unexpected(message: str) -> SoapFaultError:
    return SoapFaultError("unexpectedErrorFault", "UNEXPECTED_ERROR", message)


def unsupported(what: str) -> SoapFaultError:
    """The sandbox's own limits are loud faults, never silently wrong answers."""
    return unexpected(f"The tieout NetSuite sandbox does not support {what}.")


@dataclass(frozen=True)
class SoapRequest:
    operation: str
    body: dict[str, Any]
    token_passport: dict[str, Any] | None
    search_preferences: dict[str, Any] | None


def parse_request(schema: Schema, data: bytes) -> SoapRequest:
    """Decode an envelope into operation, body and the two headers the sandbox reads."""
    doc = XmlDoc(data)
    if split_tag(doc.root.tag) != (SOAP_ENV, "Envelope"):
        raise SchemaViolation("not a SOAP 1.1 envelope")
    header = doc.root.find(f"{{{SOAP_ENV}}}Header")
    body = doc.root.find(f"{{{SOAP_ENV}}}Body")
    if body is None or len(body) != 1:
        raise SchemaViolation("the SOAP body must hold exactly one operation element")
    operation_element = body[0]
    namespace, operation = split_tag(operation_element.tag)
    if namespace != MESSAGES or operation not in OPERATIONS:
        raise SchemaViolation(f"unknown operation {operation!r}")
    decl = schema.elements[(MESSAGES, operation)]
    decoded = None
    if operation == "upsertList":  # a list of records: decoded the short way if it can be
        # Every ":type" in the bytes, xsi:type attributes or not: an upper bound of them.
        typed = data.count(b":type")
        decoded = schema.decode_records(doc, operation_element, decl.type, typed)
    if decoded is None:
        decoded = schema.decode(doc, operation_element, decl.type)
    headers: dict[str, dict[str, Any]] = {}
    for element in header if header is not None else ():
        namespace, name = split_tag(element.tag)
        if namespace == MESSAGES and name in ("tokenPassport", "searchPreferences"):
            headers[name] = schema.decode(doc, element, schema.elements[(MESSAGES, name)].type)
    return SoapRequest(
        operation, decoded, headers.get("tokenPassport"), headers.get("searchPreferences")
    )


def _envelope(header: str, body: str) -> bytes:
    namespaces = "".join(f' xmlns:{p}="{uri}"' for p, uri in PREFIXES.items())
    head = f"<soapenv:Header>{header}</soapenv:Header>" if header else ""
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<soapenv:Envelope{namespaces}>{head}<soapenv:Body>{body}</soapenv:Body>"
        "</soapenv:Envelope>"
    )
    return text.encode("utf-8")


def response_envelope(schema: Schema, operation: str, value: Any, ns_id: str) -> bytes:
    """`<platformMsgs:{operation}Response>` for `value`, with NetSuite's documentInfo header."""
    header: list[str] = []
    schema.encode_global(header, (MESSAGES, "documentInfo"), {"nsId": ns_id})
    body: list[str] = []
    schema.encode_global(body, (MESSAGES, f"{operation}Response"), value)
    return _envelope("".join(header), "".join(body))


def fault_envelope(fault: SoapFaultError) -> bytes:
    detail = (
        f"<platformFaults:{fault.fault_element}>"
        f"<platformFaults:code>{escape(fault.code)}</platformFaults:code>"
        f"<platformFaults:message>{escape(fault.message)}</platformFaults:message>"
        f"</platformFaults:{fault.fault_element}>"
        f'<ns1:hostname xmlns:ns1="http://xml.apache.org/axis/">{HOSTNAME}</ns1:hostname>'
    )
    body = (
        "<soapenv:Fault>"
        f"<faultcode>{FAULTCODE}</faultcode>"
        f"<faultstring>{escape(fault.message)}</faultstring>"
        f"<detail>{detail}</detail>"
        "</soapenv:Fault>"
    )
    return _envelope("", body)


class WriteResponses:
    """A list write's successful writeResponses, written from a template of what the encoder
    writes for one (a third of its work for 200 alike): the same text, values quoted as the
    encoder quotes them."""

    def __init__(self, schema: Schema) -> None:
        answer = schema.elements[(MESSAGES, "upsertListResponse")].type
        [listed] = [d for d in schema.all_elements(answer) if d.name == "writeResponseList"]
        [item] = [d for d in schema.all_elements(listed.type) if d.name == "writeResponse"]
        sample = {
            "status": status(True),
            "baseRef": {"xsiType": "RecordRef", "internalId": "\x01", "externalId": "\x02",
                        "type": "\x03"},
        }  # fmt: skip
        out: list[str] = []
        schema.encode(out, item.namespace, item.name, item.type, sample)
        template = "".join(out).replace("{", "{{").replace("}", "}}")
        for sentinel, field in (("\x01", "{i}"), ("\x02", "{e}"), ("\x03", "{t}")):
            if template.count(f'"{sentinel}"') != 1 or template.count(sentinel) != 1:
                raise RuntimeError("the writeResponse template did not come out as expected")
            template = template.replace(f'"{sentinel}"', field)
        self.template = template

    def written(self, internal_id: str, external_id: str, record_type: str) -> EncodedXml:
        """What the encoder writes for `{"status": status(True), "baseRef": {RecordRef}}`."""
        return EncodedXml(
            self.template.format(
                i=_attribute(internal_id), e=_attribute(external_id), t=_attribute(record_type)
            )
        )


def status(success: bool, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A platformCore:Status value."""
    if success:
        return {"isSuccess": True}
    return {
        "isSuccess": False,
        "statusDetail": [{"type": "ERROR", "code": code, "message": message}],
    }
