"""The offline NLU: accuracy on the labelled set, the keyword safety net, unknowns, speed and the model itself."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from bot.domain import Intent
from bot.nlu import detect_language, language_of, normalize
from bot.nlu.eval import EvalReport, evaluate, load_labelled
from bot.nlu.keywords import match_rule
from bot.nlu.offline import IntentModel, OfflineNLU, TrainingDataError, load_examples, load_model

LABELLED = Path(__file__).parents[2] / "data" / "nlu_labelled.jsonl"
NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def nlu() -> OfflineNLU:
    return OfflineNLU()


@pytest.fixture(scope="module")
def report(nlu: OfflineNLU) -> EvalReport:
    return evaluate(nlu, load_labelled(LABELLED), now=NOW)


def understand(nlu: OfflineNLU, text: str, locale: str | None = None) -> Intent:
    return nlu.understand(text, locale=locale, timezone="America/Santiago", currency="CLP", now=NOW).intent


def test_accuracy_on_the_labelled_set_is_at_least_90_percent(report: EvalReport) -> None:
    assert report.total >= 320
    assert report.accuracy >= 0.90, f"accuracy {report.accuracy:.3f}"


@pytest.mark.parametrize("intent", [Intent.OPT_OUT, Intent.DISPUTE, Intent.HUMAN])
def test_legally_critical_intents_are_never_missed(report: EvalReport, intent: Intent) -> None:
    missed = [m.message.text for m in report.mistakes if m.message.intent is intent]
    assert report.recall(intent) == 1.0, missed


def test_labelled_set_is_disjoint_from_training_examples_and_mostly_spanish() -> None:
    labelled = load_labelled(LABELLED)
    training = {normalize(example.text) for example in load_examples()}
    assert [m.text for m in labelled if normalize(m.text) in training] == []
    spanish = sum(m.locale == "es" for m in labelled) / len(labelled)
    assert 0.55 <= spanish <= 0.65
    assert {m.intent for m in labelled} == set(Intent)


@pytest.mark.parametrize("text", ["asdfgh", "", "   ", "???", "zxcvbnm qwpoiu"])
def test_a_message_with_no_signal_is_unknown(nlu: OfflineNLU, text: str) -> None:
    assert understand(nlu, text) is Intent.UNKNOWN


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("STOP", Intent.OPT_OUT),
        ("Stop please", Intent.OPT_OUT),
        ("BAJA", Intent.OPT_OUT),
        ("ALTO", Intent.OPT_OUT),
        ("UNSUBSCRIBE", Intent.OPT_OUT),
        ("CANCELAR", Intent.OPT_OUT),
        ("cancelar suscripción", Intent.OPT_OUT),
        ("No me escriban más!!", Intent.OPT_OUT),
        ("ya no me escriban", Intent.OPT_OUT),
        ("Dejen de escribirme por favor", Intent.OPT_OUT),
        ("stop texting me", Intent.OPT_OUT),
        ("pls don't text me again", Intent.OPT_OUT),
        ("no reconozco esta deuda, dejen de escribirme", Intent.OPT_OUT),
        ("No reconozco esta deuda", Intent.DISPUTE),
        ("I don't owe this", Intent.DISPUTE),
        ("esto es un FRAUDE", Intent.DISPUTE),
        ("me cobraron doble", Intent.DISPUTE),
        ("quiero hablar con una persona", Intent.HUMAN),
        ("pásame con un ejecutivo xfa", Intent.HUMAN),
        ("Talk to a human", Intent.HUMAN),
        ("can I speak to a representative?", Intent.HUMAN),
        ("No, quiero hablar con un ejecutivo", Intent.HUMAN),
    ],
)
def test_keyword_rules_win_with_full_confidence(nlu: OfflineNLU, text: str, intent: Intent) -> None:
    result = nlu.understand(text, locale=None, timezone="America/Santiago", currency="CLP", now=NOW)
    assert (result.intent, result.confidence) == (intent, 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "no puedo pagar",
        "I'll stop by the office tomorrow",
        "I had to stop paying because I lost my job",
        "el monto es muy alto",
        "baja la cuota por favor",
        "quiero cancelar la deuda",  # in Chile "cancelar" a debt means paying it
        "ya no me mandan el link?",
        "don't call me at work, text me instead",
        "no conozco a esa persona",
        "ya no debo nada, pagué ayer",
    ],
)
def test_near_misses_are_left_to_the_classifier(text: str) -> None:
    assert match_rule(normalize(text)) is None


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("no puedo pagar", {Intent.HARDSHIP, Intent.REJECT}),
        ("I had to stop paying because I lost my job", {Intent.HARDSHIP}),
        ("quiero cancelar la deuda", {Intent.PAY_NOW}),
        ("el monto es muy alto", {Intent.COUNTER_OFFER, Intent.REQUEST_PLAN, Intent.REJECT, Intent.DISPUTE}),
    ],
)
def test_near_misses_get_a_sensible_intent(nlu: OfflineNLU, text: str, allowed: set[Intent]) -> None:
    assert understand(nlu, text) in allowed


def test_locale_is_detected_when_not_given_and_normalised_when_given(nlu: OfflineNLU) -> None:
    def locale_of(text: str, locale: str | None) -> str:
        return nlu.understand(text, locale=locale, timezone="UTC", currency="USD", now=NOW).locale

    assert locale_of("cuánto debo?", None) == "es"
    assert locale_of("how much do I owe?", None) == "en"
    assert locale_of("how much do I owe?", "es-CL") == "es"
    assert locale_of("hola", "en_US") == "en"
    assert language_of("pt-BR") == "es"


@pytest.mark.parametrize(
    ("text", "language"),
    [("ya pagué", "es"), ("wena, cuánto debo po", "es"), ("sounds good", "en"), ("I paid it", "en"), ("ok", "es")],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Holaaaa, q tal??", "hola que tal ?"),
        ("xq no m contestan", "porque no m contestan"),
        ("Ya pagué $50.000 ayer", "ya pague $ 0 ayer"),
        ("I can't pay, pls", "i can not pay please"),
        ("k", "ok"),
        ("👍", "ok"),
    ],
)
def test_normalize(raw: str, normalized: str) -> None:
    assert normalize(raw) == normalized


def test_fast_scoring_path_equals_sklearn(nlu: OfflineNLU) -> None:
    texts = [normalize(m.text) for m in load_labelled(LABELLED)[::25]] + ["", "zzz"]
    expected = nlu.model.sklearn_probabilities(texts)
    actual = np.array([nlu.model.probabilities(text) for text in texts])
    np.testing.assert_allclose(actual, expected, atol=1e-9)


def test_training_takes_under_two_seconds() -> None:
    load_model(Path(__file__).parents[3] / "flows" / "nlu")  # imports and caches warmed outside the timing
    started = time.process_time()
    IntentModel(load_examples())
    assert time.process_time() - started < 2.0


def test_model_is_trained_once_per_process() -> None:
    assert OfflineNLU().model is OfflineNLU().model


def test_understanding_takes_well_under_two_milliseconds(nlu: OfflineNLU) -> None:
    texts = [m.text for m in load_labelled(LABELLED)]
    for text in texts[:20]:
        understand(nlu, text)
    started = time.process_time()
    for text in texts:
        understand(nlu, text)
    per_message = (time.process_time() - started) / len(texts)
    assert per_message < 0.002, f"{per_message * 1000:.3f} ms per message"


def _write(directory: Path, body: dict[str, object]) -> Path:
    (directory / "es.yaml").write_text(json.dumps(body), encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    "body",
    [
        {"language": "es", "intents": {"not_an_intent": ["hola"]}},
        {"language": "pt", "intents": {"greeting": ["ola"]}},
        {"language": "es", "intents": {"greeting": "hola"}},
        {"intents": {"greeting": ["hola"]}},
    ],
)
def test_invalid_training_files_are_refused(tmp_path: Path, body: dict[str, object]) -> None:
    with pytest.raises(TrainingDataError):
        load_examples(_write(tmp_path, body))


def test_an_empty_training_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError):
        load_examples(tmp_path)
