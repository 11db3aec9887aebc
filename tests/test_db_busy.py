"""A busy, locked or unreachable database: every request it fails is answered 503 with
``Retry-After`` (nothing changed, send it again), which the SDK waits out, and no route changes
the broker before its commit.

The lock is real: another connection holds SQLite's write lock (``BEGIN IMMEDIATE`` on the same
file) or a PostgreSQL table lock, for longer than the service under test waits for a lock (1 s,
set in its database URL).  The services run on SQLite and on PostgreSQL (skipped without one).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from served_service import served
from service_helpers import (
    BACKENDS,
    BrokerHost,
    Service,
    _service_settings,
    management,
    new_uuid,
    serializer,
    start_service,
    wait_for,
)
from volley.protocol.messages import decode, pack_result
from volley.service.credentials import endpoint_principal
from volley.service.models import Function, Task

pytest_plugins = ["service_fixtures"]

BUSY_TIMEOUT_S = 1  # how long the services of this module wait for a lock


def negate(x: int) -> int:
    return -x


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}?timeout={BUSY_TIMEOUT_S}"


@pytest.fixture(scope="module", params=BACKENDS)
def busy_svc(request: pytest.FixtureRequest, broker_host: BrokerHost,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service that waits at most BUSY_TIMEOUT_S for a database lock."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path_factory.mktemp("busy-sqlite") / "service.db")
    else:
        url = (request.getfixturevalue("pg_databases").create()
               + f"?options=-c%20lock_timeout%3D{BUSY_TIMEOUT_S * 1000}")
    yield from start_service(broker_host.new_vhost(), url, request.param)


@contextmanager
def locked(database_url: str, *tables: str, mode: str = "EXCLUSIVE") -> Iterator[None]:
    """Hold a lock from a connection of our own: SQLite's write lock on the whole file (readers
    go on, as in WAL mode they do), or PostgreSQL's ``mode`` lock on ``tables`` (EXCLUSIVE lets
    readers through, ACCESS EXCLUSIVE stops them too)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    engine = sa.create_engine(database_url.split("?", 1)[0], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"LOCK TABLE {', '.join(tables)} IN {mode} MODE")
            yield
            conn.rollback()
    finally:
        engine.dispose()


class _Records(logging.Handler):
    """The log records of one logger, as they come (from any thread)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _Records:
        self.logger.addHandler(self)
        self.old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.old_level)

    def about(self, path: str) -> list[logging.LogRecord]:
        return [r for r in self.records if path in r.getMessage()]


def _function_body() -> dict[str, Any]:
    return {"function_name": "f", "function_code": serializer.pack_buffers([serializer.serialize(negate)]),
            "meta": {"python_version": "3", "sdk_version": "0"}}


def _assert_503(r: Any, *words: str) -> str:
    assert r.status_code == 503, r.text
    assert float(r.headers["Retry-After"]) >= 1
    doc = r.json()
    assert set(doc) == {"code", "message"} and doc["code"] == "DATABASE_UNAVAILABLE", doc
    for w in words:
        assert w in doc["message"], doc
    return str(doc["message"])


def test_a_write_while_the_database_is_locked_is_503_with_retry_after_and_changes_nothing(
    busy_svc: Service,
) -> None:
    svc = busy_svc
    alice = svc.new_user()
    with _Records("volley.service.errors") as log, locked(svc.database_url, "functions"):
        r = svc.client.post("/v3/functions", json=_function_body(), headers=alice.headers)
    message = _assert_503(r, "nothing was changed")
    assert ("locked" if svc.backend == "sqlite" else "55P03") in message
    # logged once, as one line: no traceback of an "unhandled error"
    lines = log.about("/v3/functions")
    assert [(rec.levelno, rec.exc_info) for rec in lines] == [(logging.WARNING, None)], lines
    assert svc.count(Function, owner_id=alice.id) == 0
    # the same request, sent again once the lock is gone, does what it asked
    r = svc.client.post("/v3/functions", json=_function_body(), headers=alice.headers)
    assert r.status_code == 200, r.text
    assert svc.count(Function, owner_id=alice.id) == 1


def test_a_read_behind_a_table_lock_is_503_too(busy_svc: Service) -> None:
    svc = busy_svc
    if svc.backend == "sqlite":
        pytest.skip("SQLite in WAL mode lets readers through a writer's lock")
    alice = svc.new_user()
    fid = svc.register_function(alice)
    with locked(svc.database_url, "functions", mode="ACCESS EXCLUSIVE"):
        r = svc.client.get(f"/v2/functions/{fid}", headers=alice.headers)
    _assert_503(r, "55P03")
    assert svc.client.get(f"/v2/functions/{fid}", headers=alice.headers).status_code == 200


def test_endpoint_delete_while_the_database_is_locked_leaves_the_broker_side_untouched(
    busy_svc: Service,
) -> None:
    svc = busy_svc
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]
    out = svc.submit(alice, ep, fid, (1,))
    (tid,) = out["tasks"][fid]
    api = management(svc.broker.info)
    principal = endpoint_principal(ep)
    with locked(svc.database_url, "endpoints", "tasks"):
        r = svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers)
        broker_side = (api.user_exists(principal), svc.broker.queue_exists(f"{ep}.tasks"))
    # the endpoint is whole: its broker user, its queue with the task, its row, its task
    assert (r.status_code, broker_side) == (503, (True, True)), r.text
    _assert_503(r)
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).status_code == 200
    assert svc.task(alice, tid)["status"] == "waiting-for-ep"
    assert svc.broker.queue_depth(f"{ep}.tasks") == 1
    svc.broker.connect(reg["task_queue_info"]["connection_url"]).close()  # it may still log in
    # sent again, the delete does it all
    r = svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert not api.user_exists(principal) and not svc.broker.queue_exists(f"{ep}.tasks")
    doc = wait_for(lambda: (d := svc.task(alice, tid))["status"] == "failed" and d, what="the task to fail")
    assert "was deleted" in doc["exception"]


def test_endpoint_lock_while_the_database_is_locked_leaves_the_broker_side_untouched(
    busy_svc: Service,
) -> None:
    svc = busy_svc
    alice = svc.new_user()
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]
    with locked(svc.database_url, "endpoints"):
        r = svc.client.post(f"/v3/endpoints/{ep}/lock", headers=alice.headers)
        still_user = management(svc.broker.info).user_exists(endpoint_principal(ep))
    assert (r.status_code, still_user) == (503, True), r.text
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()["locked"] is False
    svc.broker.connect(reg["task_queue_info"]["connection_url"]).close()


def test_connection_lost_during_the_commit_is_504_not_503(busy_svc: Service) -> None:
    """The commit may have happened: the answer must not say "nothing was done" (503), which
    clients take as leave to send even a plain POST again."""
    svc = busy_svc
    if svc.backend == "sqlite":
        pytest.skip("SQLite has no connection to lose")
    alice = svc.new_user()
    engine = svc.state.sessions.kw["bind"]
    name = f"volley_test_drop_{alice.id[:8]}"
    with engine.begin() as conn:
        # runs at COMMIT: the server ends the connection while committing
        conn.exec_driver_sql(
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$ LANGUAGE plpgsql")
        conn.exec_driver_sql(
            f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON functions DEFERRABLE INITIALLY DEFERRED "
            f"FOR EACH ROW WHEN (NEW.owner_id = '{alice.id}') EXECUTE FUNCTION {name}()")
    try:
        r = svc.client.post("/v3/functions", json=_function_body(), headers=alice.headers)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON functions")
            conn.exec_driver_sql(f"DROP FUNCTION {name}()")
    assert r.status_code == 504, r.text
    assert r.json()["code"] == "DATABASE_UNAVAILABLE" and "may or may not" in r.json()["message"]


def test_an_executor_submit_made_while_the_database_is_locked_runs_once_it_is_released(
    broker_host: BrokerHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over real HTTP: the SDK meets 503s, waits them out and the future resolves; the task is
    stored and queued once.  The test plays the endpoint, with the credentials it was given."""
    from volley import Client, Executor
    from volley.service.auth import create_token

    monkeypatch.setenv("VOLLEY_SERVICE_RETRY_FOR", "120")
    broker = broker_host.new_vhost()
    url = _sqlite_url(tmp_path / "service.db")
    with served(_service_settings(broker, url)) as (base, state):
        with state.sessions() as s:
            user_id, token = create_token(s, "busy-user")
        client = Client(service_url=base, token=token, ca_file=broker.info.ca_file)
        reg = client.register_endpoint("busy-ep")
        ep = reg["endpoint_id"]
        fid = client.register_function(negate)
        with Executor(endpoint_id=ep, client=client) as ex, _Records("volley.service.errors") as log:
            with locked(url):
                fut = ex.submit_to_registered_function(fid, args=(-7,))
                # the submission reached the service and was answered while the lock was held
                wait_for(lambda: log.about(f"/v3/endpoints/{ep}/submit"), timeout=90,
                         what="the submit to meet the lock")
                assert not fut.done(), fut.exception()
            task_url = reg["task_queue_info"]["connection_url"]
            tasks = wait_for(lambda: broker.drain(f"{ep}.tasks", url=task_url), what="the task message")
            (task,) = [decode(body) for _m, _p, body in tasks]
            kw = reg["result_queue_info"]["queue_publish_kwargs"]
            broker.publish(kw["exchange"], kw["routing_key"],
                           pack_result(task.task_id, serializer.serialize(7)),
                           url=reg["result_queue_info"]["connection_url"])
            assert fut.result(timeout=60) == 7
        assert all(r.levelno == logging.WARNING for r in log.records), log.records
        with state.sessions() as s:
            tasks_stored = s.scalar(sa.select(sa.func.count()).select_from(Task).where(Task.owner_id == user_id))
        assert tasks_stored == 1 and fut.task_id == task.task_id
        assert broker.queue_depth(f"{ep}.tasks") == 0


def test_registration_while_the_database_is_locked_makes_no_broker_user_or_queue(busy_svc: Service) -> None:
    svc = busy_svc
    alice = svc.new_user()
    ep = new_uuid()
    with locked(svc.database_url, "endpoints"):
        r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "ep"}, headers=alice.headers)
    _assert_503(r)
    assert not management(svc.broker.info).user_exists(endpoint_principal(ep))
    assert not svc.broker.queue_exists(f"{ep}.tasks")
    # sent again, it registers
    r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "ep"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    svc.broker.connect(r.json()["task_queue_info"]["connection_url"]).close()


def test_the_lock_wait_is_30_s_unless_the_database_url_sets_its_own(fresh_db: str) -> None:
    """Below the SDK's 60 s HTTP timeout: a request behind a lock is answered 503 before the
    client gives up on the answer.  On PostgreSQL it is set with ``SET`` once connected, not with
    the ``options`` startup parameter, which PgBouncer refuses ("unsupported startup
    parameter"): the connection is opened with no ``options`` unless the URL gives them, and the
    setting outlives the pool's rollback of each checkout.  Options that leave the lock timeout
    alone keep the 30 s."""
    from volley.service.db import make_engine

    sqlite = fresh_db.startswith("sqlite")
    query = "PRAGMA busy_timeout" if sqlite else "SHOW lock_timeout"
    own = fresh_db + ("?timeout=2" if sqlite else "?options=-c%20lock_timeout%3D2000")
    other = fresh_db + ("?cached_statements=10" if sqlite else "?options=-c%20statement_timeout%3D60000")
    seen, startup = [], []
    for url in (fresh_db, own, other):
        engine = make_engine(url)
        try:
            for _ in range(2):  # a fresh connection, then the same one back from the pool
                with engine.connect() as conn:
                    seen.append(str(conn.exec_driver_sql(query).scalar()))
                    if not sqlite:
                        startup.append(conn.connection.dbapi_connection.info.get_parameters().get("options"))
        finally:
            engine.dispose()
    if sqlite:
        assert seen == ["30000", "30000", "2000", "2000", "30000", "30000"]
    else:
        assert startup == [None, None, "-c lock_timeout=2000", "-c lock_timeout=2000",
                           "-c statement_timeout=60000", "-c statement_timeout=60000"]
        assert seen == ["30s", "30s", "2s", "2s", "30s", "30s"]


def test_endpoint_delete_whose_last_commit_fails_stays_locked_and_finishes_when_sent_again(
    busy_svc: Service,
) -> None:
    """The broker side went, then the database refused to delete the row (a serialization
    failure, real PostgreSQL behaviour raised by a trigger scoped to this test's user)."""
    svc = busy_svc
    if svc.backend == "sqlite":
        pytest.skip("the trigger raises a PostgreSQL serialization failure")
    alice = svc.new_user()
    ep = svc.register_endpoint(alice)["endpoint_id"]
    engine = svc.state.sessions.kw["bind"]
    name = f"volley_test_refuse_{alice.id[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$ LANGUAGE plpgsql")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {name} BEFORE DELETE ON endpoints FOR EACH ROW "
            f"WHEN (OLD.owner_id = '{alice.id}') EXECUTE FUNCTION {name}()")
    try:
        r = svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER {name} ON endpoints")
            conn.exec_driver_sql(f"DROP FUNCTION {name}()")
    message = _assert_503(r, "40001", "DELETE again")
    assert "nothing was changed" not in message
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()["locked"] is True
    r = svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).status_code == 404
