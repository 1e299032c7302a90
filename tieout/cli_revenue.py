"""`tieout revenue plan|apply`: revenue schedules and billing status into Salesforce, reviewed
first, loaded exactly once in effect.

`plan` builds the schedules and the Salesforce records for a date range from the lake,
checks every mapped field against Salesforce's describe, compares the records with the
posting ledger and prints (and saves) what loading would create, update or retry, without
writing anything. `apply --plan FILE` loads exactly that plan; `apply --start/--end` plans
and loads in one go. Bad settings or input exit 2; records Salesforce refused or that could
not be confirmed exit 1 with each one named by its key.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

DATE = click.DateTime(formats=["%Y-%m-%d"])


@click.group()
def revenue() -> None:
    """Load revenue schedules and billing status into Salesforce: plan, review, apply."""


def _open(ctx: click.Context) -> tuple[Any, Any, Any]:
    from tieout.cli import _settings
    from tieout.connectors.lake import Lake
    from tieout.connectors.ledger import PostingLedger

    settings = _settings(ctx)
    lake = Lake(settings.lake_root(), settings.lake_endpoint())
    ledger = PostingLedger(settings.state_url(), settings.state.schema_)
    return settings, lake, ledger


def _make_plan(ctx: click.Context, start: date, end: date) -> tuple[Any, Any, Any]:
    from tieout.connectors.salesforce import make_client
    from tieout.errors import InputDataError
    from tieout.revenue.loading import describe_all, plan_revenue, salesforce_settings

    if end < start:
        raise InputDataError(f"--end {end} is before --start {start}")
    settings, lake, ledger = _open(ctx)
    sf = salesforce_settings(settings)
    client = make_client(sf, Path(settings.base_dir))
    plan = plan_revenue(settings, lake, ledger, start, end, describe_all(sf, client))
    return settings, ledger, plan


def _default_plan_path(settings: Any, start: date, end: date) -> Path:
    return Path(settings.base_dir) / "data" / "revenue" / f"plan-{start}-{end}.json"


@revenue.command("plan")
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the plan (default: data/revenue/plan-START-END.json).",
)
@click.pass_context
def plan_cmd(ctx: click.Context, start: Any, end: Any, out: Path | None) -> None:
    """Show what loading START..END into Salesforce would do, without writing anything."""
    from tieout.cli import _exit_codes
    from tieout.erp.plan import write_plan
    from tieout.revenue.loading import render_plan

    with _exit_codes(ctx.obj["debug"]):
        settings, ledger, plan = _make_plan(ctx, start.date(), end.date())
        ledger.dispose()
        click.echo(render_plan(plan, limit=20))
        path = write_plan(plan, out or _default_plan_path(settings, start.date(), end.date()))
        click.echo(f"plan saved to {path}; load it with: tieout revenue apply --plan {path}")
        if plan.problems:
            click.echo(f"error: {len(plan.problems)} problem(s) (above)", err=True)
            sys.exit(2)


@revenue.command("apply")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A plan saved by `tieout revenue plan` (loads exactly that).",
)
@click.option("--start", type=DATE, default=None, help="Without --plan: plan START..END now.")
@click.option("--end", type=DATE, default=None)
@click.pass_context
def apply_cmd(ctx: click.Context, plan_path: Path | None, start: Any, end: Any) -> None:
    """Load a plan into Salesforce: exactly once in effect, retrying throttling and outages."""
    from tieout.cli import _exit_codes
    from tieout.errors import InputDataError
    from tieout.revenue.loading import apply_revenue, make_target, read_plan, render_plan

    with _exit_codes(ctx.obj["debug"]):
        if plan_path is not None:
            settings, _lake, ledger = _open(ctx)
            plan = read_plan(plan_path)
        elif start is not None and end is not None:
            settings, ledger, plan = _make_plan(ctx, start.date(), end.date())
        else:
            raise InputDataError("give --plan FILE, or --start and --end to plan and load now")
        try:
            click.echo(render_plan(plan, limit=20))
            if plan.problems:
                raise InputDataError(f"{len(plan.problems)} problem(s) (above)")
            target = make_target(settings, plan)
            result = apply_revenue(settings, plan, ledger, target, progress=click.echo)
        finally:
            ledger.dispose()
        click.echo(
            f"loaded: {len(result.confirmed)} confirmed, {len(result.skipped)} already "
            f"loaded, {len(result.failed)} refused, {len(result.unresolved)} unresolved "
            f"({result.requests} request(s), {target.bulk_jobs} Bulk job(s))"
        )
        for ext, err in sorted(result.failed.items()):
            click.echo(f"  refused {ext}: {err}", err=True)
        for ext, err in sorted(result.unresolved.items()):
            click.echo(f"  unresolved {ext}: {err} (run apply again)", err=True)
        sys.exit(1 if result.failed or result.unresolved else 0)
