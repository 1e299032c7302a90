"""The command line: help everywhere, exit code 2 with one line for the user's mistakes, demo data
that is deterministic, and an extraction that writes the partitions."""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from tieout.cli import main
from tieout.demo import DemoConfig, generate
from tieout.extraction import DATASETS
from tieout.schema import TABLES

START = date(2026, 3, 1)  # after the default partitions_start (2026-01-01), long closed
DAYS = 3


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the environment or the repository: settings, runs and files stay in tmp."""
    for name in ("TIEOUT_SETTINGS", "DAGSTER_HOME", "BILLING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_settings(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        textwrap.dedent(
            """
            [billing]
            url = "sqlite:///billing.db"
            [lake]
            root = "lake"
            """
        )
        + textwrap.dedent(extra),
        encoding="utf-8",
    )
    return path


def demo_data(url: str, seed: int = 42, customers: int = 25) -> Result:
    return invoke(
        "demo-data",
        "--billing-url",
        url,
        "--start",
        START.isoformat(),
        "--days",
        str(DAYS),
        "--seed",
        str(seed),
        "--customers",
        str(customers),
    )


def snapshot(db_file: Path) -> dict[str, list[tuple[object, ...]]]:
    engine = sa.create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return {
                name: [
                    tuple(r)
                    for r in conn.execute(
                        sa.text(f'SELECT * FROM "{name}" ORDER BY "{spec.primary_key}"')
                    )
                ]
                for name, spec in TABLES.items()
            }
    finally:
        engine.dispose()


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# -- help -------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert isinstance(main, click.Group)
    assert set(main.commands) >= {"demo-data", "extract", "demo", "schema", "check-settings"}
    for name in main.commands:
        assert name in result.output


@pytest.mark.parametrize("command", sorted(main.commands))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_works_on_every_command(command: str, flag: str) -> None:
    result = invoke(command, flag)
    assert result.exit_code == 0, result.output
    assert f"Usage: main {command}" in result.output or f"{command} [OPTIONS]" in result.output
    params = main.commands[command].params
    for param in params:
        if isinstance(param, click.Option):
            assert param.opts[0] in result.output


# -- exit code 2 with one line ------------------------------------------------------------------


def test_extract_with_an_unknown_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, "[reconciliation]\nfinance_timezon = 'UTC'\n")
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2026-03-01", "--end", "2026-03-02"
    )
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "reconciliation.finance_timezon" in lines[0]
    assert "unknown setting" in lines[0]
    assert str(settings) in lines[0]
    assert "Traceback" not in result.output


def test_several_bad_settings_still_give_one_line(tmp_path: Path) -> None:
    settings = write_settings(
        tmp_path, "[reconciliation]\nfinance_timezone = 'Mars/Base'\nfoo = 1\n"
    )
    result = invoke("--settings", str(settings), "check-settings")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "reconciliation.finance_timezone" in line
    assert "reconciliation.foo" in line


def test_extract_with_start_after_end_exits_2(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2026-03-03", "--end", "2026-03-01"
    )
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert line == "error: --end 2026-03-01 is before --start 2026-03-03"


def test_extract_before_partitions_start_exits_2(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, "")
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2025-12-30", "--end", "2026-01-02"
    )
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "billing.partitions_start (2026-01-01)" in line


def test_extract_of_a_day_not_yet_closed_exits_2(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2026-03-01", "--end", tomorrow
    )
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert f"--end {tomorrow} is not a closed business day yet" in line


def test_bad_date_is_a_usage_error(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2026-02-30", "--end", "2026-03-01"
    )
    assert result.exit_code == 2
    assert "'2026-02-30' is not a date (YYYY-MM-DD)" in result.output


def test_extract_with_a_missing_table_exits_2_naming_it(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    assert demo_data(f"sqlite:///{tmp_path / 'billing.db'}").exit_code == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE credit_notes"))
    engine.dispose()
    result = invoke(
        "--settings", str(settings), "extract", "--start", "2026-03-01", "--end", "2026-03-02"
    )
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "billing table credit_notes does not exist" in line
    assert "[billing.tables.credit_notes]" in line
    assert not (tmp_path / "lake").exists()  # it stopped before writing anything
    # check-settings --connect says the same; without --connect the file alone is fine.
    assert invoke("--settings", str(settings), "check-settings").exit_code == 0
    connect = invoke("--settings", str(settings), "check-settings", "--connect")
    assert connect.exit_code == 2
    assert "credit_notes" in connect.stderr


def test_missing_settings_file_exits_2(tmp_path: Path) -> None:
    result = invoke("--settings", str(tmp_path / "nope.toml"), "check-settings")
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "nope.toml does not exist" in line


# -- demo data ---------------------------------------------------------------------------------


def test_demo_data_is_deterministic(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    url = f"sqlite:///{db}"
    first = demo_data(url, seed=7)
    assert first.exit_code == 0, first.output
    expected_counts = generate(DemoConfig(start=START, days=DAYS, seed=7, customers=25)).counts()
    assert first.stdout.strip() == " ".join(f"{k}={v}" for k, v in expected_counts.items())
    one = snapshot(db)
    assert {k: len(v) for k, v in one.items()} == expected_counts

    assert demo_data(url, seed=7).exit_code == 0  # same seed again, same file: replaced
    assert snapshot(db) == one

    other_db = tmp_path / "other.db"
    assert demo_data(f"sqlite:///{other_db}", seed=7).exit_code == 0  # a fresh file
    assert snapshot(other_db) == one

    assert demo_data(url, seed=8).exit_code == 0
    different = snapshot(db)
    assert different["customers"] != one["customers"]
    assert different["usage_events"] != one["usage_events"]


def test_demo_data_relative_sqlite_url_writes_into_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "rel").mkdir()
    result = demo_data("sqlite:///rel/demo.db")
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path / "rel" / "demo.db")["customers"]


@pytest.mark.parametrize(
    "url",
    ["nosuchdialect://u:{pw}@h/db", "postgresql://u:{pw}@127.0.0.1:1/db"],
    ids=["unknown-dialect", "unreachable-server"],
)
def test_demo_data_errors_never_print_the_password(url: str) -> None:
    secret = "s3cr3t-pw-xyz"
    result = invoke("demo-data", "--billing-url", url.format(pw=secret))
    assert result.exit_code == 1
    assert "unexpected error" in result.stderr
    assert secret not in result.output
    assert "writing demo data to" in result.stderr
    assert "u:***@" in result.stderr


# -- extract ----------------------------------------------------------------------------------


def test_extract_over_a_demo_range_writes_every_partition(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    assert demo_data(f"sqlite:///{tmp_path / 'billing.db'}").exit_code == 0
    end = START + timedelta(days=DAYS - 1)
    result = invoke(
        "--settings",
        str(settings),
        "extract",
        "--start",
        START.isoformat(),
        "--end",
        end.isoformat(),
    )
    assert result.exit_code == 0, result.output
    lake = tmp_path / "lake"
    days = [START + timedelta(days=i) for i in range(DAYS)]
    for name in DATASETS:
        for day in days:
            assert (lake / "billing" / name / f"date={day}" / "part-0.parquet").is_file(), name
    # The demo puts every row inside its window: the partitions hold all of it, once.
    data = generate(DemoConfig(start=START, days=DAYS, customers=25))
    for name in ("customers", "invoices", "payments", "invoice_lines"):
        key = TABLES[name].primary_key
        parts = [
            pq.read_table(lake / "billing" / name / f"date={d}" / "part-0.parquet") for d in days
        ]
        keys = pa.concat_tables(parts).column(key).to_pylist()
        assert sorted(keys) == sorted(r[key] for r in data.tables()[name]), name
    assert f"billing/payments: {len(data.payments)} rows over {DAYS} day(s)" in result.stdout
    # Nothing was written into the repository or the working directory outside tmp.
    assert not (tmp_path / "data").exists()
