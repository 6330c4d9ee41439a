"""Knowledge documents: front matter parsed and validated with the file's name in every error, and creditor
documents replacing defaults with the same id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knowledge.loader import MAX_ANSWER_CHARS, DocumentError, load_document, load_documents

PAY = """---
title: Cómo pagar
tags: [pago, enlace]
locale: es
questions:
  - ¿Cómo pago?
  - ¿Aceptan transferencia?
---

Puede pagar con su enlace de pago
o por transferencia.

## Detalle

Más información para el portal.
"""


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def document(title: str = "Horario", locale: str = "es", extra: str = "", answer: str = "Atendemos de 9 a 18.") -> str:
    return f"---\ntitle: {title}\ntags: [horario]\nlocale: {locale}\n{extra}---\n\n{answer}\n"


def test_a_good_document_is_parsed(tmp_path):
    path = write(tmp_path, "es/how-to-pay.md", PAY)
    [loaded] = load_documents(tmp_path, locale="es")
    assert loaded.id == "how-to-pay"
    assert loaded.title == "Cómo pagar"
    assert loaded.locale == "es"
    assert loaded.tags == ("pago", "enlace")
    assert loaded.questions == ("¿Cómo pago?", "¿Aceptan transferencia?")
    assert loaded.answer == "Puede pagar con su enlace de pago o por transferencia."  # wrapped lines joined
    assert loaded.body.startswith("Puede pagar") and loaded.body.endswith("Más información para el portal.")
    assert loaded.path == path
    assert loaded.creditor is None


def test_documents_are_sorted_by_id_and_questions_are_optional(tmp_path):
    write(tmp_path, "en/zeta.md", document(locale="en"))
    write(tmp_path, "en/alpha.md", document(locale="en"))
    loaded = load_documents(tmp_path, locale="en")
    assert [d.id for d in loaded] == ["alpha", "zeta"]
    assert loaded[0].questions == ()


def test_windows_line_endings_and_a_byte_order_mark_are_accepted(tmp_path):
    path = tmp_path / "es" / "how-to-pay.md"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf" + PAY.replace("\n", "\r\n").encode("utf-8"))
    assert load_documents(tmp_path, locale="es")[0].title == "Cómo pagar"


def test_a_regional_locale_reads_its_languages_folder(tmp_path):
    write(tmp_path, "es/how-to-pay.md", PAY)
    assert [d.id for d in load_documents(tmp_path, locale="es-CL")] == ["how-to-pay"]
    assert load_documents(tmp_path, locale="en") == []  # no en/ folder: nothing to answer from


def test_a_creditors_document_replaces_the_default_with_the_same_id(tmp_path):
    write(tmp_path, "es/hours.md", document(answer="Horario general."))
    write(tmp_path, "es/how-to-pay.md", PAY)
    write(tmp_path, "es/creditors/acme/hours.md", document(extra="creditor: acme\n", answer="Horario de Acme."))
    write(tmp_path, "es/creditors/acme/parking.md", document(title="Estacionamiento", extra="creditor: acme\n"))
    write(tmp_path, "es/creditors/other/hours.md", document(extra="creditor: other\n", answer="Horario de Other."))

    acme = {d.id: d for d in load_documents(tmp_path, creditor="acme", locale="es")}
    assert sorted(acme) == ["hours", "how-to-pay", "parking"]
    assert (acme["hours"].answer, acme["hours"].creditor) == ("Horario de Acme.", "acme")
    assert acme["how-to-pay"].creditor is None
    defaults = {d.id: d.answer for d in load_documents(tmp_path, locale="es")}
    assert defaults == {
        "hours": "Horario general.",
        "how-to-pay": "Puede pagar con su enlace de pago o por transferencia.",
    }


def test_missing_front_matter_names_the_file(tmp_path):
    path = write(tmp_path, "es/how-to-pay.md", "# Cómo pagar\n\nPuede pagar con su enlace.\n")
    with pytest.raises(DocumentError, match="missing front matter") as error:
        load_documents(tmp_path, locale="es")
    assert str(error.value).startswith(f"{path}:")


def test_unclosed_front_matter_is_missing_front_matter(tmp_path):
    path = write(tmp_path, "es/how-to-pay.md", "---\ntitle: Cómo pagar\n\nPuede pagar.\n")
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: missing front matter"):
        load_document(path, "es")


def test_missing_title_names_the_file_and_the_field(tmp_path):
    path = write(tmp_path, "es/how-to-pay.md", PAY.replace("title: Cómo pagar\n", ""))
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: front matter is missing title$"):
        load_documents(tmp_path, locale="es")


@pytest.mark.parametrize("title", ['""', "[Cómo, pagar]", "42"])
def test_a_title_must_be_non_empty_text(tmp_path, title):
    path = write(tmp_path, "es/how-to-pay.md", PAY.replace("title: Cómo pagar", f"title: {title}"))
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: title must be a non-empty text"):
        load_document(path, "es")


def test_an_unknown_locale_is_rejected(tmp_path):
    path = write(tmp_path, "es/how-to-pay.md", PAY.replace("locale: es", "locale: fr"))
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: locale 'fr' is not one of es, en"):
        load_documents(tmp_path, locale="es")


def test_a_locale_must_match_its_folder(tmp_path):
    path = write(tmp_path, "en/how-to-pay.md", PAY)
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: locale 'es' does not match its folder 'en'"):
        load_documents(tmp_path, locale="en")


@pytest.mark.parametrize(
    ("front_matter", "message"),
    [
        ("title: [unclosed\nlocale: es\ntags: []\n", "invalid front matter YAML"),
        ("- just\n- a list\n", "front matter must be a YAML mapping"),
        ("title: T\nlocale: es\n", "front matter is missing tags"),
        ("title: T\nlocale: es\ntags: pago\n", "tags must be a list of non-empty texts"),
        ("title: T\nlocale: es\ntags: [pago]\nquestions: [1, 2]\n", "questions must be a list of non-empty texts"),
        ("title: T\nlocale: es\ntags: [pago]\nquestion: [¿Cómo pago?]\n", "unknown front matter field question"),
        ("title: T\nlocale: es\ntags: [pago]\ncreditor: Acme Energy\n", "creditor must be a slug"),
    ],
)
def test_invalid_front_matter_is_explained(tmp_path, front_matter, message):
    path = write(tmp_path, "es/how-to-pay.md", f"---\n{front_matter}---\n\nRespuesta.\n")
    with pytest.raises(DocumentError, match=message) as error:
        load_document(path, "es")
    assert str(error.value).startswith(f"{path}:")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no answer"),
        ("## Cómo pagar\n\nCon su enlace.", "must not be a heading"),
        ("x" * (MAX_ANSWER_CHARS + 1), f"has {MAX_ANSWER_CHARS + 1} characters"),
    ],
)
def test_the_answer_paragraph_is_checked(tmp_path, body, message):
    path = write(tmp_path, "es/how-to-pay.md", document(answer=body))
    with pytest.raises(DocumentError, match=message):
        load_document(path, "es")


def test_a_file_name_must_be_a_slug(tmp_path):
    path = write(tmp_path, "es/Cómo Pagar.md", PAY)
    with pytest.raises(DocumentError, match="file name is the document id"):
        load_document(path, "es")


def test_two_documents_with_the_same_id_and_owner_are_rejected(tmp_path):
    write(tmp_path, "es/hours.md", document())
    write(tmp_path, "es/old/hours.md", document())
    with pytest.raises(DocumentError, match="duplicate id 'hours'"):
        load_documents(tmp_path, locale="es")


def test_an_undecodable_file_names_the_file(tmp_path):
    path = tmp_path / "es" / "hours.md"
    path.parent.mkdir()
    path.write_bytes(document().encode("utf-8").replace(b"Horario", "Horário".encode("latin-1")))
    with pytest.raises(DocumentError, match=f"^{re.escape(str(path))}: cannot read"):
        load_documents(tmp_path, locale="es")
