"""``volley endpoint ...``: configure, start, stop, restart, list, status, delete."""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

import click

from volley.endpoint import local
from volley.endpoint.config import ENGINE_ALIASES, ENGINE_TYPES
from volley.private_files import private_dir, write_private
from volley.supervise import SupervisorError


def _dir(name: str) -> Any:
    try:
        return local.endpoint_dir(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


def _existing(name: str) -> Any:
    d = _dir(name)
    if not (d / "config.yaml").exists():
        raise click.ClickException(f"no endpoint {name!r} here ({d}); create it with `volley endpoint configure {name}`")
    return d


@click.group()
def endpoint() -> None:
    """Endpoints: configure, start, stop, list."""


@endpoint.command()
@click.argument("name", default="default")
@click.option("--engine", "engine_type", default="ProcessPoolEngine", show_default=True,
              type=click.Choice([*ENGINE_TYPES, *ENGINE_ALIASES]), help="How tasks run.")
@click.option("--display-name", help="Name shown by the service.")
@click.option("--max-workers", type=click.IntRange(min=1), help="Workers (per node for Parsl engines).")
@click.option("--sandbox/--no-sandbox", default=False, help="Run each task in its own directory.")
@click.option("--heartbeat-period", type=click.FloatRange(min=0.5), help="Seconds between status reports.")
@click.option("--force", is_flag=True, help="Overwrite an existing config.yaml.")
def configure(name: str, engine_type: str, display_name: str | None, max_workers: int | None,
              sandbox: bool, heartbeat_period: float | None, force: bool) -> None:
    """Create endpoint NAME's directory and config.yaml."""
    d = _dir(name)
    cfg = d / "config.yaml"
    if cfg.exists() and not force:
        raise click.ClickException(f"{cfg} exists; edit it, or pass --force to overwrite it")
    private_dir(d)  # the endpoint's state (results waiting for the broker, logs) is private
    engine_type = ENGINE_ALIASES.get(engine_type, engine_type)
    write_private(cfg, local.render_config(engine_type, display_name=display_name, workers=max_workers,
                                           sandbox=sandbox, heartbeat_period=heartbeat_period))
    click.echo(f"configured endpoint {name!r} ({engine_type}) in {cfg}")
    click.echo(f"start it with: volley endpoint start {name}")


@endpoint.command()
@click.argument("name", default="default")
@click.option("--detach", is_flag=True, help="Run in the background (log: <endpoint dir>/endpoint.log).")
@click.option("--transport", type=click.Choice(["native", "python"]), help="AMQP transport.")
def start(name: str, detach: bool, transport: str | None) -> None:
    """Register endpoint NAME and run it (in the foreground unless --detach)."""
    from volley.endpoint.config import ConfigError, load_config

    d = _existing(name)
    try:
        load_config(d / "config.yaml")  # a bad config fails here, before anything starts
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if local.is_running(d):
        raise click.ClickException(
            f"endpoint {name!r} is already running (pid {local.pid_of(d)}); stop it first (`volley endpoint stop {name}`)"
        )
    if detach:
        try:
            pid = local.start_detached(name, d, transport=transport)
        except SupervisorError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"endpoint {name!r} started (pid {pid}, id {local.endpoint_id(d)}); log: {d / 'endpoint.log'}")
        return
    from volley.endpoint.__main__ import exit_now, run

    exit_now(run(name, transport))


@endpoint.command()
@click.argument("name", default="default")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait before killing it.")
def stop(name: str, timeout: float) -> None:
    """Stop endpoint NAME (SIGTERM; SIGKILL after --timeout)."""
    d = _existing(name)
    if local.stop(d, timeout=timeout):
        click.echo(f"endpoint {name!r} stopped")
    else:
        click.echo(f"endpoint {name!r} is not running")


@endpoint.command()
@click.argument("name", default="default")
@click.option("--transport", type=click.Choice(["native", "python"]), help="AMQP transport.")
def restart(name: str, transport: str | None) -> None:
    """Stop endpoint NAME if it runs, then start it detached."""
    d = _existing(name)
    local.stop(d)
    try:
        pid = local.start_detached(name, d, transport=transport)
    except SupervisorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"endpoint {name!r} restarted (pid {pid})")


@endpoint.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {id, name, state}.")
def list_(as_json: bool) -> None:
    """Endpoints configured on this machine, with their state."""
    rows = local.list_endpoints()
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("no endpoints configured (`volley endpoint configure NAME`)")
        return
    click.echo(f"{'ENDPOINT ID':<38} {'STATE':<12} NAME")
    for r in rows:
        click.echo(f"{r['id'] or '-':<38} {r['state']:<12} {r['name']}")


@endpoint.command()
@click.argument("name", default="default")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(name: str, as_json: bool) -> None:
    """Local state of endpoint NAME and, when registered, what the service knows."""
    d = _existing(name)
    out: dict[str, Any] = {"name": name, "id": local.endpoint_id(d), "state": local.state(d),
                           "pid": local.pid_of(d) if local.is_running(d) else None, "directory": str(d)}
    if out["id"]:
        try:
            from volley.sdk.client import Client

            remote = Client().get_endpoint_status(out["id"])
            out["service_status"] = remote.get("status")
            out["details"] = remote.get("details")
        except Exception as exc:  # status must work while the service is down
            out["service_status"] = f"unknown ({exc})"
    if as_json:
        click.echo(json.dumps(out))
        return
    for key in ("name", "id", "state", "pid", "service_status", "directory"):
        click.echo(f"{key + ':':<16}{out.get(key)}")
    details = out.get("details") or {}
    for key in ("engine_type", "total_workers", "idle_workers", "outstanding_tasks", "queue_depth",
                "unpublished_results"):
        if key in details:
            click.echo(f"  {key + ':':<20}{details[key]}")


@endpoint.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Stop it if running; delete locally even if the service cannot be reached.")
def delete(name: str, yes: bool, force: bool) -> None:
    """Delete endpoint NAME: from the service, then its directory."""
    d = _existing(name)
    if local.is_running(d):
        if not force:
            raise click.ClickException(f"endpoint {name!r} is running; stop it first, or pass --force")
        local.stop(d)
    if not yes:
        click.confirm(f"delete endpoint {name!r} and {d}?", abort=True)
    eid = local.endpoint_id(d)
    if eid:
        from volley.sdk.client import Client
        from volley.sdk.http import ComputeAPIError

        try:
            Client().delete_endpoint(eid)
        except ComputeAPIError as exc:
            if exc.http_status != 404 and not force:
                raise click.ClickException(f"the service refused to delete {eid}: {exc}") from None
        except Exception as exc:
            if not force:
                raise click.ClickException(f"cannot reach the service to delete {eid} ({exc}); --force deletes locally") from None
    shutil.rmtree(d)
    click.echo(f"endpoint {name!r} deleted")


if __name__ == "__main__":
    sys.exit(endpoint())
