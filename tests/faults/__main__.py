"""``python -m tests.faults``: the fault suite; ``--help`` lists the options."""

import sys

from .harness import main

sys.exit(main())
