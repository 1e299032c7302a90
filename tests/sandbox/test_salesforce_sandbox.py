"""The Salesforce sandbox, driven by the real simple-salesforce client over HTTPS (no mocks).

What a connector author can copy from here: building a client (`sandbox_client`), which
login flows work, Collections and Bulk 2.0 upserts with their per-record results, and which
exception each Salesforce failure surfaces as. Bulk calls pass ``wait=0``: simple-salesforce
otherwise sleeps 5 s before its first job-status poll.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from tieout.sandbox.salesforce import (
    FaultKind,
    FieldSpec,
    Operation,
    SalesforceSandbox,
    default_schema,
)
from tieout.sandbox.salesforce.client import (
    LoginFlow,
    fetch_token,
    sandbox_client,
    sandbox_session,
)

INVOICE = "Tieout_Invoice__c"
EXT = "Tieout_External_Id__c"
INVOICE_COLUMNS = [
    EXT,
    "Name",
    "Tieout_Invoice_Number__c",
    "Tieout_Invoice_Date__c",
    "Tieout_Due_Date__c",
    "Tieout_Amount__c",
    "Tieout_Tax_Amount__c",
    "Tieout_Amount_Paid__c",
    "Tieout_Balance__c",
    "Tieout_Status__c",
    "CurrencyIsoCode",
]


@pytest.fixture
def sf_sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox() as running:
        yield running


@pytest.fixture
def sf(sf_sandbox: SalesforceSandbox) -> Salesforce:
    return sandbox_client(sf_sandbox)


def invoice_rows(count: int, *, start: int = 0, amount: str = "100.00") -> list[list[str]]:
    return [
        [
            f"INV-{i:07d}",
            f"Invoice {i}",
            f"N-{i}",
            "2024-01-15",
            "2024-02-14",
            amount,
            "8.25",
            "0",
            amount,
            "Open",
            "USD",
        ]
        for i in range(start, start + count)
    ]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def upsert_invoices(sf: Salesforce, records: list[dict[str, Any]], **kw: Any) -> Any:
    return sf.restful(
        f"composite/sobjects/{INVOICE}/{EXT}",
        method="PATCH",
        json={"allOrNone": kw.pop("all_or_none", False), "records": records},
    )


def invoice(ext: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": INVOICE}, EXT: ext, **fields}


# --------------------------------------------------------------------------- login & TLS


@pytest.mark.parametrize("flow", ["soap", "oauth_password", "jwt", "client_credentials", "direct"])
def test_every_login_flow_reaches_the_sandbox(
    sf_sandbox: SalesforceSandbox, flow: LoginFlow
) -> None:
    sf = sandbox_client(sf_sandbox, flow)

    assert sf.sf_instance == sf_sandbox.host
    assert sf.Account.describe()["name"] == "Account"
    assert sf_sandbox.counters.get("logins") == 1


def test_login_paths_mirror_salesforce_hosts(sf_sandbox: SalesforceSandbox) -> None:
    sandbox_client(sf_sandbox, "soap")
    sandbox_client(sf_sandbox, "jwt")

    paths = [r.path for r in sf_sandbox.request_log if r.operation is Operation.LOGIN]
    assert paths == [
        "/login.salesforce.com/services/Soap/u/59.0",
        "/login.salesforce.com/services/oauth2/token",
    ]


def test_wrong_credentials_fail_like_salesforce(sf_sandbox: SalesforceSandbox) -> None:
    creds = sf_sandbox.credentials
    session = sandbox_session(sf_sandbox)

    with pytest.raises(SalesforceAuthenticationFailed) as soap:
        Salesforce(
            username=creds.username,
            password="not-the-password",
            security_token=creds.security_token,
            domain=sf_sandbox.login_domain,
            session=session,
        )
    assert soap.value.code == "INVALID_LOGIN"

    with pytest.raises(SalesforceAuthenticationFailed) as oauth:
        Salesforce(
            username=creds.username,
            password=creds.password + creds.security_token,
            consumer_key=creds.consumer_key,
            consumer_secret="wrong-secret",
            domain=sf_sandbox.login_domain,
            session=session,
        )
    assert oauth.value.code == "invalid_client"

    # The password without the security token is refused unless the IP is "trusted".
    with pytest.raises(SalesforceAuthenticationFailed) as no_token:
        Salesforce(
            username=creds.username,
            password=creds.password,
            consumer_key=creds.consumer_key,
            consumer_secret=creds.consumer_secret,
            domain=sf_sandbox.login_domain,
            session=session,
        )
    assert no_token.value.code == "invalid_grant"


def test_jwt_signed_by_an_unregistered_key_is_refused(
    sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "other.key"
    key_file.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(
            username=sf_sandbox.credentials.username,
            consumer_key=sf_sandbox.credentials.consumer_key,
            privatekey_file=str(key_file),
            instance_url=sf_sandbox.login_domain,
            session=sandbox_session(sf_sandbox),
        )
    assert (exc.value.code, exc.value.auth_message) == ("invalid_grant", "invalid assertion")


def test_tls_is_verified_against_the_sandbox_ca(sf_sandbox: SalesforceSandbox) -> None:
    plain = requests.Session()
    plain.trust_env = False  # the system CA store only
    with pytest.raises(requests.exceptions.SSLError):
        sandbox_client(sf_sandbox, "soap", session=plain)

    verified = sandbox_session(sf_sandbox)
    assert verified.verify == sf_sandbox.ca_bundle
    response = verified.get(f"{sf_sandbox.instance_url}/services/data/", timeout=10)
    assert response.status_code == 200
    # localhost is in the certificate too.
    localhost = f"https://localhost:{sf_sandbox.port}/services/data/"
    assert verified.get(localhost, timeout=10).status_code == 200


# --------------------------------------------------------------------------- describe


def test_describe_reports_the_revenue_schema(sf: Salesforce) -> None:
    account = sf.Account.describe()
    fields = {f["name"]: f for f in account["fields"]}

    assert account["keyPrefix"] == "001"
    assert fields["Tieout_Customer_Id__c"]["externalId"] is True
    assert fields["Tieout_MRR__c"]["type"] == "currency"
    assert (fields["Tieout_MRR__c"]["precision"], fields["Tieout_MRR__c"]["scale"]) == (18, 2)
    assert fields["Tieout_Last_Payment_Date__c"]["type"] == "date"
    assert fields["Name"]["nillable"] is False
    assert fields["Id"]["createable"] is False

    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", INVOICE, "Tieout_Payment__c", "Tieout_Revenue_Schedule__c"} <= names
    for name in names - {"Account"}:
        described = {f["name"]: f for f in getattr(sf, name).describe()["fields"]}
        assert described[EXT]["externalId"] is True
        assert described["CurrencyIsoCode"]["restrictedPicklist"] is True


def test_schema_is_configurable_and_unknown_objects_are_404() -> None:
    schema = default_schema()
    schema["Account"].append(FieldSpec("Tieout_Segment__c", "string", length=20))
    schema["Tieout_Credit_Note__c"] = [
        FieldSpec(EXT, "string", length=64, external_id=True),
        FieldSpec("Tieout_Amount__c", "currency", precision=16, scale=2),
    ]
    with SalesforceSandbox(schema) as sandbox:
        sf = sandbox_client(sandbox)
        segment = {f["name"]: f for f in sf.Account.describe()["fields"]}["Tieout_Segment__c"]
        assert (segment["type"], segment["length"]) == ("string", 20)
        assert sf.Tieout_Credit_Note__c.describe()["keyPrefix"].startswith("a0")

        with pytest.raises(SalesforceResourceNotFound) as exc:
            sf.Tieout_Nope__c.describe()
        assert exc.value.content[0]["errorCode"] == "NOT_FOUND"


# --------------------------------------------------------------------------- collections


def test_collections_upsert_inserts_then_updates(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    first = upsert_invoices(sf, [invoice("INV-1", Tieout_Amount__c=100.5)])
    assert first[0]["success"] is True
    assert first[0]["created"] is True

    second = upsert_invoices(sf, [invoice("INV-1", Tieout_Amount__c="99.995")])
    assert second[0] == {
        "id": first[0]["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    stored = sf_sandbox.records(INVOICE)["INV-1"]
    assert stored["Id"] == first[0]["id"]
    assert stored["Tieout_Amount__c"] == Decimal("100.00")  # rounded half-up to scale 2
    assert stored["Name"] == stored["Id"]  # a text Name left out defaults to the id
    assert sf.Tieout_Invoice__c.get(first[0]["id"])["Tieout_Amount__c"] == 100.0


def test_collections_reject_more_than_200_records(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        upsert_invoices(sf, [invoice(f"INV-{i}") for i in range(201)])
    assert exc.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert sf_sandbox.record_count(INVOICE) == 0

    assert len(upsert_invoices(sf, [invoice(f"INV-{i}") for i in range(200)])) == 200


def test_duplicate_external_ids_fail_only_their_record(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    ids = sf_sandbox.seed(
        "Account",
        [
            {"Name": "Acme", "Tieout_Customer_Id__c": "C-1"},
            {"Name": "Acme (dup)", "Tieout_Customer_Id__c": "C-1"},
        ],
    )
    results = sf.restful(
        "composite/sobjects/Account/Tieout_Customer_Id__c",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Tieout_Customer_Id__c": "C-1", "Name": "X"},
                {"attributes": {"type": "Account"}, "Tieout_Customer_Id__c": "C-2", "Name": "Y"},
            ],
        },
    )
    error = results[0]["errors"][0]
    assert results[0]["success"] is False
    assert error["statusCode"] == "DUPLICATE_EXTERNAL_ID"
    assert error["message"] == (
        f"Tieout Customer Id: more than one record found for external id field: "
        f"[{ids[0]}, {ids[1]}]"
    )
    assert error["fields"] == ["Tieout_Customer_Id__c"]
    assert results[1]["success"] is True
    # The REST "get by external id" answers 300 Multiple Choices for the same ambiguity.
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.get_by_custom_id("Tieout_Customer_Id__c", "C-1")


def test_unknown_field_fails_the_whole_request(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        upsert_invoices(sf, [invoice("INV-1"), invoice("INV-2", Tieout_Nope__c="x")])
    assert exc.value.content == [
        {
            "message": f"No such column 'Tieout_Nope__c' on sobject of type {INVOICE}",
            "errorCode": "INVALID_FIELD",
        }
    ]
    assert sf_sandbox.record_count(INVOICE) == 0


def test_save_errors_are_per_record(sf: Salesforce, sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.seed("Account", [{"Name": "Acme", "Tieout_Customer_Id__c": "C-1"}])
    results = upsert_invoices(
        sf,
        [
            invoice("INV-1", Tieout_Account__r={"Tieout_Customer_Id__c": "C-1"}),
            invoice("INV-2", Tieout_Account__r={"Tieout_Customer_Id__c": "C-404"}),
            invoice("INV-3", Tieout_Invoice_Number__c="N" * 81),
            invoice("INV-4", CurrencyIsoCode="XXY"),
            invoice("INV-5", Tieout_Amount__c="1e30"),
        ],
    )
    codes = [r["errors"][0]["statusCode"] if r["errors"] else None for r in results]
    assert codes == [
        None,
        "INVALID_FIELD",
        "STRING_TOO_LONG",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "NUMBER_OUTSIDE_VALID_RANGE",
    ]
    assert results[1]["errors"][0]["message"] == (
        "Foreign key external ID: C-404 not found for field Tieout_Customer_Id__c in entity Account"
    )
    account_id = sf_sandbox.records("Account")["C-1"]["Id"]
    assert sf_sandbox.records(INVOICE)["INV-1"]["Tieout_Account__c"] == account_id

    missing_name = sf.restful(
        "composite/sobjects/Account/Tieout_Customer_Id__c",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Account"}, "Tieout_Customer_Id__c": "C-9"}]},
    )
    assert missing_name[0]["errors"][0] == {
        "statusCode": "REQUIRED_FIELD_MISSING",
        "message": "Required fields are missing: [Name]",
        "fields": ["Name"],
    }


def test_validation_rule_and_all_or_none_rollback(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.add_validation_rule(
        INVOICE, "INV-2", "Amount must be positive", ["Tieout_Amount__c"]
    )
    records = [invoice("INV-1"), invoice("INV-2"), invoice("INV-3")]

    rolled_back = upsert_invoices(sf, records, all_or_none=True)
    assert [r["errors"][0]["statusCode"] for r in rolled_back] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    assert sf_sandbox.record_count(INVOICE) == 0

    partial = upsert_invoices(sf, records)
    assert [r["success"] for r in partial] == [True, False, True]
    assert partial[1]["errors"][0]["message"] == "Amount must be positive"
    assert set(sf_sandbox.records(INVOICE)) == {"INV-1", "INV-3"}


# --------------------------------------------------------------------------- Bulk API 2.0


def test_bulk_upsert_stores_every_row_and_reports_results(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    rows = invoice_rows(5_000)
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, rows)

    [result] = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)

    assert result["numberRecordsProcessed"] == 5_000
    assert result["numberRecordsFailed"] == 0
    stored = sf_sandbox.records(INVOICE)
    assert len(stored) == 5_000
    assert stored["INV-0004999"]["Tieout_Due_Date__c"].isoformat() == "2024-02-14"
    assert stored["INV-0004999"]["Tieout_Tax_Amount__c"] == Decimal("8.25")

    text = sf.bulk2.Tieout_Invoice__c.get_successful_records(result["job_id"])
    assert text.splitlines()[0] == '"sf__Id","sf__Created",' + ",".join(INVOICE_COLUMNS)
    successes = parse_csv(text)
    assert len(successes) == 5_000
    assert all(row["sf__Created"] == "true" for row in successes)
    assert {row["sf__Id"] for row in successes} == {r["Id"] for r in stored.values()}
    assert parse_csv(sf.bulk2.Tieout_Invoice__c.get_failed_records(result["job_id"])) == []

    # Second load: same external ids update the same records (sf__Created false).
    changed = invoice_rows(5_000, amount="250.00")
    path2 = write_csv(tmp_path / "again.csv", INVOICE_COLUMNS, changed)
    [again] = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path2, external_id_field=EXT, wait=0)
    updates = parse_csv(sf.bulk2.Tieout_Invoice__c.get_successful_records(again["job_id"]))
    assert {row["sf__Created"] for row in updates} == {"false"}
    assert sf_sandbox.records(INVOICE)["INV-0000000"]["Tieout_Amount__c"] == Decimal("250.00")
    assert sf_sandbox.record_count(INVOICE) == 5_000


def test_bulk_records_argument_and_relationship_columns(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    sf_sandbox.seed("Account", [{"Name": "Acme", "Tieout_Customer_Id__c": "C-1"}])
    records = [
        {EXT: "PAY-1", "Tieout_Account__r.Tieout_Customer_Id__c": "C-1", "Tieout_Amount__c": "5"},
        {EXT: "PAY-2", "Tieout_Account__r.Tieout_Customer_Id__c": "C-2", "Tieout_Amount__c": "6"},
    ]
    [result] = sf.bulk2.Tieout_Payment__c.upsert(records=records, external_id_field=EXT, wait=0)

    assert result["numberRecordsFailed"] == 1
    failed = parse_csv(sf.bulk2.Tieout_Payment__c.get_failed_records(result["job_id"]))
    assert failed[0][EXT] == "PAY-2"
    assert failed[0]["sf__Error"] == (
        "INVALID_FIELD:Foreign key external ID: C-2 not found for field Tieout_Customer_Id__c "
        "in entity Account:Tieout_Account__c --"
    )
    account_id = sf_sandbox.records("Account")["C-1"]["Id"]
    assert sf_sandbox.records("Tieout_Payment__c")["PAY-1"]["Tieout_Account__c"] == account_id


def test_bulk_row_errors_fail_only_their_rows(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    sf_sandbox.seed(INVOICE, [{EXT: "INV-0000001"}, {EXT: "INV-0000001"}])
    rows = invoice_rows(4)
    rows[1][0] = "INV-0000001"  # ambiguous external id (seeded twice)
    rows[2][3] = "2024-13-45"  # not a date
    rows[3][2] = "N" * 81  # longer than the field
    path = write_csv(tmp_path / "bad.csv", INVOICE_COLUMNS, rows)

    [result] = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (4, 3)
    errors = [
        row["sf__Error"]
        for row in parse_csv(sf.bulk2.Tieout_Invoice__c.get_failed_records(result["job_id"]))
    ]
    assert errors[0].startswith("DUPLICATE_EXTERNAL_ID:Tieout External Id: more than one record")
    assert errors[1] == (
        "INVALID_FIELD:Failed to deserialize field at col 4. Due to, '2024-13-45' is not a "
        "valid value for the type xsd:date:Tieout_Invoice_Date__c --"
    )
    assert errors[2].startswith("STRING_TOO_LONG:Invoice Number: data value too large")


def test_a_parent_key_matching_several_records_fails_the_child_on_both_paths(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    """Naming the parent by an ambiguous external id is DUPLICATE_EXTERNAL_ID for the child
    (not "not found"); children naming a unique parent still load."""
    ids = sf_sandbox.seed(
        "Account",
        [
            {"Name": "Acme", "Tieout_Customer_Id__c": "C-1"},
            {"Name": "Acme (dup)", "Tieout_Customer_Id__c": "C-1"},
            {"Name": "Other", "Tieout_Customer_Id__c": "C-2"},
        ],
    )
    message = (
        f"Tieout Customer Id: more than one record found for external id field: "
        f"[{ids[0]}, {ids[1]}]"
    )

    results = upsert_invoices(
        sf,
        [
            invoice("INV-1", Tieout_Account__r={"Tieout_Customer_Id__c": "C-1"}),
            invoice("INV-2", Tieout_Account__r={"Tieout_Customer_Id__c": "C-2"}),
        ],
    )
    assert results[0]["success"] is False
    assert results[0]["errors"] == [
        {"statusCode": "DUPLICATE_EXTERNAL_ID", "message": message, "fields": ["Tieout_Account__c"]}
    ]
    assert results[1]["success"] is True

    records = [
        {EXT: "PAY-1", "Tieout_Account__r.Tieout_Customer_Id__c": "C-1", "Tieout_Amount__c": "5"},
        {EXT: "PAY-2", "Tieout_Account__r.Tieout_Customer_Id__c": "C-2", "Tieout_Amount__c": "6"},
    ]
    [result] = sf.bulk2.Tieout_Payment__c.upsert(records=records, external_id_field=EXT, wait=0)
    failed = parse_csv(sf.bulk2.Tieout_Payment__c.get_failed_records(result["job_id"]))
    assert [(row[EXT], row["sf__Error"]) for row in failed] == [
        ("PAY-1", f"DUPLICATE_EXTERNAL_ID:{message}:Tieout_Account__c --")
    ]

    assert set(sf_sandbox.records(INVOICE)) == {"INV-2"}
    assert set(sf_sandbox.records("Tieout_Payment__c")) == {"PAY-2"}
    assert sf_sandbox.records("Tieout_Payment__c")["PAY-2"]["Tieout_Account__c"] == ids[2]


def test_bulk_empty_cell_leaves_a_field_and_na_clears_it(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    first = [
        {EXT: "INV-1", "Tieout_Invoice_Number__c": "N-1", "Tieout_Amount__c": "5",
         "Tieout_Due_Date__c": "2024-02-14", "Tieout_Status__c": "Open"},
        {EXT: "INV-2", "Tieout_Invoice_Number__c": "N-2", "Tieout_Amount__c": "6",
         "Tieout_Due_Date__c": "2024-02-15", "Tieout_Status__c": "Open"},
    ]  # fmt: skip
    sf.bulk2.Tieout_Invoice__c.upsert(records=first, external_id_field=EXT, wait=0)

    second = [
        {EXT: "INV-1", "Tieout_Invoice_Number__c": "", "Tieout_Amount__c": "#N/A",
         "Tieout_Due_Date__c": "", "Tieout_Status__c": "Paid"},
        {EXT: "INV-2", "Tieout_Invoice_Number__c": "#N/A", "Tieout_Amount__c": "",
         "Tieout_Due_Date__c": "#N/A", "Tieout_Status__c": "Paid"},
        {EXT: "INV-3", "Tieout_Invoice_Number__c": "", "Tieout_Amount__c": "#N/A",
         "Tieout_Due_Date__c": "2024-03-01", "Tieout_Status__c": "Draft"},
    ]  # fmt: skip
    [result] = sf.bulk2.Tieout_Invoice__c.upsert(records=second, external_id_field=EXT, wait=0)
    assert result["numberRecordsFailed"] == 0

    stored = sf_sandbox.records(INVOICE)
    one, two, three = stored["INV-1"], stored["INV-2"], stored["INV-3"]
    # Empty cells left the old values; #N/A cleared them; the other columns were written.
    assert (one["Tieout_Invoice_Number__c"], one["Tieout_Due_Date__c"].isoformat()) == (
        "N-1",
        "2024-02-14",
    )
    assert one.get("Tieout_Amount__c") is None
    assert two["Tieout_Amount__c"] == Decimal("6.00")
    assert two.get("Tieout_Invoice_Number__c") is None
    assert two.get("Tieout_Due_Date__c") is None
    assert (one["Tieout_Status__c"], two["Tieout_Status__c"]) == ("Paid", "Paid")
    # On insert both leave the field unset.
    assert three.get("Tieout_Invoice_Number__c") is None
    assert three.get("Tieout_Amount__c") is None
    assert three["Tieout_Status__c"] == "Draft"


def test_bulk_half_failed_job_lists_the_failed_rows(
    sf: Salesforce, sf_sandbox: SalesforceSandbox
) -> None:
    fault = sf_sandbox.inject(FaultKind.BULK_PARTIAL_FAILURE, sobject=INVOICE)
    records = [dict(zip(INVOICE_COLUMNS, row, strict=True)) for row in invoice_rows(1_000)]

    [result] = sf.bulk2.Tieout_Invoice__c.upsert(records=records, external_id_field=EXT, wait=0)

    assert fault.triggered == 1
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (1_000, 500)
    failed = parse_csv(sf.bulk2.Tieout_Invoice__c.get_failed_records(result["job_id"]))
    assert [row[EXT] for row in failed] == [f"INV-{i:07d}" for i in range(1, 1_000, 2)]
    assert {row["sf__Error"].split(":")[0] for row in failed} == {"UNABLE_TO_LOCK_ROW"}
    assert set(sf_sandbox.records(INVOICE)) == {f"INV-{i:07d}" for i in range(0, 1_000, 2)}

    # The fault fired once: a retry of the failed rows goes through.
    retry = [{k: v for k, v in row.items() if not k.startswith("sf__")} for row in failed]
    [again] = sf.bulk2.Tieout_Invoice__c.upsert(records=retry, external_id_field=EXT, wait=0)
    assert again["numberRecordsFailed"] == 0
    assert sf_sandbox.record_count(INVOICE) == 1_000


def test_bulk_job_with_unprocessed_rows_fails(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    sf_sandbox.inject(FaultKind.BULK_UNPROCESSED, processed_fraction=0.4)
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(1_000))

    with pytest.raises(SalesforceOperationError, match="Max retry attempts exceeded"):
        sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)

    # simple-salesforce's exception has no job id; the job list (a real endpoint) does.
    [job] = sf.restful("jobs/ingest")["records"]
    assert (job["state"], job["numberRecordsProcessed"]) == ("Failed", 400)
    unprocessed = parse_csv(sf.bulk2.Tieout_Invoice__c.get_unprocessed_records(job["id"]))
    assert [row[EXT] for row in unprocessed] == [f"INV-{i:07d}" for i in range(400, 1_000)]
    assert len(parse_csv(sf.bulk2.Tieout_Invoice__c.get_successful_records(job["id"]))) == 400
    assert sf_sandbox.record_count(INVOICE) == 400


def test_bulk_job_with_an_unknown_column_fails_whole(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "bad.csv", [EXT, "Tieout_Nope__c"], [["INV-1", "x"]])
    with pytest.raises(SalesforceOperationError, match="Field name not found : Tieout_Nope__c"):
        sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
    assert sf_sandbox.jobs()[0]["state"] == "Failed"


def test_bulk_upload_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    with SalesforceSandbox(max_upload_bytes=10_000) as sandbox:
        sf = sandbox_client(sandbox)
        path = write_csv(tmp_path / "big.csv", INVOICE_COLUMNS, invoice_rows(500))
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
        assert exc.value.content[0]["errorCode"] == "CLIENTINPUTERROR"
        # simple-salesforce aborts the job it could not fill.
        assert sandbox.jobs()[0]["state"] == "Aborted"
        assert sandbox.record_count(INVOICE) == 0


def test_bulk_status_polls_can_see_in_progress(tmp_path: Path) -> None:
    with SalesforceSandbox(bulk_processing="sync", bulk_in_progress_polls=2) as sandbox:
        sf = sandbox_client(sandbox)
        path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(10))
        [result] = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
        assert result["numberRecordsProcessed"] == 10
        polls = [r for r in sandbox.request_log if r.operation is Operation.BULK_JOB_INFO]
        assert len(polls) >= 3  # 2 InProgress before the JobComplete one


# --------------------------------------------------------------------------- faults


def test_request_limit_and_outage_surface_as_client_exceptions(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    sf_sandbox.inject(FaultKind.REQUEST_LIMIT_EXCEEDED, operation=Operation.COLLECTIONS_UPSERT)
    with pytest.raises(SalesforceRefusedRequest) as limited:
        upsert_invoices(sf, [invoice("INV-1")])
    assert limited.value.status == 403
    assert limited.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert upsert_invoices(sf, [invoice("INV-1")])[0]["success"] is True  # times=1: used up

    sf_sandbox.inject(FaultKind.SERVICE_UNAVAILABLE, operation=Operation.DESCRIBE)
    with pytest.raises(SalesforceGeneralError) as outage:
        sf.Account.describe()
    assert outage.value.status == 503

    sf_sandbox.inject(FaultKind.REQUEST_LIMIT_EXCEEDED, operation=Operation.BULK_CREATE_JOB)
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(3))
    with pytest.raises(SalesforceRefusedRequest):
        sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)


def test_login_outage_is_an_authentication_failure(sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.inject(FaultKind.SERVICE_UNAVAILABLE, operation=Operation.LOGIN)
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        sandbox_client(sf_sandbox, "oauth_password")
    assert exc.value.code == 503
    assert sandbox_client(sf_sandbox, "oauth_password").Account.describe()


@pytest.mark.parametrize(
    "kind",
    [
        FaultKind.REQUEST_LIMIT_EXCEEDED,
        FaultKind.SESSION_EXPIRED,
        FaultKind.BULK_PARTIAL_FAILURE,
        FaultKind.BULK_UNPROCESSED,
    ],
)
def test_a_login_fault_that_could_never_fire_is_refused(
    sf_sandbox: SalesforceSandbox, kind: FaultKind
) -> None:
    with pytest.raises(ValueError, match=r"at login|job processing"):
        sf_sandbox.inject(kind, operation=Operation.LOGIN)
    assert sf_sandbox.faults.active() == []


def test_expired_session_raises_then_a_new_login_works(sf_sandbox: SalesforceSandbox) -> None:
    direct = sandbox_client(sf_sandbox, "direct")  # a bare token: no automatic re-login
    sf_sandbox.expire_sessions()

    with pytest.raises(SalesforceExpiredSession) as exc:
        direct.Account.describe()
    assert exc.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]

    token, instance_url = fetch_token(sf_sandbox)
    relogged = Salesforce(
        instance_url=instance_url, session_id=token, session=sandbox_session(sf_sandbox)
    )
    assert relogged.Account.describe()["name"] == "Account"


def test_clients_with_credentials_relogin_on_expiry_but_bulk2_does_not(
    sf: Salesforce, sf_sandbox: SalesforceSandbox, tmp_path: Path
) -> None:
    sf_sandbox.inject(FaultKind.SESSION_EXPIRED, operation=Operation.DESCRIBE)
    assert sf.Account.describe()["name"] == "Account"  # 401, re-login, retry: transparent
    assert sf_sandbox.counters["logins"] == 2

    # sf.bulk2 copies the token when accessed and never re-logs in.
    bulk = sf.bulk2
    sf_sandbox.expire_sessions()
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, invoice_rows(3))
    with pytest.raises(SalesforceExpiredSession):
        bulk.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
    sf.Account.describe()  # any REST call refreshes the session...
    [result] = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
    assert result["numberRecordsProcessed"] == 3  # ...and a fresh sf.bulk2 uses it


def test_latency_and_request_log(sf: Salesforce, sf_sandbox: SalesforceSandbox) -> None:
    sf_sandbox.inject(FaultKind.LATENCY, seconds=0.3, operation=Operation.DESCRIBE)
    started = time.perf_counter()
    sf.Account.describe()
    assert time.perf_counter() - started >= 0.3

    upsert_invoices(sf, [invoice("INV-1"), invoice("INV-2")])
    last = sf_sandbox.request_log[-1]
    assert (last.method, last.status, last.operation, last.sobject, last.records) == (
        "PATCH",
        200,
        Operation.COLLECTIONS_UPSERT,
        INVOICE,
        2,
    )
    assert sf_sandbox.counters["rows_created"] == 2
    # Nothing secret is kept or shown.
    creds = sf_sandbox.credentials
    dumped = repr(sf_sandbox.request_log) + repr(creds)
    for secret in (creds.password, creds.security_token, creds.consumer_secret, sf.session_id):
        assert secret not in dumped


# --------------------------------------------------------------------------- scale & CLI


def test_bulk_throughput_200k_rows(tmp_path: Path) -> None:
    """Not a timed assertion (shared CI cores vary); prints rows/s for a human to read."""
    rows = invoice_rows(200_000)
    path = write_csv(tmp_path / "invoices.csv", INVOICE_COLUMNS, rows)
    with SalesforceSandbox(bulk_processing="sync") as sandbox:
        sf = sandbox_client(sandbox)
        started = time.perf_counter()
        results = sf.bulk2.Tieout_Invoice__c.upsert(csv_file=path, external_id_field=EXT, wait=0)
        elapsed = time.perf_counter() - started
        assert sum(r["numberRecordsProcessed"] for r in results) == 200_000
        assert sum(r["numberRecordsFailed"] for r in results) == 0
        assert sandbox.record_count(INVOICE) == 200_000
    print(f"\nbulk 2.0 upsert: 200,000 rows in {elapsed:.1f}s = {200_000 / elapsed:,.0f} rows/s")


def test_standalone_server_prints_how_to_connect() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tieout.sandbox.salesforce"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("Ctrl-C"):
                break
            key, _, value = line.strip().partition("  ")
            info[key.strip()] = value.strip().split("   ")[0]
        session = requests.Session()
        session.verify = info["ca_bundle"]
        session.trust_env = False
        sf = Salesforce(
            username=info["username"],
            password=info["password"],
            security_token=info["security_token"],
            domain=info["login domain"],
            session=session,
        )
        assert sf.Account.describe()["name"] == "Account"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped" in out
