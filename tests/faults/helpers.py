"""What the fault tests share: a Twilio-enabled app against the stand-in, signed webhooks, row counts, free ports."""

from __future__ import annotations

import socket
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from bot.app import create_app
from bot.config import load_settings
from bot.models import Debtor, InboxItem, Message, Outbox, Payment
from bot.services import Services, bootstrap
from bot.store import Database
from channels import build_registry
from tests.conftest import TEST_API_TOKEN, TEST_PUBLIC_URL, TEST_SECRET

SID, TOKEN = "AC" + "2" * 32, "twilio-fault-token"
SMS_FROM = "+15005550006"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
SMS_PATH = "/webhooks/twilio/sms"


def twilio_services(database: Database, clock: Any, api_url: str, **overrides: Any) -> Services:
    settings = load_settings(
        database_url=database.url,
        secret_key=TEST_SECRET,
        api_token=TEST_API_TOKEN,
        public_url=TEST_PUBLIC_URL,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_sms_from=SMS_FROM,
        twilio_api_url=api_url,
        **overrides,
    )
    return bootstrap(settings, database=database, clock=clock, registry=build_registry(settings))


def twilio_app(services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


def sms_form(sender: str, body: str, sid: str) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": SID, "From": sender, "To": SMS_FROM, "Body": body}


def signature(path: str, form: dict[str, str]) -> str:
    return RequestValidator(TOKEN).compute_signature(TEST_PUBLIC_URL + path, form)


def post_sms(app: Flask, form: dict[str, str], path: str = SMS_PATH) -> TestResponse:
    return app.test_client().post(path, data=form, headers={"X-Twilio-Signature": signature(path, form)})


def message_sid(index: int) -> str:
    return f"SM{index:032x}"


def count(database: Database, model: type, *where: Any) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


_GUARDED = (Message, Outbox, Payment, Debtor, InboxItem)
# One statement for all of them: the fuzz tests take these counts twice per example, thousands of times.
_ROW_COUNTS = select(*(select(func.count()).select_from(model).scalar_subquery() for model in _GUARDED))


def row_counts(database: Database) -> dict[str, int]:
    """The tables a rejected request must never change."""
    with database.engine.connect() as connection:
        counts = connection.execute(_ROW_COUNTS).one()
    return {model.__tablename__: number for model, number in zip(_GUARDED, counts, strict=True)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
