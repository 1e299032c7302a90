"""The sandbox's short ways for list requests: it decodes the records
(`Schema.decode_records`) exactly as its generic decoder does, leaving anything else to
the generic decoder, and writes the answers' successes (`WriteResponses`) exactly as its
encoder does."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from tests.erp.conftest import varied_entries
from tieout.connectors.netsuite import journal_records, request_bytes
from tieout.sandbox.netsuite import NetSuiteSandbox
from tieout.sandbox.netsuite.client import sandbox_client
from tieout.sandbox.netsuite.schema import MESSAGES, SOAP_ENV, SchemaViolation, XmlDoc, load_schema
from tieout.sandbox.netsuite.soap import WriteResponses, parse_request, response_envelope, status

CURRENCIES = {"USD": "1", "JPY": "2", "KWD": "3", "CLF": "4", "EUR": "5", "GBP": "6"}


@pytest.fixture(scope="module")
def client() -> Any:
    # The WSDL from the package: no request reaches a server here.
    with NetSuiteSandbox() as sandbox:
        return sandbox_client(sandbox, wsdl_source="file")


def upsert_list(client: Any, entries: list[Any]) -> bytes:
    records = journal_records(client, entries, CURRENCIES)
    envelope = client._client.create_message(client._service_proxy, "upsertList", record=records)
    return request_bytes(envelope)


def both_ways(data: bytes) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the short way's result or None, the generic decoder's) for an upsertList."""
    schema = load_schema()
    doc = XmlDoc(data)
    element = doc.root.find(f"{{{SOAP_ENV}}}Body")[0]
    declared = schema.elements[(MESSAGES, "upsertList")].type
    short = schema.decode_records(doc, element, declared, data.count(b":type"))
    return short, schema.decode(doc, element, declared)


def assert_decoded_the_generic_way(data: bytes) -> None:
    short, generic = both_ways(data)
    assert short is None
    assert parse_request(load_schema(), data).body == generic


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_records_decode_as_the_generic_decoder_decodes_them(client: Any, seed: int) -> None:
    """Varied entries (every currency exponent, debit/credit/both, segments or not, empty,
    long, non-ASCII memos and XML's special characters): the same values and key order (the
    store and the answers keep them)."""
    data = upsert_list(client, varied_entries(60, seed=seed))
    short, generic = both_ways(data)
    assert short is not None, "the short way declined a plain list request"
    assert short == generic
    assert [list(r) for r in short["record"]] == [list(r) for r in generic["record"]]
    assert [[list(x) for x in r["lineList"]["line"]] for r in short["record"]] == [
        [list(x) for x in r["lineList"]["line"]] for r in generic["record"]
    ]
    assert parse_request(load_schema(), data).body == generic


def test_an_xsi_type_below_a_record_goes_the_generic_way(client: Any) -> None:
    data = upsert_list(client, varied_entries(5, seed=4))
    prefix = re.search(rb"<(\w+):lineList", data)
    assert prefix is not None
    ns = prefix[1]
    typed = data.replace(
        b"<" + ns + b":line>", b"<" + ns + b':line xsi:type="' + ns + b':JournalEntryLine">', 1
    )
    assert typed != data
    assert_decoded_the_generic_way(typed)


def test_text_that_looks_like_a_type_only_costs_the_short_way(client: Any) -> None:
    entries = varied_entries(3, seed=5)
    entries[1] = replace(entries[1], memo='see xsi:type="x" here')
    assert_decoded_the_generic_way(upsert_list(client, entries))


def test_an_unknown_element_in_a_record_is_refused_as_before(client: Any) -> None:
    data = upsert_list(client, varied_entries(3, seed=6))
    prefix = re.search(rb"<(\w+):memo>", data)
    assert prefix is not None
    ns = prefix[1]
    bad = data.replace(b"<" + ns + b":memo>", b"<" + ns + b":nonsense/><" + ns + b":memo>", 1)
    short, _ = both_ways(data)
    assert short is not None
    with pytest.raises(SchemaViolation, match="unexpected element <nonsense>"):
        parse_request(load_schema(), bad)


@pytest.mark.parametrize(
    "external_id", ["plain-1", "a<&>\"'b", 'only " double', "ü-ñ-東京", "tab\tcr\rnl\n", "{braces}"]
)
def test_list_answers_are_written_as_the_encoder_writes_them(external_id: str) -> None:
    """A list write's successes come from a template of the encoder's output: the same
    bytes as the encoder's, whatever the ids hold."""
    schema = load_schema()
    written = WriteResponses(schema)
    items = [("7", external_id, "journalEntry"), ("12345", external_id + "-2", "account")]
    ref = "RecordRef"
    generic = [
        {"status": status(True),
         "baseRef": {"xsiType": ref, "internalId": i, "type": t, "externalId": e}}
        for i, e, t in items
    ]  # fmt: skip
    fast = [written.written(i, e, t) for i, e, t in items]

    def answer(responses: list[Any]) -> bytes:
        value = {"writeResponseList": {"status": status(True), "writeResponse": responses}}
        return response_envelope(schema, "upsertList", value, "WEBSERVICES_test")

    assert answer(fast) == answer(generic)
