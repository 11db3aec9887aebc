# The guide's globus_compute_shell_function.py.
import os

from volley import Executor, ShellFunction

ep_id = os.environ["VOLLEY_ENDPOINT_ID"]
# The cmd will be formatted with kwargs at invocation time
bf = ShellFunction("echo '{message}'")
with Executor(endpoint_id=ep_id) as ex:
    for msg in ("hello", "hola", "bonjour"):
        future = ex.submit(bf, message=msg)
        shell_result = future.result()  # ShellFunctions return ShellResults
        print(shell_result.stdout)
