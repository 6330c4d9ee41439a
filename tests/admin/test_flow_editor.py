"""The flow editor: live validation, drafts, publish (validated), roll back, diff, diagram, simulator, roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.domain import InboundMessage
from bot.flow_store import PublishedFlows
from bot.models import AuditEvent, Creditor, Debtor, FlowVersion, Message, Outbox
from bot.services import Services
from bot.store import Database
from flows import FLOWS_DIR
from tests.admin import csrf_token

SHIPPED = (FLOWS_DIR / "collections.yaml").read_text(encoding="utf-8")
# The start node asks with another public text: a visible, valid change.
CHANGED = SHIPPED.replace("ask: verify_identity}", "ask: identity_failed}")
BROKEN = SHIPPED.replace(
    "on: {verified: menu, failed: verify_failed, locked: verify_locked}", "on: {verified: nowhere}"
)
RETRY_ES = "Esos datos no coinciden con nuestros registros."
ASK_ES = "¿me indica los últimos 4 dígitos"


def _headers(client: FlaskClient) -> dict[str, str]:
    return {"X-CSRFToken": csrf_token(client, "/admin/flows/collections")}


def _save(client: FlaskClient, source: str) -> int:
    token = csrf_token(client, "/admin/flows/collections")
    response = client.post("/admin/flows/collections/drafts", data={"source": source, "csrf_token": token})
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("version=", 1)[1])


def _post(client: FlaskClient, path: str) -> str:
    token = csrf_token(client, "/admin/flows/collections")
    response = client.post(path, data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _statuses(db: Database) -> dict[int, str]:
    with db.session() as session:
        return dict(session.execute(select(FlowVersion.version, FlowVersion.status)).tuples().all())


def test_validate_endpoint_reports_problems_with_line_numbers(boss: FlaskClient) -> None:
    response = boss.post(
        "/admin/flows/validate", json={"name": "collections", "source": BROKEN}, headers=_headers(boss)
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["valid"] is False
    line = next(i for i, text in enumerate(BROKEN.splitlines(), 1) if "verified: nowhere" in text)
    assert {"line": line, "path": "nodes.verify.on.verified", "message": "unknown node 'nowhere'"} in body["problems"]

    bad_yaml = boss.post("/admin/flows/validate", json={"source": "name: [unclosed\n"}, headers=_headers(boss))
    assert bad_yaml.get_json()["problems"][0]["line"] == 2
    ok = boss.post("/admin/flows/validate", json={"source": SHIPPED}, headers=_headers(boss)).get_json()
    assert ok == {"valid": True, "problems": []}


def test_validate_refuses_a_request_without_source_and_without_csrf(boss: FlaskClient) -> None:
    assert boss.post("/admin/flows/validate", json={"nope": 1}, headers=_headers(boss)).status_code == 400
    assert boss.post("/admin/flows/validate", json={"source": SHIPPED}).status_code == 400  # no CSRF token


def test_an_invalid_draft_is_saved_but_cannot_be_published(boss: FlaskClient, db: Database) -> None:
    version = _save(boss, BROKEN)
    assert version == 2  # after the shipped version 1
    page = _post(boss, f"/admin/flows/collections/{version}/publish")
    assert "cannot be published" in page and "unknown node" in page
    assert _statuses(db) == {2: "draft"}


def test_an_empty_draft_is_refused_and_nothing_is_saved(boss: FlaskClient, db: Database) -> None:
    token = csrf_token(boss, "/admin/flows/collections")
    response = boss.post("/admin/flows/collections/drafts", data={"source": "  ", "csrf_token": token})
    assert response.status_code == 422
    assert "nothing saved" in response.get_data(as_text=True)
    assert _statuses(db) == {}


def test_publishing_makes_the_engine_use_the_new_version(
    boss: FlaskClient,
    db: Database,
    services: Services,
    make_creditor: Callable[..., Creditor],
    make_debtor: Callable[..., Debtor],
) -> None:
    creditor = make_creditor()
    debtor = make_debtor(creditor)
    first = services.conversations.receive(
        InboundMessage("sms", debtor.phone, "hola", provider_message_id="m1"), debtor.id
    )
    assert ASK_ES in first.replies[0].text

    version = _save(boss, CHANGED)
    assert "published" in _post(boss, f"/admin/flows/collections/{version}/publish")
    assert _statuses(db) == {version: "published"}

    other = make_debtor(creditor, external_ref="C-2002", phone="+56 9 6123 9999", email="b@example.cl", invoices=[])
    turn = services.conversations.receive(
        InboundMessage("sms", other.phone, "hola", provider_message_id="m2"), other.id
    )
    assert [reply.text for reply in turn.replies] == [RETRY_ES]
    with db.session() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.subject_type == "flowversion")).all()
    assert {"flow.draft_saved", "flow.published"} <= set(actions)


def test_rollback_publishes_an_older_version_again_as_a_new_one(
    boss: FlaskClient, db: Database, services: Services
) -> None:
    v2 = _save(boss, CHANGED)
    _post(boss, f"/admin/flows/collections/{v2}/publish")
    v3 = _save(boss, CHANGED.replace("ask: identity_failed}", "ask: verify_locked}"))
    _post(boss, f"/admin/flows/collections/{v3}/publish")
    assert _statuses(db) == {v2: "archived", v3: "published"}

    _post(boss, f"/admin/flows/collections/{v2}/rollback")
    assert _statuses(db) == {v2: "archived", v3: "archived", 4: "published"}
    flow = PublishedFlows(db)("collections")
    assert flow.version == 4 and flow.node("verify").slots[0].ask == "identity_failed"

    _post(boss, "/admin/flows/collections/0/rollback")  # back to the shipped file, as version 5
    assert PublishedFlows(db)("collections").node("verify").slots[0].ask == "verify_identity"


def test_diff_shows_the_change_escaped(boss: FlaskClient) -> None:
    version = _save(boss, CHANGED + "# <script>alert(1)</script>\n")
    page = boss.get(f"/admin/flows/collections/{version}/diff").get_data(as_text=True)
    assert 'ask:&nbsp;<span class="diff_sub">verify_</span>identity}' in page
    assert 'ask:&nbsp;identity<span class="diff_add">_failed</span>}' in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert boss.get("/admin/flows/collections/99/diff").status_code == 404


def test_diagram_json_has_the_nodes_and_edges_of_the_default_flow(boss: FlaskClient) -> None:
    graph = boss.get("/admin/flows/collections/0/graph.json").get_json()
    ids = {node["id"] for node in graph["nodes"]}
    assert {"verify", "menu", "verify_failed"} <= ids
    assert {"from": "verify", "to": "menu", "label": "verified"} in graph["edges"]
    assert {"from": "verify_failed", "to": "verify", "label": "next"} in graph["edges"]
    depth = {node["id"]: node["depth"] for node in graph["nodes"]}
    assert depth["verify"] == 0 and depth["verify_failed"] == 1
    assert graph["globals"]["opt_out"] == "opted_out"
    assert all(edge["to"] in ids for edge in graph["edges"])


def test_simulator_replies_with_the_drafts_text_and_writes_nothing(boss: FlaskClient, db: Database) -> None:
    version = _save(boss, CHANGED)
    headers = _headers(boss)
    path = f"/admin/flows/collections/{version}/simulate"
    first = boss.post(path, json={"message": "hola", "state": None, "locale": "es"}, headers=headers)
    assert first.status_code == 200, first.get_data(as_text=True)
    body = first.get_json()
    assert [reply["text"] for reply in body["replies"]] == [RETRY_ES]

    second = boss.post(path, json={"message": "1234", "state": body["state"], "locale": "es"}, headers=headers)
    after = second.get_json()
    assert after["state"]["verified"] is True
    assert "Ana" in " ".join(reply["text"] for reply in after["replies"])  # the test debtor, verified

    shipped = boss.post("/admin/flows/collections/0/simulate", json={"message": "hola"}, headers=headers).get_json()
    assert ASK_ES in shipped["replies"][0]["text"]
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0
        assert session.scalar(select(func.count()).select_from(Debtor)) == 0
    assert _statuses(db) == {version: "draft"}


def test_simulator_refuses_bad_input(boss: FlaskClient) -> None:
    headers = _headers(boss)
    path = "/admin/flows/collections/0/simulate"
    assert boss.post(path, json={"state": None}, headers=headers).status_code == 400
    assert boss.post(path, json={"message": "hola", "locale": "fr"}, headers=headers).status_code == 400
    refused = boss.post(path, json={"message": "hola", "state": {"mode": "sleeping"}}, headers=headers)
    assert refused.status_code == 422 and "mode" in refused.get_json()["message"]
    assert boss.post("/admin/flows/collections/42/simulate", json={"message": "x"}, headers=headers).status_code == 404


ROUTES = [
    ("get", "/admin/flows"),
    ("get", "/admin/flows/collections"),
    ("post", "/admin/flows/validate"),
    ("post", "/admin/flows/collections/drafts"),
    ("post", "/admin/flows/collections/2/publish"),
    ("post", "/admin/flows/collections/2/rollback"),
    ("get", "/admin/flows/collections/0/diff"),
    ("get", "/admin/flows/collections/0/graph.json"),
    ("post", "/admin/flows/collections/0/simulate"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_agents_get_403_on_every_flow_editor_route(
    agent: FlaskClient, boss: FlaskClient, db: Database, method: str, path: str
) -> None:
    token = csrf_token(agent, "/admin/cases")
    kwargs = {"data": {"csrf_token": token, "source": SHIPPED}} if method == "post" else {}
    assert getattr(agent, method)(path, **kwargs).status_code == 403
    assert _statuses(db) == {}
    if method == "get":
        assert boss.get(path).status_code == 200


def test_nav_shows_the_editors_to_managers_only(agent: FlaskClient, boss: FlaskClient) -> None:
    assert "/admin/flows" not in agent.get("/admin/cases").get_data(as_text=True)
    page = boss.get("/admin/cases").get_data(as_text=True)
    assert "/admin/flows" in page and "/admin/templates" in page and "/admin/creditors" in page
