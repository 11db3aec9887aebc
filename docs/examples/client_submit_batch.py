# The guide's globus_compute_client_submit_batch.py.  The guide's task sleeps 24 hours;
# EXPENSIVE_TASK_SECONDS shortens it for the demo (the default is the guide's).
import os

from volley import Client

SECONDS = float(os.environ.get("EXPENSIVE_TASK_SECONDS", 3600 * 24))


def expensive_task(task_arg, seconds=SECONDS):
    import time

    time.sleep(seconds)  # 24 hours
    return "All done!"


ep_id = os.environ["VOLLEY_ENDPOINT_ID"]
gcc = Client()

print(f"Task Group ID for later reloading: {gcc.session_task_group_id}")
fn_id = gcc.register_function(expensive_task)
batch = gcc.create_batch()
for task_i in range(10):
    batch.add(fn_id, ep_id, args=(task_i,))
gcc.batch_run(batch)
