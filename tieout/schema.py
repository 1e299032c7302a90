"""The reference billing schema: the documented contract tieout's default mapping reads.

One declaration (`TABLES`) drives three things that must never drift apart: the SQLAlchemy
metadata / DDL users can create (Postgres and SQLite), the canonical column list every
extraction returns, and the Arrow types of the canonical frames written to the lake.
Money is always an integer number of minor units beside an ISO 4217 code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pyarrow as pa
import sqlalchemy as sa

Kind = Literal["text", "code2", "code3", "money", "int", "numeric", "timestamp", "date"]

#: The Arrow type each column kind has in a canonical frame.
ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    "text": pa.string(),
    "code2": pa.string(),
    "code3": pa.string(),
    "money": pa.int64(),
    "int": pa.int64(),
    "numeric": pa.decimal128(38, 9),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    choices: tuple[str, ...] = ()
    references: str | None = None  # "table.column"
    unique: bool = False
    positive: bool = False
    doc: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    primary_key: str
    #: Column whose value places a row in a daily partition.
    window_column: str
    #: For tables without their own change timestamp: the parent whose column is the window.
    window_parent: tuple[str, str, str] | None = None  # (parent table, fk column, parent pk)
    doc: str = ""
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def money_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "money")

    @property
    def currency_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "code3")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in self.columns]
        )


GATEWAYS: Final = ("stripe", "adyen", "paypal", "braintree")

TABLES: Final[dict[str, TableSpec]] = {
    t.name: t
    for t in (
        TableSpec(
            "customers",
            (
                Column("customer_id", "text"),
                Column("name", "text"),
                Column("email", "text", nullable=True, doc="personal data: masked in reports"),
                Column("country", "code2", nullable=True, doc="ISO 3166-1 alpha-2"),
                Column("currency", "code3", doc="ISO 4217 billing currency"),
                Column("created_at", "timestamp"),
                Column("updated_at", "timestamp"),
            ),
            primary_key="customer_id",
            window_column="updated_at",
        ),
        TableSpec(
            "subscriptions",
            (
                Column("subscription_id", "text"),
                Column("customer_id", "text", references="customers.customer_id"),
                Column("plan_code", "text"),
                Column("status", "text", choices=("active", "trialing", "past_due", "canceled")),
                Column("currency", "code3"),
                Column("unit_amount_minor", "money"),
                Column("interval", "text", choices=("month", "year")),
                Column("started_at", "timestamp"),
                Column("canceled_at", "timestamp", nullable=True),
                Column("updated_at", "timestamp"),
            ),
            primary_key="subscription_id",
            window_column="updated_at",
        ),
        TableSpec(
            "invoices",
            (
                Column("invoice_id", "text"),
                Column("invoice_number", "text", unique=True),
                Column("customer_id", "text", references="customers.customer_id"),
                Column(
                    "subscription_id",
                    "text",
                    nullable=True,
                    references="subscriptions.subscription_id",
                ),
                Column("currency", "code3"),
                Column(
                    "status", "text", choices=("draft", "open", "paid", "void", "uncollectible")
                ),
                Column("issued_at", "timestamp"),
                Column("due_at", "timestamp"),
                Column("period_start", "date"),
                Column("period_end", "date"),
                Column("subtotal_minor", "money"),
                Column("tax_minor", "money"),
                Column("total_minor", "money"),
                Column("updated_at", "timestamp"),
            ),
            primary_key="invoice_id",
            window_column="updated_at",
        ),
        TableSpec(
            "invoice_lines",
            (
                Column("line_id", "text"),
                Column("invoice_id", "text", references="invoices.invoice_id"),
                Column(
                    "kind", "text", choices=("subscription", "usage", "one_off", "discount", "tax")
                ),
                Column("product_code", "text", nullable=True),
                Column("description", "text", nullable=True),
                Column("quantity", "numeric"),
                Column("amount_minor", "money", doc="discounts are negative"),
                Column("service_start", "date", nullable=True),
                Column("service_end", "date", nullable=True),
            ),
            primary_key="line_id",
            window_column="updated_at",
            window_parent=("invoices", "invoice_id", "invoice_id"),
            doc="Lines travel with their invoice: a line is in the partition of its invoice.",
        ),
        TableSpec(
            "payments",
            (
                Column("payment_id", "text"),
                Column("customer_id", "text", references="customers.customer_id"),
                Column("invoice_id", "text", nullable=True, references="invoices.invoice_id"),
                Column(
                    "kind",
                    "text",
                    choices=("charge", "refund", "chargeback", "chargeback_reversal"),
                ),
                Column(
                    "original_payment_id",
                    "text",
                    nullable=True,
                    references="payments.payment_id",
                ),
                Column("gateway", "text", doc="stripe, adyen, paypal, braintree, ..."),
                Column("gateway_reference", "text", nullable=True),
                Column("amount_minor", "money", positive=True, doc="magnitude; kind gives sign"),
                Column("currency", "code3"),
                Column("status", "text", choices=("succeeded", "failed", "pending")),
                Column("created_at", "timestamp"),
                Column("updated_at", "timestamp"),
            ),
            primary_key="payment_id",
            window_column="updated_at",
        ),
        TableSpec(
            "credit_notes",
            (
                Column("credit_note_id", "text"),
                Column("invoice_id", "text", references="invoices.invoice_id"),
                Column("amount_minor", "money"),
                Column("currency", "code3"),
                Column("reason", "text", nullable=True),
                Column("issued_at", "timestamp"),
                Column("updated_at", "timestamp"),
            ),
            primary_key="credit_note_id",
            window_column="updated_at",
        ),
        TableSpec(
            "usage_events",
            (
                Column("event_id", "text"),
                Column("customer_id", "text", references="customers.customer_id"),
                Column("subscription_id", "text", references="subscriptions.subscription_id"),
                Column("metric", "text"),
                Column("quantity", "numeric"),
                Column("occurred_at", "timestamp"),
            ),
            primary_key="event_id",
            window_column="occurred_at",
        ),
    )
}

#: Canonical columns of the daily usage aggregate (computed in the database, never row by row).
USAGE_DAILY_SCHEMA: Final = pa.schema(
    [
        pa.field("usage_date", pa.date32(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("subscription_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("quantity", pa.decimal128(38, 9), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
    ]
)


def _sa_type(col: Column) -> sa.types.TypeEngine[Any]:
    mapping: dict[Kind, sa.types.TypeEngine[Any]] = {
        "text": sa.Text(),
        "code2": sa.CHAR(2),
        "code3": sa.CHAR(3),
        "money": sa.BigInteger(),
        "int": sa.BigInteger(),
        "numeric": sa.Numeric(28, 9, asdecimal=True),
        "timestamp": sa.DateTime(timezone=True),
        "date": sa.Date(),
    }
    return mapping[col.kind]


def reference_metadata(schema: str | None = None) -> sa.MetaData:
    """SQLAlchemy metadata of the reference schema, in `schema` (None for SQLite)."""
    md = sa.MetaData(schema=schema)
    prefix = f"{schema}." if schema else ""
    for spec in TABLES.values():
        cols: list[sa.schema.SchemaItem] = []
        for c in spec.columns:
            args: list[sa.schema.SchemaItem] = []
            if c.references:
                args.append(sa.ForeignKey(prefix + c.references))
            cols.append(
                sa.Column(
                    c.name,
                    _sa_type(c),
                    *args,
                    primary_key=c.name == spec.primary_key,
                    nullable=c.nullable,
                    unique=c.unique or None,
                )
            )
            if c.choices:
                allowed = ", ".join(f"'{v}'" for v in c.choices)
                cols.append(sa.CheckConstraint(f'"{c.name}" IN ({allowed})'))
            if c.positive:
                cols.append(sa.CheckConstraint(f'"{c.name}" > 0'))
        sa.Table(spec.name, md, *cols)
    for spec in TABLES.values():
        table = md.tables[f"{prefix}{spec.name}"]
        if spec.window_parent is None:
            sa.Index(f"ix_{spec.name}_{spec.window_column}", table.c[spec.window_column])
        else:
            sa.Index(f"ix_{spec.name}_{spec.window_parent[1]}", table.c[spec.window_parent[1]])
    return md


def create_reference_schema(engine: sa.Engine, schema: str | None = None) -> sa.MetaData:
    """Create the reference tables (and the Postgres schema) if they do not exist."""
    if engine.dialect.name == "sqlite":
        schema = None
    md = reference_metadata(schema)
    with engine.begin() as conn:
        if schema is not None:
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        md.create_all(conn)
    return md


def ddl(dialect: str, schema: str | None = None) -> str:
    """The reference DDL as text, for documentation and DBAs who create tables by hand."""
    from sqlalchemy.dialects import postgresql, sqlite

    dia: sa.Dialect = (
        postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    )
    md = reference_metadata(schema if dialect == "postgresql" else None)
    out = []
    for table in md.sorted_tables:
        out.append(str(sa.schema.CreateTable(table).compile(dialect=dia)).strip() + ";")
        for idx in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(str(sa.schema.CreateIndex(idx).compile(dialect=dia)).strip() + ";")
    return "\n\n".join(out) + "\n"
