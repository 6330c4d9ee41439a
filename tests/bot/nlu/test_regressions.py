"""Messages the NLU once got wrong in ways that matter (each failed before its fix)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain import Intent
from bot.nlu.offline import OfflineNLU

NOW = datetime(2026, 11, 25, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def nlu() -> OfflineNLU:
    return OfflineNLU()


def understand(nlu: OfflineNLU, text: str, locale: str = "es") -> Intent:
    return nlu.understand(text, locale=locale, timezone="America/Santiago", currency="CLP", now=NOW).intent


@pytest.mark.parametrize(
    "text", ["de donde sacaron mi numero", "¿de dónde sacaron mi número?", "quién les dio mi teléfono"]
)
def test_asking_where_the_number_came_from_is_not_an_opt_out(nlu, text):
    assert understand(nlu, text) is not Intent.OPT_OUT


@pytest.mark.parametrize("text", ["borren mi número", "saquen mis datos de su lista", "eliminen mi telefono por favor"])
def test_asking_to_delete_the_number_is_an_opt_out(nlu, text):
    assert understand(nlu, text) is Intent.OPT_OUT


def test_a_promise_with_amount_and_day_is_a_promise(nlu):
    assert understand(nlu, "le pago 50 mil el 30") is Intent.PROMISE_TO_PAY


@pytest.mark.parametrize("text", ["i have a new phone number", "how do i know this isnt a scam"])
def test_contact_and_legitimacy_questions_do_not_mark_the_wrong_person(nlu, text):
    assert understand(nlu, text, locale="en") is not Intent.WRONG_PERSON
