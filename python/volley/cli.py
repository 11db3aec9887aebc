"""The ``volley`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from volley.extras import MissingExtra, extra_providing, missing_modules, require


class _Group(click.Group):
    """The top-level group: a command whose part of Volley is not installed (its pip extra is
    missing) ends with the message naming the extra, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MissingExtra as exc:
            raise click.ClickException(str(exc)) from exc
        except ModuleNotFoundError as exc:  # a command importing an extra's module directly
            extra = extra_providing(exc.name or "")
            if extra is None:
                raise
            missing = MissingExtra("this command", (extra,), missing_modules(extra) or [str(exc.name)])
            raise click.ClickException(str(missing)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="volley")
def main() -> None:
    """Volley: self-hostable, Rust-accelerated function-as-a-service.

    `pip install volley` is the SDK; `volley local` and `volley demo` need the extras
    `service` and `endpoint`, `volley token` the extra `service`, `volley endpoint` the extra
    `endpoint` (`pip install 'volley[all]'` installs every one).
    """


# --- local stack -----------------------------------------------------------------------------------
@main.group()
def local() -> None:
    """The embedded local stack: private RabbitMQ, web service, default endpoint."""
    require("`volley local`", "service", "endpoint")


def _stack(quiet: bool = False):  # type: ignore[no-untyped-def]
    from volley.local.stack import LocalStack

    return LocalStack(progress=(lambda _m: None) if quiet else (lambda m: click.echo(m, err=True)))


@local.command("up")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting status as JSON.")
def local_up(as_json: bool) -> None:
    """Start whatever part of the local stack is not running (idempotent)."""
    from volley.local.broker import BrokerError
    from volley.local.stack import StackError

    try:
        status = _stack().up()
    except (StackError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_status(status, as_json)


@local.command("down")
def local_down() -> None:
    """Stop everything `volley local up` started."""
    _stack().down()
    click.echo("local stack stopped", err=True)


@local.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def local_status(as_json: bool) -> None:
    """Show whether the local stack runs, and where."""
    _print_status(_stack(quiet=True).status(), as_json)


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status))
        return
    click.echo(f"running:      {status['running']}  ({', '.join(f'{k}={v}' for k, v in status['processes'].items())})")
    click.echo(f"service_url:  {status['service_url']}")
    click.echo(f"endpoint_id:  {status['endpoint_id']}")
    click.echo(f"amqps_port:   {status['amqps_port']}")
    click.echo(f"state_dir:    {status['state_dir']}")


# --- demo --------------------------------------------------------------------------------------------
@main.command()
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of example scripts (default: docs/examples of this checkout).")
@click.option("--transport", type=click.Choice(["native", "python"]), help="Result transport.")
def demo(examples: Path | None, transport: str | None) -> None:
    """Bring the local stack up if needed and run the user guide's examples."""
    require("`volley demo`", "service", "endpoint")
    from volley.demo import run_demo

    sys.exit(run_demo(examples, transport))


# --- tokens ------------------------------------------------------------------------------------------
@main.group()
def token() -> None:
    """Bearer tokens of the web service."""
    require("`volley token`", "service")


def _database_url(database_url: str | None) -> str:
    from volley.config import volley_home

    if database_url:
        return database_url
    default = volley_home() / "service" / "service.db"
    if not default.is_file():
        # SQLite would make an empty database there, and a token would go nowhere
        raise click.ClickException(
            f"no local stack database at {default}: start the local stack (`volley local up`) "
            "or name the service's database with --database-url")
    return f"sqlite:///{default}"


@contextmanager
def _database_errors(doing: str) -> Iterator[None]:
    """The database's errors as click's, saying what could not be done."""
    from sqlalchemy.exc import SQLAlchemyError

    from volley.service.db import DatabaseError

    try:
        yield
    except (DatabaseError, SQLAlchemyError, ValueError) as exc:
        raise click.ClickException(f"cannot {doing}: {exc}") from exc


@contextmanager
def _token_db(database_url: str | None, doing: str) -> Iterator[Any]:
    """A session on the service's database (default: the local stack's); errors as click's."""
    from volley.service.db import database_session

    with _database_errors(doing), database_session(_database_url(database_url)) as s:
        yield s


_DB_OPTION = click.option("--database-url", help="The service's database (default: the local stack's).")


@token.command("create")
@click.option("--user", required=True, help="User name (created if new).")
@click.option("--ttl-days", type=float, default=None,
              help="Days until the token expires (default: the service setting token_ttl_s, "
                   "90 days; 0: no expiry of its own).")
@_DB_OPTION
def token_create(user: str, ttl_days: float | None, database_url: str | None) -> None:
    """Create a token for USER and print it (only its hash is stored)."""
    from volley.service.auth import issue_token
    from volley.service.settings import ServiceSettings, SettingsError

    if ttl_days is None:
        try:
            ttl_s = ServiceSettings.load().token_ttl_s
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        ttl_s = ttl_days * 86400.0
    with _database_errors("create a token"):
        click.echo(issue_token(_database_url(database_url), user, ttl_s=ttl_s))


def _when(ts: float | None, none: str) -> str:
    from datetime import datetime, timezone

    return none if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@token.command("list")
@click.option("--user", help="Only this user's tokens.")
@_DB_OPTION
def token_list(user: str | None, database_url: str | None) -> None:
    """List tokens: id, prefix, user, created, expires, last used (never the token itself)."""
    from sqlalchemy import select

    from volley.service.auth import token_id
    from volley.service.models import Token, User

    with _token_db(database_url, "list tokens") as s:
        q = select(Token, User.name).join(User, User.id == Token.user_id).order_by(Token.created_at)
        if user is not None:
            q = q.where(User.name == user)
        rows = list(s.execute(q))
    click.echo(f"{'id':<12}  {'prefix':<12}  {'user':<20}  {'created':<20}  {'expires':<20}  last used")
    for t, name in rows:
        click.echo(f"{token_id(t.token_hash):<12}  {t.prefix or '-':<12}  {name:<20}  "
                   f"{_when(t.created_at, '-'):<20}  {_when(t.expires_at, 'never'):<20}  "
                   f"{_when(t.last_used_at, 'never')}")


@token.command("revoke")
@click.argument("token_ref")
@_DB_OPTION
@click.option("--service-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The service's settings file (default: the local stack's, without "
                   "--database-url): when the token was its user's last, the user's broker user "
                   "is deleted through the broker's management API, closing its connections.")
def token_revoke(token_ref: str, database_url: str | None, service_config: Path | None) -> None:
    """Revoke the token whose id (from `volley token list`) or prefix (vly_...) starts with
    TOKEN_REF.  Service processes stop accepting it within a minute (their token cache).  A
    user left without tokens also loses its broker password."""
    from sqlalchemy import delete, func, select

    from volley.service.auth import TOKEN_PREFIX, token_id
    from volley.service.credentials import new_salt
    from volley.service.models import Token, User

    by_prefix = token_ref.startswith(TOKEN_PREFIX)
    shortest = len(TOKEN_PREFIX) + 6 if by_prefix else 6
    if len(token_ref) < shortest:
        raise click.ClickException(f"give at least {shortest} characters of the token's id or prefix")
    with _token_db(database_url, "revoke a token") as s:
        if by_prefix:  # a whole token works too: its stored prefix is its start
            q = select(Token).where(Token.prefix.startswith(token_ref[:12]))
        else:
            q = select(Token).where(Token.token_hash.startswith(token_ref.lower()))
        rows = list(s.scalars(q))
        if not rows:
            raise click.ClickException(f"no token with id or prefix {token_ref!r} (see `volley token list`)")
        if len(rows) > 1:
            raise click.ClickException(f"{len(rows)} tokens match {token_ref!r}: give more characters")
        digest, user_id = rows[0].token_hash, rows[0].user_id
        s.execute(delete(Token).where(Token.token_hash == digest))
        last = not s.scalar(select(func.count()).select_from(Token).where(Token.user_id == user_id))
        if last:  # the broker password it could fetch must not outlive it
            user = s.get(User, user_id)
            if user is not None:
                user.broker_salt = new_salt()
        s.commit()
    click.echo(f"token {token_id(digest)} revoked")
    if last:
        _revoke_broker_user(user_id, database_url, service_config)


def _revoke_broker_user(user_id: str, database_url: str | None, service_config: Path | None) -> None:
    from volley.config import volley_home
    from volley.service.broker_admin import BrokerAdminError
    from volley.service.credentials import BrokerCredentials, user_principal
    from volley.service.settings import ServiceSettings, SettingsError

    principal = user_principal(user_id)
    if service_config is None and database_url is None:
        local = volley_home() / "service" / "service.json"
        service_config = local if local.exists() else None
    if service_config is None:
        click.echo(f"that was the user's last token: its broker user {principal} keeps its old "
                   "password until the service next hands out one; give --service-config to "
                   "delete it now")
        return
    try:
        settings = ServiceSettings.load(service_config)
        if settings.shared_broker_credentials:
            return  # no broker user of its own
        BrokerCredentials(settings).revoke_user(user_id)
    except (SettingsError, BrokerAdminError, OSError, ValueError) as exc:
        raise click.ClickException(f"the token is revoked, but its user's broker user {principal} "
                                   f"could not be deleted: {exc}") from exc
    click.echo(f"that was the user's last token: broker user {principal} deleted")


def _unavailable(name: str, exc: MissingExtra) -> click.Command:
    """Stands in for a command group whose module cannot be imported without its extra."""

    @click.command(name, help=f"(not installed: {exc.install})", add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def stand_in() -> None:
        raise exc

    return stand_in


def _register_subcommands() -> None:
    from volley.tasks_cli import tasks

    command: click.Command
    try:
        from volley.endpoint.cli import endpoint as command
    except MissingExtra as exc:
        command = _unavailable("endpoint", exc)
    main.add_command(command)
    main.add_command(tasks)


_register_subcommands()

if __name__ == "__main__":
    main()
