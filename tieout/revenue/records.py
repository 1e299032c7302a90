"""What goes to Salesforce: billing status per customer, invoices, payments and revenue
schedule rows, as records keyed by deterministic external ids, in Salesforce's field names.

Plain functions over row mappings (the lake's canonical billing tables and the schedule rows
of `tieout.revenue.schedules`). Money leaves minor units only here, as exact decimal text in
the record's currency. Values are text because both Bulk CSV and Collections JSON take text,
and a record's payload hash must not depend on how a number happens to be typed.

Field names are checked against describe before anything is built, so an unknown field fails
at plan time with the object and field named.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from tieout.money import minor_to_decimal
from tieout.revenue.model import ObjectShape, SalesforceRecord
from tieout.settings import SalesforceSettings

INVOICE_STATUS: Final = {
    "draft": "Draft",
    "open": "Open",
    "paid": "Paid",
    "void": "Void",
    "uncollectible": "Uncollectible",
}
#: Signed effect of a payment kind on what the customer has paid.
PAYMENT_SIGN: Final = {"charge": 1, "refund": -1, "chargeback": -1, "chargeback_reversal": 1}
PAYMENT_STATUS: Final = {
    ("charge", "succeeded"): "Succeeded",
    ("charge", "failed"): "Failed",
    ("refund", "succeeded"): "Refunded",
    ("chargeback", "succeeded"): "Disputed",
    ("chargeback_reversal", "succeeded"): "Succeeded",
}
#: Fields whose value is a parent matched by its external id (logical name -> parent kind).
PARENTS: Final = {"account": "accounts", "invoice": "invoices"}


def money(amount_minor: int, currency: str) -> str:
    return str(minor_to_decimal(amount_minor, currency))


def _local_date(moment: Any, tz: ZoneInfo) -> date | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            return moment.date()
        return moment.astimezone(tz).date()
    if isinstance(moment, date):
        return moment
    return None


def month_end(first: date) -> date:
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return nxt - timedelta(days=1)


@dataclass(frozen=True)
class FieldPlan:
    """Per kind: the Salesforce field (or `Rel__r.ParentExt`) for each logical field."""

    sobject: str
    external_id_field: str
    columns: Mapping[str, str]


def field_plans(
    settings: SalesforceSettings, shapes: Mapping[str, ObjectShape]
) -> tuple[dict[str, FieldPlan], list[str]]:
    """Resolve the field maps against describe: (plans, problems naming object and field)."""
    problems: list[str] = []
    plans: dict[str, FieldPlan] = {}
    for kind in settings.send:
        obj = settings.objects.of(kind)
        shape = shapes[obj.name]
        where = f"revenue.salesforce.objects.{kind}"
        ext_spec = shape.fields.get(obj.external_id_field)
        if ext_spec is None:
            problems.append(f"{obj.name} has no field {obj.external_id_field} ({where})")
        elif not (ext_spec.get("externalId") or ext_spec.get("idLookup")):
            problems.append(f"{obj.name}.{obj.external_id_field} is not an external id field")
        columns: dict[str, str] = {}
        for logical, api in settings.objects.field_map(kind).items():
            spec = shape.fields.get(api)
            if spec is None:
                problems.append(
                    f"{obj.name} has no field {api} (mapped from {logical} in {where}.fields); "
                    'create it, map another field, or set it to "" to leave it out'
                )
                continue
            if not (spec.get("createable", True) or spec.get("updateable", True)):
                problems.append(f"{obj.name}.{api} cannot be written (mapped from {logical})")
                continue
            parent_kind = PARENTS.get(logical)
            if parent_kind is not None:
                rel = shape.relationship(api)
                if not rel:
                    problems.append(f"{obj.name}.{api} is not a lookup field ({logical})")
                    continue
                parent = settings.objects.of(parent_kind)
                columns[logical] = f"{rel}.{parent.external_id_field}"
            else:
                columns[logical] = api
        plans[kind] = FieldPlan(obj.name, obj.external_id_field, columns)
    return plans, problems


@dataclass
class Billing:
    """The canonical billing rows tieout derives Salesforce records from."""

    customers: list[Mapping[str, Any]] = field(default_factory=list)
    invoices: list[Mapping[str, Any]] = field(default_factory=list)
    invoice_lines: list[Mapping[str, Any]] = field(default_factory=list)
    credit_notes: list[Mapping[str, Any]] = field(default_factory=list)
    payments: list[Mapping[str, Any]] = field(default_factory=list)


def _record(plan: FieldPlan, kind: str, key: str, values: Mapping[str, Any]) -> SalesforceRecord:
    out = {plan.columns[k]: ("" if v is None else str(v)) for k, v in values.items()
           if k in plan.columns}  # fmt: skip
    return SalesforceRecord(kind, plan.sobject, plan.external_id_field, key, out)


def build_records(
    billing: Billing,
    schedule_rows: Sequence[Mapping[str, Any]],
    plans: Mapping[str, FieldPlan],
    *,
    start: date,
    end: date,
    finance_timezone: str,
) -> list[SalesforceRecord]:
    """Records for the business days [start, end]: invoices issued and payments made in the
    range, the schedule rows of invoices and credit notes issued in it, and the Account of
    every customer they touch (its status computed over all billing history given)."""
    tz = ZoneInfo(finance_timezone)

    def in_range(moment: Any) -> bool:
        d = _local_date(moment, tz)
        return d is not None and start <= d <= end

    paid: dict[str, int] = defaultdict(int)
    last_paid: dict[str, date] = {}
    for p in billing.payments:
        if p["status"] != "succeeded":
            continue
        if p.get("invoice_id"):
            paid[p["invoice_id"]] += PAYMENT_SIGN[p["kind"]] * int(p["amount_minor"])
        if p["kind"] == "charge":
            d = _local_date(p["created_at"], tz)
            if d is not None and d <= end:
                c = p["customer_id"]
                last_paid[c] = max(last_paid.get(c, d), d)
    credited: dict[str, int] = defaultdict(int)
    for cn in billing.credit_notes:
        credited[cn["invoice_id"]] += int(cn["amount_minor"])

    out: list[SalesforceRecord] = []
    touched: set[str] = set()
    balance_by_customer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    invoice_customer: dict[str, str] = {}
    for inv in billing.invoices:
        invoice_customer[inv["invoice_id"]] = inv["customer_id"]
        total = int(inv["total_minor"])
        balance = 0 if inv["status"] in ("void", "draft") else (
            total - credited[inv["invoice_id"]] - paid[inv["invoice_id"]]
        )  # fmt: skip
        balance_by_customer[inv["customer_id"]][inv["currency"]] += balance
        if "invoices" in plans and in_range(inv["issued_at"]):
            cur = inv["currency"]
            touched.add(inv["customer_id"])
            out.append(_record(plans["invoices"], "invoices", inv["invoice_id"], {
                "account": inv["customer_id"],
                "invoice_number": inv.get("invoice_number"),
                "invoice_date": _local_date(inv["issued_at"], tz),
                "due_date": _local_date(inv.get("due_at"), tz),
                "amount": money(total, cur),
                "tax_amount": money(int(inv.get("tax_minor") or 0), cur),
                "amount_paid": money(paid[inv["invoice_id"]], cur),
                "balance": money(balance, cur),
                "status": INVOICE_STATUS.get(inv["status"], ""),
                "currency": cur,
            }))  # fmt: skip
    if "payments" in plans:
        for p in billing.payments:
            if not in_range(p["created_at"]):
                continue
            touched.add(p["customer_id"])
            cur = p["currency"]
            out.append(_record(plans["payments"], "payments", p["payment_id"], {
                "account": p["customer_id"],
                "invoice": p.get("invoice_id"),
                "payment_date": _local_date(p["created_at"], tz),
                "amount": money(PAYMENT_SIGN[p["kind"]] * int(p["amount_minor"]), cur),
                "gateway": p.get("gateway"),
                "gateway_reference": p.get("gateway_reference"),
                "status": PAYMENT_STATUS.get((p["kind"], p["status"]), ""),
                "currency": cur,
            }))  # fmt: skip
    mrr: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_month = end.replace(day=1)
    product = {x["line_id"]: x.get("product_code") or x.get("description") or x.get("kind")
               for x in billing.invoice_lines}  # fmt: skip
    remaining = _deferred_after(schedule_rows)
    first_of_range, last_of_range = start.replace(day=1), end.replace(day=1)
    for row in schedule_rows:
        customer = row["customer_id"]
        if row["kind"] == "subscription" and row["month"] == last_month:
            mrr[customer][row["currency"]] += int(row["amount_minor"])
        if "schedules" not in plans:
            continue
        if not first_of_range <= row["billing_month"] <= last_of_range:
            continue
        touched.add(customer)
        cur = row["currency"]
        out.append(_record(plans["schedules"], "schedules", row["schedule_id"], {
            "account": customer,
            "invoice": row["invoice_id"],
            "product": str(product.get(row["line_id"]) or row["kind"])[:255],
            "period_start": row["month"],
            "period_end": month_end(row["month"]),
            "recognized_amount": money(int(row["amount_minor"]), cur),
            "deferred_amount": money(remaining[row["schedule_id"]], cur),
            "currency": cur,
        }))  # fmt: skip
    if "accounts" in plans:
        for c in sorted(billing.customers, key=lambda r: r["customer_id"]):
            cid = c["customer_id"]
            if cid not in touched:
                continue
            cur = c["currency"]
            last = last_paid.get(cid)
            out.append(_record(plans["accounts"], "accounts", cid, {
                "name": c.get("name") or cid,
                "open_balance": money(balance_by_customer[cid].get(cur, 0), cur),
                "last_payment_date": last,
                "mrr": money(mrr[cid].get(cur, 0), cur),
                "currency": cur,
            }))  # fmt: skip
    order = {k: i for i, k in enumerate(("accounts", "invoices", "payments", "schedules"))}
    out.sort(key=lambda r: (order[r.kind], r.key))
    return out


def _deferred_after(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Per schedule row: what of its source line stays deferred after the row's month."""
    by_line: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_line[(r["source_id"], r["line_id"])].append(r)
    out: dict[str, int] = {}
    for group in by_line.values():
        group.sort(key=lambda r: r["month"])
        left = sum(int(r["amount_minor"]) for r in group)
        for r in group:
            left -= int(r["amount_minor"])
            out[r["schedule_id"]] = left
    return out


def summarize(records: Sequence[SalesforceRecord]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[r.kind] += 1
    return dict(counts)
