"""Bearer tokens: 256 random bits, stored only as a sha256 hash; each maps to one user.

A fast hash suffices: the tokens are random, not passwords, so there is nothing to guess from
the hash.  Lookups go through a short-lived in-process cache; a deleted token stops working
within ``TokenCache.ttl_s`` on every service process.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from volley.service.models import Token, User

TOKEN_PREFIX = "vly_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user_name: str) -> tuple[str, str]:
    """Create (or reuse) user ``user_name`` and give it a new token; return (user_id, token)."""
    user_name = user_name.strip()
    if not user_name or len(user_name) > 255:
        raise ValueError("a user name must be 1 to 255 characters long")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(token_hash=hash_token(token), user_id=user.id))
    session.commit()
    return user.id, token


class TokenCache:
    """Token hash -> user id, so most requests cost a dict lookup rather than a query."""

    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def cached(self, token: str) -> str | None:
        """The user of ``token`` if the cache knows it (no database access), else None."""
        with self._lock:
            hit = self._cache.get(hash_token(token))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def user_for(self, session: Session, token: str) -> str | None:
        hit = self.cached(token)
        if hit is not None:
            return hit
        digest = hash_token(token)
        now = time.monotonic()
        row = session.get(Token, digest)
        if row is None:
            return None
        with self._lock:
            if len(self._cache) > 100_000:  # bounded: forget everything rather than grow
                self._cache.clear()
            self._cache[digest] = (row.user_id, now + self.ttl_s)
        return row.user_id
