"""Console users (agents, managers, admins): creation and password hashing with argon2id."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import Agent

ROLES = ("agent", "manager", "admin")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class AgentError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AgentError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_agent(session: Session, email: str, password: str, role: str = "agent", name: str = "") -> Agent:
    email = email.strip().lower()
    if role not in ROLES:
        raise AgentError(f"role must be one of {', '.join(ROLES)}")
    if "@" not in email:
        raise AgentError("email must be an email address")
    if session.scalar(select(Agent.id).where(Agent.email == email)) is not None:
        raise AgentError(f"an agent with email {email} already exists")
    agent = Agent(email=email, name=name, role=role, password_hash=hash_password(password))
    session.add(agent)
    return agent
