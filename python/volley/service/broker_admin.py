"""A small client of RabbitMQ's management HTTP API: broker users, their permissions, vhosts.

Only what the service needs.  Every call passes ``verify=`` itself: requests lets
``REQUESTS_CA_BUNDLE`` override a session-wide setting, which would silently swap our CA for
the system bundle.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests


class BrokerAdminError(RuntimeError):
    """The management API refused a request or could not be reached."""


class ManagementApi:
    def __init__(
        self,
        url: str,
        *,
        default_credentials: tuple[str, str] | None = None,
        ca_file: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BrokerAdminError(f"broker management URL must be http(s)://host:port, got {parts.scheme}://...")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/api"
        if parts.username is not None:
            self.auth: tuple[str, str] | None = (unquote(parts.username), unquote(parts.password or ""))
        else:
            self.auth = default_credentials
        self.verify: str | bool = ca_file or True
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        try:
            r = self.session.request(
                method, self.base + path, json=body, auth=self.auth, verify=self.verify,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise BrokerAdminError(f"cannot reach the broker's management API at {self.base}: {exc}") from exc
        if r.status_code == 404 and missing_ok:
            return None
        if r.status_code >= 400:
            raise BrokerAdminError(
                f"broker management API: {method} {path.split('?')[0]} answered {r.status_code}: {r.text[:300]}"
            )
        return r.json() if r.content else None

    @staticmethod
    def _q(name: str) -> str:
        return quote(name, safe="")

    # --- users and permissions -------------------------------------------------------------------
    def put_user(self, name: str, password: str, tags: str = "") -> None:
        self._call("PUT", f"/users/{self._q(name)}", {"password": password, "tags": tags})

    def delete_user(self, name: str) -> None:
        """Delete a user (closing its connections); a user that is not there is fine."""
        self._call("DELETE", f"/users/{self._q(name)}", missing_ok=True)

    def user_exists(self, name: str) -> bool:
        return self._call("GET", f"/users/{self._q(name)}", missing_ok=True) is not None

    def set_permissions(self, vhost: str, user: str, *, configure: str, write: str, read: str) -> None:
        self._call(
            "PUT", f"/permissions/{self._q(vhost)}/{self._q(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    def set_topic_permissions(self, vhost: str, user: str, *, exchange: str, write: str, read: str) -> None:
        self._call(
            "PUT", f"/topic-permissions/{self._q(vhost)}/{self._q(user)}",
            {"exchange": exchange, "write": write, "read": read},
        )

    # --- vhosts ------------------------------------------------------------------------------------
    def put_vhost(self, name: str) -> None:
        self._call("PUT", f"/vhosts/{self._q(name)}", {})

    def delete_vhost(self, name: str) -> None:
        self._call("DELETE", f"/vhosts/{self._q(name)}", missing_ok=True)
