"""Bearer tokens: stored as sha256 hashes; each maps to one user."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from volley.service.db import Token, User


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user_name: str) -> tuple[str, str]:
    """Create (or reuse) user ``user_name`` and give it a new token; return (user_id, token)."""
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    token = "vly_" + secrets.token_urlsafe(32)
    session.add(Token(token_hash=hash_token(token), user_id=user.id))
    session.commit()
    return user.id, token


class TokenCache:
    """Token hash -> user id, so a request costs one dict lookup rather than a query."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def user_for(self, session: Session, token: str) -> str | None:
        digest = hash_token(token)
        user_id = self._cache.get(digest)
        if user_id is None:
            row = session.get(Token, digest)
            if row is None:
                return None
            user_id = self._cache[digest] = row.user_id
        return user_id
