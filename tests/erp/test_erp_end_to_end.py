"""ERP posting end to end over a reconciled demo lake: `tieout erp plan` sends nothing and
shows what would be posted, `tieout erp apply --plan` posts exactly that through netsuitesdk to
the sandbox, a re-plan finds nothing left to do, and the Dagster asset's dry_run plans only.

The settings are the demo's own `[erp.netsuite]` section (tieout.demo_erp), so this also proves
what `tieout demo` posts with.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from click.testing import CliRunner, Result

from tests.books import make_books
from tieout.cli import main
from tieout.connectors.ledger import PostingLedger
from tieout.demo_erp import netsuite_sandbox, netsuite_toml
from tieout.erp.journals import netsuite_amount
from tieout.sandbox.netsuite import NetSuiteSandbox
from tieout.settings import load_settings

START = date(2026, 3, 2)
END = date(2026, 3, 13)
PERIOD = ("--start", START.isoformat(), "--end", END.isoformat())


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reconciled demo books with the demo's `[erp.netsuite]`; tests copy the folder."""
    return make_books(tmp_path_factory.mktemp("books"), START, 12, netsuite_toml())


@pytest.fixture
def settings_file(books: Path, tmp_path: Path) -> Path:
    """A private copy of the reconciled books (each test starts with an empty ledger)."""
    import shutil

    copy = tmp_path / "books"
    shutil.copytree(books.parent, copy)
    return copy / books.name


@pytest.fixture
def sandbox() -> Iterator[NetSuiteSandbox]:
    with netsuite_sandbox() as sb:
        yield sb


def counts(output: str) -> dict[str, int]:
    m = re.search(
        r"(\d+) to create, (\d+) to update, (\d+) adjusting, (\d+) to retry, (\d+) unchanged; "
        r"(\d+) line\(s\) and (\d+) batch\(es\) held back",
        output,
    )
    assert m, output
    keys = ("create", "update", "adjust", "retry", "unchanged", "held_lines", "held_batches")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def per_currency(entries: dict[str, dict[str, Any]], plan: dict[str, Any]) -> dict[str, Decimal]:
    """Debits per currency of the posted records, using the plan to know each one's currency."""
    currency = {e["entry"]["external_id"]: e["entry"]["currency"] for e in plan["entries"]}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for ext, record in entries.items():
        for line in record["lineList"]["line"]:
            out[currency[ext]] += Decimal(str(line.get("debit") or 0))
    return dict(out)


def test_plan_sends_nothing_then_apply_posts_exactly_the_plan(
    settings_file: Path, sandbox: NetSuiteSandbox
) -> None:
    plan_path = settings_file.parent / "plan.json"
    planned = invoke(
        "--settings", str(settings_file), "erp", "plan", *PERIOD, "--out", str(plan_path)
    )
    assert planned.exit_code == 0, planned.output
    c = counts(planned.output)
    assert c["create"] > 0
    assert c["update"] == c["adjust"] == c["unchanged"] == 0
    # the demo injects exceptions: their settlement lines wait in suspense, not posted
    assert c["held_lines"] + c["held_batches"] > 0
    assert "held    line" in planned.output or "held    batch" in planned.output
    assert sandbox.requests == ()  # planning is read-only
    plan = json.loads(plan_path.read_text())
    assert len(plan["entries"]) == c["create"]

    applied = invoke("--settings", str(settings_file), "erp", "apply", "--plan", str(plan_path))
    assert applied.exit_code == 0, applied.output
    assert f"posted: {c['create']} confirmed, 0 already posted, 0 refused" in applied.output
    posted = sandbox.records("journalEntry")
    assert sorted(posted) == sorted(e["entry"]["external_id"] for e in plan["entries"])
    for ext, record in posted.items():
        lines = record["lineList"]["line"]
        debit = sum(Decimal(str(x.get("debit") or 0)) for x in lines)
        credit = sum(Decimal(str(x.get("credit") or 0)) for x in lines)
        assert debit == credit, ext
    # what NetSuite holds is what the plan said, per currency, to the cent
    wanted: dict[str, Decimal] = defaultdict(Decimal)
    for t in plan["totals"]:
        wanted[t["currency"]] += netsuite_amount(t["debit_minor"], t["currency"])
    assert set(wanted) >= {"USD", "EUR"}
    assert per_currency(posted, plan) == dict(wanted)

    # Run it all again: nothing left to create, nothing sent.
    sandbox.clear_requests()
    again = invoke("--settings", str(settings_file), "erp", "plan", *PERIOD)
    assert again.exit_code == 0, again.output
    c2 = counts(again.output)
    assert (c2["create"], c2["unchanged"]) == (0, c["create"])
    reapplied = invoke("--settings", str(settings_file), "erp", "apply", *PERIOD)
    assert reapplied.exit_code == 0, reapplied.output
    assert not [r for r in sandbox.requests if "upsert" in r.operation.lower()]
    assert len(sandbox.records("journalEntry")) == c["create"]


def test_the_asset_plans_on_dry_run_and_posts_without_it(
    settings_file: Path, sandbox: NetSuiteSandbox
) -> None:
    from tieout.definitions import build_definitions

    settings = load_settings(settings_file)
    job = build_definitions(settings).resolve_job_def("erp_posting")
    tags = {
        "dagster/asset_partition_range_start": START.isoformat(),
        "dagster/asset_partition_range_end": END.isoformat(),
    }

    def run(dry_run: bool) -> dict[str, Any]:
        result = job.execute_in_process(
            run_config={"ops": {"erp__netsuite": {"config": {"dry_run": dry_run}}}},
            instance=dg.DagsterInstance.ephemeral(),
            tags=tags,
        )
        assert result.success
        [mat] = [
            e.step_materialization_data.materialization
            for e in result.get_asset_materialization_events()
            if e.step_materialization_data.materialization.partition == START.isoformat()
        ]
        return {k: v.value for k, v in mat.metadata.items()}

    dry = run(True)
    assert dry["dry_run"] is True
    assert "to create" in str(dry["plan"])
    assert "| currency | account |" in str(dry["plan"])
    created = dry["counts"]["create"]
    assert created > 0
    assert sandbox.records("journalEntry") == {}

    wet = run(False)
    assert wet["confirmed"] == created
    assert len(sandbox.records("journalEntry")) == created
    ledger = PostingLedger(settings.state_url(), settings.state.schema_)
    try:
        rows = ledger.rows("netsuite")
    finally:
        ledger.dispose()
    assert len(rows) == created
    assert {r.status for r in rows.values()} == {"confirmed"}

    again = run(False)
    assert again["counts"]["create"] == 0
    assert again["counts"]["unchanged"] == created
    assert again["confirmed"] == 0
