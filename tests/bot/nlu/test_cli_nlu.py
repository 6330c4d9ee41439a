"""`cobrabot nlu parse` and `cobrabot nlu eval`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bot.cli_nlu import nlu_group

LABELLED = Path(__file__).parents[2] / "data" / "nlu_labelled.jsonl"
NOW = "2026-03-11T15:00:00+00:00"


def test_parse_prints_one_json_object_per_message() -> None:
    stdin = "el viernes te pago 50 mil\n\nSTOP\nya pagué, comprobante 884512\n"
    result = CliRunner().invoke(nlu_group, ["parse", "--locale", "es", "--now", NOW], input=stdin)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [row["text"] for row in rows] == ["el viernes te pago 50 mil", "STOP", "ya pagué, comprobante 884512"]
    assert [row["intent"] for row in rows] == ["promise_to_pay", "opt_out", "already_paid"]
    assert rows[0]["entities"] == {
        "dates": ["2026-03-13"],
        "amounts": [{"amount": "50000", "currency": "CLP"}],
        "installments": None,
        "reference": None,
    }
    assert rows[1]["confidence"] == 1.0
    assert rows[2]["entities"]["reference"] == "884512"


def test_parse_detects_the_language_and_uses_the_given_currency_and_zone() -> None:
    stdin = "I can pay $120.50 tomorrow\n"
    args = ["parse", "--timezone", "America/New_York", "--currency", "usd", "--now", NOW]
    result = CliRunner().invoke(nlu_group, args, input=stdin)
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["locale"] == "en"
    assert row["entities"]["amounts"] == [{"amount": "120.50", "currency": "USD"}]
    assert row["entities"]["dates"] == ["2026-03-12"]


def test_parse_refuses_an_unknown_time_zone() -> None:
    result = CliRunner().invoke(nlu_group, ["parse", "--timezone", "Mars/Olympus"], input="hola\n")
    assert result.exit_code == 2
    assert "Mars/Olympus" in result.output


def test_eval_prints_accuracy_per_intent_scores_and_confusions() -> None:
    result = CliRunner().invoke(nlu_group, ["eval", str(LABELLED), "--now", NOW])
    assert result.exit_code == 0, result.output
    accuracy = float(next(line for line in result.output.splitlines() if line.startswith("accuracy:")).split()[1])
    assert accuracy >= 0.90
    assert "opt_out" in result.output and "expected \\ predicted" in result.output
    assert "confusions (expected -> predicted: count):" in result.output


def test_eval_fails_on_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hola", "intent": "greeting", "locale": "es"}\n{"text": "hi", "intent": "hello"}\n')
    result = CliRunner().invoke(nlu_group, ["eval", str(path)])
    assert result.exit_code != 0
    assert "line 2" in result.output


def test_eval_fails_on_a_line_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("hola,greeting,es\n")
    result = CliRunner().invoke(nlu_group, ["eval", str(path)])
    assert result.exit_code != 0
    assert "line 1: not JSON" in result.output


def test_eval_fail_under_turns_a_low_score_into_an_error(tmp_path: Path) -> None:
    path = tmp_path / "mislabelled.jsonl"
    path.write_text('{"text": "hola, buenas tardes", "intent": "dispute", "locale": "es"}\n')
    result = CliRunner().invoke(nlu_group, ["eval", str(path), "--fail-under", "0.5", "--mistakes"])
    assert result.exit_code == 1
    assert "expected dispute, got greeting" in result.output
    assert "below 0.500" in result.output
