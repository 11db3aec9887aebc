"""``Client``: the REST API (docs/service.md), against a Volley (or compatible) service.

Where to connect: ``service_url=``/``token=`` arguments, else ``VOLLEY_SERVICE_URL`` /
``VOLLEY_TOKEN`` / ``VOLLEY_CA_FILE``, else the configuration ``volley local up`` writes.
``authorizer=`` accepts any object with ``get_authorization_header()`` (e.g. a globus_sdk
authorizer), as upstream does.
"""

from __future__ import annotations

import inspect
import logging
import platform
import threading
import uuid
import warnings
from typing import Any

from volley.config import ClientConfig, load_client_config
from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.sdk.batch import Batch, as_uuid, create_user_runtime
from volley.sdk.http import ApiSession
from volley.serialize import ComputeSerializer
from volley.version import __version__

log = logging.getLogger(__name__)

_ENVIRONMENT_URLS = {
    "production": "https://compute.api.globus.org",
    "preview": "https://compute.api.preview.globus.org",
    "dev": "https://api.dev.funcx.org",
    "local": "http://localhost:5000",
}


class NoServiceConfigured(RuntimeError):
    pass


def configured_service_url(cfg: ClientConfig, service_url: str | None = None,
                           environment: str | None = None) -> str:
    """Where the SDK (and the ``volley tasks`` commands) reach the service: the argument, else
    the configuration (``VOLLEY_SERVICE_URL`` or ``volley local up``'s), else ``environment``."""
    url = service_url or cfg.service_url
    if url is None and environment:
        url = _ENVIRONMENT_URLS.get(environment)
    if url is None:
        raise NoServiceConfigured(
            "no Volley service configured: run `volley local up`, or set VOLLEY_SERVICE_URL "
            "and VOLLEY_TOKEN, or pass Client(service_url=..., token=...)"
        )
    return url


class Client:
    def __init__(
        self,
        environment: str | None = None,
        local_compute_services: bool = False,
        do_version_check: bool = True,
        *,
        code_serialization_strategy: Any = None,
        data_serialization_strategy: Any = None,
        app: Any = None,
        authorizer: Any = None,
        service_url: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        for name in kwargs:
            warnings.warn(
                f"The '{name}' argument is unrecognized. (It might have been removed in a previous release.)",
                UserWarning,
                stacklevel=2,
            )
        if app is not None and authorizer is not None:
            raise ValueError("'app' and 'authorizer' are mutually exclusive.")
        cfg: ClientConfig = load_client_config()
        if local_compute_services:
            environment = "local"
        url = configured_service_url(cfg, service_url, environment)
        self.web_service_address = url
        self.app = app
        self.authorizer = authorizer
        self.ca_file = ca_file or cfg.ca_file
        self._default_endpoint_id = cfg.endpoint_id
        # the CA that signs an https service's certificate is often private (a site's own, the
        # local stack's): REST trusts the CA file of AMQPS too, besides the default bundle (a
        # publicly signed service next to a privately signed broker)
        self._api = ApiSession(url, token=token or cfg.token, authorizer=authorizer,
                               verify=self.ca_file or True)
        self.fx_serializer = ComputeSerializer(
            strategy_code=code_serialization_strategy, strategy_data=data_serialization_strategy
        )
        # The user guide's Client.session_task_group_id: batches made by this client default to
        # it, so an Executor can later reload them with Executor(task_group_id=...).
        self.session_task_group_id = str(uuid.uuid4())
        # the broker user the service publishes results as (its answer's volley_result_sender):
        # result watchers refuse deliveries from any other
        self.result_sender: str | None = None
        self._task_status_table: dict[str, dict[str, Any]] = {}
        self._version_mismatch_already_warned_eps: set[Any] = set()
        self._request_lock = threading.Lock()
        if do_version_check:
            self.version_check()

    # --- version ----------------------------------------------------------------------------
    def version_check(self, endpoint_version: str | None = None) -> None:
        from volley.version import compare_versions

        data = self._api.get("/v2/version", params={"service": "all"})
        min_sdk = data.get("min_sdk_version")
        min_ep = data.get("min_ep_version")
        if min_sdk is None or min_ep is None:
            raise RuntimeError(f"the service's /v2/version answer lacks min versions: {data}")
        compare_versions(__version__, min_sdk, package_name="volley")
        if endpoint_version is not None:
            compare_versions(endpoint_version, min_ep, package_name="volley")

    def logout(self) -> None:
        """Bearer tokens are revoked on the service side; there is no login to end here."""
        log.warning(
            "Logout is not supported when Client is initialized with a token or authorizer "
            "(revoke the token on the service instead)"
        )

    def _log_version_mismatch(self, details: dict[str, Any] | None) -> None:
        """Warn once per endpoint whose workers run another Python or dill than this SDK."""
        if not details:
            return
        ep = details.get("endpoint_id")
        if ep in self._version_mismatch_already_warned_eps:
            return
        import dill

        local_py = platform.python_version()
        remote_py = str(details.get("python_version") or "unknown")
        remote_dill = str(details.get("dill_version") or "unknown")
        if remote_py == local_py and remote_dill == dill.__version__:
            return
        self._version_mismatch_already_warned_eps.add(ep)
        warnings.warn(
            f"\nEnvironment differences detected between local SDK and endpoint {ep} workers:\n"
            f"\tSDK: Python {local_py}/Dill {dill.__version__}\n"
            f"\tWorkers: Python {remote_py}/Dill {remote_dill}\n"
            "This may cause serialization issues.  See the user guide's section on avoiding "
            "serialization errors.",
            UserWarning,
            stacklevel=2,
        )

    def get_worker_hardware_details(self, endpoint_id: Any) -> str:
        """Submit a hardware report task to ``endpoint_id``; returns its task id."""
        from volley.sdk.hardware_report import run_hardware_report

        fid = self.register_function(run_hardware_report)
        return self.run("Compute Endpoint worker", endpoint_id=endpoint_id, function_id=fid)

    # --- tasks ------------------------------------------------------------------------------
    def _status(self, task_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        from volley.errors import TaskExecutionFailed

        status = str(doc.get("status", "unknown")).lower()
        out: dict[str, Any] = {"pending": status not in ("success", "failed"), "status": status}
        if "details" in doc:
            out["details"] = doc["details"]
        if out["pending"]:
            return out
        if doc.get("task_id") != task_id:
            raise ValueError(f"Task {task_id} returned invalid response: ({doc})")
        self._log_version_mismatch(doc.get("details"))
        completion_t = doc.get("completion_t", "unknown")
        if "result" in doc:
            out["result"] = self.fx_serializer.deserialize(doc["result"])
            out["completion_t"] = completion_t
        elif "exception" in doc:
            raise TaskExecutionFailed(doc["exception"], completion_t)
        else:  # the service answers every completed task with one or the other
            raise ValueError(f"Task {task_id} is {status} but the answer has no result or exception: ({doc})")
        self._task_status_table[task_id] = out
        return out

    def get_task(self, task_id: Any) -> dict[str, Any]:
        task_id = str(task_id)
        if task_id in self._task_status_table:
            return self._task_status_table[task_id]
        return self._status(task_id, self._api.get(f"/v2/tasks/{task_id}"))

    def cancel_task(self, task_id: Any, *, force: bool = False) -> dict[str, str]:
        """Cancel a task, or a list of tasks (Volley's own; upstream cannot cancel).  Returns
        each task id's outcome: ``cancelled`` (it never runs), ``requested`` (its endpoint was
        told: the task resolves as cancelled if it had not started, else with its result) or
        ``finished``.  ``force=True`` also stops a running task, on endpoints whose engine can
        (ProcessPoolEngine; others answer CANCEL_NOT_SUPPORTED).  Ids that are not the caller's
        are absent."""
        if isinstance(task_id, list | tuple | set):
            r = self._api.post("/v2/tasks/cancel", json={"task_ids": [str(t) for t in task_id], "force": force})
        else:
            r = self._api.post(f"/v2/tasks/{task_id}/cancel", params={"force": str(bool(force)).lower()})
        return dict(r.get("results", {}))

    def get_result(self, task_id: Any) -> Any:
        from volley.errors import TaskPending

        task = self.get_task(task_id)
        if task["pending"]:
            raise TaskPending(task["status"])
        return task["result"]

    def get_batch_result(self, task_id_list: list[Any]) -> dict[str, Any]:
        ids = [str(t) for t in task_id_list]
        out = {t: self._task_status_table[t] for t in ids if t in self._task_status_table}
        todo = [t for t in ids if t not in out]
        if todo:
            r = self._api.post("/v2/batch_status", json={"task_ids": todo})
            for tid, doc in r.get("results", {}).items():
                try:
                    out[tid] = self._status(tid, doc)
                except Exception:  # upstream drops failed tasks from this answer
                    continue
        return out

    def create_batch(
        self,
        task_group_id: Any = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        create_websocket_queue: bool = False,
        result_serializers: list[str] | None = None,
        max_retries_on_system_failure: int | None = None,
    ) -> Batch:
        return Batch(
            task_group_id=task_group_id or self.session_task_group_id,
            resource_specification=resource_specification,
            user_endpoint_config=user_endpoint_config,
            request_queue=create_websocket_queue,
            serializer=self.fx_serializer,
            user_runtime=create_user_runtime(),
            result_serializers=result_serializers,
            max_retries_on_system_failure=max_retries_on_system_failure,
        )

    def batch_run(self, endpoint_id: Any, batch: Batch | None = None) -> dict[str, Any]:
        if batch is None and isinstance(endpoint_id, Batch):
            # the user guide's batch_run(batch), with the endpoint given to batch.add()
            batch, endpoint_id = endpoint_id, endpoint_id.endpoint_id
            if endpoint_id is None:
                raise ValueError("batch_run(batch) needs the endpoint: call batch_run(endpoint_id, batch)")
        if batch is None:
            raise TypeError("batch_run() missing required argument: 'batch'")
        if not batch:
            raise ValueError("No tasks specified for batch run")
        # A request id made here, once per call: the service answers a repeat of it with the
        # same task ids and queues nothing new, so the request may be sent again when its
        # answer was lost (a restart, a reset connection) without running anything twice.
        body = batch.prepare()
        body["request_id"] = str(uuid.uuid4())
        return self._api.post(f"/v3/endpoints/{endpoint_id}/submit", json=body, idempotent=True)

    def run(self, *args: Any, endpoint_id: Any, function_id: Any, **kwargs: Any) -> str:
        batch = self.create_batch()
        batch.add(function_id, args, kwargs)
        r = self.batch_run(endpoint_id, batch)
        return r["tasks"][str(function_id)][0]

    # --- functions ----------------------------------------------------------------------------
    def register_function(self, function: Any, description: str | None = None, metadata: Any = None,
                          public: bool = False, group: Any = None, ha_endpoint_id: Any = None) -> str:
        if metadata is not None:
            raise ValueError(
                "`function` specified; cannot also specify `function_code`, `function_name`, or `metadata`"
            )
        ser = self.fx_serializer
        code = ser.pack_buffers([ser.serialize(function)])
        if len(code) > MAX_PAYLOAD_SIZE:
            raise ValueError(
                f"Serialized function of {len(code)} characters exceeds the "
                f"{MAX_PAYLOAD_SIZE // (1024 * 1024)} MiB limit; nothing was sent. Large data captured "
                "by the function (globals, closures) should be passed by reference instead."
            )
        body: dict[str, Any] = {
            "function_name": getattr(function, "__name__", type(function).__name__),
            "function_code": code,
            "serialized": True,
            "meta": {
                "python_version": platform.python_version(),
                "sdk_version": __version__,
                "serde_identifier": ser.code_serializer.identifier.strip(),
            },
        }
        description = description if description is not None else inspect.getdoc(function)
        return self._post_function(body, description, public, group, ha_endpoint_id)

    def register_source_code(self, source: str, function_name: str, description: str | None = None,
                             metadata: dict[str, Any] | None = None, public: bool = False,
                             group: Any = None, ha_endpoint_id: Any = None) -> str:
        body: dict[str, Any] = {
            "function_name": function_name,
            "function_code": source,
            "serialized": False,
            "meta": metadata or {"python_version": platform.python_version(), "sdk_version": __version__},
        }
        return self._post_function(body, description, public, group, ha_endpoint_id)

    def _post_function(self, body: dict[str, Any], description: str | None, public: bool,
                       group: Any, ha_endpoint_id: Any) -> str:
        """The optional fields of a registration, as upstream sends them, then the POST."""
        if ha_endpoint_id and (public or group):
            raise ValueError("`ha_endpoint_id` is mutually exclusive with `public` and `group`")
        if description:
            body["description"] = description
        if public:
            body["public"] = True
        if group:
            body["group"] = str(group)
        if ha_endpoint_id:
            body["ha_endpoint_id"] = str(ha_endpoint_id)
        return self._api.post("/v3/functions", json=body)["function_uuid"]

    def get_function(self, function_id: Any) -> dict[str, Any]:
        return self._api.get(f"/v2/functions/{function_id}")

    def delete_function(self, function_id: Any) -> Any:
        return self._api.delete(f"/v2/functions/{function_id}")

    # --- endpoints ----------------------------------------------------------------------------
    def register_endpoint(self, name: str, endpoint_id: Any = None, metadata: dict[str, Any] | None = None,
                          multi_user: bool | None = None, display_name: str | None = None,
                          allowed_functions: list[Any] | None = None, auth_policy: Any = None,
                          subscription_id: Any = None, public: bool | None = None,
                          high_assurance: bool | None = None, admins: list[Any] | None = None) -> dict[str, Any]:
        self.version_check()
        body: dict[str, Any] = {"endpoint_name": name}
        if display_name is not None:
            body["display_name"] = display_name
        if multi_user:
            body["multi_user"] = multi_user
        if metadata:
            body["metadata"] = metadata
        if allowed_functions:
            body["allowed_functions"] = [str(f) for f in allowed_functions]
        if auth_policy:
            body["authentication_policy"] = str(auth_policy)
        if subscription_id:
            body["subscription_uuid"] = str(subscription_id)
        if public is not None:
            body["public"] = public
        if high_assurance is not None:
            body["high_assurance"] = high_assurance
        if admins:
            body["admins"] = [str(a) for a in admins]
        if endpoint_id:
            return self._api.put(f"/v3/endpoints/{as_uuid(endpoint_id)}", json=body)
        return self._api.post("/v3/endpoints", json=body)

    def get_result_amqp_url(self, *, retry_for: float | None = None) -> dict[str, Any]:
        """``retry_for``: how long to wait out a service that is down (seconds; default the
        session's, ``$VOLLEY_SERVICE_RETRY_FOR``); the result watcher passes 0 and waits with
        its own reconnect policy, which also knows when to stop."""
        answer = self._api.get("/v2/get_amqp_result_connection_url", retry_for=retry_for)
        sender = answer.get("volley_result_sender") if isinstance(answer, dict) else None
        if isinstance(sender, str) and sender:
            self.result_sender = sender
        return answer

    def get_endpoint_status(self, endpoint_uuid: Any) -> dict[str, Any]:
        return self._api.get(f"/v2/endpoints/{endpoint_uuid}/status")

    def get_endpoint_metadata(self, endpoint_uuid: Any) -> dict[str, Any]:
        return self._api.get(f"/v2/endpoints/{endpoint_uuid}")

    def get_endpoints(self, role: str | None = None) -> list[dict[str, Any]]:
        return self._api.get("/v2/endpoints", params={"role": role})

    def get_allowed_functions(self, endpoint_id: Any) -> dict[str, Any]:
        return self._api.get(f"/v3/endpoints/{endpoint_id}/allowed_functions")

    def stop_endpoint(self, endpoint_id: Any) -> Any:
        return self._api.post(f"/v3/endpoints/{endpoint_id}/lock")

    def delete_endpoint(self, endpoint_id: Any) -> Any:
        return self._api.delete(f"/v2/endpoints/{endpoint_id}")
