"""Deterministic demo billing data in the reference schema.

The demo lets someone run tieout end to end without a billing system of their own: `generate`
builds a realistic stretch of SaaS billing (customers in four currencies, monthly and annual
plans, renewal invoices with usage, discounts and tax, gateway payments with retries, refunds
and disputes, credit notes, metered usage events) that satisfies every constraint of
`tieout.schema`, and `write_demo_data` loads it into Postgres or SQLite.

Determinism is the point: the same `DemoConfig` gives the same rows byte for byte, so later
layers (gateway settlement files, a key of injected discrepancies) can be derived from it and
tests can pin exact results. Every random draw comes from a `random.Random` seeded with a
string naming what it decides (e.g. ``"42/customer/cus_000007"``), never from global state,
so one entity's data does not depend on how many draws other entities made: raising
`DemoConfig.customers` appends customers instead of reshuffling the existing ones.

Conventions worth knowing when reading the data:

* ``period_end`` / ``service_end`` are exclusive (the next period's start), as Stripe does; a
  one-off invoice has ``period_start == period_end``.
* Usage is billed in arrears: a metered plan's renewal invoice carries the usage of the
  previous period, and it equals the sum of that period's usage events (events exist only
  inside the window, so only periods fully inside it can be checked against them).
* Every row's window column (``updated_at``, ``occurred_at``) lies inside the window, so a
  backfill of the window's daily partitions loads the whole data set. Records that predate the
  window (old customers and subscriptions) are touched on its first day.
* A ``chargeback_reversal`` points at its chargeback (``original_payment_id``) and shares its
  gateway reference (the dispute id); refunds and chargebacks point at the charge.
"""

from __future__ import annotations

import calendar
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, TypedDict

import pyarrow as pa
import sqlalchemy as sa

from tieout.money import exponent
from tieout.schema import TABLES, create_reference_schema

__all__ = [
    "INSERT_BATCH_SIZE",
    "CreditNoteRow",
    "CustomerRow",
    "DemoConfig",
    "DemoData",
    "InvoiceLineRow",
    "InvoiceRow",
    "PaymentRow",
    "SubscriptionRow",
    "UsageEventRow",
    "generate",
    "write_demo_data",
]

#: Rows per executemany: large enough to be fast, small enough to keep memory flat.
INSERT_BATCH_SIZE: Final = 5_000

# --------------------------------------------------------------------------------------------
# Row types: one TypedDict per reference table, keys in the table's column order.
# --------------------------------------------------------------------------------------------


class CustomerRow(TypedDict):
    customer_id: str
    name: str
    email: str | None
    country: str | None
    currency: str
    created_at: datetime
    updated_at: datetime


class SubscriptionRow(TypedDict):
    subscription_id: str
    customer_id: str
    plan_code: str
    status: str
    currency: str
    unit_amount_minor: int
    interval: str
    started_at: datetime
    canceled_at: datetime | None
    updated_at: datetime


class InvoiceRow(TypedDict):
    invoice_id: str
    invoice_number: str
    customer_id: str
    subscription_id: str | None
    currency: str
    status: str
    issued_at: datetime
    due_at: datetime
    period_start: date
    period_end: date
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    updated_at: datetime


class InvoiceLineRow(TypedDict):
    line_id: str
    invoice_id: str
    kind: str
    product_code: str | None
    description: str | None
    quantity: Decimal
    amount_minor: int
    service_start: date | None
    service_end: date | None


class PaymentRow(TypedDict):
    payment_id: str
    customer_id: str
    invoice_id: str | None
    kind: str
    original_payment_id: str | None
    gateway: str
    gateway_reference: str | None
    amount_minor: int
    currency: str
    status: str
    created_at: datetime
    updated_at: datetime


class CreditNoteRow(TypedDict):
    credit_note_id: str
    invoice_id: str
    amount_minor: int
    currency: str
    reason: str | None
    issued_at: datetime
    updated_at: datetime


class UsageEventRow(TypedDict):
    event_id: str
    customer_id: str
    subscription_id: str
    metric: str
    quantity: Decimal
    occurred_at: datetime


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """What to generate: the window ``[start, start + days)`` and the size of the customer base."""

    start: date
    days: int = 30
    seed: int = 42
    customers: int = 200

    def __post_init__(self) -> None:
        # datetime is a date subclass; a time of day would silently shift every timestamp.
        if isinstance(self.start, datetime) or not isinstance(self.start, date):
            raise TypeError(f"DemoConfig.start must be a date, not {type(self.start).__name__}")
        if self.days < 1:
            raise ValueError(f"DemoConfig.days must be >= 1, got {self.days}")
        if self.customers < 1:
            raise ValueError(f"DemoConfig.customers must be >= 1, got {self.customers}")

    @property
    def window_start(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def window_end(self) -> datetime:
        """Exclusive end of the window."""
        return self.window_start + timedelta(days=self.days)


@dataclass(frozen=True)
class DemoData:
    """One list of rows per reference table, each row a dict in the table's column order."""

    config: DemoConfig
    customers: list[CustomerRow]
    subscriptions: list[SubscriptionRow]
    invoices: list[InvoiceRow]
    invoice_lines: list[InvoiceLineRow]
    payments: list[PaymentRow]
    credit_notes: list[CreditNoteRow]
    usage_events: list[UsageEventRow]

    def tables(self) -> dict[str, Sequence[Mapping[str, Any]]]:
        """Rows by table name, in `TABLES` order (parents before children)."""
        rows: dict[str, Sequence[Mapping[str, Any]]] = {
            "customers": self.customers,
            "subscriptions": self.subscriptions,
            "invoices": self.invoices,
            "invoice_lines": self.invoice_lines,
            "payments": self.payments,
            "credit_notes": self.credit_notes,
            "usage_events": self.usage_events,
        }
        return {name: rows[name] for name in TABLES}

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.tables().items()}

    def to_arrow(self, table: str) -> pa.Table:
        """One table as Arrow with the canonical schema, i.e. what an extraction would yield."""
        schema = TABLES[table].arrow_schema()
        return pa.Table.from_pylist(list(self.tables()[table]), schema=schema)


def generate(config: DemoConfig) -> DemoData:
    """Build the demo data set; pure: same config, same rows."""
    return _Builder(config).build()


def write_demo_data(
    url: str,
    config: DemoConfig,
    schema: str | None = "billing",
    progress: Callable[[str], None] | None = None,
    data: DemoData | None = None,
) -> dict[str, int]:
    """Load the demo into the database at `url`, replacing the rows of any earlier demo.

    Replacing (delete everything, then insert, in one transaction) keeps reruns idempotent and
    never leaves a half-written demo behind. Returns row counts per table. `data`, when given,
    must be `generate(config)` (callers that also need the rows pass them to save a rebuild).
    """
    if data is None:
        data = generate(config)
    engine = sa.create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            schema = None
        metadata = create_reference_schema(engine, schema)
        ordered = metadata.sorted_tables  # parents before children
        rows = data.tables()
        counts: dict[str, int] = {}
        with engine.begin() as conn:
            for table in reversed(ordered):
                conn.execute(table.delete())
            for table in ordered:
                table_rows = rows[table.name]
                for i in range(0, len(table_rows), INSERT_BATCH_SIZE):
                    conn.execute(table.insert(), list(table_rows[i : i + INSERT_BATCH_SIZE]))
                counts[table.name] = len(table_rows)
                if progress is not None:
                    progress(f"{table.name}: {len(table_rows):,} rows")
    finally:
        engine.dispose()
    return {name: counts[name] for name in TABLES}


# --------------------------------------------------------------------------------------------
# Catalog: prices are in major units per currency, converted with the ISO 4217 exponent.
# --------------------------------------------------------------------------------------------

Interval = Literal["month", "year"]


def _to_minor(major: str, currency: str) -> int:
    """Major units (text) to minor units, exactly: a catalog price must not need rounding."""
    scaled = Decimal(major).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{major} {currency} is not a whole number of minor units")
    return int(scaled)


def _prices(usd: str, eur: str, gbp: str, jpy: str) -> dict[str, int]:
    majors = {"USD": usd, "EUR": eur, "GBP": gbp, "JPY": jpy}
    return {code: _to_minor(major, code) for code, major in majors.items()}


@dataclass(frozen=True)
class _Plan:
    code: str
    name: str
    interval: Interval
    prices: dict[str, int]
    metered: bool
    weight: int
    #: Multiplier on usage volume: bigger plans, bigger customers.
    scale: int = 1


_PLANS: Final = (
    # code, name, interval, prices (USD, EUR, GBP, JPY), metered, weight, usage scale
    _Plan("starter_monthly", "Starter", "month", _prices("19", "19", "15", "2980"), False, 30),
    _Plan("pro_monthly", "Pro", "month", _prices("49", "45", "39", "7480"), True, 28),
    _Plan(
        "business_monthly", "Business", "month", _prices("199", "189", "159", "29800"), True, 12, 4
    ),
    _Plan("starter_annual", "Starter", "year", _prices("190", "190", "150", "29800"), False, 12),
    _Plan("pro_annual", "Pro", "year", _prices("490", "450", "390", "74800"), False, 12),
    _Plan(
        "business_annual", "Business", "year", _prices("1990", "1890", "1590", "298000"), False, 6
    ),
)


@dataclass(frozen=True)
class _Metric:
    code: str
    description: str
    #: Price of one billed unit (1,000 calls, 1 GB) in minor units.
    prices: dict[str, int]
    #: Decimal places of an event's quantity. Internally quantities are integer units of
    #: 10**-event_places (calls; thousandths of a GB) and one billed unit is 1,000 of them.
    event_places: int


_METRICS: Final = (
    _Metric("api_calls", "API calls (per 1,000)", _prices("0.50", "0.45", "0.40", "75"), 0),
    _Metric("storage_gb", "Storage (per GB)", _prices("0.25", "0.23", "0.20", "35"), 3),
)

_ONE_OFFS: Final = (
    ("onboarding", "Onboarding package", _prices("499.00", "449.00", "399.00", "75000"), 1),
    ("extra_seats", "Additional seats", _prices("12.00", "11.00", "10.00", "1800"), 10),
    ("priority_support", "Priority support", _prices("99.00", "89.00", "79.00", "14800"), 1),
)

_COUPONS: Final = (("WELCOME10", 10), ("LAUNCH20", 20), ("PARTNER25", 25), ("NONPROFIT50", 50))

_CURRENCIES: Final = (("USD", 45), ("EUR", 25), ("GBP", 15), ("JPY", 15))

_COUNTRIES: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    "USD": (("US", 85), ("CA", 15)),
    "EUR": (("DE", 40), ("FR", 30), ("NL", 20), ("IE", 10)),
    "GBP": (("GB", 1),),
    "JPY": (("JP", 1),),
}

#: Tax options per country: (rate in basis points, line description, weight). 0 % stands for
#: EU B2B reverse charge and US states that do not tax SaaS.
_TAX: Final[dict[str, tuple[tuple[int, str, int], ...]]] = {
    "US": ((725, "Sales tax 7.25%", 45), (0, "Sales tax 0% (not taxable)", 55)),
    "CA": ((500, "GST 5%", 1),),
    "DE": ((1900, "VAT 19%", 70), (0, "VAT reverse charge", 30)),
    "FR": ((2000, "TVA 20%", 70), (0, "VAT reverse charge", 30)),
    "NL": ((2100, "BTW 21%", 70), (0, "VAT reverse charge", 30)),
    "IE": ((2300, "VAT 23%", 70), (0, "VAT reverse charge", 30)),
    "GB": ((2000, "VAT 20%", 1),),
    "JP": ((1000, "Consumption tax 10%", 1),),
}

_GATEWAYS: Final = (("stripe", 45), ("adyen", 22), ("paypal", 18), ("braintree", 15))

_LEGAL_SUFFIX: Final = {
    "US": "Inc.",
    "CA": "Ltd.",
    "DE": "GmbH",
    "FR": "SAS",
    "NL": "B.V.",
    "IE": "Ltd",
    "GB": "Ltd",
    "JP": "K.K.",
}
_NAME_FIRST: Final = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Wonka", "Stark", "Tyrell",
    "Cyberdyne", "Soylent", "Aperture", "Oscorp", "Monarch", "Nakatomi", "Prestige", "Sterling",
    "Bluth", "Oceanic", "Virtucon", "Weyland", "Yoyodyne", "Gekko", "Duff", "Sirius", "Kinetic",
    "Lumen", "Northwind", "Contoso", "Fabrikam", "Sakura", "Fuji", "Tanuki", "Alder", "Birch",
)  # fmt: skip
_NAME_SECOND: Final = (
    "Analytics", "Labs", "Systems", "Logistics", "Foods", "Studio", "Robotics", "Health",
    "Energy", "Media", "Software", "Partners", "Cloud", "Ventures", "Works", "Retail",
)  # fmt: skip
_EMAIL_LOCAL: Final = ("billing", "accounts", "finance", "ap", "payments")

_REFUND_REASONS: Final = (
    "Refund: customer request",
    "Refund: duplicate charge",
    "Refund: billing error",
    "Refund: service not used",
)
_CREDIT_REASONS: Final = (
    "Service credit: outage",
    "Service credit: goodwill",
    "Price adjustment",
)

_ALNUM: Final = string.ascii_letters + string.digits
_UPPER_ALNUM: Final = string.ascii_uppercase + string.digits
_LOWER_ALNUM: Final = string.ascii_lowercase + string.digits
_STRIPE_PREFIX: Final = {"charge": "ch_", "refund": "re_", "chargeback": "dp_"}

_HOUR: Final = 3600
_DAY: Final = 86_400

# --------------------------------------------------------------------------------------------
# Internal model: mutable while the builder decides, turned into rows at the end.
# --------------------------------------------------------------------------------------------


@dataclass
class _Customer:
    customer_id: str
    number: int
    name: str
    email: str | None
    country: str
    currency: str
    tax_bp: int
    tax_label: str
    gateway: str
    #: Pays invoices by hand (net 30) instead of being charged automatically (net 14).
    send_invoice: bool
    coupon: tuple[str, int] | None
    created_at: datetime
    updated_at: datetime
    subscriptions: list[_Subscription] = field(default_factory=list)


@dataclass
class _Subscription:
    subscription_id: str
    customer: _Customer
    plan: _Plan
    status: str
    unit_amount: int
    started_at: datetime
    canceled_at: datetime | None
    updated_at: datetime


@dataclass
class _Line:
    kind: str
    product_code: str | None
    description: str | None
    quantity: Decimal
    amount: int
    service_start: date | None = None
    service_end: date | None = None


@dataclass
class _Invoice:
    key: str
    customer: _Customer
    subscription: _Subscription | None
    issued_at: datetime
    period_start: date
    period_end: date
    #: Previous period, billed in arrears for metered plans.
    usage_period: tuple[datetime, datetime] | None
    #: The subscription's last renewal inside the window (where dunning shows).
    latest: bool = False
    invoice_id: str = ""
    number: str = ""
    lines: list[_Line] = field(default_factory=list)
    status: str = "open"
    updated_at: datetime | None = None

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines if line.kind != "tax")

    @property
    def tax(self) -> int:
        return sum(line.amount for line in self.lines if line.kind == "tax")

    @property
    def total(self) -> int:
        return self.subtotal + self.tax


@dataclass
class _Payment:
    seq: int
    invoice: _Invoice
    kind: str
    original: _Payment | None
    reference: str
    amount: int
    status: str
    created_at: datetime
    updated_at: datetime
    payment_id: str = ""


@dataclass
class _CreditNote:
    invoice: _Invoice
    amount: int
    reason: str
    issued_at: datetime


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


def _weighted(rng: random.Random, options: Sequence[tuple[str, int]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _add_months(moment: datetime, months: int) -> datetime:
    """Same day of month `months` later, clamped to the month's end (Stripe's billing anchor)."""
    years, month0 = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)


def _half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers: the one rounding."""
    return (2 * numerator + denominator) // (2 * denominator)


class _Builder:
    """Holds the window and the shared state (used references, sequences) of one generation."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.start = config.window_start
        self.end = config.window_end
        self.customers: list[_Customer] = []
        self.invoices: list[_Invoice] = []
        self.payments: list[_Payment] = []
        self.credit_notes: list[_CreditNote] = []
        self._references: set[str] = set()
        self._usage_cache: dict[tuple[str, date], list[tuple[datetime, int, int]]] = {}

    def rng(self, *parts: str) -> random.Random:
        # A str seed is hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
        return random.Random("/".join((str(self.config.seed), *parts)))

    def at(self, offset_seconds: int) -> datetime:
        return self.start + timedelta(seconds=offset_seconds)

    # -- customers and subscriptions ---------------------------------------------------------

    def build(self) -> DemoData:
        sub_seq = 0
        for number in range(1, self.config.customers + 1):
            customer = self._customer(number)
            self.customers.append(customer)
            for existing in self._subscription_starts(customer):
                sub_seq += 1
                customer.subscriptions.append(
                    self._subscription(customer, f"sub_{sub_seq:06d}", existing)
                )
        self._plan_invoices()
        for invoice in self.invoices:
            self._bill(invoice)
        usage = self._usage_events()
        return self._rows(usage)

    def _customer(self, number: int) -> _Customer:
        customer_id = f"cus_{number:06d}"
        rng = self.rng("customer", customer_id)
        currency = _weighted(rng, _CURRENCIES)
        country = _weighted(rng, _COUNTRIES[currency])
        taxes = _TAX[country]
        tax_bp, tax_label, _ = rng.choices(taxes, weights=[t[2] for t in taxes])[0]
        first = rng.choice(_NAME_FIRST)
        name = f"{first} {rng.choice(_NAME_SECOND)} {_LEGAL_SUFFIX[country]}"
        local = rng.choice(_EMAIL_LOCAL)
        email = None if rng.random() < 0.03 else f"{local}@{first.lower()}-{number}.example"
        gateway = _weighted(rng, _GATEWAYS)
        send_invoice = rng.random() < 0.12
        coupon = rng.choice(_COUPONS) if rng.random() < 0.15 else None
        window = self.config.days * _DAY
        if rng.random() < 0.08:  # signed up inside the window
            created_at = self.at(rng.randrange(max(window - 2 * _HOUR, 1)))
            updated_at = created_at
        else:
            created_at = self.start - timedelta(
                days=rng.randint(20, 1500), seconds=rng.randrange(_DAY)
            )
            # Touched on the first day (see module doc) or edited later in the window.
            if rng.random() < 0.05:
                updated_at = self.at(rng.randrange(window))
            else:
                updated_at = self.at(rng.randrange(6 * _HOUR))
        return _Customer(
            customer_id=customer_id,
            number=number,
            name=name,
            email=email,
            country=country,
            currency=currency,
            tax_bp=tax_bp,
            tax_label=tax_label,
            gateway=gateway,
            send_invoice=send_invoice,
            coupon=coupon,
            created_at=created_at,
            updated_at=updated_at,
        )

    def _subscription_starts(self, customer: _Customer) -> list[bool]:
        """One flag per subscription: did it start before the window?"""
        rng = self.rng("customer-subscriptions", customer.customer_id)
        count = rng.choices((0, 1, 2), weights=(5, 80, 15))[0]
        if customer.created_at >= self.start:
            return [False] * count
        return [True] + [rng.random() < 0.5 for _ in range(count - 1)] if count else []

    def _subscription(
        self, customer: _Customer, subscription_id: str, before_window: bool
    ) -> _Subscription:
        rng = self.rng("subscription", subscription_id)
        plan = rng.choices(_PLANS, weights=[p.weight for p in _PLANS])[0]
        window = self.config.days * _DAY
        if before_window:
            room = (self.start - customer.created_at).days
            started_at = customer.created_at + timedelta(
                days=rng.randrange(min(room, 90)), seconds=rng.randint(60, 900)
            )
        elif customer.created_at >= self.start:  # new customer subscribes right away
            started_at = customer.created_at + timedelta(seconds=rng.randint(60, 1800))
        else:  # existing customer adds a second subscription
            started_at = self.at(rng.randrange(max(window - 2 * _HOUR, 1)))
        started_at = started_at.replace(microsecond=0)

        trial_cutoff = self.end - timedelta(days=14)
        roll = rng.random()
        if not before_window and started_at >= trial_cutoff and roll < 0.6:
            status = "trialing"  # trial outlasts the window, so nothing is invoiced yet
        elif roll < 0.10:
            status = "canceled"
        elif before_window and plan.interval == "month" and roll < 0.14:
            status = "past_due"
        else:
            status = "active"

        canceled_at = None
        if status == "canceled":
            lower = max(started_at + timedelta(minutes=1), self.start)
            canceled_at = lower + timedelta(
                seconds=rng.randrange(max(int((self.end - lower).total_seconds()), 1))
            )
        touched = self.at(rng.randrange(6 * _HOUR)) if before_window else started_at
        return _Subscription(
            subscription_id=subscription_id,
            customer=customer,
            plan=plan,
            status=status,
            unit_amount=plan.prices[customer.currency],
            started_at=started_at,
            canceled_at=canceled_at,
            updated_at=touched,
        )

    # -- invoices ----------------------------------------------------------------------------

    def _plan_invoices(self) -> None:
        """Decide which invoices exist and number them in issue order."""
        for customer in self.customers:
            for sub in customer.subscriptions:
                self.invoices.extend(self._renewals(sub))
            one_off = self._one_off_invoice(customer)
            if one_off is not None:
                self.invoices.append(one_off)
        self.invoices.sort(key=lambda inv: (inv.issued_at, inv.key))
        per_year: dict[int, int] = {}
        for seq, invoice in enumerate(self.invoices, start=1):
            year = invoice.issued_at.year
            per_year[year] = per_year.get(year, 0) + 1
            invoice.invoice_id = f"in_{seq:06d}"
            invoice.number = f"INV-{year}-{per_year[year]:06d}"

    def _renewals(self, sub: _Subscription) -> list[_Invoice]:
        if sub.status == "trialing":
            return []
        step = 1 if sub.plan.interval == "month" else 12
        anchor = sub.started_at
        months = (self.start.year - anchor.year) * 12 + self.start.month - anchor.month
        k = max(0, months // step - 1)
        out: list[_Invoice] = []
        while True:
            renewal = _add_months(anchor, k * step)
            if renewal >= self.end or (sub.canceled_at is not None and renewal >= sub.canceled_at):
                return out
            if renewal >= self.start:
                usage = None
                if sub.plan.metered and k > 0:
                    usage = (_add_months(anchor, (k - 1) * step), renewal)
                following = _add_months(anchor, (k + 1) * step)
                out.append(
                    _Invoice(
                        key=f"{sub.subscription_id}/{renewal.date().isoformat()}",
                        customer=sub.customer,
                        subscription=sub,
                        issued_at=renewal,
                        period_start=renewal.date(),
                        period_end=following.date(),
                        usage_period=usage,
                        latest=following >= self.end,
                    )
                )
            k += 1

    def _one_off_invoice(self, customer: _Customer) -> _Invoice | None:
        rng = self.rng("one-off", customer.customer_id)
        chance = 0.6 if not customer.subscriptions else 0.04 * self.config.days / 30
        if rng.random() >= chance:
            return None
        day = rng.randrange(self.config.days)
        issued_at = self.at(day * _DAY + rng.randint(8 * _HOUR, 18 * _HOUR))
        issued_at = max(issued_at, customer.created_at + timedelta(hours=1))
        if issued_at >= self.end:
            return None
        return _Invoice(
            key=f"{customer.customer_id}/one-off",
            customer=customer,
            subscription=None,
            issued_at=issued_at,
            period_start=issued_at.date(),
            period_end=issued_at.date(),
            usage_period=None,
        )

    def _bill(self, invoice: _Invoice) -> None:
        rng = self.rng("invoice", invoice.key)
        customer = invoice.customer
        currency = customer.currency
        sub = invoice.subscription
        if sub is not None:
            plan = sub.plan
            every = "monthly" if plan.interval == "month" else "yearly"
            invoice.lines.append(
                _Line(
                    "subscription",
                    plan.code,
                    f"{plan.name} plan, billed {every}",
                    Decimal(1),
                    sub.unit_amount,
                    invoice.period_start,
                    invoice.period_end,
                )
            )
            if invoice.usage_period is not None:
                invoice.lines.extend(self._usage_lines(sub, *invoice.usage_period))
            if customer.coupon is not None:
                code, pct = customer.coupon
                off = _half_up_div(sub.unit_amount * pct, 100)
                invoice.lines.append(
                    _Line("discount", code, f"{code}: {pct}% off {plan.name}", Decimal(1), -off)
                )
        if sub is None or rng.random() < 0.06:
            for _ in range(1 if sub is not None else rng.randint(1, 2)):
                code, description, prices, max_qty = rng.choice(_ONE_OFFS)
                qty = rng.randint(1, max_qty)
                invoice.lines.append(
                    _Line("one_off", code, description, Decimal(qty), qty * prices[currency])
                )
        subtotal = invoice.subtotal  # discounts never exceed the plan line: subtotal > 0
        tax = _half_up_div(subtotal * customer.tax_bp, 10_000)
        label = f"{customer.tax_label} ({customer.country})"
        invoice.lines.append(_Line("tax", None, label, Decimal(1), tax))
        self._settle(invoice, rng)

    def _usage_lines(self, sub: _Subscription, since: datetime, until: datetime) -> list[_Line]:
        totals = [0] * len(_METRICS)
        day = since.date()
        while day <= until.date():
            for occurred_at, index, units in self._usage_day(sub, day):
                if since <= occurred_at < until:
                    totals[index] += units
            day += timedelta(days=1)
        lines = []
        for metric, units in zip(_METRICS, totals, strict=True):
            if units == 0:
                continue
            # Lines bill 1,000 event units (1,000 calls; 1,000 thousandths of a GB = 1 GB).
            price = metric.prices[sub.customer.currency]
            lines.append(
                _Line(
                    "usage",
                    metric.code,
                    metric.description,
                    Decimal(units).scaleb(-3),
                    _half_up_div(units * price, 1000),
                    since.date(),
                    until.date(),
                )
            )
        return lines

    # -- payments ----------------------------------------------------------------------------

    def _settle(self, invoice: _Invoice, rng: random.Random) -> None:
        """Decide the invoice's fate and create its payments and credit notes."""
        issued = invoice.issued_at
        invoice.updated_at = issued
        sub = invoice.subscription
        if sub is not None:
            sub.updated_at = max(sub.updated_at, issued)  # a renewal moves the period
        if self.end - issued < timedelta(hours=1) or (sub is None and rng.random() < 0.15):
            invoice.status = "draft"  # Stripe finalizes renewals an hour after creating them
            return
        invoice.status = "open"
        first_attempt = issued + timedelta(seconds=rng.randint(300, _HOUR))
        if sub is not None and sub.status == "past_due" and invoice.latest:
            failures = self._dunning(invoice, first_attempt, rng)
            if failures:
                sub.updated_at = max(sub.updated_at, failures[0].created_at)
            return
        roll = rng.random()
        if roll < 0.02:  # charge fails, support voids the invoice and reissues by hand
            if first_attempt < self.end:
                self._payment(invoice, "charge", None, invoice.total, "failed", first_attempt, rng)
                invoice.updated_at = first_attempt
                voided = first_attempt + timedelta(seconds=rng.randint(_HOUR, 48 * _HOUR))
                if voided < self.end:
                    invoice.status = "void"
                    invoice.updated_at = voided
            return
        if roll < 0.04:
            failures = self._dunning(invoice, first_attempt, rng)
            if failures:
                marked = failures[-1].created_at + timedelta(days=1)
                if marked < self.end:
                    invoice.status = "uncollectible"
                    invoice.updated_at = marked
            return
        total = invoice.total
        if invoice.customer.send_invoice:
            paid_at = issued + timedelta(days=rng.randint(2, 35), seconds=rng.randrange(_DAY))
        else:
            paid_at = first_attempt
            failures_before = 0 if rng.random() >= 0.10 else rng.choice((1, 1, 2))
            for _ in range(failures_before):
                if paid_at >= self.end:
                    break
                self._payment(invoice, "charge", None, total, "failed", paid_at, rng)
                invoice.updated_at = paid_at
                paid_at += timedelta(days=rng.randint(1, 3), seconds=rng.randrange(_HOUR))
        if paid_at >= self.end:
            return
        if self.end - paid_at < timedelta(days=2) and rng.random() < 0.4:
            self._payment(invoice, "charge", None, total, "pending", paid_at, rng)
            invoice.updated_at = paid_at
            return
        charge = self._payment(invoice, "charge", None, total, "succeeded", paid_at, rng)
        invoice.status = "paid"
        invoice.updated_at = paid_at
        self._after_payment(invoice, charge, rng)

    def _dunning(
        self, invoice: _Invoice, first_attempt: datetime, rng: random.Random
    ) -> list[_Payment]:
        """Failed attempts on Stripe's default retry schedule (days 0, 3, 5, 7)."""
        failures = []
        for day in (0, 3, 5, 7):
            attempt = first_attempt + timedelta(days=day, seconds=rng.randrange(_HOUR))
            if attempt >= self.end:
                break
            total = invoice.total
            failures.append(self._payment(invoice, "charge", None, total, "failed", attempt, rng))
            invoice.updated_at = attempt
        return failures

    def _after_payment(self, invoice: _Invoice, charge: _Payment, rng: random.Random) -> None:
        total = charge.amount
        roll = rng.random()
        if roll < 0.06:
            refunded_at = charge.created_at + timedelta(
                days=rng.randint(1, 12), seconds=rng.randrange(_DAY)
            )
            if refunded_at >= self.end:
                return
            amount = total if rng.random() < 0.6 else max(1, total * rng.randint(10, 90) // 100)
            self._payment(invoice, "refund", charge, amount, "succeeded", refunded_at, rng)
            noted_at = refunded_at - timedelta(seconds=rng.randint(60, 1800))
            self.credit_notes.append(
                _CreditNote(invoice, amount, rng.choice(_REFUND_REASONS), noted_at)
            )
        elif roll < 0.10:
            disputed_at = charge.created_at + timedelta(
                days=rng.randint(1, 7), seconds=rng.randrange(_DAY)
            )
            if disputed_at >= self.end:
                return
            dispute = self._payment(
                invoice, "chargeback", charge, total, "succeeded", disputed_at, rng
            )
            if rng.random() < 0.7:  # the merchant wins the dispute
                won_at = disputed_at + timedelta(
                    days=rng.randint(2, 7), seconds=rng.randrange(_DAY)
                )
                if won_at < self.end:
                    self._payment(
                        invoice, "chargeback_reversal", dispute, total, "succeeded", won_at, rng
                    )
        elif roll < 0.14:
            noted_at = charge.created_at + timedelta(
                days=rng.randint(1, 10), seconds=rng.randrange(_DAY)
            )
            if noted_at < self.end:
                amount = max(1, invoice.subtotal * rng.randint(5, 25) // 100)
                self.credit_notes.append(
                    _CreditNote(invoice, amount, rng.choice(_CREDIT_REASONS), noted_at)
                )

    def _payment(
        self,
        invoice: _Invoice,
        kind: str,
        original: _Payment | None,
        amount: int,
        status: str,
        created_at: datetime,
        rng: random.Random,
    ) -> _Payment:
        updated_at = created_at
        if kind == "refund":  # refunds settle asynchronously; still pending at the window end
            settled = created_at + timedelta(seconds=rng.randint(60, _HOUR))
            if settled < self.end:
                updated_at = settled
            else:
                status = "pending"
        if kind == "chargeback_reversal":
            assert original is not None
            reference = original.reference  # the dispute id names both legs
        else:
            reference = self._reference(invoice.customer.gateway, kind, rng)
        payment = _Payment(
            seq=len(self.payments),
            invoice=invoice,
            kind=kind,
            original=original,
            reference=reference,
            amount=amount,
            status=status,
            created_at=created_at,
            updated_at=updated_at,
        )
        self.payments.append(payment)
        return payment

    def _reference(self, gateway: str, kind: str, rng: random.Random) -> str:
        """A fresh gateway id in the gateway's own format, unique within the data set."""
        while True:
            if gateway == "stripe":
                reference = _STRIPE_PREFIX[kind] + "".join(rng.choices(_ALNUM, k=24))
            elif gateway == "adyen":  # PSP reference
                reference = "".join(rng.choices(_UPPER_ALNUM, k=16))
            elif gateway == "paypal":  # transaction id
                reference = "".join(rng.choices(_UPPER_ALNUM, k=17))
            else:  # braintree transaction id
                reference = "".join(rng.choices(_LOWER_ALNUM, k=8))
            if reference not in self._references:
                self._references.add(reference)
                return reference

    # -- usage -------------------------------------------------------------------------------

    def _usage_day(self, sub: _Subscription, day: date) -> list[tuple[datetime, int, int]]:
        """(occurred_at, metric index, units) of one subscription-day, cached.

        Seeded by subscription and day alone, so the invoice that bills a period and the events
        of the same period agree exactly, even for days outside the window.
        """
        key = (sub.subscription_id, day)
        cached = self._usage_cache.get(key)
        if cached is not None:
            return cached
        rng = self.rng("usage", sub.subscription_id, day.isoformat())
        midnight = datetime.combine(day, time(), UTC)
        weekend = day.weekday() >= 5
        scale = sub.plan.scale
        events: list[tuple[datetime, int, int]] = []
        for _ in range(rng.randint(3, 6) if weekend else rng.randint(7, 12)):
            at = midnight + timedelta(seconds=rng.randrange(_DAY))
            events.append((at, 0, rng.randint(20, 1500) * scale))
        for _ in range(rng.randint(1, 3)):
            at = midnight + timedelta(seconds=rng.randrange(_DAY))
            events.append((at, 1, rng.randint(1, 4000) * scale))
        alive = [
            e
            for e in events
            if e[0] >= sub.started_at and (sub.canceled_at is None or e[0] < sub.canceled_at)
        ]
        alive.sort()
        self._usage_cache[key] = alive
        return alive

    def _usage_events(self) -> list[tuple[datetime, _Subscription, int, int]]:
        events: list[tuple[datetime, _Subscription, int, int]] = []
        for customer in self.customers:
            for sub in customer.subscriptions:
                if not sub.plan.metered:
                    continue
                for offset in range(self.config.days):
                    day = self.config.start + timedelta(days=offset)
                    for occurred_at, metric, units in self._usage_day(sub, day):
                        events.append((occurred_at, sub, metric, units))
        # Stable sort: ties keep the deterministic generation order.
        events.sort(key=lambda e: (e[0], e[1].subscription_id, e[2]))
        return events

    # -- rows --------------------------------------------------------------------------------

    def _rows(self, usage: list[tuple[datetime, _Subscription, int, int]]) -> DemoData:
        self.payments.sort(key=lambda p: (p.created_at, p.seq))
        for i, payment in enumerate(self.payments, start=1):
            payment.payment_id = f"pay_{i:06d}"
        self.credit_notes.sort(key=lambda c: (c.issued_at, c.invoice.invoice_id))

        customers: list[CustomerRow] = [
            {
                "customer_id": c.customer_id,
                "name": c.name,
                "email": c.email,
                "country": c.country,
                "currency": c.currency,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
            }
            for c in self.customers
        ]
        subscriptions: list[SubscriptionRow] = [
            {
                "subscription_id": s.subscription_id,
                "customer_id": s.customer.customer_id,
                "plan_code": s.plan.code,
                "status": s.status,
                "currency": s.customer.currency,
                "unit_amount_minor": s.unit_amount,
                "interval": s.plan.interval,
                "started_at": s.started_at,
                "canceled_at": s.canceled_at,
                "updated_at": max(s.updated_at, s.canceled_at or s.updated_at),
            }
            for c in self.customers
            for s in c.subscriptions
        ]
        invoices: list[InvoiceRow] = []
        lines: list[InvoiceLineRow] = []
        for inv in self.invoices:
            assert inv.updated_at is not None
            net_days = 30 if inv.customer.send_invoice else 14
            invoices.append(
                {
                    "invoice_id": inv.invoice_id,
                    "invoice_number": inv.number,
                    "customer_id": inv.customer.customer_id,
                    "subscription_id": (
                        inv.subscription.subscription_id if inv.subscription else None
                    ),
                    "currency": inv.customer.currency,
                    "status": inv.status,
                    "issued_at": inv.issued_at,
                    "due_at": inv.issued_at + timedelta(days=net_days),
                    "period_start": inv.period_start,
                    "period_end": inv.period_end,
                    "subtotal_minor": inv.subtotal,
                    "tax_minor": inv.tax,
                    "total_minor": inv.total,
                    "updated_at": inv.updated_at,
                }
            )
            for line in inv.lines:
                lines.append(
                    {
                        "line_id": f"il_{len(lines) + 1:07d}",
                        "invoice_id": inv.invoice_id,
                        "kind": line.kind,
                        "product_code": line.product_code,
                        "description": line.description,
                        "quantity": line.quantity,
                        "amount_minor": line.amount,
                        "service_start": line.service_start,
                        "service_end": line.service_end,
                    }
                )
        payments: list[PaymentRow] = [
            {
                "payment_id": p.payment_id,
                "customer_id": p.invoice.customer.customer_id,
                "invoice_id": p.invoice.invoice_id,
                "kind": p.kind,
                "original_payment_id": p.original.payment_id if p.original else None,
                "gateway": p.invoice.customer.gateway,
                "gateway_reference": p.reference,
                "amount_minor": p.amount,
                "currency": p.invoice.customer.currency,
                "status": p.status,
                "created_at": p.created_at,
                "updated_at": p.updated_at,
            }
            for p in self.payments
        ]
        credit_notes: list[CreditNoteRow] = [
            {
                "credit_note_id": f"cn_{i:06d}",
                "invoice_id": n.invoice.invoice_id,
                "amount_minor": n.amount,
                "currency": n.invoice.customer.currency,
                "reason": n.reason,
                "issued_at": n.issued_at,
                "updated_at": n.issued_at,
            }
            for i, n in enumerate(self.credit_notes, start=1)
        ]
        usage_events: list[UsageEventRow] = [
            {
                "event_id": f"evt_{i:08d}",
                "customer_id": sub.customer.customer_id,
                "subscription_id": sub.subscription_id,
                "metric": _METRICS[metric].code,
                "quantity": Decimal(units).scaleb(-_METRICS[metric].event_places),
                "occurred_at": occurred_at,
            }
            for i, (occurred_at, sub, metric, units) in enumerate(usage, start=1)
        ]
        return DemoData(
            config=self.config,
            customers=customers,
            subscriptions=subscriptions,
            invoices=invoices,
            invoice_lines=lines,
            payments=payments,
            credit_notes=credit_notes,
            usage_events=usage_events,
        )
