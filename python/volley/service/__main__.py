"""``python -m volley.service --config FILE``: run the web service under uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from volley.service.app import create_app
from volley.service.settings import ServiceSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m volley.service")
    parser.add_argument("--config", help="JSON settings file (see volley.service.settings)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    args = parser.parse_args(argv)
    settings = ServiceSettings.load(args.config)
    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.database_url:
        settings.database_url = args.database_url
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
