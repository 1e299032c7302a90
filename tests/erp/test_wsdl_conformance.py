"""Conformance: every record tieout sends to NetSuite, built by zeep from NetSuite's real 2023_2
WSDL and validated against its XSDs, so field names and types are NetSuite's, not only the
sandbox's trimmed copy.

The WSDL lives outside the project (`../shared/reference/netsuite-wsdl-2023_2/`, or
`TIEOUT_NETSUITE_WSDL`). CI always has it, so there a missing file fails; elsewhere the tests
skip with the reason.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from lxml import etree  # type: ignore[import-untyped]

from tests.erp.conftest import ENV, assert_renders_like_zeep, varied_entries
from tests.erp.test_journals import ACCOUNTS, DAY, batch, big_entry, invoice, line, sline
from tieout.connectors.netsuite import RECORD_TYPE, journal_record, make_client, request_bytes
from tieout.erp.journals import (
    MAX_LINES,
    JournalEntry,
    adjustment,
    billing_journals,
    settlement_journals,
    split,
)
from tieout.settings import settings_from_mapping

SOAP_ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
CURRENCIES = {"USD": "1", "GBP": "2", "EUR": "4", "JPY": "7"}


def _wsdl_path() -> Path:
    """`TIEOUT_NETSUITE_WSDL`, else `shared/reference/...` beside the checkout or any folder
    above it (a CI clone may sit deeper than the working copy), else /work/shared."""
    if os.environ.get("TIEOUT_NETSUITE_WSDL"):
        return Path(os.environ["TIEOUT_NETSUITE_WSDL"])
    rel = Path("shared/reference/netsuite-wsdl-2023_2/netsuite.wsdl")
    root = Path(__file__).resolve().parents[2]
    candidates = [parent / rel for parent in root.parents] + [Path("/work") / rel]
    return next((c for c in candidates if c.exists()), root.parent / rel)


WSDL = _wsdl_path()


@pytest.fixture(scope="module")
def real_wsdl() -> Path:
    if not WSDL.exists():
        reason = f"NetSuite's 2023_2 WSDL is not at {WSDL} (set TIEOUT_NETSUITE_WSDL)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return WSDL


@pytest.fixture(scope="module")
def client(real_wsdl: Path) -> Any:
    mp = pytest.MonkeyPatch()
    for name in ENV:
        mp.setenv(name, "conformance")
    settings = settings_from_mapping(
        {"erp": {"netsuite": {
            "account": "1234567_SB1", "wsdl_url": str(real_wsdl),
            "endpoint_url": "http://127.0.0.1:9/services/NetSuitePort_2023_2",
            "subsidiary": "1", "currencies": CURRENCIES,
            "accounts": {"accounts_receivable": "120", "revenue": "400",
                         "deferred_revenue": "250", "tax_payable": "260", "discounts": "410",
                         "bank": "101", "gateway_fees": "610", "gateway_clearing": "130",
                         "fx_difference": "630", "suspense": "199"},
        }}},
        real_wsdl.parent, "conformance",
    )  # fmt: skip
    try:
        yield make_client(settings.erp.netsuite, real_wsdl.parent)  # type: ignore[union-attr]
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def schema(real_wsdl: Path) -> etree.XMLSchema:
    """The request messages' schema, resolved through NetSuite's own XSD imports."""
    xsd = real_wsdl.parent / "xsd"
    wrapper = f"""<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema"
      targetNamespace="urn:tieout-conformance">
      <xsd:import namespace="urn:messages_2023_2.platform.webservices.netsuite.com"
                  schemaLocation="{(xsd / "platform.messages.xsd").as_uri()}"/>
      <xsd:import namespace="urn:general_2023_2.transactions.webservices.netsuite.com"
                  schemaLocation="{(xsd / "transactions.general.xsd").as_uri()}"/>
    </xsd:schema>"""
    return etree.XMLSchema(etree.fromstring(wrapper.encode()))


def _segmented(entry: JournalEntry) -> JournalEntry:
    """Every optional field tieout can send: department and class on each line."""
    return replace(entry, lines=tuple(replace(x, department="3", class_="4") for x in entry.lines))


def tieout_entries() -> dict[str, JournalEntry]:
    """One of each kind of record the poster sends."""
    inv = invoice("in_1", 0)
    lines = [
        line("in_1", "subscription", 3100, DAY, date(2026, 4, 10)),
        line("in_1", "discount", -800),
        line("in_1", "usage", 500),
        line("in_1", "tax", 230),
    ]
    inv["total_minor"] = 3100 - 800 + 500 + 230
    credit = {"credit_note_id": "cn_1", "invoice_id": "in_1", "currency": "USD",
              "amount_minor": 500}  # fmt: skip
    [bill] = billing_journals(
        [inv], lines, [credit], days={"in_1": DAY, "cn_1": DAY}, start=DAY, end=DAY,
        accounts=ACCOUNTS,
    )  # fmt: skip
    [settle], _ = settlement_journals(
        batch(), start=DAY, end=DAY, accounts=ACCOUNTS,
        held_lines={"l2": "missing_in_billing"}, held_batches={},
    )  # fmt: skip
    fx = sline("l5", "charge", 3_000, 90, gateway="adyen", cur="GBP", presentment="USD")
    rows = [r for r in batch(gateway="adyen", cur="GBP") if r["category"] != "payout"] + [fx]
    net = sum(r["net_minor"] for r in rows)
    rows.append(sline("l9", "payout", -net, 0, gateway="adyen", cur="GBP"))
    [fx_entry], _ = settlement_journals(
        rows, start=DAY, end=DAY, accounts=ACCOUNTS, held_lines={}, held_batches={}
    )
    part = split(big_entry(MAX_LINES + 5), clearing="198")[0]
    adj = adjustment(big_entry(2), [big_entry(3)], 1, date(2026, 3, 20))
    assert adj is not None
    return {
        "billing": bill,
        "settlement": settle,
        "settlement_fx": fx_entry,
        "split_part": part,
        "adjustment": adj,
        "segmented": _segmented(settle),
    }


ENTRIES = tieout_entries()


def _body(client: Any, operation: str, **kwargs: Any) -> etree._Element:
    """The operation's element as the client sends it."""
    envelope = client._client.create_message(client._service_proxy, operation, **kwargs)
    sent = etree.fromstring(request_bytes(envelope))
    return sent.find(f"{SOAP_ENV}Body")[0]


def _assert_valid(schema: etree.XMLSchema, element: etree._Element) -> None:
    if not schema.validate(element):
        errors = "\n".join(f"  {e.message}" for e in schema.error_log)
        pytest.fail(f"not valid against NetSuite's 2023_2 schema:\n{errors}")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_journal_entry_tieout_posts_is_valid_netsuite_2023_2(
    name: str, client: Any, schema: etree.XMLSchema
) -> None:
    entry = ENTRIES[name]
    record = journal_record(client, entry, CURRENCIES)
    body = _body(client, "upsertList", record=[record])
    _assert_valid(schema, body)
    ns = "{urn:general_2023_2.transactions.webservices.netsuite.com}"
    [rec] = body
    assert rec.get("externalId") == entry.external_id
    assert rec.find(f"{ns}tranDate").text.startswith(entry.tran_date.isoformat() + "T")
    sent = rec.findall(f"{ns}lineList/{ns}line")
    assert len(sent) == len(entry.lines)
    debit = sum(int(x.findtext(f"{ns}debit", "0").replace(".", "")) for x in sent)
    credit = sum(int(x.findtext(f"{ns}credit", "0").replace(".", "")) for x in sent)
    assert debit == credit == sum(x.debit_minor for x in entry.lines)
    if name == "segmented":
        assert all(x.find(f"{ns}class") is not None for x in sent)


def test_a_full_upsert_list_request_of_200_records_is_valid(
    client: Any, schema: etree.XMLSchema
) -> None:
    entries = [replace(ENTRIES["settlement"], external_id=f"tieout-c-{i}") for i in range(200)]
    records = [journal_record(client, e, CURRENCIES) for e in entries]
    body = _body(client, "upsertList", record=records)
    _assert_valid(schema, body)
    assert len(body) == 200


def test_the_read_back_request_is_valid(client: Any, schema: etree.XMLSchema) -> None:
    refs = [client.RecordRef(type=RECORD_TYPE, externalId=e.external_id) for e in ENTRIES.values()]
    body = _body(client, "getList", baseRef=refs)
    _assert_valid(schema, body)
    assert [r.get("externalId") for r in body] == [e.external_id for e in ENTRIES.values()]


def test_a_misspelt_field_is_refused_by_the_real_schema(client: Any) -> None:
    # The check above has teeth: zeep refuses a field NetSuite's JournalEntry does not have.
    with pytest.raises(TypeError):
        client.JournalEntry(externalId="x", tranDte=DAY)


def test_the_poster_renders_entries_as_zeep_does_with_the_real_wsdl(client: Any) -> None:
    """With NetSuite's full JournalEntry (dozens of fields tieout leaves empty), the
    poster's own rendering still gives zeep's request byte for byte."""
    assert_renders_like_zeep(client, list(ENTRIES.values()) + varied_entries(200, seed=2))
