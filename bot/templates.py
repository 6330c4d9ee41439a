"""Debtor-facing text: templates per key, locale and channel, rendered in a sandbox.

Defaults ship as YAML in flows/templates/<language>.yaml; managers' edits are Template rows that win.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from datetime import date
from functools import cache, lru_cache
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import ORMExecuteState, Session

from bot.domain import Money
from bot.i18n import format_date, format_money, language_of
from bot.models import Template
from flows import TEMPLATES_DIR

ANY_CHANNEL = "*"
# How long another process may keep serving a template a manager has just edited; this process sees it at once.
OVERRIDES_TTL_SECONDS = 5.0


class TemplateError(Exception):
    """A template is missing, malformed or needs a variable that was not given."""


@cache
def default_templates(language: str) -> Mapping[str, Mapping[str, str]]:
    """{key: {channel or '*': body}} from the shipped YAML for one language."""
    path = TEMPLATES_DIR / f"{language}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {key: value if isinstance(value, dict) else {ANY_CHANNEL: value} for key, value in raw.items()}


class TemplateRenderer:
    """Finds the most specific text for (key, locale, channel) and fills it with the engine's facts."""

    def __init__(self, overrides: Mapping[tuple[str, str, str], str] | None = None) -> None:
        self.overrides = dict(overrides or {})

    @classmethod
    def from_session(cls, session: Session) -> TemplateRenderer:
        return cls(_OVERRIDES.get(session))

    def source(self, key: str, locale: str, channel: str) -> str:
        language = language_of(locale)
        for loc in dict.fromkeys((locale, language)):
            for chan in (channel, ANY_CHANNEL):
                if (key, loc, chan) in self.overrides:
                    return self.overrides[(key, loc, chan)]
        defaults = default_templates(language).get(key)
        if defaults is None:
            raise TemplateError(f"no template {key!r} for locale {language!r}")
        return defaults.get(channel) or defaults.get("default") or defaults[ANY_CHANNEL]

    def render(self, key: str, locale: str, channel: str, variables: Mapping[str, Any]) -> str:
        try:
            return _compiled(self.source(key, locale, channel), locale).render(**variables).strip()
        except JinjaTemplateError as exc:
            raise TemplateError(f"template {key!r} ({locale}/{channel}): {exc}") from exc


@lru_cache(maxsize=2048)
def _compiled(source: str, locale: str) -> JinjaTemplate:
    """Compiling is most of a render's cost; keyed by the text itself, so an edited template is a new entry."""
    return _environment(locale).from_string(source)


@lru_cache(maxsize=64)
def _environment(locale: str) -> SandboxedEnvironment:
    # Sandboxed: templates are edited by managers in the console and must not reach Python internals.
    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    environment.filters["money"] = lambda value: _money(value, locale)
    environment.filters["date"] = lambda value, style="long": _date(value, locale, style)
    return environment


def _money(value: object, locale: str) -> str:
    if not isinstance(value, Money):
        raise TemplateError(f"money filter needs a Money value, got {type(value).__name__}")
    return format_money(value, locale)


def _date(value: object, locale: str, style: str) -> str:
    if not isinstance(value, date):
        raise TemplateError(f"date filter needs a date, got {type(value).__name__}")
    return format_date(value, locale, style)


Overrides = dict[tuple[str, str, str], str]


class _OverridesCache:
    """The managers' template overrides per database, read at most once per OVERRIDES_TTL_SECONDS.

    Every turn renders replies, and re-reading the (small, rarely edited) templates table each time was a
    round trip per webhook. Writes through the ORM in this process invalidate the cache at commit; a
    session that has written templates reads its own uncommitted rows and never caches them.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._generation = 0
        self._entries: weakref.WeakKeyDictionary[Engine, tuple[float, int, Overrides]] = weakref.WeakKeyDictionary()

    def get(self, session: Session) -> Overrides:
        if session.info.get(_DIRTY):
            return _read_overrides(session)
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        with self._guard:
            entry, generation = self._entries.get(engine), self._generation
        if entry and entry[1] == generation and time.monotonic() - entry[0] < OVERRIDES_TTL_SECONDS:
            return entry[2]
        overrides = _read_overrides(session)
        with self._guard:
            # Stamped with the generation seen before reading: a write committed meanwhile invalidates it.
            self._entries[engine] = (time.monotonic(), generation, overrides)
        return overrides

    def forget(self) -> None:
        with self._guard:
            self._generation += 1


_OVERRIDES = _OverridesCache()
_DIRTY = "cobrabot.templates_written"


def forget_template_overrides() -> None:
    """Drop cached overrides (after writing templates outside the ORM, e.g. in tests or migrations)."""
    _OVERRIDES.forget()


def _read_overrides(session: Session) -> Overrides:
    rows = session.execute(select(Template.key, Template.locale, Template.channel, Template.body))
    return {(key, locale, channel): body for key, locale, channel, body in rows}


@event.listens_for(Session, "before_flush")
def _note_template_writes(session: Session, _context: Any, _instances: Any) -> None:
    if any(isinstance(obj, Template) for obj in (*session.new, *session.dirty, *session.deleted)):
        session.info[_DIRTY] = True


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_template_writes(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and any(
        mapper.class_ is Template for mapper in state.all_mappers
    ):
        state.session.info[_DIRTY] = True


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_after_template_writes(session: Session) -> None:
    if session.info.pop(_DIRTY, False):
        _OVERRIDES.forget()
