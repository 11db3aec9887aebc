# The guide's "Specifying Result Serialization Strategies": the endpoint serializes results with
# JSONData, so they cross the wire as JSON text.
import os

from volley import Executor
from volley.serialize import JSONData


def stats(values):
    return {"n": len(values), "sum": sum(values)}


with Executor(os.environ["VOLLEY_ENDPOINT_ID"], result_serializers=[JSONData()]) as gcx:
    # or set it directly:
    gcx.result_serializers = [JSONData()]
    print(gcx.submit(stats, [1, 2, 3]).result())
