"""Benchmark: tieout's Postgres extraction into a DataFrame vs. a raw COPY of the same query.

Builds a 2,000,000-row `payments` table in the reference schema (schema `tieout_bench`), then
times, in the same run and on the same SQL text:
  * tieout: `extract_frame` (ADBC binary COPY -> Arrow -> canonical checks -> pandas frame)
  * baseline: `COPY (same query) TO STDOUT` read to the end through psycopg, nothing parsed
and prints `extract_vs_copy_ratio=<x>` (best of --repeat runs each) as its last line.
Target: <= 2.0.

    python benchmarks/extract.py [--rows 2000000] [--repeat 3] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date, timedelta

import psycopg
import sqlalchemy as sa

from tieout.canonical import day_windows
from tieout.connectors.billing import BillingDatabase
from tieout.extraction import extract_frame
from tieout.schema import create_reference_schema

SCHEMA = "tieout_bench"
START = date(2026, 1, 1)

POPULATE = """
INSERT INTO {s}.payments
SELECT 'pay_' || lpad(i::text, 9, '0'),
       'cus_' || (i % 50000),
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'in_' || i END,
       (ARRAY['charge','charge','charge','refund'])[1 + i % 4],
       CASE WHEN i % 4 = 3 THEN 'pay_' || lpad((i - 1)::text, 9, '0') END,
       (ARRAY['stripe','adyen','paypal','braintree'])[1 + i % 4],
       'ref_' || md5(i::text),
       100 + (i * 37) % 100000,
       (ARRAY['USD','EUR','GBP','JPY'])[1 + (i / 4) % 4],
       (ARRAY['succeeded','succeeded','succeeded','failed'])[1 + (i / 3) % 4],
       timestamptz '2026-01-01 00:00:00+00' + (i * interval '1 second'),
       timestamptz '2026-01-01 00:00:00+00' + (i * interval '1 second')
FROM generate_series(1, %(rows)s) AS i
"""


def build(url: str, rows: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    create_reference_schema(engine, SCHEMA)
    engine.dispose()
    libpq = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # skip FK checks while loading
        conn.execute(POPULATE.format(s=SCHEMA).replace("%(rows)s", str(int(rows))))
        conn.execute(f"ANALYZE {SCHEMA}.payments")


def raw_copy(libpq: str, sql: str) -> int:
    n = 0
    with (
        psycopg.connect(libpq) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY ({sql}) TO STDOUT") as copy,
    ):
        for block in copy:
            n += len(block)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--url",
        default=os.environ.get(
            "TIEOUT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark schema afterwards")
    args = ap.parse_args()

    t0 = time.perf_counter()
    print(f"building {args.rows:,} payments in {SCHEMA} ...", file=sys.stderr)
    build(args.url, args.rows)
    print(f"built in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    days = [START + timedelta(days=i) for i in range(args.rows // 86_400 + 2)]
    windows = day_windows(days, "UTC")
    start, end = windows[0][1], windows[-1][2]
    db = BillingDatabase(args.url, SCHEMA)
    sql = db.postgres_text(db.window_query("payments"), start, end)
    libpq = sa.engine.make_url(args.url).set(drivername="postgresql").render_as_string(False)

    best_tieout = best_copy = float("inf")
    rows = 0
    for i in range(args.repeat):
        t = time.perf_counter()
        nbytes = raw_copy(libpq, sql)
        best_copy = min(best_copy, time.perf_counter() - t)
        t = time.perf_counter()
        frame = extract_frame(db, "payments", days, "UTC")
        best_tieout = min(best_tieout, time.perf_counter() - t)
        rows = len(frame)
        del frame
        print(
            f"run {i + 1}: copy {best_copy:.2f}s ({nbytes / 1e6:.0f} MB), "
            f"tieout {best_tieout:.2f}s ({rows:,} rows)",
            file=sys.stderr,
        )
    if rows != args.rows:
        print(f"error: extracted {rows} rows, expected {args.rows}", file=sys.stderr)
        return 1
    db.dispose()
    if not args.keep:
        engine = sa.create_engine(args.url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        engine.dispose()
    print(f"rows={rows} copy_seconds={best_copy:.3f} extract_seconds={best_tieout:.3f}")
    print(f"extract_vs_copy_ratio={best_tieout / best_copy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
