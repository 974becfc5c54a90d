"""The generation lock hands out turns in arrival order, swaps first."""

from __future__ import annotations

import threading
import time

import pytest

from bot.turns import TurnLock


def _queue_up(lock: TurnLock, names: list[tuple[str, bool]], order: list[str]) -> list[threading.Thread]:
    """Start one waiter per name, each queued before the next starts; each records its turn."""
    def wait(name: str, priority: bool) -> None:
        assert lock.acquire(timeout=30, priority=priority)
        order.append(name)
        lock.release()

    threads = []
    for name, priority in names:
        t = threading.Thread(target=wait, args=(name, priority))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while lock.waiting() < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lock.waiting() == len(threads)
    return threads


def test_waiters_get_the_lock_in_arrival_order_and_swaps_go_first():
    lock, order = TurnLock(), []
    lock.acquire()  # a reply in progress
    threads = _queue_up(lock, [("r1", False), ("r2", False), ("swap1", True), ("r3", False), ("swap2", True)], order)
    lock.release()
    for t in threads:
        t.join(10)
    assert order == ["swap1", "swap2", "r1", "r2", "r3"]
    assert lock.waiting() == 0 and lock.acquire(timeout=0)


def test_a_waiter_that_times_out_leaves_the_queue_without_blocking_the_next():
    lock, order = TurnLock(), []
    lock.acquire()
    started = time.monotonic()
    assert lock.acquire(timeout=0.05) is False  # at the head of the queue, then gone
    assert time.monotonic() - started >= 0.05 and lock.waiting() == 0
    threads = _queue_up(lock, [("a", False), ("b", False)], order)
    lock.release()
    for t in threads:
        t.join(10)
    assert order == ["a", "b"]


def test_many_threads_never_hold_it_together():
    lock, inside, most = TurnLock(), [0], [0]

    def work() -> None:
        for i in range(50):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.0001)
                inside[0] -= 1
            assert lock.acquire(timeout=5, priority=i % 7 == 0)
            lock.release()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most[0] == 1 and lock.waiting() == 0


def test_releasing_an_unheld_lock_is_an_error():
    with pytest.raises(RuntimeError, match="unheld"):
        TurnLock().release()
