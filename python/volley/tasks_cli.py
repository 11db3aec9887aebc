"""``volley tasks``: your task groups and tasks, read through the service's REST API with the
SDK's own configuration (``VOLLEY_SERVICE_URL`` / ``VOLLEY_TOKEN``, else ``volley local up``'s
``$VOLLEY_HOME/config.json``) -- never from the database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from volley.sdk.http import RETRY_ENV, ApiSession, ComputeAPIError

GROUP_PAGE = 100  # the service's largest page of task groups
SPARKS = " ▁▂▃▄▅▆▇█"


def _session() -> ApiSession:
    from volley.config import load_client_config
    from volley.sdk.client import NoServiceConfigured, configured_service_url

    cfg = load_client_config()
    try:
        url = configured_service_url(cfg)
    except NoServiceConfigured as exc:
        raise click.ClickException(str(exc)) from None
    if not cfg.token:
        raise click.ClickException(f"no token for {url}: set VOLLEY_TOKEN (make one with "
                                   "`volley token create --user NAME`), or run `volley local up`")
    # a command answers at once when the service is down, unless told to wait ($VOLLEY_SERVICE_RETRY_FOR)
    return ApiSession(url, token=cfg.token, verify=cfg.ca_file or True,
                      retry_for=None if os.environ.get(RETRY_ENV) else 0)


def _call(what: str, request: Callable[[ApiSession], Any]) -> Any:
    """The service's answer, or a one-line error naming the cause (exit status 1)."""
    api = _session()
    try:
        return request(api)
    except ComputeAPIError as exc:
        raise click.ClickException(f"cannot {what}: {exc.message} ({exc.http_status} {exc.code})") from None
    except (ConnectionError, ValueError) as exc:
        raise click.ClickException(f"cannot {what}: {exc}") from None
    finally:
        api.close()


def _when(ts: Any, none: str = "-") -> str:
    from volley.cli import _when as when

    return when(None if ts is None else float(ts), none)


def _counts(c: dict[str, int]) -> str:
    text = f"{c.get('waiting-for-ep', 0)} waiting, {c.get('success', 0)} done, {c.get('failed', 0)} failed"
    return text + (f", {c['cancelled']} cancelled" if c.get("cancelled") else "")


def _spark(values: list[int]) -> str:
    top = max(values, default=0)
    if not top:
        return ""
    return "".join(SPARKS[0 if not v else max(1, round(v * (len(SPARKS) - 1) / top))] for v in values)


@click.group()
def tasks() -> None:
    """Your task groups and tasks (through the service's REST API, as the SDK is configured)."""


_JSON = click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")


@tasks.command("groups")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most this many task groups, newest first.")
@_JSON
def groups(limit: int, as_json: bool) -> None:
    """List your task groups (newest first) with their tasks counted by state."""

    def fetch(api: ApiSession) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        after = None
        while True:
            page = api.get("/volley/v1/task_groups",
                           params={"limit": min(GROUP_PAGE, limit - len(found)), "after": after})
            found += page["task_groups"]
            after = page.get("next")
            if after is None or len(found) >= limit:
                out: dict[str, Any] = {"task_groups": found}
                if after is not None:
                    out["next"] = after
                return out

    doc = _call("list task groups", fetch)
    if as_json:
        click.echo(json.dumps(doc))
        return
    rows = doc["task_groups"]
    if not rows:
        click.echo("no task groups (they expire with their tasks)")
        return
    click.echo(f"{'task group':<36}  {'created':<20}  {'waiting':>8}  {'done':>8}  {'failed':>8}  {'total':>8}")
    for g in rows:
        c = g["counts"]
        click.echo(f"{g['task_group_id']:<36}  {_when(g['created_at']):<20}  {c.get('waiting-for-ep', 0):>8}  "
                   f"{c.get('success', 0):>8}  {c.get('failed', 0):>8}  {g['total']:>8}")
    if "next" in doc:
        click.echo(f"(more task groups: --limit {limit + GROUP_PAGE})", err=True)


@tasks.command("status")
@click.argument("task_group_id")
@click.option("--failures", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Show this many of the latest failures with their error text.")
@_JSON
def status(task_group_id: str, failures: int, as_json: bool) -> None:
    """Counts, throughput and the latest failures (with their error text) of TASK_GROUP_ID."""
    s = _call(f"show task group {task_group_id}",
              lambda api: api.get(f"/volley/v1/task_groups/{task_group_id}", params={"failures": failures}))
    if as_json:
        click.echo(json.dumps(s))
        return
    failed = s["counts"].get("failed", 0)
    click.echo(f"task group  {s['task_group_id']}")
    click.echo(f"created     {_when(s['created_at'])}")
    click.echo(f"tasks       {s['total']}: {_counts(s['counts'])}")
    rate = s.get("rate_per_s")
    click.echo(f"throughput  {'-' if rate is None else f'{rate:.3g} tasks/s'} "
               f"(first submission {_when(s['first_submitted'])}, last completion {_when(s['last_completed'])})")
    series = [a + b for a, b in zip(s["throughput"]["success"], s["throughput"]["failed"], strict=True)]
    if any(series):
        click.echo(f"completed   {_spark(series)}  (per {s['throughput']['bucket_s']} s, peak {max(series)})")
    if not failed:
        return
    shown = s["failures"]
    click.echo(f"failures    {failed}" + (f", the latest {len(shown)}:" if shown else " (--failures N shows them)"))
    for f in shown:
        click.echo(f"\n  {f['task_id']}  {f.get('error_code') or 'error'}  at {_when(f['completion_t'])}")
        text = ("..." if f["truncated"] else "") + f["exception"]
        for line in text.rstrip("\n").splitlines():
            click.echo(f"    {line}")


@tasks.command("get")
@click.argument("task_id")
@_JSON
def get(task_id: str, as_json: bool) -> None:
    """Status and result (or error text) of TASK_ID."""
    doc = _call(f"get task {task_id}", lambda api: api.get(f"/v2/tasks/{task_id}"))
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"task        {doc['task_id']}")
    click.echo(f"task group  {doc.get('task_group_id', '-')}")
    click.echo(f"status      {doc['status']}")
    if "completion_t" in doc:
        click.echo(f"completed   {_when(doc['completion_t'])}")
    if "result" in doc:
        click.echo(f"result      {_result(doc['result'])}")
    elif "exception" in doc:
        click.echo("error")
        for line in str(doc["exception"]).rstrip("\n").splitlines():
            click.echo(f"    {line}")


def _result(data: str) -> str:
    """The result as ``repr`` shows it; it is the caller's own, unpacked as the SDK would."""
    from volley.serialize import ComputeSerializer

    try:
        return repr(ComputeSerializer().deserialize(data))
    except Exception as exc:  # say why, and that the task itself succeeded
        return f"<{len(data)} characters that this Python cannot deserialize: {type(exc).__name__}: {exc}>"
