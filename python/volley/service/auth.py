"""Bearer tokens: 256 random bits, stored only as a sha256 hash; each maps to one user.

A fast hash suffices: the tokens are random, not passwords, so there is nothing to guess from
the hash.  Lookups go through a short-lived in-process cache; a deleted token stops working
within ``TokenCache.ttl_s`` on every service process.  Unknown tokens are remembered too, for
``TokenCache.unknown_ttl_s`` and at most ``max_unknown`` of them, so a client hammering the
service with a bad token costs a dict lookup per request rather than a query.

A token expires at its own ``expires_at`` (set when it is made: ``token_ttl_s`` of the
service settings, 90 days by default) and in any case ``token_ttl_s`` after it was made.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from volley.service.credentials import check_new_user
from volley.service.db import database_session
from volley.service.models import Token, User
from volley.service.settings import SettingsError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "vly_"
# characters of a token kept in the clear (the "vly_" and 8 of its 43 random characters)
SHOWN_PREFIX = 12
DEFAULT_TOKEN_TTL_S = 90 * 24 * 3600.0
# a database write per token per this long at most
LAST_USED_EVERY_S = 60.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token_hash: str) -> str:
    """The public id of a token: the start of its hash (reveals nothing of the token)."""
    return token_hash[:12]


def create_token(session: Session, user_name: str, *, ttl_s: float = DEFAULT_TOKEN_TTL_S) -> tuple[str, str]:
    """Create (or reuse) user ``user_name`` and give it a new token valid for ``ttl_s``
    seconds (0: no expiry of its own); return (user_id, token).  Raises
    :class:`SettingsError` for a second user of a service in shared-credential mode."""
    user_name = user_name.strip()
    if not user_name or len(user_name) > 255:
        raise ValueError("a user name must be 1 to 255 characters long")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
        try:
            check_new_user(session, user_name)
        except SettingsError:
            session.rollback()
            raise
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    session.add(Token(token_hash=hash_token(token), user_id=user.id, created_at=now,
                      prefix=token[:SHOWN_PREFIX], expires_at=now + ttl_s if ttl_s > 0 else None))
    session.commit()
    return user.id, token


class TokenExpired(Exception):
    """The token is known but past its expiry."""

    def __init__(self, expired_at: float, by_setting: bool) -> None:
        super().__init__(f"token expired at {expired_at}")
        self.expired_at = expired_at
        # True when token_ttl_s (not the token's own expires_at) ended it
        self.by_setting = by_setting


class UnknownToken(Exception):
    """The token is not known (never was, or revoked)."""


def expiry_of(created_at: float, expires_at: float | None, max_age_s: float) -> tuple[float, bool]:
    """When a token expires, and whether ``max_age_s`` (token_ttl_s) is what ends it."""
    by_age = created_at + max_age_s if max_age_s > 0 else float("inf")
    own = expires_at if expires_at is not None else float("inf")
    return (by_age, True) if by_age < own else (own, False)


class TokenCache:
    """Token hash -> user id, so most requests cost a dict lookup rather than a query; and a
    bounded, short-lived memory of unknown tokens."""

    def __init__(self, ttl_s: float = 60.0, *, unknown_ttl_s: float = 10.0, max_unknown: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.max_unknown = max_unknown
        self._lock = threading.Lock()
        # digest -> (user id, cached until (monotonic), expires at (wall), expiry by setting)
        self._cache: dict[str, tuple[str, float, float, bool]] = {}
        # digest -> remembered until (monotonic); oldest first
        self._unknown: OrderedDict[str, float] = OrderedDict()

    @property
    def unknown_count(self) -> int:
        with self._lock:
            return len(self._unknown)

    def cached(self, token: str) -> str | None:
        """The user of ``token`` if the cache knows it (no database access), else None.
        Raises :class:`UnknownToken` for a token found unknown moments ago, and
        :class:`TokenExpired` for a cached token past its expiry."""
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            bad_until = self._unknown.get(digest)
        if bad_until is not None and bad_until > now:
            raise UnknownToken
        if hit is None or hit[1] <= now:
            return None
        if hit[2] <= time.time():
            raise TokenExpired(hit[2], hit[3])
        return hit[0]

    def lookup(self, session: Session, token: str, *, max_age_s: float = 0.0) -> str:
        """The user of ``token``, from the cache or the database; raises
        :class:`UnknownToken` or :class:`TokenExpired`."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        digest = hash_token(token)
        now = time.monotonic()
        row = session.get(Token, digest)
        if row is None:
            with self._lock:
                self._unknown[digest] = now + self.unknown_ttl_s
                self._unknown.move_to_end(digest)
                while len(self._unknown) > self.max_unknown:
                    self._unknown.popitem(last=False)
            raise UnknownToken
        expires, by_setting = expiry_of(row.created_at, row.expires_at, max_age_s)
        with self._lock:
            if len(self._cache) > 100_000:  # bounded: forget everything rather than grow
                self._cache.clear()
            self._cache[digest] = (row.user_id, now + self.ttl_s, expires, by_setting)
        if expires <= time.time():
            raise TokenExpired(expires, by_setting)
        self._note_use(session, row)
        return row.user_id

    def user_for(self, session: Session, token: str, *, max_age_s: float = 0.0) -> str | None:
        """The user of a valid ``token``, else None (unknown, revoked or expired)."""
        try:
            return self.lookup(session, token, max_age_s=max_age_s)
        except (UnknownToken, TokenExpired):
            return None

    @staticmethod
    def _note_use(session: Session, row: Token) -> None:
        now = time.time()
        if row.last_used_at is not None and now - row.last_used_at < LAST_USED_EVERY_S:
            return
        try:
            row.last_used_at = now
            session.commit()
        except DBAPIError as exc:  # a busy database: the request matters more than the note
            session.rollback()
            log.info("could not record the use of token %s: %s", token_id(row.token_hash), exc.orig)


def issue_token(database_url: str, user_name: str, *, ttl_s: float = DEFAULT_TOKEN_TTL_S) -> str:
    """A new token for user ``user_name`` (created if new) in the service's database at
    ``database_url``: what `volley token create` prints and the local stack's first token."""
    with database_session(database_url) as session:
        return create_token(session, user_name, ttl_s=ttl_s)[1]


def token_valid(database_url: str, token: str, *, max_age_s: float = 0.0) -> bool:
    """True while ``token`` is known to the database at ``database_url`` and not expired."""
    with database_session(database_url) as session:
        return TokenCache().user_for(session, token, max_age_s=max_age_s) is not None
