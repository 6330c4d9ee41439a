"""`cobrabot flows validate`: GNU-style output and exit codes 0 (clean), 1 (problems), 2 (unreadable)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from bot.cli_flows import flows_group

FIXTURES = Path(__file__).parents[1] / "data" / "flows"
VALID = FIXTURES / "valid.yaml"
GRAPH = FIXTURES / "graph.yaml"


def validate(*files: Path | str) -> Result:
    return CliRunner().invoke(flows_group, ["validate", *map(str, files)], catch_exceptions=False)


def test_a_clean_flow_prints_ok_and_exits_0():
    result = validate(VALID)
    assert result.exit_code == 0
    assert result.output == f"{VALID}: ok\n"


def test_problems_print_file_line_path_message_and_exit_1():
    result = validate(GRAPH)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{GRAPH}:8: nodes.pay: no way out: give the node on, slots, fallback, next or end",
        f"{GRAPH}:11: nodes.orphan: unreachable: no path from start, verified_start or globals",
        f"{GRAPH}:14: nodes.island: unreachable: no path from start, verified_start or globals",
    ]


def test_problems_without_a_path_or_line_leave_them_out(tmp_path):
    syntax, empty = FIXTURES / "syntax_error.yaml", tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    result = validate(syntax, empty)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{syntax}:7: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'",
        f"{empty}: None is not of type 'object'",
    ]


def test_every_file_is_checked_and_an_unreadable_one_exits_2(tmp_path):
    missing, latin1 = tmp_path / "missing.yaml", tmp_path / "latin1.yaml"
    latin1.write_bytes("name: canción\n".encode("latin-1"))
    result = validate(missing, GRAPH, latin1, VALID, tmp_path)
    assert result.exit_code == 2
    assert f"{missing}: cannot read: No such file or directory" in result.stderr
    assert f"{latin1}: cannot read: not UTF-8 text" in result.stderr
    assert f"{tmp_path}: cannot read: Is a directory" in result.stderr
    assert f"{GRAPH}:8: nodes.pay: no way out" in result.stdout
    assert f"{VALID}: ok" in result.stdout


def test_at_least_one_file_is_required():
    result = CliRunner().invoke(flows_group, ["validate"])
    assert result.exit_code == 2
    assert "Missing argument 'FILES...'" in result.output
