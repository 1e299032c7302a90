"""tieout's poster through the real netsuitesdk/zeep client against the SOAP sandbox."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.erp.conftest import assert_renders_like_zeep, entry, make_settings, varied_entries
from tieout.connectors.ledger import CONFIRMED, FAILED, PostingLedger
from tieout.connectors.netsuite import NetSuiteTarget
from tieout.erp.journals import JournalLine
from tieout.erp.plan import StalePlanError, apply_plan, make_plan
from tieout.posting import apply_posting
from tieout.sandbox.netsuite import FaultKind, NetSuiteSandbox
from tieout.settings import Settings

pytestmark = pytest.mark.usefixtures("credentials")
DAY = date(2026, 3, 10)


def plan_for(entries, ledger: PostingLedger, mode: str = "adjust"):  # type: ignore[no-untyped-def]
    rows = ledger.rows("netsuite", base_ids=[e.external_id for e in entries])
    return make_plan(
        entries, list(rows.values()), system="netsuite", start=DAY, end=DAY, as_of=DAY,
        update_mode=mode, split_clearing="13",
    )  # fmt: skip


def post(settings: Settings, entries, ledger: PostingLedger, mode: str = "adjust"):  # type: ignore[no-untyped-def]
    plan = plan_for(entries, ledger, mode)
    target = NetSuiteTarget(settings.erp.netsuite)  # type: ignore[arg-type]
    return plan, apply_posting(settings, plan, ledger, target)


def stored(sb: NetSuiteSandbox) -> dict[str, dict]:  # type: ignore[type-arg]
    return sb.records("journalEntry")


def balanced(record: dict) -> bool:  # type: ignore[type-arg]
    lines = record["lineList"]["line"]
    debit = sum((x.get("debit") or Decimal(0) for x in lines), Decimal(0))
    credit = sum((x.get("credit") or Decimal(0) for x in lines), Decimal(0))
    return debit == credit


def test_posting_twice_leaves_one_record_each(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox)
    entries = [entry(i) for i in range(5)]
    plan, result = post(settings, entries, ledger)
    assert plan.counts()["create"] == 5
    assert sorted(result.confirmed) == sorted(e.external_id for e in entries)
    records = stored(sandbox)
    assert sorted(records) == sorted(e.external_id for e in entries)
    assert all(balanced(r) for r in records.values())
    rec = records["tieout-test-0001"]
    assert next(x.get("credit") for x in rec["lineList"]["line"]) == Decimal("10.00")
    # Again: nothing to do, nothing sent.
    sandbox.clear_requests()
    plan2, _result2 = post(settings, entries, ledger)
    assert plan2.entries == []
    assert plan2.unchanged == sorted(e.external_id for e in entries)
    assert [r for r in sandbox.requests if r.operation == "upsertList"] == []
    assert len(stored(sandbox)) == 5
    rows = ledger.rows("netsuite")
    assert {r.status for r in rows.values()} == {CONFIRMED}
    assert all(r.internal_id for r in rows.values())


def test_changed_source_posts_an_adjusting_entry_and_keeps_history(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox)
    original = entry(1, amount=1000)
    post(settings, [original], ledger)
    changed = entry(1, amount=1250)
    plan, _result = post(settings, [changed], ledger)
    assert [p.action for p in plan.entries] == ["adjust"]
    records = stored(sandbox)
    assert set(records) == {"tieout-test-0001", "tieout-test-0001-adj1"}
    adj = records["tieout-test-0001-adj1"]
    assert balanced(adj)
    amounts = sorted(
        (x.get("debit") or Decimal(0), x.get("credit") or Decimal(0))
        for x in adj["lineList"]["line"]
    )
    assert amounts == [(Decimal(0), Decimal("2.50")), (Decimal("2.50"), Decimal(0))]
    # The original is untouched: history is not rewritten.
    first = records["tieout-test-0001"]["lineList"]["line"][0]
    assert first["credit"] == Decimal("10.00")
    # Re-running with the same changed source does nothing more.
    plan2, _ = post(settings, [changed], ledger)
    assert plan2.entries == []


def test_update_mode_rewrites_in_place(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox, update_mode="update")
    post(settings, [entry(1, amount=1000)], ledger, "update")
    internal = ledger.rows("netsuite")["tieout-test-0001"].internal_id
    plan, _ = post(settings, [entry(1, amount=1300)], ledger, "update")
    assert [p.action for p in plan.entries] == ["update"]
    records = stored(sandbox)
    assert set(records) == {"tieout-test-0001"}
    assert records["tieout-test-0001"]["lineList"]["line"][0]["credit"] == Decimal("13.00")
    assert ledger.rows("netsuite")["tieout-test-0001"].internal_id == internal


def test_a_record_refused_inside_a_list_does_not_fail_the_others(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox)
    sandbox.inject(
        FaultKind.RECORD_ERROR, external_ids=["tieout-test-0002"], code="INVALID_KEY_OR_REF",
        message="Invalid account reference key 99.",
    )  # fmt: skip
    entries = [entry(i) for i in range(4)]
    _, result = post(settings, entries, ledger)
    assert "tieout-test-0002" in result.failed
    assert "INVALID_KEY_OR_REF" in result.failed["tieout-test-0002"]
    assert sorted(stored(sandbox)) == ["tieout-test-0000", "tieout-test-0001", "tieout-test-0003"]
    row = ledger.rows("netsuite")["tieout-test-0002"]
    assert row.status == FAILED
    assert "Invalid account" in (row.last_error or "")
    # The next run retries just that one.
    plan, result = post(settings, entries, ledger)
    assert [(p.action, p.entry.external_id) for p in plan.entries] == [
        ("retry", "tieout-test-0002")
    ]
    assert result.confirmed == ["tieout-test-0002"]
    assert len(stored(sandbox)) == 4


def test_unbalanced_entry_is_refused_by_netsuite_and_reported(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    make_settings(tmp_path, sandbox)
    bad = entry(7)
    bad = replace(bad, lines=(*bad.lines, JournalLine.net("6", 1, "stray")))
    plan = plan_for([bad, entry(8)], ledger)
    assert plan.problems
    assert "differ by 1" in plan.problems[0]
    assert [p.entry.external_id for p in plan.entries] == ["tieout-test-0008"]


@pytest.mark.parametrize(
    "kind",
    [
        FaultKind.CONCURRENCY_LIMIT,
        FaultKind.CONCURRENT_SESSION,
        FaultKind.HTTP_503,
        FaultKind.HTTP_429,
        FaultKind.TIMEOUT_AFTER_COMMIT,
        FaultKind.DISCONNECT_AFTER_COMMIT,
    ],
)
def test_every_injected_fault_is_retried_to_exactly_one_record_each(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger, kind: FaultKind
) -> None:
    settings = make_settings(tmp_path, sandbox, timeout_seconds=0.5, batch_size=3)
    options = {"hang_seconds": 1.5} if kind == FaultKind.TIMEOUT_AFTER_COMMIT else {}
    sandbox.inject(kind, times=2, operation="upsertList", **options)
    entries = [entry(i) for i in range(6)]
    _, result = post(settings, entries, ledger)
    assert sorted(result.confirmed) == sorted(e.external_id for e in entries)
    assert result.failed == {}
    assert result.unresolved == {}
    assert sorted(stored(sandbox)) == sorted(e.external_id for e in entries)
    assert sandbox.pending_faults == []  # both injections fired
    if kind in (FaultKind.TIMEOUT_AFTER_COMMIT, FaultKind.DISCONNECT_AFTER_COMMIT):
        assert result.read_back > 0  # the unknown outcome was read back before any resend
        gets = [r for r in sandbox.requests if r.operation == "getList"]
        assert gets
    assert {r.status for r in ledger.rows("netsuite").values()} == {CONFIRMED}


def test_batches_stay_within_200_and_concurrency_within_the_setting(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox, concurrency=2)
    sandbox.latency = 0.05
    entries = [entry(i) for i in range(450)]
    _, result = post(settings, entries, ledger)
    assert len(result.confirmed) == 450
    upserts = [r for r in sandbox.requests if r.operation == "upsertList"]
    assert [r.record_count for r in upserts]
    assert max(r.record_count for r in upserts) <= 200
    assert sum(r.record_count for r in upserts) == 450
    assert sandbox.max_concurrent <= 2


def test_a_plan_made_before_another_posting_is_refused(
    tmp_path: Path, sandbox: NetSuiteSandbox, ledger: PostingLedger
) -> None:
    settings = make_settings(tmp_path, sandbox)
    post(settings, [entry(1, amount=1000)], ledger)
    stale = plan_for([entry(1, amount=1100)], ledger)
    post(settings, [entry(1, amount=1200)], ledger)  # someone else adjusted meanwhile
    target = NetSuiteTarget(settings.erp.netsuite)  # type: ignore[arg-type]
    with pytest.raises(StalePlanError, match="plan` again"):
        apply_plan(stale, ledger, target)


def test_answers_read_with_lxml_agree_with_zeep(tmp_path: Path, sandbox: NetSuiteSandbox) -> None:
    """The poster reads a well-formed upsertList answer with lxml and leaves everything else to
    zeep; on real answers (successes and a refused record) both readings agree."""
    from tieout.connectors.netsuite import (
        WriteStatus,
        _status_error,
        journal_record,
        write_statuses,
    )

    settings = make_settings(tmp_path, sandbox)
    sandbox.inject(
        FaultKind.RECORD_ERROR, external_ids=["tieout-test-0001"], code="INVALID_KEY_OR_REF",
        message="Invalid account reference key 99.",
    )  # fmt: skip
    target = NetSuiteTarget(settings.erp.netsuite)  # type: ignore[arg-type]
    client = target._client()
    ns = settings.erp.netsuite
    assert ns is not None
    records = [journal_record(client, entry(i), ns.currencies) for i in range(3)]
    with client._client.settings(raw_response=True):
        answer = client.request("upsertList", record=records)
    binding = client._service_proxy._binding
    by_zeep = binding.process_reply(client._client, binding.get("upsertList"), answer)
    expected = [
        WriteStatus(
            bool(i.status.isSuccess),
            str(i.baseRef.internalId or "") if i.baseRef is not None else "",
            *_status_error(i.status),
        )
        for i in by_zeep.body.writeResponseList.writeResponse
    ]
    fast = write_statuses(answer.content)
    assert fast == expected
    assert [s.ok for s in fast] == [True, False, True]
    assert fast[1].code == "INVALID_KEY_OR_REF"
    assert "reference key 99" in fast[1].message
    # Not the expected shape: left to zeep (which raises a fault, or reads what it can).
    fault = (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body><soapenv:Fault><faultcode>soapenv:Server.userException</faultcode>"
        b"<faultstring>WS_REQUEST_BLOCKED</faultstring></soapenv:Fault></soapenv:Body>"
        b"</soapenv:Envelope>"
    )
    assert write_statuses(fault) is None
    assert write_statuses(b"<html>503 Service Unavailable</html>") is None
    assert write_statuses(b"not xml at all") is None
    no_id = answer.content.replace(b'internalId="', b'internalIdX="')
    assert write_statuses(no_id) is None
    tag = b"<platformMsgs:writeResponse>"
    assert answer.content.count(tag) == 3
    commented = answer.content.replace(tag, tag + b"<!-- a comment -->")
    assert write_statuses(commented) == expected


def test_journal_entries_render_as_zeep_renders_them(
    tmp_path: Path, sandbox: NetSuiteSandbox, credentials: dict[str, str]
) -> None:
    """The poster renders journal entries itself (zeep's per-field rendering was most of
    its CPU); the request must be the one zeep would have sent, byte for byte."""
    settings = make_settings(tmp_path, sandbox)
    client = NetSuiteTarget(settings.erp.netsuite)._client()  # type: ignore[arg-type]
    assert_renders_like_zeep(client, varied_entries(300, seed=1) + [entry(i) for i in range(5)])


def test_a_wsdl_the_direct_renderer_does_not_cover_falls_back_to_zeep(
    tmp_path: Path, sandbox: NetSuiteSandbox, credentials: dict[str, str]
) -> None:
    """A JournalEntryLine with a required, nillable element tieout does not set: zeep
    renders it as nil, the direct renderer would leave it out, so zeep's renderer is used."""
    import shutil

    from lxml import etree  # type: ignore[import-untyped]

    from tieout.connectors.netsuite import _builder, journal_record
    from tieout.sandbox.netsuite.server import WSDL_DIR

    wsdl = tmp_path / "wsdl"
    shutil.copytree(WSDL_DIR, wsdl)
    xsd = wsdl / "transactions.general.xsd"
    text = xsd.read_text()
    optional = '<element name="line" type="xsd:long" minOccurs="0"/>'
    assert optional in text
    required = '<element name="line" type="xsd:long" nillable="true"/>'
    xsd.write_text(text.replace(optional, required))
    settings = make_settings(tmp_path, sandbox, wsdl_url=str(wsdl / "netsuite.wsdl"))
    ns = settings.erp.netsuite
    assert ns is not None
    client = NetSuiteTarget(ns)._client()
    assert _builder(client).direct is None
    record = journal_record(client, entry(1), ns.currencies)
    envelope = client._client.create_message(client._service_proxy, "upsertList", record=[record])
    ns_uri = "{urn:general_2023_2.transactions.webservices.netsuite.com}"
    lines = envelope.findall(f".//{ns_uri}lineList/{ns_uri}line")
    assert len(lines) == 2
    nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
    assert [x.find(f"{ns_uri}line").get(nil) for x in lines] == ["true", "true"], etree.tostring(
        lines[0]
    )


def test_the_poster_keeps_requests_on_the_wire_within_concurrency(
    tmp_path: Path, sandbox: NetSuiteSandbox, credentials: dict[str, str]
) -> None:
    """Threads beyond the setting build requests, but only `concurrency` are in flight."""
    settings = make_settings(tmp_path, sandbox, concurrency=1)
    sandbox.latency = 0.15
    target = NetSuiteTarget(settings.erp.netsuite)  # type: ignore[arg-type]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            barrier.wait()
            target.upsert([entry(10 * i + k) for k in range(3)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len([r for r in sandbox.requests if r.operation == "upsertList"]) == 4
    assert sandbox.max_concurrent == 1


def test_the_request_declares_each_namespace_once(
    tmp_path: Path, sandbox: NetSuiteSandbox, credentials: dict[str, str]
) -> None:
    """The client declares the journal entry's namespace and xsi on the envelope, so records
    do not redeclare them field by field (a sixth of a request's bytes otherwise)."""
    from lxml import etree  # type: ignore[import-untyped]

    from tieout.connectors.netsuite import _builder, request_bytes

    settings = make_settings(tmp_path, sandbox)
    client = NetSuiteTarget(settings.erp.netsuite)._client()  # type: ignore[arg-type]
    builder = _builder(client)
    records = [builder.journal_entry(e, "1") for e in varied_entries(20, seed=3)]
    rendered = client._client.create_message(client._service_proxy, "upsertList", record=records)
    sent = request_bytes(rendered)
    text, envelope = sent.decode(), etree.fromstring(sent)
    tran = "urn:general_2023_2.transactions.webservices.netsuite.com"
    assert len(envelope.findall(f".//{{{tran}}}line")) > 20
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    assert text.count(f'="{tran}"') == 1
    assert text.count(f'="{xsi}"') == 1
    assert envelope.nsmap.get("xsi") == xsi
    assert tran in envelope.nsmap.values()
    # Nothing below the envelope declares a namespace of its own for these records.
    for element in envelope.iter(f"{{{tran}}}*"):
        assert tran not in {uri for p, uri in element.nsmap.items() if envelope.nsmap.get(p) != uri}


@pytest.mark.parametrize(
    "spoil",
    [
        lambda e: replace(e, memo="bell \x07 memo"),
        lambda e: replace(e, memo="not a character \ufffe"),
        lambda e: replace(e, subsidiary="1\x00"),  # an attribute
        lambda e: replace(
            e, lines=(replace(e.lines[0], memo="lone \ud800 surrogate"), *e.lines[1:])
        ),
        lambda e: replace(e, lines=(*e.lines[:-1], replace(e.lines[-1], department="\x1f"))),
    ],
    ids=["memo", "ufffe", "reference", "line-memo", "line-reference"],
)
def test_text_xml_cannot_carry_is_refused_naming_the_entry(
    tmp_path: Path, sandbox: NetSuiteSandbox, credentials: dict[str, str], spoil: Any
) -> None:
    """A control character, U+FFFE/U+FFFF or a lone surrogate cannot travel in XML 1.0
    (zeep's lxml refuses them too): the error names the entry, wherever the character sits in
    it and wherever the entry sits in the request."""
    from tieout.connectors.netsuite import journal_records

    settings = make_settings(tmp_path, sandbox)
    client = NetSuiteTarget(settings.erp.netsuite)._client()  # type: ignore[arg-type]
    bad = spoil(entry(2))
    with pytest.raises(ValueError, match=r"tieout-test-0002.*XML cannot carry"):
        journal_records(client, [entry(1), bad, entry(3)], {"USD": "1"})
