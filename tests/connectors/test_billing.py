"""The billing connector against SQLite and Postgres: checks that name table, column and setting,
table/column/query mappings, the [start, end) window, and bad values quarantined, not loaded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tieout.canonical import Canonical
from tieout.connectors.billing import BillingDatabase
from tieout.demo import DemoConfig, generate, write_demo_data
from tieout.errors import SchemaMismatchError
from tieout.extraction import extract_frame, read_canonical
from tieout.schema import TABLES, create_reference_schema
from tieout.settings import TableMapping

CFG = DemoConfig(start=date(2026, 3, 1), days=6, customers=60)
ALL_DAYS = [CFG.start + timedelta(days=i) for i in range(CFG.days)]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Source:
    url: str
    schema: str | None
    engine: sa.Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def metadata(self) -> sa.MetaData:
        return sa.MetaData(schema=self.schema)

    def qual(self, name: str) -> str:
        return f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'

    def db(self, **mappings: TableMapping) -> BillingDatabase:
        return BillingDatabase(self.url, self.schema, mappings)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.text(f"SELECT COUNT(*) FROM {self.qual(table)}")).scalar_one()
            )

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names(schema=self.schema))


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Source]:
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'billing.db'}", None
    else:
        url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
    engine = sa.create_engine(url)
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
    yield Source(url, schema, engine)
    engine.dispose()


@pytest.fixture
def demo(source: Source) -> Source:
    write_demo_data(source.url, CFG, schema=source.schema)
    return source


def canonical(db: BillingDatabase, table: str, days: list[date], tz: str = "UTC") -> Canonical:
    try:
        return read_canonical(db, table, days, tz)
    finally:
        db.dispose()


def by_key(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by(key)


# -- check(): fail early, naming table, column and setting -----------------------------------


def test_check_passes_on_the_reference_schema(source: Source) -> None:
    create_reference_schema(source.engine, source.schema)
    db = source.db()
    try:
        db.check()
    finally:
        db.dispose()


def test_check_names_a_missing_table_and_its_setting(source: Source) -> None:
    md = create_reference_schema(source.engine, source.schema)
    with source.engine.begin() as conn:
        credit_notes = next(t for t in md.sorted_tables if t.name == "credit_notes")
        credit_notes.drop(conn)
    db = source.db()
    try:
        db.check(["payments", "invoices"])  # tables that exist are fine
        with pytest.raises(SchemaMismatchError) as info:
            db.check()
    finally:
        db.dispose()
    msg = str(info.value)
    shown = f"{source.schema}.credit_notes" if source.schema else "credit_notes"
    assert f"billing table {shown} does not exist" in msg
    assert "[billing.tables.credit_notes]" in msg


def test_check_names_a_mapped_table_that_does_not_exist(source: Source) -> None:
    create_reference_schema(source.engine, source.schema)
    db = source.db(payments=TableMapping(table="payment_ledger"))
    try:
        with pytest.raises(SchemaMismatchError) as info:
            db.check(["payments"])
    finally:
        db.dispose()
    msg = str(info.value)
    assert "payment_ledger does not exist (canonical table payments)" in msg
    assert "[billing.tables.payments]" in msg


def test_check_of_invoice_lines_also_needs_the_parent_window(source: Source) -> None:
    create_reference_schema(source.engine, source.schema)
    with source.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {source.qual('invoices')} RENAME TO invoices_old"))
    db = source.db()
    try:
        with pytest.raises(SchemaMismatchError, match=r"invoices does not exist.*canonical table"):
            db.check(["invoice_lines"])
    finally:
        db.dispose()


# A payments table with other names: renamed table and columns, one a reserved word.
RENAMED = {
    "payment_id": "id",
    "customer_id": "customer",
    "invoice_id": "invoice",
    "kind": "order",
    "amount_minor": "amount_cents",
    "updated_at": "modified_at",
}


def payment_transactions(source: Source, *, drop: str | None = None) -> sa.Table:
    """Create `payment_transactions` (payments under other names) holding the demo payments."""
    types: dict[str, Any] = {
        "text": sa.Text(),
        "code3": sa.Text(),
        "money": sa.BigInteger(),
        "timestamp": sa.DateTime(timezone=True),
    }
    cols = [
        sa.Column(RENAMED.get(c.name, c.name), types[c.kind], nullable=c.nullable)
        for c in TABLES["payments"].columns
        if c.name != drop
    ]
    table = sa.Table("payment_transactions", source.metadata(), *cols)
    rows = [
        {RENAMED.get(k, k): v for k, v in row.items() if k != drop}
        for row in generate(CFG).payments
    ]
    with source.engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), rows)
    return table


def test_check_names_a_missing_column_its_table_and_setting(source: Source) -> None:
    payment_transactions(source, drop="gateway_reference")
    db = source.db(payments=TableMapping(table="payment_transactions", columns=RENAMED))
    try:
        with pytest.raises(SchemaMismatchError) as info:
            db.check(["payments"])
    finally:
        db.dispose()
    msg = str(info.value)
    assert "column 'gateway_reference' of billing table" in msg
    assert "payment_transactions does not exist (canonical payments.gateway_reference)" in msg
    assert "amount_cents" in msg  # existing columns are listed
    assert "[billing.tables.payments] columns" in msg


def test_check_names_a_mapped_column_that_does_not_exist(source: Source) -> None:
    payment_transactions(source)
    mapping = TableMapping(
        table="payment_transactions", columns={**RENAMED, "amount_minor": "amount_in_cents"}
    )
    db = source.db(payments=mapping)
    try:
        with pytest.raises(SchemaMismatchError) as info:
            db.check(["payments"])
    finally:
        db.dispose()
    assert "column 'amount_in_cents'" in str(info.value)
    assert "canonical payments.amount_minor" in str(info.value)


# -- mappings -------------------------------------------------------------------------------


def test_renamed_table_and_columns_extract_to_the_canonical_rows(source: Source) -> None:
    payment_transactions(source)
    db = source.db(payments=TableMapping(table="payment_transactions", columns=RENAMED))
    db.check(["payments"])
    got = canonical(db, "payments", ALL_DAYS)
    expected = generate(CFG).to_arrow("payments")
    assert expected.num_rows > 5
    assert got.quarantine.num_rows == 0
    assert got.rows.schema.equals(TABLES["payments"].arrow_schema())
    assert by_key(got.rows, "payment_id").equals(by_key(expected, "payment_id"))


def test_renamed_mapping_only_reads_the_window(source: Source) -> None:
    payment_transactions(source)
    day = date(2026, 3, 4)
    got = canonical(
        source.db(payments=TableMapping(table="payment_transactions", columns=RENAMED)),
        "payments",
        [day],
    )
    expected = sorted(
        p["payment_id"] for p in generate(CFG).payments if p["updated_at"].date() == day
    )
    assert expected
    assert sorted(got.rows.column("payment_id").to_pylist()) == expected


def test_query_mapping_extracts_to_the_canonical_rows(source: Source) -> None:
    payment_transactions(source)
    query = f"""
        WITH t AS (SELECT * FROM {source.qual("payment_transactions")})
        SELECT id AS payment_id, customer AS customer_id, invoice AS invoice_id,
               "order" AS kind, original_payment_id, gateway, gateway_reference,
               amount_cents AS amount_minor, currency, status, created_at,
               modified_at AS updated_at
        FROM t
    """
    db = source.db(payments=TableMapping(query=query))
    db.check(["payments"])
    got = canonical(db, "payments", ALL_DAYS)
    expected = generate(CFG).to_arrow("payments")
    assert by_key(got.rows, "payment_id").equals(by_key(expected, "payment_id"))
    day = date(2026, 3, 2)
    one_day = canonical(source.db(payments=TableMapping(query=query)), "payments", [day])
    assert sorted(one_day.rows.column("payment_id").to_pylist()) == sorted(
        p["payment_id"] for p in generate(CFG).payments if p["updated_at"].date() == day
    )


def test_query_mapping_missing_a_column_is_named(source: Source) -> None:
    payment_transactions(source)
    source_table = source.qual("payment_transactions")
    query = f"SELECT id AS payment_id, modified_at AS updated_at FROM {source_table}"
    db = source.db(payments=TableMapping(query=query))
    try:
        with pytest.raises(SchemaMismatchError) as info:
            db.check(["payments"])
    finally:
        db.dispose()
    msg = str(info.value)
    prefix = "[billing.tables.payments] query does not return column(s) "
    assert msg.startswith(prefix)
    missing = msg.removeprefix(prefix).split(";")[0].split(", ")
    assert sorted(missing) == sorted(
        set(TABLES["payments"].column_names) - {"payment_id", "updated_at"}
    )


def test_query_mapping_that_fails_in_the_database_is_reported(source: Source) -> None:
    create_reference_schema(source.engine, source.schema)
    db = source.db(payments=TableMapping(query="SELECT * FROM no_such_table_anywhere"))
    try:
        with pytest.raises(SchemaMismatchError, match=r"\[billing\.tables\.payments\] query fails"):
            db.check(["payments"])
    finally:
        db.dispose()


def test_sql_in_mappings_cannot_drop_or_delete(demo: Source) -> None:
    source = demo
    before = {t: source.count(t) for t in TABLES}
    assert before["customers"] > 0
    payments = source.qual("payments")
    customers = source.qual("customers")

    # A comment holding SQL is just a comment.
    commented = TableMapping(query=f"SELECT * FROM {payments} /* DROP TABLE customers */")
    plain = canonical(source.db(), "payments", ALL_DAYS)
    got = canonical(source.db(payments=commented), "payments", ALL_DAYS)
    assert got.rows.equals(plain.rows)

    # A data-modifying CTE is a single WITH ... statement, so it passes validation, but the
    # sub-select tieout wraps it in makes the database refuse it (check and read alike).
    sneaky = TableMapping(
        query=f"WITH gone AS (DELETE FROM {customers} RETURNING *) SELECT * FROM {payments}"
    )
    db = source.db(payments=sneaky)
    try:
        with pytest.raises(SchemaMismatchError):
            db.check(["payments"])
        with pytest.raises(SchemaMismatchError):
            db.read_table("payments", T0 - timedelta(days=30), T0 + timedelta(days=30))
    finally:
        db.dispose()

    # Stacked statements and SQL in names never get as far as a BillingDatabase.
    for bad in (
        {"query": f"SELECT * FROM {payments}; DROP TABLE customers"},
        {"query": f"SELECT * FROM {payments} -- ; DROP TABLE customers"},
        {"query": f"SELECT * FROM {payments} /* ; DROP TABLE customers */"},
        {"query": f"DROP TABLE {customers}"},
        {"query": f"SELECT * FROM {payments}) AS q; DROP TABLE customers; --"},
        {"table": "payments; DROP TABLE customers"},
        {"table": 'payments" ; DROP TABLE customers; --'},
        {"columns": {"amount_minor": 'amount_minor" FROM payments; DROP TABLE customers; --'}},
    ):
        # pydantic's ValidationError is a ValueError
        with pytest.raises(
            ValueError, match=r"single statement|single SELECT|plain SQL identifier"
        ):
            TableMapping.model_validate(bad)

    assert source.tables() >= set(TABLES)
    assert {t: source.count(t) for t in TABLES} == before


def test_query_mapping_ending_in_a_line_comment_works(demo: Source) -> None:
    source = demo
    query = f"SELECT * FROM {source.qual('payments')}\n-- all payments, reference layout"
    db = source.db(payments=TableMapping(query=query))
    db.check(["payments"])
    got = canonical(db, "payments", ALL_DAYS)
    assert got.rows.num_rows == len(generate(CFG).payments)


# -- the window: [start, end), invoice lines with their invoice -------------------------------


def insert_customers(source: Source, stamps: dict[str, datetime]) -> None:
    md = create_reference_schema(source.engine, source.schema)
    customers = next(t for t in md.sorted_tables if t.name == "customers")
    with source.engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {
                    "customer_id": cid,
                    "name": cid,
                    "email": None,
                    "country": None,
                    "currency": "USD",
                    "created_at": at,
                    "updated_at": at,
                }
                for cid, at in stamps.items()
            ],
        )


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_window_includes_its_start_and_excludes_its_end(source: Source, tz: str) -> None:
    day = date(2026, 3, 2)
    start = datetime(2026, 3, 2, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    end = datetime(2026, 3, 3, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    us = timedelta(microseconds=1)
    insert_customers(
        source,
        {
            "before_start": start - us,
            "at_start": start,
            "after_start": start + us,
            "before_end": end - us,
            "at_end": end,
        },
    )
    got = canonical(source.db(), "customers", [day], tz)
    assert sorted(got.rows.column("customer_id").to_pylist()) == [
        "after_start",
        "at_start",
        "before_end",
    ]
    # The window values come back as the exact instants, in UTC.
    assert sorted(got.window.to_pylist()) == [start, start + us, end - us]
    # Nothing falls between two days: the neighbours take the boundary rows.
    prev_day = canonical(source.db(), "customers", [day - timedelta(days=1)], tz)
    next_day = canonical(source.db(), "customers", [day + timedelta(days=1)], tz)
    assert prev_day.rows.column("customer_id").to_pylist() == ["before_start"]
    assert next_day.rows.column("customer_id").to_pylist() == ["at_end"]


def test_read_refuses_naive_window_bounds(source: Source) -> None:
    create_reference_schema(source.engine, source.schema)
    db = source.db()
    try:
        with pytest.raises(ValueError, match="timezone-aware"):
            db.read_table("customers", datetime(2026, 3, 1), datetime(2026, 3, 2))
    finally:
        db.dispose()


def test_invoice_lines_follow_their_invoice_updated_at(source: Source) -> None:
    md = create_reference_schema(source.engine, source.schema)
    t = {tb.name: tb for tb in md.sorted_tables}
    day1, day2 = date(2026, 3, 1), date(2026, 3, 2)
    at1, at2 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC), datetime(2026, 3, 2, 0, 1, tzinfo=UTC)

    def invoice(iid: str, updated: datetime) -> dict[str, Any]:
        return {
            "invoice_id": iid,
            "invoice_number": f"N-{iid}",
            "customer_id": "c1",
            "subscription_id": None,
            "currency": "EUR",
            "status": "open",
            "issued_at": T0 - timedelta(days=20),
            "due_at": T0,
            "period_start": date(2026, 2, 1),
            "period_end": date(2026, 3, 1),
            "subtotal_minor": 100,
            "tax_minor": 0,
            "total_minor": 100,
            "updated_at": updated,
        }

    def line(lid: str, iid: str) -> dict[str, Any]:
        return {
            "line_id": lid,
            "invoice_id": iid,
            "kind": "one_off",
            "product_code": None,
            "description": None,
            "quantity": 1,
            "amount_minor": 50,
            "service_start": None,
            "service_end": None,
        }

    with source.engine.begin() as conn:
        conn.execute(
            t["customers"].insert(),
            [
                {
                    "customer_id": "c1",
                    "name": "c",
                    "email": None,
                    "country": None,
                    "currency": "EUR",
                    "created_at": T0 - timedelta(days=90),
                    # The lines' own customer/created timestamps must not matter.
                    "updated_at": T0 + timedelta(days=10),
                }
            ],
        )
        conn.execute(t["invoices"].insert(), [invoice("i1", at1), invoice("i2", at2)])
        conn.execute(
            t["invoice_lines"].insert(), [line("l1", "i1"), line("l2", "i1"), line("l3", "i2")]
        )

    def lines_on(day: date) -> list[str]:
        got = canonical(source.db(), "invoice_lines", [day])
        return sorted(got.rows.column("line_id").to_pylist())

    assert lines_on(day1) == ["l1", "l2"]
    assert lines_on(day2) == ["l3"]
    got = canonical(source.db(), "invoice_lines", [day1, day2])
    assert dict(
        zip(got.rows.column("line_id").to_pylist(), got.window.to_pylist(), strict=True)
    ) == {
        "l1": at1,
        "l2": at1,
        "l3": at2,
    }
    # The invoice changes on day 2: its lines move with it.
    with source.engine.begin() as conn:
        conn.execute(
            t["invoices"].update().where(t["invoices"].c.invoice_id == "i1").values(updated_at=at2)
        )
    assert lines_on(day1) == []
    assert lines_on(day2) == ["l1", "l2", "l3"]


# -- bad values: quarantined with key, column, value and reason -------------------------------


def bad_payments_table(source: Source, money: sa.types.TypeEngine[Any], name: str) -> sa.Table:
    """Payments with loose types (text currency, `money` amount) and no NOT NULL anywhere."""
    cols = []
    for c in TABLES["payments"].columns:
        if c.kind == "timestamp":
            typ: sa.types.TypeEngine[Any] = sa.DateTime(timezone=True)
        elif c.kind == "money":
            typ = money
        else:
            typ = sa.Text()
        cols.append(sa.Column(c.name, typ, nullable=True))
    table = sa.Table(name, source.metadata(), *cols)
    table.create(source.engine)
    return table


def payment(pid: str, amount: Any, currency: Any, **extra: Any) -> dict[str, Any]:
    row = {
        "payment_id": pid,
        "customer_id": "c1",
        "invoice_id": None,
        "kind": "charge",
        "original_payment_id": None,
        "gateway": "stripe",
        "gateway_reference": f"ch_{pid}",
        "amount_minor": amount,
        "currency": currency,
        "status": "succeeded",
        "created_at": T0,
        "updated_at": T0 + timedelta(minutes=int(pid.removeprefix("p"))),
    }
    row.update(extra)
    return row


def test_bad_values_are_quarantined_and_good_rows_load(source: Source) -> None:
    table = bad_payments_table(source, sa.Text(), "payments_raw")
    rows = [
        payment("p1", " 1250 ", "USD"),
        payment("p2", "12.50", "USD"),
        payment("p3", "abc", "USD"),
        payment("p4", None, "USD"),
        payment("p5", "100", "XYZ"),
        payment("p6", "-200", " usd "),
        payment("p7", "300", None),
        payment("p8", "400", "eur", gateway=None),
        payment("p9", "1e3", "QQQ"),
        payment("p10", "9223372036854775807000", "JPY"),
    ]
    with source.engine.begin() as conn:
        conn.execute(table.insert(), rows)
    got = canonical(source.db(payments=TableMapping(table="payments_raw")), "payments", [T0.date()])

    good = got.rows.select(["payment_id", "amount_minor", "currency"]).to_pylist()
    assert sorted(good, key=lambda r: r["payment_id"]) == [
        {"payment_id": "p1", "amount_minor": 1250, "currency": "USD"},
        {"payment_id": "p6", "amount_minor": -200, "currency": "USD"},  # normalized, kept
    ]
    assert got.rows.schema.field("amount_minor").type == pa.int64()
    assert got.window.length() == 2

    updated = {r["payment_id"]: r["updated_at"] for r in rows}
    problems = {(q["primary_key"], q["column"], q["value"]): q for q in got.quarantine.to_pylist()}
    expected = {
        ("p2", "amount_minor", "12.50"): "must be an integer number of minor units",
        ("p3", "amount_minor", "abc"): "must be an integer number of minor units",
        ("p4", "amount_minor", None): "NULL money in payments.amount_minor",
        ("p5", "currency", "XYZ"): "unknown currency code",
        ("p7", "currency", None): "missing currency code",
        ("p8", "gateway", None): "missing required value",
        ("p9", "amount_minor", "1e3"): "must be an integer number of minor units",
        ("p9", "currency", "QQQ"): "unknown currency code",
        ("p10", "amount_minor", "9223372036854775807000"): "integer number of minor units",
    }
    assert set(problems) == set(expected)
    for key, reason in expected.items():
        record = problems[key]
        assert reason in record["reason"]
        assert record["table"] == "payments"
        assert record["changed_at"] == updated[key[0]]
    assert got.quarantined_keys == sorted(["p2", "p3", "p4", "p5", "p7", "p8", "p9", "p10"])


def test_floating_point_money_column_is_refused_and_the_advice_works(source: Source) -> None:
    table = bad_payments_table(source, sa.Double(), "payments_float")
    with source.engine.begin() as conn:
        conn.execute(table.insert(), [payment("p1", 1250.0, "USD"), payment("p2", 99.0, "EUR")])
    with pytest.raises(SchemaMismatchError) as info:
        canonical(source.db(payments=TableMapping(table="payments_float")), "payments", [T0.date()])
    msg = str(info.value)
    assert "payments.amount_minor is a floating-point column" in msg
    assert "[billing.tables.payments] query" in msg
    assert "CAST(... AS BIGINT) AS amount_minor" in msg

    # Following the advice: cast in a query mapping.
    cols = ", ".join(
        "CAST(amount_minor AS BIGINT) AS amount_minor" if c == "amount_minor" else c
        for c in TABLES["payments"].column_names
    )
    query = f"SELECT {cols} FROM {source.qual('payments_float')}"
    got = canonical(source.db(payments=TableMapping(query=query)), "payments", [T0.date()])
    assert got.rows.schema.field("amount_minor").type == pa.int64()
    assert dict(
        zip(
            got.rows.column("payment_id").to_pylist(),
            got.rows.column("amount_minor").to_pylist(),
            strict=True,
        )
    ) == {"p1": 1250, "p2": 99}


def sqlite_with_unparseable_values(tmp_path: Path) -> str:
    """A SQLite reference database with one text timestamp and one quantity that do not parse."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = sa.create_engine(url)
    create_reference_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers VALUES "
                "('c1', 'ok', NULL, NULL, 'USD', '2026-03-01 08:00:00.000000', "
                "'2026-03-01 09:00:00.000000'), "
                "('c2', 'bad', NULL, NULL, 'USD', 'last tuesday', '2026-03-01 10:00:00.000000')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO usage_events VALUES "
                "('e1', 'c1', 's1', 'api_calls', 12.5, '2026-03-01 11:00:00.000000'), "
                "('e2', 'c1', 's1', 'api_calls', 'lots', '2026-03-01 12:00:00.000000')"
            )
        )
    engine.dispose()
    return url


def test_unparseable_sqlite_values_are_quarantined(tmp_path: Path) -> None:
    url = sqlite_with_unparseable_values(tmp_path)
    got = canonical(BillingDatabase(url, None), "customers", [date(2026, 3, 1)])
    assert got.rows.column("customer_id").to_pylist() == ["c1"]
    assert got.rows.column("created_at").to_pylist() == [datetime(2026, 3, 1, 8, tzinfo=UTC)]
    assert got.quarantined_keys == ["c2"]
    records = {(q["primary_key"], q["column"], q["value"]): q for q in got.quarantine.to_pylist()}
    bad = records[("c2", "created_at", "last tuesday")]
    assert "not a valid timestamp" in bad["reason"]
    assert bad["changed_at"] == datetime(2026, 3, 1, 10, tzinfo=UTC)

    usage = canonical(BillingDatabase(url, None), "usage_events", [date(2026, 3, 1)])
    assert usage.rows.column("event_id").to_pylist() == ["e1"]
    assert usage.quarantined_keys == ["e2"]
    cells = {(q["primary_key"], q["column"], q["value"]) for q in usage.quarantine.to_pylist()}
    assert ("e2", "quantity", "lots") in cells


@pytest.mark.parametrize(("table", "key"), [("customers", "c2"), ("usage_events", "e2")])
def test_one_unparseable_value_is_one_quarantine_record(
    tmp_path: Path, table: str, key: str
) -> None:
    url = sqlite_with_unparseable_values(tmp_path)
    got = canonical(BillingDatabase(url, None), table, [date(2026, 3, 1)])
    records = [q for q in got.quarantine.to_pylist() if q["primary_key"] == key]
    assert len(records) == 1, records
    assert records[0]["value"] is not None


def test_sqlite_integer_money_column_with_one_real_value_quarantines_that_row(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    source = Source(url, None, sa.create_engine(url))
    table = bad_payments_table(source, sa.BigInteger(), "payments_int")
    with source.engine.begin() as conn:
        conn.execute(table.insert(), [payment("p1", 1250, "USD"), payment("p2", "12.50", "USD")])
        stored = conn.execute(sa.text("SELECT typeof(amount_minor) FROM payments_int")).all()
    assert sorted(t for (t,) in stored) == ["integer", "real"]
    source.engine.dispose()
    got = canonical(source.db(payments=TableMapping(table="payments_int")), "payments", [T0.date()])
    assert got.rows.column("payment_id").to_pylist() == ["p1"]
    assert got.quarantined_keys == ["p2"]


# -- money is int64, never float --------------------------------------------------------------


def test_money_columns_come_out_as_int64(demo: Source) -> None:
    data = generate(CFG)
    for name in ("subscriptions", "invoices", "invoice_lines", "payments"):
        spec = TABLES[name]
        db = demo.db()
        try:
            frame = extract_frame(db, name, ALL_DAYS, "UTC")
        finally:
            db.dispose()
        assert len(frame) == len(data.tables()[name])
        key = spec.primary_key
        expected = {row[key]: row for row in data.tables()[name]}
        for col in spec.money_columns:
            assert frame[col].dtype == pd.ArrowDtype(pa.int64()), (name, col)
            values = dict(zip(frame[key], frame[col], strict=True))
            assert all(type(v) is int for v in frame[col].tolist())
            assert values == {k: row[col] for k, row in expected.items()}
