"""Loading settlement files: each file once (by content), bad files quarantined with a reason
while the rest load, one line per (gateway, line_id) per day, payouts tied out; local and S3,
SQLite and Postgres registries."""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest

from tieout.connectors.lake import Lake
from tieout.connectors.settlements.base import SettlementLine
from tieout.connectors.state import LOADED, QUARANTINED, FileRecord, StateDatabase
from tieout.connectors.storage import Storage
from tieout.demo import DemoConfig, generate
from tieout.demo_settlements import SettlementDemo, generate_settlements, write_settlements
from tieout.settlements import (
    PAYOUTS,
    SETTLEMENT_LINES,
    build_lines_partition,
    build_payouts_partition,
    scan_settlements,
)

TZ = "UTC"
CONFIG = DemoConfig(start=date(2026, 3, 1), days=14, seed=7, customers=40)


@pytest.fixture(scope="module")
def demo() -> SettlementDemo:
    return generate_settlements(generate(CONFIG))


class Env:
    def __init__(self, root: Path, demo: SettlementDemo) -> None:
        self.folder = root / "settlements"
        write_settlements(demo, self.folder)
        self.source = Storage(str(self.folder))
        self.quarantine = Storage(str(root / "quarantine"))
        self.state = StateDatabase(f"sqlite:///{root / 'state' / 'state.db'}")
        self.lake = Lake(str(root / "lake"))

    def scan(self) -> Any:
        return scan_settlements(self.source, self.quarantine, self.state, self.lake, TZ)

    def days(self, demo: SettlementDemo) -> list[date]:
        return sorted({ln.occurred_at.date() for ln in demo.all_lines()})

    def partition_rows(self, day: date) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.lake.read(SETTLEMENT_LINES, day.isoformat()).to_pylist()
        return rows


@pytest.fixture
def env(tmp_path: Path, demo: SettlementDemo) -> Env:
    return Env(tmp_path, demo)


def _line_keys(lines: list[SettlementLine]) -> Counter[tuple[str, str]]:
    return Counter((ln.gateway, ln.line_id) for ln in lines)


def test_every_file_loads_once_and_every_line_lands_on_its_day(
    env: Env, demo: SettlementDemo
) -> None:
    scan = env.scan()
    assert scan.count("loaded") == len(demo.files)
    ignored = [f for f in scan.files if f.status == "ignored"]
    assert [Path(f.path).name for f in ignored] == ["answer_key.csv"]
    assert "not under a gateway folder" in (ignored[0].reason or "")
    loaded: Counter[tuple[str, str]] = Counter()
    for day in env.days(demo):
        outcome = build_lines_partition(env.state, env.lake, day, TZ)
        rows = env.partition_rows(day)
        assert outcome.rows == len(rows)
        assert all(r["occurred_at"].date() == day for r in rows)
        loaded.update((r["gateway"], r["line_id"]) for r in rows)
    # Nothing lost, nothing doubled: exactly the lines the files hold.
    assert loaded == _line_keys(demo.all_lines())


def test_rescan_is_a_no_op(env: Env, demo: SettlementDemo) -> None:
    env.scan()
    day = env.days(demo)[3]
    build_lines_partition(env.state, env.lake, day, TZ)
    before = env.partition_rows(day)
    again = env.scan()
    assert again.count("known") == len(demo.files)
    assert again.count("loaded") == 0
    build_lines_partition(env.state, env.lake, day, TZ)
    assert env.partition_rows(day) == before
    assert len(env.state.records()) == len(demo.files)


def test_same_file_under_another_name_is_recognized_not_counted_twice(
    env: Env, demo: SettlementDemo
) -> None:
    env.scan()
    name = next(n for n in demo.files if n.startswith("adyen/"))
    copy = env.folder / "adyen" / "redelivered" / "copy_of_report.csv"
    copy.parent.mkdir()
    shutil.copy(env.folder / name, copy)
    scan = env.scan()
    dup = [f for f in scan.files if f.status == "duplicate"]
    assert [Path(f.path) for f in dup] == [copy]
    assert name.split("/")[-1] in (dup[0].reason or "")
    record = env.state.get(dup[0].sha256 or "")
    assert record is not None
    assert Path(record.path) == env.folder / name
    assert sorted(env.state.paths(record.sha256)) == sorted([str(env.folder / name), str(copy)])
    day = demo.lines[name][0].occurred_at.date()
    outcome = build_lines_partition(env.state, env.lake, day, TZ)
    keys = [(r["gateway"], r["line_id"]) for r in env.partition_rows(day)]
    assert len(keys) == len(set(keys)) == outcome.rows


def test_bad_file_is_quarantined_with_a_sidecar_and_the_rest_load(
    env: Env, demo: SettlementDemo
) -> None:
    name = next(n for n in demo.files if n.startswith("adyen/"))
    text = (env.folder / name).read_text(encoding="utf-8").splitlines()
    fields = text[1].split(",")
    net_col = next(i for i, h in enumerate(text[0].split(",")) if h in ("Net Credit (NC)",))
    fields[net_col] = "12.3x"
    text[1] = ",".join(fields)
    bad = env.folder / "adyen" / "broken_batch.csv"
    bad.write_text("\n".join(text) + "\n", encoding="utf-8")
    scan = env.scan()
    assert scan.count("loaded") == len(demo.files)  # every good file, the original included
    (q,) = [f for f in scan.files if f.status == "quarantined"]
    assert Path(q.path) == bad
    copied = Path(q.quarantined_to or "")
    assert copied.read_bytes() == bad.read_bytes()
    sidecar = json.loads(Path(str(copied) + ".error.json").read_text(encoding="utf-8"))
    assert sidecar["line"] == 2
    assert "Net Credit (NC)" in sidecar["reason"]
    assert sidecar["file"] == str(bad)
    assert sidecar["fix"] is None or isinstance(sidecar["fix"], str)
    record = env.state.get(q.sha256 or "")
    assert record is not None
    assert record.status == QUARANTINED
    assert record.error_line == 2
    # Its lines (a copy of a good batch) are nowhere: the good original supplies them once.
    day = demo.lines[name][0].occurred_at.date()
    build_lines_partition(env.state, env.lake, day, TZ)
    sources = {r["source_file"] for r in env.partition_rows(day)}
    assert str(bad) not in sources
    # Not quarantined again on the next scan.
    assert env.scan().count("quarantined") == 0


def test_files_outside_gateway_folders_are_reported_not_read(env: Env) -> None:
    (env.folder / "worldpay").mkdir()
    (env.folder / "worldpay" / "report.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (env.folder / "_notes").mkdir()
    (env.folder / "_notes" / "readme.txt").write_text("ours", encoding="utf-8")
    scan = env.scan()
    ignored = {Path(f.path).name: f.reason for f in scan.files if f.status == "ignored"}
    assert "'worldpay' is not a gateway" in (ignored.get("report.csv") or "")
    assert "readme.txt" not in ignored  # tieout's own folders are not input at all


def test_overlapping_stripe_reports_count_each_balance_transaction_once(env: Env) -> None:
    """The same balance transactions in a balance-change and a payout-reconciliation report."""
    env.scan()
    name, lines = next((n, ls) for n, ls in sorted(_demo_lines(env).items()) if len(ls) >= 3)
    # Another report of the same balance transactions: other columns, order and quoting.
    rows = list(csv.reader(io.StringIO((env.folder / name).read_text(encoding="utf-8"))))
    keep = [i for i, h in enumerate(rows[0]) if h != "description"][::-1]
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows([[r[i] for i in keep] for r in rows])
    other = buf.getvalue().encode("utf-8")
    assert other != (env.folder / name).read_bytes()
    (env.folder / "stripe" / "balance_change_from_activity.itemized.3.csv").write_bytes(other)
    scan = env.scan()
    assert scan.count("loaded") == 1
    day = lines[0].occurred_at.date()
    outcome = build_lines_partition(env.state, env.lake, day, TZ)
    keys = [(r["gateway"], r["line_id"]) for r in env.partition_rows(day)]
    assert len(keys) == len(set(keys))
    assert outcome.duplicates_dropped == sum(1 for ln in lines if ln.occurred_at.date() == day)


def _demo_lines(env: Env) -> dict[str, tuple[SettlementLine, ...]]:
    from tieout.connectors.settlements import parse_file

    out = {}
    for path in sorted((env.folder / "stripe").glob("payout_reconciliation*")):
        name = f"stripe/{path.name}"
        out[name] = parse_file("stripe", path.read_bytes(), name).lines
    return out


def test_payouts_view_ties_out_except_the_injected_mismatches(
    env: Env, demo: SettlementDemo
) -> None:
    env.scan()
    not_tied: set[tuple[str, str]] = set()
    batches = 0
    for day in env.days(demo):
        outcome = build_payouts_partition(env.state, env.lake, day, TZ)
        batches += outcome.batches
        not_tied |= {(b["gateway"], b["batch_id"]) for b in outcome.not_tied}
        table = env.lake.read(PAYOUTS, day.isoformat())
        for row in table.to_pylist():
            assert row["difference_minor"] == row["net_minor"] + row["payout_minor"]
            assert row["ties_out"] == (row["has_payout"] and row["difference_minor"] == 0)
    injected = {(a.gateway, a.batch_id) for a in demo.answer_key if a.kind == "payout_mismatch"}
    assert injected
    assert not_tied == injected
    assert batches > len(injected)


def test_state_registry_on_postgres(pg_url: str, pg_schema: str) -> None:
    state = StateDatabase(pg_url, pg_schema)
    try:
        record = FileRecord(
            sha256="a" * 64,
            gateway="paypal",
            path="s3://bucket/paypal/STL.CSV",
            status=LOADED,
            format="paypal.stl",
            lines=3,
            first_day=date(2026, 3, 1),
            last_day=date(2026, 3, 2),
            staged="settlements/_files/paypal/aaa.parquet",
            findings=[{"kind": "batch_not_zero"}],
            controls=[],
            error=None,
            error_line=None,
            registered_at=datetime(2026, 3, 3, 1, 2, 3, tzinfo=UTC),
        )
        assert state.register(record)
        assert not state.register(record)  # a second run loses gracefully
        assert state.get("a" * 64) == record
        assert [r.sha256 for r in state.records(day=date(2026, 3, 2))] == ["a" * 64]
        assert state.records(day=date(2026, 3, 3)) == []
        assert state.sight("a" * 64, "s3://bucket/paypal/STL.CSV")
        assert not state.sight("a" * 64, "s3://bucket/paypal/STL.CSV")
    finally:
        state.dispose()


def _bucket(endpoint: str, name: str) -> Any:
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name)
    return client


@pytest.mark.s3
def test_s3_source_quarantine_and_lake(
    s3_endpoint: str, tmp_path: Path, demo: SettlementDemo
) -> None:
    client = _bucket(s3_endpoint, "gateway-drop")
    _bucket(s3_endpoint, "tieout-lake")
    picked = [n for n in demo.files if n.startswith(("paypal/", "braintree/")) and demo.lines[n]]
    picked = picked[:6]
    for name in picked:
        client.put_object(Bucket="gateway-drop", Key=f"inbox/{name}", Body=demo.files[name])
    client.put_object(
        Bucket="gateway-drop", Key="inbox/paypal/STL-broken.CSV", Body=b'"RH",2026/03/01\n'
    )
    source = Storage("s3://gateway-drop/inbox", s3_endpoint)
    quarantine = Storage("s3://gateway-drop/quarantine", s3_endpoint)
    lake = Lake("s3://tieout-lake/lake", s3_endpoint)
    state = StateDatabase(f"sqlite:///{tmp_path / 'state.db'}")
    scan = scan_settlements(source, quarantine, state, lake, TZ)
    assert scan.count("loaded") == len(picked)
    (q,) = [f for f in scan.files if f.status == "quarantined"]
    assert q.path == "s3://gateway-drop/inbox/paypal/STL-broken.CSV"
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="gateway-drop")["Contents"])
    sidecars = [k for k in keys if k.startswith("quarantine/") and k.endswith(".error.json")]
    assert len(sidecars) == 1
    body = client.get_object(Bucket="gateway-drop", Key=sidecars[0])["Body"].read()
    assert json.loads(body)["file"] == q.path
    day = demo.lines[picked[0]][0].occurred_at.date()
    outcome = build_lines_partition(state, lake, day, TZ)
    assert outcome.uri.startswith("s3://tieout-lake/lake/settlements/lines/date=")
    assert lake.read(SETTLEMENT_LINES, day.isoformat()).num_rows == outcome.rows > 0
    assert scan_settlements(source, quarantine, state, lake, TZ).count("loaded") == 0


def test_assets_materialize_one_day(tmp_path: Path, demo: SettlementDemo) -> None:
    from tieout.definitions import build_definitions
    from tieout.settings import settings_from_mapping

    write_settlements(demo, tmp_path / "settle")
    settings = settings_from_mapping(
        {
            "billing": {"url": "sqlite:///billing.db", "partitions_start": "2026-02-01"},
            "lake": {"root": "lake"},
            "settlements": {"path": "settle"},
            "state": {"url": "sqlite:///state/state.db"},
        },
        tmp_path,
        "test",
    )
    defs = build_definitions(settings)
    assets = [
        a
        for a in (defs.assets or [])
        if isinstance(a, dg.AssetsDefinition) and a.key.path[0] == "settlements"
    ]
    day = sorted({ln.occurred_at.date() for ln in demo.all_lines()})[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = dg.materialize(
            assets,
            resources=defs.resources or {},  # type: ignore[arg-type]
            partition_key=day.isoformat(),
        )
    assert result.success
    expected = sum(1 for ln in demo.all_lines() if ln.occurred_at.date() == day)
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    lines_meta = mats["settlements/lines"].step_materialization_data.materialization.metadata
    assert lines_meta["dagster/row_count"].value == expected
    assert lines_meta["files_loaded"].value == len(demo.files)
    part = tmp_path / "lake" / "settlements" / "lines" / f"date={day}" / "part-0.parquet"
    assert pq.read_table(part).num_rows == expected
    assert (tmp_path / "lake" / "settlements" / "payouts" / f"date={day}").is_dir()


def test_rescan_reads_only_new_or_changed_files(
    env: Env, demo: SettlementDemo, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.scan()
    reads: list[str] = []
    original = Storage.read

    def counting_read(self: Storage, key: str) -> bytes:
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(Storage, "read", counting_read)
    assert env.scan().count("known") == len(demo.files)
    assert reads == []
    # The gateway re-issues one report in place: same lines, new bytes (CRLF line ends).
    name = next(n for n in demo.files if n.startswith("paypal/"))
    (env.folder / name).write_bytes(demo.files[name].replace(b"\n", b"\r\n"))
    scan = env.scan()
    assert reads == [name]
    assert [Path(f.path).name for f in scan.files if f.status == "loaded"] == [Path(name).name]
    day = demo.lines[name][0].occurred_at.date()
    outcome = build_lines_partition(env.state, env.lake, day, TZ)
    keys = [(r["gateway"], r["line_id"]) for r in env.partition_rows(day)]
    assert len(keys) == len(set(keys))  # the re-issue's lines are not counted twice
    assert outcome.duplicates_dropped >= len(demo.lines[name]) - 1


def test_a_missing_settlement_folder_is_reported_not_an_empty_success(tmp_path: Path) -> None:
    state = StateDatabase(f"sqlite:///{tmp_path / 'state.db'}")
    scan = scan_settlements(
        Storage(str(tmp_path / "no-such-folder")),
        Storage(str(tmp_path / "q")),
        state,
        Lake(str(tmp_path / "lake")),
        TZ,
    )
    assert scan.missing_source
    assert scan.files == []


def test_a_wiped_lake_gives_an_error_naming_the_file_and_the_fix(
    env: Env, demo: SettlementDemo
) -> None:
    from tieout.errors import ConfigError

    env.scan()
    shutil.rmtree(Path(env.lake.root) / "settlements" / "_files")
    day = env.days(demo)[0]
    with pytest.raises(ConfigError, match=r"missing from the lake.*delete the state database"):
        build_lines_partition(env.state, env.lake, day, TZ)
