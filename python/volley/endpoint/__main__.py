"""``python -m volley.endpoint NAME``: run endpoint NAME in the foreground.

Exit codes: 0 stopped on request, 1 fatal error (the message says why), 2 bad configuration,
3 already running here, 4 the task queue is held by another instance elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from volley.endpoint.local import check_name, endpoint_dir


def run(name: str, transport: str | None = None) -> int:
    from volley.endpoint.agent import (
        Agent,
        AgentError,
        AlreadyRunning,
        QueueHeld,
        install_signal_handlers,
    )
    from volley.endpoint.config import ConfigError, load_config

    try:
        check_name(name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    directory = endpoint_dir(name)
    try:
        config = load_config(directory / "config.yaml")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from volley.logfiles import configure_logging

    try:
        configure_logging(logging.DEBUG if config.debug else logging.INFO)  # rotating when detached
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from volley.sdk.client import Client

    try:
        client = Client()
    except Exception as exc:
        print(f"error: cannot reach the service: {exc}", file=sys.stderr)
        return 1
    agent = Agent(name, directory, config, client, transport=transport)
    install_signal_handlers(agent)
    try:
        agent.run()
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except QueueHeld as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except AgentError as exc:
        logging.getLogger("volley.endpoint").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volley.endpoint")
    parser.add_argument("name")
    parser.add_argument("--transport", choices=["native", "python"])
    args = parser.parse_args(argv)
    return run(args.name, args.transport)


def exit_now(code: int) -> None:
    """Exit without waiting for threads: a ThreadPoolEngine task may run for hours, and its
    delivery is back in the queue already."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
