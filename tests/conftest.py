"""Shared fixtures.  ``stack`` starts the real local stack (private RabbitMQ node, service on
SQLite, default endpoint) on free ports in a temporary ``VOLLEY_HOME`` once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

for _var in ("VOLLEY_SERVICE_URL", "VOLLEY_TOKEN", "VOLLEY_CA_FILE", "VOLLEY_ENDPOINT_ID", "VOLLEY_TRANSPORT"):
    os.environ.pop(_var, None)
# By default an outage is waited out for as long as futures are open, and the interpreter exits
# only once they are resolved: a failed test that leaves a future open, after the session's
# stack is gone, would hold the run for ever. Tests give outages two minutes (their longest
# planned one is seconds); the stack's processes inherit it.
os.environ.setdefault("VOLLEY_GIVE_UP_AFTER", "120")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from volley.local.stack import LocalStack

    home = tmp_path_factory.mktemp("volley-home")
    os.environ["VOLLEY_HOME"] = str(home)
    # Functions defined in test modules travel by reference (module name), as any importable
    # user module does; like a user installing their package on the endpoint, make ours
    # importable by the endpoint's workers.
    tests_dir = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
    st = LocalStack(home)
    try:
        status = st.up()
        yield status
    finally:
        st.down()


@pytest.fixture()
def endpoint_id(stack: dict[str, Any]) -> str:
    return stack["endpoint_id"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop every result watcher a test left behind.  Its stack is down by now, so the watcher
    would go on reconnecting, and the SDK's exit hook (which waits for open futures, like
    concurrent.futures) would hold the interpreter until the watcher gives up, minutes later."""
    from volley.sdk.watcher import all_watchers

    for watcher in all_watchers():
        watcher.shutdown()
