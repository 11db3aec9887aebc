"""Bearer tokens (issue 12): expiry, `volley token list|revoke`, and a negative cache so a
flood of unknown tokens does not reach the database.  Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from service_helpers import Service, User
from volley.cli import main as cli
from volley.service.auth import TokenCache, create_token, hash_token
from volley.service.db import init_db, make_engine
from volley.service.models import Token

pytest_plugins = ["service_fixtures"]


def _set_token(svc: Service, user: User, **values: Any) -> None:
    with svc.state.sessions() as s:
        s.execute(sa.update(Token).where(Token.token_hash == hash_token(user.token)).values(**values))
        s.commit()


def _get(svc: Service, user: User) -> Any:
    return svc.client.get("/v2/endpoints", headers=user.headers)


def test_expired_token_is_401_saying_so_and_how_to_get_a_new_one(svc: Service) -> None:
    alice = svc.new_user()
    _set_token(svc, alice, expires_at=time.time() - 1)
    r = _get(svc, alice)
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["code"] == "TOKEN_EXPIRED" and "expired" in body["message"], body
    assert "volley token create" in body["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_older_than_token_ttl_s_is_expired(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = svc.new_user()
    _set_token(svc, alice, created_at=time.time() - 100, expires_at=None)
    monkeypatch.setattr(svc.state.settings, "token_ttl_s", 50.0)
    r = _get(svc, alice)
    assert r.status_code == 401 and r.json()["code"] == "TOKEN_EXPIRED", r.text
    assert "token_ttl_s" in r.json()["message"]
    bob = svc.new_user()  # a token younger than the setting works
    _set_token(svc, bob, created_at=time.time() - 10, expires_at=None)
    assert _get(svc, bob).status_code == 200


def test_new_tokens_expire_after_the_ttl_and_record_last_use(svc: Service) -> None:
    alice = svc.new_user()
    with svc.state.sessions() as s:
        row = s.get(Token, hash_token(alice.token))
        assert row is not None and row.expires_at is not None and row.last_used_at is None
        assert 89 * 86400 < row.expires_at - row.created_at <= 90 * 86400
        assert row.prefix == alice.token[:12]
    assert _get(svc, alice).status_code == 200
    with svc.state.sessions() as s:
        row = s.get(Token, hash_token(alice.token))
        assert row is not None and row.last_used_at is not None


@pytest.fixture()
def token_queries(svc: Service) -> Iterator[list[str]]:
    """SQL statements that read the tokens table, as the database sees them."""
    engine = svc.state.sessions.kw["bind"]
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        if "FROM tokens" in statement:
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)


def test_repeated_unknown_token_reaches_the_database_once(svc: Service, token_queries: list[str]) -> None:
    bad = {"Authorization": "Bearer vly_" + "x" * 43}
    for _ in range(20):
        r = svc.client.get("/v2/endpoints", headers=bad)
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED", r.text
    assert len(token_queries) == 1, token_queries


def test_unknown_token_cache_is_bounded(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    try:
        sessions = init_db(engine)
        cache = TokenCache(max_unknown=3)
        with sessions() as s:
            for i in range(10):
                assert cache.user_for(s, f"vly_bad{i}") is None
            assert cache.unknown_count == 3
            # a real token is never answered from the negative cache
            uid, token = create_token(s, "dora")
            assert cache.user_for(s, token) == uid
    finally:
        engine.dispose()


# --- the CLI -----------------------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_token_list_shows_ids_and_dates_never_the_token(fresh_db: str) -> None:
    engine = make_engine(fresh_db)
    try:
        with init_db(engine)() as s:
            _uid, t1 = create_token(s, "erin")
            _uid, t2 = create_token(s, "frank")
    finally:
        engine.dispose()
    r = _cli("token", "list", "--database-url", fresh_db)
    assert r.exit_code == 0, r.output
    for token, user in ((t1, "erin"), (t2, "frank")):
        assert token not in r.output and token[12:20] not in r.output
        line = next(line for line in r.output.splitlines() if hash_token(token)[:12] in line)
        assert token[:12] in line and user in line and "never" in line  # prefix, user, last used
    only = _cli("token", "list", "--database-url", fresh_db, "--user", "erin")
    assert hash_token(t1)[:12] in only.output and hash_token(t2)[:12] not in only.output


def test_token_revoke_by_prefix_or_id(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    r = _cli("token", "revoke", alice.token[:12], "--database-url", svc.database_url)
    assert r.exit_code == 0, r.output
    assert "revoked" in r.output and alice.token not in r.output
    assert _get(svc, alice).status_code == 401
    r = _cli("token", "revoke", hash_token(bob.token)[:12], "--database-url", svc.database_url)
    assert r.exit_code == 0, r.output
    assert _get(svc, bob).status_code == 401


def test_token_revoke_refuses_unknown_ambiguous_and_short(fresh_db: str) -> None:
    engine = make_engine(fresh_db)
    try:
        with init_db(engine)() as s:
            create_token(s, "gina")
            create_token(s, "gina")
            count = s.scalar(sa.select(sa.func.count()).select_from(Token))
    finally:
        engine.dispose()
    for arg, why in (("vly_nope0000", "no token"), ("vly_", "at least"), ("ab", "at least")):
        r = _cli("token", "revoke", arg, "--database-url", fresh_db)
        assert r.exit_code != 0 and why in r.output, r.output
    engine = make_engine(fresh_db)
    try:
        with init_db(engine)() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Token)) == count
    finally:
        engine.dispose()
