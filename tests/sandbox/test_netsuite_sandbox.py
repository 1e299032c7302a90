"""The NetSuite sandbox, driven by the real netsuitesdk / zeep client over HTTP (no mocks).

What a connector author can copy from here: building a client (`sandbox_client`), posting
a batch with `upsertList` through netsuitesdk's service proxy, reading per-record statuses,
and which exception each NetSuite failure surfaces as.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
from netsuitesdk.api.accounts import Accounts
from netsuitesdk.api.currencies import Currencies
from netsuitesdk.api.journal_entries import JournalEntries
from netsuitesdk.api.subsidiaries import Subsidiaries
from netsuitesdk.internal.exceptions import (
    NetSuiteLoginError,
    NetSuiteRateLimitError,
    NetSuiteRequestError,
)
from zeep.exceptions import Fault as SoapFault
from zeep.exceptions import TransportError

from tieout.sandbox.netsuite import (
    CODE_INVALID_REF,
    CODE_TOO_MANY_LINES,
    CODE_UNBALANCED,
    CODE_USER_ERROR,
    DEFAULT_ACCOUNTS,
    FaultKind,
    InjectedFault,
    NetSuiteSandbox,
)
from tieout.sandbox.netsuite.client import sandbox_client

FAULTS_NS = "urn:faults_2023_2.platform.webservices.netsuite.com"

Line = tuple[str, str | None, str | None]  # account internalId, debit, credit


@pytest.fixture
def sandbox(netsuite_sandbox: NetSuiteSandbox) -> NetSuiteSandbox:
    return netsuite_sandbox


@pytest.fixture
def client(netsuite_client: Any) -> Any:
    return netsuite_client


def journal_entry(
    client: Any,
    external_id: str,
    lines: Sequence[Line] = (("1", "100.00", None), ("2", None, "100.00")),
    *,
    subsidiary: str | None = "1",
    currency: str | None = None,
    memo: str = "tieout test",
) -> Any:
    """A JournalEntry built with the client's own zeep types, as a connector would."""
    entry_lines = [
        client.JournalEntryLine(
            account=client.RecordRef(internalId=account),
            debit=Decimal(debit) if debit is not None else None,
            credit=Decimal(credit) if credit is not None else None,
            memo=f"line {i}",
        )
        for i, (account, debit, credit) in enumerate(lines)
    ]
    return client.JournalEntry(
        externalId=external_id,
        subsidiary=client.RecordRef(internalId=subsidiary) if subsidiary else None,
        currency=client.RecordRef(internalId=currency) if currency else None,
        memo=memo,
        lineList=client.JournalEntryLineList(line=entry_lines),
    )


def upsert_list(client: Any, records: list[Any]) -> list[Any]:
    """upsertList the way tieout's connector calls it (netsuitesdk has no wrapper for it):
    the service proxy, with netsuitesdk's own token-passport headers (a fresh nonce each)."""
    response = client._service_proxy.upsertList(
        record=records,
        _soapheaders=client._build_soap_headers(include_search_preferences=False),
    )
    return list(response.body.writeResponseList.writeResponse)


def fault_detail_code(fault: SoapFault) -> str:
    code = fault.detail.find(f".//{{{FAULTS_NS}}}code")
    return str(code.text)


# ---------------------------------------------------------------------- WSDL


def test_wsdl_keeps_the_namespace_prefixes_netsuitesdk_hardcodes(client: Any) -> None:
    # netsuitesdk resolves types as "ns0:RecordRef", "ns17:Account", "ns31:JournalEntry", ...
    prefixes = client._client.wsdl.types.prefix_map
    assert prefixes["ns0"] == "urn:core_2023_2.platform.webservices.netsuite.com"
    assert prefixes["ns1"] == "urn:types.core_2023_2.platform.webservices.netsuite.com"
    assert prefixes["ns4"] == "urn:messages_2023_2.platform.webservices.netsuite.com"
    assert prefixes["ns5"] == "urn:common_2023_2.platform.webservices.netsuite.com"
    assert prefixes["ns17"] == "urn:accounting_2023_2.lists.webservices.netsuite.com"
    assert prefixes["ns19"] == "urn:sales_2023_2.transactions.webservices.netsuite.com"
    assert prefixes["ns31"] == "urn:general_2023_2.transactions.webservices.netsuite.com"
    assert prefixes["ns45"] == "urn:types.supplychain_2023_2.lists.webservices.netsuite.com"
    for name in (
        "JournalEntry",
        "Account",
        "Subsidiary",
        "TransactionSearchBasic",
        "TokenPassport",
    ):
        assert name in client._complex_types


def test_client_can_load_the_wsdl_from_the_package(sandbox: NetSuiteSandbox) -> None:
    client = sandbox_client(sandbox, wsdl_source="file")
    assert client._wsdl_url == sandbox.wsdl_path.as_uri()
    assert client.get("currency", internalId="2").symbol == "EUR"


def test_wsdl_and_schemas_are_served_over_http(sandbox: NetSuiteSandbox) -> None:
    wsdl = requests.get(sandbox.wsdl_url, timeout=5)
    assert wsdl.status_code == 200
    assert f'location="{sandbox.endpoint_url}"' in wsdl.text
    xsd = requests.get(sandbox.wsdl_url.replace("netsuite.wsdl", "platform.core.xsd"), timeout=5)
    assert xsd.status_code == 200
    assert "TokenPassport" in xsd.text
    for bad in ("server.py", "..%2Fserver.py", "nope.xsd"):
        url = sandbox.wsdl_url.replace("netsuite.wsdl", bad)
        assert requests.get(url, timeout=5).status_code == 404


# ---------------------------------------------------------------------- upsert / get


def test_upsert_then_get_round_trips_a_journal_entry(sandbox: NetSuiteSandbox, client: Any) -> None:
    entry = journal_entry(
        client, "je-1", [("6", "1234.56", None), ("1", None, "1000.01"), ("10", None, "234.55")]
    )
    entry.lineList.line[0]["department"] = client.RecordRef(internalId="7")
    entry.lineList.line[0]["class"] = client.RecordRef(internalId="3")
    entry.lineList.line[1].entity = client.RecordRef(internalId="42", type="customer")
    entry.customFieldList = client.CustomFieldList(
        [client.StringCustomFieldRef(scriptId="custbody_tieout_run", value="run-7")]
    )

    ref = client.upsert(entry)

    assert (ref.internalId, ref.externalId, ref.type) == ("1", "je-1", "journalEntry")
    stored = sandbox.record("journalEntry", "je-1")
    assert stored is not None
    lines = stored["lineList"]["line"]
    assert [line.get("debit") for line in lines] == [Decimal("1234.56"), None, None]
    assert [line.get("credit") for line in lines] == [None, Decimal("1000.01"), Decimal("234.55")]
    assert lines[0]["account"] == {"internalId": "6", "name": "1000 Operating Bank USD"}
    assert lines[0]["department"] == {"internalId": "7"}
    assert lines[0]["class"] == {"internalId": "3"}
    assert lines[1]["entity"] == {"internalId": "42", "type": "customer"}
    assert stored["subsidiary"]["internalId"] == "1"
    assert stored["currency"]["internalId"] == "1"  # the subsidiary's currency by default
    assert stored["customFieldList"]["customField"] == [
        {"xsiType": "StringCustomFieldRef", "scriptId": "custbody_tieout_run", "value": "run-7"}
    ]

    got = client.get("journalEntry", externalId="je-1")
    assert (got.internalId, got.externalId, got.memo, got.tranId) == (
        "1",
        "je-1",
        "tieout test",
        "JE1",
    )
    got_lines = got.lineList.line
    assert [line.account.internalId for line in got_lines] == ["6", "1", "10"]
    # xsd:double reaches Python as float; its shortest repr is the exact decimal sent.
    assert Decimal(str(got_lines[0].debit)) == Decimal("1234.56")
    assert Decimal(str(got_lines[2].credit)) == Decimal("234.55")
    assert got_lines[0]["department"].internalId == "7"
    assert got.customFieldList.customField[0].value == "run-7"
    assert client.get("journalEntry", internalId="1").externalId == "je-1"


def test_upsert_of_an_existing_external_id_updates_the_same_record(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    first = client.upsert(journal_entry(client, "je-1", memo="first"))
    second = client.upsert(
        journal_entry(
            client,
            "je-1",
            [("6", "50.00", None), ("1", "25.00", None), ("2", None, "75.00")],
            memo="second",
        )
    )

    assert first.internalId == second.internalId == "1"
    stored = sandbox.records("journalEntry")
    assert list(stored) == ["je-1"]
    assert stored["je-1"]["memo"] == "second"
    assert [line.get("credit") for line in stored["je-1"]["lineList"]["line"]] == [
        None,
        None,
        Decimal("75.00"),
    ]
    assert client.upsert(journal_entry(client, "je-2")).internalId == "2"


def test_get_of_a_missing_record_is_a_request_error(client: Any) -> None:
    with pytest.raises(NetSuiteRequestError) as raised:
        client.get("journalEntry", externalId="nope")
    assert raised.value.code == "RCRD_DSNT_EXIST"


def test_upsert_list_with_one_injected_record_error(sandbox: NetSuiteSandbox, client: Any) -> None:
    sandbox.inject(
        InjectedFault(
            kind=FaultKind.RECORD_ERROR,
            external_ids={"je-b"},
            code="UNEXPECTED_ERROR",
            message="Boom for je-b.",
        )
    )

    results = upsert_list(client, [journal_entry(client, e) for e in ("je-a", "je-b", "je-c")])

    assert [r.status.isSuccess for r in results] == [True, False, True]
    assert results[1].status.statusDetail[0].code == "UNEXPECTED_ERROR"
    assert results[1].status.statusDetail[0].message == "Boom for je-b."
    assert results[1].baseRef is None
    assert [r.baseRef.externalId for r in (results[0], results[2])] == ["je-a", "je-c"]
    assert [r.baseRef.internalId for r in (results[0], results[2])] == ["1", "2"]
    assert list(sandbox.records("journalEntry")) == ["je-a", "je-c"]
    assert sandbox.requests[-1].record_errors == (("je-b", "UNEXPECTED_ERROR"),)
    assert sandbox.pending_faults == []

    retry = upsert_list(client, [journal_entry(client, "je-b")])  # the fault was used up
    assert retry[0].status.isSuccess is True
    assert list(sandbox.records("journalEntry")) == ["je-a", "je-c", "je-b"]


def test_record_error_by_position_fails_only_that_record(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    sandbox.inject(FaultKind.RECORD_ERROR, record_index=2, code=CODE_USER_ERROR, times=None)

    first = upsert_list(client, [journal_entry(client, f"je-{i}") for i in range(4)])
    second = upsert_list(client, [journal_entry(client, f"je-{i}") for i in range(4, 7)])

    assert [r.status.isSuccess for r in first] == [True, True, False, True]
    assert [r.status.isSuccess for r in second] == [True, True, False]
    assert len(sandbox.pending_faults) == 1  # times=None: until cleared


# ---------------------------------------------------------------------- NetSuite validation


def test_unbalanced_journal_entry_is_refused(sandbox: NetSuiteSandbox, client: Any) -> None:
    with pytest.raises(NetSuiteRequestError) as raised:
        client.upsert(journal_entry(client, "je-1", [("1", "100.00", None), ("2", None, "99.99")]))
    assert raised.value.code == CODE_UNBALANCED
    assert "100.00" in str(raised.value)
    assert "99.99" in str(raised.value)
    assert sandbox.records("journalEntry") == {}


def test_unknown_account_is_an_invalid_reference(sandbox: NetSuiteSandbox, client: Any) -> None:
    with pytest.raises(NetSuiteRequestError) as raised:
        client.upsert(journal_entry(client, "je-1", [("1", "5.00", None), ("999", None, "5.00")]))
    assert raised.value.code == CODE_INVALID_REF
    assert "Invalid account reference key 999 for subsidiary 1." in str(raised.value)
    assert sandbox.records("journalEntry") == {}


@pytest.mark.parametrize(
    ("kwargs", "lines", "code"),
    [
        ({"subsidiary": None}, None, CODE_USER_ERROR),
        ({"subsidiary": "9"}, None, CODE_INVALID_REF),
        ({"currency": "77"}, None, CODE_INVALID_REF),
        ({}, [], CODE_USER_ERROR),
        (
            {},
            [("1", "1.00", None), ("2", None, "1.00")] * 500 + [("1", "0", None)],
            CODE_TOO_MANY_LINES,
        ),
    ],
    ids=["no-subsidiary", "unknown-subsidiary", "unknown-currency", "no-lines", "1001-lines"],
)
def test_journal_entry_checks(
    sandbox: NetSuiteSandbox,
    client: Any,
    kwargs: dict[str, Any],
    lines: list[Line] | None,
    code: str,
) -> None:
    entry = (
        journal_entry(client, "je-1", **kwargs)
        if lines is None
        else journal_entry(client, "je-1", lines)
    )
    results = upsert_list(client, [entry, journal_entry(client, "je-ok")])
    assert results[0].status.isSuccess is False
    assert results[0].status.statusDetail[0].code == code
    assert results[1].status.isSuccess is True
    assert list(sandbox.records("journalEntry")) == ["je-ok"]


def test_one_thousand_lines_are_accepted(sandbox: NetSuiteSandbox, client: Any) -> None:
    lines: list[Line] = [("1", "1.00", None), ("2", None, "1.00")] * 500
    client.upsert(journal_entry(client, "je-big", lines))
    stored = sandbox.record("journalEntry", "je-big")
    assert stored is not None
    assert len(stored["lineList"]["line"]) == 1000


def test_amounts_are_rounded_to_the_currency_precision(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    # JPY (currency 4) has no minor unit: NetSuite keeps whole yen.
    client.upsert(
        journal_entry(
            client, "je-jpy", [("9", "1500.4", None), ("2", None, "1500.4")], currency="4"
        )
    )
    stored = sandbox.record("journalEntry", "je-jpy")
    assert stored is not None
    assert [line.get("debit") for line in stored["lineList"]["line"]] == [Decimal("1500"), None]
    assert stored["currency"] == {"internalId": "4", "name": "Japanese Yen"}


def test_account_restricted_to_another_subsidiary_is_refused(client: Any) -> None:
    sandbox = NetSuiteSandbox(
        accounts=[
            *DEFAULT_ACCOUNTS,
            {"externalId": "acct-eu-only", "acctName": "EU only", "acctType": "_bank",
             "subsidiaryList": {"recordRef": [{"internalId": "2"}]}, "includeChildren": False},
        ]
    )  # fmt: skip
    with sandbox:
        eu_client = sandbox_client(sandbox)
        restricted = sandbox.record("account", "acct-eu-only")
        assert restricted is not None
        account_id = restricted["internalId"]
        lines: list[Line] = [(account_id, "3.00", None), ("2", None, "3.00")]
        eu_client.upsert(journal_entry(eu_client, "je-eu", lines, subsidiary="2"))
        with pytest.raises(NetSuiteRequestError) as raised:
            eu_client.upsert(journal_entry(eu_client, "je-us", lines, subsidiary="1"))
        assert raised.value.code == CODE_INVALID_REF
        assert list(sandbox.records("journalEntry")) == ["je-eu"]


def test_a_list_request_sees_its_own_account_changes(sandbox: NetSuiteSandbox, client: Any) -> None:
    """A list's entries share their account lookups (the store is locked for the list), but
    an account the same list writes is looked up again for the records after it."""
    account = client.upsert(
        client.Account(externalId="acct-closing", acctName="Closing", acctType="_bank")
    ).internalId
    lines: list[Line] = [(account, "4.00", None), ("2", None, "4.00")]
    statuses = upsert_list(
        client,
        [
            journal_entry(client, "je-before", lines),
            client.Account(externalId="acct-closing", acctName="Closing", isInactive=True),
            journal_entry(client, "je-after", lines),
        ],
    )
    assert [s.status.isSuccess for s in statuses] == [True, True, False]
    assert statuses[2].status.statusDetail[0].code == CODE_INVALID_REF
    assert list(sandbox.records("journalEntry")) == ["je-before"]


def test_more_than_200_records_in_one_list_request_are_refused(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    with pytest.raises(SoapFault) as raised:
        upsert_list(client, [journal_entry(client, f"je-{i}") for i in range(201)])
    assert fault_detail_code(raised.value) == "MAX_RCRDS_EXCEEDED"
    assert sandbox.records("journalEntry") == {}

    results = upsert_list(client, [journal_entry(client, f"je-{i}") for i in range(200)])
    assert all(r.status.isSuccess for r in results)
    assert len(sandbox.records("journalEntry")) == 200
    assert [e.record_count for e in sandbox.requests] == [201, 200]


# ---------------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    "override",
    [
        {"consumer_secret": "wrong"},
        {"token_secret": "wrong"},
        {"token_key": "someone-elses-token"},
        {"consumer_key": "someone-elses-app"},
    ],
    ids=["consumer-secret", "token-secret", "token-id", "consumer-key"],
)
def test_bad_credentials_are_an_invalid_login(
    sandbox: NetSuiteSandbox, override: dict[str, str]
) -> None:
    client = sandbox_client(sandbox, connect=False)
    client.connect_tba(**{**sandbox.tba_kwargs(), **override})

    with pytest.raises(NetSuiteLoginError) as raised:  # netsuitesdk's mapping of the fault
        client.upsert(journal_entry(client, "je-1"))
    assert "Invalid login attempt." in str(raised.value)
    with pytest.raises(SoapFault) as soap:
        upsert_list(client, [journal_entry(client, "je-1")])
    assert soap.value.message == "Invalid login attempt."
    assert soap.value.code == "soapenv:Server.userException"
    assert fault_detail_code(soap.value) == "USER_ERROR"
    assert soap.value.detail.find(f"{{{FAULTS_NS}}}invalidCredentialsFault") is not None
    assert sandbox.records("journalEntry") == {}


def test_wrong_account_and_sha1_signatures_are_refused(sandbox: NetSuiteSandbox) -> None:
    other = sandbox_client(sandbox, connect=False, account="TSTDRV999999")
    other.connect_tba(**sandbox.tba_kwargs())
    with pytest.raises(NetSuiteLoginError):
        other.get("currency", internalId="1")

    sha1 = sandbox_client(sandbox, connect=False)
    sha1.connect_tba(**sandbox.tba_kwargs(), signature_algorithm="HMAC-SHA1")
    with pytest.raises(NetSuiteLoginError):
        sha1.get("currency", internalId="1")


def test_a_replayed_token_passport_is_refused(client: Any) -> None:
    headers = client._build_soap_headers()
    ref = client.RecordRef(type="currency", internalId="1")
    assert client._service_proxy.get(
        baseRef=ref, _soapheaders=headers
    ).body.readResponse.status.isSuccess
    with pytest.raises(SoapFault) as raised:
        client._service_proxy.get(baseRef=ref, _soapheaders=headers)
    assert raised.value.message == "Invalid login attempt."


def test_a_request_without_a_passport_must_log_in(client: Any) -> None:
    with pytest.raises(SoapFault) as raised:
        client._service_proxy.get(baseRef=client.RecordRef(type="currency", internalId="1"))
    assert fault_detail_code(raised.value) == "WS_LOG_IN_REQD"


# ---------------------------------------------------------------------- injected faults


def test_concurrency_limit_fault_is_netsuites_and_is_used_up(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    sandbox.inject(FaultKind.CONCURRENCY_LIMIT)

    with pytest.raises(NetSuiteRateLimitError):  # netsuitesdk recognises NetSuite's faultstring
        client.upsert(journal_entry(client, "je-1"))
    assert sandbox.records("journalEntry") == {}
    failed = sandbox.requests[-1]
    assert (failed.http_status, failed.fault_code) == (500, "WS_REQUEST_BLOCKED")

    client.upsert(journal_entry(client, "je-1"))
    assert list(sandbox.records("journalEntry")) == ["je-1"]


def test_concurrent_session_fault(sandbox: NetSuiteSandbox, client: Any) -> None:
    sandbox.inject(FaultKind.CONCURRENT_SESSION, operation="upsertList")

    with pytest.raises(SoapFault) as raised:
        upsert_list(client, [journal_entry(client, "je-1")])
    assert fault_detail_code(raised.value) == "WS_CONCUR_SESSION_DISALLWD"
    assert sandbox.records("journalEntry") == {}
    assert upsert_list(client, [journal_entry(client, "je-1")])[0].status.isSuccess


@pytest.mark.parametrize(("kind", "status"), [(FaultKind.HTTP_503, 503), (FaultKind.HTTP_429, 429)])
def test_plain_http_errors_before_any_write(
    sandbox: NetSuiteSandbox, client: Any, kind: FaultKind, status: int
) -> None:
    sandbox.inject(kind, times=2)

    for _ in range(2):
        with pytest.raises(TransportError) as raised:
            upsert_list(client, [journal_entry(client, "je-1")])
        assert raised.value.status_code == status
    assert sandbox.records("journalEntry") == {}
    assert upsert_list(client, [journal_entry(client, "je-1")])[0].status.isSuccess
    assert [e.http_status for e in sandbox.requests] == [status, status, 200]


def test_faults_match_by_operation_and_external_id(sandbox: NetSuiteSandbox, client: Any) -> None:
    sandbox.inject(FaultKind.HTTP_503, operation="upsertList")
    sandbox.inject(FaultKind.CONCURRENCY_LIMIT, external_ids={"je-x"})

    assert client.get("currency", internalId="1").name == "US Dollar"  # not an upsertList
    client.upsert(journal_entry(client, "je-y"))  # not je-x
    with pytest.raises(NetSuiteRateLimitError):
        client.upsert(journal_entry(client, "je-x"))
    with pytest.raises(TransportError):
        upsert_list(client, [journal_entry(client, "je-z")])
    assert sandbox.pending_faults == []
    assert list(sandbox.records("journalEntry")) == ["je-y"]


def test_timeout_after_commit_leaves_the_record_written(sandbox: NetSuiteSandbox) -> None:
    client = sandbox_client(sandbox, operation_timeout=0.5)
    sandbox.inject(FaultKind.TIMEOUT_AFTER_COMMIT, hang_seconds=3)

    with pytest.raises(requests.exceptions.Timeout):
        upsert_list(client, [journal_entry(client, "je-1"), journal_entry(client, "je-2")])
    assert list(sandbox.records("journalEntry")) == ["je-1", "je-2"]

    # The retry a connector makes after a timeout upserts the same externalIds: no duplicates.
    results = upsert_list(client, [journal_entry(client, "je-1"), journal_entry(client, "je-2")])
    assert [r.baseRef.internalId for r in results] == ["1", "2"]
    assert len(sandbox.records("journalEntry")) == 2


def test_disconnect_after_commit_is_a_connection_error(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    sandbox.inject(FaultKind.DISCONNECT_AFTER_COMMIT)

    with pytest.raises(requests.exceptions.ConnectionError):
        client.upsert(journal_entry(client, "je-1"))
    assert list(sandbox.records("journalEntry")) == ["je-1"]
    dropped = sandbox.requests[-1]
    assert (dropped.http_status, dropped.fault_code) == (None, "disconnect_after_commit")


def test_injected_fault_options_are_checked() -> None:
    with pytest.raises(ValueError, match="times"):
        InjectedFault(kind=FaultKind.HTTP_503, times=0)
    with pytest.raises(ValueError, match="record_index"):
        InjectedFault(kind=FaultKind.HTTP_503, record_index=1)


def test_unsupported_requests_are_loud_faults(client: Any) -> None:
    with pytest.raises(SoapFault) as raised:
        client._service_proxy.get(
            baseRef=client.RecordRef(type="customer", internalId="1"),
            _soapheaders=client._build_soap_headers(),
        )
    assert fault_detail_code(raised.value) == "UNEXPECTED_ERROR"
    assert "does not support record type 'customer'" in raised.value.message


# ---------------------------------------------------------------------- reads and searches


def test_get_list_answers_each_reference(sandbox: NetSuiteSandbox, client: Any) -> None:
    client.upsert(journal_entry(client, "je-1"))
    refs = [
        client.RecordRef(type="journalEntry", externalId="je-1"),
        client.RecordRef(type="account", internalId="6"),
        client.RecordRef(type="subsidiary", externalId="sub-eu"),
        client.RecordRef(type="journalEntry", externalId="missing"),
    ]
    response = client._service_proxy.getList(
        baseRef=refs, _soapheaders=client._build_soap_headers()
    )
    reads = response.body.readResponseList.readResponse

    assert [r.status.isSuccess for r in reads] == [True, True, True, False]
    assert reads[0].record.lineList.line[0].account.internalId == "1"
    assert reads[1].record.acctName == "Operating Bank USD"
    assert reads[2].record.name == "Tieout Europe B.V."
    assert reads[3].status.statusDetail[0].code == "RCRD_DSNT_EXIST"
    assert sandbox.requests[-1].external_ids == ("je-1", None, "sub-eu", "missing")


def test_accounts_can_be_upserted_and_found_by_name(sandbox: NetSuiteSandbox, client: Any) -> None:
    ref = client.upsert(
        client.Account(
            externalId="acct-psp-reserve", acctName="PSP Reserve", acctType="_otherCurrentAsset"
        )
    )
    assert ref.internalId == str(len(DEFAULT_ACCOUNTS) + 1)
    found = client.search(
        client.AccountSearchBasic(
            name=client.SearchStringField(operator="contains", searchValue="reserve")
        )
    ).records
    assert [(a.externalId, a.acctType) for a in found] == [
        ("acct-psp-reserve", "_otherCurrentAsset")
    ]


def test_search_accounts_subsidiaries_and_currencies_return_the_seeds(client: Any) -> None:
    accounts = client.search(client.AccountSearchBasic()).records
    assert [a.externalId for a in accounts] == [a["externalId"] for a in DEFAULT_ACCOUNTS]

    banks = client.search(
        client.AccountSearchBasic(
            type=client.SearchEnumMultiSelectField(operator="anyOf", searchValue=["_bank"])
        )
    ).records
    assert [a.acctName for a in banks] == [
        "Operating Bank USD", "Operating Bank EUR", "Operating Bank GBP", "Operating Bank JPY"
    ]  # fmt: skip

    by_external = client.search(
        client.AccountSearchBasic(
            externalId=client.SearchMultiSelectField(
                operator="anyOf", searchValue=[client.RecordRef(externalId="acct-clearing")]
            )
        )
    ).records
    assert [a.internalId for a in by_external] == ["11"]

    subsidiaries = client.search(client.SubsidiarySearchBasic()).records
    assert [(s.internalId, s.name) for s in subsidiaries] == [
        ("1", "Tieout Inc."), ("2", "Tieout Europe B.V.")
    ]  # fmt: skip
    eu = client.search(
        client.SubsidiarySearchBasic(
            internalId=client.SearchMultiSelectField(
                operator="anyOf", searchValue=[client.RecordRef(internalId="2")]
            )
        )
    ).records
    assert [s.externalId for s in eu] == ["sub-eu"]

    # SuiteTalk has no currency search; currencies are read with getAll (netsuitesdk's way).
    currencies = Currencies(client).get_all()
    assert [(c["internalId"], c["symbol"]) for c in currencies] == [
        ("1", "USD"), ("2", "EUR"), ("3", "GBP"), ("4", "JPY")
    ]  # fmt: skip
    assert currencies[3]["currencyPrecision"] == "_zero"


def test_netsuitesdk_paginated_searches_work(sandbox: NetSuiteSandbox) -> None:
    # netsuitesdk's API classes page through searchMoreWithId.
    client = sandbox_client(sandbox, page_size=5)
    accounts = Accounts(client).get_all()
    assert len(accounts) == len(DEFAULT_ACCOUNTS)
    assert [e.operation for e in sandbox.requests] == ["search"] + ["searchMoreWithId"] * 3
    assert [s["externalId"] for s in Subsidiaries(client).get_all()] == ["sub-us", "sub-eu"]


def test_netsuitesdk_journal_entry_api_posts_and_lists(
    sandbox: NetSuiteSandbox, client: Any
) -> None:
    api = JournalEntries(client)
    posted = api.post(
        {
            "externalId": "je-sdk",
            "subsidiary": {"internalId": "2"},
            "lineList": [
                {"account": client.RecordRef(internalId="7"), "debit": Decimal("9.99")},
                {
                    "account": client.RecordRef(internalId="2"),
                    "credit": Decimal("9.99"),
                    "customFieldList": [
                        {"type": "String", "scriptId": "custcol_run", "value": "r1"},
                        {"type": "Select", "scriptId": "custcol_gateway", "value": "12"},
                    ],
                },
            ],
        }
    )
    assert posted["externalId"] == "je-sdk"
    stored = sandbox.record("journalEntry", "je-sdk")
    assert stored is not None
    assert stored["currency"]["internalId"] == "2"  # subsidiary 2 books in EUR
    assert stored["lineList"]["line"][1]["customFieldList"]["customField"][1] == {
        "xsiType": "SelectCustomFieldRef",
        "scriptId": "custcol_gateway",
        "value": {"internalId": "12"},
    }
    # netsuitesdk lists journal entries with a paged TransactionSearch (recordType contains).
    assert [r.externalId for r in api.get_all_generator()] == ["je-sdk"]


def test_search_journal_entries_by_external_id(sandbox: NetSuiteSandbox, client: Any) -> None:
    upsert_list(client, [journal_entry(client, f"je-{i}") for i in range(1, 5)])
    search = client.TransactionSearchBasic(
        type=client.SearchEnumMultiSelectField(operator="anyOf", searchValue=["_journal"]),
        externalId=client.SearchMultiSelectField(
            operator="anyOf",
            searchValue=[client.RecordRef(externalId=e) for e in ("je-3", "je-1", "je-9")],
        ),
    )

    result = client.search(search)
    assert result.totalRecords == 2
    assert [r.externalId for r in result.records] == ["je-1", "je-3"]
    assert result.records[0].lineList is None  # bodyFieldsOnly, netsuitesdk's default

    full = sandbox_client(sandbox, search_body_fields_only=False)
    lines = full.search(search).records[0].lineList.line
    assert [Decimal(str(line.debit)) if line.debit else None for line in lines] == [
        Decimal("100.00"),
        None,
    ]

    none = client.TransactionSearchBasic(
        externalId=client.SearchMultiSelectField(
            operator="anyOf", searchValue=[client.RecordRef(externalId="je-404")]
        )
    )
    empty = client.search(none)
    # An empty <recordList/> reaches netsuitesdk as None, its "did not find anything" case.
    assert (empty.totalRecords, empty.records) == (0, None)


# ---------------------------------------------------------------------- observability


def test_request_log_and_max_concurrent(sandbox: NetSuiteSandbox) -> None:
    clients = [sandbox_client(sandbox, operation_timeout=10) for _ in range(4)]
    sandbox.latency = 0.4
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def post(index: int) -> None:
        try:
            barrier.wait()
            upsert_list(
                clients[index], [journal_entry(clients[index], f"je-{index}-{n}") for n in range(3)]
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sandbox.max_concurrent == 4
    log = sandbox.requests
    assert [(e.operation, e.record_count, e.http_status) for e in log] == [
        ("upsertList", 3, 200)
    ] * 4
    assert sorted(e for entry in log for e in entry.external_ids) == sorted(
        f"je-{i}-{n}" for i in range(4) for n in range(3)
    )
    assert all(entry.duration >= 0.4 for entry in log)
    assert sandbox.in_flight == 0

    sandbox.clear_requests()
    sandbox.latency = 0
    clients[0].get("currency", internalId="1")
    assert sandbox.max_concurrent == 1
    assert [e.operation for e in sandbox.requests] == ["get"]


def test_concurrency_cap_blocks_requests_above_it(sandbox: NetSuiteSandbox) -> None:
    sandbox.max_concurrent_requests = 2
    sandbox.latency = 0.4
    clients = [sandbox_client(sandbox, operation_timeout=10) for _ in range(4)]
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def post(index: int) -> None:
        barrier.wait()
        try:
            clients[index].upsert(journal_entry(clients[index], f"je-{index}"))
            outcomes.append("ok")
        except NetSuiteRateLimitError:
            outcomes.append("blocked")

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["blocked", "blocked", "ok", "ok"]
    assert len(sandbox.records("journalEntry")) == 2
    assert sorted(str(e.fault_code) for e in sandbox.requests) == [
        "None", "None", "WS_REQUEST_BLOCKED", "WS_REQUEST_BLOCKED"
    ]  # fmt: skip


# ---------------------------------------------------------------------- seeding and the CLI


def test_seed_and_reset(sandbox: NetSuiteSandbox, client: Any) -> None:
    ids = sandbox.seed(
        "account", [{"externalId": "acct-new", "acctName": "New", "acctType": "_expense"}]
    )
    assert ids == [str(len(DEFAULT_ACCOUNTS) + 1)]
    with pytest.raises(ValueError, match="no field"):
        sandbox.seed("account", [{"externalId": "acct-bad", "colour": "red"}])
    client.upsert(journal_entry(client, "je-1"))
    sandbox.inject(FaultKind.HTTP_503)

    sandbox.reset()

    assert "acct-new" not in sandbox.records("account")
    assert sandbox.records("journalEntry") == {}
    assert sandbox.pending_faults == []
    assert sandbox.requests == ()
    assert client.upsert(journal_entry(client, "je-1")).internalId == "1"


def test_cli_prints_what_a_client_needs() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tieout.sandbox.netsuite", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(9)]
        endpoint = next(line.split()[-1] for line in banner if "endpoint:" in line)
        wsdl = next(line.split()[-1] for line in banner if "WSDL:" in line)
        assert endpoint.endswith("/services/NetSuitePort_2023_2")
        assert any("TSTDRV123456" in line for line in banner)
        assert any("fake-token-secret-tieout-sandbox" in line for line in banner)
        assert requests.get(wsdl, timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_stored_journal_entries_are_independent_copies() -> None:
    """The store keeps journal entries pickled: what a read returns is the caller's own,
    changing it changes nothing stored, and an update keeps the created date and tranId."""
    import gc

    from tieout.sandbox.netsuite.store import RecordStore

    store = RecordStore()
    first = {"externalId": "je-1", "memo": "one", "lineList": {"line": [{"debit": Decimal("1.5")}]}}
    created = store.upsert("journalEntry", first)
    first["memo"] = "changed after the write"
    got = store.get("journalEntry", external_id="je-1")
    assert got is not None
    assert got["memo"] == "one"
    assert got["lineList"]["line"][0]["debit"] == Decimal("1.5")
    got["lineList"]["line"].clear()
    listed = store.all("journalEntry")
    assert listed[0]["lineList"]["line"] == [{"debit": Decimal("1.5")}]
    listed[0]["memo"] = "x"
    assert store.by_external_id("journalEntry")["je-1"]["memo"] == "one"
    store.upsert("journalEntry", {"externalId": "je-1", "memo": "two"})
    again = store.get("journalEntry", internal_id=created.internal_id)
    assert again is not None
    assert (again["memo"], again["tranId"], again["createdDate"]) == (
        "two", got["tranId"], got["createdDate"],
    )  # fmt: skip
    # NetSuite's timestamps: UTC, to the second.
    stamp = datetime.strptime(again["lastModifiedDate"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 5
    # Nothing of the stored entries is left for the garbage collector to walk.
    assert not any(gc.is_tracked(v) for v in store._by_id["journalEntry"].values())
