"""Read knowledge base documents: Markdown files with a YAML front matter block, validated at load.

Layout: `<root>/<language>/**/<id>.md`. A document without `creditor:` is a default; one with `creditor: <slug>`
replaces the default with the same id (the file stem) for that creditor only. The first paragraph after the front
matter is the answer the bot sends; the rest is detail for the portal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.nlu import LANGUAGES, language_of

DEFAULT_ROOT = Path(__file__).parent / "docs"
# The answer is sent as one chat message and must read at a glance on a phone; detail goes after it.
MAX_ANSWER_CHARS = 600

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # safe_load's rules, libyaml's speed when available
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)(.*)\Z", re.DOTALL)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_REQUIRED = ("title", "tags", "locale")
_ALLOWED = frozenset({*_REQUIRED, "creditor", "questions"})


class DocumentError(ValueError):
    """A document that cannot be used; the message starts with the file's path."""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    locale: str
    tags: tuple[str, ...]
    questions: tuple[str, ...]
    answer: str  # first paragraph, lines joined: what the bot sends
    body: str  # the whole Markdown body, answer included
    path: Path
    creditor: str | None = None


def load_documents(root: Path | None = None, creditor: str | None = None, locale: str = "es") -> list[Document]:
    """Default documents of `locale`'s language, each replaced by `creditor`'s document with the same id, sorted
    by id. Raises DocumentError for any invalid file under the language's folder, whoever it belongs to."""
    language = language_of(locale) or "es"
    folder = (root or DEFAULT_ROOT) / language
    if not folder.is_dir():
        return []
    defaults: dict[str, Document] = {}
    overrides: dict[str, Document] = {}
    for path in sorted(folder.rglob("*.md")):
        document = load_document(path, language)
        if document.creditor is None:
            _add(defaults, document)
        elif document.creditor == creditor:
            _add(overrides, document)
    merged = defaults | overrides
    return [merged[key] for key in sorted(merged)]


def load_document(path: Path, language: str) -> Document:
    """Parse and validate one file whose front matter must say `locale: <language>`."""
    try:
        text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{path}: cannot read: {exc}") from exc
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise DocumentError(f"{path}: missing front matter: start the file with a '---' line, YAML, then '---'")
    try:
        meta = yaml.load(match.group(1), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise DocumentError(f"{path}: invalid front matter YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise DocumentError(f"{path}: front matter must be a YAML mapping (title: ..., tags: [...], locale: ...)")
    _check_fields(path, meta, language)
    body = match.group(2).strip()
    return Document(
        id=_document_id(path),
        title=meta["title"].strip(),
        locale=meta["locale"],
        tags=tuple(meta["tags"]),
        questions=tuple(meta.get("questions") or ()),
        answer=_answer(path, body),
        body=body,
        path=path,
        creditor=meta.get("creditor"),
    )


def _check_fields(path: Path, meta: dict[Any, Any], language: str) -> None:
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise DocumentError(f"{path}: front matter is missing {', '.join(missing)}")
    unknown = sorted(str(key) for key in meta if key not in _ALLOWED)
    if unknown:
        raise DocumentError(f"{path}: unknown front matter field {', '.join(unknown)} (allowed: {_allowed()})")
    if not isinstance(meta["title"], str) or not meta["title"].strip():
        raise DocumentError(f"{path}: title must be a non-empty text")
    if meta["locale"] not in LANGUAGES:
        raise DocumentError(f"{path}: locale {meta['locale']!r} is not one of {', '.join(LANGUAGES)}")
    if meta["locale"] != language:
        raise DocumentError(f"{path}: locale {meta['locale']!r} does not match its folder {language!r}")
    for key in ("tags", "questions"):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise DocumentError(f"{path}: {key} must be a list of non-empty texts")
    creditor = meta.get("creditor")
    if creditor is not None and not (isinstance(creditor, str) and _SLUG.match(creditor)):
        raise DocumentError(f"{path}: creditor must be a slug like 'acme-energy', got {creditor!r}")


def _document_id(path: Path) -> str:
    if not _SLUG.match(path.stem):
        raise DocumentError(f"{path}: the file name is the document id and must look like 'how-to-pay.md'")
    return path.stem


def _answer(path: Path, body: str) -> str:
    first = _PARAGRAPH_BREAK.split(body, maxsplit=1)[0].strip()
    if not first:
        raise DocumentError(f"{path}: no answer: write the answer as the first paragraph after the front matter")
    if first.startswith("#"):
        raise DocumentError(f"{path}: the first paragraph is the answer the bot sends and must not be a heading")
    answer = " ".join(line.strip() for line in first.splitlines())
    if len(answer) > MAX_ANSWER_CHARS:
        raise DocumentError(
            f"{path}: the answer paragraph has {len(answer)} characters; keep it under {MAX_ANSWER_CHARS} "
            "so it fits in one chat message (move detail to later paragraphs)"
        )
    return answer


def _add(documents: dict[str, Document], document: Document) -> None:
    previous = documents.get(document.id)
    if previous is not None:
        raise DocumentError(f"{document.path}: duplicate id {document.id!r}, also defined in {previous.path}")
    documents[document.id] = document


def _allowed() -> str:
    return ", ".join(sorted(_ALLOWED))
