"""Broker passwords rotate (issue 12 finding 5): lock and delete (then registration anew) of an
endpoint give it a new password and the old one stops working at once (its connections are
closed); a user whose last token is revoked loses its broker user; a restore re-creates
broker users with the current password.  Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from click.testing import CliRunner

from service_helpers import Service, management
from volley.cli import main as cli
from volley.service.restore import restore_broker
from volley.transport.pika_transport import connection_parameters

pytest_plugins = ["service_fixtures"]


def _connect(svc: Service, url: str) -> pika.BlockingConnection | None:
    try:
        return pika.BlockingConnection(connection_parameters(url, ca_file=svc.broker.info.ca_file))
    except pika.exceptions.AMQPConnectionError:  # authentication refused, among others
        return None


def _works(svc: Service, url: str) -> bool:
    conn = _connect(svc, url)
    if conn is None:
        return False
    conn.close()
    return True


def _url(reg: dict[str, Any]) -> str:
    return str(reg["task_queue_info"]["connection_url"])


def _password(url: str) -> str | None:
    return urlsplit(url).password


def _reregister(svc: Service, user: Any, ep: str) -> dict[str, Any]:
    r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "ep"}, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_reregistration_keeps_the_running_instance_connected(svc: Service) -> None:
    """A plain re-registration must not rotate: a second instance of a running endpoint would
    cut the running one off the broker and take its exclusive task queue (the zombie-consumer
    guard of tests/test_endpoint_lifecycle.py). Lock and delete rotate (below)."""
    alice = svc.new_user()
    first = svc.register_endpoint(alice)
    ep = first["endpoint_id"]
    old = _connect(svc, _url(first))
    assert old is not None
    try:
        second = _reregister(svc, alice, ep)
        assert _password(_url(second)) == _password(_url(first))
        assert old.is_open and _works(svc, _url(first))
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            old.close()


def test_lock_and_delete_rotate_the_password(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = svc.new_user()
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]
    monkeypatch.setattr(svc.state.settings, "endpoint_lock_s", 0.0)  # the lock ends at once
    assert svc.client.post(f"/v3/endpoints/{ep}/lock", headers=alice.headers).status_code == 200
    assert not _works(svc, _url(reg))
    after_lock = _reregister(svc, alice, ep)
    assert _password(_url(after_lock)) != _password(_url(reg)) and not _works(svc, _url(reg))
    assert svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers).status_code == 200
    again = _reregister(svc, alice, ep)  # the same id, registered anew
    seen = {_password(_url(u)) for u in (reg, after_lock, again)}
    assert len(seen) == 3
    assert not _works(svc, _url(after_lock)) and _works(svc, _url(again))


def test_restore_recreates_broker_users_with_the_current_password(svc: Service) -> None:
    alice = svc.new_user()
    ep = svc.register_endpoint(alice)["endpoint_id"]
    current = _reregister(svc, alice, ep)
    api = management(svc.broker.info)
    api.delete_user(f"e-{ep}")  # a broker that lost its users
    assert not _works(svc, _url(current))
    state = svc.state
    restore_broker(state.gateway, state.credentials, state.sessions)
    assert _works(svc, _url(current))


def test_revoking_a_users_last_token_deletes_its_broker_user(svc: Service, tmp_path: Path) -> None:
    alice = svc.new_user()
    url = svc.result_url(alice)["connection_url"]
    assert _works(svc, url)
    settings = tmp_path / "service.json"
    settings.write_text(json.dumps(dataclasses.asdict(svc.state.settings)))
    r = CliRunner().invoke(cli, ["token", "revoke", alice.token[:12], "--database-url", svc.database_url,
                                 "--service-config", str(settings)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "broker user" in r.output
    assert not management(svc.broker.info).user_exists(f"u-{alice.id}")
    assert not _works(svc, url)
    # a new token for the same user: new broker credentials, the old ones stay dead
    from volley.service.auth import create_token

    with svc.state.sessions() as s:
        _uid, token = create_token(s, alice.name)
    r2 = svc.client.get("/v2/get_amqp_result_connection_url", headers={"Authorization": f"Bearer {token}"})
    assert r2.status_code == 200, r2.text
    assert _password(r2.json()["connection_url"]) != _password(url)
    assert _works(svc, r2.json()["connection_url"]) and not _works(svc, url)
