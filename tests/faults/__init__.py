"""The fault suite (issue 11): a private local stack, thousands of tasks in flight, and real
SIGKILLs of the endpoint, the service, the broker and the client; every future is classified.

``python -m tests.faults --help`` (or ``make faults``) runs it; ``tests/test_faults.py`` runs a
short version inside ``make test``.  See ``harness.py``.
"""
