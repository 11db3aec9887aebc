"""``python -m tests.faults``: the fault suite; ``--help`` lists the options."""

import os
import sys

from .harness import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Every stack is down and every report written.  When the system failed, SDK threads may still
# be waiting out a service that is gone (up to $VOLLEY_SERVICE_RETRY_FOR); the interpreter would
# wait for them at exit, so leave now.
os._exit(code)
