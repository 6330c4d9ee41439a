"""Health and metrics endpoints."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from bot.store import Database


def test_healthz_reports_database_locks_and_disabled_channels(client):
    response = client.get("/healthz")
    body = response.get_json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["locks"] == "in-process"
    assert body["checks"]["channels"]["webchat"] == "enabled"
    assert body["checks"]["channels"]["sms"].startswith("disabled: TWILIO_ACCOUNT_SID")


def broken(self: Database) -> None:
    raise OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_healthz_is_503_when_the_database_is_unreachable(client, services, monkeypatch):
    monkeypatch.setattr(Database, "ping", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unreachable"


def test_metrics_count_requests_by_endpoint_without_leaking_tokens(client):
    client.get("/healthz")
    client.get("/p/secret-token-value")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cobrabot_http_requests_total{endpoint="ops.healthz",method="GET",status="200"} 1.0' in text
    assert 'endpoint="portal.page"' in text
    assert "secret-token-value" not in text


def test_unknown_api_path_gets_a_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_repeated_requests_keep_counting_in_their_own_series(client, services, monkeypatch):
    # Each label set's child is cached after the first request: later ones must still land in it, and only in it.
    for _ in range(3):
        client.get("/healthz")
    monkeypatch.setattr(Database, "ping", broken)
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cobrabot_http_requests_total{endpoint="ops.healthz",method="GET",status="200"} 3.0' in text
    assert 'cobrabot_http_requests_total{endpoint="ops.healthz",method="GET",status="503"} 1.0' in text
    assert 'cobrabot_http_request_seconds_count{endpoint="ops.healthz"} 4.0' in text
