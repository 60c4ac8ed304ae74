# taskapi: slim multi-stage image; runs as an unprivileged user; migrate, then exec gunicorn.

FROM python:3.11-slim AS build
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKAPI_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    TRUSTED_PROXY_COUNT=1
RUN groupadd --system --gid 10001 taskapi \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app taskapi
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/* && rm -rf /wheels
COPY --chown=10001:10001 config.py wsgi.py gunicorn.conf.py boot.sh LICENSE ./
COPY --chown=10001:10001 taskapi ./taskapi
COPY --chown=10001:10001 migrations ./migrations
# The auth service's signing keys (JWT_PRIVATE_KEYS in docker-compose.yml): a volume mounted here
# takes this directory's owner and mode when it is first created.
RUN install -d -o 10001 -g 10001 -m 0700 /app/keys
# Numeric, so that a runtime that refuses root can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"]
CMD ["./boot.sh"]
