"""The finance-ops command line. It launches the same Dagster definitions the UI shows.

Exit codes: 0 ok, 2 bad settings or input (one line saying what to fix), 1 unexpected failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from tieout.errors import ConfigError, InputDataError, TieoutError

F = TypeVar("F", bound=Callable[..., Any])

DEMO_START: Final = date(2026, 10, 1)
DEMO_DAYS: Final = 30
DEMO_BILLING_FILE: Final = "data/demo/billing.db"
DEMO_SETTLEMENTS_DIR: Final = "data/demo/settlements"


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
@click.option(
    "--settlements",
    "settlements_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write the matching gateway settlement files (each gateway's real format, with "
    "injected discrepancies) under DIR/<gateway>/, and DIR/answer_key.csv.",
)
@click.pass_context
def demo_data(
    ctx: click.Context,
    billing_url: str,
    db_schema: str,
    start: date,
    days: int,
    seed: int,
    customers: int,
    settlements_dir: Path | None,
) -> None:
    """Write a deterministic demo billing data set (replaces an earlier demo's rows)."""
    with _exit_codes(ctx.obj["debug"]):
        from tieout.connectors.billing import redact_url
        from tieout.demo import DemoConfig, generate, write_demo_data
        from tieout.settings import resolve_env

        url = resolve_env(billing_url, "--billing-url")
        _echo(f"writing demo data to {redact_url(url)} ({days} days from {start}, seed {seed})")
        config = DemoConfig(start=start, days=days, seed=seed, customers=customers)
        data = generate(config)
        counts = write_demo_data(
            url, config, schema=db_schema, progress=lambda m: _echo(f"  {m}"), data=data
        )
        click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))
        if settlements_dir is not None:
            click.echo(_write_demo_settlements(data, settlements_dir))


def _write_demo_settlements(data: Any, directory: Path) -> str:
    from tieout.demo_settlements import generate_settlements, write_settlements

    _echo(f"writing demo settlement files to {directory}")
    demo = generate_settlements(data)
    counts = write_settlements(demo, directory)
    files = " ".join(f"{k}_files={v}" for k, v in counts.items())
    return f"{files} settlement_lines={len(demo.all_lines())} discrepancies={len(demo.answer_key)}"


def _check_range(settings: Any, start: date, end: date) -> None:
    from tieout.pipelines.partitions import daily_partitions

    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    first = settings.billing.partitions_start
    if start < first:
        raise ConfigError(
            f"--start {start} is before billing.partitions_start ({first}); lower it in "
            "dagster_project.toml"
        )
    keys = daily_partitions(settings).get_partition_keys()
    if not keys or end.isoformat() > keys[-1]:
        last = keys[-1] if keys else "none yet"
        raise ConfigError(f"--end {end} is not a closed business day yet (latest: {last})")


def _run_job(
    settings: Any,
    job_name: str,
    start: date,
    end: date,
    what: str,
    op_config: dict[str, Any] | None = None,
    instance: Any = None,
    into: str | None = None,
    span: str | None = None,
) -> bool:
    """Materialize a job's assets for [start, end] in one run; True when it succeeded."""
    import dagster as dg

    from tieout.definitions import build_definitions

    defs = build_definitions(settings)
    job = defs.resolve_job_def(job_name)
    # With DAGSTER_HOME set the run is recorded where `dagster dev` shows it.
    if instance is None:
        instance = (
            dg.DagsterInstance.get()
            if os.environ.get("DAGSTER_HOME")
            else dg.DagsterInstance.ephemeral()
        )
    ndays = (end - start).days + 1
    span = span or f"{ndays} business day(s) {start}..{end}"
    _echo(f"{what} {span} into {into or settings.lake_root()}")
    t0 = time.perf_counter()
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if op_config:
        run_config["ops"] = {op: {"config": cfg} for op, cfg in op_config.items()}
    with instance:
        try:
            result = job.execute_in_process(
                instance=instance,
                run_config=run_config,
                tags={
                    "dagster/asset_partition_range_start": start.isoformat(),
                    "dagster/asset_partition_range_end": end.isoformat(),
                },
                raise_on_error=True,
            )
        except dg.DagsterError as exc:
            if type(exc).__name__ != "DagsterAssetCheckFailedError":
                raise
            raise InputDataError(_failed_checks(instance)) from None
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            if mat is None or mat.partition != start.isoformat():
                continue
            click.echo(f"{mat.asset_key.to_user_string()}: {_summary(mat.metadata, ndays)}")
            summary = mat.metadata.get("summary")
            if summary is not None:
                click.echo("")
                click.echo(str(summary.value))
                click.echo("")
            for key, value in sorted(mat.metadata.items()):
                if key.startswith("report/"):
                    click.echo(f"{key.removeprefix('report/')}: {value.value}")
    _echo(f"done in {time.perf_counter() - t0:.1f}s")
    return bool(result.success)


def _failed_checks(instance: Any) -> str:
    """One line naming every failed blocking check of the last run, and what failed inside."""
    run = instance.get_runs(limit=1)[0]
    parts = []
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        ev = event.event_specific_data
        if ev.passed or str(ev.severity.value) != "ERROR":
            continue
        failed = ev.metadata.get("failed")
        names = sorted(failed.value) if failed is not None else []
        parts.append(
            f"{ev.asset_key.to_user_string()} {ev.check_name} ({', '.join(names) or 'see Dagster'})"
        )
    return (
        "data checks failed, so nothing downstream of them ran: "
        + "; ".join(parts)
        + " (details and failing keys in the check metadata: `dagster dev`, or fix the data)"
    )


def _summary(md: Any, ndays: int) -> str:
    """One line per asset from its metadata: rows, and whatever needs a person's attention."""
    by_day = md.get("rows_by_day")
    if by_day is not None and isinstance(by_day.value, dict):
        rows: object = sum(by_day.value.values())
    else:
        count = md.get("dagster/row_count") or md.get("rows_in_run")
        rows = count.value if count is not None else "?"
    notes = []
    for key, label in (
        ("quarantined_values", "quarantined value(s)"),
        ("files_loaded", "new file(s) loaded"),
        ("files_quarantined", "file(s) quarantined"),
        ("files_duplicate", "duplicate file(s) skipped"),
        ("findings", "finding(s)"),
        ("batches_not_tied_out", "batch(es) not tied out"),
        ("open_exceptions", "open exception(s)"),
    ):
        item = md.get(key)
        if item is not None and item.value:
            notes.append(f"{item.value} {label}")
    return f"{rows} rows over {ndays} day(s)" + "".join(f", {n}" for n in notes)


def _run_extract(settings: Any, start: date, end: date, billing_url: str | None = None) -> bool:
    """Materialize the billing assets for [start, end] in one run; True when it succeeded."""
    from tieout.connectors.billing import BillingDatabase

    _check_range(settings, start, end)
    if billing_url is not None:
        settings = settings.model_copy(
            update={"billing": settings.billing.model_copy(update={"url": billing_url})}
        )
    db = BillingDatabase(settings.billing_url(), settings.billing.schema_, settings.billing.tables)
    try:
        db.check()  # fail before launching a run, naming table, column and setting
    finally:
        db.dispose()
    return _run_job(settings, "billing_extract", start, end, "extracting")


@main.command()
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.pass_context
def extract(ctx: click.Context, start: date, end: date) -> None:
    """Extract billing tables for business days START..END (inclusive) into the lake."""
    with _exit_codes(ctx.obj["debug"]):
        ok = _run_extract(_settings(ctx), start, end)
        sys.exit(0 if ok else 1)


def _demo_settings_toml(reports: str) -> str:
    """The demo's own dagster_project.toml: every path inside data/demo, the demo's fees."""
    from tieout.demo_erp import netsuite_toml
    from tieout.demo_revenue import salesforce_toml
    from tieout.demo_settlements import demo_fee_schedules

    out = [
        "# Written by `tieout demo`: the demo's own settings (paths relative to this file).",
        "[billing]",
        'url = "sqlite:///billing.db"',
        f"partitions_start = {DEMO_START.isoformat()}",
        "[lake]",
        'root = "lake"',
        "[settlements]",
        'path = "settlements"',
        "[state]",
        'url = "sqlite:///state.db"',
        "[reports]",
        f"path = {json.dumps(reports)}",
        "[reconciliation]",
        'finance_timezone = "UTC"',
        "settlement_window_days = 7",
        "[checks]",
        "# The demo injects discrepancies into a small data set on purpose: a lower floor.",
        "min_match_rate = 0.5",
        "warn_match_rate = 0.95",
    ]
    for gateway, fees in demo_fee_schedules().items():
        fixed = ", ".join(f"{c} = {v}" for c, v in dict(fees["fixed_minor"]).items())  # type: ignore[call-overload]
        out += [
            f"[reconciliation.gateways.{gateway}.fee_schedule]",
            f"percent_bps = {fees['percent_bps']}",
            f"fixed_minor = {{ {fixed} }}",
            f"fx_bps = {fees['fx_bps']}",
            f"tolerance_minor = {fees['tolerance_minor']}",
        ]
    out += netsuite_toml()
    out += salesforce_toml()
    return "\n".join(out) + "\n"


@contextmanager
def _ledger(settings: Any) -> Iterator[Any]:
    from tieout.connectors.ledger import PostingLedger

    ledger = PostingLedger(settings.state_url(), settings.state.schema_)
    try:
        yield ledger
    finally:
        ledger.dispose()


def _demo_revenue(settings: Any, start: date, end: date) -> bool:
    """Build and check the months' revenue schedules, print the Salesforce plan, load it
    through Dagster into an in-process Salesforce sandbox."""
    import dagster as dg

    from tieout.connectors.lake import Lake
    from tieout.connectors.salesforce import make_client
    from tieout.demo_erp import ledger_summary
    from tieout.demo_revenue import salesforce_sandbox, sandbox_summary
    from tieout.revenue.loading import describe_all, plan_revenue, render_plan

    ok = _run_job(
        settings, "revenue_schedule", start.replace(day=1), end.replace(day=1),
        "building the revenue schedules of", instance=dg.DagsterInstance.get(),
        into=f"{settings.lake_root()}/revenue/schedule",
        span=f"month(s) {start.strftime('%Y-%m')}..{end.strftime('%Y-%m')}",
    )  # fmt: skip
    if not ok:
        return False
    with salesforce_sandbox() as sb:
        _echo(f"Salesforce sandbox (in-process, TLS REST and Bulk 2.0) at {sb.instance_url}")
        sf = settings.revenue.salesforce
        lake = Lake(settings.lake_root(), settings.lake_endpoint())
        with _ledger(settings) as ledger:
            shapes = describe_all(sf, make_client(sf, Path(settings.base_dir)))
            plan = plan_revenue(settings, lake, ledger, start, end, shapes)
        click.echo("")
        click.echo(render_plan(plan, limit=5))
        click.echo("")
        ok = _run_job(
            settings, "revenue_load", start, end, "loading revenue of",
            instance=dg.DagsterInstance.get(), into="the Salesforce sandbox",
        )  # fmt: skip
        click.echo(sandbox_summary(sb))
        with _ledger(settings) as ledger:
            click.echo(f"posting ledger (state database): {ledger_summary(ledger, 'salesforce')}")
    return ok


def _demo_post(settings: Any, start: date, end: date) -> bool:
    """Plan the demo's journals, print the plan, post them through Dagster to a sandbox."""
    import dagster as dg

    from tieout.connectors.exception_store import ExceptionStore
    from tieout.connectors.lake import Lake
    from tieout.demo_erp import ledger_summary, netsuite_sandbox, sandbox_summary
    from tieout.posting import plan_posting, render_plan

    with netsuite_sandbox() as sb:
        _echo(f"NetSuite sandbox (in-process, real SOAP) at {sb.endpoint_url}")
        lake = Lake(settings.lake_root(), settings.lake_endpoint())
        store = ExceptionStore(settings.state_url(), settings.state.schema_)
        try:
            with _ledger(settings) as ledger:
                plan = plan_posting(settings, lake, store, ledger, start, end, end)
        finally:
            store.dispose()
        click.echo("")
        click.echo(render_plan(plan, limit=5))
        click.echo("")
        ok = _run_job(
            settings, "erp_posting", start, end, "posting journals of",
            instance=dg.DagsterInstance.get(), into="the NetSuite sandbox",
        )  # fmt: skip
        click.echo(sandbox_summary(sb))
        with _ledger(settings) as ledger:
            click.echo(f"posting ledger (state database): {ledger_summary(ledger, 'netsuite')}")
    return ok


@main.command()
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--customers", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the reports go (default: data/demo/reports).",
)
@click.pass_context
def demo(ctx: click.Context, seed: int, customers: int, out: Path | None) -> None:
    """The whole pipeline on demo data, on a fresh machine: no server, no credentials.

    Writes a demo billing database (SQLite) and the matching gateway settlement files (with
    known discrepancies, listed in data/demo/settlements/answer_key.csv) under data/demo/,
    then runs the nightly_close job (extract, load settlements, reconcile, report) over the
    demo's 30 business days through Dagster on a local instance in data/demo/dagster_home,
    prints the ERP plan and posts the journals to an in-process NetSuite sandbox (erp_posting),
    then builds the revenue schedules (revenue_schedule) and loads billing status and schedules
    into an in-process Salesforce sandbox (revenue_load).
    Your own dagster_project.toml is not touched: the demo writes and uses
    data/demo/dagster_project.toml.
    """
    from tieout.demo_erp import fast_sqlite

    with _exit_codes(ctx.obj["debug"]), fast_sqlite():
        import dagster as dg

        from tieout.demo import DemoConfig, generate, write_demo_data
        from tieout.settings import load_settings

        base = _settings(ctx).base_dir
        demo_dir = (base / "data" / "demo").resolve()
        demo_dir.mkdir(parents=True, exist_ok=True)
        reports = str(out.resolve()) if out is not None else "reports"
        settings_file = demo_dir / "dagster_project.toml"
        settings_file.write_text(_demo_settings_toml(reports), encoding="utf-8")
        (demo_dir / "state.db").unlink(missing_ok=True)  # a fresh registry and exception log
        _echo(f"writing demo billing data to {demo_dir / 'billing.db'}")
        config = DemoConfig(start=DEMO_START, days=DEMO_DAYS, seed=seed, customers=customers)
        data = generate(config)
        write_demo_data(
            f"sqlite:///{demo_dir / 'billing.db'}",
            config,
            schema=None,
            progress=lambda m: _echo(f"  {m}"),
            data=data,
        )
        click.echo(_write_demo_settlements(data, demo_dir / "settlements"))
        settings = load_settings(settings_file)
        end = DEMO_START + timedelta(days=DEMO_DAYS - 1)
        home = demo_dir / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").touch()
        before = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(home)
        try:
            ok = _run_job(
                settings,
                "nightly_close",
                DEMO_START,
                end,
                "closing",
                instance=dg.DagsterInstance.get(),
            )
            if ok:
                ok = _demo_post(settings, DEMO_START, end)
            if ok:
                ok = _demo_revenue(settings, DEMO_START, end)
        finally:
            if before is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = before
        report_dir = Path(settings.reports_path())
        click.echo(f"report: {report_dir / 'report.html'} (open it in a browser)")
        click.echo(f"workbook: {report_dir / 'report.xlsx'}")
        click.echo(
            f"answer key of the injected discrepancies: {demo_dir / 'settlements'}/answer_key.csv"
        )
        click.echo(
            "Dagster UI on the same data: "
            f"TIEOUT_SETTINGS={settings_file} DAGSTER_HOME={home} dagster dev -m tieout.definitions"
        )
        sys.exit(0 if ok else 1)


@main.command()
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="dagster_project.toml to use (same as the global --settings).",
)
@click.option("--billing-url", default=None, help="Billing database URL (overrides billing.url).")
@click.option(
    "--settlements",
    "settlements_path",
    default=None,
    help="Settlement files folder or s3:// prefix (overrides settlements.path).",
)
@click.option(
    "--out", default=None, help="Reports folder or s3:// prefix (overrides reports.path)."
)
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    type=click.Choice(["stripe", "adyen", "paypal", "braintree"]),
    help="Only this gateway (repeatable; default: all).",
)
@click.pass_context
def reconcile(
    ctx: click.Context,
    start: date,
    end: date,
    config_path: Path | None,
    billing_url: str | None,
    settlements_path: str | None,
    out: str | None,
    gateways: tuple[str, ...],
) -> None:
    """Reconcile business days START..END: extract billing, load settlements, tie them out,
    record the exceptions and write exceptions.csv, summary.json, report.xlsx and report.html.

    Exit code 0 when it ran (exceptions are results, not errors), 2 for bad settings or
    input, 1 for a crash.
    """
    with _exit_codes(ctx.obj["debug"]):
        from tieout.connectors.billing import BillingDatabase
        from tieout.settings import load_settings

        settings = load_settings(config_path) if config_path else _settings(ctx)
        updates: dict[str, Any] = {}
        if billing_url:
            updates["billing"] = settings.billing.model_copy(update={"url": billing_url})
        if settlements_path:
            updates["settlements"] = settings.settlements.model_copy(
                update={"path": settlements_path}
            )
        if out:
            updates["reports"] = settings.reports.model_copy(update={"path": out})
        settings = settings.model_copy(update=updates)
        _check_range(settings, start, end)
        db = BillingDatabase(
            settings.billing_url(), settings.billing.schema_, settings.billing.tables
        )
        try:
            db.check()
        finally:
            db.dispose()
        ok = _run_job(
            settings,
            "nightly_close",
            start,
            end,
            "reconciling",
            op_config={"recon__exceptions": {"gateways": list(gateways)}},
        )
        sys.exit(0 if ok else 1)


@main.group()
def settlements() -> None:
    """Gateway settlement reports: parse files, load them into the lake."""


@settlements.command("parse")
@click.option(
    "--gateway",
    required=True,
    type=click.Choice(["stripe", "adyen", "paypal", "braintree"]),
    help="Which gateway delivered the files.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the CSV here instead of standard output.",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def settlements_parse(
    ctx: click.Context, gateway: str, out: Path | None, files: tuple[Path, ...]
) -> None:
    """Print the canonical settlement lines of FILES as CSV (header first).

    Every file is parsed whole before anything is written: a bad file stops the command with
    exit code 2 and one line naming the file, the line and what is wrong.
    """
    with _exit_codes(ctx.obj["debug"]):
        from tieout.connectors.settlements import parse_file
        from tieout.connectors.settlements.base import SETTLEMENT_COLUMNS, SettlementFileError
        from tieout.connectors.settlements.common import csv_text

        rows: list[list[object]] = [list(SETTLEMENT_COLUMNS)]
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SettlementFileError(
                    f"cannot read the file ({exc.strerror})", file=str(path)
                ) from None
            parsed = parse_file(gateway, data, str(path))
            for line in parsed.lines:
                rows.append([_csv_value(getattr(line, c)) for c in SETTLEMENT_COLUMNS])
            for finding in parsed.findings:
                _echo(f"warning: {path}: {finding.message}")
            _echo(f"{path}: {parsed.format}, {len(parsed.lines)} line(s)")
        text = csv_text(rows)
        if out is None:
            click.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")


def _csv_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


@settlements.command("load")
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.pass_context
def settlements_load(ctx: click.Context, start: date, end: date) -> None:
    """Read new settlement files, then rebuild business days START..END (inclusive)."""
    with _exit_codes(ctx.obj["debug"]):
        settings = _settings(ctx)
        _check_range(settings, start, end)
        ok = _run_job(settings, "settlements_load", start, end, "loading settlements for")
        sys.exit(0 if ok else 1)


def _state(ctx: click.Context) -> Any:
    from tieout.connectors.state import StateDatabase

    settings = _settings(ctx)
    return StateDatabase(settings.state_url(), settings.state.schema_)


@settlements.command("files")
@click.option(
    "--status",
    type=click.Choice(["loaded", "quarantined"]),
    default=None,
    help="Only files with this status.",
)
@click.pass_context
def settlements_files(ctx: click.Context, status: str | None) -> None:
    """List the settlement files tieout has read (from the state database), oldest first."""
    with _exit_codes(ctx.obj["debug"]):
        state = _state(ctx)
        try:
            records = state.records(status=status)
        finally:
            state.dispose()
        from tieout.connectors.settlements.common import csv_text

        columns = ("sha256", "gateway", "status", "format", "lines", "first_day", "last_day")
        rows: list[list[object]] = [[*columns, "path", "error"]]
        for r in records:
            rows.append([getattr(r, c) for c in columns] + [r.path, r.error])
            rows[-1][0] = r.sha256[:12]
        click.echo(csv_text(rows), nl=False)
        _echo(f"{len(records)} file(s)")


@settlements.command("forget")
@click.argument("sha256_prefix")
@click.pass_context
def settlements_forget(ctx: click.Context, sha256_prefix: str) -> None:
    """Forget one file (by its sha256 or a unique prefix of it) so the next load reads it again.

    For a file quarantined by an older tieout that can now read it. Its lines stay out of the
    partitions until the next `settlements load` of their days.
    """
    with _exit_codes(ctx.obj["debug"]):
        state = _state(ctx)
        try:
            matches = [r for r in state.records() if r.sha256.startswith(sha256_prefix.lower())]
            if len(matches) != 1:
                found = "no file" if not matches else f"{len(matches)} files"
                raise ConfigError(
                    f"{found} registered with a sha256 starting {sha256_prefix!r}; see "
                    "`tieout settlements files`"
                )
            state.forget(matches[0].sha256)
        finally:
            state.dispose()
        click.echo(f"forgot {matches[0].path} ({matches[0].status})")


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


def _register_subcommands() -> None:
    from tieout.cli_erp import erp
    from tieout.cli_exceptions import exceptions
    from tieout.cli_revenue import revenue

    main.add_command(exceptions)
    main.add_command(erp)
    main.add_command(revenue)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    main()
