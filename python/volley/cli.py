"""The ``volley`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group()
@click.version_option(package_name="volley")
def main() -> None:
    """Volley: self-hostable, Rust-accelerated function-as-a-service."""


# --- local stack -----------------------------------------------------------------------------------
@main.group()
def local() -> None:
    """The embedded local stack: private RabbitMQ, web service, default endpoint."""


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
    from volley.demo import run_demo

    sys.exit(run_demo(examples, transport))


# --- tokens ------------------------------------------------------------------------------------------
@main.group()
def token() -> None:
    """Bearer tokens of the web service."""


@token.command("create")
@click.option("--user", required=True, help="User name (created if new).")
@click.option("--database-url", help="The service's database (default: the local stack's).")
def token_create(user: str, database_url: str | None) -> None:
    """Create a token for USER and print it (only its hash is stored)."""
    from sqlalchemy.exc import SQLAlchemyError

    from volley.config import volley_home
    from volley.service.auth import create_token
    from volley.service.db import DatabaseError, init_db, make_engine

    url = database_url or f"sqlite:///{volley_home() / 'service' / 'service.db'}"
    try:
        engine = make_engine(url)
        try:
            with init_db(engine)() as s:
                click.echo(create_token(s, user)[1])
        finally:
            engine.dispose()
    except (DatabaseError, SQLAlchemyError, ValueError) as exc:
        raise click.ClickException(f"cannot create a token: {exc}") from exc


def _register_subcommands() -> None:
    from volley.endpoint.cli import endpoint

    main.add_command(endpoint)


_register_subcommands()

if __name__ == "__main__":
    main()
