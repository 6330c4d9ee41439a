"""Refuse any request whose text carries a NUL character, before a view sees it.

PostgreSQL text columns cannot store NUL (psycopg raises DataError), so such a value would reach the database
and turn into a 500 — and a provider retries a 500 forever. No real provider, browser or API client sends
NUL in text, so it is refused as bad input: 400 with the reason, nothing stored. Uploaded files are not
inspected (their parsers decide); everything else is — path, query, form fields, JSON strings, raw text bodies.
The JSON API is left to its own validation, which already names the bad field (422) for the same input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from flask import Flask, Request, request
from werkzeug.exceptions import BadRequest

NUL = "\x00"
API_PREFIX = "/api/"
MULTIPART = "multipart/form-data"
_FORM_TYPES = ("application/x-www-form-urlencoded", MULTIPART)
# Every way a NUL can be written in the bytes of a query or body we parse: raw, percent-encoded (forms and queries;
# also RFC 2231 multipart field names) or as a JSON escape. UTF-16/32 JSON is full of raw NUL bytes anyway.
_NUL_MARKER = re.compile(rb"\x00|%00|\\u0000")


def install_nul_guard(app: Flask) -> None:
    app.before_request(_refuse_nul)


def _refuse_nul() -> None:
    if request.path.startswith(API_PREFIX):
        return
    where = first_nul(request)
    if where is not None:
        raise BadRequest(description=f"a NUL character is not allowed (in {where})")


def first_nul(incoming: Request) -> str | None:
    """Where the first NUL is (path, query, form, json or body), or None."""
    if not _may_hold_nul(incoming):
        return None
    return _where_nul(incoming)


def _may_hold_nul(incoming: Request) -> bool:
    """False only when no NUL can be anywhere: a few byte searches instead of walking every parsed field, which
    cost a webhook more than its signature check. Multipart is always walked: uploads are parsed as a stream
    (into files), not read whole into memory for a search."""
    if NUL in incoming.path or incoming.mimetype == MULTIPART:
        return True
    return bool(_NUL_MARKER.search(incoming.query_string) or _NUL_MARKER.search(incoming.get_data(cache=True)))


def _where_nul(incoming: Request) -> str | None:
    if NUL in incoming.path:
        return "path"
    if _has_nul(_pairs(incoming.args.items(multi=True))):
        return "query"
    if incoming.mimetype in _FORM_TYPES:
        return "form" if _has_nul(_pairs(incoming.form.items(multi=True))) else None
    if incoming.is_json:
        return "json" if _has_nul(_strings(_json_or_none(incoming))) else None
    return "body" if b"\x00" in incoming.get_data(cache=True) else None


def _json_or_none(incoming: Request) -> object:
    try:
        return incoming.get_json(silent=True, cache=True)
    except RecursionError:  # absurdly nested: the view's own parser refuses it
        return None


def _pairs(items: Iterable[tuple[str, str]]) -> Iterator[str]:
    for key, value in items:
        yield key
        yield value


def _strings(document: object) -> Iterator[str]:
    """Every string (keys too) in a parsed JSON document; a stack, not recursion, so depth cannot crash it."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            yield from (str(key) for key in value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _has_nul(texts: Iterable[str]) -> bool:
    return any(NUL in text for text in texts)
