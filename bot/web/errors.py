"""JSON error responses with a machine-readable code, a human reason and, for bad input, each bad field."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from pydantic import ValidationError


def json_error(status: int, error: str, message: str, fields: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    return response


def validation_error(exc: ValidationError) -> Response:
    """422 naming every bad field as a dotted path (invoices.0.amount) with the reason."""
    fields = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "reason": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
    return json_error(422, "validation_failed", "the request body has invalid fields", fields)


def field_error(field: str, reason: str) -> Response:
    return json_error(
        422, "validation_failed", "the request body has invalid fields", [{"field": field, "reason": reason}]
    )
