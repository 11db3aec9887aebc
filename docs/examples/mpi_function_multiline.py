# The guide's multi-line MPIFunction: the default prefix launches a no-op (`true`), and each
# line that should run under MPI writes $PARSL_MPI_PREFIX itself.
import os

from volley import Executor, MPIFunction

with Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"]) as executor:
    executor.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
    func = MPIFunction("""true; # force the default prefix to launch a no-op
$PARSL_MPI_PREFIX bash -c 'echo step 1 on rank ${{OMPI_COMM_WORLD_RANK:-$PMI_RANK}}'
$PARSL_MPI_PREFIX bash -c 'echo step 2 on rank ${{OMPI_COMM_WORLD_RANK:-$PMI_RANK}}'
""")
    result = executor.submit(func).result()
    print("return code:", result.returncode)
    for line in sorted(result.stdout.splitlines()):
        print(line)
