"""Reconciled demo books for end-to-end tests of what comes after the close (ERP posting,
revenue loading): a demo billing database and settlement files, extracted and reconciled
through `tieout reconcile`, with the caller's extra settings sections."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from click.testing import CliRunner

from tieout.cli import main


def make_books(root: Path, start: date, days: int, extra_toml: Sequence[str],
               customers: int = 50) -> Path:  # fmt: skip
    """Returns the settings file (dagster_project.toml) in `root`."""
    end = start + timedelta(days=days - 1)
    settings = root / "dagster_project.toml"
    settings.write_text(
        "\n".join([
            "[billing]", 'url = "sqlite:///billing.db"', f"partitions_start = {start}",
            "[lake]", 'root = "lake"', "[settlements]", 'path = "settle"',
            "[state]", 'url = "sqlite:///state.db"', "[reports]", 'path = "reports"',
            "[checks]", "min_match_rate = 0.5", "warn_match_rate = 0.9",
            *extra_toml,
        ]) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    runner = CliRunner()
    made = runner.invoke(main, [
        "demo-data", "--billing-url", f"sqlite:///{root / 'billing.db'}",
        "--start", start.isoformat(), "--days", str(days), "--customers", str(customers),
        "--settlements", str(root / "settle"),
    ], catch_exceptions=False)  # fmt: skip
    assert made.exit_code == 0, made.output
    ran = runner.invoke(
        main,
        ["reconcile", "--config", str(settings), "--start", str(start), "--end", str(end)],
        catch_exceptions=False,
    )
    assert ran.exit_code == 0, ran.output
    return settings
