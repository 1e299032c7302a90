"""Journal entries from billing and settlements: plain Python, no Dagster, no NetSuite client.

The accounting model (docs/erp.md has a worked example):

* Billing journal, one per business day, currency and subsidiary, summarizing the invoices
  issued that day (open, paid or uncollectible; draft and void ones post nothing) and the
  credit notes issued that day: AR debited by invoice totals; tax payable, revenue (usage,
  one-off and the elapsed part of subscription lines) and deferred revenue (the rest of each
  subscription's service period) credited; discounts debited; credit notes debit the
  credit-note account and credit AR.
* Settlement journal, one per gateway payout batch and currency, dated the payout day: bank
  debited by the payout; gateway clearing credited by each charge line (debited by refunds
  and chargebacks), one line per settlement line so an accountant can trace it; fees debited
  to expense; converted charges (presentment currency other than the settlement currency)
  clear through the FX difference account. Lines in open exceptions are held back: their net
  waits in suspense until the exception is resolved (the next run's adjusting entry moves it).

Amounts are integer minor units until the very edge (`netsuite_amount`), every entry balances
per currency, and every entry has an `external_id` derived only from what it summarizes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any, Final

from tieout.money import minor_to_decimal

MAX_LINES: Final = 1000  # NetSuite's limit of lines per journal entry
PAYMENT_CATEGORIES: Final = ("charge", "refund", "chargeback", "chargeback_reversal")
POSTED_INVOICE_STATUSES: Final = ("open", "paid", "uncollectible")


class JournalError(ValueError):
    """An entry cannot be built (unbalanced source, unmapped account): names the source."""


@dataclass(frozen=True)
class AccountMap:
    """Resolved account ids (NetSuite internal ids) with per-gateway/currency overrides."""

    accounts_receivable: str
    revenue: str
    deferred_revenue: str
    tax_payable: str
    discounts: str
    credit_notes: str
    gateway_clearing: str
    gateway_fees: str
    fx_difference: str
    bank: str
    suspense: str
    split_clearing: str
    subsidiary: str
    subsidiaries: Mapping[str, str] = field(default_factory=dict)
    department: str | None = None
    class_: str | None = None
    #: gateway -> {"bank", "gateway_clearing", "gateway_fees", "department", "class",
    #:             "bank:<CUR>"} overrides.
    gateways: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def subsidiary_for(self, currency: str) -> str:
        return self.subsidiaries.get(currency, self.subsidiary)

    def for_gateway(self, gateway: str, name: str, currency: str | None = None) -> str:
        over = self.gateways.get(gateway, {})
        if currency is not None and f"{name}:{currency}" in over:
            return over[f"{name}:{currency}"]
        value: str = over.get(name) or getattr(self, name)
        return value

    def segments(self, gateway: str | None = None) -> tuple[str | None, str | None]:
        over = self.gateways.get(gateway, {}) if gateway else {}
        return over.get("department", self.department), over.get("class", self.class_)


@dataclass(frozen=True)
class JournalLine:
    account: str
    debit_minor: int
    credit_minor: int
    memo: str = ""
    department: str | None = None
    class_: str | None = None

    @staticmethod
    def net(
        account: str,
        amount_minor: int,
        memo: str = "",
        segments: tuple[str | None, str | None] = (None, None),
    ) -> JournalLine:
        """A debit for a positive amount, a credit for a negative one."""
        return JournalLine(
            account,
            max(amount_minor, 0),
            max(-amount_minor, 0),
            memo,
            segments[0],
            segments[1],
        )

    @property
    def amount(self) -> int:
        return self.debit_minor - self.credit_minor

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "debit_minor": self.debit_minor,
            "credit_minor": self.credit_minor,
            "memo": self.memo,
            "department": self.department,
            "class": self.class_,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> JournalLine:
        return JournalLine(
            d["account"],
            int(d["debit_minor"]),
            int(d["credit_minor"]),
            d.get("memo", ""),
            d.get("department"),
            d.get("class"),
        )


class _NotScalar(Exception):
    pass


def _json_scalar(value: object) -> str:
    """A str, int or None as `json.dumps` writes it (ASCII, its own escapes)."""
    if type(value) is str:
        return _encode_str(value)
    if type(value) is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    raise _NotScalar


_encode_str: Final = json.encoder.encode_basestring_ascii  # what json.dumps quotes with


@dataclass(frozen=True)
class JournalEntry:
    external_id: str
    kind: str  # billing | settlement | adjustment
    tran_date: date
    currency: str
    subsidiary: str
    memo: str
    lines: tuple[JournalLine, ...]
    #: The entry this one belongs to: itself, or the base entry of a part or an adjustment.
    base_id: str = ""
    #: Settlement lines held back by open exceptions (for the plan; they are in suspense).
    held_back: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return self.base_id or self.external_id

    def imbalance(self) -> int:
        return sum(line.amount for line in self.lines)

    def payload(self) -> dict[str, Any]:
        """What is posted, canonical (the ledger hashes it to notice a changed source)."""
        return {
            "external_id": self.external_id,
            "kind": self.kind,
            "tran_date": self.tran_date.isoformat(),
            "currency": self.currency,
            "subsidiary": self.subsidiary,
            "memo": self.memo,
            "base_id": self.base,
            "lines": [line.as_dict() for line in self.lines],
        }

    @cached_property
    def payload_text(self) -> str:
        """The payload as canonical JSON, made once: the hash and the ledger both need it.

        Written field by field (a quarter of `json.dumps`'s time, which was most of the
        poster's staging); the text is `json.dumps(payload(), sort_keys=True, separators=
        (",", ":"))`'s exactly, and values of other types than str, int and None go
        through `json.dumps` itself."""
        try:
            j = _json_scalar
            lines = ",".join(
                f'{{"account":{j(x.account)},"class":{j(x.class_)},'
                f'"credit_minor":{j(x.credit_minor)},"debit_minor":{j(x.debit_minor)},'
                f'"department":{j(x.department)},"memo":{j(x.memo)}}}'
                for x in self.lines
            )
            return (
                f'{{"base_id":{j(self.base)},"currency":{j(self.currency)},'
                f'"external_id":{j(self.external_id)},"kind":{j(self.kind)},'
                f'"lines":[{lines}],"memo":{j(self.memo)},"subsidiary":{j(self.subsidiary)},'
                f'"tran_date":{j(self.tran_date.isoformat())}}}'
            )
        except _NotScalar:
            return json.dumps(self.payload(), sort_keys=True, separators=(",", ":"))

    def payload_hash(self) -> str:
        return hashlib.sha256(self.payload_text.encode()).hexdigest()

    @staticmethod
    def from_payload(p: Mapping[str, Any]) -> JournalEntry:
        return JournalEntry(
            external_id=p["external_id"],
            kind=p["kind"],
            tran_date=date.fromisoformat(p["tran_date"]),
            currency=p["currency"],
            subsidiary=p["subsidiary"],
            memo=p["memo"],
            lines=tuple(JournalLine.from_dict(x) for x in p["lines"]),
            base_id="" if p.get("base_id") == p["external_id"] else p.get("base_id", ""),
        )

    def account_totals(self) -> dict[tuple[str, str | None, str | None], int]:
        """Net (debit - credit) per account and segments: what adjusting entries compare."""
        out: dict[tuple[str, str | None, str | None], int] = defaultdict(int)
        for line in self.lines:
            out[(line.account, line.department, line.class_)] += line.amount
        return dict(out)


def netsuite_amount(amount_minor: int, currency: str) -> Decimal:
    """Minor units to NetSuite's decimal amount, exactly (ISO 4217 exponent)."""
    return minor_to_decimal(amount_minor, currency)


def external_id(*parts: object) -> str:
    """Deterministic, readable, within NetSuite's limits; long or odd keys are hashed."""
    text = "-".join(str(p) for p in parts)
    safe = "".join(c if c.isalnum() or c in "-_.:" else "_" for c in text)
    if len(safe) <= 90 and safe == text:
        return f"tieout-{safe}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"tieout-{safe[:70]}-{digest}"


def _collapse(lines: Iterable[JournalLine]) -> tuple[JournalLine, ...]:
    """Sum lines that share account, memo and segments; drop zeros; stable order."""
    sums: dict[tuple[str, str, str | None, str | None], int] = {}
    for line in lines:
        key = (line.account, line.memo, line.department, line.class_)
        sums[key] = sums.get(key, 0) + line.amount
    return tuple(
        JournalLine.net(acc, amt, memo, (dept, cls))
        for (acc, memo, dept, cls), amt in sums.items()
        if amt != 0
    )


# --------------------------------------------------------------------------------------------
# Billing


def recognized_share(amount: int, start: date | None, end: date | None, day: date) -> int:
    """The part of a subscription line earned by the end of `day` (service period [start,
    end), end exclusive), floor-rounded: the deferred remainder is never understated."""
    if start is None or end is None or end <= start:
        return amount
    total = (end - start).days
    elapsed = min(max((day + timedelta(days=1) - start).days, 0), total)
    # Exact integer arithmetic toward zero for either sign.
    share = abs(amount) * elapsed // total
    return share if amount >= 0 else -share


def billing_journals(
    invoices: Sequence[Mapping[str, Any]],
    invoice_lines: Sequence[Mapping[str, Any]],
    credit_notes: Sequence[Mapping[str, Any]],
    *,
    days: Mapping[str, date],
    start: date,
    end: date,
    accounts: AccountMap,
) -> list[JournalEntry]:
    """One summary entry per (business day, currency, subsidiary).

    `days` maps invoice and credit-note ids to their business day (issued, finance time zone).
    """
    seg = accounts.segments()
    by_invoice: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for line in invoice_lines:
        by_invoice[line["invoice_id"]].append(line)
    groups: dict[tuple[date, str, str], list[JournalLine]] = defaultdict(list)
    counts: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for inv in sorted(invoices, key=lambda r: r["invoice_id"]):
        day = days[inv["invoice_id"]]
        if not start <= day <= end or inv["status"] not in POSTED_INVOICE_STATUSES:
            continue
        cur = inv["currency"]
        key = (day, cur, accounts.subsidiary_for(cur))
        counts[key][0] += 1
        out = groups[key]
        out.append(JournalLine.net(accounts.accounts_receivable, inv["total_minor"], "AR", seg))
        lines = by_invoice.get(inv["invoice_id"], [])
        for ln in lines:
            amt = int(ln["amount_minor"])
            kind = ln["kind"]
            if kind == "tax":
                out.append(JournalLine.net(accounts.tax_payable, -amt, "Tax", seg))
            elif kind == "discount":
                out.append(JournalLine.net(accounts.discounts, -amt, "Discounts", seg))
            elif kind == "subscription":
                earned = recognized_share(amt, ln["service_start"], ln["service_end"], day)
                out.append(JournalLine.net(accounts.revenue, -earned, "Revenue", seg))
                out.append(
                    JournalLine.net(accounts.deferred_revenue, -(amt - earned), "Deferred", seg)
                )
            else:  # usage, one_off: earned when billed
                out.append(JournalLine.net(accounts.revenue, -amt, "Revenue", seg))
        booked = sum(int(ln["amount_minor"]) for ln in lines)
        if booked != inv["total_minor"]:
            raise JournalError(
                f"invoice {inv['invoice_id']}: its lines sum to {booked} minor units but its "
                f"total_minor is {inv['total_minor']}; fix the invoice in billing (the billing "
                "checks flag it too) before posting"
            )
    for cn in sorted(credit_notes, key=lambda r: r["credit_note_id"]):
        day = days[cn["credit_note_id"]]
        if not start <= day <= end:
            continue
        cur = cn["currency"]
        key = (day, cur, accounts.subsidiary_for(cur))
        counts[key][1] += 1
        amt = int(cn["amount_minor"])
        groups[key].append(JournalLine.net(accounts.credit_notes, amt, "Credit notes", seg))
        groups[key].append(JournalLine.net(accounts.accounts_receivable, -amt, "AR", seg))
    entries = []
    for (day, cur, sub), booked_lines in sorted(groups.items()):
        n_inv, n_cn = counts[(day, cur, sub)]
        entries.append(
            JournalEntry(
                external_id=external_id("bill", day.isoformat(), cur, sub),
                kind="billing",
                tran_date=day,
                currency=cur,
                subsidiary=sub,
                memo=f"tieout billing {day} {cur}: {n_inv} invoice(s), {n_cn} credit note(s)",
                lines=_collapse(booked_lines),
            )
        )
    return entries


# --------------------------------------------------------------------------------------------
# Settlements


@dataclass(frozen=True)
class HeldBatch:
    gateway: str
    batch_id: str
    currency: str
    reason: str


def settlement_journals(
    lines: Sequence[Mapping[str, Any]],
    *,
    start: date,
    end: date,
    accounts: AccountMap,
    held_lines: Mapping[str, str],
    held_batches: Mapping[tuple[str, str, str], str],
) -> tuple[list[JournalEntry], list[HeldBatch]]:
    """One entry per (gateway, batch, currency) paid out in [start, end].

    `lines` carry `day` (business day); `held_lines` maps line ids in open exceptions to the
    exception; `held_batches` maps batches whose payout itself is in question (a payout
    mismatch) to the reason; those are not posted at all and come back as `HeldBatch`.
    """
    batches: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for ln in lines:
        batches[(ln["gateway"], ln["batch_id"], ln["currency"])].append(ln)
    entries: list[JournalEntry] = []
    held: list[HeldBatch] = []
    for key in sorted(batches):
        gateway, batch_id, cur = key
        rows = sorted(batches[key], key=lambda r: r["line_id"])
        payouts = [r for r in rows if r["category"] in ("payout", "payout_reversal")]
        if not payouts:
            continue  # still open: its payout has not come
        pay_day = max(r["day"] for r in payouts)
        if not start <= pay_day <= end:
            continue
        if key in held_batches:
            held.append(HeldBatch(gateway, batch_id, cur, held_batches[key]))
            continue
        seg = accounts.segments(gateway)
        clearing = accounts.for_gateway(gateway, "gateway_clearing")
        fees = accounts.for_gateway(gateway, "gateway_fees")
        bank = accounts.for_gateway(gateway, "bank", cur)
        out: list[JournalLine] = []
        held_here: list[str] = []
        fee_total = 0
        for r in rows:
            gross, fee, net = int(r["gross_minor"]), int(r["fee_minor"]), int(r["net_minor"])
            cat = r["category"]
            if cat in ("payout", "payout_reversal"):
                out.append(JournalLine.net(bank, -gross, f"Payout {r['line_id']}", seg))
                fee_total += fee
                continue
            if r["line_id"] in held_lines:
                held_here.append(r["line_id"])
                out.append(
                    JournalLine.net(
                        accounts.suspense,
                        -net,
                        f"Held: {r['line_id']} ({held_lines[r['line_id']]})",
                        seg,
                    )
                )
                continue
            fee_total += fee
            if cat in PAYMENT_CATEGORIES:
                fx = r.get("presentment_currency") not in (None, "", cur)
                account = accounts.fx_difference if fx else clearing
                ref = r.get("gateway_reference") or r.get("modification_reference") or ""
                memo = f"{cat} {r['line_id']}" + (f" ref {ref}" if ref else "")
                out.append(JournalLine.net(account, -gross, memo, seg))
            else:  # fee, adjustment, transfer, other: the gateway's own charges and moves
                out.append(JournalLine.net(fees, -gross, f"{cat} {r['line_id']}", seg))
        if fee_total:
            out.append(JournalLine.net(fees, fee_total, "Gateway fees", seg))
        entry = JournalEntry(
            external_id=external_id("stl", gateway, batch_id, cur),
            kind="settlement",
            tran_date=pay_day,
            currency=cur,
            subsidiary=accounts.subsidiary_for(cur),
            memo=f"tieout settlement {gateway} batch {batch_id} {cur}: {len(rows)} line(s)",
            lines=tuple(line for line in out if line.amount != 0),
            held_back=tuple(held_here),
        )
        if entry.imbalance() != 0:
            held.append(
                HeldBatch(
                    gateway,
                    batch_id,
                    cur,
                    f"its lines do not net to its payout (off by {entry.imbalance()} minor "
                    "units); resolve the payout_mismatch exception first",
                )
            )
            continue
        entries.append(entry)
    return entries, held


# --------------------------------------------------------------------------------------------
# Splitting and adjusting


def split(
    entry: JournalEntry, max_lines: int = MAX_LINES, clearing: str = ""
) -> list[JournalEntry]:
    """Entries above NetSuite's line limit become parts that each balance through the
    split-clearing account, whose lines net to zero over the parts."""
    if len(entry.lines) <= max_lines:
        return [entry]
    if not clearing:
        raise JournalError(f"{entry.external_id}: split needs a split-clearing account")
    chunk = max_lines - 1
    parts = []
    groups = [entry.lines[i : i + chunk] for i in range(0, len(entry.lines), chunk)]
    for i, lines in enumerate(groups, start=1):
        gap = sum(line.amount for line in lines)
        balancing = JournalLine.net(
            clearing, -gap, f"Split {i}/{len(groups)} of {entry.external_id}"
        )
        parts.append(
            replace(
                entry,
                external_id=f"{entry.external_id}-p{i}",
                memo=f"{entry.memo} (part {i} of {len(groups)})",
                lines=(*lines, balancing) if gap else lines,
                base_id=entry.external_id,
                held_back=entry.held_back if i == 1 else (),
            )
        )
    return parts


def adjustment(
    entry: JournalEntry, posted: Iterable[JournalEntry], number: int, tran_date: date
) -> JournalEntry | None:
    """The entry that moves what is posted for `entry`'s source to what it should now be;
    None when nothing differs."""
    have: dict[tuple[str, str | None, str | None], int] = defaultdict(int)
    for p in posted:
        for k, v in p.account_totals().items():
            have[k] += v
    want = entry.account_totals()
    diff = []
    for key in sorted(set(have) | set(want), key=lambda k: (k[0], k[1] or "", k[2] or "")):
        delta = want.get(key, 0) - have.get(key, 0)
        if delta:
            diff.append(JournalLine.net(key[0], delta, f"Adjusts {entry.external_id}", key[1:]))
    if not diff:
        return None
    return JournalEntry(
        external_id=f"{entry.external_id}-adj{number}",
        kind="adjustment",
        tran_date=max(tran_date, entry.tran_date),
        currency=entry.currency,
        subsidiary=entry.subsidiary,
        memo=f"tieout adjustment {number} of {entry.external_id}: its source changed",
        lines=tuple(diff),
        base_id=entry.external_id,
    )


def problems(entry: JournalEntry, check_size: bool = True) -> list[str]:
    """What makes an entry unpostable (empty when fine): the blocking journal check.
    `check_size=False` for an entry that is still to be split."""
    found = []
    if entry.imbalance() != 0:
        found.append(
            f"{entry.external_id}: debits and credits differ by {entry.imbalance()} minor "
            f"units of {entry.currency}"
        )
    if check_size and len(entry.lines) > MAX_LINES:
        found.append(f"{entry.external_id}: {len(entry.lines)} lines (NetSuite allows 1,000)")
    if not entry.lines:
        found.append(f"{entry.external_id}: no lines")
    for line in entry.lines:
        if (
            line.debit_minor < 0
            or line.credit_minor < 0
            or (line.debit_minor and line.credit_minor)
        ):
            found.append(f"{entry.external_id}: line {line.memo!r} is not one-sided")
    return found
