"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`, `flask --app wsgi …`."""

import sys

from config import ConfigError
from taskapi import create_app

try:
    app = create_app()
except ConfigError as exc:
    sys.stderr.write(f"taskapi: configuration error: {exc}\n")
    sys.exit(1)
