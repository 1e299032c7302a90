"""`tieout erp plan|apply`: journal entries to NetSuite, reviewed first, posted exactly once.

`plan` builds the entries for a date range from the lake and the exception store, compares
them with the posting ledger and prints (and saves) what posting would create, update,
adjust, retry or hold back, without sending anything. `apply --plan FILE` posts exactly that
plan; `apply --start/--end` plans and posts in one go. Bad settings or input exit 2; records
NetSuite refused or that could not be confirmed exit 1 with each one named.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

import click

DATE = click.DateTime(formats=["%Y-%m-%d"])


def _day(value: Any) -> date | None:
    return None if value is None else value.date()


@click.group()
def erp() -> None:
    """Post journal entries to the ERP (NetSuite): plan, review, apply."""


def _context(ctx: click.Context) -> tuple[Any, Any, Any, Any]:
    from tieout.cli import _settings
    from tieout.connectors.exception_store import ExceptionStore
    from tieout.connectors.lake import Lake
    from tieout.connectors.ledger import PostingLedger

    settings = _settings(ctx)
    lake = Lake(settings.lake_root(), settings.lake_endpoint())
    store = ExceptionStore(settings.state_url(), settings.state.schema_)
    ledger = PostingLedger(settings.state_url(), settings.state.schema_)
    return settings, lake, store, ledger


def _default_plan_path(settings: Any, start: date, end: date) -> Path:
    return Path(settings.base_dir) / "data" / "erp" / f"plan-{start}-{end}.json"


def _make_plan(ctx: click.Context, start: date, end: date, as_of: date | None) -> tuple[Any, Any]:
    from tieout.errors import InputDataError
    from tieout.posting import plan_posting

    if end < start:
        raise InputDataError(f"--end {end} is before --start {start}")
    settings, lake, store, ledger = _context(ctx)
    plan = plan_posting(settings, lake, store, ledger, start, end, as_of or end)
    return settings, plan


@erp.command("plan")
@click.option("--start", type=DATE, required=True, help="First business day.")
@click.option("--end", type=DATE, required=True, help="Last business day (inclusive).")
@click.option("--as-of", type=DATE, default=None, help="Date of adjusting entries (default: END).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the plan (default: data/erp/plan-START-END.json beside the settings).",
)
@click.pass_context
def plan_cmd(ctx: click.Context, start: Any, end: Any, as_of: Any, out: Path | None) -> None:
    """Show what posting START..END would do, without sending anything."""
    from tieout.cli import _exit_codes
    from tieout.erp.plan import write_plan
    from tieout.posting import render_plan

    with _exit_codes(ctx.obj["debug"]):
        settings, plan = _make_plan(ctx, start.date(), end.date(), _day(as_of))
        click.echo(render_plan(plan))
        path = write_plan(plan, out or _default_plan_path(settings, start.date(), end.date()))
        click.echo(f"plan saved to {path}; post it with: tieout erp apply --plan {path}")
        if plan.problems:
            click.echo(f"error: {len(plan.problems)} entr(ies) cannot be posted (above)", err=True)
            sys.exit(2)


@erp.command("apply")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A plan saved by `tieout erp plan` (posts exactly that).",
)
@click.option("--start", type=DATE, default=None, help="Without --plan: plan START..END now.")
@click.option("--end", type=DATE, default=None)
@click.option("--as-of", type=DATE, default=None)
@click.pass_context
def apply_cmd(ctx: click.Context, plan_path: Path | None, start: Any, end: Any, as_of: Any) -> None:
    """Post a plan to NetSuite: exactly once, retrying throttling and outages."""
    from tieout.cli import _exit_codes
    from tieout.connectors.netsuite import NetSuiteTarget
    from tieout.errors import InputDataError
    from tieout.posting import apply_posting, netsuite_settings, read_plan, render_plan

    with _exit_codes(ctx.obj["debug"]):
        if plan_path is not None:
            settings, _, _, ledger = _context(ctx)
            plan = read_plan(plan_path)
        elif start is not None and end is not None:
            settings, plan = _make_plan(ctx, start.date(), end.date(), _day(as_of))
            ledger = _context(ctx)[3]
        else:
            raise InputDataError("give --plan FILE, or --start and --end to plan and post now")
        click.echo(render_plan(plan))
        if plan.problems:
            raise InputDataError(f"{len(plan.problems)} entr(ies) cannot be posted (above)")
        target = NetSuiteTarget(netsuite_settings(settings), base_dir=Path(settings.base_dir))
        result = apply_posting(settings, plan, ledger, target, progress=click.echo)
        click.echo(
            f"posted: {len(result.confirmed)} confirmed, {len(result.skipped)} already "
            f"posted, {len(result.failed)} refused, {len(result.unresolved)} unresolved "
            f"({result.requests} request(s), {result.read_back} read back)"
        )
        for ext, err in sorted(result.failed.items()):
            click.echo(f"  refused {ext}: {err}", err=True)
        for ext, err in sorted(result.unresolved.items()):
            click.echo(f"  unresolved {ext}: {err} (run apply again)", err=True)
        sys.exit(1 if result.failed or result.unresolved else 0)
