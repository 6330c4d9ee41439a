"""Flask-Limiter on the REST API (per token) and console sign-in (per IP and per email); webhooks never limited."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bot.app import create_app
from bot.config import ConfigError, load_settings
from bot.services import Services, bootstrap
from tests.admin import csrf_token
from tests.conftest import TEST_API_TOKEN, TEST_PUBLIC_URL, TEST_SECRET, FixedClock

HOOK_TABLES = ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")


def limited_app(services: Services, db, clock: FixedClock, **limits: str) -> Flask:
    settings = load_settings(
        database_url=services.settings.database_url,
        secret_key=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        public_url=TEST_PUBLIC_URL,
        **limits,
    )
    app = create_app(services=bootstrap(settings, database=db, clock=clock))
    app.config["TESTING"] = True
    return app


def wrong_sign_in(client: FlaskClient, email: str, ip: str = "10.0.0.1") -> int:
    form = {"email": email, "password": "wrong", "csrf_token": csrf_token(client)}
    return client.post("/admin/login", data=form, environ_base={"REMOTE_ADDR": ip}).status_code


def test_the_api_is_limited_per_token_with_a_clear_json_429(services, db, clock, api_headers):
    app = limited_app(services, db, clock, api_rate_limit="3/minute")
    client = app.test_client()
    assert [client.get("/api/v1/cases", headers=api_headers).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/v1/cases", headers=api_headers)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited" and "3 per 1 minute" in refused.get_json()["message"]
    assert int(refused.headers["Retry-After"]) > 0
    # Another token has its own bucket (it is refused for being wrong, not for being limited).
    assert client.get("/api/v1/cases", headers={"Authorization": "Bearer other"}).status_code == 401


def test_sign_in_is_limited_per_ip(services, db, clock):
    client = limited_app(services, db, clock, login_rate_limit="3/minute").test_client()
    statuses = [wrong_sign_in(client, f"agent{i}@cobrabot.example") for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert wrong_sign_in(client, "agent9@cobrabot.example", ip="10.0.0.2") == 401  # another IP is not blocked


def test_sign_in_is_limited_per_email_across_ips(services, db, clock):
    client = limited_app(services, db, clock, login_rate_limit="3/minute").test_client()
    statuses = [wrong_sign_in(client, "Ana@cobrabot.example", ip=f"10.0.1.{i}") for i in range(3)]
    statuses.append(wrong_sign_in(client, "ana@cobrabot.example ", ip="10.0.1.99"))
    assert statuses == [401, 401, 401, 429]
    assert client.get("/admin/login").status_code == 200  # the form itself stays reachable


def test_webhooks_are_never_limited(services, db, clock):
    client = limited_app(services, db, clock, api_rate_limit="1/minute", login_rate_limit="1/minute").test_client()
    # The portal's web chat and disabled-channel webhooks answer as usual however often they are hit.
    assert {client.post("/webhooks/twilio/sms", data={}).status_code for _ in range(5)} == {404}


def test_the_default_limits_are_the_documented_ones():
    settings = load_settings()
    assert (settings.api_rate_limit, settings.login_rate_limit) == ("1200/minute", "10/minute")
    with pytest.raises(ConfigError, match="COBRABOT_LOGIN_RATE_LIMIT"):
        load_settings(login_rate_limit="often")


def test_limits_are_shared_through_redis_when_configured(services, db, clock, api_headers, redis_url, redis_client):
    for key in redis_client.scan_iter("*cobrabot:limits*"):
        redis_client.delete(key)
    settings = load_settings(
        database_url=services.settings.database_url,
        secret_key=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        public_url=TEST_PUBLIC_URL,
        redis_url=redis_url,
        api_rate_limit="2/minute",
    )
    first, second = (create_app(services=bootstrap(settings, database=db, clock=clock)).test_client() for _ in "12")
    assert first.get("/api/v1/cases", headers=api_headers).status_code == 200
    assert second.get("/api/v1/cases", headers=api_headers).status_code == 200
    assert first.get("/api/v1/cases", headers=api_headers).status_code == 429  # two "processes", one budget
    assert any(redis_client.scan_iter("*cobrabot:limits*"))
    for key in redis_client.scan_iter("*cobrabot:limits*"):
        redis_client.delete(key)


def test_the_limiter_runs_for_the_api_and_sign_in_only(services, db, clock, api_headers):
    app = limited_app(services, db, clock, api_rate_limit="5/minute", login_rate_limit="5/minute")
    (limiter,) = app.extensions["limiter"]
    app_wide = [hook for table in HOOK_TABLES for hook in getattr(app, table).get(None, [])]
    # Webhooks skip its hooks altogether (they cost more than accepting a queued webhook), not just its limits.
    assert not [hook for hook in app_wide if limiter in (getattr(hook, "__self__", None), *getattr(hook, "args", ()))]
    client = app.test_client()
    assert client.get("/api/v1/cases", headers=api_headers).headers["X-RateLimit-Remaining"] == "4"
    form = {"email": "ana@cobrabot.example", "password": "wrong", "csrf_token": csrf_token(client)}
    assert client.post("/admin/login", data=form).headers["X-RateLimit-Limit"] == "5"
    assert "X-RateLimit-Limit" not in client.post("/webhooks/twilio/sms", data={}).headers
