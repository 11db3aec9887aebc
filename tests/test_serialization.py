"""Behaviour of ``volley.serialize``: strategies, framing, ComputeSerializer, validation and
allowlists, with upstream's payload vectors and error texts (the wire compatibility of
docs/protocol.md, "Framing").

This module must stay named ``test_serialization``: the legacy PickleCode vector below pickles
``test_serialization.foo`` by reference.
"""

from __future__ import annotations

import codecs
import inspect
import json
import logging
import random
import subprocess
import sys
import textwrap
import typing as t
from collections import OrderedDict

import dill
import pytest
from hypothesis import given
from hypothesis import strategies as st

import volley.serialize as serialize_pkg
from volley.errors import DeserializationError, SerdeError, SerializationError
from volley.serialize import concretes, facade
from volley.serialize.base import (
    IDENTIFIER_LENGTH,
    ComboSerializationStrategy,
    SerializationStrategy,
)
from volley.serialize.concretes import (
    DEFAULT_STRATEGY_CODE,
    DEFAULT_STRATEGY_DATA,
    SELECTABLE_STRATEGIES,
    AllCodeStrategies,
    AllDataStrategies,
    CombinedCode,
    DillCode,
    DillCodeSource,
    DillCodeTextInspect,
    DillDataBase64,
    JSONData,
    PickleCode,
    PureSourceDill,
    PureSourceTextInspect,
)
from volley.serialize.facade import (
    AllowlistWildcard,
    ComputeSerializer,
    ValidatedStrategylike,
    parse_allowlist,
    validate_strategylike,
)
from volley.serialize.utils import pack_buffers, unpack_buffers

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

CODE_STRATEGIES = [s for s in SELECTABLE_STRATEGIES if s.for_code]
DATA_STRATEGIES = [s for s in SELECTABLE_STRATEGIES if not s.for_code]


def foo(x, y=3):
    return x * y


def double_first_if(func):
    """Decorator: doubles the first argument when the third is truthy."""

    def wrapper(a, b, c):
        return func(a * 2, b, c) if c else func(a, b, c)

    return wrapper


@double_first_if
def decorated_add(a, b, c):
    return a + b


def make_bar():
    def bar(a, b=5):
        return a * 5

    return bar


def assert_is_foo(fn: t.Callable) -> None:
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params] == ["x", "y"]
    assert params[1].default == 3
    n = random.randint(1, 100)
    assert fn(n) == foo(n)


def assert_is_bar(fn: t.Callable) -> None:
    params = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in params] == ["a", "b"]
    assert params[1].default == 5
    assert fn(2) == 10


@pytest.fixture
def unknown_strategy():
    class UnknownStrategy(SerializationStrategy):
        identifier = "aa\n"
        for_code = True

        def serialize(self, data):
            return self.identifier + "x"

        def deserialize(self, payload):
            return self.chomp(payload)

    yield UnknownStrategy
    SerializationStrategy._CACHE.pop(UnknownStrategy.identifier)


def _raise(message: str):
    def raiser(self, *args, **kwargs):
        raise Exception(message)

    return raiser


# -- payload formats and vectors --------------------------------------------------------------


def test_public_names_mirror_upstream():
    assert serialize_pkg.__all__ == [
        "ComputeSerializer",
        "AllowlistWildcard",
        "ComboSerializationStrategy",
        "SerializationStrategy",
        "DEFAULT_STRATEGY_CODE",
        "DEFAULT_STRATEGY_DATA",
        "AllCodeStrategies",
        "AllDataStrategies",
        "CombinedCode",
        "DillCode",
        "DillCodeSource",
        "DillCodeTextInspect",
        "PureSourceDill",
        "PureSourceTextInspect",
        "DillDataBase64",
        "JSONData",
    ]
    for name in serialize_pkg.__all__:
        assert getattr(serialize_pkg, name) is not None
    assert not hasattr(serialize_pkg, "PickleCode")


@pytest.mark.parametrize(
    "cls, identifier, for_code",
    [
        (DillDataBase64, "00\n", False),
        (DillCode, "01\n", True),
        (PickleCode, "02\n", True),
        (DillCodeTextInspect, "03\n", True),
        (DillCodeSource, "04\n", True),
        (CombinedCode, "10\n", True),
        (JSONData, "11\n", False),
        (AllCodeStrategies, "12\n", True),
        (AllDataStrategies, "13\n", False),
        (PureSourceTextInspect, "st\n", True),
        (PureSourceDill, "sd\n", True),
    ],
)
def test_identifiers_and_kinds(cls, identifier, for_code):
    assert cls.identifier == identifier
    assert cls.for_code is for_code
    assert type(SerializationStrategy.get_cached_by_id(identifier)) is cls
    assert (
        SerializationStrategy.get_cached_by_class(cls) is SerializationStrategy._CACHE[identifier]
    )


def test_selectable_strategies_and_defaults():
    assert SELECTABLE_STRATEGIES == [
        DillDataBase64,
        JSONData,
        DillCodeSource,
        DillCodeTextInspect,
        DillCode,
        PureSourceTextInspect,
        PureSourceDill,
        CombinedCode,
        AllCodeStrategies,
        AllDataStrategies,
    ]
    assert concretes.SELECTABLE_CODE_STRATEGIES == CODE_STRATEGIES
    assert concretes.SELECTABLE_DATA_STRATEGIES == DATA_STRATEGIES
    assert DEFAULT_STRATEGY_CODE is SerializationStrategy.get_cached_by_class(DillCode)
    assert DEFAULT_STRATEGY_DATA is SerializationStrategy.get_cached_by_class(DillDataBase64)
    assert serialize_pkg.DEFAULT_STRATEGY_CODE is DEFAULT_STRATEGY_CODE


@pytest.mark.parametrize(
    "strategy, value, expected",
    [
        (DillDataBase64, (1, 2), "00\ngASVBwAAAAAAAABLAUsChpQu\n"),
        (DillDataBase64, {"a": 1}, "00\ngASVCgAAAAAAAAB9lIwBYZRLAXMu\n"),
        (JSONData, (1, "x"), '11\n[1, "x"]'),
        (JSONData, {"foo": "bar"}, '11\n{"foo": "bar"}'),
        (PureSourceTextInspect, foo, "st\nfoo:def foo(x, y=3):\n    return x * y\n"),
        (PureSourceDill, foo, "sd\nfoo:def foo(x, y=3):\n    return x * y\n"),
        (AllDataStrategies, "hi", '13\n7\n11\n"hi"28\n00\ngASVBgAAAAAAAACMAmhplC4=\n'),
    ],
)
def test_payload_vectors(strategy, value, expected):
    instance = strategy()
    assert instance.serialize(value) == expected
    round_tripped = instance.deserialize(expected)
    if callable(value):
        assert_is_foo(round_tripped)
    elif strategy is JSONData:
        assert round_tripped == json.loads(json.dumps(value))
    else:
        assert round_tripped == value


def test_dill_data_reads_python37_payload():
    args, kwargs = DillDataBase64().deserialize("00\ngANdcQBLAmF9cQFYAQAAAHlxAksKc4ZxAy4=\n")
    assert args == [2]
    assert kwargs == {"y": 10}


def test_dill_data_round_trip_and_header():
    strategy = DillDataBase64()
    payload = strategy.serialize(([2], {"y": 10}))
    assert payload.split("\n")[0] == "00"
    assert strategy.deserialize(payload) == ([2], {"y": 10})


def test_dill_base64_is_mime_wrapped():
    value = "x" * 500
    payload = DillDataBase64().serialize(value)
    body = payload[IDENTIFIER_LENGTH:]
    assert body == codecs.encode(dill.dumps(value), "base64").decode()
    lines = body.split("\n")
    assert lines[-1] == ""
    assert all(len(line) == 76 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 76


def test_dill_code_uses_pickle_protocol_of_dill():
    payload = DillCode().serialize(foo)
    assert payload.startswith("01\ngASV")
    assert payload[IDENTIFIER_LENGTH:] == codecs.encode(dill.dumps(foo), "base64").decode()
    assert_is_foo(DillCode().deserialize(payload))


def test_json_data_round_trip():
    data = {"foo": "bar", "n": [1, 2.5, None, True]}
    assert JSONData().deserialize(JSONData().serialize(data)) == data


def test_pickle_code_reads_but_never_writes():
    with pytest.raises(NotImplementedError, match="Pickle serialization is no longer supported"):
        PickleCode().serialize(foo)
    # Pickled on Python 3.7 by reference to ``test_serialization.foo``.
    assert PickleCode().deserialize("02\ngANjdGVzdF9zZXJpYWxpemF0aW9uCmZvbwpxAC4=") is foo


@pytest.mark.parametrize(
    "strategy",
    [DillCode, DillCodeSource, DillCodeTextInspect, PureSourceDill, PureSourceTextInspect],
)
def test_code_strategy_round_trips_module_function(strategy):
    instance = strategy()
    assert_is_foo(instance.deserialize(instance.serialize(foo)))


@pytest.mark.parametrize("strategy", [DillCode, DillCodeSource, PureSourceDill])
def test_code_strategy_round_trips_nested_function(strategy):
    # dill's source extraction dedents nested functions; inspect's does not.
    instance = strategy()
    assert_is_bar(instance.deserialize(instance.serialize(make_bar())))


def test_dill_code_handles_decorated_functions():
    restored = DillCode().deserialize(DillCode().serialize(decorated_add))
    assert restored(3, 4, True) == 10
    assert restored(3, 4, False) == 7


def test_compute_serializer_round_trips_functions():
    serializer = ComputeSerializer()
    assert_is_foo(serializer.deserialize(serializer.serialize(foo)))
    assert_is_bar(serializer.deserialize(serializer.serialize(make_bar())))


@pytest.mark.parametrize(
    "strategy, payload",
    [(DillDataBase64, '11\n"x"'), (JSONData, "00\nabc"), (PureSourceDill, "st\nfoo:pass")],
)
def test_chomp_rejects_foreign_header(strategy, payload):
    with pytest.raises(DeserializationError) as exc_info:
        strategy().deserialize(payload)
    assert str(exc_info.value) == (
        f"Deserialization failed: Buffer does not start with identifier:{strategy.identifier}"
    )


def test_plain_source_without_separator_is_a_deserialization_error():
    with pytest.raises(DeserializationError):
        PureSourceTextInspect().deserialize("st\nno separator here")


# -- the plain-data fast path must not change a single byte ---------------------------------

_plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
_plain_data = st.recursive(
    _plain_scalars,
    lambda children: st.one_of(
        st.lists(children),
        st.lists(children).map(tuple),
        st.dictionaries(st.one_of(st.text(), st.integers()), children),
        st.frozensets(st.one_of(st.integers(), st.text())),
        st.sets(st.one_of(st.integers(), st.text())),
    ),
    max_leaves=40,
)


@given(_plain_data)
def test_dill_data_bytes_equal_dill_for_plain_data(value):
    payload = DillDataBase64().serialize(value)
    assert payload == "00\n" + codecs.encode(dill.dumps(value), "base64").decode()


def test_dill_data_fast_path_keeps_shared_references_and_large_values():
    shared_text, shared_list = "shared" * 10, [1, 2]
    values = [
        ((shared_text, shared_text, shared_list, shared_list), {"x": shared_list}),
        (("x" * 200_000, b"y" * 70_000), {"k": list(range(3000))}),
        (float("nan"), -0.0, 2**100),
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ]
    for value in values:
        assert (
            DillDataBase64().serialize(value)[3:]
            == codecs.encode(dill.dumps(value), "base64").decode()
        )


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_dill_data_follows_dill_protocol_setting(protocol, monkeypatch):
    monkeypatch.setitem(dill.settings, "protocol", protocol)
    value = ((1, b"ab", b"", {1, 2}, frozenset({"x"})), {"k": [None, 2**80, 1.5]})
    payload = DillDataBase64().serialize(value)
    assert payload[3:] == codecs.encode(dill.dumps(value), "base64").decode()
    assert DillDataBase64().deserialize(payload) == value


def test_dill_data_fast_path_leaves_module_namespaces_to_dill():
    import types

    module = types.ModuleType("volley_test_fake_module")
    sys.modules[module.__name__] = module
    try:
        payload = DillDataBase64().serialize(module.__dict__)
        assert payload[3:] == codecs.encode(dill.dumps(module.__dict__), "base64").decode()
        assert DillDataBase64().deserialize(payload) is module.__dict__
    finally:
        del sys.modules[module.__name__]


def test_dill_data_handles_non_plain_values():
    value = (OrderedDict(a=1), {1 + 2j}, range(3))
    assert DillDataBase64().deserialize(DillDataBase64().serialize(value)) == value


# -- combo strategies -------------------------------------------------------------------------

COMBOS = [(AllCodeStrategies, foo), (AllDataStrategies, "data")]


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_serialize_all_fail(combo, data, monkeypatch):
    for sub in combo.strategies:
        monkeypatch.setattr(sub, "serialize", _raise("Bad boy!"))
    with pytest.raises(SerializationError) as exc_info:
        combo().serialize(data)
    listed = "".join(f"\n* {sub.__name__}: Bad boy!" for sub in combo.strategies)
    assert str(exc_info.value) == f"Serialization failed: \n\nSerialization errors:{listed}"


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_serialize_skips_and_logs_failures(combo, data, monkeypatch, caplog):
    failing = random.choice(combo.strategies)
    monkeypatch.setattr(failing, "serialize", _raise("Bad boy!"))
    with caplog.at_level(logging.DEBUG, logger="volley.serialize.base"):
        payload = combo().serialize(data)
    assert f"Failed to serialize with {failing.__name__}: Bad boy!" in caplog.text
    assert len(unpack_buffers(combo().chomp(payload))) == len(combo.strategies) - 1


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_deserialize_all_fail(combo, data, monkeypatch):
    payload = combo().serialize(data)
    for sub in combo.strategies:
        monkeypatch.setattr(sub, "deserialize", _raise("Bad boy!"))
    with pytest.raises(DeserializationError) as exc_info:
        combo().deserialize(payload)
    listed = "".join(f"\n* {sub.__name__}: Bad boy!" for sub in combo.strategies)
    assert str(exc_info.value) == f"Deserialization failed: \n\nDeserialization errors:{listed}"


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_deserialize_falls_through_and_logs(combo, data, monkeypatch, caplog):
    payload = combo().serialize(data)
    first = combo.strategies[0]
    monkeypatch.setattr(first, "deserialize", _raise("Bad boy!"))
    with caplog.at_level(logging.DEBUG, logger="volley.serialize.base"):
        result = combo().deserialize(payload)
    assert f"Failed to deserialize with {first.__name__}: Bad boy!" in caplog.text
    if callable(data):
        assert_is_foo(result)
    else:
        assert result == data


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_deserialize_invalid_identifier(combo, data, monkeypatch):
    for sub in combo.strategies:
        monkeypatch.setattr(sub, "serialize", lambda self, d: "BAD\n")
    payload = combo().serialize(data)
    with pytest.raises(DeserializationError) as exc_info:
        combo().deserialize(payload)
    listed = "\n* ".join(["Invalid strategy identifier: BAD"] * len(combo.strategies))
    assert str(exc_info.value) == f"Deserialization failed: \n\nDeserialization errors:\n* {listed}"


@pytest.mark.parametrize("combo, data", COMBOS)
def test_combo_deserialize_malformed_buffer(combo, data, monkeypatch):
    bad = "NO_NEWLINE" + "a" * 100
    monkeypatch.setattr(combo.strategies[0], "serialize", lambda self, d: bad)
    payload = combo().serialize(data)
    for sub in combo.strategies[1:]:
        monkeypatch.setattr(sub, "deserialize", _raise("nope"))
    with pytest.raises(DeserializationError) as exc_info:
        combo().deserialize(payload)
    assert f"Malformed data (no newline separator): {bad[:50]}...\n" in str(exc_info.value)


def test_combo_deserialize_accepts_any_registered_identifier():
    inner = JSONData().serialize([1, 2])
    assert AllCodeStrategies().deserialize("12\n" + pack_buffers([inner])) == [1, 2]


def test_combo_empty_payload_is_unknown_error():
    with pytest.raises(DeserializationError) as exc_info:
        AllDataStrategies().deserialize("13\n")
    assert str(exc_info.value) == "Deserialization failed: \n\nDeserialization errors:\n* unknown"


def test_all_code_strategies_carries_every_sub_payload():
    payload = AllCodeStrategies().serialize(foo)
    buffers = unpack_buffers(AllCodeStrategies().chomp(payload))
    assert [b[:3] for b in buffers] == ["st\n", "sd\n", "01\n"]
    assert_is_foo(AllCodeStrategies().deserialize(payload))


@pytest.mark.parametrize("sub", list(AllCodeStrategies.strategies))
def test_all_code_strategies_each_sub_strategy(sub, monkeypatch):
    monkeypatch.setattr(AllCodeStrategies, "strategies", [sub])
    combo = AllCodeStrategies()
    assert_is_foo(combo.deserialize(combo.serialize(foo)))


def test_all_data_strategies_carries_every_sub_payload():
    payload = AllDataStrategies().serialize("data")
    assert len(unpack_buffers(AllDataStrategies().chomp(payload))) == 2
    assert AllDataStrategies().deserialize(payload) == "data"


@pytest.mark.parametrize("sub", list(AllDataStrategies.strategies))
def test_all_data_strategies_each_sub_strategy(sub, monkeypatch):
    monkeypatch.setattr(AllDataStrategies, "strategies", [sub])
    combo = AllDataStrategies()
    assert combo.deserialize(combo.serialize("data")) == "data"


def test_all_data_strategies_without_json_falls_back_to_dill():
    value = {1, 2}
    payload = AllDataStrategies().serialize(value)
    assert [b[:3] for b in unpack_buffers(payload[3:])] == ["00\n"]
    assert AllDataStrategies().deserialize(payload) == value


def test_combo_intermediate_base_is_not_registered():
    assert ComboSerializationStrategy not in [
        type(s) for s in SerializationStrategy._CACHE.values()
    ]


# -- CombinedCode (legacy) --------------------------------------------------------------------


@pytest.mark.parametrize("sub", [DillCodeSource, DillCode, DillCodeTextInspect])
def test_combined_code_each_sub_strategy(sub, monkeypatch):
    monkeypatch.setattr(CombinedCode, "_chunk_strategies", OrderedDict([(sub.identifier, sub)]))
    combined = CombinedCode()
    payload = combined.serialize(foo)
    assert payload.startswith("10\n" + sub.identifier + ":")
    assert_is_foo(combined.deserialize(payload))


@pytest.mark.parametrize("sub", [PureSourceDill, PureSourceTextInspect])
def test_combined_code_cannot_read_back_plain_source(sub, monkeypatch):
    # Known reference behaviour: the plain-source bodies contain colons, which CombinedCode
    # also uses as its separator.
    monkeypatch.setattr(CombinedCode, "_chunk_strategies", OrderedDict([(sub.identifier, sub)]))
    payload = CombinedCode().serialize(foo)
    assert payload == "10\n" + sub.identifier + ":" + sub().serialize(foo)[3:]
    with pytest.raises(DeserializationError):
        CombinedCode().deserialize(payload)


def test_combined_code_layout():
    payload = CombinedCode().serialize(foo)
    pairs = CombinedCode().get_multiple_payloads(payload)
    assert [h for h, _ in pairs[:3]] == ["04\n", "01\n", "03\n"]
    body = DillCode().serialize(foo)[3:]
    assert pairs[1] == ("01\n", body)


def test_combined_code_builtin_only_dill_works():
    with pytest.raises(TypeError):
        DillCodeSource().serialize(max)
    combined = CombinedCode()
    assert combined.deserialize(combined.serialize(max))(1, 4) == 4


def test_combined_code_all_fail(monkeypatch):
    monkeypatch.setattr(DillCode, "serialize", _raise("block this"))
    with pytest.raises(SerializationError) as exc_info:
        CombinedCode().serialize(max)
    assert str(exc_info.value) == "Serialization failed: No serialization methods were successful"


def test_combined_code_decorated_and_variation():
    combined = CombinedCode()
    payload = combined.serialize(decorated_add)

    from_source = DillCodeSource().deserialize(DillCodeSource().serialize(decorated_add))
    with pytest.raises(NameError):
        from_source(3, 5, 2)  # the decorator is not in the exec'd namespace

    first = combined.deserialize(payload)  # DillCodeSource comes first
    with pytest.raises(NameError):
        first(3, 5, 2)

    second = combined.deserialize(payload, variation=2)  # DillCode
    assert second(4, 6, 3) == 14
    assert second is not first


def test_combined_code_deserialize_errors(monkeypatch):
    with pytest.raises(DeserializationError) as exc_info:
        CombinedCode().deserialize("10\nzz\n:abc")
    assert str(exc_info.value) == "Deserialization failed: Invalid serialization id zz\n"

    monkeypatch.setattr(DillCodeSource, "deserialize", _raise("nope"))
    monkeypatch.setattr(DillCode, "deserialize", _raise("nope"))
    payload = "10\n04\n:xx:01\n:yy"
    with pytest.raises(DeserializationError) as exc_info:
        CombinedCode().deserialize(payload)
    assert str(exc_info.value) == "Deserialization failed: Deserialization failed after 2 tries"

    with pytest.raises(DeserializationError) as exc_info:
        CombinedCode().deserialize(payload, variation=2)
    assert str(exc_info.value) == "Deserialization failed: Failed to deserialize using variation #2"


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "buffers, packed",
    [
        ([], ""),
        (["hello"], "5\nhello"),
        (["hello", "world"], "5\nhello5\nworld"),
        ([""], "0\n"),
        (["hello\nworld"], "11\nhello\nworld"),
        (["5\nhello"], "7\n5\nhello"),
        (["é€😀"], "3\né€😀"),  # characters, not bytes
    ],
)
def test_framing_vectors(buffers, packed):
    assert pack_buffers(buffers) == packed
    assert unpack_buffers(packed) == buffers
    assert ComputeSerializer.pack_buffers(buffers) == packed
    assert ComputeSerializer.unpack_buffers(packed) == buffers


@pytest.mark.parametrize(
    "packed, message",
    [
        ("5", "Missing newline delimiter"),
        ("5\nhello5", "Missing newline delimiter"),
        ("abc\nhello", "Invalid length delimiter: abc"),
        ("\nhello", "Invalid length delimiter: "),
        ("-1\nhello", "Length delimiter must be non-negative: -1"),
        ("10\nhello", "Truncated buffer: expected 10 characters, but only 5 characters remain"),
        ("0\n3\nab", "Truncated buffer: expected 3 characters, but only 2 characters remain"),
    ],
)
def test_unpack_errors(packed, message):
    with pytest.raises(ValueError) as exc_info:
        unpack_buffers(packed)
    assert str(exc_info.value) == message


@given(st.lists(st.text()))
def test_framing_round_trip(buffers):
    assert unpack_buffers(pack_buffers(buffers)) == buffers


def test_task_body_is_concatenation_of_function_and_payload():
    serializer = ComputeSerializer()
    fn, args, kwargs = (serializer.serialize(v) for v in (foo, (5,), {"y": 2}))
    body = pack_buffers([fn]) + pack_buffers([args, kwargs])
    assert body == pack_buffers([fn, args, kwargs])
    restored, r_args, r_kwargs = serializer.unpack_and_deserialize(body)
    assert restored(*r_args, **r_kwargs) == 10


def test_unpack_and_deserialize_wants_three_buffers():
    serializer = ComputeSerializer()
    packed = pack_buffers([serializer.serialize(foo), serializer.serialize(())])
    with pytest.raises(AssertionError) as exc_info:
        serializer.unpack_and_deserialize(packed)
    assert str(exc_info.value) == "Unpack expects 3 buffers, got 2"


# -- ComputeSerializer ------------------------------------------------------------------------


def test_compute_serializer_defaults():
    serializer = ComputeSerializer()
    assert serializer.code_serializer is DEFAULT_STRATEGY_CODE
    assert serializer.data_serializer is DEFAULT_STRATEGY_DATA
    assert serializer.allowed_deserializer_types == set()
    assert serializer.serialize("not callable")[:3] == "00\n"
    assert serializer.serialize(foo)[:3] == "01\n"


@pytest.mark.parametrize("strategy", SELECTABLE_STRATEGIES)
def test_selected_strategy_is_used(strategy):
    if strategy.for_code:
        serializer, data = ComputeSerializer(strategy_code=strategy()), foo
        assert serializer.code_serializer is SerializationStrategy.get_cached_by_class(strategy)
    else:
        serializer, data = ComputeSerializer(strategy_data=strategy()), "foo"
        assert serializer.data_serializer is SerializationStrategy.get_cached_by_class(strategy)
    assert serializer.serialize(data)[:IDENTIFIER_LENGTH] == strategy.identifier


def test_constructor_validates_both_strategies(monkeypatch):
    calls = []
    real = facade.validate_strategylike

    def recording(value, *, for_code=None):
        calls.append((value, for_code))
        return real(value, for_code=for_code)

    monkeypatch.setattr(facade, "validate_strategylike", recording)
    code, data = DillCode(), JSONData()
    ComputeSerializer(code, data)
    assert calls == [(code, True), (data, False)]


def test_constructor_rejects_wrong_kind():
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(strategy_code=JSONData)
    assert (
        str(exc_info.value)
        == "JSONData is a data serialization strategy, expected a code strategy."
    )
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(strategy_data="volley.serialize.DillCode")
    assert (
        str(exc_info.value)
        == "DillCode is a code serialization strategy, expected a data strategy."
    )


def test_serialize_failure_is_wrapped():
    with pytest.raises(SerializationError) as exc_info:
        ComputeSerializer(strategy_data=JSONData).serialize(object())
    assert (
        str(exc_info.value) == "Serialization failed: Data serialization strategy JSONData failed"
    )
    assert isinstance(exc_info.value.__cause__, TypeError)

    with pytest.raises(SerializationError) as exc_info:
        ComputeSerializer(strategy_code=PureSourceTextInspect).serialize(max)
    assert str(exc_info.value) == (
        "Serialization failed: Code serialization strategy PureSourceTextInspect failed"
    )


def test_deserialize_unknown_header():
    with pytest.raises(DeserializationError) as exc_info:
        ComputeSerializer().deserialize("zz\nwhatever")
    assert str(exc_info.value) == "Deserialization failed: Invalid header: zz\n in data payload"


def test_deserialize_reads_every_registered_strategy():
    serializer = ComputeSerializer()
    for strategy in DATA_STRATEGIES:
        assert serializer.deserialize(strategy().serialize({"k": [1]})) == {"k": [1]}
    for strategy in (
        DillCode,
        DillCodeSource,
        DillCodeTextInspect,
        PureSourceDill,
        PureSourceTextInspect,
        AllCodeStrategies,
    ):
        assert_is_foo(serializer.deserialize(strategy().serialize(foo)))


@pytest.mark.parametrize("code", CODE_STRATEGIES)
@pytest.mark.parametrize("data", DATA_STRATEGIES)
@pytest.mark.parametrize("kwargs", [{}, {"y": 0.25}])
def test_check_strategies(code, data, kwargs):
    serializer = ComputeSerializer(strategy_code=code(), strategy_data=data())
    args = (random.random(),)
    fn, new_args, new_kwargs = serializer.check_strategies(foo, *args, **kwargs)
    assert fn(*new_args, **new_kwargs) == foo(*args, **kwargs)


def test_check_strategies_wraps_errors():
    with pytest.raises(SerializationError) as exc_info:
        ComputeSerializer(strategy_data=JSONData).check_strategies(foo, object())
    assert str(exc_info.value) == "Serialization failed: check_strategies failed to serialize"
    assert isinstance(exc_info.value.__cause__, SerializationError)

    serializer = ComputeSerializer(allowed_deserializer_types=[AllowlistWildcard.CODE, JSONData])
    with pytest.raises(DeserializationError) as exc_info:
        serializer.check_strategies(foo, 1)
    assert str(exc_info.value) == "Deserialization failed: check_strategies failed to deserialize"
    assert isinstance(exc_info.value.__cause__, DeserializationError)


# -- validate_strategylike --------------------------------------------------------------------


def _validated(cls):
    return ValidatedStrategylike(
        cls,
        SerializationStrategy.get_cached_by_class(cls),
        f"globus_compute_sdk.serialize.concretes.{cls.__name__}",
    )


@pytest.mark.parametrize("cls", SELECTABLE_STRATEGIES)
@pytest.mark.parametrize(
    "spelling",
    [
        "class",
        "instance",
        "volley.serialize.concretes.{}",
        "volley.serialize.{}",
        "globus_compute_sdk.serialize.concretes.{}",
        "globus_compute_sdk.serialize.{}",
    ],
)
def test_validate_strategylike_spellings(cls, spelling):
    if spelling == "class":
        value: t.Any = cls
    elif spelling == "instance":
        value = cls()
    else:
        value = spelling.format(cls.__name__)
    assert validate_strategylike(value) == _validated(cls)
    assert validate_strategylike(value, for_code=cls.for_code) == _validated(cls)


@pytest.mark.parametrize(
    "path, cls",
    [
        ("globus_compute_sdk.serialize.concretes.DEFAULT_STRATEGY_CODE", DillCode),
        ("globus_compute_sdk.serialize.DEFAULT_STRATEGY_DATA", DillDataBase64),
        ("volley.serialize.DEFAULT_STRATEGY_DATA", DillDataBase64),
    ],
)
def test_validate_strategylike_instances_by_path(path, cls):
    assert validate_strategylike(path) == _validated(cls)


def test_validate_strategylike_upstream_paths_never_import_upstream():
    script = textwrap.dedent(
        """
        import sys
        from volley.errors import SerdeError
        from volley.serialize.facade import parse_allowlist, validate_strategylike

        v = validate_strategylike("globus_compute_sdk.serialize.concretes.JSONData")
        assert v.type_.__module__ == "volley.serialize.concretes", v
        parse_allowlist(["globus_compute_sdk.*Code", "globus_compute_sdk.serialize.JSONData"])
        for bad in ("globus_compute_sdk.sdk.client.Client", "globus_compute_sdk.*",
                    "globus_compute_sdk.serialize.nope.JSONData"):
            try:
                validate_strategylike(bad)
            except SerdeError:
                pass
            else:
                raise SystemExit("accepted " + bad)
        loaded = sorted(m for m in sys.modules if m.startswith("globus_compute"))
        assert not loaded, loaded
        print("ok")
        """
    )
    import os

    import volley

    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(volley.__file__))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("strategy", SELECTABLE_STRATEGIES)
def test_validate_strategylike_enforces_kind(strategy):
    with pytest.raises(SerdeError) as exc_info:
        validate_strategylike(strategy(), for_code=not strategy.for_code)
    if strategy.for_code:
        expected = (
            f"{strategy.__name__} is a code serialization strategy, expected a data strategy."
        )
    else:
        expected = (
            f"{strategy.__name__} is a data serialization strategy, expected a code strategy."
        )
    assert str(exc_info.value) == expected


def test_validate_strategylike_unknown_strategy(unknown_strategy):
    for value in (unknown_strategy, unknown_strategy(), f"{__name__}.NotThere"):
        with pytest.raises(SerdeError):
            validate_strategylike(value)
    with pytest.raises(SerdeError) as exc_info:
        validate_strategylike(unknown_strategy())
    assert str(exc_info.value) == "UnknownStrategy is not a known serialization strategy."


@pytest.mark.parametrize(
    "value",
    [
        PickleCode,
        "volley.serialize.concretes.PickleCode",
        "globus_compute_sdk.serialize.concretes.PickleCode",
    ],
)
def test_validate_strategylike_rejects_read_only_pickle(value):
    with pytest.raises(SerdeError) as exc_info:
        validate_strategylike(value)
    assert str(exc_info.value) == "PickleCode is not a known serialization strategy."


@pytest.mark.parametrize(
    "bad",
    [
        "invalid_path_1",
        "invalid path 2",
        "",
        "volley.serialize.concretes.Nope",
        "no_such_module_xyz.Strategy",
        "globus_compute_sdk.serialize.facade.ComputeSerializer",
    ],
)
def test_validate_strategylike_bad_import_path(bad):
    with pytest.raises(SerdeError) as exc_info:
        validate_strategylike(bad)
    assert str(exc_info.value) == (
        f"Invalid strategy-like '{bad}'. Expected either a SerializationStrategy instance,"
        " a subclass of SerializationStrategy, or an import path to one."
    )


@pytest.mark.parametrize("value", [object(), int, {"foo": "bar"}, None, 123])
def test_validate_strategylike_enforces_subclass(value):
    with pytest.raises(SerdeError) as exc_info:
        validate_strategylike(value)
    assert "a subclass of SerializationStrategy" in str(exc_info.value)
    assert str(exc_info.value).startswith(f"Invalid strategy-like '{value}'.")


def test_validated_strategylike_path_for_user_modules(unknown_strategy, monkeypatch):
    # A registered but unselectable strategy is rejected even by import path.
    monkeypatch.setattr(sys.modules[__name__], "PluginStrategy", unknown_strategy, raising=False)
    with pytest.raises(SerdeError, match="not a known serialization strategy"):
        validate_strategylike(f"{__name__}.PluginStrategy")


# -- allowlists -------------------------------------------------------------------------------


def test_allowlist_wildcard_values():
    assert AllowlistWildcard.CODE == "volley.*Code"
    assert AllowlistWildcard.DATA == "volley.*Data"
    assert AllowlistWildcard("volley.*Code") is AllowlistWildcard.CODE
    assert isinstance(AllowlistWildcard.DATA, str)


@pytest.mark.parametrize("empty", [None, [], (), set()])
def test_empty_allowlist_allows_everything(empty):
    assert parse_allowlist(empty) == set()
    serializer = ComputeSerializer(allowed_deserializer_types=empty)
    assert serializer.deserialize(PureSourceDill().serialize(foo))(2) == 6


@pytest.mark.parametrize("disallowed", SELECTABLE_STRATEGIES)
def test_allowlist_blocks_others(disallowed):
    allowlist = [s for s in SELECTABLE_STRATEGIES if s is not disallowed]
    serializer = ComputeSerializer(allowed_deserializer_types=allowlist)
    payload = disallowed().serialize(foo if disallowed.for_code else "foo")
    with pytest.raises(DeserializationError) as exc_info:
        serializer.deserialize(payload)
    assert f"serializer {disallowed.__name__} disabled" in str(exc_info.value)


def test_allowlist_error_text():
    serializer = ComputeSerializer(allowed_deserializer_types=[DillCode, JSONData])
    with pytest.raises(DeserializationError) as exc_info:
        serializer.deserialize(DillDataBase64().serialize(1))
    assert str(exc_info.value) == (
        "Deserialization failed: \n"
        " Data serializer DillDataBase64 disabled by current configuration.\n"
        " The current configuration requires the *arguments* to be serialized with one of"
        " the allowed Data classes:\n"
        "\n"
        "     Allowed serializers: DillCode, JSONData"
    )
    with pytest.raises(DeserializationError) as exc_info:
        serializer.assert_deserializer_allowed(
            SerializationStrategy.get_cached_by_class(PureSourceDill)
        )
    assert str(exc_info.value).startswith(
        "Deserialization failed: \n Code serializer PureSourceDill disabled by current"
        " configuration.\n The current configuration requires the *function* to be"
        " serialized with one of the allowed Code classes:"
    )
    assert serializer.deserialize(JSONData().serialize([1])) == [1]


@pytest.mark.parametrize(
    "allowlist",
    [
        ["volley.serialize.concretes.DillCode", "volley.serialize.JSONData"],
        [
            "globus_compute_sdk.serialize.concretes.DillCode",
            "globus_compute_sdk.serialize.JSONData",
        ],
        [f"{s.__module__}.{s.__qualname__}" for s in SELECTABLE_STRATEGIES],
        [f"globus_compute_sdk.serialize.concretes.{s.__name__}" for s in SELECTABLE_STRATEGIES],
    ],
)
def test_allowlist_import_paths(allowlist):
    parsed = ComputeSerializer(allowed_deserializer_types=allowlist).allowed_deserializer_types
    assert len(parsed) == len(allowlist)
    assert all(s in SELECTABLE_STRATEGIES for s in parsed)


@pytest.mark.parametrize(
    "allowlist",
    [
        ["my_malicious_package.my_malicious_serializer"],
        ["invalid_path_1"],
        ["invalid path 2"],
        [""],
        ["volley.serialize.concretes.DillCode", "my_malicious_package.my_malicious_serializer"],
        ["volley.serialize.concretes.DillCode", "invalid path"],
        ["volley.serialize.concretes.DillCode", ""],
    ],
)
def test_allowlist_invalid_import_path(allowlist):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(allowed_deserializer_types=allowlist)
    assert "an import path" in str(exc_info.value)


@pytest.mark.parametrize(
    "allowlist",
    [
        [AllowlistWildcard.CODE, AllowlistWildcard.DATA],
        [AllowlistWildcard.CODE, JSONData],
        [AllowlistWildcard.CODE, "volley.serialize.DillDataBase64"],
        [AllowlistWildcard.CODE, *DATA_STRATEGIES],
        [AllowlistWildcard.DATA, CombinedCode],
        [AllowlistWildcard.DATA, "globus_compute_sdk.serialize.DillCodeSource"],
        [AllowlistWildcard.DATA, *CODE_STRATEGIES],
    ],
)
def test_allowlist_wildcards(allowlist):
    parsed = ComputeSerializer(allowed_deserializer_types=allowlist).allowed_deserializer_types
    explicit = {s for s in allowlist if isinstance(s, type)}
    if AllowlistWildcard.CODE in allowlist:
        assert set(CODE_STRATEGIES) <= parsed
    if AllowlistWildcard.DATA in allowlist:
        assert set(DATA_STRATEGIES) <= parsed
    assert explicit <= parsed
    assert parsed <= set(SELECTABLE_STRATEGIES)


@pytest.mark.parametrize(
    "code_wildcard",
    [
        AllowlistWildcard.CODE,
        AllowlistWildcard.CODE.value,
        "volley.*Code",
        "globus_compute_sdk.*Code",
    ],
)
@pytest.mark.parametrize(
    "data_wildcard",
    [
        AllowlistWildcard.DATA,
        AllowlistWildcard.DATA.value,
        "volley.*Data",
        "globus_compute_sdk.*Data",
    ],
)
def test_allowlist_wildcard_spellings(code_wildcard, data_wildcard):
    parsed = parse_allowlist([code_wildcard, data_wildcard])
    assert parsed == set(SELECTABLE_STRATEGIES)


@pytest.mark.parametrize(
    "allowlist",
    [
        *[[AllowlistWildcard.CODE, s] for s in CODE_STRATEGIES],
        *[[AllowlistWildcard.DATA, s] for s in DATA_STRATEGIES],
        ["globus_compute_sdk.*Data", "volley.serialize.JSONData"],
    ],
)
def test_allowlist_wildcard_cannot_mix(allowlist):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(allowed_deserializer_types=allowlist)
    kind = "CODE" if allowlist[0] in ("volley.*Code", "globus_compute_sdk.*Code") else "DATA"
    assert str(exc_info.value) == (
        f"Cannot mix 'AllowlistWildcard.{kind}' with specific deserializers (got {allowlist})"
    )


@pytest.mark.parametrize(
    "allowlist",
    [
        CODE_STRATEGIES,
        DATA_STRATEGIES,
        [f"{s.__module__}.{s.__qualname__}" for s in CODE_STRATEGIES],
        [f"{s.__module__}.{s.__qualname__}" for s in DATA_STRATEGIES],
        [AllowlistWildcard.CODE],
        [AllowlistWildcard.DATA],
    ],
)
def test_allowlist_needs_code_and_data(allowlist):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(allowed_deserializer_types=allowlist)
    assert str(exc_info.value) == (
        "Deserialization allowlists must contain at least one code and one data"
        f" deserializer/wildcard (got: {allowlist})"
    )


def test_allowlist_accepts_generators():
    parsed = parse_allowlist(s for s in (DillCode, JSONData))
    assert parsed == {DillCode, JSONData}


@pytest.mark.parametrize(
    "non_subclass",
    [
        type(
            "NonSubclassedStrategy",
            (),
            {
                "identifier": "aa\n",
                "for_code": True,
                "serialize": lambda self, data: None,
                "deserialize": lambda self, payload: None,
            },
        ),
        int,
        {"foo": "bar"},
    ],
)
def test_allowlist_enforces_subclass(non_subclass):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer(allowed_deserializer_types=[non_subclass])
    assert "Invalid strategy-like" in str(exc_info.value)


def test_allowlist_unknown_strategy(unknown_strategy, monkeypatch):
    with pytest.raises(SerdeError) as first:
        ComputeSerializer(allowed_deserializer_types=[unknown_strategy])
    monkeypatch.setattr(unknown_strategy, "for_code", False)
    with pytest.raises(SerdeError) as second:
        ComputeSerializer(allowed_deserializer_types=[unknown_strategy])
    for exc_info in (first, second):
        assert str(exc_info.value) == "UnknownStrategy is not a known serialization strategy."


# -- __init_subclass__ ------------------------------------------------------------------------


def _define_strategy(identifier: str) -> type:
    class NewStrategy(SerializationStrategy):
        for_code = True

        def serialize(self, data):
            return ""

        def deserialize(self, payload):
            return None

    # Defining with the identifier in the body is what triggers registration.
    return type("NewStrategy", (NewStrategy,), {"identifier": identifier})


@pytest.mark.parametrize("identifier", ["", "1", "12", "1234"])
def test_init_subclass_requires_length(identifier):
    with pytest.raises(ValueError) as exc_info:
        _define_strategy(identifier)
    assert str(exc_info.value) == "Identifiers must be 3 characters long"


def test_init_subclass_requires_newline():
    with pytest.raises(ValueError) as exc_info:
        _define_strategy("123")
    assert str(exc_info.value) == "Identifiers must end with a newline character"


@pytest.mark.parametrize(
    "identifier, owner",
    [(ident, type(s).__name__) for ident, s in list(SerializationStrategy._CACHE.items())],
)
def test_init_subclass_requires_unique_identifier(identifier, owner):
    with pytest.raises(ValueError) as exc_info:
        _define_strategy(identifier)
    assert str(exc_info.value) == f"Identifier {identifier!r} is already used by {owner}"
    assert type(SerializationStrategy._CACHE[identifier]).__name__ == owner


def test_init_subclass_registers_one_instance():
    cls = _define_strategy("zq\n")
    try:
        instance = SerializationStrategy.get_cached_by_id("zq\n")
        assert type(instance) is cls
        assert SerializationStrategy.get_cached_by_class(cls) is instance
        assert ComputeSerializer().deserialize("zq\nanything") is None
    finally:
        SerializationStrategy._CACHE.pop("zq\n")


def test_subclassing_a_concrete_strategy_collides():
    with pytest.raises(ValueError, match="'11\\\\n' is already used by JSONData"):

        class MyJSON(JSONData):
            pass


# -- serialize_from_list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, strategies, header",
    [
        (foo, [DillCode(), DillCodeSource()], "01\n"),
        (foo, ["gibberish", DillCode()], "01\n"),
        (foo, [DillDataBase64(), PureSourceDill()], "sd\n"),
        (foo, [JSONData(), CombinedCode()], "10\n"),
        (foo, SELECTABLE_STRATEGIES, "04\n"),
        (foo, ["globus_compute_sdk.serialize.concretes.PureSourceTextInspect"], "st\n"),
        ("foo", [JSONData()], "11\n"),
        ("foo", ["gibberish", JSONData()], "11\n"),
        ("foo", [PureSourceTextInspect(), DillDataBase64()], "00\n"),
        ("foo", [DillDataBase64(), JSONData()], "00\n"),
        ("foo", SELECTABLE_STRATEGIES, "00\n"),
        ({1}, [JSONData, "volley.serialize.AllDataStrategies"], "13\n"),
    ],
)
def test_serialize_from_list_first_success(data, strategies, header):
    payload = ComputeSerializer.serialize_from_list(data, strategies)
    assert payload[:3] == header
    restored = ComputeSerializer().deserialize(payload)
    if callable(data):
        assert_is_foo(restored)
    else:
        assert restored == data


@pytest.mark.parametrize("empty", [[], None, ()])
@pytest.mark.parametrize("data, header", [(foo, "01\n"), ("foo", "00\n")])
def test_serialize_from_list_defaults(empty, data, header):
    assert ComputeSerializer.serialize_from_list(data, empty)[:3] == header


@pytest.mark.parametrize(
    "strategies",
    [
        ["gibberish", "strings", "alkjfdhaf"],
        ["not", "strategylike", "objects", None, 123, object()],
        ["bad", "import", "paths", "volley.*", "volley JSONData", "globus_compute_sdk.*"],
    ],
)
def test_serialize_from_list_invalid_strategylikes(strategies):
    with pytest.raises(SerializationError) as exc_info:
        ComputeSerializer.serialize_from_list(foo, strategies)
    assert str(exc_info.value) == "Serialization failed: All strategies failed."
    group = exc_info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert group.message == "Strategy failures:"
    assert len(group.exceptions) == len(strategies)
    assert all("Invalid strategy-like" in str(e) for e in group.exceptions)


def test_serialize_from_list_unknown_strategy(unknown_strategy):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer.serialize_from_list(foo, [unknown_strategy])
    group = exc_info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [str(e) for e in group.exceptions] == [
        "UnknownStrategy is not a known serialization strategy."
    ]


@pytest.mark.parametrize(
    "data, strategies, message",
    [
        (foo, DATA_STRATEGIES, "is a data serialization strategy, expected a code strategy."),
        ("foo", CODE_STRATEGIES, "is a code serialization strategy, expected a data strategy."),
    ],
)
def test_serialize_from_list_enforces_kind(data, strategies, message):
    with pytest.raises(SerdeError) as exc_info:
        ComputeSerializer.serialize_from_list(data, strategies)
    group = exc_info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert [str(e) for e in group.exceptions] == [f"{s.__name__} {message}" for s in strategies]


def test_serialize_from_list_collects_serialization_failures(caplog):
    with caplog.at_level(logging.ERROR, logger="volley.serialize.facade"):
        with pytest.raises(SerializationError) as exc_info:
            ComputeSerializer.serialize_from_list(object(), [JSONData])
    group = exc_info.value.__cause__
    assert isinstance(group, ExceptionGroup)
    assert isinstance(group.exceptions[0], TypeError)
    assert "failed to serialize" in caplog.text
