"""``python -m volley.service --config FILE``: run the web service under uvicorn."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from volley.logfiles import configure_logging
from volley.service.app import create_app
from volley.service.credentials import record_broker_mode
from volley.service.db import DatabaseError, database_session
from volley.service.settings import ServiceSettings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volley.service")
    parser.add_argument("--config", help="JSON settings file (see volley.service.settings)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url", help="e.g. postgresql+psycopg://user@host/db (default: SQLite)")
    args = parser.parse_args(argv)
    try:
        configure_logging()  # a rotating log file when run as a daemon
        settings = ServiceSettings.load(args.config)
        if args.host:
            settings.host = args.host
        if args.port:
            settings.port = args.port
        if args.database_url:
            settings.database_url = args.database_url
        app = create_app(settings)
        # the app checks this at its start too, but a refusal there is a traceback from uvicorn
        with database_session(settings.database_url) as session:
            record_broker_mode(session, settings)
    except (SettingsError, DatabaseError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
