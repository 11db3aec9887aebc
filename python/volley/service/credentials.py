"""Broker credentials per principal: one RabbitMQ user per Volley user (``u-<user_id>``) and per
endpoint (``e-<endpoint_id>``), each allowed exactly its own queues and routing keys.

* A user may only consume its result queues ``sdk.<user_id>.*``; it can declare, bind and
  publish nothing.
* An endpoint may consume only ``<endpoint_id>.tasks`` and ``<endpoint_id>.control`` and publish only to the ``results`` and
  ``heartbeats`` exchanges, and there (topic permissions) only under ``<endpoint_id>.results``
  and ``<endpoint_id>.heartbeats``.  Endpoints only passive-declare, which RabbitMQ 3.10 allows
  without any permission, so they get no configure rights at all.

Passwords are not stored anywhere: each is an HMAC of the principal's name and its salt (random,
in the database: ``endpoints.broker_salt``, ``users.broker_salt``) under the service's
``secret_key``, so every service process derives the same password and can hand it out again,
and a copy of the database alone reveals none.  A new salt rotates the password: lock and
registration of an endpoint make one (a deleted endpoint's row goes, salt and all), and so does
revoking a user's last token.  The empty salt derives what older versions did, so their broker
users keep working.  Broker users are (re)created on first use by each
service process; after a broker lost its state, ``volley.service.restore`` creates those of the
endpoints (and of users with results on the way) again at once and the rest on their next use.

Results reach an SDK only from the service: the router publishes to SDK queues with the AMQP
``user_id`` of the service's own broker user (:func:`broker_user_of` ``broker_url``), which
RabbitMQ lets no other connection claim, and the SDK refuses deliveries without it.  That holds
only while no client logs in as that user, so shared-credential mode (one broker user for every
tenant) must hand out a user other than the service's.

Shared-credential mode serves one user.  Its one broker user may publish under every endpoint's
routing key, so a second user holding it could send the first a result that the router stores
and forwards as the service, and the first's client would deserialize it.  A service in that
mode therefore does not start on a database of two users (:func:`record_broker_mode`), and no
second user is made while the database says a service runs in it (:func:`check_new_user`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from volley.protocol import topology as topo
from volley.service.broker_admin import ManagementApi
from volley.service.models import BrokerMode, User
from volley.service.settings import ServiceSettings, SettingsError

log = logging.getLogger(__name__)

NOTHING = "^$"  # a RabbitMQ permission pattern that matches no resource name

ONE_TENANT = (
    "shared-credential mode (no broker_management_url) serves one user: every user and endpoint "
    "gets the same broker credentials (public_broker_url), with which one user can send another "
    "a result that runs code in their client"
)
PER_TENANT_FIX = (
    "set broker_management_url (the broker's management API, e.g. https://broker:15671) so "
    "that each user and endpoint gets a broker user of its own"
)
_MODE_ROW = 1
_NAMES_SHOWN = 5


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")


def record_broker_mode(session: Session, settings: ServiceSettings) -> None:
    """Note in the database whether the service shares broker credentials; raise
    :class:`SettingsError` if it does and the database holds more than one user."""
    shared = settings.shared_broker_credentials
    # the UPDATE comes first: it takes the lock (SQLite's write lock, the row's on PostgreSQL)
    # that check_new_user takes too, so no user is added between the count and the commit
    session.execute(update(BrokerMode).where(BrokerMode.id == _MODE_ROW)
                    .values(shared=shared, recorded_at=time.time()))
    users = session.scalar(select(func.count()).select_from(User)) or 0
    if shared and users > 1:
        names = list(session.scalars(select(User.name).order_by(User.created_at).limit(_NAMES_SHOWN + 1)))
        session.rollback()
        raise SettingsError(
            f"{ONE_TENANT}, and the database holds {users} users ({_names(names)}); "
            f"{PER_TENANT_FIX}, or serve each user from a service and database of its own"
        )
    session.commit()


def check_new_user(session: Session, user_name: str) -> None:
    """Raise :class:`SettingsError` if the database's service shares broker credentials and
    user ``user_name``, just added (flushed, not committed), is not its only user."""
    # FOR UPDATE waits for a service recording its mode (PostgreSQL); on SQLite the new user's
    # INSERT already holds the write lock, so the count below sees every committed user
    shared = session.scalar(select(BrokerMode.shared).where(BrokerMode.id == _MODE_ROW).with_for_update())
    if not shared:
        return
    others = list(session.scalars(select(User.name).where(User.name != user_name)
                                  .order_by(User.created_at).limit(_NAMES_SHOWN + 1)))
    if others:
        raise SettingsError(
            f"cannot create user {user_name!r}: {ONE_TENANT}, and the database holds user(s) "
            f"{_names(others)} already; {PER_TENANT_FIX}, then restart the service; or create "
            f"the token for {others[0]!r}"
        )


@dataclass(frozen=True)
class Grant:
    configure: str
    write: str
    read: str
    # (exchange, write pattern, read pattern) on routing keys of topic exchanges
    topics: tuple[tuple[str, str, str], ...] = ()


def user_principal(user_id: str) -> str:
    return f"u-{user_id}"


def endpoint_principal(endpoint_id: str) -> str:
    return f"e-{endpoint_id}"


def user_grant(user_id: str) -> Grant:
    return Grant(NOTHING, NOTHING, f"^{re.escape(topo.sdk_queue_prefix(user_id))}.+$")


def endpoint_grant(endpoint_id: str) -> Grant:
    results, heartbeats = topo.RESULTS_EXCHANGE, topo.HEARTBEATS_EXCHANGE
    return Grant(
        configure=NOTHING,
        write=f"^({re.escape(results)}|{re.escape(heartbeats)})$",
        read=f"^({re.escape(topo.task_queue(endpoint_id))}|{re.escape(topo.control_queue(endpoint_id))})$",
        topics=(
            (results, f"^{re.escape(topo.results_routing_key(endpoint_id))}$", NOTHING),
            (heartbeats, f"^{re.escape(topo.heartbeats_routing_key(endpoint_id))}$", NOTHING),
        ),
    )


def new_salt() -> str:
    return secrets.token_hex(16)


def derive_password(secret_key: str, principal: str, salt: str = "") -> str:
    message = b"volley-broker-user:" + principal.encode()
    if salt:
        message += b":" + salt.encode()
    mac = hmac.new(secret_key.encode(), message, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def broker_user_of(url: str) -> str:
    """The broker user an AMQP URL logs in as: ``guest`` when it names none, as both
    transports' clients default."""
    return unquote(urlsplit(url).username or "") or "guest"


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with its user and password replaced (host, port, vhost and query kept)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/%2F", parts.query, ""))


class BrokerCredentials:
    """Hands out AMQP URLs per principal, creating the broker user the first time."""

    @staticmethod
    def check(settings: ServiceSettings) -> None:
        """Raise :class:`SettingsError` unless the broker settings make a usable combination."""
        if settings.shared_broker_credentials and not settings.public_broker_url:
            raise SettingsError(
                "no broker_management_url: set it (per-principal broker users), or set "
                "public_broker_url to the one URL every client may use (shared credentials); "
                "the service never hands out its own broker_url"
            )
        if settings.shared_broker_credentials and settings.public_broker_url:
            own = broker_user_of(settings.broker_url)
            if broker_user_of(settings.public_broker_url) == own:
                raise SettingsError(
                    f"public_broker_url must log in as a broker user other than the service's own "
                    f"(broker_url's {own!r}): every tenant gets public_broker_url, and SDKs trust a "
                    "result only when the service's user published it; create a user for the "
                    "tenants (no configure permission, no 'impersonator' tag), or set "
                    "broker_management_url for a broker user per tenant"
                )
        if not settings.shared_broker_credentials and not settings.secret_key:
            raise SettingsError(
                "secret_key is required with broker_management_url (broker passwords derive from it)"
            )

    def __init__(self, settings: ServiceSettings) -> None:
        self.check(settings)
        self.base_url = settings.public_broker_url or settings.broker_url
        self.shared = settings.shared_broker_credentials
        # the broker user every result forwarded to an SDK queue is published as
        self.result_sender = broker_user_of(settings.broker_url)
        self._api: ManagementApi | None = None
        self._secret = settings.secret_key or ""
        self._lock = threading.Lock()
        # principal -> the salt of the password this process set up on the broker
        self._provisioned: dict[str, str] = {}
        if self.shared:
            log.warning(
                "no broker management API configured: every user and endpoint gets the same "
                "broker credentials (public_broker_url); the broker does not isolate tenants, "
                "and SDKs accept results only from the service's broker user %r",
                self.result_sender,
            )
            return
        admin = urlsplit(settings.broker_url)
        self._api = ManagementApi(
            settings.broker_management_url or "",
            default_credentials=(unquote(admin.username or ""), unquote(admin.password or "")),
            ca_file=settings.ca_file,
        )
        self.vhost = vhost_of(settings.broker_url)

    @property
    def api(self) -> ManagementApi | None:
        return self._api

    def for_user(self, user_id: str, salt: str = "") -> str:
        return self._url(user_principal(user_id), user_grant(user_id), salt)

    def for_endpoint(self, endpoint_id: str, salt: str = "", *, refresh: bool = False,
                     rotate: bool = False) -> str:
        """The endpoint's URL with the password of ``salt``.  ``refresh`` provisions its broker
        user again even if this process did already (registration does: another process may
        have revoked it).  ``rotate`` deletes the user first, which closes every connection
        made with an older password."""
        principal = endpoint_principal(endpoint_id)
        if (refresh or rotate) and self._api is not None:
            with self._lock:
                self._provisioned.pop(principal, None)
            if rotate:
                self._api.delete_user(principal)
        return self._url(principal, endpoint_grant(endpoint_id), salt)

    def restore_endpoint(self, endpoint_id: str, salt: str = "") -> bool:
        """Create the endpoint's broker user again if the broker lost it; True if it did."""
        return self._restore(endpoint_principal(endpoint_id), endpoint_grant(endpoint_id), salt)

    def restore_user(self, user_id: str, salt: str = "") -> bool:
        """Create the user's broker user again if the broker lost it; True if it did."""
        return self._restore(user_principal(user_id), user_grant(user_id), salt)

    def _restore(self, principal: str, grant: Grant, salt: str) -> bool:
        # a user that exists is left alone: it may still have the password of an earlier
        # secret_key, which its clients use until they next ask for credentials
        if self._api is None or self._api.user_exists(principal):
            return False
        self._provision(principal, derive_password(self._secret, principal, salt), grant)
        with self._lock:
            self._provisioned[principal] = salt
        return True

    def forget(self) -> None:
        """Forget which principals this process set up: each is created again on its next
        use (after a broker lost its users)."""
        with self._lock:
            self._provisioned.clear()

    def revoke_endpoint(self, endpoint_id: str) -> None:
        """Delete the endpoint's broker user; RabbitMQ closes its open connections."""
        self._revoke(endpoint_principal(endpoint_id))

    def revoke_user(self, user_id: str) -> None:
        """Delete the user's broker user; RabbitMQ closes its open connections."""
        self._revoke(user_principal(user_id))

    def _revoke(self, name: str) -> None:
        if self._api is None:
            return
        with self._lock:
            self._provisioned.pop(name, None)
        self._api.delete_user(name)

    def _url(self, principal: str, grant: Grant, salt: str) -> str:
        if self._api is None:
            return self.base_url
        password = derive_password(self._secret, principal, salt)
        with self._lock:
            known = self._provisioned.get(principal) == salt
        if not known:
            self._provision(principal, password, grant)
            with self._lock:
                self._provisioned[principal] = salt
        return with_credentials(self.base_url, principal, password)

    def _provision(self, principal: str, password: str, grant: Grant) -> None:
        assert self._api is not None
        api, vhost = self._api, self.vhost
        api.put_user(principal, password)
        api.set_permissions(vhost, principal, configure=grant.configure, write=grant.write, read=grant.read)
        for exchange, write, read in grant.topics:
            api.set_topic_permissions(vhost, principal, exchange=exchange, write=write, read=read)
        log.info("broker user %s ready", principal)
