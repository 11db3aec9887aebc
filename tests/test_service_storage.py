"""Storage: migrations on both backends, expiry, token hashing, settings and database errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import sessionmaker

from volley.service.auth import TokenCache, create_token, hash_token
from volley.service.db import DatabaseError, alembic_config, init_db, make_engine, migrate
from volley.service.expiry import purge_expired
from volley.service.models import Base, Task, TaskGroup, Token, User
from volley.service.settings import ServiceSettings, SettingsError

pytest_plugins = ["service_fixtures"]


def _head() -> str:
    """The newest revision of the migration scripts: a new migration must not need this test
    edited, only the models and the scripts to agree."""
    from alembic.script import ScriptDirectory

    from volley.service.db import MIGRATIONS_DIR

    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


@pytest.fixture()
def engine(fresh_db: str) -> Any:
    eng = make_engine(fresh_db)
    yield eng
    eng.dispose()


def test_migrations_build_exactly_the_models(engine: Any) -> None:
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert MigrationContext.configure(conn).get_current_revision() == _head()


def test_migrations_downgrade_and_upgrade_again(engine: Any) -> None:
    migrate(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    with engine.connect() as conn:
        assert {"users", "tokens", "functions", "endpoints", "task_groups", "tasks"} <= set(
            sa.inspect(conn).get_table_names()
        )


def test_pre_migration_database_is_refused_clearly(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (id VARCHAR(36) PRIMARY KEY)"))
    with pytest.raises(DatabaseError, match="pre-release Volley"):
        migrate(engine)
    with engine.connect() as conn:  # and nothing was changed
        assert set(sa.inspect(conn).get_table_names()) == {"users"}


def test_concurrent_migrations_on_postgresql(pg_databases: Any) -> None:
    """Several service processes starting on one new database: the advisory lock serialises
    their migrations, so all succeed."""
    url = pg_databases.create()
    errors: list[BaseException] = []

    def run() -> None:
        eng = make_engine(url)
        try:
            migrate(eng)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    eng.dispose()


def test_postgres_url_without_driver_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"postgresql\+psycopg://") as info:
        make_engine("postgresql://alice:secret@db/volley")
    assert "secret" not in str(info.value)


def _task(owner: str, group: str, updated_at: float) -> Task:
    return Task(id=str(uuid.uuid4()), owner_id=owner, task_group_id=group, endpoint_id=str(uuid.uuid4()),
                function_id=str(uuid.uuid4()), status="success", forwarded=True, created_at=updated_at,
                updated_at=updated_at)


def test_purge_deletes_expired_tasks_then_empty_groups(engine: Any) -> None:
    sessions = init_db(engine)
    now, ttl = 1_000_000.0, 100.0
    with sessions() as s:
        user = User(name="u")
        s.add(user)
        s.flush()
        old = TaskGroup(owner_id=user.id, created_at=0, updated_at=now - 500)
        mixed = TaskGroup(owner_id=user.id, created_at=0, updated_at=now - 500)
        fresh = TaskGroup(owner_id=user.id, created_at=0, updated_at=now)
        s.add_all([old, mixed, fresh])
        s.flush()
        s.add_all([_task(user.id, old.id, now - 200) for _ in range(7)])
        s.add_all([_task(user.id, mixed.id, now - 200), _task(user.id, mixed.id, now - 10)])
        s.add(_task(user.id, fresh.id, now - 10))
        s.commit()
        ids = (old.id, mixed.id, fresh.id)
    assert purge_expired(sessions, ttl, now=now, chunk=3) == (8, 1)
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Task)) == 2
        assert {g for g in s.scalars(sa.select(TaskGroup.id))} == {ids[1], ids[2]}
    assert purge_expired(sessions, ttl, now=now) == (0, 0)  # nothing left to do


def test_tokens_are_stored_hashed(engine: Any) -> None:
    sessions = init_db(engine)
    with sessions() as s:
        uid, token = create_token(s, "alice")
        uid2, token2 = create_token(s, "alice")
    assert uid == uid2 and token != token2 and token.startswith("vly_")
    with sessions() as s:
        stored = set(s.scalars(sa.select(Token.token_hash)))
        assert stored == {hash_token(token), hash_token(token2)}
        assert token not in str(stored)
        with pytest.raises(ValueError, match="1 to 255"):
            create_token(s, "  ")


def test_deleted_token_stops_working_after_the_cache_ttl(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    sessions: sessionmaker = init_db(eng)
    cache = TokenCache(ttl_s=0.0)
    with sessions() as s:
        uid, token = create_token(s, "bob")
        assert cache.user_for(s, token) == uid
        assert cache.user_for(s, "vly_other") is None
        s.execute(sa.delete(Token))
        s.commit()
        assert cache.user_for(s, token) is None
    eng.dispose()


def test_token_create_cli(fresh_db: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-m", "volley.cli", "token", "create", "--user", "carol", "--database-url", fresh_db],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    eng = make_engine(fresh_db)
    with sessionmaker(eng)() as s:
        row = s.get(Token, hash_token(token))
        assert row is not None and s.get(User, row.user_id).name == "carol"
    eng.dispose()


def test_token_create_cli_reports_bad_database() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "volley.cli", "token", "create", "--user", "x", "--database-url", "postgresql://h/db"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), timeout=120,
    )
    assert proc.returncode != 0 and "postgresql+psycopg://" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"broker_management_url": None, "public_broker_url": None}, "never hands out"),
        ({"broker_management_url": "https://localhost:1", "secret_key": None}, "secret_key is required"),
    ],
)
def test_inconsistent_broker_settings_are_refused(settings: dict[str, Any], why: str) -> None:
    from volley.service.app import create_app

    with pytest.raises(SettingsError, match=why):
        create_app(ServiceSettings(**settings))


def test_settings_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"databse_url": "x"}')
    with pytest.raises(SettingsError, match="unknown service setting"):
        ServiceSettings.load(path)
    path.write_text('{"task_ttl_s": "soon"}')
    with pytest.raises(SettingsError, match="not a number"):
        ServiceSettings.load(path)
    path.write_text("{}")
    monkeypatch.setenv("VOLLEY_SERVICE_TASK_TTL_S", "60")
    assert ServiceSettings.load(path).task_ttl_s == 60.0


def test_service_exits_cleanly_on_bad_settings(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"broker_url": "amqps://a:b@localhost:1/%2F"}')
    proc = subprocess.run([sys.executable, "-m", "volley.service", "--config", str(path)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 2 and "broker_management_url" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_service_process_on_postgresql_by_flag(broker_host: Any, pg_databases: Any, tmp_path: Path) -> None:
    """``python -m volley.service --database-url postgresql+psycopg://...``: the real process
    migrates the database and serves from it."""
    import json
    import secrets

    import requests

    from service_helpers import wait_for
    from volley.local.ports import free_port

    broker = broker_host.new_vhost()
    info = broker.info
    url = pg_databases.create()
    port = free_port()
    cfg = tmp_path / "service.json"
    cfg.write_text(json.dumps({
        "broker_url": broker.admin_url, "broker_management_url": f"https://localhost:{info.management_port}",
        "secret_key": secrets.token_urlsafe(16), "ca_file": info.ca_file, "port": port,
    }))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "volley.service", "--config", str(cfg), "--database-url", url],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return requests.get(f"http://127.0.0.1:{port}/v2/version", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, what="the service process")
        token = subprocess.run(
            [sys.executable, "-m", "volley.cli", "token", "create", "--user", "dora", "--database-url", url],
            capture_output=True, text=True, env=env, timeout=120, check=True,
        ).stdout.strip()
        r = requests.post(f"http://127.0.0.1:{port}/v3/endpoints", json={"endpoint_name": "pg"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        eng = make_engine(url)
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM endpoints")).scalar() == 1
        eng.dispose()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
