# The user guide's basic example (globus_compute_executor_basic_example.py); only the import
# line and the endpoint id differ.
import os

from volley import Executor


def double(x):
    return x * 2


tutorial_endpoint_id = os.environ["VOLLEY_ENDPOINT_ID"]
with Executor(endpoint_id=tutorial_endpoint_id) as gce:
    fut = gce.submit(double, 7)

    print(fut.result())
