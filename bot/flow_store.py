"""Which flow the engine runs: the latest published FlowVersion of a name, else the shipped file.

Managers publish flows from the console (admin/flows.py). Every turn asks for its flow, so the lookup is
cheap: the inbound path calls `refresh(session, name)` in its own transaction, which re-reads the latest
published id at most once per LATEST_TTL_SECONDS (a publish in this process is seen at once through
`forget_published_flows()`); a parsed Flow is kept per (name, row id), and published sources never change.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import FlowVersion
from bot.store import Database
from flows.loader import Flow, FlowError, default_flow, parse_flow

logger = logging.getLogger(__name__)
LATEST_TTL_SECONDS = 2.0
_generation = 0  # bumped by forget_published_flows(); a cached "latest id" from an older generation is stale


def forget_published_flows() -> None:
    """Make every PublishedFlows in this process re-read the latest published ids (call after a publish)."""
    global _generation
    _generation += 1


class PublishedFlows:
    """A FlowSource for DialogEngine: `flows(name, version)` returns the flow in force for `name`."""

    def __init__(self, database: Database, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.database = database
        self.monotonic = monotonic
        self._guard = threading.Lock()
        self._latest: dict[str, tuple[float, int, int | None]] = {}  # name -> (read at, generation, row id)
        self._parsed: dict[tuple[str, int], Flow] = {}

    def __call__(self, name: str, _version: int = 0) -> Flow:
        known, row_id = self._cached_id(name, fresh_only=False)
        if not known or (row_id is not None and (name, row_id) not in self._parsed):
            # Only outside the inbound path (CLI, tests): that path has refreshed in its own transaction.
            with self.database.session() as session:
                row_id = self.refresh(session, name)
        if row_id is None:
            return default_flow(name)
        with self._guard:
            return self._parsed[(name, row_id)]

    def refresh(self, session: Session, name: str) -> int | None:
        """Re-read the latest published id with the caller's session, unless read less than the TTL ago.

        The inbound path calls this inside its own transaction before running the engine: on SQLite every
        transaction takes the write lock, so a second session there would wait for the first one forever.
        """
        known, cached = self._cached_id(name, fresh_only=True)
        if known:
            return cached
        now, generation = self.monotonic(), _generation
        row_id = session.scalars(
            select(FlowVersion.id)
            .where(FlowVersion.name == name, FlowVersion.status == "published")
            .order_by(FlowVersion.version.desc())
            .limit(1)
        ).first()
        if row_id is not None and (name, row_id) not in self._parsed:
            flow = self._load(name, session.get_one(FlowVersion, row_id))
            with self._guard:
                self._parsed[(name, row_id)] = flow
        with self._guard:
            self._latest[name] = (now, generation, row_id)
        return row_id

    def _cached_id(self, name: str, *, fresh_only: bool) -> tuple[bool, int | None]:
        """(whether the cache knows the latest id, that id); stale entries count unless `fresh_only`."""
        with self._guard:
            cached = self._latest.get(name)
        if cached is None:
            return False, None
        fresh = cached[1] == _generation and self.monotonic() - cached[0] < LATEST_TTL_SECONDS
        return (True, cached[2]) if fresh or not fresh_only else (False, None)

    def _load(self, name: str, row: FlowVersion) -> Flow:
        try:
            # The row's version, not the YAML's: conversations record which published version they ran.
            return dataclasses.replace(parse_flow(row.source), version=row.version)
        except FlowError:
            # Publishing validates first; a row broken by hand must not stop every conversation.
            logger.exception("published flow %s (row %s) cannot be parsed; using the shipped flow", name, row.id)
            return default_flow(name)
