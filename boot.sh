#!/bin/sh
# Container entry point: apply pending migrations (safe to run from every replica at once:
# a lock document serialises them), then become gunicorn so it receives the signals.
set -e
flask --app wsgi db upgrade
exec gunicorn -c gunicorn.conf.py wsgi:app
