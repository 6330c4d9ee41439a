"""Managing console accounts (admins only): create, change role, deactivate or reactivate, reset a password.

The rules an admin cannot break by mistake: nobody deactivates or demotes themselves, and the last active admin
stays an admin (otherwise nobody could manage accounts any more). Every change is audited; deactivating an
agent or resetting their password ends their sessions at once (admin/auth.py re-reads the agent per request).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from admin.services import Actor, ConsoleError, NotFound
from bot.agents import ROLES, AgentError, create_agent, hash_password
from bot.audit import record
from bot.models import Agent


def list_agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).order_by(Agent.active.desc(), Agent.email)))


def add_agent(session: Session, actor: Actor, email: str, name: str, role: str, password: str) -> Agent:
    try:
        agent = create_agent(session, email, password, role=role, name=name.strip())
    except AgentError as exc:
        raise ConsoleError(f"Not created: {exc}.") from exc
    session.flush()
    record(session, actor.name, "agent.created", agent, email=agent.email, role=role)
    return agent


def change_role(session: Session, actor: Actor, agent_id: int, role: str) -> Agent:
    if role not in ROLES:
        raise ConsoleError(f"Role must be one of {', '.join(ROLES)}.")
    agent = _agent(session, agent_id)
    if agent.id == actor.id and role != agent.role:
        raise ConsoleError("You cannot change your own role; ask another admin.")
    if agent.role == "admin" and role != "admin":
        _keep_an_admin(session, agent)
    old, agent.role = agent.role, role
    record(session, actor.name, "agent.role_changed", agent, old=old, new=role)
    return agent


def set_active(session: Session, actor: Actor, agent_id: int, active: bool) -> Agent:
    agent = _agent(session, agent_id)
    if agent.id == actor.id and not active:
        raise ConsoleError("You cannot deactivate your own account.")
    if agent.role == "admin" and not active:
        _keep_an_admin(session, agent)
    agent.active = active
    if active:
        agent.failed_logins, agent.locked_until = 0, None
    record(session, actor.name, "agent.activated" if active else "agent.deactivated", agent)
    return agent


def reset_password(session: Session, actor: Actor, agent_id: int, password: str) -> Agent:
    agent = _agent(session, agent_id)
    try:
        agent.password_hash = hash_password(password)
    except AgentError as exc:
        raise ConsoleError(f"Not changed: {exc}.") from exc
    agent.failed_logins, agent.locked_until = 0, None
    record(session, actor.name, "agent.password_reset", agent)  # never the password itself
    return agent


def _agent(session: Session, agent_id: int) -> Agent:
    agent = session.scalars(select(Agent).where(Agent.id == agent_id).with_for_update()).one_or_none()
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    return agent


def _keep_an_admin(session: Session, leaving: Agent) -> None:
    others = session.scalar(
        select(func.count()).where(Agent.role == "admin", Agent.active.is_(True), Agent.id != leaving.id)
    )
    if not others:
        raise ConsoleError("This is the last active admin: make someone else an admin first.")
