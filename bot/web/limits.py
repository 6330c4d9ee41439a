"""Request rate limits (Flask-Limiter): the REST API per token, console sign-in per IP and per email.

Webhooks are never limited: a provider retrying into a 429 would only delay a debtor's message. Counters live in
Redis when `COBRABOT_REDIS_URL` is set (shared by every web process) and in memory otherwise; if Redis goes away
the limiter falls back to memory rather than failing requests.
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from bot.config import Settings
from bot.web.errors import json_error

LOGIN_ENDPOINT = "admin.auth.login"
# The only blueprints whose requests the limiter sees: the API and the console's sign-in pages.
LIMITED_BLUEPRINTS = ("api", LOGIN_ENDPOINT.rpartition(".")[0])
_HOOK_TABLES = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")


def install_limits(app: Flask, settings: Settings) -> Limiter:
    app_wide = {table: list(getattr(app, table).get(None, [])) for table in _HOOK_TABLES}
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.redis_url or "memory://",
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 2} if settings.redis_url else {},
        key_prefix="cobrabot:limits",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    # Only the API and sign-in are limited: every other request (webhooks above all) skips the limiter's
    # per-request hooks altogether, which cost more CPU than accepting a queued webhook.
    _scope_hooks(app, app_wide, LIMITED_BLUEPRINTS)
    limiter.limit(settings.api_rate_limit, key_func=_api_token_key)(app.blueprints["api"])
    login = app.view_functions[LOGIN_ENDPOINT]
    login = limiter.limit(settings.login_rate_limit, methods=["POST"], key_func=get_remote_address)(login)
    login = limiter.limit(settings.login_rate_limit, methods=["POST"], key_func=_login_email_key)(login)
    app.view_functions[LOGIN_ENDPOINT] = login
    app.register_error_handler(RateLimitExceeded, _too_many)
    return limiter


def _scope_hooks(app: Flask, app_wide: dict[str, list[object]], blueprints: tuple[str, ...]) -> None:
    """Move the hooks the limiter added app-wide (those not in `app_wide`) onto `blueprints` only. Before-request
    hooks go first there, as they ran app-wide: a request is counted before the API refuses a wrong token."""
    for table in _HOOK_TABLES:
        hooks = getattr(app, table)
        added = [hook for hook in hooks.get(None, []) if hook not in app_wide[table]]
        hooks[None] = app_wide[table]
        for blueprint in blueprints:
            hooks[blueprint] = added + hooks.get(blueprint, [])


def _digest(value: str) -> str:
    # Keys land in Redis: a digest keeps tokens and email addresses out of it.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _api_token_key() -> str:
    """Per bearer token; requests without one share their IP's bucket (they get a 401 anyway)."""
    authorization = request.headers.get("Authorization", "").strip()
    return f"token:{_digest(authorization)}" if authorization else f"ip:{get_remote_address()}"


def _login_email_key() -> str:
    return f"email:{_digest(request.form.get('email', '').strip().lower())}"


def _too_many(exc: RateLimitExceeded) -> Response:
    what = "sign-in attempts" if request.endpoint == LOGIN_ENDPOINT else "requests"
    # Flask-Limiter adds Retry-After and the X-RateLimit-* headers to this response.
    return json_error(429, "rate_limited", f"too many {what} (limit {exc.description}); retry later")
