# The guide's globus_compute_executor_results_as_arrived.py (the guide omits its Executor import
# and endpoint id).
import concurrent.futures
import os

from volley import Executor

endpoint_id = os.environ["VOLLEY_ENDPOINT_ID"]


def double(x):
    return f"{x} -> {x * 2}"


def slow_double(x):
    import random
    import time

    time.sleep(x * random.random() / 10)  # the guide sleeps up to x seconds; a tenth keeps the demo short
    return f"{x} -> {x * 2}"


with Executor(endpoint_id=endpoint_id) as gce:
    futs = [gce.submit(double, i) for i in range(10)]

    print("Results:", [f.result() for f in futs])

    futs = [gce.submit(slow_double, i) for i in range(10, 20)]
    for f in concurrent.futures.as_completed(futs):
        print("Received:", f.result())
