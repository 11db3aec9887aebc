# The guide's walltime example: a command that outlives its walltime returns code 124
# (the guide prints future.returncode; the ShellResult is future.result()).
import os

from volley import Executor, ShellFunction

with Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"]) as executor:
    # Limit execution to 1s
    bf = ShellFunction("sleep 2", walltime=1)
    future = executor.submit(bf)
    print(future.result().returncode)
