"""Bad inputs over REST, generated: every route of the service's own OpenAPI schema
(``app.openapi()``) fuzzed with schemathesis, in-process, against a real service on SQLite with
the session's real RabbitMQ node.

Two tenants.  Alice sends every request; Bob owns an endpoint, a function and a finished task
whose contents carry a marker.  The generator mixes Bob's ids (and Alice's own) into path
parameters and into the id fields of bodies, so Alice keeps asking for Bob's objects.  For every
request:

* no 5xx;
* every 4xx is ``{"code": str, "message": str}`` and nothing else;
* status, content type and body conform to the schema;
* a 2xx answer never holds Bob's ids or markers, a 4xx never his markers (a 404 may repeat the
  id it was asked for);

and afterwards Bob's objects are all there and his endpoint still delivers results.

Reproducible: ``derandomize=True`` (the same examples on every run) and a fixed ``max_examples``
per route; the examples database is off.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service_helpers import (
    BrokerHost,
    Service,
    User,
    endpoint_publish_result,
    start_service,
    wait_for,
)
from volley.protocol.messages import pack_result
from volley.serialize.utils import pack_buffers
from volley.service.app import create_app
from volley.service.settings import ServiceSettings

pytest_plugins = ["service_fixtures"]

EXAMPLES_PER_ROUTE = 40
MARKER = "BOBS-SECRET"


def _routes() -> list[tuple[str, str]]:
    # collection needs only the schema: an app that is never started
    app = create_app(ServiceSettings(database_url="sqlite://", broker_url="amqp://unused", secret_key="x" * 16,
                                     broker_management_url="https://unused"))
    return [(method.upper(), path) for path, methods in app.openapi()["paths"].items() for method in methods]


ROUTES = _routes()


class Tenants:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.alice, self.bob = svc.new_user(), svc.new_user()
        self.bob_ep = svc.register_endpoint(self.bob, endpoint_name=f"{MARKER}-endpoint")
        self.bob_fn = self._function(self.bob)
        self.bob_out = svc.submit(self.bob, self.bob_ep["endpoint_id"], self.bob_fn, (1,))
        (self.bob_task,) = self.bob_out["tasks"][self.bob_fn]
        self._finish(self.bob_task, f'11\n"{MARKER}-result"')
        alice_ep = svc.register_endpoint(self.alice)["endpoint_id"]
        alice_fn = self._function(self.alice, public=True)
        alice_out = svc.submit(self.alice, alice_ep, alice_fn, (1,))
        self.bob_ids = [self.bob_ep["endpoint_id"], self.bob_fn, self.bob_task, self.bob_out["task_group_id"],
                        self.bob.id]
        self.alice_ids = [alice_ep, alice_fn, alice_out["tasks"][alice_fn][0], alice_out["task_group_id"]]

    def _function(self, user: User, **extra: Any) -> str:
        code = pack_buffers([f"st\n{MARKER}_fn:def f(x):\n    return x\n" if user is self.bob else "st\nf:def f(x): return x\n"])
        r = self.svc.client.post("/v3/functions", headers=user.headers, json={
            "function_name": "f", "function_code": code, "description": MARKER if user is self.bob else "",
            **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["function_uuid"])

    def _finish(self, task_id: str, data: str) -> None:
        endpoint_publish_result(self.svc, self.bob_ep, pack_result(task_id, data, details={"python_version": "3"}))
        wait_for(lambda: self.svc.task(self.bob, task_id)["status"] == "success", what="bob's result")

    def secrets_in(self, text: str, *, ids: bool) -> list[str]:
        found = [s for s in (MARKER, self.bob.token) if s in text]
        return found + ([i for i in self.bob_ids if i in text and not self._alices_own(i)] if ids else [])

    def _alices_own(self, ident: str) -> bool:
        """Alice made an object under this id herself: a client chooses the id of an endpoint it
        registers (PUT) and of a new task group, so one of Bob's task or user ids can become the
        id of Alice's endpoint, and her answers then carry it.  Never true for the id of Bob's
        own endpoint or task group: Alice holding one of those is the leak this test is for."""
        h = self.alice.headers
        if ident != self.bob_ep["endpoint_id"] and \
                self.svc.client.get(f"/v2/endpoints/{ident}", headers=h).status_code == 200:
            return True
        return ident != self.bob_out["task_group_id"] and \
            self.svc.client.get(f"/v2/taskgroup/{ident}", headers=h).status_code == 200


@pytest.fixture(scope="module")
def fuzz(broker_host: BrokerHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Tenants, Any]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'service.db'}"
    for svc in start_service(broker_host.new_vhost(), url, "sqlite"):
        tenants = Tenants(svc)
        schema = schemathesis.openapi.from_dict(svc.client.app.openapi())
        yield svc, tenants, schema
        _bob_is_unharmed(svc, tenants)


def _bob_is_unharmed(svc: Service, t: Tenants) -> None:
    """After all of Alice's requests: Bob's objects are there and his endpoint still works."""
    bob = t.bob
    assert svc.task(bob, t.bob_task)["result"] == f'11\n"{MARKER}-result"'
    r = svc.client.get(f"/v2/endpoints/{t.bob_ep['endpoint_id']}", headers=bob.headers)
    assert r.status_code == 200 and r.json()["name"] == f"{MARKER}-endpoint", r.text
    assert svc.client.get(f"/v2/functions/{t.bob_fn}", headers=bob.headers).status_code == 200
    out = svc.submit(bob, t.bob_ep["endpoint_id"], t.bob_fn, (2,), task_group_id=t.bob_out["task_group_id"])
    (tid,) = out["tasks"][t.bob_fn]
    t._finish(tid, '11\n"after"')  # with the broker credentials he was given before the fuzzing


def _swap_ids(data: st.DataObject, value: Any, pool: list[str]) -> Any:
    """``value`` with some of its id-like strings replaced by ids drawn from ``pool``."""
    if isinstance(value, dict):
        return {(data.draw(st.sampled_from(pool)) if _id_like(k) and data.draw(st.booleans()) else k):
                _swap_ids(data, v, pool) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_ids(data, v, pool) for v in value]
    if isinstance(value, str) and _id_like(value) and data.draw(st.booleans()):
        return data.draw(st.sampled_from(pool))
    return value


def _id_like(s: str) -> bool:
    try:
        uuid.UUID(s)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _check(svc: Service, t: Tenants, case: Any, r: Any) -> None:
    where = f"{case.method} {case.formatted_path} -> {r.status_code}: {r.text[:300]}"
    assert r.status_code < 500, where
    if 400 <= r.status_code < 500:
        body = r.json()
        assert set(body) == {"code", "message"}, where
        assert isinstance(body["code"], str) and isinstance(body["message"], str) and body["message"], where
    leaked = t.secrets_in(r.text, ids=r.status_code < 300)
    assert not leaked, f"{where}\nholds Bob's {leaked}"
    case.validate_response(r, checks=[status_code_conformance, content_type_conformance,
                                      response_schema_conformance])


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_under_fuzzing(fuzz: tuple[Service, Tenants, Any], method: str, path: str) -> None:
    svc, t, schema = fuzz
    op = schema[path][method]
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))
    pool = t.bob_ids + t.alice_ids
    alice = t.alice.headers["Authorization"]

    @settings(max_examples=EXAMPLES_PER_ROUTE, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=cases, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        for name in list(case.path_parameters or {}):
            if data.draw(st.booleans()):
                case.path_parameters[name] = data.draw(st.sampled_from(pool))
        if case.body is not NOT_SET:
            case.body = _swap_ids(data, case.body, pool)
        auth = data.draw(st.sampled_from([alice, alice, alice, None, "Bearer vly_not-a-token", "Basic eDp5"]))
        kw = case.as_transport_kwargs(base_url="http://testserver")
        headers = {k: v for k, v in kw["headers"].items() if k.lower() != "authorization"}
        if auth:
            headers["Authorization"] = auth
        body: dict[str, Any] = {}
        if "json" in kw:
            body["json"] = kw["json"]
        elif "data" in kw:  # a body that is not JSON, with the content type it claims
            body["content"] = kw["data"]
        r = svc.client.request(kw["method"], kw["url"], params=kw.get("params"), headers=headers, **body)
        _check(svc, t, case, r)

    run()

