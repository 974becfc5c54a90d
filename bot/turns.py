"""The engine's generation lock, handed out in turn.

A plain `threading.Lock` lets any waiter in next, so with many people chatting one reply could
wait far longer than the queue ahead of it, and an adapter swap (well under a second of work)
waited a median 17 s behind 8 users' replies in the hot-swap benchmark. `TurnLock` serves waiters
first come, first served, except that priority waiters (swaps) go before every ordinary one.
"""

from __future__ import annotations

import threading
import time


class TurnLock:
    """A lock whose waiters get it in arrival order; `priority=True` waiters go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._waiting: list[object] = []  # tickets in the order they will get the lock
        self._priority = 0  # how many of the first tickets are priority ones

    def acquire(self, timeout: float | None = None, *, priority: bool = False) -> bool:
        """Wait for this caller's turn; False if `timeout` seconds pass first (it then leaves the queue)."""
        ticket = object()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting.insert(self._priority if priority else len(self._waiting), ticket)
            self._priority += priority
            try:
                while self._held or self._waiting[0] is not ticket:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self._held = True
                return True
            finally:
                self._waiting.remove(ticket)
                self._priority -= priority
                self._cond.notify_all()  # the next ticket may be at the head now

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld TurnLock")
            self._held = False
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def __enter__(self) -> TurnLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
