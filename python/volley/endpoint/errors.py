"""Why an endpoint agent stops for good; each message names the cause and what to do."""

from __future__ import annotations


class AgentError(RuntimeError):
    """The agent cannot go on."""


class AlreadyRunning(AgentError):
    """This endpoint already runs on this machine (its lock file is held)."""


class QueueHeld(AgentError):
    """Another consumer holds the exclusive task queue: a second instance of this endpoint."""
