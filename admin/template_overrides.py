"""Managers' template overrides, free of Flask: list, check, preview, save (versioned, audited), reset.

An override may only use the placeholders the engine provides for its key, which are the ones the shipped
default of that key uses; a text said before identity is verified (a public node's, as flows/validator.py
decides) may use none at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Any

from jinja2 import TemplateError as JinjaTemplateError
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin import flow_versions
from admin.services import Actor, ConsoleError, NotFound
from bot.audit import record
from bot.domain import Money
from bot.models import Template
from bot.templates import ANY_CHANNEL, TemplateError, TemplateRenderer, default_templates
from flows.loader import Flow, FlowError, default_flow, parse_flow
from flows.validator import DISCLOSES, PLACEHOLDER

LOCALES = ("es", "en")
CHANNELS = (ANY_CHANNEL, "sms", "whatsapp", "email", "telegram", "webchat")
MAX_BODY = 4000
# Said by the engine itself whatever the node, so also before verification (bot/engine.py, bot/conversations.py).
ENGINE_UNVERIFIED_KEYS = frozenset({"not_understood", "offer_human", "media_received"})
_TODAY = date(2026, 11, 25)
SAMPLE_FACTS: dict[str, Any] = {
    "debtor_name": "Ana",
    "creditor_name": "Acme",
    "balance": Money(150_000, "CLP"),
    "due_date": _TODAY + timedelta(days=5),
    "amount": Money(50_000, "CLP"),
    "total": Money(150_000, "CLP"),
    "link": "https://example.invalid/p/sample",
    "receipt_link": "https://example.invalid/r/sample",
    "promised_date": _TODAY + timedelta(days=9),
    "latest": _TODAY + timedelta(days=30),
    "answer": "Puede pagar por transferencia o en el portal.",
    "count": 3,
    "down_payment": Money(15_000, "CLP"),
    "first_date": _TODAY + timedelta(days=2),
    "installment_amount": Money(45_000, "CLP"),
    "installments_start": _TODAY + timedelta(days=32),
    "last_amount": Money(45_000, "CLP"),
    "invoice_number": "F-1001",
    "reason": "too_many_installments",
    "schedule": [
        {"seq": n, "date": _TODAY + timedelta(days=30 * n), "amount": Money(45_000, "CLP")} for n in (1, 2, 3)
    ],
}


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: str
    defaults: dict[str, str]  # locale -> default body (the any-channel one)
    overrides: list[Template]
    public: bool


@cache
def _parser() -> SandboxedEnvironment:
    # Parsing only: the filters exist so that a template using them parses; rendering uses bot.templates.
    environment = SandboxedEnvironment()
    environment.filters["money"] = environment.filters["date"] = lambda value, *_args: value
    return environment


def placeholders(body: str) -> set[str]:
    """The variables a template reads; raises ConsoleError with the line when it does not parse."""
    try:
        return set(meta.find_undeclared_variables(_parser().parse(body)))
    except JinjaTemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise ConsoleError(f"The template does not parse{f' (line {line})' if line else ''}: {exc}") from exc


def template_keys() -> list[str]:
    return sorted(set().union(*(default_templates(locale) for locale in LOCALES)))


def allowed_placeholders(key: str) -> set[str]:
    found: set[str] = set()
    for locale in LOCALES:
        for body in default_templates(locale).get(key, {}).values():
            found |= placeholders(str(body))
    return found


def public_keys(session: Session) -> frozenset[str]:
    """Keys said before verification: public nodes of the shipped and the published flows, and the engine's own."""
    flows: list[Flow] = [default_flow(name) for name in flow_versions.flow_names()]
    for name in flow_versions.flow_names():
        version, source = flow_versions.published_source(session, name)
        if version:
            with suppress(FlowError):  # a published flow was validated; one broken by hand adds no keys
                flows.append(parse_flow(source))
    used = {key for flow in flows for node in flow.nodes.values() if node.public for key in _keys_of(node)}
    return frozenset(used) | ENGINE_UNVERIFIED_KEYS


def _keys_of(node: Any) -> list[str]:
    return [*node.say, *(slot.ask for slot in node.slots)]


def rows(session: Session) -> list[KeyRow]:
    overrides: dict[str, list[Template]] = {}
    for row in session.scalars(select(Template).order_by(Template.key, Template.locale, Template.channel)):
        overrides.setdefault(row.key, []).append(row)
    public = public_keys(session)
    return [
        KeyRow(key, {loc: default_body(key, loc) for loc in LOCALES}, overrides.get(key, []), key in public)
        for key in template_keys()
    ]


def default_body(key: str, locale: str, channel: str = ANY_CHANNEL) -> str:
    variants: Mapping[str, str] = default_templates(locale).get(key) or {}
    return str(variants.get(channel) or variants.get("default") or variants.get(ANY_CHANNEL) or "")


def override(session: Session, key: str, locale: str, channel: str) -> Template | None:
    query = select(Template).where(Template.key == key, Template.locale == locale, Template.channel == channel)
    return session.scalars(query).first()


def check_target(key: str, locale: str, channel: str) -> None:
    if key not in template_keys():
        raise NotFound(key)
    if locale not in LOCALES:
        raise ConsoleError(f"Locale must be one of {', '.join(LOCALES)}.")
    if channel not in CHANNELS:
        raise ConsoleError(f"Channel must be one of {', '.join(CHANNELS)}.")


def check_body(session: Session, key: str, body: str) -> None:
    """Refuse a text the engine could not fill, or one that would disclose data before verification."""
    if not body.strip():
        raise ConsoleError("The text is empty; to go back to the default, use Reset.")
    if len(body) > MAX_BODY:
        raise ConsoleError(f"The text is longer than {MAX_BODY} characters.")
    used = placeholders(body)
    if key in public_keys(session) and PLACEHOLDER.search(body):
        raise ConsoleError(f"{key!r} is said before identity is verified: no placeholders allowed ({DISCLOSES}).")
    unknown = sorted(used - allowed_placeholders(key) - {"loop"})
    if unknown:
        allowed = ", ".join(sorted(allowed_placeholders(key))) or "none"
        raise ConsoleError(f"Unknown placeholder(s) {', '.join(unknown)} for {key!r}; this text can use: {allowed}.")


def preview(key: str, body: str, locale: str, channel: str) -> str:
    """The text as a debtor would read it, filled with sample facts."""
    renderer = TemplateRenderer({(key, locale, channel): body})
    try:
        return renderer.render(key, locale, "webchat" if channel == ANY_CHANNEL else channel, SAMPLE_FACTS)
    except TemplateError as exc:
        raise ConsoleError(f"The preview fails: {exc}") from exc


def save(session: Session, key: str, locale: str, channel: str, body: str, actor: Actor) -> Template:
    check_target(key, locale, channel)
    check_body(session, key, body)
    preview(key, body, locale, channel)  # a text that cannot render with the engine's facts is not saved
    row = override(session, key, locale, channel)
    old = row.body if row else default_body(key, locale, channel)
    if row is None:
        row = Template(key=key, locale=locale, channel=channel, body=body, version=1, updated_by_id=actor.id)
        session.add(row)
    else:
        row.body, row.version, row.updated_by_id = body, row.version + 1, actor.id
    record(session, actor.name, "template.saved", row, key=key, locale=locale, channel=channel, version=row.version,
           old=old, new=body)  # fmt: skip
    return row


def reset(session: Session, key: str, locale: str, channel: str, actor: Actor) -> None:
    check_target(key, locale, channel)
    row = override(session, key, locale, channel)
    if row is None:
        raise ConsoleError("There is no override to reset: the default is already in use.")
    record(session, actor.name, "template.reset", row, key=key, locale=locale, channel=channel, old=row.body,
           new=default_body(key, locale, channel))  # fmt: skip
    session.delete(row)
