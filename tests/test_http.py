"""The SDK's HTTP layer (volley.sdk.http) against real local HTTP(S) servers: connection reuse,
a kept-alive connection the server dropped, retries, error bodies, TLS verification, proxies."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from volley.local.certs import ensure_tls_files
from volley.sdk.http import ApiSession, ComputeAPIError

# status, body, close the connection after answering[, more headers]
Reply = tuple[int, bytes, bool] | tuple[int, bytes, bool, dict[str, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, replies: Callable[[str, str, bytes], Reply]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies = replies
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    server: _Server

    def log_message(self, *_: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        reply = self.server.replies(self.command, self.path, body)
        if reply is None:  # hang up without answering: the request may or may not have acted
            self.close_connection = True
            return
        status, out, close, *more = reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        for name, value in (more[0] if more else {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
        if close:  # drop the connection without saying so (no "Connection: close")
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(replies: Callable[[str, str, bytes], Reply], tls: ssl.SSLContext | None = None) -> _Server:
        srv = _Server(replies)
        if tls is not None:
            srv.socket = tls.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _ok(doc: Any = None, close: bool = False) -> Callable[[str, str, bytes], Reply]:
    return lambda *_: (200, json.dumps(doc if doc is not None else {"ok": True}).encode(), close)


def _url(srv: _Server, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.server_address[1]}"


def test_json_both_ways_and_one_kept_alive_connection(serve: Callable[..., _Server]) -> None:
    srv = serve(lambda m, p, b: (200, json.dumps({"method": m, "path": p, "got": json.loads(b or b"null")}).encode(), False))
    api = ApiSession(_url(srv) + "/prefix", token="tok")
    assert api.post("/v3/x", json={"a": [1, 2]}) == {"method": "POST", "path": "/prefix/v3/x", "got": {"a": [1, 2]}}
    assert api.get("/v2/y", params={"role": "any", "skip": None})["path"] == "/prefix/v2/y?role=any"
    assert srv.connections == 1
    _m, _p, headers, _b = srv.requests[0]
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("volley-sdk/")


def test_connection_the_server_dropped_is_replaced(serve: Callable[..., _Server]) -> None:
    srv = serve(_ok(close=True))  # closes every connection after one answer
    api = ApiSession(_url(srv), retry_for=0)  # no retries: the reconnect must not count as one
    for _ in range(3):
        assert api.post("/v3/submit", json={}) == {"ok": True}
    assert srv.connections == 3
    assert len(srv.requests) == 3  # each request was sent exactly once


def test_a_post_whose_answer_was_lost_is_not_sent_again(serve: Callable[..., _Server]) -> None:
    srv = serve(lambda *_: None)
    with pytest.raises(ConnectionError, match="not sent again"):
        ApiSession(_url(srv)).post("/v3/functions", json={"f": 1})
    assert len(srv.requests) == 1


def test_an_idempotent_post_whose_answer_was_lost_is_sent_again(serve: Callable[..., _Server]) -> None:
    answers = iter([None, (200, b'{"ok": 2}', False)])
    srv = serve(lambda *_: next(answers))
    assert ApiSession(_url(srv)).post("/v3/endpoints/e/submit", json={"request_id": "r"}, idempotent=True) == {"ok": 2}
    assert [r[3] for r in srv.requests] == [b'{"request_id":"r"}'] * 2  # the same body, twice


@pytest.mark.parametrize(("status", "method", "sent"), [
    (503, "POST", 2),  # "did nothing, try later": safe for any request
    (502, "POST", 1),  # a proxy's answer: the service may have acted; a plain POST is not resent
    (502, "GET", 2),
    (500, "GET", 1),  # a bug does not heal with time: answered at once
])
def test_which_answers_are_waited_out(serve: Callable[..., _Server], status: int, method: str, sent: int) -> None:
    answers = iter([(status, b'{"code": "X", "message": "m"}', False), (200, b'{"ok": 1}', False)])
    srv = serve(lambda *_: next(answers))
    api = ApiSession(_url(srv))
    if sent == 2:
        assert api.request(method, "/v2/x") == {"ok": 1}
    else:
        with pytest.raises(ComputeAPIError) as info:
            api.request(method, "/v2/x")
        assert info.value.http_status == status
    assert len(srv.requests) == sent


def test_a_service_that_stays_down_is_given_up_on_with_the_setting_named() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="VOLLEY_SERVICE_RETRY_FOR") as info:
        ApiSession(f"http://127.0.0.1:{port}", retry_for=0.5).post("/v3/functions", json={})
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_busy_service_is_retried(serve: Callable[..., _Server]) -> None:
    answers = iter([(503, b'{"code": "BUSY", "message": "later"}', False), (200, b'{"ok": 1}', False)])
    srv = serve(lambda *_: next(answers))
    assert ApiSession(_url(srv), retry_for=30).get("/v2/version") == {"ok": 1}
    assert len(srv.requests) == 2


@pytest.mark.parametrize("retry_after", ["2", "http-date"])
def test_a_503_is_sent_again_no_sooner_than_its_retry_after(serve: Callable[..., _Server], retry_after: str) -> None:
    from email.utils import formatdate

    value = formatdate(time.time() + 3, usegmt=True) if retry_after == "http-date" else retry_after
    sent: list[float] = []

    def replies(*_: Any) -> Reply:
        sent.append(time.monotonic())
        if len(sent) == 1:
            return 503, b'{"code": "DATABASE_UNAVAILABLE", "message": "locked"}', False, {"Retry-After": value}
        return 200, b'{"ok": 1}', False

    srv = serve(replies)
    # a plain POST too: a 503 says the service did nothing
    assert ApiSession(_url(srv), retry_for=30).post("/v3/functions", json={}) == {"ok": 1}
    assert len(srv.requests) == 2
    # the back-off alone would have sent it again within a quarter of a second
    assert sent[1] - sent[0] >= 1.5


def test_a_retry_after_beyond_the_retry_budget_is_not_waited_for(serve: Callable[..., _Server]) -> None:
    srv = serve(lambda *_: (503, b'{"code": "BUSY", "message": "much later"}', False, {"Retry-After": "86400"}))
    started = time.monotonic()
    with pytest.raises(ComputeAPIError) as info:
        ApiSession(_url(srv), retry_for=1).get("/v2/version")
    assert info.value.http_status == 503 and info.value.message == "much later"
    assert time.monotonic() - started < 60  # the budget bounds the wait, not the service's wish


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b'{"code": "NOT_FOUND", "message": "no such task"}', "NOT_FOUND", "no such task"),
        (b"<html>proxy error</html>", "UNKNOWN", "<html>proxy error</html>"),
        (b"[1, 2]", "UNKNOWN", "[1, 2]"),
    ],
)
def test_error_answers_become_compute_api_errors(
    serve: Callable[..., _Server], body: bytes, code: str, message: str
) -> None:
    srv = serve(lambda *_: (404, body, False))
    with pytest.raises(ComputeAPIError) as info:
        ApiSession(_url(srv)).get("/v2/tasks/x")
    err = info.value
    assert (err.http_status, err.code, err.message) == (404, code, message)
    assert f"on GET {_url(srv)}/v2/tasks/x" in str(err)


def test_bad_service_url_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match=r"must be http\(s\)://host"):
        ApiSession("localhost:5000")


def test_tls_verified_against_the_given_ca(serve: Callable[..., _Server], tmp_path: Path) -> None:
    files = ensure_tls_files(tmp_path / "tls")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files["cert"], files["key"])
    srv = serve(_ok({"tls": True}), tls=server_ctx)
    assert ApiSession(_url(srv, "https"), verify=str(files["ca"])).get("/v2/version") == {"tls": True}
    # the default trust (certifi) does not know our CA: a clear error naming the fix
    with pytest.raises(ConnectionError, match=r"does not verify .*ca_file=") as info:
        ApiSession(_url(srv, "https"), retry_for=0).get("/v2/version")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_a_configured_proxy_is_used(serve: Callable[..., _Server], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve(_ok({"via": "proxy"}))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", _url(proxy))
    monkeypatch.setenv("HTTP_PROXY", _url(proxy))
    # the service's host does not even resolve: only the proxy can answer
    assert ApiSession("http://volley.invalid:5000", retry_for=0).get("/v2/version") == {"via": "proxy"}
    method, target, _h, _b = proxy.requests[0]
    assert (method, target) == ("GET", "http://volley.invalid:5000/v2/version")
