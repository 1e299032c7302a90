"""The finance-ops command line. It launches the same Dagster definitions the UI shows.

Exit codes: 0 ok, 2 bad settings or input (one line saying what to fix), 1 unexpected failure.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from tieout.errors import ConfigError, InputDataError, TieoutError

F = TypeVar("F", bound=Callable[..., Any])

DEMO_START: Final = date(2026, 10, 1)
DEMO_DAYS: Final = 30
DEMO_BILLING_FILE: Final = "data/demo/billing.db"


def _one_line(exc: BaseException) -> str:
    return " | ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


def _user_error(exc: BaseException) -> TieoutError | None:
    """The tieout error behind `exc`, also when Dagster wrapped it in its own."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ConfigError | InputDataError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or getattr(cur, "user_exception", None) or cur.__context__
    return None


@contextmanager
def _exit_codes(debug: bool) -> Iterator[None]:
    try:
        yield
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        user = _user_error(exc)
        if user is not None:
            click.echo(f"error: {_one_line(user)}", err=True)
            sys.exit(2)
        if debug:
            raise
        if isinstance(exc, TieoutError):  # e.g. the database is unreachable: worth a retry
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(1)
        click.echo(f"unexpected error: {type(exc).__name__}: {_one_line(exc)}", err=True)
        click.echo("(run again with --debug for the traceback)", err=True)
        sys.exit(1)


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


class _Date(click.ParamType):  # type: ignore[type-arg]
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


DATE = _Date()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="dagster_project.toml to use (default: $TIEOUT_SETTINGS, else ./dagster_project.toml, "
    "else built-in defaults).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, settings_path: Path | None, debug: bool) -> None:
    """tieout: tie billing out against payment gateways, then post to the ERP."""
    warnings.filterwarnings("ignore", module="dagster")
    ctx.obj = {"settings_path": settings_path, "debug": debug}


def _settings(ctx: click.Context) -> Any:
    from tieout.settings import load_settings

    return load_settings(ctx.obj["settings_path"])


@main.command("demo-data")
@click.option(
    "--billing-url", required=True, help="SQLAlchemy URL to write to (SQLite or Postgres)."
)
@click.option(
    "--schema", "db_schema", default="billing", show_default=True, help="Postgres schema."
)
@click.option("--start", type=DATE, default=DEMO_START.isoformat(), show_default=True)
@click.option("--days", type=click.IntRange(1, 3660), default=DEMO_DAYS, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--customers", type=click.IntRange(1, 10_000_000), default=200, show_default=True)
@click.pass_context
def demo_data(
    ctx: click.Context,
    billing_url: str,
    db_schema: str,
    start: date,
    days: int,
    seed: int,
    customers: int,
) -> None:
    """Write a deterministic demo billing data set (replaces an earlier demo's rows)."""
    with _exit_codes(ctx.obj["debug"]):
        from tieout.connectors.billing import redact_url
        from tieout.demo import DemoConfig, write_demo_data
        from tieout.settings import resolve_env

        url = resolve_env(billing_url, "--billing-url")
        _echo(f"writing demo data to {redact_url(url)} ({days} days from {start}, seed {seed})")
        counts = write_demo_data(
            url,
            DemoConfig(start=start, days=days, seed=seed, customers=customers),
            schema=db_schema,
            progress=lambda m: _echo(f"  {m}"),
        )
        click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


def _run_extract(settings: Any, start: date, end: date, billing_url: str | None = None) -> bool:
    """Materialize the billing assets for [start, end] in one run; True when it succeeded."""
    import dagster as dg

    from tieout.connectors.billing import BillingDatabase
    from tieout.definitions import build_definitions
    from tieout.pipelines.partitions import daily_partitions

    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    first = settings.billing.partitions_start
    if start < first:
        raise ConfigError(
            f"--start {start} is before billing.partitions_start ({first}); lower it in "
            "dagster_project.toml"
        )
    partitions = daily_partitions(settings)
    keys = partitions.get_partition_keys()
    if not keys or end.isoformat() > keys[-1]:
        last = keys[-1] if keys else "none yet"
        raise ConfigError(f"--end {end} is not a closed business day yet (latest: {last})")
    if billing_url is not None:
        settings = settings.model_copy(
            update={"billing": settings.billing.model_copy(update={"url": billing_url})}
        )
    db = BillingDatabase(settings.billing_url(), settings.billing.schema_, settings.billing.tables)
    try:
        db.check()  # fail before launching a run, naming table, column and setting
    finally:
        db.dispose()
    defs = build_definitions(settings)
    job = defs.resolve_job_def("billing_extract")
    # With DAGSTER_HOME set the run is recorded where `dagster dev` shows it.
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    ndays = (end - start).days + 1
    _echo(f"extracting {ndays} business day(s) {start}..{end} into {settings.lake_root()}")
    t0 = time.perf_counter()
    with instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": end.isoformat(),
            },
            raise_on_error=True,
        )
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            if mat is None or mat.partition != start.isoformat():
                continue
            md = mat.metadata
            by_day = md["rows_by_day"].value
            rows = sum(by_day.values()) if isinstance(by_day, dict) else "?"
            bad = md.get("quarantined_values")
            note = f", {bad.value} quarantined value(s)" if bad is not None and bad.value else ""
            click.echo(f"{mat.asset_key.to_user_string()}: {rows} rows over {ndays} day(s){note}")
    _echo(f"done in {time.perf_counter() - t0:.1f}s")
    return bool(result.success)


@main.command()
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.pass_context
def extract(ctx: click.Context, start: date, end: date) -> None:
    """Extract billing tables for business days START..END (inclusive) into the lake."""
    with _exit_codes(ctx.obj["debug"]):
        ok = _run_extract(_settings(ctx), start, end)
        sys.exit(0 if ok else 1)


@main.command()
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--customers", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.pass_context
def demo(ctx: click.Context, seed: int, customers: int) -> None:
    """The main job on embedded defaults: demo data into a local SQLite file, then extraction.

    The demo never touches the billing database of your settings: it writes its own SQLite file
    (data/demo/billing.db next to the settings file) and extracts from it.
    """
    with _exit_codes(ctx.obj["debug"]):
        from tieout.demo import DemoConfig, write_demo_data

        settings = _settings(ctx)
        db_file = (settings.base_dir / DEMO_BILLING_FILE).resolve()
        db_file.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{db_file}"
        _echo(f"writing demo billing data to {db_file}")
        write_demo_data(
            url,
            DemoConfig(start=DEMO_START, days=DEMO_DAYS, seed=seed, customers=customers),
            schema=None,
            progress=lambda m: _echo(f"  {m}"),
        )
        end = DEMO_START + timedelta(days=DEMO_DAYS - 1)
        ok = _run_extract(settings, DEMO_START, end, billing_url=url)
        sys.exit(0 if ok else 1)


@main.command("schema")
@click.option(
    "--dialect",
    type=click.Choice(["postgresql", "sqlite"]),
    default="postgresql",
    show_default=True,
)
@click.option("--schema", "db_schema", default="billing", show_default=True)
def schema_cmd(dialect: str, db_schema: str) -> None:
    """Print the reference billing schema's DDL."""
    from tieout.schema import ddl

    click.echo(ddl(dialect, db_schema), nl=False)


@main.command("config-reference")
def config_reference_cmd() -> None:
    """Print the settings reference (Markdown) generated from the settings models."""
    from tieout.settings import config_reference

    click.echo(config_reference())


@main.command("check-settings")
@click.option(
    "--connect", is_flag=True, help="Also check the billing database against the mapping."
)
@click.pass_context
def check_settings(ctx: click.Context, connect: bool) -> None:
    """Validate dagster_project.toml (and optionally the billing database) and say so."""
    with _exit_codes(ctx.obj["debug"]):
        settings = _settings(ctx)
        if connect:
            from tieout.connectors.billing import BillingDatabase

            db = BillingDatabase(
                settings.billing_url(), settings.billing.schema_, settings.billing.tables
            )
            try:
                db.check()
            finally:
                db.dispose()
        click.echo("settings ok" + (" and billing database matches the mapping" if connect else ""))


if __name__ == "__main__":  # pragma: no cover
    main()
