"""GroupCommit: concurrent submissions share one write; each caller returns only once its rows are written."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.group_commit import GroupCommit


class SlowWriter:
    """Records each write; the first one blocks until released, so later submissions pile up behind it."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()

    def __call__(self, rows) -> None:
        if not self.writes:
            self.first_started.set()
            assert self.release.wait(10)
        if 13 in rows:
            raise ValueError("row 13 is refused")
        self.writes.append(list(rows))


def test_submissions_waiting_behind_a_write_go_out_together_and_each_returns_after_its_write():
    writer = SlowWriter()
    group = GroupCommit(writer)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.submit, [0])
        assert writer.first_started.wait(5)
        rest = [pool.submit(group.submit, [n, n + 100]) for n in range(1, 8)]
        while group._queue.qsize() < 7:  # all seven wait behind the blocked write
            threading.Event().wait(0.01)
        assert not any(future.done() for future in rest)
        writer.release.set()
        for future in [first, *rest]:
            future.result(timeout=5)

    assert writer.writes[0] == [0]
    assert len(writer.writes) == 2  # the seven waiting submissions in one write
    assert sorted(writer.writes[1]) == sorted([n for m in range(1, 8) for n in (m, m + 100)])


def test_a_failing_submission_fails_alone_and_the_others_are_written():
    writer = SlowWriter()
    group = GroupCommit(writer)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(group.submit, [0])
        assert writer.first_started.wait(5)
        good = [pool.submit(group.submit, [n]) for n in (11, 12)]
        bad = pool.submit(group.submit, [13])
        while group._queue.qsize() < 3:
            threading.Event().wait(0.01)
        writer.release.set()
        first.result(timeout=5)
        for future in good:
            future.result(timeout=5)
        with pytest.raises(ValueError, match="row 13"):
            bad.result(timeout=5)

    written = [row for write in writer.writes for row in write]
    assert sorted(written) == [0, 11, 12]


def test_a_forked_process_gets_its_own_writer_thread(monkeypatch):
    writer = SlowWriter()
    writer.release.set()
    group = GroupCommit(writer)
    group.submit([1])
    monkeypatch.setattr("bot.group_commit.os.getpid", lambda: -1)  # as in a gunicorn worker after the fork

    group.submit([2])

    assert writer.writes == [[1], [2]]
    assert group._owner_pid == -1
