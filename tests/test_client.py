"""Client: configuration discovery, constructor rules, REST methods against the real service,
version-mismatch warnings and the hardware report."""

from __future__ import annotations

import logging
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

from volley import Client, Executor
from volley.sdk.client import NoServiceConfigured
from volley.sdk.http import ComputeAPIError


def test_no_configuration_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_HOME", str(tmp_path / "empty"))
    with pytest.raises(NoServiceConfigured, match="run `volley local up`, or set VOLLEY_SERVICE_URL"):
        Client()


def test_unknown_kwargs_warn_and_app_excludes_authorizer(stack: dict[str, Any]) -> None:
    with pytest.warns(UserWarning, match="The 'funcx_home' argument is unrecognized"):
        Client(funcx_home="/x", do_version_check=False)
    with pytest.raises(ValueError, match=r"'app' and 'authorizer' are mutually exclusive\."):
        Client(app=object(), authorizer=object())


def test_environment_overrides_the_config_file(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_SERVICE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    client = Client(do_version_check=False)
    assert client.web_service_address == "http://127.0.0.1:9"
    client._api.retry_for = 0  # answer at once rather than wait out the 'outage'
    with pytest.raises(ConnectionError, match=r"cannot reach the Volley service at http://127\.0\.0\.1:9"):
        client.version_check()


class StaticAuthorizer:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_authorization_header(self) -> str:
        return f"Bearer {self.token}"


def test_authorizer_object_is_used(stack: dict[str, Any]) -> None:
    token = Client(do_version_check=False)._api.token
    client = Client(authorizer=StaticAuthorizer(token))
    assert isinstance(client.get_endpoints(), list)
    with pytest.raises(ComputeAPIError) as info:
        Client(authorizer=StaticAuthorizer("vly_wrong"), do_version_check=False).get_endpoints()
    assert info.value.http_status == 401


def test_function_lifecycle_and_source_registration(endpoint_id: str) -> None:
    client = Client()
    fid = client.register_source_code("def hello(name):\n    return f'hello {name}'\n", "hello")
    doc = client.get_function(fid)
    assert doc["function_name"] == "hello"
    with Executor(endpoint_id=endpoint_id, client=client, task_group_id=uuid.uuid4()) as ex:
        assert ex.submit_to_registered_function(fid, ("volley",)).result(timeout=60) == "hello volley"
    client.delete_function(fid)
    with pytest.raises(ComputeAPIError) as info:
        client.get_function(fid)
    assert info.value.http_status == 404


def test_endpoint_queries(endpoint_id: str) -> None:
    client = Client()
    assert client.get_endpoint_status(endpoint_id)["status"] == "online"
    assert endpoint_id in [e["uuid"] for e in client.get_endpoints()]
    assert client.get_endpoint_metadata(endpoint_id)["uuid"] == endpoint_id


def test_version_mismatch_warns_once_per_endpoint(stack: dict[str, Any]) -> None:
    client = Client(do_version_check=False)
    details = {"endpoint_id": "ep-1", "python_version": "3.0.0", "dill_version": "0.1"}
    with pytest.warns(UserWarning, match="Environment differences detected between local SDK and endpoint ep-1"):
        client._log_version_mismatch(details)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client._log_version_mismatch(details)  # already warned for ep-1
        import platform

        import dill

        same = {"endpoint_id": "ep-2", "python_version": platform.python_version(), "dill_version": dill.__version__}
        client._log_version_mismatch(same)


def test_logout_explains(stack: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Client(do_version_check=False).logout()
    assert "Logout is not supported" in caplog.text


def test_worker_hardware_details(endpoint_id: str) -> None:
    client = Client()
    tid = client.get_worker_hardware_details(endpoint_id)
    with Executor(endpoint_id=endpoint_id, client=client, task_group_id=client.session_task_group_id) as ex:
        (fut,) = ex.reload_tasks()
        report = fut.result(timeout=60)
    assert "Compute Endpoint worker" in report and "logical cpus:" in report
    assert client.get_result(tid) == report
