"""Blocking checks stop the chain: a correctness failure upstream means the reconciliation (and
later the posting) does not run on that data; with good data everything runs and every check
is visible on its asset."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from tieout.definitions import build_definitions
from tieout.demo import DemoConfig, generate, write_demo_data
from tieout.demo_settlements import generate_settlements, write_settlements
from tieout.settings import Settings, settings_from_mapping

START = date(2026, 3, 1)
DAY = date(2026, 3, 6)  # a day with invoices and payments in this small demo


def _settings(tmp_path: Path) -> Settings:
    return settings_from_mapping(
        {
            "billing": {"url": "sqlite:///billing.db", "partitions_start": START.isoformat()},
            "lake": {"root": "lake"},
            "settlements": {"path": "settle"},
            "state": {"url": "sqlite:///state.db"},
            "reports": {"path": "reports"},
            "checks": {"min_match_rate": 0.0, "warn_match_rate": 0.0},
        },
        tmp_path,
        "test",
    )


@pytest.fixture
def chain(tmp_path: Path) -> Settings:
    data = generate(DemoConfig(start=START, days=10, customers=40))
    write_demo_data(f"sqlite:///{tmp_path / 'billing.db'}", DemoConfig(start=START, days=10,
                    customers=40), schema=None, data=data)  # fmt: skip
    write_settlements(generate_settlements(data), tmp_path / "settle")
    return _settings(tmp_path)


def _run(settings: Settings) -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    job = defs.resolve_job_def("nightly_close")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return job.execute_in_process(
            partition_key=DAY.isoformat(),
            raise_on_error=False,
            instance=dg.DagsterInstance.ephemeral(),
        )


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        e.step_materialization_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            out[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = ev.passed  # type: ignore[union-attr]
    return out


def test_good_data_runs_the_whole_chain_with_every_check_visible(chain: Settings) -> None:
    result = _run(chain)
    assert result.success
    assert "recon/exceptions" in _materialized(result)
    checks = _checks(result)
    for name in ("billing/payments:payments_expectations", "billing/payments:payments_integrity",
                 "billing/invoices:invoices_integrity", "settlements/lines:lines_integrity",
                 "recon/exceptions:exceptions_integrity"):  # fmt: skip
        assert checks.get(name) is True, (name, checks)


def test_a_failing_blocking_check_stops_the_reconciliation(chain: Settings, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    with engine.begin() as conn:
        # One invoice changed on DAY whose total no longer equals subtotal + tax.
        changed = conn.execute(
            sa.text(
                "SELECT invoice_id FROM invoices WHERE substr(updated_at, 1, 10) = :d "
                "ORDER BY invoice_id LIMIT 1"
            ),
            {"d": DAY.isoformat()},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE invoices SET total_minor = total_minor + 1 WHERE invoice_id = :i"),
            {"i": changed},
        )
    engine.dispose()
    result = _run(chain)
    assert not result.success
    checks = _checks(result)
    assert checks["billing/invoices:invoices_expectations"] is False
    assert "billing/invoices" in _materialized(result)  # the data landed, and is flagged
    assert "recon/exceptions" not in _materialized(result)  # nothing downstream ran on it
    assert not (tmp_path / "reports" / "report.xlsx").exists()
