"""`cobrabot knowledge ask` and `list`: the answer and its source, exit 1 without a confident answer, exit 2 on
a broken document."""

from __future__ import annotations

from click.testing import CliRunner, Result

from bot.cli_knowledge import knowledge_group
from knowledge.loader import load_documents


def run(*args: str) -> Result:
    return CliRunner().invoke(knowledge_group, list(args), catch_exceptions=False)


def test_ask_prints_the_answer_and_its_source():
    result = run("ask", "donde veo mis boletas?")
    invoices = next(d for d in load_documents(locale="es") if d.id == "invoices-portal")
    assert result.exit_code == 0
    answer, source = result.stdout.splitlines()
    assert answer == invoices.answer
    assert source.startswith(f"source: invoices-portal ({invoices.title}) {invoices.path} score 0.")


def test_ask_in_english_and_regional_locales():
    english = run("ask", "what happens if I pay late?", "--locale", "en")
    chilean = run("ask", "q pasa si pago tarde", "--locale", "es-CL")
    assert english.exit_code == chilean.exit_code == 0
    assert english.stdout.splitlines()[1].startswith("source: late-payment (What happens if you pay late)")
    assert chilean.stdout.splitlines()[1].startswith("source: late-payment (Qué pasa si paga tarde)")


def test_ask_without_a_confident_answer_exits_1():
    result = run("ask", "cuál es la capital de Francia")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("no confident answer (closest: ")


def test_ask_uses_a_creditors_documents(tmp_path):
    own = tmp_path / "es" / "creditors" / "acme-energy" / "hours-contact.md"
    own.parent.mkdir(parents=True)
    own.write_text(
        "---\ntitle: Horario de Acme\ntags: [horario]\nlocale: es\ncreditor: acme-energy\n"
        "questions: [¿A qué hora atienden?]\n---\n\nAcme atiende de 8:00 a 20:00.\n",
        encoding="utf-8",
    )
    result = run("ask", "a q hora atienden", "--creditor", "acme-energy", "--root", str(tmp_path))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == "Acme atiende de 8:00 a 20:00."
    assert run("ask", "a q hora atienden", "--root", str(tmp_path)).exit_code == 1  # no defaults in that root


def test_list_shows_every_document_of_the_locale():
    result = run("list", "--locale", "en")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [d.id for d in load_documents(locale="en")]
    assert "how-to-pay           How to pay" in lines


def test_list_marks_a_creditors_own_documents(tmp_path):
    (tmp_path / "es").mkdir()
    (tmp_path / "es" / "parking.md").write_text(
        "---\ntitle: Estacionamiento\ntags: [auto]\nlocale: es\ncreditor: acme-energy\n---\n\nHay estacionamiento.\n",
        encoding="utf-8",
    )
    assert run("list", "--root", str(tmp_path)).stdout == ""
    result = run("list", "--root", str(tmp_path), "--creditor", "acme-energy")
    assert result.stdout == "parking              Estacionamiento  [acme-energy]\n"


def test_a_broken_document_exits_2_with_its_file_name(tmp_path):
    broken = tmp_path / "es" / "how-to-pay.md"
    broken.parent.mkdir()
    broken.write_text("no front matter here\n", encoding="utf-8")
    for args in (("ask", "como pago"), ("list",)):
        result = run(*args, "--root", str(tmp_path))
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: {broken}: missing front matter")


def test_the_group_is_named_knowledge():
    assert knowledge_group.name == "knowledge"
    assert sorted(knowledge_group.commands) == ["ask", "list"]
