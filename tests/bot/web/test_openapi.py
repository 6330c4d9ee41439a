"""The published OpenAPI document tells the truth: schemathesis fuzzes every operation of the real app with it.

Valid and invalid requests alike must get a documented status code (never a 5xx), the documented content
type and a body that matches the documented schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.models import Debtor
from bot.web.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [(path, method) for path, item in document()["paths"].items() for method in item]
# The document's own path examples: seeding them lets generated requests reach rows that exist.
SEEDED = {"slug": "aguas-andinas", "external_ref": "C-1001"}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def strategies(operation: Any) -> list[st.SearchStrategy[schemathesis.Case]]:
    mode = schemathesis.GenerationMode
    names = {parameter.name for parameter in operation.path_parameters}
    found = [operation.as_strategy(mode.POSITIVE)]
    if "slug" in names:
        found.append(operation.as_strategy(mode.POSITIVE, path_parameters={"slug": SEEDED["slug"]}))
    if "external_ref" in names:
        found.append(operation.as_strategy(mode.POSITIVE, path_parameters=SEEDED))
    if names or operation.query or operation.body:
        found.append(operation.as_strategy(mode.NEGATIVE))
    return found


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_operation_answers_as_documented(
    app: Flask, make_debtor: Callable[..., Debtor], api_headers: dict[str, str], path: str, method: str
) -> None:
    make_debtor()
    operation = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)[path][method.upper()]

    @FUZZ
    @given(case=st.one_of(strategies(operation)))
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=api_headers, checks=CHECKS)

    fuzz()


def test_document_declares_bearer_auth_and_every_error_answer() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of COBRABOT_API_TOKEN",
    }
    for path, method in OPERATIONS:
        responses = spec["paths"][path][method]["responses"]
        if path != "/openapi.json":
            assert {"401", "429", "503"} <= responses.keys(), (method, path)
        if "requestBody" in spec["paths"][path][method]:
            assert {"400", "422"} <= responses.keys(), (method, path)


def test_document_is_served_without_a_token(client: Any) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == document()
