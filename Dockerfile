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
RUN useradd --system --uid 10001 --create-home --home-dir /app taskapi
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/* && rm -rf /wheels
COPY --chown=taskapi:taskapi config.py wsgi.py gunicorn.conf.py boot.sh ./
COPY --chown=taskapi:taskapi taskapi ./taskapi
COPY --chown=taskapi:taskapi migrations ./migrations
USER taskapi
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["./boot.sh"]
