"""Helpers shared by the console tests: agents, sign-in, CSRF tokens and handed-off conversations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import admin
from bot.agents import create_agent
from bot.app import create_app
from bot.models import Agent, Conversation, Debtor, Message
from bot.services import Services
from bot.store import Database

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_app(services: Services) -> Flask:
    """The app with the console, whether or not create_app registers it yet."""
    app = create_app(services=services)
    if "admin" not in app.blueprints:
        admin.register(app)
    app.config["TESTING"] = True
    return app


def add_agent(database: Database, email: str, role: str = "agent", active: bool = True) -> int:
    with database.session() as session:
        agent = create_agent(session, email, PASSWORD, role=role, name=email.split("@")[0].title())
        agent.active = active
        session.commit()
        return agent.id


def csrf_token(client: FlaskClient, path: str = "/admin/login") -> str:
    match = _TOKEN.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def signed_in(console: Flask, database: Database, email: str, role: str) -> FlaskClient:
    """A test client signed in as a new account with `role`."""
    add_agent(database, email, role=role)
    client = console.test_client()
    assert sign_in(client, email).status_code == 302
    return client


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> TestResponse:
    token = csrf_token(client)
    return client.post("/admin/login", data={"email": email, "password": password, "csrf_token": token})


def handed_off(
    database: Database, debtor: Debtor, now: datetime, channel: str = "sms", waited_minutes: int = 30
) -> int:
    """A conversation the bot handed to a person `waited_minutes` ago, with one message each way."""
    with database.session() as session:
        conversation = Conversation(
            debtor_id=debtor.id,
            channel=channel,
            address=debtor.phone or "",
            mode="human",
            node="human_handoff",
            slots={"_started": True, "offer": {"n": 3}},
            handoff_reason="asked_for_human",
            handoff_at=now - timedelta(minutes=waited_minutes),
            identity_verified_at=now - timedelta(hours=1),
            last_inbound_at=now - timedelta(minutes=waited_minutes),
        )
        session.add(conversation)
        session.flush()
        for direction, body in (("in", "quiero hablar con una persona"), ("out", "Le comunico con un ejecutivo.")):
            session.add(
                Message(
                    conversation_id=conversation.id,
                    debtor_id=debtor.id,
                    direction=direction,
                    channel=channel,
                    body=body,
                    created_at=now - timedelta(minutes=waited_minutes),
                )
            )
        session.commit()
        return conversation.id


def agent_row(database: Database, agent_id: int) -> Agent:
    with database.session() as session:
        return session.get_one(Agent, agent_id)
