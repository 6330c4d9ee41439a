"""Operations endpoints: liveness with a database check, and Prometheus metrics."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from bot.services import Services

logger = logging.getLogger(__name__)
blueprint = Blueprint("ops", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/healthz")
def healthz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, object] = {}
    healthy = True
    try:
        svc.database.ping()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        logger.error("health check: database unreachable: %s", type(exc).__name__)
        checks["database"] = "unreachable"
        healthy = False
    checks["locks"] = "redis" if svc.settings.redis_url else "in-process"
    checks["channels"] = {
        name: "enabled" if reason is None else f"disabled: {reason}"
        for name, reason in svc.settings.channel_status().items()
    }
    return jsonify(status="ok" if healthy else "degraded", checks=checks), 200 if healthy else 503


@blueprint.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(services().metrics), mimetype=CONTENT_TYPE_LATEST)


def install_request_metrics(app: Flask, svc: Services) -> None:
    """Count requests and time them per endpoint (the route name, never the URL: tokens stay out)."""
    requests_total = Counter(
        "cobrabot_http_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=svc.metrics
    )
    latency = Histogram("cobrabot_http_request_seconds", "HTTP request latency", ["endpoint"], registry=svc.metrics)

    @app.before_request
    def _start_timer() -> None:
        g.cobrabot_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        requests_total.labels(endpoint, request.method, str(response.status_code)).inc()
        started = g.get("cobrabot_started")
        if started is not None:
            latency.labels(endpoint).observe(time.perf_counter() - started)
        return response
