"""Decisions written behind the answer: the store write taken off the placement's response path.

With ``decision_writes = "behind"`` (:class:`placement.serve.settings.Settings`) a placement is
answered as soon as it is decided; its decisions go to a :class:`DecisionWriter`, whose thread
commits everything queued so far in one transaction (group commit) a moment later. Feedback is
unaffected: an acknowledged feedback is committed before its answer in either mode.

What it costs (``docs/reliability.md``): a replica killed within the few milliseconds between an
answer and its write loses those decisions, and a feedback that quotes one is refused (404), as
for a decision the retention window pruned. A feedback that reaches another replica before the
write lands waits for it (:meth:`placement.serve.placer.Placer.feedback`). While the store refuses
writes (a full disk) the writer keeps the queued decisions and retries, and new placements are
answered 503 ``storage_unavailable``, as when writes are committed before the answer; so are
placements past ``max_pending_jobs`` queued jobs.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from placement.serve.storage.store import DecisionBatch, Store

log = logging.getLogger(__name__)

RETRY_S = 0.5
"""Seconds between attempts while the store refuses the queued decisions."""


class DecisionWriter:
    """A queue of decision batches and the thread that commits them (see the module docstring)."""

    def __init__(self, store: Store, *, max_pending_jobs: int = 100_000, retry_s: float = RETRY_S) -> None:
        if max_pending_jobs < 1:
            raise ValueError(f"max_pending_jobs must be >= 1, got {max_pending_jobs}")
        self._store = store
        self._max_pending_jobs = int(max_pending_jobs)
        self._retry_s = float(retry_s)
        self._cond = threading.Condition()
        self._queue: deque[DecisionBatch] = deque()
        self._writing: list[DecisionBatch] = []
        self._pending_jobs = 0
        self._error: Exception | None = None
        self._closed = False
        self.written_batches = 0
        """Batches committed so far."""
        self._thread = threading.Thread(target=self._run, name="decision-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close, 10.0)  # an orderly exit (SIGTERM to uvicorn, a replica stopped) writes what is queued

    # -- the request side ------------------------------------------------------------------
    def submit(self, batch: DecisionBatch) -> None:
        """Queue ``batch`` for the next commit. Raises :class:`placement.serve.storage.store.StorageUnavailable`
        while the store refuses writes or ``max_pending_jobs`` are queued (the placement answers
        503 and is not queued), ``RuntimeError`` after :meth:`close`."""
        from placement.serve.storage.store import StorageUnavailable

        n = len(batch.columns["gpu"])
        with self._cond:
            if self._closed:
                raise RuntimeError("the decision writer is closed")
            if self._error is not None:
                raise StorageUnavailable(f"decisions are not being stored ({self._error}); "
                                         f"{self._pending_jobs} queued decisions wait for the store")
            if self._pending_jobs + n > self._max_pending_jobs:
                raise StorageUnavailable(f"{self._pending_jobs} decisions wait to be stored (limit "
                                         f"{self._max_pending_jobs}): the store is slower than the placements")
            self._queue.append(batch)
            self._pending_jobs += n
            self._cond.notify_all()

    def holds(self, batch_id: str) -> bool:
        """Whether the batch ``batch_id`` is queued or being written now (not yet committed)."""
        with self._cond:
            return any(b.batch_id == batch_id for b in (*self._writing, *self._queue))

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far is committed; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._writing:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def pending_jobs(self) -> int:
        """Decisions queued or being written."""
        with self._cond:
            return self._pending_jobs

    @property
    def error(self) -> Exception | None:
        """The store's refusal of the last attempt, while it lasts (None once a write succeeds)."""
        with self._cond:
            return self._error

    def close(self, timeout_s: float = 30.0) -> bool:
        """Commit what is queued (waiting up to ``timeout_s``), then stop the thread; False (and an
        error logged with the count) if decisions were left unwritten."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        left = self.pending_jobs
        if left:
            log.error("decision writer closed with %d decisions not stored", left)
        return left == 0

    # -- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        from placement.serve.storage.store import StorageUnavailable

        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                self._writing = list(self._queue)
                self._queue.clear()
            batches = self._writing
            try:
                self._store.insert_decisions(*batches)
            except Exception as exc:  # kept and retried; new placements get 503 meanwhile
                if not isinstance(exc, StorageUnavailable):
                    log.exception("decision write failed; retrying in %.1f s", self._retry_s)
                with self._cond:
                    self._error = exc
                    self._queue.extendleft(reversed(batches))
                    self._writing = []
                    self._cond.notify_all()
                # retried after close() too, until its wait gives up (a daemon thread: it ends
                # with the process)
                time.sleep(self._retry_s)
                continue
            with self._cond:
                self._error = None
                self._pending_jobs -= sum(len(b.columns["gpu"]) for b in batches)
                self.written_batches += len(batches)
                self._writing = []
                self._cond.notify_all()
