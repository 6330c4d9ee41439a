"""Flask app factory: wires the services and registers the webhooks, portal, API and admin blueprints."""

from __future__ import annotations

import logging

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from werkzeug.exceptions import HTTPException

import admin
from bot.config import Settings, load_settings
from bot.services import Services, bootstrap
from bot.web import api, ops, payments, portal, unsubscribe, webhooks
from bot.web.errors import json_error
from bot.web.limits import install_limits
from bot.web.nul_guard import install_nul_guard
from channels import build_registry

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or (services.settings if services else load_settings())
    services = services or bootstrap(settings, registry=build_registry(settings))
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=5 * 1024 * 1024,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
    )
    app.session_interface = NoSessionForWebhooks()
    app.extensions["cobrabot"] = services
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(portal.blueprint)
    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(unsubscribe.blueprint)
    app.register_blueprint(payments.blueprint)
    admin.register(app)
    app.register_blueprint(api.blueprint, url_prefix="/api/v1")
    ops.install_request_metrics(app, services)
    install_limits(app, settings)
    install_nul_guard(app)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


class NoSessionForWebhooks(SecureCookieSessionInterface):
    """Providers send no cookies and webhooks never use a session: skip building the cookie signer (a key
    derivation) on every webhook. Flask does not save a null session, so nothing is set in the response."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith("/webhooks/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/webhooks/")) or request.path.endswith("/chat")


def _http_error(exc: HTTPException) -> Response | HTTPException:
    if not _wants_json():
        return exc
    code = exc.code or 500
    return json_error(code, (exc.name or "error").lower().replace(" ", "_"), exc.description or exc.name)


def _unexpected_error(exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.endpoint)
    return json_error(500, "internal_error", "an unexpected error occurred; it has been logged")
