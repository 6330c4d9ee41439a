"""Managers' flow versions, free of Flask: drafts, publishing (validated), roll back, diff, graph, simulator.

Version 0 of a name stands for the shipped file (flows/<name>.yaml); FlowVersion rows number from the shipped
version + 1. The engine runs the latest published row (bot/flow_store.py), so publishing archives the previous
one and tells this process's flow store at once.
"""

from __future__ import annotations

import difflib
import re
from collections import deque
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.services import Actor, ConsoleError, NotFound
from bot.audit import record
from bot.debtors import national_id_tail
from bot.domain import ConversationState, InboundMessage, Money
from bot.engine import DebtorFacts, DialogEngine
from bot.flow_store import forget_published_flows
from bot.models import FlowVersion
from bot.negotiation import DEFAULT_POLICY
from bot.nlu import Understander
from bot.templates import TemplateError, TemplateRenderer
from flows import FLOWS_DIR
from flows.loader import Flow, FlowError, default_flow, parse_flow
from flows.validator import FlowProblem, validate_flow_text

SHIPPED = 0
MAX_SOURCE_CHARS = 200_000
MAX_MESSAGE_CHARS = 1_000
SIMULATOR_ID_TAIL = "1234"  # the test debtor's identity answer: the last 4 digits of its document
SIMULATOR_MODES = ("bot", "human", "closed")
# What the effects add to replies (links, amounts) when a real turn is applied; the simulator applies none.
SAMPLE_OUTPUTS: dict[str, Any] = {
    "link": "https://example.invalid/p/sample",
    "receipt_link": "https://example.invalid/r/sample",
    "amount": Money(150_000, "CLP"),
    "total": Money(150_000, "CLP"),
    "promised_date": date(2026, 12, 4),
    "latest": date(2026, 12, 25),
}


def flow_names() -> list[str]:
    return sorted(path.stem for path in Path(FLOWS_DIR).glob("*.yaml"))


def known_name(name: str) -> str:
    if name not in flow_names():
        raise NotFound(name)
    return name


def shipped_source(name: str) -> str:
    return Path(FLOWS_DIR, f"{known_name(name)}.yaml").read_text(encoding="utf-8")


def versions(session: Session, name: str) -> list[FlowVersion]:
    query = select(FlowVersion).where(FlowVersion.name == name).order_by(FlowVersion.version.desc())
    return list(session.scalars(query))


def published(session: Session, name: str) -> FlowVersion | None:
    query = select(FlowVersion).where(FlowVersion.name == name, FlowVersion.status == "published")
    return session.scalars(query.order_by(FlowVersion.version.desc()).limit(1)).first()


def version_row(session: Session, name: str, version: int) -> FlowVersion:
    row = session.scalars(select(FlowVersion).where(FlowVersion.name == name, FlowVersion.version == version)).first()
    if row is None:
        raise NotFound(f"{name} v{version}")
    return row


def source_of(session: Session, name: str, version: int) -> str:
    return shipped_source(name) if version == SHIPPED else version_row(session, name, version).source


def published_source(session: Session, name: str) -> tuple[int, str]:
    """(version, source) of the flow in force: the published row, else the shipped file (version 0)."""
    row = published(session, name)
    return (row.version, row.source) if row else (SHIPPED, shipped_source(name))


def problems(name: str, source: str) -> list[FlowProblem]:
    """The validator's report, plus the one thing it cannot know: the flow must keep the name it is edited as."""
    found = validate_flow_text(source)
    try:
        written = parse_flow(source).name
    except FlowError:
        return found
    if written != name:
        line = next((i for i, text in enumerate(source.splitlines(), 1) if re.match(r"name\s*:", text)), None)
        found.append(FlowProblem(line, "name", f"name must stay {name!r} (this editor edits that flow)"))
    return found


def problems_json(found: list[FlowProblem]) -> list[dict[str, Any]]:
    return [asdict(problem) for problem in found]


def save_draft(session: Session, name: str, source: str, actor: Actor) -> FlowVersion:
    """A new draft version; drafts may be invalid (work in progress), publishing may not."""
    known_name(name)
    if not source.strip():
        raise ConsoleError("The flow is empty: nothing saved.")
    if len(source) > MAX_SOURCE_CHARS:
        raise ConsoleError(f"The flow is longer than {MAX_SOURCE_CHARS} characters: nothing saved.")
    row = FlowVersion(
        name=name, version=_next_version(session, name), status="draft", source=source, created_by_id=actor.id
    )
    session.add(row)
    record(session, actor.name, "flow.draft_saved", row, name=name, version=row.version)
    return row


def publish(session: Session, name: str, version: int, actor: Actor, now: datetime) -> FlowVersion:
    row = version_row(session, name, version)
    if row.status != "draft":
        raise ConsoleError(f"Version {version} is {row.status}; only a draft can be published (roll back instead).")
    found = problems(name, row.source)
    if found:
        first = "; ".join(f"line {p.line or '?'}: {p.message}" for p in found[:3])
        raise ConsoleError(f"Version {version} has {len(found)} problem(s) and cannot be published: {first}")
    previous = published(session, name)
    if previous is not None:
        previous.status = "archived"
    row.status, row.published_at = "published", now
    record(
        session, actor.name, "flow.published", row, name=name, version=version,
        previous=previous.version if previous else SHIPPED,
    )  # fmt: skip
    session.flush()
    return row


def rollback(session: Session, name: str, version: int, actor: Actor, now: datetime) -> FlowVersion:
    """Publish an older version's source again, as a new version (history is never rewritten)."""
    copy = save_draft(session, name, source_of(session, name, version), actor)
    session.flush()
    row = publish(session, name, copy.version, actor, now)
    record(session, actor.name, "flow.rolled_back", row, name=name, to_source_of=version, version=row.version)
    return row


def published_changed() -> None:
    """Call after committing a publish: this process's engine switches at once, others within seconds."""
    forget_published_flows()


def _next_version(session: Session, name: str) -> int:
    highest = session.scalar(select(func.max(FlowVersion.version)).where(FlowVersion.name == name)) or 0
    return max(highest, default_flow(name).version) + 1


def diff_table(session: Session, name: str, version: int) -> str:
    """An HTML side-by-side diff (HtmlDiff escapes the text) of the flow in force against `version`."""
    base_version, base = published_source(session, name)
    label = f"published v{base_version}" if base_version else "shipped file"
    return difflib.HtmlDiff(wrapcolumn=80).make_table(
        base.splitlines(), source_of(session, name, version).splitlines(), label, f"v{version}", context=True
    )


# --- diagram ----------------------------------------------------------------------------------------------


def graph(source: str) -> dict[str, Any]:
    """Nodes (with their BFS depth from start, the diagram's column) and edges, for flow_diagram.js."""
    try:
        flow = parse_flow(source)
    except FlowError as exc:
        raise ConsoleError(str(exc)) from exc
    edges = [
        {"from": node.name, "to": target, "label": label}
        for node in flow.nodes.values()
        for label, target in _transitions(node)
    ]
    depth = _depths(flow)
    nodes = [
        {
            "id": node.name, "depth": depth.get(node.name), "public": node.public, "action": node.action,
            "end": node.end, "say": list(node.say), "start": node.name == flow.start,
        }
        for node in flow.nodes.values()
    ]  # fmt: skip
    return {"name": flow.name, "start": flow.start, "nodes": nodes, "edges": edges, "globals": flow.globals}


def _transitions(node: Any) -> list[tuple[str, str]]:
    found = list(node.on.items())
    found += [(key, target) for key, target in (("next", node.next), ("fallback", node.fallback)) if target]
    if node.timeout_goto:
        found.append((f"timeout {node.timeout_hours:g}h", node.timeout_goto))
    return found


def _depths(flow: Flow) -> dict[str, int]:
    roots = [flow.start, flow.verified_start, *flow.globals.values()]
    depth: dict[str, int] = {}
    queue: deque[str] = deque()
    for root in roots:
        if root and root in flow.nodes and root not in depth:
            depth[root] = 0 if root == flow.start else 1
            queue.append(root)
    while queue:
        name = queue.popleft()
        for target in flow.nodes[name].targets():
            if target in flow.nodes and target not in depth:
                depth[target] = depth[name] + 1
                queue.append(target)
    return depth


# --- simulator --------------------------------------------------------------------------------------------


def simulate(
    session: Session, flow: Flow, nlu: Understander, text: str, state: Any, locale: str, now: datetime
) -> dict[str, Any]:
    """One turn of `flow` for a made-up debtor, in memory: nothing is stored, applied or sent.

    The state travels to the browser and back (it is only the test debtor's); commands are listed, not applied.
    """
    if not text.strip() or len(text) > MAX_MESSAGE_CHARS:
        raise ConsoleError(f"Write a message of 1 to {MAX_MESSAGE_CHARS} characters.")
    current = _state(flow, state)
    message = InboundMessage("webchat", "simulator", text, received_at=now)
    engine = DialogEngine(nlu, lambda _name, _version: flow)
    try:
        turn = engine.handle(current, message, _test_facts(locale, now), lambda: now)
    except Exception as exc:  # a draft is untrusted: its failure is the manager's answer, not a server error
        raise ConsoleError(f"The flow failed on this message: {exc}") from exc
    renderer = TemplateRenderer.from_session(session)
    return {
        "replies": [_render(renderer, reply.template_key, locale, reply.variables) for reply in turn.replies],
        "commands": [type(command).__name__ for command in turn.commands],
        "intent": turn.intent.value if turn.intent else None,
        "state": {
            "node": turn.state.node, "slots": turn.state.slots, "mode": turn.state.mode,
            "verified": turn.state.identity_verified,
        },
    }  # fmt: skip


def _state(flow: Flow, state: Any) -> ConversationState:
    if state is None:
        return ConversationState(flow.name, flow.version, flow.start)
    if not isinstance(state, dict):
        raise ConsoleError("state must be an object")
    node, slots, mode = state.get("node") or flow.start, state.get("slots") or {}, state.get("mode", "bot")
    if not isinstance(node, str) or not isinstance(slots, dict) or mode not in SIMULATOR_MODES:
        raise ConsoleError("state needs node (text), slots (object) and mode (bot, human or closed)")
    return ConversationState(flow.name, flow.version, node, dict(slots), mode, bool(state.get("verified")))


def _test_facts(locale: str, now: datetime) -> DebtorFacts:
    return DebtorFacts(
        debtor_name="Ana" if locale == "es" else "Anne",
        creditor_name="Acme (simulator)",
        locale=locale,
        timezone="America/Santiago",
        currency="CLP",
        balance=Money(150_000, "CLP"),
        next_due_date=now.date() + timedelta(days=5),
        policy=DEFAULT_POLICY,
        identity_check=lambda answer: national_id_tail(answer) == SIMULATOR_ID_TAIL,
    )


def _render(renderer: TemplateRenderer, key: str, locale: str, variables: dict[str, Any]) -> dict[str, str]:
    try:
        text = renderer.render(key, locale, "webchat", variables)
    except TemplateError:
        try:  # an action's outputs (a payment link, a receipt) are sample values here
            text = renderer.render(key, locale, "webchat", SAMPLE_OUTPUTS | variables)
        except TemplateError as exc:
            text = f"[{key}: {exc}]"
    return {"key": key, "text": text}
