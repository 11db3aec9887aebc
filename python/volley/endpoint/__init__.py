"""The endpoint agent: registers, consumes its task queue, runs tasks on an engine, publishes results."""

from volley.extras import require

require("volley.endpoint (the endpoint agent)", "endpoint")
