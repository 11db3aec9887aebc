"""Batch: task-group validation, add() checks and messages, prepare() layout (the submit body of docs/service.md)."""

from __future__ import annotations

import uuid

import pytest

from volley.sdk.batch import Batch, create_user_runtime
from volley.serialize import ComputeSerializer

FN = str(uuid.uuid4())
EP = str(uuid.uuid4())


def test_task_group_id_is_parsed() -> None:
    tg = uuid.uuid4()
    assert Batch(str(tg)).task_group_id == tg
    assert Batch(tg).task_group_id == tg
    assert Batch(None).task_group_id is None
    assert Batch("").task_group_id is None
    with pytest.raises(ValueError):
        Batch("not-a-uuid")


@pytest.mark.parametrize("args", [1, "x", {"a": 1}, object()])
def test_add_rejects_non_sequence_args(args: object) -> None:
    with pytest.raises(TypeError, match="args: expected `tuple`, got: "):
        Batch(None).add(FN, args=args)


def test_add_rejects_bad_kwargs() -> None:
    with pytest.raises(TypeError, match="kwargs: expected dict, got: list"):
        Batch(None).add(FN, kwargs=[1])
    with pytest.raises(TypeError, match="kwargs: expected kwargs with `str` keys"):
        Batch(None).add(FN, kwargs={1: 2})


def test_add_serializes_args_and_kwargs_as_framed_buffers() -> None:
    b = Batch(None)
    b.add(FN, (1, 2), {"a": 1})
    ser = ComputeSerializer()
    (payload,) = b.tasks[uuid.UUID(FN)]
    args, kwargs = (ser.deserialize(x) for x in ser.unpack_buffers(payload))
    assert args == (1, 2) and kwargs == {"a": 1}
    # the exact bytes upstream produces for the same values
    assert payload == "28\n00\ngASVBwAAAAAAAABLAUsChpQu\n32\n00\ngASVCgAAAAAAAAB9lIwBYZRLAXMu\n"


def test_len_bool_and_prepare_layout() -> None:
    tg = uuid.uuid4()
    rt = create_user_runtime()
    b = Batch(tg, resource_specification={"num_nodes": 2}, user_endpoint_config={"k": "v"},
              request_queue=True, user_runtime=rt, result_serializers=["x.y.Z"])
    assert len(b) == 0 and bool(b)  # an empty batch is truthy, as upstream
    b.add(FN, (1,))
    b.add(FN, (2,))
    assert len(b) == 2
    data = b.prepare()
    assert list(data) == ["create_queue", "tasks", "task_group_id", "resource_specification",
                          "user_endpoint_config", "user_runtime", "result_serializers",
                          "volley_result_batches"]  # Volley's own, last
    assert data["create_queue"] is True and data["task_group_id"] == str(tg)
    assert len(data["tasks"][FN]) == 2
    assert data["user_runtime"]["python"]["version_tuple"][0] == 3


def test_prepare_omits_empty_optionals() -> None:
    b = Batch(None)
    b.add(FN)
    assert list(b.prepare()) == ["create_queue", "tasks"]


def test_guide_form_with_endpoint_id() -> None:
    b = Batch(None)
    b.add(FN, EP, args=(1,))
    assert b.endpoint_id == uuid.UUID(EP)
    with pytest.raises(ValueError, match="a Batch goes to one endpoint"):
        b.add(FN, str(uuid.uuid4()), args=(2,))


def test_oversize_payload_is_refused_before_sending() -> None:
    b = Batch(None)
    with pytest.raises(ValueError, match="exceeds the 10 MiB limit; nothing was sent"):
        b.add(FN, ("x" * (11 * 1024 * 1024),))
    assert len(b) == 0
