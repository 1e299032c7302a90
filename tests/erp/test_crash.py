"""Kill the poster (SIGKILL) at random points, run it again, and find exactly the expected
entries in NetSuite: none missing, none doubled, every one balanced."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from tests.erp.conftest import ENV, entry, netsuite_section
from tieout.connectors.ledger import CONFIRMED, PostingLedger
from tieout.erp.plan import make_plan, write_plan
from tieout.sandbox.netsuite import NetSuiteSandbox

RUNS = 20
ENTRIES = 40


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_settings(tmp: Path, sb: NetSuiteSandbox) -> Path:
    ns = netsuite_section(sb, batch_size=4, concurrency=2, timeout_seconds=5)
    lines = ["[state]", f'url = "sqlite:///{tmp / "state.db"}"', "", "[erp.netsuite]"]
    lines += [f"{k} = {_toml(v)}" for k, v in ns.items()]
    path = tmp / "dagster_project.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sigkill_at_random_points_never_loses_or_doubles_an_entry(
    tmp_path: Path, sandbox: NetSuiteSandbox
) -> None:
    rng = random.Random(20261125)
    sandbox.latency = 0.03  # so a run lasts long enough to be killed in the middle
    env = {**os.environ, **{name: getattr(sandbox, attr) for name, attr in ENV.items()}}
    kills = 0
    for run in range(RUNS):
        tmp = tmp_path / f"run{run}"
        tmp.mkdir()
        settings = write_settings(tmp, sandbox)
        entries = [entry(run * 1000 + i, amount=100 + i) for i in range(ENTRIES)]
        plan = make_plan(
            entries, [], system="netsuite", start=entries[0].tran_date,
            end=entries[0].tran_date, as_of=entries[0].tran_date,
        )  # fmt: skip
        plan_path = write_plan(plan, tmp / "plan.json")
        cmd = [sys.executable, "-m", "tieout.cli", "--settings", str(settings),
               "erp", "apply", "--plan", str(plan_path)]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.8))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        ids = {e.external_id for e in entries}
        records = {k: v for k, v in sandbox.records("journalEntry").items() if k in ids}
        assert set(records) == ids, f"run {run}: missing {sorted(ids - set(records))}"
        for e in entries:
            lines = records[e.external_id]["lineList"]["line"]
            debit = sum((x.get("debit") or Decimal(0) for x in lines), Decimal(0))
            credit = sum((x.get("credit") or Decimal(0) for x in lines), Decimal(0))
            assert debit == credit
            assert len(lines) == len(e.lines)
        ledger = PostingLedger(f"sqlite:///{tmp / 'state.db'}", None)
        rows = ledger.rows("netsuite")
        ledger.dispose()
        assert set(rows) == ids
        assert {r.status for r in rows.values()} == {CONFIRMED}
    # One record per external id across every run: the sandbox never holds a double.
    records = sandbox.records("journalEntry")
    assert len(records) == RUNS * ENTRIES
    assert len({r["internalId"] for r in records.values()}) == RUNS * ENTRIES
    assert kills >= RUNS // 2  # most runs really were killed mid-way
