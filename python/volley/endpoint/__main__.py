"""``python -m volley.endpoint NAME``: run endpoint NAME in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from volley.config import volley_home
from volley.endpoint.agent import AlreadyRunning, Agent, install_signal_handlers
from volley.endpoint.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volley.endpoint")
    parser.add_argument("name")
    parser.add_argument("--transport", choices=["native", "python"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    directory = volley_home() / "endpoints" / args.name
    try:
        config = load_config(directory / "config.yaml")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from volley.sdk.client import Client

    agent = Agent(args.name, directory, config, Client(), transport=args.transport)
    install_signal_handlers(agent)
    try:
        agent.run()
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
