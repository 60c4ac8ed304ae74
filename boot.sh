#!/bin/sh
# Container entry point: apply pending migrations (safe to run from every replica at once:
# a lock document serialises them), make the first signing key of a new RS256/ES256 deployment
# (an auth service or monolith whose JWT_PRIVATE_KEYS holds none), then become gunicorn so it
# receives the signals.
set -e
flask --app wsgi db upgrade
case "${JWT_ALGORITHM:-HS256}" in
  RS256|ES256)
    if [ -z "${JWKS_URL:-}" ] && [ -n "${JWT_PRIVATE_KEYS:-}" ] && ! ls "$JWT_PRIVATE_KEYS"/*.pem >/dev/null 2>&1; then
      flask --app wsgi keys rotate  # two replicas doing this at once make two keys: both verify, the newer signs
    fi
    ;;
esac
exec gunicorn -c gunicorn.conf.py wsgi:app
