#!/bin/sh
# Container entry point: apply pending migrations (safe to run from every replica at once:
# a lock document serialises them), make the first signing key of a new RS256/ES256 deployment
# when JWT_PRIVATE_KEYS holds none (one replica makes it, under a lock on the directory; the
# others find it), then become gunicorn so it receives the signals.
set -e
flask --app wsgi db upgrade
flask --app wsgi keys ensure
exec gunicorn -c gunicorn.conf.py wsgi:app
