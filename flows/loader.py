"""Flows as typed, immutable data: parsed from YAML, interpreted by bot.engine, checked by flows.validator."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from flows import FLOWS_DIR

# Each action and the events it can produce (docs/flows.md). The engine implements exactly these.
ACTION_EVENTS: dict[str, tuple[str, ...]] = {
    "verify_identity": ("verified", "failed", "locked"),
    "send_payment_link": ("sent", "nothing_owed"),
    "propose_plan": ("proposed", "nothing_owed"),
    "evaluate_counter": ("accepted", "closest", "refused"),
    "accept_plan": ("created", "expired"),
    "record_promise": ("recorded", "invalid", "nothing_owed"),
    "open_case": ("opened",),
    "handoff": ("handed_off",),
    "opt_out": ("opted_out",),
    "answer_faq": ("answered", "no_answer"),
    "mark_wrong_person": ("marked",),
}
SLOT_ENTITIES = ("date", "amount", "installments", "reference", "text", "identity")
SLOT_DEFAULTS = ("balance", "today")
END_MODES = ("closed", "human")
NODE_PARAMS = ("case_kind", "reason", "scope")


class FlowYamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the key `on:` (and yes/no/off) as a boolean."""


FlowYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=FlowYamlLoader)  # a SafeLoader subclass: no arbitrary objects


class FlowError(ValueError):
    """The flow data cannot be turned into a Flow at all (the validator gives the detailed report)."""


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    entity: str
    ask: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    say: tuple[str, ...] = ()
    slots: tuple[Slot, ...] = ()
    action: str | None = None
    on: dict[str, str] = field(default_factory=dict)
    next: str | None = None
    fallback: str | None = None
    end: str | None = None
    public: bool = False
    params: dict[str, str] = field(default_factory=dict)
    timeout_hours: float | None = None
    timeout_goto: str | None = None

    @property
    def waits(self) -> bool:
        """Whether the conversation rests here waiting for the debtor's next message."""
        return self.end is None and self.next is None and bool(self.on or self.slots or self.fallback)

    def targets(self) -> list[str]:
        return [*self.on.values(), *(t for t in (self.next, self.fallback, self.timeout_goto) if t)]


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    version: int
    locales: tuple[str, ...]
    start: str
    nodes: dict[str, Node]
    globals: dict[str, str] = field(default_factory=dict)
    verified_start: str | None = None

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def templates(self) -> set[str]:
        keys = {key for node in self.nodes.values() for key in node.say}
        return keys | {slot.ask for node in self.nodes.values() for slot in node.slots}


def flow_from_dict(data: Any) -> Flow:
    """Build a Flow from parsed YAML; raises FlowError on structural problems (validate first for details)."""
    if not isinstance(data, dict):
        raise FlowError("a flow must be a mapping with name, version, start and nodes")
    try:
        nodes = {name: _node(name, spec or {}) for name, spec in dict(data["nodes"]).items()}
        return Flow(
            name=str(data["name"]),
            version=int(data["version"]),
            locales=tuple(data.get("locales", ("es", "en"))),
            start=str(data["start"]),
            verified_start=data.get("verified_start"),
            globals={str(k): str(v) for k, v in (data.get("globals") or {}).items()},
            nodes=nodes,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FlowError(f"malformed flow: {exc}") from exc


def _node(name: str, spec: dict[str, Any]) -> Node:
    say = spec.get("say") or ()
    return Node(
        name=name,
        say=(say,) if isinstance(say, str) else tuple(say),
        slots=tuple(Slot(**slot) for slot in spec.get("slots") or ()),
        action=spec.get("action"),
        on={str(k): str(v) for k, v in (spec.get("on") or {}).items()},
        next=spec.get("next"),
        fallback=spec.get("fallback"),
        end=spec.get("end"),
        public=bool(spec.get("public", False)),
        params={key: str(spec[key]) for key in NODE_PARAMS if key in spec},
        timeout_hours=float(timeout["after_hours"]) if (timeout := spec.get("timeout")) else None,
        timeout_goto=str(timeout["goto"]) if timeout else None,
    )


def parse_flow(text: str) -> Flow:
    try:
        return flow_from_dict(load_yaml(text))
    except yaml.YAMLError as exc:
        raise FlowError(f"not valid YAML: {exc}") from exc


@cache
def default_flow(name: str = "collections") -> Flow:
    """A shipped flow from flows/<name>.yaml (cached: flows are immutable once loaded)."""
    return parse_flow(Path(FLOWS_DIR, f"{name}.yaml").read_text(encoding="utf-8"))
