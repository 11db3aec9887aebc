# The guide's "Submitting MPI Tasks": an MPIFunction runs on an MPI endpoint (MPIEngine, alias
# GlobusMPIEngine).  The resource specification is set on the Executor; the endpoint turns it
# into $PARSL_MPI_PREFIX (here: mpiexec with 2 ranks on 1 node) in front of the command.
import os

from volley import Executor, MPIFunction

with Executor(endpoint_id=os.environ["VOLLEY_ENDPOINT_ID"]) as executor:
    executor.resource_specification = {
        "num_nodes": 1,  # Number of nodes required for the application instance
        "ranks_per_node": 2,  # Number of ranks / application elements to be launched per node
        "num_ranks": 2,  # Number of ranks in total
    }
    # braces are doubled: the command is formatted with the submit's keyword arguments
    func = MPIFunction(
        "bash -c 'echo {greeting} from rank ${{OMPI_COMM_WORLD_RANK:-$PMI_RANK}}'",
        snippet_lines=2048,
    )
    result = executor.submit(func, greeting="hello").result()
    print("return code:", result.returncode)
    for line in sorted(result.stdout.splitlines()):
        print(line)
