"""The SDK's REST calls verify an https service with the CA file it is configured with.

The service is the real app served by uvicorn over TLS with the local stack's private CA
(``$VOLLEY_HOME/broker/tls/``: the CA no default trust store knows), on a broker vhost of its
own.  However the CA file is given -- ``Client(ca_file=...)``, ``$VOLLEY_CA_FILE`` or the
configuration file -- the Client's REST session must verify with it, and so must the
``volley tasks`` commands, which read the same configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from served_service import served
from service_helpers import BrokerHost, _service_settings

pytest_plugins = ["service_fixtures"]


@pytest.fixture(scope="module")
def https_service(broker_host: BrokerHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The service over https, its CA file, and a user's token."""
    from volley.service.auth import create_token

    tls = Path(broker_host.info.ca_file).parent
    db = tmp_path_factory.mktemp("https-service") / "service.db"
    settings = _service_settings(broker_host.new_vhost(), f"sqlite:///{db}")
    with served(settings, certfile=str(tls / "server.pem"), keyfile=str(tls / "server.key")) as (url, state):
        with state.sessions() as s:
            _uid, token = create_token(s, "tls-user")
        yield {"url": url, "ca_file": str(tls / "ca.pem"), "token": token}


@pytest.fixture()
def no_default_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CA bundle from the environment and an empty ``$VOLLEY_HOME``: only what a test
    configures can make the private CA trusted."""
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "VOLLEY_CA_FILE",
                "VOLLEY_SERVICE_URL", "VOLLEY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("VOLLEY_HOME", str(home))
    return home


def _identity(x: Any) -> Any:
    return x


@pytest.mark.parametrize("given_by", ["argument", "environment", "config file"])
def test_the_client_verifies_the_service_with_its_ca_file(
    https_service: dict[str, Any], no_default_trust: Path, monkeypatch: pytest.MonkeyPatch, given_by: str
) -> None:
    from volley import Client

    kwargs: dict[str, Any] = {"service_url": https_service["url"], "token": https_service["token"]}
    if given_by == "argument":
        kwargs["ca_file"] = https_service["ca_file"]
    elif given_by == "environment":
        monkeypatch.setenv("VOLLEY_CA_FILE", https_service["ca_file"])
    else:
        no_default_trust.mkdir()
        (no_default_trust / "config.json").write_text(json.dumps(
            {"service_url": https_service["url"], "token": https_service["token"],
             "ca_file": https_service["ca_file"]}))
        kwargs = {}
    client = Client(**kwargs)  # the version check is the first REST call
    assert client.ca_file == https_service["ca_file"]
    fid = client.register_function(_identity)
    assert client.get_function(fid)["function_uuid"] == fid
    assert client.get_result_amqp_url()["connection_url"].startswith("amqps://")


def test_without_the_ca_file_the_client_refuses_the_service_naming_the_fix(
    https_service: dict[str, Any], no_default_trust: Path
) -> None:
    from volley import Client

    with pytest.raises(ConnectionError, match=r"does not verify .*ca_file="):
        Client(service_url=https_service["url"], token=https_service["token"])


def test_a_ca_file_that_cannot_be_read_is_named(https_service: dict[str, Any], no_default_trust: Path,
                                                tmp_path: Path) -> None:
    from volley import Client

    missing = str(tmp_path / "no-such-ca.pem")
    with pytest.raises(ValueError, match=r"no-such-ca\.pem.*ca_file=.*VOLLEY_CA_FILE"):
        Client(service_url=https_service["url"], token=https_service["token"], ca_file=missing)


def test_volley_tasks_verifies_the_service_with_the_configured_ca_file(
    https_service: dict[str, Any], no_default_trust: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from volley.cli import main

    monkeypatch.setenv("VOLLEY_SERVICE_URL", https_service["url"])
    monkeypatch.setenv("VOLLEY_TOKEN", https_service["token"])
    monkeypatch.setenv("VOLLEY_CA_FILE", https_service["ca_file"])
    result = CliRunner().invoke(main, ["tasks", "groups"], env=dict(os.environ))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def publicly_signed_service(broker_host: BrokerHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The service over https with a certificate of a second CA, which stands in for a public
    one (a test puts it in the "default" bundle), while the broker's CA stays the local
    stack's: the common set-up of a broker behind a site's private CA and a service behind a
    publicly signed certificate."""
    from volley.local.certs import ensure_tls_files
    from volley.service.auth import create_token

    public = ensure_tls_files(tmp_path_factory.mktemp("public-ca") / "tls")
    db = tmp_path_factory.mktemp("public-https-service") / "service.db"
    settings = _service_settings(broker_host.new_vhost(), f"sqlite:///{db}")
    with served(settings, certfile=str(public["cert"]), keyfile=str(public["key"])) as (url, state):
        with state.sessions() as s:
            _uid, token = create_token(s, "public-tls-user")
        yield {"url": url, "default_bundle": str(public["ca"]), "token": token,
               "broker_ca_file": broker_host.info.ca_file}


@pytest.mark.parametrize("bundle_variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_ca_file_is_trusted_besides_the_default_bundle(
    publicly_signed_service: dict[str, Any], no_default_trust: Path, monkeypatch: pytest.MonkeyPatch,
    bundle_variable: str,
) -> None:
    from click.testing import CliRunner

    from volley import Client
    from volley.cli import main

    svc = publicly_signed_service
    monkeypatch.setenv(bundle_variable, svc["default_bundle"])
    client = Client(service_url=svc["url"], token=svc["token"], ca_file=svc["broker_ca_file"])
    fid = client.register_function(_identity)
    assert client.get_function(fid)["function_uuid"] == fid
    assert client.get_result_amqp_url()["connection_url"].startswith("amqps://")

    monkeypatch.setenv("VOLLEY_SERVICE_URL", svc["url"])
    monkeypatch.setenv("VOLLEY_TOKEN", svc["token"])
    monkeypatch.setenv("VOLLEY_CA_FILE", svc["broker_ca_file"])
    result = CliRunner().invoke(main, ["tasks", "groups"], env=dict(os.environ))
    assert result.exit_code == 0, result.output


class ConnectProxy:
    """An HTTP proxy on loopback that tunnels CONNECT requests, and counts them."""

    def __init__(self) -> None:
        import socket
        import threading

        self.tunnels = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True, name="test-proxy").start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: Any) -> None:
        import socket
        import threading

        request = b""
        while b"\r\n\r\n" not in request:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            request += chunk
        host, port = request.split()[1].decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.tunnels += 1
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src: Any, dst: Any) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        self._server.close()


@pytest.mark.parametrize("signed_by", ["the CA file", "the default bundle"])
def test_behind_a_proxy_the_ca_file_is_trusted_besides_the_default_bundle_too(
    https_service: dict[str, Any], publicly_signed_service: dict[str, Any], no_default_trust: Path,
    monkeypatch: pytest.MonkeyPatch, signed_by: str,
) -> None:
    """Where the environment names a proxy, requests carries the REST calls: it must verify as
    the SDK's own connections do, trusting both (requests alone lets ``$REQUESTS_CA_BUNDLE``
    replace a session's ``verify=<file>``)."""
    from volley import Client

    svc = https_service if signed_by == "the CA file" else publicly_signed_service
    proxy = ConnectProxy()
    try:
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", publicly_signed_service["default_bundle"])
        client = Client(service_url=svc["url"], token=svc["token"], ca_file=https_service["ca_file"])
        fid = client.register_function(_identity)
        assert client.get_function(fid)["function_uuid"] == fid
        assert proxy.tunnels >= 1, "the REST calls did not go through the proxy"
    finally:
        proxy.close()


def test_behind_a_proxy_a_certificate_that_does_not_verify_is_named_at_once(
    https_service: dict[str, Any], no_default_trust: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests wraps the verification failure in errors of its own: still the clear error,
    not an outage waited out for $VOLLEY_SERVICE_RETRY_FOR."""
    from volley import Client

    proxy = ConnectProxy()
    try:
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("VOLLEY_SERVICE_RETRY_FOR", "600")
        with pytest.raises(ConnectionError, match=r"does not verify .*ca_file="):
            Client(service_url=https_service["url"], token=https_service["token"])
        assert proxy.tunnels == 1, "the refused certificate was tried again"
    finally:
        proxy.close()
