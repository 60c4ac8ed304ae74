"""Prometheus metrics: request counts and latency by route template and status.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py before the workers fork)
makes every worker write its samples to files there, and /metrics adds them up, so a
scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator

import redis
from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from pymongo.errors import PyMongoError

from taskapi.errors import NotFound
from taskapi.services import notifications

log = logging.getLogger("taskapi.metrics")

REQUESTS = Counter("taskapi_http_requests_total", "HTTP requests by method, route template and status.",
                   ["method", "route", "status"])
LATENCY = Histogram("taskapi_http_request_duration_seconds", "Request latency by method and route template.",
                    ["method", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


# Labels come from fixed sets only, whatever a client sends: a made-up method is `other`, a
# path no route matched is `unmatched` (the route template otherwise), a status outside the
# standard range is `other`. The series count stays what the code defines.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


_children: dict[tuple[str, str, int], tuple] = {}  # bounded by the label sets above


def observe(method: str, route: str, status: int, seconds: float) -> None:
    """Count one request; `route` must be a route template or "unmatched"."""
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        method = method if method in METHODS else "other"
        code = str(status) if 100 <= status <= 599 else "other"
        children = (REQUESTS.labels(method, route, code), LATENCY.labels(method, route))
        if key[0] in METHODS:  # a made-up method is not remembered: it would grow this dict
            _children[key] = children
    counter, histogram = children
    counter.inc()
    histogram.observe(seconds)


def allowed(remote_addr: str | None) -> bool:
    networks = current_app.config["METRICS_ALLOW_NETWORKS"]
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


class NotificationCollector:
    """The notification service's figures, read at scrape time: the workers count deliveries in
    Redis (so any API process reports every worker's), and the backlog comes from MongoDB."""

    def collect(self) -> Iterator[Metric]:
        try:
            counts = notifications.delivery_metrics()
            waiting = notifications.backlog()
        except (PyMongoError, redis.RedisError) as exc:  # a scrape must not fail with the database
            log.warning("notification metrics unavailable (%s)", exc.__class__.__name__)
            return
        deliveries = CounterMetricFamily("taskapi_webhook_deliveries", "Webhook delivery attempts by outcome.",
                                         labels=["status"])
        for status in ("succeeded", "failed"):
            deliveries.add_metric([status], counts.get(f"status:{status}", 0.0))
        yield deliveries
        buckets = [(str(bound), counts.get(f"le:{bound}", 0.0)) for bound in notifications.LATENCY_BUCKETS]
        buckets.append(("+Inf", counts.get("le:+Inf", 0.0)))
        yield HistogramMetricFamily("taskapi_webhook_delivery_latency_seconds",
                                    "From the event to its receiver's 2xx.", buckets=buckets,
                                    sum_value=counts.get("latency_sum", 0.0))
        for name, help_text in (("events_waiting", "Events in the outbox not yet relayed to the broker."),
                                ("reminders_due", "Reminders whose time has come and that have not fired."),
                                ("reminders_late", "Reminders due for longer than REMINDER_MAX_DELAY_SECONDS.")):
            yield GaugeMetricFamily(f"taskapi_{name}", help_text, value=waiting[name])


def metrics_view() -> Response:
    """Prometheus text format; 404 for clients outside METRICS_ALLOW_NETWORKS."""
    if not allowed(request.remote_addr):
        raise NotFound()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    if current_app.config["TASKAPI_SERVICE"] != "auth":  # the notification figures are the tasks side's
        extra = CollectorRegistry()
        extra.register(NotificationCollector())
        text += generate_latest(extra)
    return Response(text, content_type=CONTENT_TYPE_LATEST)


metrics_view.exempt_from_rate_limits = True  # type: ignore[attr-defined]  # Prometheus polls it


def mount_metrics(app: Flask) -> None:
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
