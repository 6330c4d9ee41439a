"""Checks a flow's YAML before it is published: schema, node references, reachability, templates and privacy.

Every problem carries the line of the offending key or value, so `cobrabot flows validate` can point at it.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from bot.domain import Intent
from bot.templates import default_templates
from flows import FLOWS_DIR
from flows.loader import ACTION_EVENTS, FlowYamlLoader

SCHEMA_PATH = FLOWS_DIR / "flow.schema.json"
SUPPORTED_LOCALES = ("es", "en")
CASE_KINDS = ("dispute", "reconciliation", "hardship", "deceased", "bankruptcy", "complaint")
OPT_OUT_SCOPES = ("channel", "all")
INTENTS = frozenset(intent.value for intent in Intent)
# Any Jinja expression or statement can print the debtor's data; comments ({# #}) cannot.
PLACEHOLDER = re.compile(r"\{\{|\{%")
DISCLOSES = "public node discloses data before identity is verified"

TemplateLookup = Callable[[str, str], str | None]
"""(template key, language) -> template body, or None when the key is unknown in that language."""

YamlPath = tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class FlowProblem:
    line: int | None
    path: str
    message: str


@dataclass
class _Document:
    """Parsed YAML plus the line of every mapping key and sequence item, by path from the root."""

    data: Any = None
    lines: dict[YamlPath, int] = field(default_factory=dict)
    problems: list[FlowProblem] = field(default_factory=list)

    def line(self, path: YamlPath) -> int | None:
        # A path the YAML does not spell out (a missing key, a merged one) points at its nearest ancestor.
        for size in range(len(path), -1, -1):
            if path[:size] in self.lines:
                return self.lines[path[:size]]
        return None

    def problem(self, path: YamlPath, message: str) -> FlowProblem:
        return FlowProblem(self.line(path), _dotted(path), message)


def validate_flow_file(path: str | Path, *, template_lookup: TemplateLookup | None = None) -> list[FlowProblem]:
    """Validate a flow file; OSError and UnicodeDecodeError mean it could not be read."""
    return validate_flow_text(Path(path).read_text(encoding="utf-8"), template_lookup=template_lookup)


def validate_flow_text(text: str, *, template_lookup: TemplateLookup | None = None) -> list[FlowProblem]:
    """Every problem in a flow's YAML text, sorted by line (an empty list means the flow can be published)."""
    try:
        document = _parse(text)
    except yaml.YAMLError as exc:
        return [_yaml_problem(exc)]
    problems = set(document.problems)
    problems.update(_schema_problems(document))
    if isinstance(document.data, dict):
        bodies = _default_bodies if template_lookup is None else _lookup_bodies(template_lookup)
        problems.update(_FlowChecks(document, bodies).run())
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.path, p.message))


def _parse(text: str) -> _Document:
    loader = FlowYamlLoader(text)
    try:
        root = loader.get_single_node()
        document = _Document()
        if root is not None:
            document.lines[()] = root.start_mark.line + 1
            _record_lines(loader, root, (), document, frozenset())
            document.data = loader.construct_document(root)
        return document
    finally:
        loader.dispose()


def _record_lines(
    loader: FlowYamlLoader, node: yaml.Node, path: YamlPath, document: _Document, ancestors: frozenset[int]
) -> None:
    if id(node) in ancestors:  # a recursive alias
        return
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[Hashable, int] = {}
        for key_node, value_node in node.value:
            # Merge keys (<<) and complex keys have no path of their own; their lines fall back to the parent.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                message = f"duplicate key {key!r} (first at line {seen[key]}); the last one wins"
                document.problems.append(FlowProblem(line, _dotted((*path, key)), message))
            seen[key] = line
            document.lines[(*path, key)] = line
            _record_lines(loader, value_node, (*path, key), document, ancestors)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            document.lines[(*path, index)] = item.start_mark.line + 1
            _record_lines(loader, item, (*path, index), document, ancestors)


def _yaml_problem(exc: yaml.YAMLError) -> FlowProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = ": ".join(part for part in (exc.context, exc.problem) if part)
        return FlowProblem(mark.line + 1 if mark else None, "", f"invalid YAML: {message}")
    return FlowProblem(None, "", f"invalid YAML: {exc}")


@cache
def _schema_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def _schema_problems(document: _Document) -> Iterator[FlowProblem]:
    for error in _schema_validator().iter_errors(document.data):
        yield from _schema_error_problems(error, document)


def _schema_error_problems(error: ValidationError, document: _Document) -> Iterator[FlowProblem]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        # One problem per unexpected key, at that key's own line rather than at its parent's.
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        for key in error.instance:
            if key not in allowed:
                yield document.problem((*path, key), f"unknown field {key!r}")
    elif "propertyNames" in error.schema_path:
        # propertyNames errors carry the parent's path; the offending key is the error's instance.
        yield document.problem((*path, error.instance), f"key {error.message}")
    else:
        yield document.problem(path, error.message)


def _default_bodies(key: str, language: str) -> list[str] | None:
    variants = default_templates(language).get(key)
    return None if variants is None else [str(body) for body in variants.values()]


def _lookup_bodies(lookup: TemplateLookup) -> Callable[[str, str], list[str] | None]:
    def bodies(key: str, language: str) -> list[str] | None:
        body = lookup(key, language)
        return None if body is None else [body]

    return bodies


@dataclass(frozen=True, slots=True)
class _TemplateUse:
    path: YamlPath
    key: str


class _FlowChecks:
    """The checks a schema cannot express; each tolerates data the schema already rejected."""

    def __init__(self, document: _Document, bodies: Callable[[str, str], list[str] | None]) -> None:
        self.document = document
        self.bodies = bodies
        data: dict[Any, Any] = document.data
        self.nodes = {name: _mapping(spec) for name, spec in _mapping(data.get("nodes")).items()}
        self.globals = _mapping(data.get("globals"))
        self.start = data.get("start")
        self.verified_start = data.get("verified_start")
        locales = data.get("locales", SUPPORTED_LOCALES)
        self.locales = [loc for loc in locales if loc in SUPPORTED_LOCALES] if isinstance(locales, list) else []

    def run(self) -> Iterator[FlowProblem]:
        yield from self.unknown_targets()
        yield from self.public_entry_points()
        yield from self.unreachable_nodes()
        for name, spec in self.nodes.items():
            path = ("nodes", name)
            yield from self.on_keys(path, spec)
            yield from self.way_out(path, spec)
            yield from self.templates(path, spec)
            yield from self.parameters(path, spec)

    def problem(self, path: YamlPath, message: str) -> FlowProblem:
        return self.document.problem(path, message)

    def references(self) -> Iterator[tuple[YamlPath, Any]]:
        """Every place a node name is expected, with what the flow wrote there."""
        for key in ("start", "verified_start"):
            if key in self.document.data:
                yield (key,), self.document.data[key]
        for intent, target in self.globals.items():
            yield ("globals", intent), target
        for name, spec in self.nodes.items():
            for event, target in _mapping(spec.get("on")).items():
                yield ("nodes", name, "on", event), target
            for key in ("next", "fallback"):
                if key in spec:
                    yield ("nodes", name, key), spec[key]
            timeout = spec.get("timeout")
            if isinstance(timeout, dict) and "goto" in timeout:
                yield ("nodes", name, "timeout", "goto"), timeout["goto"]

    def unknown_targets(self) -> Iterator[FlowProblem]:
        for path, target in self.references():
            if isinstance(target, str) and target not in self.nodes:
                yield self.problem(path, f"unknown node {target!r}")

    def public_entry_points(self) -> Iterator[FlowProblem]:
        # Both are entered before identity is verified, and the engine only enters public nodes then.
        if self._is_private(self.start):
            yield self.problem(("start",), f"start node {self.start!r} must be public (public: true)")
        for intent, target in self.globals.items():
            if self._is_private(target):
                message = f"global target {target!r} must be public (public: true): globals fire before verification"
                yield self.problem(("globals", intent), message)

    def _is_private(self, target: Any) -> bool:
        return isinstance(target, str) and target in self.nodes and self.nodes[target].get("public") is not True

    def unreachable_nodes(self) -> Iterator[FlowProblem]:
        roots = [self.start, self.verified_start, *self.globals.values()]
        queue = deque(root for root in roots if isinstance(root, str) and root in self.nodes)
        reached = set(queue)
        while queue:
            spec = self.nodes[queue.popleft()]
            timeout = spec.get("timeout") if isinstance(spec.get("timeout"), dict) else {}
            targets = [*_mapping(spec.get("on")).values(), spec.get("next"), spec.get("fallback"), timeout.get("goto")]
            for target in targets:
                if isinstance(target, str) and target in self.nodes and target not in reached:
                    reached.add(target)
                    queue.append(target)
        for name in self.nodes:
            if name not in reached:
                yield self.problem(("nodes", name), "unreachable: no path from start, verified_start or globals")

    def on_keys(self, path: YamlPath, spec: dict[Any, Any]) -> Iterator[FlowProblem]:
        action = spec.get("action")
        if action is not None and (not isinstance(action, str) or action not in ACTION_EVENTS):
            return  # the schema reports the unknown action; its events are unknowable
        events = ACTION_EVENTS.get(action, ()) if action else ()
        for key in _mapping(spec.get("on")):
            if key in self.globals:
                message = f"global handler overridden: {key!r} is handled by globals, not by this node"
                yield self.problem((*path, "on", key), message)
            elif isinstance(key, str) and key not in INTENTS and key not in events:
                yield self.problem((*path, "on", key), _unknown_on_key(key, action, events))

    def way_out(self, path: YamlPath, spec: dict[Any, Any]) -> Iterator[FlowProblem]:
        if not any(spec.get(key) for key in ("end", "next", "on", "slots", "fallback")):
            yield self.problem(path, "no way out: give the node on, slots, fallback, next or end")

    def templates(self, path: YamlPath, spec: dict[Any, Any]) -> Iterator[FlowProblem]:
        public = spec.get("public") is True
        for use in _template_uses(path, spec):
            found = {locale: self.bodies(use.key, locale) for locale in self.locales}
            missing = [locale for locale, bodies in found.items() if bodies is None]
            if missing:
                yield self.problem(use.path, f"unknown template {use.key!r} in locale {', '.join(missing)}")
            leaking = [loc for loc, bodies in found.items() if any(PLACEHOLDER.search(b) for b in bodies or ())]
            if public and leaking:
                message = f"{DISCLOSES}: template {use.key!r} has placeholders ({', '.join(leaking)})"
                yield self.problem(use.path, message)

    def parameters(self, path: YamlPath, spec: dict[Any, Any]) -> Iterator[FlowProblem]:
        if spec.get("action") == "open_case":
            kind = spec.get("case_kind")
            if kind is None:
                yield self.problem((*path, "action"), f"open_case needs case_kind: one of {', '.join(CASE_KINDS)}")
            elif kind not in CASE_KINDS:
                yield self.problem((*path, "case_kind"), f"case_kind {kind!r} is not one of {', '.join(CASE_KINDS)}")
        scope = spec.get("scope")
        if "scope" in spec and scope not in OPT_OUT_SCOPES:
            yield self.problem((*path, "scope"), f"scope {scope!r} is not one of {', '.join(OPT_OUT_SCOPES)}")


def _template_uses(path: YamlPath, spec: dict[Any, Any]) -> Iterator[_TemplateUse]:
    say = spec.get("say")
    if isinstance(say, str):
        yield _TemplateUse((*path, "say"), say)
    elif isinstance(say, list):
        yield from (_TemplateUse((*path, "say", i), key) for i, key in enumerate(say) if isinstance(key, str))
    slots = spec.get("slots")
    for index, slot in enumerate(slots if isinstance(slots, list) else ()):
        ask = _mapping(slot).get("ask")
        if isinstance(ask, str):
            yield _TemplateUse((*path, "slots", index, "ask"), ask)


def _unknown_on_key(key: str, action: str | None, events: tuple[str, ...]) -> str:
    if action is None:
        return f"{key!r} is not an intent (the node has no action, so no events)"
    return f"{key!r} is neither an intent nor an event of {action} ({', '.join(events)})"


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _dotted(path: YamlPath) -> str:
    return ".".join(str(part) for part in path)
