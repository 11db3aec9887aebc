"""The service app served by a real uvicorn server on a loopback port, optionally over TLS, for
tests that need an SDK ``Client`` to reach it over real HTTP(S) (the in-process ``svc`` fixture
of service_fixtures.py answers only FastAPI's TestClient)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from service_helpers import wait_for


@contextmanager
def served(settings: Any, *, certfile: str | None = None, keyfile: str | None = None) -> Iterator[tuple[str, Any]]:
    """Serve ``create_app(settings)``; yields its base URL (``https://localhost:<port>`` with a
    certificate, else ``http://127.0.0.1:<port>``) and the app's state."""
    from volley.service.app import create_app

    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on",
                            ssl_certfile=certfile, ssl_keyfile=keyfile)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="test-uvicorn")
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert thread.is_alive(), "uvicorn stopped at start (see the log above)"
        state = app.state.volley
        loops = [t for t in app.state.volley_threads if hasattr(t, "ready")]
        wait_for(lambda: all(t.ready.is_set() for t in loops), what="the service's consumers")
        base = f"https://localhost:{port}" if certfile else f"http://127.0.0.1:{port}"
        yield base, state
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
