"""Docs that are generated must match what generates them."""

from __future__ import annotations

from pathlib import Path

from tieout.settings import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert config_reference().strip() in doc, (
        "docs/configuration.md is stale: regenerate its Reference section with "
        "`tieout config-reference`"
    )


def test_shipped_settings_file_is_valid() -> None:
    from tieout.settings import load_settings

    settings = load_settings(ROOT / "dagster_project.toml")
    assert settings.reconciliation.finance_timezone == "UTC"
    assert settings.billing.url.startswith("${BILLING_DATABASE_URL")
