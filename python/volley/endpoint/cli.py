"""``volley endpoint ...``: configure, start, stop and inspect endpoints."""

from __future__ import annotations

import click


@click.group()
def endpoint() -> None:
    """Endpoints: configure, start, stop, list."""
