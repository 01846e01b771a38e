"""Admission and generation threads: blocking model work driven from the event loop, cancellable.

``Engine.admit()`` runs before any tokenising: at most ``parallel + max_queue`` requests are admitted
(running or waiting, first come first served, for one of ``parallel`` generation slots); past that a
request gets 503 at once.
``Engine.stream(ticket, work)`` runs ``work(job)`` (a blocking generator: it renders the prompt,
generates and yields wire payloads) in its own thread once a slot is free, and hands each payload to
the event loop. When the client goes away the route calls ``job.cancel()``; the work checks
``job.cancelled`` between tokens, so generation stops within one token and the slot is freed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import AsyncIterator, Callable, Iterator

from ..wire.common import APIError

_DONE = object()


class Job:
    """One admitted request's generation: ``cancel()`` from any thread, ``cancelled`` in the work loop."""

    def __init__(self):
        self._cancel = threading.Event()
        self.tokens = 0  # tokens generated so far (the work counts them)
        self._wake: threading.Condition | None = None  # the engine's, while the job waits for a slot

    def cancel(self) -> None:
        self._cancel.set()
        wake = self._wake
        if wake is not None:
            with wake:
                wake.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class Ticket:
    def __init__(self, engine: "Engine"):
        self.engine, self.released = engine, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.engine._release()


class Engine:
    def __init__(self, *, parallel: int = 1, max_queue: int = 16):
        if parallel < 1 or max_queue < 0:
            raise ValueError(f"parallel must be >= 1 and max_queue >= 0, not {parallel} and {max_queue}")
        self.parallel, self.capacity = parallel, parallel + max_queue
        self._free = parallel  # generation slots not in use
        self._waiting: list[Job] = []  # jobs waiting for a slot, first come first served
        self._slot = threading.Condition()
        self._lock = threading.Lock()
        self.admitted = 0
        self.jobs: list[Job] = []  # running or waiting (for tests and /health)

    def admit(self) -> Ticket:
        with self._lock:
            if self.admitted >= self.capacity:
                raise APIError(503, "the server is busy (request queue full); retry later", code="queue_full")
            self.admitted += 1
        return Ticket(self)

    def _release(self) -> None:
        with self._lock:
            self.admitted -= 1

    def _take_slot(self, job: Job) -> bool:
        """Block until a slot is free and ``job`` is first in line (True), or it is cancelled (False)."""
        with self._slot:
            job._wake = self._slot
            self._waiting.append(job)
            try:
                while not job.cancelled and (self._free == 0 or self._waiting[0] is not job):
                    self._slot.wait()
                if job.cancelled:
                    return False
                self._free -= 1
                return True
            finally:
                self._waiting.remove(job)
                job._wake = None
                self._slot.notify_all()  # the next in line may go now

    def _give_slot(self) -> None:
        with self._slot:
            self._free += 1
            self._slot.notify_all()

    async def stream(self, ticket: Ticket, work: Callable[[Job], Iterator], job: Job | None = None) -> AsyncIterator:
        """Payloads of ``work(job)`` as they come; an ``APIError`` it raises is raised here. Leaving the
        iteration early (client gone, task cancelled) cancels the job."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = job or Job()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (server shutting down)
                job.cancel()

        def run() -> None:
            try:
                if not self._take_slot(job):
                    return
                try:
                    for item in work(job):
                        if job.cancelled:
                            break
                        put(item)
                finally:
                    self._give_slot()
            except APIError as e:
                put(e)
            except Exception as e:  # noqa: BLE001 - a broken request must not take the server down
                print(f"workbench serve: error in a generation: {type(e).__name__}: {e}", file=sys.stderr)
                put(APIError(500, f"internal error: {type(e).__name__}"))
            finally:
                with self._lock:
                    self.jobs.remove(job)
                ticket.release()
                put(_DONE)

        with self._lock:
            self.jobs.append(job)
        threading.Thread(target=run, name="workbench-generate", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, APIError):
                    raise item
                yield item
        finally:
            job.cancel()
