# The guide's globus_compute_executor_reload_batch.py, run with the task group id printed by
# client_submit_batch.py (the guide's `futs` is its `futures`, and it needs the import).
import concurrent.futures
import os
import sys

from volley import Executor

ep_id = os.environ["VOLLEY_ENDPOINT_ID"]
tg_id = sys.argv[1]  # "Saved task group id from 'yesterday'"
with Executor(endpoint_id=ep_id, task_group_id=tg_id) as gce:
    futures = gce.reload_tasks()
    for f in concurrent.futures.as_completed(futures):
        print("Received:", f.result())
