"""`cobrabot knowledge`: try the FAQ knowledge base from the shell before debtors do."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from knowledge.loader import DocumentError, load_documents
from knowledge.retriever import KnowledgeBase

EXIT_NO_ANSWER = 1
EXIT_BAD_DOCUMENTS = 2

_locale = click.option("--locale", default="es", show_default=True, help="es, en or a regional variant (es-CL).")
_creditor = click.option("--creditor", metavar="SLUG", help="Use this creditor's documents over the defaults.")
_root = click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Documents folder with es/ and en/ inside (default: the packaged knowledge/docs).",
)


@click.group("knowledge")
def knowledge_group() -> None:
    """FAQ knowledge base (Markdown documents, es/en)."""


@knowledge_group.command("ask")
@click.argument("question")
@_locale
@_creditor
@_root
@click.pass_context
def ask(context: click.Context, question: str, locale: str, creditor: str | None, root: Path | None) -> None:
    """Print the answer the bot would send to QUESTION and its source; exit 1 when it has no confident answer."""
    knowledge = KnowledgeBase(root)
    try:
        answer = knowledge.answer(question, locale, creditor)
        ranked = knowledge.rank(question, locale, creditor) if answer is None else []
    except DocumentError as exc:
        _fail(context, exc)
    if answer is None:
        closest = f" (closest: {ranked[0].document.id}, score {ranked[0].score:.2f})" if ranked else ""
        click.echo(f"no confident answer{closest}", err=True)
        context.exit(EXIT_NO_ANSWER)
    click.echo(answer.text)
    source = answer.source
    click.echo(f"source: {source.id} ({source.title}) {source.path} score {answer.score:.2f}")


@knowledge_group.command("list")
@_locale
@_creditor
@_root
@click.pass_context
def list_documents(context: click.Context, locale: str, creditor: str | None, root: Path | None) -> None:
    """List the documents answers come from: id, title and, for a creditor's own documents, its slug."""
    try:
        documents = load_documents(root, creditor=creditor, locale=locale)
    except DocumentError as exc:
        _fail(context, exc)
    for document in documents:
        owner = f"  [{document.creditor}]" if document.creditor else ""
        click.echo(f"{document.id:<20} {document.title}{owner}")


def _fail(context: click.Context, exc: DocumentError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    context.exit(EXIT_BAD_DOCUMENTS)
