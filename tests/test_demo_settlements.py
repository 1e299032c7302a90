"""The demo settlement files: deterministic, parseable by tieout's own parsers, matching the demo
billing data except for the discrepancies the answer key lists, and tying out per batch."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tieout.connectors.settlements import adyen, braintree, check_controls, parse_file, paypal
from tieout.connectors.settlements import stripe as stripe_parser
from tieout.connectors.settlements.base import SettlementLine, batch_findings
from tieout.demo import DemoConfig, DemoData, PaymentRow, generate
from tieout.demo_settlements import (
    ANSWER_KEY_COLUMNS,
    AnswerKeyRow,
    SettlementDemo,
    generate_settlements,
    write_settlements,
)

START = date(2026, 3, 1)
#: Big and long enough that every gateway has refunds, chargebacks and reversals in billing.
CONFIG = DemoConfig(start=START, days=40, seed=3, customers=300)
GATEWAYS = ("stripe", "adyen", "paypal", "braintree")
SETTLED_KINDS = ("charge", "refund", "chargeback", "chargeback_reversal")
#: The reconciliation's exception kinds the demo injects. `missing_in_billing` covers both a
#: charge billing does not have (no payment_id) and a chargeback of a known charge billing never
#: recorded (payment_id is that charge).
KINDS = (
    "missing_in_gateway",
    "missing_in_billing",
    "amount_mismatch",
    "duplicate_settlement",
    "fee_variance",
    "payout_mismatch",
    "invoice_payment_mismatch",
)


@pytest.fixture(scope="module")
def billing() -> DemoData:
    return generate(CONFIG)


@pytest.fixture(scope="module")
def demo(billing: DemoData) -> SettlementDemo:
    return generate_settlements(billing)


# -- helpers -----------------------------------------------------------------------------------


def gateway_of(name: str) -> str:
    return name.split("/", 1)[0]


def lines_by_id(demo: SettlementDemo) -> dict[str, SettlementLine]:
    """Lines by id (a repeated id keeps its last line: see test_line_ids_are_unique)."""
    return {line.line_id: line for line in demo.all_lines()}


def answers(demo: SettlementDemo, kind: str) -> list[AnswerKeyRow]:
    return [a for a in demo.answer_key if a.kind == kind]


def billing_by_ref(data: DemoData) -> dict[tuple[str, str, str], PaymentRow]:
    """Succeeded billing payments by (gateway, kind, gateway reference)."""
    out: dict[tuple[str, str, str], PaymentRow] = {}
    for p in data.payments:
        if p["status"] != "succeeded" or p["kind"] not in SETTLED_KINDS:
            continue
        assert p["gateway_reference"] is not None
        key = (p["gateway"], p["kind"], p["gateway_reference"])
        assert key not in out, f"two succeeded billing payments share {key}"
        out[key] = p
    return out


def billing_payment(
    line: SettlementLine, by_ref: dict[tuple[str, str, str], PaymentRow]
) -> PaymentRow | None:
    """The billing payment a settlement line settles, found through the references only."""
    if line.category not in SETTLED_KINDS:
        return None
    ref = line.gateway_reference if line.category == "charge" else line.modification_reference
    return None if ref is None else by_ref.get((line.gateway, line.category, ref))


def payout_batch_nets(lines: Iterable[SettlementLine]) -> dict[tuple[str, str, str], int]:
    """Net of every (gateway, batch, currency) that holds a payout line, over all files."""
    nets: dict[tuple[str, str, str], int] = defaultdict(int)
    with_payout: set[tuple[str, str, str]] = set()
    for line in lines:
        key = (line.gateway, line.batch_id, line.currency)
        nets[key] += line.net_minor
        if line.category in ("payout", "payout_reversal"):
            with_payout.add(key)
    return {k: nets[k] for k in with_payout}


def mismatched_payout_batches(demo: SettlementDemo) -> set[tuple[str, str, str]]:
    by_id = lines_by_id(demo)
    out = set()
    for a in answers(demo, "payout_mismatch"):
        assert a.line_id is not None
        assert a.batch_id is not None
        line = by_id[a.line_id]
        assert line.category == "payout"
        assert (line.gateway, line.batch_id) == (a.gateway, a.batch_id)
        out.add((a.gateway, a.batch_id, line.currency))
    return out


def assert_files_parse_back(demo: SettlementDemo) -> None:
    assert list(demo.files) == sorted(demo.files)
    assert set(demo.lines) == set(demo.files)
    for name, blob in demo.files.items():
        parsed = parse_file(gateway_of(name), blob, name)
        assert parsed.lines == demo.lines[name], name
        for line in parsed.lines:
            assert line.gateway == gateway_of(name)
            assert line.source_file == name
            assert line.net_minor == line.gross_minor - line.fee_minor, line


def assert_batches_tie_out(demo: SettlementDemo) -> None:
    nets = payout_batch_nets(demo.all_lines())
    not_zero = {k for k, net in nets.items() if net != 0}
    assert not_zero == mismatched_payout_batches(demo)
    # The shared batch check agrees.
    findings = batch_findings(demo.all_lines(), "all")
    assert {(f.gateway, f.batch_id, f.currency) for f in findings} == not_zero


# -- determinism -------------------------------------------------------------------------------


def test_same_billing_data_gives_the_same_files_byte_for_byte(demo: SettlementDemo) -> None:
    again = generate_settlements(generate(CONFIG))
    assert again.files == demo.files
    assert again.answer_key == demo.answer_key
    assert again.lines == demo.lines
    assert again.answer_key_csv() == demo.answer_key_csv()


def test_another_seed_gives_other_files(demo: SettlementDemo) -> None:
    other = generate_settlements(generate(DemoConfig(start=START, days=40, seed=4, customers=300)))
    assert other.files != demo.files
    common = set(other.files) & set(demo.files)
    assert any(other.files[n] != demo.files[n] for n in common) or not common
    assert other.answer_key != demo.answer_key


# -- files and formats -------------------------------------------------------------------------


def test_every_file_parses_to_exactly_its_lines(demo: SettlementDemo) -> None:
    assert_files_parse_back(demo)


def test_line_ids_are_unique_across_all_files(demo: SettlementDemo) -> None:
    ids = Counter(line.line_id for line in demo.all_lines())
    assert [i for i, n in ids.items() if n > 1] == []


def test_every_gateway_delivers_files_in_its_own_formats(demo: SettlementDemo) -> None:
    formats: dict[str, set[str]] = defaultdict(set)
    for name, blob in demo.files.items():
        assert name.count("/") == 1, name
        assert gateway_of(name) in GATEWAYS, name
        formats[gateway_of(name)].add(parse_file(gateway_of(name), blob, name).format)
    assert formats == {
        "stripe": {stripe_parser.ITEMIZED_CSV},
        "adyen": {adyen.FORMAT},
        "paypal": {paypal.FORMAT_STL},
        "braintree": {braintree.FORMAT_FLAT, braintree.FORMAT_SUMMARY},
    }
    for gateway in GATEWAYS:
        assert any(demo.lines[n] for n in demo.files if gateway_of(n) == gateway), gateway
    names = list(demo.files)
    assert any(re.fullmatch(r"stripe/payout_reconciliation\..*\.csv", n) for n in names)
    assert any(re.fullmatch(r"adyen/settlement_detail_report_batch_\d+\.csv", n) for n in names)
    assert any(re.fullmatch(r"paypal/STL-\d{8}\.01\.009\.CSV", n) for n in names)
    assert any(re.fullmatch(r"braintree/transaction_level_fee_report_.*\.csv", n) for n in names)
    assert any(re.fullmatch(r"braintree/settlement_batch_summary_.*\.json", n) for n in names)


def test_braintree_batch_summaries_agree_with_the_fee_reports(demo: SettlementDemo) -> None:
    lines: list[SettlementLine] = []
    controls = []
    for name, blob in demo.files.items():
        if gateway_of(name) == "braintree":
            parsed = parse_file("braintree", blob, name)
            lines += parsed.lines
            controls += parsed.controls
    assert controls
    assert check_controls("braintree", controls, lines) == []


def test_every_gateway_settles_charges_and_the_payouts_carry_money(demo: SettlementDemo) -> None:
    cats = Counter((line.gateway, line.category) for line in demo.all_lines())
    for gateway in GATEWAYS:
        assert cats[(gateway, "charge")] > 0, gateway
    for gateway in ("stripe", "adyen", "paypal"):
        assert cats[(gateway, "payout")] > 0, gateway
    for line in demo.all_lines():
        if line.category == "payout" and line.gateway in ("stripe", "paypal"):
            assert line.gross_minor < 0  # paid out only when positive: money leaves the balance


# -- matching the billing data -------------------------------------------------------------------


def check_settled_lines_match(demo: SettlementDemo, data: DemoData) -> Counter[str]:
    """Every charge/refund/chargeback(/reversal) line settles a succeeded billing payment of its
    gateway, found by reference, except the ones the answer key says billing does not have.
    Returns how many lines of each category matched."""
    by_ref = billing_by_ref(data)
    # A duplicate twin settles a real billing payment too: it must match like any other line.
    unmatched = {a.line_id for a in demo.answer_key if a.kind == "missing_in_billing"}
    checked: Counter[str] = Counter()
    for line in demo.all_lines():
        if line.category not in SETTLED_KINDS or line.line_id in unmatched:
            continue
        p = billing_payment(line, by_ref)
        assert p is not None, f"{line.line_id} ({line.category}) matches no billing payment"
        assert p["gateway"] == line.gateway
        assert line.merchant_reference == p["invoice_id"]
        checked[line.category] += 1
    return checked


def check_discrepancy_lines(demo: SettlementDemo, data: DemoData) -> None:
    by_ref = billing_by_ref(data)
    by_id = lines_by_id(demo)
    payments = {p["payment_id"]: p for p in data.payments}
    unrecorded = [a for a in answers(demo, "missing_in_billing") if a.payment_id is not None]
    for a in answers(demo, "missing_in_billing"):
        if a.payment_id is not None:
            continue
        assert a.line_id is not None
        line = by_id[a.line_id]
        assert line.category == "charge"
        assert billing_payment(line, by_ref) is None
        refs = {line.gateway_reference, line.modification_reference} - {None}
        assert not refs & {p["gateway_reference"] for p in data.payments}
    for a in unrecorded:
        assert a.payment_id is not None
        assert a.line_id is not None
        line = by_id[a.line_id]
        assert line.category == "chargeback"
        assert billing_payment(line, by_ref) is None
        charge = payments[a.payment_id]
        assert charge["kind"] == "charge"
        assert charge["status"] == "succeeded"
        assert line.gateway_reference == charge["gateway_reference"]  # it names its charge
        assert line.gross_minor < 0
    for a in answers(demo, "duplicate_settlement"):
        assert a.payment_id is not None
        assert a.line_id is not None
        twin = by_id[a.line_id]
        p = billing_payment(twin, by_ref)
        assert p is not None
        assert p["payment_id"] == a.payment_id
        same = [ln for ln in demo.all_lines() if billing_payment(ln, by_ref) is p]
        assert len(same) == 2, same  # the original settlement and its twin


def check_settled_once(demo: SettlementDemo, data: DemoData) -> int:
    """Every succeeded billing payment has one line (two when duplicated, none when missing at
    the gateway or a Braintree dispute). Returns the number of Braintree disputes."""
    by_ref = billing_by_ref(data)
    duplicated = {a.payment_id for a in answers(demo, "duplicate_settlement")}
    missing = {a.payment_id for a in answers(demo, "missing_in_gateway")}
    assert not duplicated & missing
    settled: Counter[str] = Counter()
    for line in demo.all_lines():
        p = billing_payment(line, by_ref)
        if p is not None:
            settled[p["payment_id"]] += 1
    braintree_disputes = 0
    for p in by_ref.values():
        if p["gateway"] == "braintree" and p["kind"] in ("chargeback", "chargeback_reversal"):
            braintree_disputes += 1
            assert settled[p["payment_id"]] == 0  # the TLFR cannot carry disputes
        elif p["payment_id"] in missing:
            assert settled[p["payment_id"]] == 0
        elif p["payment_id"] in duplicated:
            assert settled[p["payment_id"]] == 2  # the settlement and its twin
        else:
            assert settled[p["payment_id"]] == 1, p
    for payment_id in missing:
        p = next(q for q in data.payments if q["payment_id"] == payment_id)
        assert p["status"] == "succeeded"
        assert p["kind"] in SETTLED_KINDS
    return braintree_disputes


def check_amounts(demo: SettlementDemo, data: DemoData) -> tuple[int, int]:
    """Settled amounts are the billed ones (the presentment amount under FX), except the
    amount mismatches. Returns (same-currency lines, FX lines) checked."""
    by_ref = billing_by_ref(data)
    mismatched = {a.line_id for a in answers(demo, "amount_mismatch")}
    fx = same = 0
    for line in demo.all_lines():
        p = billing_payment(line, by_ref)
        if p is None:
            continue
        sign = 1 if line.category in ("charge", "chargeback_reversal") else -1
        assert line.gross_minor * sign > 0, line
        if line.line_id in mismatched:
            continue
        if line.presentment_currency is None:
            assert line.currency == p["currency"], line
            assert abs(line.gross_minor) == p["amount_minor"], line
            assert line.presentment_amount_minor is None
            same += 1
        else:
            assert line.presentment_currency == p["currency"], line
            assert line.currency != p["currency"]
            assert line.presentment_amount_minor is not None
            assert abs(line.presentment_amount_minor) == p["amount_minor"], line
            assert line.presentment_amount_minor * sign > 0
            fx += 1
    return same, fx


def check_amount_mismatches(demo: SettlementDemo, data: DemoData) -> None:
    by_ref = billing_by_ref(data)
    by_id = lines_by_id(demo)
    for a in answers(demo, "amount_mismatch"):
        assert a.line_id is not None
        line = by_id[a.line_id]
        p = billing_payment(line, by_ref)
        assert p is not None
        assert p["payment_id"] == a.payment_id
        m = re.fullmatch(r"settled gross (-?\d+) ([A-Z]{3}) instead of (-?\d+)", a.detail)
        assert m is not None, a.detail
        assert int(m[1]) == line.gross_minor
        assert m[2] == line.currency
        assert int(m[3]) != line.gross_minor
        if line.currency == p["currency"]:
            assert abs(line.gross_minor) != p["amount_minor"]
            assert abs(int(m[3])) == p["amount_minor"]


def test_every_settled_line_matches_a_billing_payment(
    demo: SettlementDemo, billing: DemoData
) -> None:
    checked = check_settled_lines_match(demo, billing)
    assert all(checked[kind] > 0 for kind in SETTLED_KINDS), checked


def test_discrepancy_lines_match_no_billing_payment_of_their_own(
    demo: SettlementDemo, billing: DemoData
) -> None:
    check_discrepancy_lines(demo, billing)


def test_every_succeeded_billing_payment_is_settled_once(
    demo: SettlementDemo, billing: DemoData
) -> None:
    assert check_settled_once(demo, billing) > 0  # the config exercises the Braintree exception
    assert answers(demo, "duplicate_settlement")
    assert answers(demo, "missing_in_gateway")


def test_settled_amounts_are_the_billed_amounts(demo: SettlementDemo, billing: DemoData) -> None:
    same, fx = check_amounts(demo, billing)
    assert same > 0
    assert fx > 0


def test_amount_mismatches_differ_from_billing_as_the_key_says(
    demo: SettlementDemo, billing: DemoData
) -> None:
    assert answers(demo, "amount_mismatch")
    check_amount_mismatches(demo, billing)


# -- the answer key ------------------------------------------------------------------------------


def check_answer_key(demo: SettlementDemo, data: DemoData) -> None:
    by_id = lines_by_id(demo)
    payments = {p["payment_id"]: p for p in data.payments}
    invoices = {i["invoice_id"]: i for i in data.invoices}
    for a in demo.answer_key:
        assert a.kind in KINDS, a
        assert a.gateway in GATEWAYS, a
        assert (a.invoice_id is not None) == (a.kind == "invoice_payment_mismatch")
        if a.kind == "invoice_payment_mismatch":
            invoice = invoices[a.invoice_id or ""]
            assert invoice["status"] == "paid"
            notes = [c for c in data.credit_notes if c["invoice_id"] == a.invoice_id]
            assert notes
            assert a.payment_id is None
            assert a.line_id is None
            continue
        if a.kind == "missing_in_gateway":
            assert a.line_id is None
        else:
            assert a.line_id in by_id, a
            assert by_id[a.line_id].gateway == a.gateway
        if a.kind == "payout_mismatch" or (
            a.kind == "missing_in_billing" and by_id[a.line_id or ""].category == "charge"
        ):
            assert a.payment_id is None
        else:
            assert a.payment_id in payments, a
            assert payments[a.payment_id]["gateway"] == a.gateway
        assert (a.batch_id is not None) == (a.kind == "payout_mismatch")
        assert a.detail


def test_answer_key_names_existing_lines_and_payments(
    demo: SettlementDemo, billing: DemoData
) -> None:
    check_answer_key(demo, billing)
    assert {a.kind for a in demo.answer_key} == set(KINDS)
    # both flavours of missing_in_billing: an unknown charge and an unrecorded chargeback
    assert {a.payment_id is None for a in answers(demo, "missing_in_billing")} == {True, False}


def test_answer_key_csv(demo: SettlementDemo) -> None:
    rows = list(csv.reader(io.StringIO(demo.answer_key_csv().decode("utf-8"))))
    assert tuple(rows[0]) == ANSWER_KEY_COLUMNS
    assert rows[1:] == [
        [
            a.kind,
            a.gateway,
            a.payment_id or "",
            a.invoice_id or "",
            a.line_id or "",
            a.batch_id or "",
            a.detail,
        ]
        for a in demo.answer_key
    ]


def test_payout_mismatches_are_exactly_the_batches_not_netting_to_zero(
    demo: SettlementDemo,
) -> None:
    assert_batches_tie_out(demo)
    nets = payout_batch_nets(demo.all_lines())
    assert len(nets) > len(answers(demo, "payout_mismatch")) > 0
    for a in answers(demo, "payout_mismatch"):
        m = re.search(r"payout (-?\d+) ([A-Z]{3}) but .* net(?:s)? to (-?\d+)", a.detail)
        assert m is not None, a.detail
        line = lines_by_id(demo)[a.line_id or ""]
        assert int(m[1]) == -line.gross_minor
        assert m[2] == line.currency
        assert nets[(a.gateway, a.batch_id or "", line.currency)] == int(m[3]) - int(m[1])


def test_each_discrepancy_has_its_own_line() -> None:
    demo = generate_settlements(generate(DemoConfig(start=START, days=30, customers=60)))
    line_ids = [a.line_id for a in demo.answer_key if a.line_id is not None]
    assert len(line_ids) == len(set(line_ids)), Counter(line_ids).most_common(2)


# -- fees ------------------------------------------------------------------------------------------


def check_fees(demo: SettlementDemo) -> None:
    by_id = lines_by_id(demo)
    keyed = {a.line_id for a in demo.answer_key}
    for line in demo.all_lines():
        if line.category == "charge" and line.line_id not in keyed:
            assert 0 < line.fee_minor < line.gross_minor, line
    for a in answers(demo, "fee_variance"):
        line = by_id[a.line_id or ""]
        assert line.category == "charge"
        m = re.fullmatch(r"fee (\d+) ([A-Z]{3}) instead of (\d+) by the schedule", a.detail)
        assert m is not None, a.detail
        assert int(m[1]) == line.fee_minor
        assert m[2] == line.currency
        assert int(m[3]) != line.fee_minor
        assert int(m[3]) > 0


def test_fees_follow_the_schedule_except_the_fee_mismatches(demo: SettlementDemo) -> None:
    assert answers(demo, "fee_variance")
    check_fees(demo)


def test_same_schedule_gives_the_same_fee(demo: SettlementDemo, billing: DemoData) -> None:
    """Two unkeyed charges of one gateway, currency, gross and conversion pay the same fee; a
    fee_mismatch line's stated schedule fee is what such a charge pays."""
    keyed = {a.line_id for a in demo.answer_key}
    fees: dict[tuple[object, ...], set[int]] = defaultdict(set)
    for line in demo.all_lines():
        if line.category == "charge" and line.line_id not in keyed:
            key = (line.gateway, line.currency, line.gross_minor, line.presentment_currency)
            fees[key].add(line.fee_minor)
    assert all(len(v) == 1 for v in fees.values()), {k: v for k, v in fees.items() if len(v) > 1}
    by_id = lines_by_id(demo)
    for a in answers(demo, "fee_variance"):
        line = by_id[a.line_id or ""]
        key = (line.gateway, line.currency, line.gross_minor, line.presentment_currency)
        schedule = int(a.detail.split("instead of ")[1].split()[0])
        assert fees.get(key, {schedule}) == {schedule}


# -- property: any demo --------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    customers=st.integers(5, 60),
    days=st.integers(10, 40),
    start=st.dates(date(2026, 1, 1), date(2026, 12, 31)),
)
def test_any_demo_parses_back_and_ties_out(
    seed: int, customers: int, days: int, start: date
) -> None:
    config = DemoConfig(start=start, days=days, seed=seed, customers=customers)
    data = generate(config)
    demo = generate_settlements(data)
    assert_files_parse_back(demo)
    assert_batches_tie_out(demo)
    check_answer_key(demo, data)
    check_settled_lines_match(demo, data)
    check_discrepancy_lines(demo, data)
    check_settled_once(demo, data)
    check_amounts(demo, data)
    check_amount_mismatches(demo, data)
    check_fees(demo)
    again = generate_settlements(generate(config))
    assert again.files == demo.files
    assert again.answer_key == demo.answer_key


# -- writing ---------------------------------------------------------------------------------------


def test_write_settlements_writes_the_files_and_the_answer_key(
    demo: SettlementDemo, tmp_path: Path
) -> None:
    counts = write_settlements(demo, tmp_path)
    assert counts == dict(sorted(Counter(gateway_of(n) for n in demo.files).items()))
    written = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and p.name != "answer_key.csv"
    }
    assert written == demo.files
    key = (tmp_path / "answer_key.csv").read_text(encoding="utf-8")
    assert key.splitlines()[0] == "kind,gateway,payment_id,invoice_id,line_id,batch_id,detail"
    assert (tmp_path / "answer_key.csv").read_bytes() == demo.answer_key_csv()
    assert len(list(csv.reader(io.StringIO(key)))) == len(demo.answer_key) + 1


def test_write_settlements_replaces_an_earlier_demo(demo: SettlementDemo, tmp_path: Path) -> None:
    other = generate_settlements(
        generate(DemoConfig(start=START + timedelta(days=5), days=20, seed=9, customers=40))
    )
    write_settlements(other, tmp_path)
    stale = set(other.files) - set(demo.files)
    assert stale  # the earlier demo has files the new one does not
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    write_settlements(demo, tmp_path)
    written = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file() and p.parent != tmp_path
    }
    assert written == demo.files
    assert (tmp_path / "answer_key.csv").read_bytes() == demo.answer_key_csv()
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"  # not a demo file
