"""The flow validator: every check, each pointing at the line of the offending key or value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from bot.domain import Intent
from flows.loader import ACTION_EVENTS, END_MODES, SLOT_DEFAULTS, SLOT_ENTITIES
from flows.validator import DISCLOSES, SCHEMA_PATH, FlowProblem, validate_flow_file, validate_flow_text

FIXTURES = Path(__file__).parents[1] / "data" / "flows"

# Templates for the fixtures, so these tests do not depend on the shipped texts.
TEMPLATES = {
    "hello": {"es": "Hola.", "en": "Hello."},
    "only_spanish": {"es": "Solo en español."},
    "balance_due": {"es": "Debe {{ balance | money }}.", "en": "You owe {{ balance | money }}."},
    "whats_the_amount": {"es": "{% if x %}¿Cuánto?{% endif %}", "en": "How much?"},
    "safe_comment": {"es": "Hola {# nota interna #}", "en": "Hello"},
}


def lookup(key: str, language: str) -> str | None:
    return TEMPLATES.get(key, {}).get(language)


def problems_in(fixture: str) -> list[tuple[int | None, str, str]]:
    found = validate_flow_file(FIXTURES / fixture, template_lookup=lookup)
    return [(problem.line, problem.path, problem.message) for problem in found]


def test_the_valid_fixture_has_no_problems_with_the_shipped_templates():
    assert validate_flow_file(FIXTURES / "valid.yaml") == []


def test_problems_are_frozen_and_sorted_by_line():
    problems = validate_flow_file(FIXTURES / "schema_errors.yaml", template_lookup=lookup)
    lines = [problem.line for problem in problems]
    assert lines == sorted(lines)
    with pytest.raises(AttributeError):
        problems[0].line = 99  # type: ignore[misc]


def test_yaml_syntax_errors_carry_the_line_of_the_mark():
    [problem] = validate_flow_file(FIXTURES / "syntax_error.yaml")
    assert problem.line == 7
    assert problem.path == ""
    assert problem.message.startswith("invalid YAML: while parsing a flow sequence")


def test_more_than_one_yaml_document_is_a_syntax_error():
    [problem] = validate_flow_text("name: a\n---\nname: b\n")
    assert problem.line == 2
    assert "expected a single document" in problem.message


def test_an_empty_file_is_a_schema_error():
    [problem] = validate_flow_text("# nothing yet\n")
    assert problem == FlowProblem(None, "", "None is not of type 'object'")


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        (1, "name", "'Bad-Name' does not match '^[a-z][a-z0-9_]*$'"),
        (2, "version", "0 is less than the minimum of 1"),
        (3, "locales.1", "'fr' is not one of ['es', 'en']"),
        (9, "nodes.menu.public", "'yes' is not of type 'boolean'"),
        (10, "nodes.menu.say.1", "7 is not of type 'string'"),
        (
            12,
            "nodes.menu.slots.0.entity",
            "'moment' is not one of ['date', 'amount', 'installments', 'reference', 'text', 'identity']",
        ),
        (12, "nodes.menu.slots.0.default", "'tomorrow' is not one of ['balance', 'today']"),
        (13, "nodes.menu.slots.1", "'ask' is a required property"),
        (15, "nodes.menu.end", "'maybe' is not one of ['closed', 'human']"),
        (16, "nodes.menu.colour", "unknown field 'colour'"),
        (17, "color", "unknown field 'color'"),
    ],
)
def test_schema_errors_point_at_the_offending_key(line, path, message):
    assert (line, path, message) in problems_in("schema_errors.yaml")


def test_schema_errors_on_keys_and_enums_of_the_model():
    problems = problems_in("schema_errors.yaml")
    [shout] = [problem for problem in problems if "'shout' is not one of" in problem[2]]
    assert shout[:2] == (6, "globals.shout") and shout[2].startswith("key 'shout' is not one of ['pay_now'")
    [action] = [problem for problem in problems if problem[1] == "nodes.menu.action"]
    assert action[0] == 14 and action[2].startswith("'launch_rockets' is not one of ['verify_identity'")


def test_missing_required_fields_point_at_their_parent():
    problems = validate_flow_text("# a flow\nname: x\nnodes:\n  menu:\n    end: closed\n")
    assert FlowProblem(2, "", "'version' is a required property") in problems
    assert FlowProblem(2, "", "'start' is a required property") in problems


def test_on_and_yes_are_strings_as_in_yaml_1_2():
    # PyYAML's default YAML 1.1 booleans would turn the `on:` field into True and silently drop the node's events.
    text = (FIXTURES / "valid.yaml").read_text(encoding="utf-8")
    assert "    on: {verified: menu" in text
    assert validate_flow_text(text) == []
    assert FlowProblem(9, "nodes.menu.public", "'yes' is not of type 'boolean'") in validate_flow_file(
        FIXTURES / "schema_errors.yaml", template_lookup=lookup
    )


def test_unknown_targets_in_every_place_a_node_is_named():
    problems = problems_in("unknown_targets.yaml")
    assert [problem for problem in problems if problem[2].startswith("unknown node")] == [
        (3, "start", "unknown node 'nowhere'"),
        (4, "verified_start", "unknown node 'menu_typo'"),
        (6, "globals.human", "unknown node 'agent'"),
        (11, "nodes.menu.on.pay_now", "unknown node 'pay'"),
        (12, "nodes.menu.next", "unknown node 'later'"),
        (13, "nodes.menu.fallback", "unknown node 'lost'"),
    ]


def test_on_keys_must_be_intents_or_events_of_the_nodes_action():
    assert problems_in("on_keys.yaml") == [
        (11, "nodes.menu.on.paid", "'paid' is not an intent (the node has no action, so no events)"),
        (12, "nodes.menu.on.opt_out", "global handler overridden: 'opt_out' is handled by globals, not by this node"),
        (
            18,
            "nodes.pay.on.recorded",
            "'recorded' is neither an intent nor an event of send_payment_link (sent, nothing_owed)",
        ),
    ]


def test_unreachable_nodes_and_nodes_with_no_way_out():
    assert problems_in("graph.yaml") == [
        (8, "nodes.pay", "no way out: give the node on, slots, fallback, next or end"),
        (11, "nodes.orphan", "unreachable: no path from start, verified_start or globals"),
        (14, "nodes.island", "unreachable: no path from start, verified_start or globals"),
    ]


def test_nodes_reached_only_through_verified_start_or_globals_are_reachable():
    problems = problems_in("valid.yaml")
    assert not [problem for problem in problems if "unreachable" in problem[2]]


def test_templates_must_exist_in_every_listed_locale():
    assert problems_in("templates.yaml") == [
        (8, "nodes.menu.say.1", "unknown template 'only_spanish' in locale en"),
        (10, "nodes.menu.slots.0.ask", "unknown template 'nowhere_to_be_found' in locale es, en"),
    ]


def test_only_the_listed_locales_are_checked():
    text = (FIXTURES / "templates.yaml").read_text(encoding="utf-8").replace("locales: [es, en]", "locales: [es]")
    problems = validate_flow_text(text, template_lookup=lookup)
    assert [(p.line, p.path) for p in problems] == [(10, "nodes.menu.slots.0.ask")]


def test_shipped_templates_are_the_default_lookup():
    text = (FIXTURES / "valid.yaml").read_text(encoding="utf-8").replace("say: greeting_no_debt", "say: no_such_key")
    assert validate_flow_text(text) == [
        FlowProblem(34, "nodes.no_debt.say", "unknown template 'no_such_key' in locale es, en")
    ]


def test_public_nodes_must_not_use_placeholders_and_entry_points_must_be_public():
    assert problems_in("public.yaml") == [
        (4, "start", "start node 'menu' must be public (public: true)"),
        (7, "globals.opt_out", "global target 'bye' must be public (public: true): globals fire before verification"),
        (14, "nodes.agent.say.1", f"{DISCLOSES}: template 'balance_due' has placeholders (es, en)"),
        (16, "nodes.agent.slots.0.ask", f"{DISCLOSES}: template 'whats_the_amount' has placeholders (es)"),
    ]


def test_a_public_node_saying_the_shipped_greeting_discloses_the_debt():
    text = (FIXTURES / "valid.yaml").read_text(encoding="utf-8").replace("  menu:\n", "  menu:\n    public: true\n")
    [problem] = validate_flow_text(text)
    assert problem.line == 23 and problem.path == "nodes.menu.say.0"
    assert problem.message == f"{DISCLOSES}: template 'greeting_balance' has placeholders (es, en)"


def test_jinja_comments_are_not_placeholders():
    text = (FIXTURES / "public.yaml").read_text(encoding="utf-8")
    text = text.replace("[hello, balance_due]", "safe_comment").replace("whats_the_amount", "hello")
    assert not [problem for problem in validate_flow_text(text, template_lookup=lookup) if DISCLOSES in problem.message]


def test_open_case_needs_a_known_case_kind_and_opt_out_a_known_scope():
    kinds = "dispute, reconciliation, hardship, deceased, bankruptcy, complaint"
    assert problems_in("parameters.yaml") == [
        (13, "nodes.dispute.action", f"open_case needs case_kind: one of {kinds}"),
        (18, "nodes.hardship.case_kind", f"case_kind 'poverty' is not one of {kinds}"),
        (23, "nodes.bye.scope", "scope 'everywhere' is not one of channel, all"),
    ]


def test_duplicate_keys_are_reported_where_they_repeat():
    assert problems_in("duplicates.yaml") == [
        (8, "nodes.menu", "duplicate key 'menu' (first at line 5); the last one wins"),
    ]


def test_broken_shapes_are_reported_without_crashing():
    text = "name: x\nversion: 1\nstart: [a]\nnodes:\n  a:\n    action: [1]\n    on: {1: a, b: [c]}\n  b: ~\n"
    problems = validate_flow_text(text, template_lookup=lookup)
    paths = {problem.path for problem in problems}
    assert {"start", "nodes.a.action", "nodes.a.on.1", "nodes.a.on.b", "nodes.b"} <= paths


def test_unhashable_keys_are_a_yaml_error():
    [problem] = validate_flow_text("name: x\nnodes:\n  a:\n    on: {[1]: a}\n")
    assert problem.line == 4 and "unhashable key" in problem.message


def test_merged_keys_fall_back_to_the_line_of_their_mapping():
    text = "name: x\nversion: 1\nstart: a\nbase: &base {end: nope}\nnodes:\n  a:\n    <<: *base\n    public: true\n"
    problems = validate_flow_text(text, template_lookup=lookup)
    assert FlowProblem(4, "base", "unknown field 'base'") in problems
    assert FlowProblem(6, "nodes.a.end", "'nope' is not one of ['closed', 'human']") in problems


def test_the_schema_is_valid_and_its_enums_follow_the_model():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    node, slot = schema["$defs"]["node"]["properties"], schema["$defs"]["slot"]["properties"]
    assert node["action"]["enum"] == list(ACTION_EVENTS)
    assert node["end"]["enum"] == list(END_MODES)
    assert slot["entity"]["enum"] == list(SLOT_ENTITIES)
    assert slot["default"]["enum"] == list(SLOT_DEFAULTS)
    assert schema["properties"]["globals"]["propertyNames"]["enum"] == [intent.value for intent in Intent]


def test_timeout_goto_must_name_a_node():
    text = (Path(__file__).parent.parent / "data" / "flows" / "valid.yaml").read_text()
    broken = text.replace("nodes:\n", "nodes:\n", 1)
    first_node = broken.index("\n  ", broken.index("nodes:\n"))
    line_end = broken.index("\n", first_node + 1)
    broken = broken[: line_end + 1] + "    timeout: {after_hours: 24, goto: nowhere}\n" + broken[line_end + 1 :]
    problems = validate_flow_text(broken)
    assert any(p.path.endswith("timeout.goto") and "unknown node 'nowhere'" in p.message for p in problems)
