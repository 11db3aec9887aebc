# The guide's "Specifying a Submit-Side Serialization Strategy" and check_strategies examples.
import os

from volley import Executor
from volley.serialize import ComputeSerializer, DillCodeSource, JSONData, PureSourceTextInspect


def greet(name, greeting="greetings"):
    """Greet someone."""

    return f"{greeting} {name}"


serializer = ComputeSerializer(strategy_code=DillCodeSource(), strategy_data=JSONData())

# use the return value of check_strategies:
fn, args, kwargs = serializer.check_strategies(greet, "world", greeting="hello")
assert fn(*args, **kwargs) == greet("world", greeting="hello")
print("check_strategies:", fn(*args, **kwargs))

with Executor(os.environ["VOLLEY_ENDPOINT_ID"]) as gcx:
    gcx.serializer = ComputeSerializer(strategy_code=PureSourceTextInspect(), strategy_data=JSONData())
    print("PureSourceTextInspect + JSONData:", gcx.submit(greet, "world", greeting="hello").result())
