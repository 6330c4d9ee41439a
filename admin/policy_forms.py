"""Managers' negotiation policies and reminder cadences, free of Flask: form fields <-> the core's models.

A policy is whatever bot.negotiation.NegotiationPolicy accepts and finds consistent (`problems()`); a cadence is
whatever bot.campaigns.validate_cadence accepts. Anything else is refused with the model's own messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.services import Actor, ConsoleError, NotFound
from bot.audit import record
from bot.campaigns import DEFAULT_CADENCE, CadenceSpec, validate_cadence
from bot.models import Cadence, Creditor
from bot.negotiation import DEFAULT_POLICY, HardshipTerms, NegotiationPolicy, PolicyTerms

POLICY_FIELDS = tuple(PolicyTerms.model_fields)
HARDSHIP_FIELDS = tuple(HardshipTerms.model_fields)
SEGMENT = re.compile(r"^[a-z0-9_]{1,32}$")
MAX_STEPS = 30


class FormErrors(ConsoleError):
    """The form's input is refused; `errors` lists every reason, in the model's words."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class StepRow:
    key: str = ""
    offset_days: str = ""
    template: str = ""
    channels: str = ""


def creditor(session: Session, creditor_id: int) -> Creditor:
    found = session.get(Creditor, creditor_id)
    if found is None:
        raise NotFound(f"creditor {creditor_id}")
    return found


def creditors(session: Session) -> list[Creditor]:
    return list(session.scalars(select(Creditor).order_by(Creditor.name)))


# --- negotiation policy -------------------------------------------------------------------------------------


def current_policy(row: Creditor) -> NegotiationPolicy:
    try:
        return NegotiationPolicy.model_validate(row.negotiation_policy) if row.negotiation_policy else DEFAULT_POLICY
    except ValidationError:
        return DEFAULT_POLICY  # old invalid data: the form starts from what the bot actually uses


def policy_form(policy: NegotiationPolicy) -> dict[str, str]:
    """Form values for a policy: hardship fields are prefixed `hardship_`, blank means "as normal"."""
    values = {name: _text(getattr(policy, name)) for name in POLICY_FIELDS}
    hardship = policy.hardship
    values["hardship_enabled"] = "on" if hardship is not None else ""
    values |= {f"hardship_{name}": _text(getattr(hardship, name, None)) for name in HARDSHIP_FIELDS}
    return values


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_policy(form: Mapping[str, str]) -> NegotiationPolicy:
    """The policy a submitted form describes; raises FormErrors with every problem, field by field."""
    data: dict[str, Any] = {name: _value(form.get(name, "")) for name in POLICY_FIELDS}
    data = {name: value for name, value in data.items() if value is not None or name == "full_payment_deadline_days"}
    if form.get("hardship_enabled"):
        data["hardship"] = {name: _value(form.get(f"hardship_{name}", "")) for name in HARDSHIP_FIELDS}
    else:
        data["hardship"] = None
    try:
        policy = NegotiationPolicy.model_validate(data)
    except ValidationError as exc:
        raise FormErrors([_error(error) for error in exc.errors()]) from exc
    if problems := policy.problems():
        raise FormErrors(problems)
    return policy


def _value(raw: str) -> Any:
    text = raw.strip()
    if not text:
        return None
    return int(text) if re.fullmatch(r"-?\d+", text) else text  # pydantic parses decimals; "monthly" stays text


def _error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if not str(part).startswith(("int", "literal")))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def save_policy(session: Session, creditor_id: int, form: Mapping[str, str], actor: Actor) -> NegotiationPolicy:
    row = creditor(session, creditor_id)
    policy = parse_policy(form)
    old = dict(row.negotiation_policy or {})
    row.negotiation_policy = policy.to_json()
    record(session, actor.name, "creditor.policy_changed", row, old=old, new=row.negotiation_policy)
    return policy


# --- cadences -----------------------------------------------------------------------------------------------


def cadence(session: Session, creditor_id: int, segment: str) -> Cadence | None:
    query = select(Cadence).where(Cadence.creditor_id == creditor_id, Cadence.segment == segment)
    return session.scalars(query).first()


def cadences(session: Session, creditor_id: int) -> list[Cadence]:
    return list(session.scalars(select(Cadence).where(Cadence.creditor_id == creditor_id).order_by(Cadence.segment)))


def step_rows(spec: CadenceSpec | None, blanks: int = 3) -> list[StepRow]:
    steps = spec.steps if spec else DEFAULT_CADENCE.steps
    rows = [StepRow(s.key, str(s.offset_days), s.template, ", ".join(c.value for c in s.channels)) for s in steps]
    return rows + [StepRow()] * blanks


def current_spec(row: Cadence | None) -> CadenceSpec | None:
    if row is None:
        return None
    try:
        return validate_cadence(row.steps)
    except ValidationError:
        return None


def submitted_rows(form: Mapping[str, Any], getlist: Any) -> list[StepRow]:
    """The form's step rows as typed (parallel lists key/offset_days/template/channels), blanks dropped."""
    columns = [getlist(name) for name in ("key", "offset_days", "template", "channels")]
    rows = [StepRow(*(str(value) for value in values)) for values in zip(*columns, strict=False)]
    return [row for row in rows if any(value.strip() for value in (row.key, row.offset_days, row.template))]


def parse_steps(rows: list[StepRow]) -> CadenceSpec:
    if len(rows) > MAX_STEPS:
        raise FormErrors([f"at most {MAX_STEPS} steps"])
    steps: list[dict[str, Any]] = []
    for row in rows:
        step: dict[str, Any] = {
            "key": row.key.strip(),
            "offset_days": row.offset_days.strip(),
            "template": row.template.strip(),
        }
        channels = [name.strip() for name in row.channels.split(",") if name.strip()]
        if channels:
            step["channels"] = channels
        steps.append(step)
    try:
        return validate_cadence(steps)
    except ValidationError as exc:
        raise FormErrors([_step_error(error, rows) for error in exc.errors()]) from exc


def _step_error(error: Mapping[str, Any], rows: list[StepRow]) -> str:
    loc = [part for part in error.get("loc", ()) if part != "steps"]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if loc and isinstance(loc[0], int):
        field = ".".join(str(part) for part in loc[1:])
        return f"step {loc[0] + 1} ({rows[loc[0]].key or 'no key'}) {field}: {message}"
    return message


def save_cadence(
    session: Session, creditor_id: int, segment: str, rows: list[StepRow], actor: Actor, active: bool = True
) -> Cadence:
    row = creditor(session, creditor_id)
    if not SEGMENT.match(segment):
        raise FormErrors(["segment: 1 to 32 lowercase letters, digits or _"])
    spec = parse_steps(rows)
    steps = [step.model_dump(mode="json") for step in spec.steps]
    existing = cadence(session, row.id, segment)
    old = list(existing.steps) if existing else None
    if existing is None:
        existing = Cadence(creditor_id=row.id, segment=segment, steps=steps, active=active)
        session.add(existing)
    else:
        existing.steps, existing.active = steps, active
    record(session, actor.name, "cadence.saved", existing, creditor_id=row.id, segment=segment, old=old, new=steps)
    return existing
