"""Unsubscribe links (`/u/<token>`, the URL in email's List-Unsubscribe): a confirmation page on GET, the opt-out
on POST, both RFC 8058 one-click from the mail provider and the page's own button.

GET never changes anything: mail scanners and link previews fetch every URL in an email, and must not unsubscribe
the debtor by looking.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, render_template_string
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.audit import record
from bot.domain import ChannelName
from bot.i18n import language_of
from bot.models import ConsentOptOut, Debtor
from bot.outreach import opted_out_channels
from bot.services import Services
from bot.templates import TemplateRenderer
from bot.unsubscribe import UnsubscribeLinks

logger = logging.getLogger(__name__)
blueprint = Blueprint("unsubscribe", __name__)

# ConsentOptOut.source holds 16 characters; "email_unsubscribe" would not fit (the channel column says "email").
OPT_OUT_SOURCE = "unsubscribe_link"
TEXT_KEYS = ("unsubscribe_page_title", "unsubscribe_page_confirm", "unsubscribe_page_button", "unsubscribe_page_done")
CHANNELS = frozenset(channel.value for channel in ChannelName)
# Self-contained (no static files, no remote resources); Jinja autoescapes every text, templates are manager-edited.
PAGE = """<!doctype html>
<html lang="{{ lang }}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <meta name="robots" content="noindex">
  <title>{{ texts.unsubscribe_page_title }}</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem;
           line-height: 1.5; color: #222; }
    button { font: inherit; padding: .6rem 1.2rem; cursor: pointer; }
  </style>
</head>
<body>
  <main>
    <h1>{{ texts.unsubscribe_page_title }}</h1>
    {% if done %}
    <p class="done">{{ texts.unsubscribe_page_done }}</p>
    {% else %}
    <p>{{ texts.unsubscribe_page_confirm }}</p>
    <form method="post">
      <input type="hidden" name="List-Unsubscribe" value="One-Click">
      <button type="submit">{{ texts.unsubscribe_page_button }}</button>
    </form>
    {% endif %}
  </main>
</body>
</html>
"""


def services() -> Services:
    return current_app.extensions["cobrabot"]


def _token_target(token: str) -> tuple[int, str]:
    """(debtor id, channel) of a genuine token; anything else is 404, saying nothing about why."""
    settings = services().settings
    target = UnsubscribeLinks(settings.secret_key, settings.public_url).read(token)
    if target is None or target[1] not in CHANNELS:
        abort(404)
    return target


@blueprint.get("/u/<token>")
def page(token: str) -> Response:
    debtor_id, channel = _token_target(token)
    with services().database.session() as session:
        debtor = session.get(Debtor, debtor_id)
        if debtor is None:
            abort(404)
        return _page(session, debtor, channel, done=_opted_out(session, debtor_id, channel))


@blueprint.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    """RFC 8058 one-click (the provider POSTs `List-Unsubscribe=One-Click`) and the page's button alike.

    No CSRF token, deliberately: the mail provider's POST cannot carry one, and none is needed. The signed URL
    is itself the capability (only the debtor's mailbox has it), no cookie or session is involved that a forged
    cross-site request could ride on, and the only effect is the opt-out the link's holder asks for.
    """
    debtor_id, channel = _token_target(token)
    svc = services()
    with svc.database.unit_of_work() as uow:
        # The row lock (PostgreSQL; SQLite's write transaction already serialises) makes a provider's retry
        # racing the debtor's own click record one opt-out, not two.
        debtor = uow.session.scalars(select(Debtor).where(Debtor.id == debtor_id).with_for_update()).one_or_none()
        if debtor is None:
            abort(404)
        if not _opted_out(uow.session, debtor_id, channel):
            now = svc.clock()
            opt_out = ConsentOptOut(debtor_id=debtor_id, channel=channel, source=OPT_OUT_SOURCE, created_at=now)
            uow.session.add(opt_out)
            event = record(uow.session, "debtor", "consent.opted_out", opt_out, channel=channel, via=OPT_OUT_SOURCE)
            event.occurred_at = now
            uow.commit()
            logger.info("debtor %s unsubscribed from %s by link", debtor_id, channel)
        return _page(uow.session, debtor, channel, done=True)


def _opted_out(session: Session, debtor_id: int, channel: str) -> bool:
    blocked = opted_out_channels(session, debtor_id)
    return channel in blocked or "all" in blocked


def _page(session: Session, debtor: Debtor, channel: str, *, done: bool) -> Response:
    renderer = TemplateRenderer.from_session(session)
    variables = {"creditor_name": debtor.creditor.name}
    texts = {key: renderer.render(key, debtor.locale, channel, variables) for key in TEXT_KEYS}
    html = render_template_string(PAGE, texts=texts, lang=language_of(debtor.locale), done=done)
    response = Response(html, mimetype="text/html")
    # The URL is a capability: keep it out of caches, search engines and other sites' referrer logs.
    response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"})
    return response
