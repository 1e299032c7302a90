"""The Salesforce connector's own pieces: CSV chunks under the upload limit that never split a
row, the successful-results reader, the JWT bearer login and the CA bundle setting."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tieout.connectors.salesforce import (
    SalesforceRecord,
    SalesforceTarget,
    make_client,
    split_csv,
    success_ids,
    to_csv,
)
from tieout.errors import ConfigError
from tieout.sandbox.salesforce import SalesforceSandbox
from tieout.settings import SalesforceSettings, settings_from_mapping


def record(i: int, product: str = "plan") -> SalesforceRecord:
    return SalesforceRecord(
        "schedules", "Tieout_Revenue_Schedule__c", "Tieout_External_Id__c", f"rs-{i:05d}",
        {"Tieout_Product__c": product, "Tieout_Recognized_Amount__c": f"{i}.50",
         "CurrencyIsoCode": "USD"},
    )  # fmt: skip


def test_csv_chunks_stay_under_the_limit_repeat_the_header_and_keep_rows_whole() -> None:
    records = [record(i, 'multi\nline, "quoted"' if i % 7 == 0 else "plan") for i in range(500)]
    _columns, text = to_csv(records)
    chunks = split_csv(text, 4_000, len(records))
    assert len(chunks) >= 3
    header = text.partition("\n")[0]
    keys: list[str] = []
    for rows, chunk in chunks:
        assert len(chunk.encode()) <= 4_000
        assert chunk.startswith(header + "\n")
        parsed = list(csv.DictReader(io.StringIO(chunk)))
        assert len(parsed) == rows  # the count simple-salesforce is told is the real one
        keys += [r["Tieout_External_Id__c"] for r in parsed]
    assert keys == [r.key for r in records]  # nothing lost, nothing doubled, in order
    assert split_csv(text, 10_000_000, len(records)) == [(len(records), text)]


def test_successful_results_are_read_the_same_fast_or_through_csv() -> None:
    plain = (
        '"sf__Id","sf__Created","Tieout_External_Id__c","Name"\n'
        '"a0A000000000001AAA","true","rs-1","x"\n'
        '"a0A000000000002AAA","false","rs-2","y, z"\n'
    )
    assert success_ids(plain, "Tieout_External_Id__c") == [
        ("rs-1", "a0A000000000001AAA"),
        ("rs-2", "a0A000000000002AAA"),
    ]
    # A quote inside the key sends the whole text through csv: same answer, exactly parsed.
    odd = plain + '"a0A000000000003AAA","true","rs-""3""","q"\n'
    assert success_ids(odd, "Tieout_External_Id__c")[-1] == ('rs-"3"', "a0A000000000003AAA")
    # Columns in another order: csv, by header.
    other = '"Tieout_External_Id__c","sf__Id","sf__Created"\n"rs-9","a0A000000000009AAA","true"\n'
    assert success_ids(other, "Tieout_External_Id__c") == [("rs-9", "a0A000000000009AAA")]


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox() as sb:
        yield sb


def sf_settings(tmp_path: Path, **section: object) -> SalesforceSettings:
    settings = settings_from_mapping({"revenue": {"salesforce": section}}, tmp_path, "test")
    assert settings.revenue.salesforce is not None
    return settings.revenue.salesforce


def test_jwt_bearer_login_loads_through_the_real_client(
    tmp_path: Path, sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = sandbox.credentials
    monkeypatch.setenv("SALESFORCE_USERNAME", creds.username)
    monkeypatch.setenv("SALESFORCE_CONSUMER_KEY", creds.consumer_key)
    monkeypatch.setenv("SALESFORCE_PRIVATE_KEY_FILE", sandbox.jwt_private_key_file)
    settings = sf_settings(
        tmp_path, auth="jwt", instance_url=sandbox.login_domain, ca_bundle=sandbox.ca_bundle
    )
    target = SalesforceTarget(settings, base_dir=tmp_path)
    out = target.upsert([record(i) for i in range(3)])
    assert all(o.ok for o in out.values())
    assert sandbox.record_count("Tieout_Revenue_Schedule__c") == 3
    assert target.logins == 1


def test_a_ca_bundle_that_is_not_there_is_named(tmp_path: Path) -> None:
    settings = sf_settings(tmp_path, ca_bundle="missing-ca.pem")
    with pytest.raises(ConfigError, match=r"missing-ca\.pem"):
        make_client(settings, tmp_path)


@pytest.mark.parametrize("bulk", [False, True], ids=["collections", "bulk"])
def test_an_emptied_value_clears_the_field_whichever_path_loads_it(
    tmp_path: Path, sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    """Bulk CSV leaves a field alone on an empty cell; tieout sends `#N/A` (null) instead, so
    a value billing no longer has is cleared as sObject Collections' JSON null clears it."""
    creds = sandbox.credentials
    monkeypatch.setenv("SALESFORCE_USERNAME", creds.username)
    monkeypatch.setenv("SALESFORCE_PASSWORD", creds.password)
    monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", creds.security_token)
    settings = sf_settings(
        tmp_path, domain=sandbox.login_domain, ca_bundle=sandbox.ca_bundle, bulk_poll_seconds=0.05
    )
    objects = frozenset({"Tieout_Revenue_Schedule__c"}) if bulk else frozenset()
    target = SalesforceTarget(settings, base_dir=tmp_path, bulk_objects=objects)
    first = [record(0, "plan"), record(1, "plan")]
    assert all(o.ok for o in target.upsert(first).values())
    emptied = SalesforceRecord(
        "schedules", "Tieout_Revenue_Schedule__c", "Tieout_External_Id__c", "rs-00000",
        {"Tieout_Product__c": "", "Tieout_Recognized_Amount__c": "7.25", "CurrencyIsoCode": "USD"},
    )  # fmt: skip
    assert all(o.ok for o in target.upsert([emptied, record(1, "plan")]).values())
    loaded = sandbox.records("Tieout_Revenue_Schedule__c", "Tieout_External_Id__c")
    assert loaded["rs-00000"].get("Tieout_Product__c") is None
    assert str(loaded["rs-00000"]["Tieout_Recognized_Amount__c"]) == "7.25"
    assert loaded["rs-00001"]["Tieout_Product__c"] == "plan"
    assert target.bulk_jobs == (2 if bulk else 0)
