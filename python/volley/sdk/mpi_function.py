"""MPIFunction: a ShellFunction whose command is launched through the endpoint's MPI launcher.

Like ShellFunction, instances travel by reference to this module path
(``volley.sdk.mpi_function``), which is therefore part of the wire format.
"""

from __future__ import annotations

import typing as t

from volley.sdk.shell_function import ShellFunction, ShellResult

# Exported by Parsl's MPI-mode worker from the task's resource specification (e.g.
# "mpiexec -n 4 -ppn 2 -hosts n1,n2"); on a non-MPI engine it is empty and the command runs
# as plain bash.
_MPI_PREFIX = "$PARSL_MPI_PREFIX "


class MPIFunction(ShellFunction):
    """A ShellFunction run as ``$PARSL_MPI_PREFIX <cmd>``.

    The prefix is applied once, in front of the whole (formatted) command; a multi-line
    script that launches several MPI programs must write ``$PARSL_MPI_PREFIX`` itself on each
    line.  Resources (``num_nodes``, ``ranks_per_node``, ``num_ranks``, ...) are set on the
    Executor's ``resource_specification``, not here.
    """

    def __call__(self, *args: t.Any, **kwargs: t.Any) -> ShellResult | dict[str, t.Any]:
        return self._run(_MPI_PREFIX + self._format_cmd(args, kwargs))
