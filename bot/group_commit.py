"""Group commit: many request threads' small writes become one statement on one connection.

Each caller still waits until its own rows are committed (a webhook answers 200 only after that), but under
load the rows of every request that arrived while the previous statement ran go out together: one round trip
and one commit for the batch instead of one per request, and no connection checkout per request.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
Row = TypeVar("Row")
WAIT_SECONDS = 30.0


class GroupCommit(Generic[Row]):
    """`submit(rows)` blocks until `write` has committed them, batching concurrent submissions (at most
    `max_rows` rows a batch). A failed batch is retried submission by submission, so one bad request fails
    alone instead of taking the others with it."""

    def __init__(self, write: Callable[[Sequence[Row]], None], *, max_rows: int = 500, name: str = "group-commit"):
        self._write = write
        self._max_rows = max_rows
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[list[Row], Future[None]]] = queue.SimpleQueue()
        self._owner_pid: int | None = None  # the writer thread belongs to the process that started it

    def submit(self, rows: Sequence[Row]) -> None:
        self._ensure_writer()
        done: Future[None] = Future()
        self._queue.put((list(rows), done))
        done.result(timeout=WAIT_SECONDS)

    def _ensure_writer(self) -> None:
        # Started lazily, and again in a forked child (gunicorn forks workers; threads do not survive a fork).
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
                self._owner_pid = os.getpid()

    def _run(self) -> None:
        pending = self._queue
        while True:
            batch = [pending.get()]
            rows = len(batch[0][0])
            while rows < self._max_rows:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
                rows += len(batch[-1][0])
            self._commit(batch)

    def _commit(self, batch: list[tuple[list[Row], Future[None]]]) -> None:
        try:
            self._write([row for rows, _ in batch for row in rows])
        except Exception as exc:  # handed to the waiting callers; the writer thread itself must not die
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            logger.warning("group commit of %d submissions failed (%s); retrying one by one", len(batch),
                           type(exc).__name__)  # fmt: skip
            for single in batch:
                self._commit([single])
            return
        for _, done in batch:
            done.set_result(None)
