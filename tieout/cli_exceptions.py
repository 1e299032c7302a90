"""`tieout exceptions`: look at reconciliation exceptions and record a person's decisions.

Decisions (resolve, waive, reopen) go to the exception store in the state database with who
made them and why, so the next run keeps them and an auditor can read the history. User errors
(unknown id, missing note, unreadable file) exit with code 2 and one `error:` line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tieout.errors import InputDataError
from tieout.reconcile.model import EXCEPTION_KINDS, STATUSES

if TYPE_CHECKING:  # imported when a command runs, so `tieout --help` stays quick
    from tieout.connectors.exception_store import ExceptionStore, StoredException

EXPLANATION_WIDTH = 60


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug", False))


def _store(ctx: click.Context) -> ExceptionStore:
    from tieout.cli import _settings  # lazily: tieout.cli will import this module
    from tieout.connectors.exception_store import ExceptionStore

    settings = _settings(ctx)
    return ExceptionStore(settings.state_url(), settings.state.schema_)


def _default_by(by: str | None) -> str:
    """Who is deciding: --by, else $TIEOUT_USER, else $USER, else "unknown"."""
    for value in (by, os.environ.get("TIEOUT_USER"), os.environ.get("USER")):
        if value and value.strip():
            return value.strip()
    return "unknown"


def amount_text(amount_minor: int, currency: str | None) -> str:
    """The amount with its currency's decimals; raw minor units when the currency is unknown."""
    from tieout.money import format_minor

    if currency:
        try:
            return format_minor(amount_minor, currency)
        except ValueError:
            pass
    return f"{amount_minor} (minor units, {currency or 'no currency'})"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


@click.group("exceptions", context_settings={"help_option_names": ["-h", "--help"]})
def exceptions() -> None:
    """Reconciliation exceptions: list, show, resolve, waive, import edits from the report."""


@exceptions.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@click.option("--kind", type=click.Choice(EXCEPTION_KINDS), default=None, help="Only this kind.")
@click.option("--gateway", default=None, help="Only this gateway (e.g. stripe).")
@click.pass_context
def list_cmd(ctx: click.Context, status: str | None, kind: str | None, gateway: str | None) -> None:
    """List stored exceptions, oldest first seen first."""
    from tieout.cli import _exit_codes

    with _exit_codes(_debug(ctx)):
        store = _store(ctx)
        try:
            found = store.list(status=status, kind=kind, gateway=gateway)
        finally:
            store.dispose()
        header = ("id", "kind", "gateway", "amount", "status", "first_seen", "last_seen")
        rows = [
            (
                x.exception_id,
                x.kind,
                x.gateway or "",
                amount_text(x.amount_minor, x.currency),
                x.status,
                _text(x.first_seen),
                _text(x.last_seen),
                _short(x.explanation, EXPLANATION_WIDTH),
            )
            for x in found
        ]
        if rows:
            click.echo(_table([*header, "explanation"], rows, right={3}))
        click.echo(f"{len(rows)} exception(s)", err=True)


@exceptions.command("show")
@click.argument("exception_id")
@click.pass_context
def show_cmd(ctx: click.Context, exception_id: str) -> None:
    """Show one exception (by its id or a unique start of it) and its history."""
    from tieout.cli import _exit_codes

    with _exit_codes(_debug(ctx)):
        store = _store(ctx)
        try:
            x = store.find(exception_id)
            events = store.history(x.exception_id)
        finally:
            store.dispose()
        values: dict[str, Any] = {
            "exception_id": x.exception_id,
            "kind": x.kind,
            "severity": x.severity,
            "status": x.status,
            "status_by": x.status_by,
            "status_at": x.status_at,
            "note": x.note,
            "gateway": x.gateway,
            "currency": x.currency,
            "amount": amount_text(x.amount_minor, x.currency),
            "amount_minor": x.amount_minor,
            "day": x.day,
            "payment_id": x.payment_id,
            "invoice_id": x.invoice_id,
            "settlement_line_id": x.settlement_line_id,
            "batch_id": x.batch_id,
            "first_seen": x.first_seen,
            "last_seen": x.last_seen,
            "explanation": x.explanation,
        }
        width = max(map(len, values))
        for key, value in values.items():
            click.echo(f"{key.ljust(width)}  {_text(value)}".rstrip())
        click.echo("")
        click.echo("history:")
        for e in events:
            move = f"{e.from_status or '(new)'} -> {e.to_status}"
            where = f" run {e.run_id}" if e.run_id else ""
            note = f": {e.note}" if e.note else ""
            click.echo(f"  {_text(e.at)}  {move}  by {e.by}{where}{note}")


def _set(
    ctx: click.Context, exception_id: str, status: str, note: str | None, by: str | None
) -> None:
    from tieout.cli import _exit_codes

    with _exit_codes(_debug(ctx)):
        store = _store(ctx)
        try:
            x = store.find(exception_id)
            after = store.set_status(x.exception_id, status, _default_by(by), note)
        finally:
            store.dispose()
        click.echo(_decision(x, after))


def _decision(before: StoredException, after: StoredException) -> str:
    amount = amount_text(after.amount_minor, after.currency)
    if before.status == after.status and before.note == after.note:
        return f"{after.exception_id} already {after.status} ({amount}): nothing changed"
    return f"{after.exception_id} {after.status} by {after.status_by} ({amount}): {after.note}"


_NOTE = click.option("--note", default=None, help="Why (required): kept in the history.")
_BY = click.option(
    "--by", default=None, help="Who decides (default: $TIEOUT_USER, else $USER, else unknown)."
)


@exceptions.command("resolve")
@click.argument("exception_id")
@_NOTE
@_BY
@click.pass_context
def resolve_cmd(ctx: click.Context, exception_id: str, note: str | None, by: str | None) -> None:
    """Mark an exception resolved (it was fixed); a run keeps a person's resolution."""
    _set(ctx, exception_id, "resolved", note, by)


@exceptions.command("waive")
@click.argument("exception_id")
@_NOTE
@_BY
@click.pass_context
def waive_cmd(ctx: click.Context, exception_id: str, note: str | None, by: str | None) -> None:
    """Accept an exception as it is; it reopens if a later run finds another amount."""
    _set(ctx, exception_id, "waived", note, by)


@exceptions.command("reopen")
@click.argument("exception_id")
@click.option("--note", default=None, help="Why (optional): kept in the history.")
@_BY
@click.pass_context
def reopen_cmd(ctx: click.Context, exception_id: str, note: str | None, by: str | None) -> None:
    """Set a resolved or waived exception back to open."""
    _set(ctx, exception_id, "open", note, by)


@exceptions.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_BY
@click.pass_context
def import_cmd(ctx: click.Context, file: Path, by: str | None) -> None:
    """Apply the statuses and notes edited in an Excel report, all or nothing."""
    from tieout.cli import _exit_codes

    with _exit_codes(_debug(ctx)):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InputDataError(f"{file}: cannot read the file ({exc.strerror})") from None
        from tieout.reports import read_status_updates

        updates = read_status_updates(data, str(file))
        store = _store(ctx)
        try:
            changed = store.apply_updates(
                [(u.exception_id, u.status, u.note) for u in updates],
                _default_by(by),
                labels=[f"{file} sheet {u.sheet} row {u.row}" for u in updates],
            )
        finally:
            store.dispose()
        click.echo(f"{changed} exception(s) changed ({len(updates)} row(s) read from {file.name})")
