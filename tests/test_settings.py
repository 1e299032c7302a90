"""Settings: defaults, validation of every key (with the key path in the message), `${ENV}`
resolution without leaking secrets, and relative paths resolved against the settings file."""

from __future__ import annotations

import textwrap
from datetime import date
from pathlib import Path

import pytest

from tieout.connectors.billing import BillingDatabase
from tieout.errors import ConfigError
from tieout.settings import (
    SETTINGS_ENV,
    TableMapping,
    load_settings,
    resolve_env,
)

SECRET = "s3cr3t-Pa55word-do-not-print"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings file, settings variable or billing URL leaks in from the environment."""
    for name in (SETTINGS_ENV, "BILLING_DATABASE_URL", "DB_PASSWORD", "DB_HOST", "LAKE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_settings(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- defaults and finding the file -----------------------------------------------------------


def test_defaults_load_without_any_file(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.billing.url == "${BILLING_DATABASE_URL:-sqlite:///data/demo/billing.db}"
    assert settings.billing.schema_ == "billing"
    assert settings.billing.partitions_start == date(2026, 1, 1)
    assert settings.billing.tables == {}
    assert settings.reconciliation.finance_timezone == "UTC"
    assert settings.lake.root == "data/lake"
    assert settings.lake_endpoint() is None
    # With no file, relative paths are relative to the working directory.
    base = tmp_path.resolve()
    assert settings.billing_url() == f"sqlite:///{base}/data/demo/billing.db"
    assert settings.lake_root() == str(base / "data" / "lake")


def test_settings_file_found_through_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_settings(tmp_path / "dagster_project.toml", '[reconciliation]\nfinance_timezone = "UTC"')
    other = write_settings(
        tmp_path / "elsewhere" / "x.toml", '[reconciliation]\nfinance_timezone = "Asia/Tokyo"'
    )
    assert load_settings().reconciliation.finance_timezone == "UTC"  # ./dagster_project.toml
    monkeypatch.setenv(SETTINGS_ENV, str(other))
    assert load_settings().reconciliation.finance_timezone == "Asia/Tokyo"
    monkeypatch.setenv(SETTINGS_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=SETTINGS_ENV):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_full_file_with_mappings_loads(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path / "dagster_project.toml",
        """
        [billing]
        url = "${BILLING_DATABASE_URL}"
        schema = "erp_billing"
        partitions_start = 2026-02-01

        [billing.tables.payments]
        table = "payment_transactions"
        columns = { payment_id = "id", amount_minor = "amount_cents", updated_at = "modified_at" }

        [billing.tables.credit_notes]
        query = \"\"\"
        SELECT id AS credit_note_id, invoice AS invoice_id FROM ledger.refund_memos;
        \"\"\"

        [reconciliation]
        finance_timezone = "America/New_York"

        [lake]
        root = "s3://bucket/prefix"
        """,
    )
    s = load_settings(path)
    assert s.billing.schema_ == "erp_billing"
    assert s.billing.partitions_start == date(2026, 2, 1)
    payments = s.billing.tables["payments"]
    assert payments.table == "payment_transactions"
    assert payments.columns["amount_minor"] == "amount_cents"
    assert payments.query is None
    # The trailing ';' and the surrounding whitespace are stripped: tieout wraps the query.
    query = s.billing.tables["credit_notes"].query
    assert query is not None
    assert query.startswith("SELECT id")
    assert query.endswith("ledger.refund_memos")
    assert s.reconciliation.finance_timezone == "America/New_York"
    assert s.lake_root() == "s3://bucket/prefix"


# -- validation: a ConfigError naming the key path ------------------------------------------

BAD_SETTINGS = {
    "typo-in-key": ('[billing]\nulr = "sqlite:///x.db"\n', "billing.ulr", "unknown setting"),
    "unknown-section": (
        '[reconcilation]\nfinance_timezone = "UTC"\n',
        "reconcilation",
        "unknown setting",
    ),
    "unknown-mapping-key": (
        '[billing.tables.payments]\ntabel = "x"\n',
        "billing.tables.payments.tabel",
        "unknown setting",
    ),
    "bad-timezone": (
        '[reconciliation]\nfinance_timezone = "Mars/Olympus_Mons"\n',
        "reconciliation.finance_timezone",
        "IANA time zone",
    ),
    "table-injection": (
        '[billing.tables.payments]\ntable = "payments; DROP TABLE x"\n',
        "billing.tables.payments.table",
        "plain SQL identifier",
    ),
    "table-with-space": (
        '[billing.tables.payments]\ntable = "a b"\n',
        "billing.tables.payments.table",
        "plain SQL identifier",
    ),
    "column-quote-injection": (
        "[billing.tables.payments]\ncolumns = { amount_minor = 'amount\" --' }\n",
        "billing.tables.payments.columns.amount_minor",
        "plain SQL identifier",
    ),
    "column-with-space": (
        '[billing.tables.invoices]\ncolumns = { total_minor = "a b" }\n',
        "billing.tables.invoices.columns.total_minor",
        "plain SQL identifier",
    ),
    "schema-injection": (
        '[billing]\nschema = "billing; DROP SCHEMA public"\n',
        "billing.schema",
        "plain SQL identifier",
    ),
    "query-two-statements": (
        '[billing.tables.payments]\nquery = "SELECT 1; DROP TABLE customers"\n',
        "billing.tables.payments.query",
        "single statement",
    ),
    "query-delete": (
        '[billing.tables.payments]\nquery = "DELETE FROM payments"\n',
        "billing.tables.payments.query",
        "single SELECT",
    ),
    "query-and-table": (
        '[billing.tables.payments]\nquery = "SELECT * FROM p"\ntable = "p"\n',
        "billing.tables.payments",
        "either query or table/columns",
    ),
    "query-and-columns": (
        '[billing.tables.payments]\nquery = "SELECT * FROM p"\ncolumns = { payment_id = "id" }\n',
        "billing.tables.payments",
        "either query or table/columns",
    ),
    "unknown-table": (
        '[billing.tables.paymnets]\ntable = "p"\n',
        "billing.tables",
        "unknown table 'paymnets'",
    ),
    "bad-date": ("[billing]\npartitions_start = 2026-13-01\n", "", "not valid TOML"),
    "bad-date-string": (
        '[billing]\npartitions_start = "first of March"\n',
        "billing.partitions_start",
        "date",
    ),
}


@pytest.mark.parametrize(("text", "key_path", "why"), BAD_SETTINGS.values(), ids=BAD_SETTINGS)
def test_bad_settings_raise_config_error_naming_the_key(
    tmp_path: Path, text: str, key_path: str, why: str
) -> None:
    path = write_settings(tmp_path / "conf" / "dagster_project.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    msg = str(info.value)
    assert str(path) in msg  # which file
    assert f": {key_path}:" in msg or not key_path  # which key, as a full path
    assert why in msg


def test_unknown_canonical_column_names_table_column_and_choices(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path / "dagster_project.toml",
        '[billing.tables.payments]\ncolumns = { amount = "amt", payment_id = "id" }\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    msg = str(info.value)
    # The validator runs on the whole `billing.tables` mapping; the message continues the path.
    assert "billing.tables: payments.columns.amount: not a canonical column of payments" in msg
    assert "amount_minor" in msg  # the valid choices are listed


def test_every_problem_is_reported_one_line_each(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path / "dagster_project.toml",
        """
        [billing]
        ulr = "x"
        [reconciliation]
        finance_timezone = "Nowhere/Land"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert any(": billing.ulr: unknown setting" in line for line in lines)
    assert any(": reconciliation.finance_timezone: " in line for line in lines)


@pytest.mark.parametrize(
    "table", ["payments; DROP TABLE x", 'amount" --', "a b", "x.y", "1abc", "a" * 64]
)
def test_table_mapping_rejects_non_identifiers_even_without_a_file(table: str) -> None:
    # BillingDatabase takes TableMapping objects: they cannot be built with SQL in a name.
    with pytest.raises(ValueError, match="plain SQL identifier"):
        TableMapping(table=table)
    with pytest.raises(ValueError, match="plain SQL identifier"):
        TableMapping(columns={"amount_minor": table})


@pytest.mark.parametrize("name", ["payment_transactions", "_t", "Pay$ments", "a" * 63])
def test_plain_identifiers_are_accepted(name: str) -> None:
    assert TableMapping(table=name, columns={"amount_minor": name}).table == name


# -- ${ENV} resolution and secrets ------------------------------------------------------------


def test_env_reference_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_settings(
        tmp_path / "dagster_project.toml",
        """
        [billing]
        url = "${BILLING_DATABASE_URL:-postgresql://app@db.internal/billing}"
        [lake]
        root = "${LAKE_ROOT:-s3://default-bucket/lake}"
        s3_endpoint_url = "${TIEOUT_TEST_S3_ENDPOINT:-http://127.0.0.1:9000}"
        """,
    )
    monkeypatch.delenv("TIEOUT_TEST_S3_ENDPOINT", raising=False)
    s = load_settings(path)
    assert s.billing_url() == "postgresql://app@db.internal/billing"
    assert s.lake_root() == "s3://default-bucket/lake"
    assert s.lake_endpoint() == "http://127.0.0.1:9000"
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://other@host/db")
    monkeypatch.setenv("LAKE_ROOT", "s3://real-bucket/x")
    assert s.billing_url() == "postgresql://other@host/db"
    assert s.lake_root() == "s3://real-bucket/x"
    # Like the shell's ${X:-d}: an empty variable counts as unset.
    monkeypatch.setenv("BILLING_DATABASE_URL", "")
    assert s.billing_url() == "postgresql://app@db.internal/billing"


def test_unset_variable_without_default_names_setting_and_variable_not_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_settings(
        tmp_path / "dagster_project.toml",
        '[billing]\nurl = "postgresql://app:${DB_PASSWORD}@${DB_HOST}/billing"\n'
        '[lake]\ns3_endpoint_url = "${TIEOUT_TEST_NO_SUCH_VAR}"\n',
    )
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    monkeypatch.delenv("TIEOUT_TEST_NO_SUCH_VAR", raising=False)
    s = load_settings(path)  # loading never resolves
    with pytest.raises(ConfigError) as info:
        s.billing_url()
    msg = str(info.value)
    assert "billing.url" in msg
    assert "DB_HOST" in msg
    assert SECRET not in msg
    with pytest.raises(ConfigError, match=r"lake\.s3_endpoint_url.*TIEOUT_TEST_NO_SUCH_VAR"):
        s.lake_endpoint()
    monkeypatch.setenv("DB_HOST", "db.internal")
    assert s.billing_url() == f"postgresql://app:{SECRET}@db.internal/billing"


def test_resolve_env_error_never_contains_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", SECRET)
    with pytest.raises(ConfigError) as info:
        resolve_env("${DB_PASSWORD}${DB_HOST}", "some.key")
    assert "some.key" in str(info.value)
    assert "DB_HOST" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["postgresql://app:hunter2@db.internal/billing", "mysql+pymysql://u:hunter2@h:3306/db"],
)
def test_literal_password_in_url_is_rejected(tmp_path: Path, url: str) -> None:
    path = write_settings(tmp_path / "dagster_project.toml", f'[billing]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=r"billing\.url: the URL contains a password"):
        load_settings(path)


@pytest.mark.parametrize(
    "url",
    [
        "${BILLING_DATABASE_URL}",
        "postgresql://app:${DB_PASSWORD}@db.internal/billing",
        "postgresql://app@db.internal/billing",
        "sqlite:///data/billing.db",
    ],
)
def test_urls_without_a_literal_password_are_accepted(tmp_path: Path, url: str) -> None:
    path = write_settings(tmp_path / "dagster_project.toml", f'[billing]\nurl = "{url}"\n')
    assert load_settings(path).billing.url == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:hunter2@${DB_HOST}/billing",
        "${BILLING_DATABASE_URL:-postgresql://app:hunter2@db.internal/billing}",
    ],
    ids=["password-beside-env-host", "password-in-default"],
)
def test_literal_password_beside_env_reference_is_rejected(tmp_path: Path, url: str) -> None:
    path = write_settings(tmp_path / "dagster_project.toml", f'[billing]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=r"billing\.url"):
        load_settings(path)


def test_str_and_repr_never_contain_the_resolved_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_url = f"postgresql://app:{SECRET}@db.internal:5432/billing"
    monkeypatch.setenv("BILLING_DATABASE_URL", secret_url)
    path = write_settings(
        tmp_path / "dagster_project.toml", '[billing]\nurl = "${BILLING_DATABASE_URL}"\n'
    )
    s = load_settings(path)
    assert s.billing_url() == secret_url  # the secret is really there to leak
    for text in (str(s), repr(s), s.model_dump_json(), str(s.model_dump()), repr(s.billing)):
        assert SECRET not in text
        assert "${BILLING_DATABASE_URL}" in text
    db = BillingDatabase(s.billing_url(), s.billing.schema_)  # no connection is made
    try:
        assert SECRET not in repr(db)
        assert "***" in repr(db)
    finally:
        db.dispose()


# -- relative paths ---------------------------------------------------------------------------


def test_relative_sqlite_and_lake_paths_resolve_against_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "project" / "conf"
    path = write_settings(
        conf_dir / "settings.toml",
        '[billing]\nurl = "sqlite:///data/billing.db"\n[lake]\nroot = "../lake"\n',
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    s = load_settings(path)
    base = conf_dir.resolve()
    assert s.base_dir == base
    assert s.billing_url() == f"sqlite:///{base}/data/billing.db"
    assert s.lake_root() == str((tmp_path / "project" / "lake").resolve())


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${BILLING_DATABASE_URL:-sqlite:///rel/b.db}", "sqlite:///{base}/rel/b.db"),
        ("sqlite:///b.db?timeout=5", "sqlite:///{base}/b.db?timeout=5"),
        ("sqlite:////abs/b.db", "sqlite:////abs/b.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://app@host/db", "postgresql://app@host/db"),
    ],
)
def test_sqlite_url_forms(tmp_path: Path, template: str, expected: str) -> None:
    conf_dir = tmp_path / "conf"
    path = write_settings(conf_dir / "s.toml", f'[billing]\nurl = "{template}"\n')
    s = load_settings(path)
    assert s.billing_url() == expected.format(base=conf_dir.resolve())
