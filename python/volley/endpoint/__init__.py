"""The endpoint agent: registers, consumes its task queue, runs tasks on an engine, publishes results."""
