"""Operations endpoints: liveness with a database check, and Prometheus metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from bot.inbox import backlog
from bot.services import Services
from bot.store import redis_client

logger = logging.getLogger(__name__)
blueprint = Blueprint("ops", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


# What runs in-process instead of cluster-wide while Redis is unreachable (see docs/reliability.md).
REDIS_BACKED = ["locks", "rate_limits"]


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 "ok"; 200 "degraded" when Redis is down (we keep serving, in-process); 503 when the database is."""
    svc = services()
    checks: dict[str, object] = {}
    degraded: list[str] = []
    healthy = True
    try:
        svc.database.ping()
        checks["database"] = "ok"
        if svc.settings.inbound_queue:
            # Growing "pending" or an old oldest message means the inbox workers are behind or not running.
            checks["inbox"] = backlog(svc.database, svc.clock())
    except SQLAlchemyError as exc:
        logger.error("health check: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        healthy = False
    checks["locks"] = "redis" if svc.settings.redis_url else "in-process"
    if svc.settings.redis_url:
        checks["redis"] = "ok" if _redis_answers(svc.settings.redis_url) else "down"
        if checks["redis"] == "down":
            degraded = list(REDIS_BACKED)
    checks["channels"] = {
        name: "enabled" if reason is None else f"disabled: {reason}"
        for name, reason in svc.settings.channel_status().items()
    }
    status = "ok" if healthy and not degraded else "degraded"
    return jsonify(status=status, checks=checks, degraded=degraded), 200 if healthy else 503


def _redis_answers(redis_url: str) -> bool:
    client = redis_client(redis_url)
    try:
        return bool(client.ping())
    except Exception as exc:  # any redis/socket error means "down" here; the reason goes to the log
        logger.warning("health check: redis unreachable: %s", type(exc).__name__)
        return False
    finally:
        client.close()


@blueprint.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(services().metrics), mimetype=CONTENT_TYPE_LATEST)


def install_request_metrics(app: Flask, svc: Services) -> None:
    """Count requests and time them per endpoint (the route name, never the URL: tokens stay out)."""
    requests_total = Counter(
        "cobrabot_http_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=svc.metrics
    )
    latency = Histogram("cobrabot_http_request_seconds", "HTTP request latency", ["endpoint"], registry=svc.metrics)

    # labels() validates and locks on every call; each label set's child is looked up once, then kept here.
    counters: dict[tuple[str, ...], Any] = {}
    timers: dict[tuple[str, ...], Any] = {}

    @app.before_request
    def _start_timer() -> None:
        g.cobrabot_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        _child(counters, requests_total, endpoint, request.method, str(response.status_code)).inc()
        started = g.get("cobrabot_started")
        if started is not None:
            _child(timers, latency, endpoint).observe(time.perf_counter() - started)
        return response


def _child(children: dict[tuple[str, ...], Any], metric: Counter | Histogram, *labels: str) -> Any:
    """metric.labels(*labels), cached: the registry keeps every child for good anyway, so this holds no more."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child
