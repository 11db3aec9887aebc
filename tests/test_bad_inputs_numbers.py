"""Bad inputs: numbers parsed from untrusted text (issue 12, finding 2).

``str.isdigit()`` is true for "²", "٣" and hundreds of other Unicode characters: ``int()``
refuses some ("²" raises ValueError, which was a 500 on the service and an exception that
took the MPI endpoint down, again on every redelivery) and silently reads others as ASCII
digits ("٣" is 3).  Every length or count parsed from a request or a task accepts ASCII digits
only and answers anything else with a clear error naming the field.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from service_helpers import Service, task_payload
from volley.endpoint.engines.base import ResourceSpecError
from volley.endpoint.engines.mpi import check_mpi_spec
from volley.endpoint.engines.pools import ThreadPoolEngine
from volley.protocol.messages import decode
from volley.service.models import Function, Task
from volley.service.payloads import MalformedPayload, count_frames

pytest_plugins = ["service_fixtures"]

# int() raises on the first two, reads the others as 3, 1, 9 and 2
NOT_ASCII = ["²", "\u2075", "٣", "\uff11", "\U0001d7d7", "२"]  # ², ⁵, ٣, fullwidth 1, bold 9, २


# --- the service's framing check ------------------------------------------------------------------
@pytest.mark.parametrize("digit", NOT_ASCII)
def test_framing_length_must_be_ascii_digits(digit: str) -> None:
    with pytest.raises(MalformedPayload, match=r"frame 1: length .* is not"):
        count_frames(f"{digit}\n01\n")


@pytest.mark.parametrize("header", ["", "-3", "+4", " 4", "4 ", "0x4", "4_0", "1e1"])
def test_framing_length_must_be_plain_digits(header: str) -> None:
    with pytest.raises(MalformedPayload, match=r"frame 1: length .* is not"):
        count_frames(f"{header}\n01\n")


def test_framing_ascii_lengths_still_count() -> None:
    assert count_frames("4\n01\nx4\n01\ny") == 2
    assert count_frames(task_payload(1, k="é€😀")) == 2  # lengths count characters, not bytes


@pytest.mark.parametrize("digit", ["²", "٣"])
def test_function_with_unicode_digit_length_is_a_clear_4xx(svc: Service, digit: str) -> None:
    alice = svc.new_user()
    r = svc.client.post("/v3/functions", json={"function_name": "f", "function_code": f"{digit}\nab\n"},
                        headers=alice.headers)
    # 422 INVALID_REQUEST is how this service answers every malformed body (never a 500)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "INVALID_REQUEST"
    assert "function_code" in body["message"] and f"length {digit!r}" in body["message"]
    assert svc.count(Function, owner_id=alice.id) == 0


def test_submission_with_unicode_digit_length_is_a_clear_4xx(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    good = task_payload(1)
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", headers=alice.headers,
                        json={"tasks": {fid: [good, "²\nab\n" + good]}})
    assert r.status_code == 422, r.text
    assert "task 1 of function" in r.json()["message"] and "length '²'" in r.json()["message"]
    assert svc.count(Task, endpoint_id=ep) == 0


# --- the MPI engine's resource specification --------------------------------------------------------
@pytest.mark.parametrize("key", ["num_nodes", "ranks_per_node", "num_ranks"])
@pytest.mark.parametrize("value", [*NOT_ASCII, "1" * 5000, "", "-1", "1.0", "1e3"])
def test_mpi_counts_must_be_ascii_digits(key: str, value: str) -> None:
    spec: dict[str, Any] = {"num_nodes": 1, "ranks_per_node": 1, key: value}
    with pytest.raises(ResourceSpecError, match=f"resource_specification\\['{key}'\\]"):
        check_mpi_spec(spec, 1)


def test_mpi_counts_as_ascii_text_still_work() -> None:
    assert check_mpi_spec({"num_nodes": "1", "ranks_per_node": " 2 "}, 1) == {
        "num_nodes": 1, "ranks_per_node": 2, "num_ranks": 2, "launcher_options": ""}


@pytest.mark.parametrize("value", [10**4000, 2**31, True, [1], {"a": 1}])
def test_mpi_counts_of_other_types_and_sizes_are_refused(value: Any) -> None:
    with pytest.raises(ResourceSpecError, match=r"resource_specification\['num_ranks'\]"):
        check_mpi_spec({"num_nodes": 1, "ranks_per_node": 1, "num_ranks": value}, 1)


def test_mpi_counts_too_large_to_print_are_refused() -> None:
    # json.loads reads integers of up to 4300 digits; the product of two of them could not
    # even be formatted into the "inconsistent" error text (ValueError from int.__str__)
    with pytest.raises(ResourceSpecError, match=r"resource_specification\['num_nodes'\] must be at most"):
        check_mpi_spec({"num_nodes": 10**4000, "ranks_per_node": 10**4000, "num_ranks": 1}, 1)


class _BrokenCheck(ThreadPoolEngine):
    def check_resource_specification(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"num_nodes": int(spec["num_nodes"])}  # the bug finding 2 was: ValueError on "²"


def test_any_failure_of_a_spec_check_is_the_tasks_error_not_the_agents(tmp_path: Path) -> None:
    engine = _BrokenCheck(max_workers=1, endpoint_dir=str(tmp_path), endpoint_id=str(uuid.uuid4()))
    task_id = str(uuid.uuid4())
    result = decode(engine.submit(task_id, b"", {"num_nodes": "²"}, None).result(timeout=0))
    assert result.task_id == task_id and result.error_code == "InvalidResourceSpecification"
    assert "ValueError" in (result.data or "") and "'²'" in (result.data or "")
    assert engine.outstanding == 0
