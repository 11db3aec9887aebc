"""The HTTP layer of the Client: kept-alive connections, JSON in and out, clear errors.

Built on ``http.client`` rather than ``requests``: a 128-task submission cost ~1.1 ms of client
CPU through requests/urllib3 and ~0.35 ms here, and that CPU is both on every task's path and
inside every round trip's latency (docs/benchmarks.md).  What requests would have given us is
kept: connection reuse across threads (a small pool), TLS verified against
``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` / certifi's bundle and ``verify`` (a CA file)
besides it, retries with back-off while the service is down or busy, waiting at least as long as its ``Retry-After``
asks (never sending a request twice that could act twice: see ``ApiSession.request``).  Where
the environment names a proxy for the service (``HTTPS_PROXY`` and friends, minus
``NO_PROXY``), requests is used after all: proxy handling is its business, not ours.
"""

from __future__ import annotations

import http.client
import json as _json
import logging
import os
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any

from volley.transport.reconnect import GaveUp, Outage, ReconnectPolicy
from volley.version import __version__

log = logging.getLogger(__name__)

# answers worth waiting out: busy (429), restarting (503), a proxy without its backend (502/504)
RETRY_STATUSES = {429, 502, 503, 504}
# of those, the ones by which the service says it did nothing: safe to send any request again
NOTHING_DONE_STATUSES = {429, 503}
IDEMPOTENT_METHODS = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
# how long to wait out a service that is down, in seconds (a restart, a redeploy)
RETRY_ENV = "VOLLEY_SERVICE_RETRY_FOR"
DEFAULT_RETRY_FOR = 300.0


def _env_retry_for() -> float:
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_FOR
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"${RETRY_ENV}={raw!r} is not a number of seconds (e.g. 300)") from None
    if value < 0:
        raise ValueError(f"${RETRY_ENV} must not be negative, got {value}")
    return value

# idle connections kept per ApiSession (the Executor sends from up to 4 threads at once)
POOL_SIZE = 8


class ComputeAPIError(Exception):
    """The service answered with an error status; carries ``http_status``, ``code``, ``message``."""

    def __init__(self, http_status: int, code: str, message: str, method: str = "", url: str = "") -> None:
        self.http_status = http_status
        self.code = code
        self.message = message
        self.text = message
        super().__init__(f"({http_status}, {code!r}, {message!r}) on {method} {url}".rstrip(" on"))


class _Response:
    __slots__ = ("content", "retry_after", "status_code")

    def __init__(self, status_code: int, content: bytes, retry_after: str | None = None) -> None:
        self.status_code = status_code
        self.content = content
        self.retry_after = _seconds(retry_after)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.content)


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` header in seconds from now (it is either seconds or an HTTP date);
    None when absent or unreadable (then the back-off alone decides)."""
    if not retry_after:
        return None
    value = retry_after.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def default_ca_bundle() -> str | None:
    """The CA bundle requests would verify with: ``$REQUESTS_CA_BUNDLE``, ``$CURL_CA_BUNDLE``,
    certifi's; None for the system's trust store."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return bundle
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def tls_context(verify: str | bool) -> ssl.SSLContext:
    """The context REST verifies the service with: the default bundle, and a CA file
    (``verify`` as a path) besides it.  A private CA file is often the broker's while the
    service has a publicly signed certificate, so it must add trust, never replace it."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=default_ca_bundle())
    if isinstance(verify, str):
        try:
            ctx.load_verify_locations(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot read the CA file {verify!r} ({exc}); give the Client the path of a PEM CA "
                "bundle (ca_file=..., $VOLLEY_CA_FILE or ca_file in config.json)"
            ) from exc
    return ctx


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True if an idle kept-alive connection was closed by the server (readable = EOF)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class _Pool:
    """Kept-alive connections to one origin, shared by threads (one request per connection)."""

    def __init__(self, url: urllib.parse.SplitResult, verify: str | bool, timeout: float) -> None:
        self.https = url.scheme == "https"
        self.host = url.hostname or "localhost"
        self.port = url.port or (443 if self.https else 80)
        self.timeout = timeout
        self.context = tls_context(verify) if self.https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was reused."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not _dropped(conn):
                return conn, True
            conn.close()
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, False

    def give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _adapter_trusting(ctx: ssl.SSLContext) -> Any:
    """A requests adapter whose https connections, direct or through a proxy, verify with
    ``ctx``."""
    from requests.adapters import HTTPAdapter

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            proxy_kwargs["ssl_context"] = ctx
            return super().proxy_manager_for(proxy, **proxy_kwargs)

    return Adapter()


class ApiSession:
    def __init__(self, base_url: str, *, token: str | None = None, authorizer: Any = None,
                 verify: str | bool = True, timeout: float = 60.0, retry_for: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"service URL {base_url!r} must be http(s)://host[:port][/path]")
        self._prefix = parts.path
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.user_agent = f"volley-sdk/{__version__}"
        self.verify = verify
        self.token = token
        self.authorizer = authorizer
        self.timeout = timeout
        self.retry_for = _env_retry_for() if retry_for is None else retry_for
        self.policy = ReconnectPolicy(first_delay=0.25, max_delay=10.0)
        self._pool = _Pool(parts, verify, timeout)
        self._requests: Any = None  # a requests.Session, only where a proxy applies
        if _proxy_for(self.base_url):
            import requests

            self._requests = requests.Session()
            if verify is False:
                self._requests.verify = False
            elif self._pool.context is not None:
                # requests' own verify=<file> would trust that file alone
                self._requests.mount("https://", _adapter_trusting(self._pool.context))

    def _auth_header(self) -> str | None:
        if self.authorizer is not None:
            return self.authorizer.get_authorization_header()
        return f"Bearer {self.token}" if self.token else None

    def _send(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> _Response:
        if self._requests is not None:
            r = self._requests.request(method, self._origin + target, data=body, headers=headers,
                                       timeout=self.timeout)
            return _Response(r.status_code, r.content, r.headers.get("Retry-After"))
        while True:
            conn, reused = self._pool.take()
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                content = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if reused:
                    continue  # the server closed an idle connection just as we sent: a new one
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._pool.give(conn)
            return _Response(resp.status, content, resp.getheader("Retry-After"))

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                idempotent: bool | None = None, retry_for: float | None = None) -> Any:
        """Send one request; wait out a service that is down or busy.

        A request is sent again only when that cannot do anything twice: always when the
        connection was refused (nothing was sent) or the service answered 429/503 (it handled
        nothing); after a lost connection or a 502/504 only if ``idempotent`` -- by default
        GET, PUT and DELETE; a POST is idempotent when its caller says so (a submission with a
        request id, a status query).  ``retry_for`` bounds the waiting (seconds; default
        ``self.retry_for``), with the shared back-off of ``volley.transport.reconnect``; a
        ``Retry-After`` in the answer lengthens a wait, never beyond that bound."""
        url = self.base_url + path
        target = self._prefix + path
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if params:
            target += "?" + urllib.parse.urlencode(params, doseq=True)
        headers = {"User-Agent": self.user_agent, "Accept": "application/json", "Accept-Encoding": "identity"}
        auth = self._auth_header()
        if auth:
            headers["Authorization"] = auth
        body = None
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            headers["Content-Length"] = "0"
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        limit = self.retry_for if retry_for is None else retry_for
        outage = Outage(f"{method} {url}", self.policy.with_limit(limit, f"${RETRY_ENV}"), logger=log)
        while True:
            try:
                resp = self._send(method, target, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                refused = _cert_refused(exc)
                if refused is not None:
                    raise ConnectionError(
                        f"the Volley service at {self.base_url} presented a certificate that does not "
                        f"verify ({refused.verify_message}); give the Client its CA file (ca_file=...) or "
                        "set REQUESTS_CA_BUNDLE"
                    ) from exc
                if not (repeatable or isinstance(exc, ConnectionRefusedError)):
                    raise ConnectionError(
                        f"lost the connection to the Volley service at {self.base_url} during "
                        f"{method} {path} ({exc}); it may or may not have been handled, so it is not "
                        "sent again"
                    ) from exc
                try:
                    delay = outage.failed(exc)
                except GaveUp:
                    raise ConnectionError(
                        f"cannot reach the Volley service at {self.base_url} ({exc}), tried for "
                        f"{limit:g} s; is it running? (`volley local status`, or set VOLLEY_SERVICE_URL; "
                        f"${RETRY_ENV} sets how long to keep trying)"
                    ) from exc
            else:
                status = resp.status_code
                if status not in RETRY_STATUSES or not (repeatable or status in NOTHING_DONE_STATUSES):
                    break
                try:
                    delay = outage.failed(ComputeAPIError(status, "RETRY", resp.text[:200], method, url))
                except GaveUp:
                    break  # the service's own answer says why
                if resp.retry_after is not None and outage.since is not None:
                    left = limit - (time.monotonic() - outage.since)
                    delay = max(delay, min(resp.retry_after, left))
            time.sleep(delay)
        outage.recovered()
        if resp.status_code >= 400:
            try:
                doc = resp.json()
                code, message = doc.get("code", "UNKNOWN"), doc.get("message", resp.text)
            except (ValueError, AttributeError):
                code, message = "UNKNOWN", resp.text
            raise ComputeAPIError(resp.status_code, code, message, method, url)
        if not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self._pool.close()
        if self._requests is not None:
            self._requests.close()


def _cert_refused(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``exc``, if any: requests (behind a proxy)
    wraps it in its own errors, which would otherwise be waited out as an outage."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return e
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return None


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (as requests would use), or None."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
