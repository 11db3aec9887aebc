"""The HTTP layer of the Client: one keep-alive session, JSON in and out, clear errors."""

from __future__ import annotations

import random
import time
from typing import Any

import requests

from volley.version import __version__

RETRY_STATUSES = {429, 500, 502, 503, 504}


class ComputeAPIError(Exception):
    """The service answered with an error status; carries ``http_status``, ``code``, ``message``."""

    def __init__(self, http_status: int, code: str, message: str, method: str = "", url: str = "") -> None:
        self.http_status = http_status
        self.code = code
        self.message = message
        self.text = message
        super().__init__(f"({http_status}, {code!r}, {message!r}) on {method} {url}".rstrip(" on"))


class ApiSession:
    def __init__(self, base_url: str, *, token: str | None = None, authorizer: Any = None,
                 verify: str | bool = True, timeout: float = 60.0, retries: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"volley-sdk/{__version__}"
        self.session.verify = verify
        self.token = token
        self.authorizer = authorizer
        self.timeout = timeout
        self.retries = retries

    def _auth_header(self) -> str | None:
        if self.authorizer is not None:
            return self.authorizer.get_authorization_header()
        return f"Bearer {self.token}" if self.token else None

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None) -> Any:
        url = self.base_url + path
        headers = {}
        auth = self._auth_header()
        if auth:
            headers["Authorization"] = auth
        params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(self.retries + 1):
            try:
                resp = self.session.request(method, url, json=json, params=params, headers=headers,
                                            timeout=self.timeout)
            except requests.ConnectionError as exc:
                if attempt == self.retries:
                    raise ConnectionError(
                        f"cannot reach the Volley service at {self.base_url} ({exc}); is it running? "
                        "(`volley local status`, or set VOLLEY_SERVICE_URL)"
                    ) from exc
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.retries:
                    break
            time.sleep(min(10.0, (0.25 + 0.5 * random.random()) * 2**attempt))
        if resp.status_code >= 400:
            try:
                body = resp.json()
                code, message = body.get("code", "UNKNOWN"), body.get("message", resp.text)
            except ValueError:
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
