"""The handoff inbox and the conversation page: thread, reply, notes, claim/assign, resolve, back to the bot."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, abort, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user

from admin.auth import current_actor, require_role
from admin.responses import run_action
from admin.services import (
    CANNED_REPLIES,
    Console,
    agents,
    message_json,
    notes,
    opted_out,
    thread,
    waiting_conversations,
    window_open,
)
from bot.models import Conversation, Debtor
from bot.services import Services

blueprint = Blueprint("inbox", __name__)


def services() -> Services:
    return current_app.extensions["cobrabot"]


def console() -> Console:
    svc = services()
    return Console(svc.database, svc.locks, svc.clock, svc.settings.whatsapp_templates)


@blueprint.get("/inbox")
def inbox() -> ResponseReturnValue:
    svc = services()
    with svc.database.session() as session:
        rows = waiting_conversations(session, svc.clock())
    return render_template("admin/inbox.html", rows=rows)


@blueprint.get("/inbox.json")
def inbox_json() -> ResponseReturnValue:
    svc = services()
    with svc.database.session() as session:
        rows = waiting_conversations(session, svc.clock())
    return {"conversations": [row.as_json() for row in rows], "me": current_user.id}


@blueprint.get("/conversations/<int:conversation_id>")
def conversation(conversation_id: int) -> ResponseReturnValue:
    svc = services()
    now = svc.clock()
    with svc.database.session() as session:
        found = session.get(Conversation, conversation_id)
        if found is None:
            abort(404)
        debtor = session.get_one(Debtor, found.debtor_id)
        return render_template(
            "admin/conversation.html",
            conversation=found,
            debtor=debtor,
            messages=[message_json(message) for message in thread(session, conversation_id)],
            notes=notes(session, conversation_id),
            opted_out=opted_out(session, found),
            window_open=window_open(found, now),
            whatsapp_templates=sorted(svc.settings.whatsapp_templates),
            canned=CANNED_REPLIES,
            language=debtor.locale.split("-")[0],
            agents=agents(session) if current_user.at_least("manager") else [],
        )


@blueprint.get("/conversations/<int:conversation_id>/messages")
def messages(conversation_id: int) -> ResponseReturnValue:
    after = request.args.get("after", "0")
    if not after.isdigit():
        return {"error": "bad_request", "message": "after must be a message id (a whole number)"}, 400
    svc = services()
    with svc.database.session() as session:
        found = session.get(Conversation, conversation_id)
        if found is None:
            abort(404)
        rows = thread(session, conversation_id, after=int(after), limit=200)
        return {"messages": [message_json(message) for message in rows], "mode": found.mode}


def _act(conversation_id: int, action: Callable[[Console], object], done: str) -> ResponseReturnValue:
    page = url_for("admin.inbox.conversation", conversation_id=conversation_id)
    return run_action(page, lambda: action(console()), done)


@blueprint.post("/conversations/<int:conversation_id>/claim")
def claim(conversation_id: int) -> ResponseReturnValue:
    return _act(conversation_id, lambda c: c.claim(conversation_id, current_actor()), "Assigned to you.")


@blueprint.post("/conversations/<int:conversation_id>/assign")
@require_role("manager")
def assign(conversation_id: int) -> ResponseReturnValue:
    raw = request.form.get("agent_id", "")
    if raw and not raw.isdigit():
        abort(400)
    agent_id = int(raw) if raw else None
    return _act(conversation_id, lambda c: c.assign(conversation_id, current_actor(), agent_id), "Assignment saved.")


@blueprint.post("/conversations/<int:conversation_id>/reply")
def reply(conversation_id: int) -> ResponseReturnValue:
    text, template_key = request.form.get("text", ""), request.form.get("template_key") or None
    return _act(
        conversation_id, lambda c: c.reply(conversation_id, current_actor(), text, template_key), "Reply queued."
    )


@blueprint.post("/conversations/<int:conversation_id>/notes")
def note(conversation_id: int) -> ResponseReturnValue:
    text = request.form.get("text", "")
    return _act(conversation_id, lambda c: c.add_note(conversation_id, current_actor(), text), "Note added.")


@blueprint.post("/conversations/<int:conversation_id>/resolve")
def resolve(conversation_id: int) -> ResponseReturnValue:
    return _act(conversation_id, lambda c: c.resolve(conversation_id, current_actor()), "Conversation resolved.")


@blueprint.post("/conversations/<int:conversation_id>/return-to-bot")
def return_to_bot(conversation_id: int) -> ResponseReturnValue:
    done = "The bot has the conversation again."
    return _act(conversation_id, lambda c: c.return_to_bot(conversation_id, current_actor()), done)
