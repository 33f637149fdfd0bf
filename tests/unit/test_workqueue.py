"""The deduplicating work queue: coalescing, no concurrent processing of a key, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from statemanager.runtime.workqueue import ShutDown, WorkQueue

DEADLINE = 1.0  # generous: every wait below completes at once when the queue is correct
SHORT = 0.05  # how long a "does not happen" check waits


async def _get(queue: WorkQueue[str], limit: int = 10) -> list[str]:
    return await asyncio.wait_for(queue.get_batch(limit), DEADLINE)


async def test_burst_of_adds_is_handed_out_once() -> None:
    """A key added three times before it is taken is handed out once."""
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        queue.add("k")
    assert len(queue) == 1
    assert await _get(queue) == ["k"]
    assert len(queue) == 0


async def test_fifo_order() -> None:
    """Keys are handed out in the order they were first added."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_all(["b", "a", "c", "a"])
    assert await _get(queue) == ["b", "a", "c"]


async def test_get_batch_limit() -> None:
    """get_batch returns at most `limit` keys; the rest stay queued for the next call."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_all(["a", "b", "c"])
    assert await _get(queue, 2) == ["a", "b"]
    assert len(queue) == 1
    assert await _get(queue, 2) == ["c"]


async def test_key_added_while_processing_waits_for_done() -> None:
    """A key re-added while processing is not handed out again until done() is called."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("k")
    assert await _get(queue) == ["k"]
    queue.add("k")
    queue.add("k")
    assert len(queue) == 0
    waiter = asyncio.create_task(queue.get_batch(10))
    finished, _ = await asyncio.wait({waiter}, timeout=SHORT)
    assert not finished, "key handed out twice at once"
    queue.done(["k"])
    assert await asyncio.wait_for(waiter, DEADLINE) == ["k"]


async def test_done_without_readd_does_not_requeue() -> None:
    """A processed key that was not re-added is gone after done()."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("k")
    keys = await _get(queue)
    queue.done(keys)
    assert len(queue) == 0


async def test_other_keys_flow_while_one_is_processing() -> None:
    """Processing one key does not hold back other keys."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await _get(queue) == ["a"]
    queue.add("a")
    queue.add("b")
    assert await _get(queue) == ["b"]


async def test_waiting_getter_woken_by_add() -> None:
    """A worker blocked on an empty queue gets the next key added."""
    queue: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(queue.get_batch(10))
    finished, _ = await asyncio.wait({waiter}, timeout=SHORT)
    assert not finished
    queue.add("k")
    assert await asyncio.wait_for(waiter, DEADLINE) == ["k"]


async def test_add_after_delivers_later() -> None:
    """add_after makes the key available only once its delay has passed."""
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.add_after("k", SHORT)
    assert len(queue) == 0
    assert await _get(queue) == ["k"]
    assert loop.time() - started >= SHORT * 0.9


async def test_add_after_coalesces_with_queued_key() -> None:
    """A delayed add of a key already queued does not hand it out twice."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("k")
    queue.add_after("k", 0.01)
    await asyncio.sleep(0.03)  # let the timer fire while "k" is still queued
    assert len(queue) == 1
    assert await _get(queue) == ["k"]


def test_a_fresh_queue_is_idle() -> None:
    """A fresh queue is idle."""
    assert WorkQueue[str]().idle()


async def test_not_idle_until_done() -> None:
    """A queued or processing key keeps the queue busy; done() makes it idle."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("k")
    assert not queue.idle()
    keys = await _get(queue)
    assert not queue.idle()
    queue.done(keys)
    assert queue.idle()


async def test_scheduled_keys_keep_the_queue_busy() -> None:
    """A key scheduled with add_after keeps the queue busy until it is processed."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("k", SHORT)
    assert not queue.idle()
    keys = await _get(queue)
    assert not queue.idle()
    queue.done(keys)
    assert queue.idle()


async def test_shutdown_wakes_waiting_getter_with_shutdown() -> None:
    """A worker waiting on an empty queue gets ShutDown when the queue shuts down."""
    queue: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(queue.get_batch(10))
    finished, _ = await asyncio.wait({waiter}, timeout=SHORT)
    assert not finished
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiter, DEADLINE)


async def test_shutdown_drains_queued_keys_then_raises() -> None:
    """Keys queued before shutdown are still handed out; new adds are ignored; then ShutDown."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.shutdown()
    queue.add("b")
    assert await _get(queue) == ["a"]
    with pytest.raises(ShutDown):
        await _get(queue)


async def test_shutdown_cancels_delayed_adds() -> None:
    """A key scheduled with add_after is not delivered after shutdown."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("k", 0.01)
    queue.shutdown()
    with pytest.raises(ShutDown):
        await _get(queue)


async def test_idle_after_shutdown_cancels_timers() -> None:
    """Once shutdown cancels every scheduled key, the queue is idle."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("k", 60)
    assert not queue.idle()
    queue.shutdown()
    assert queue.idle()


class _Recorder:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.adds = 0
        self.waits: list[float] = []

    def depth(self, depth: int) -> None:
        self.depths.append(depth)

    def added(self) -> None:
        self.adds += 1

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_observer_sees_depth_adds_and_waits() -> None:
    """The observer sees the depth after every change, adds without duplicates, and each
    handed-out key's time in the queue (from an injected clock)."""
    now = [10.0]
    rec = _Recorder()
    queue: WorkQueue[str] = WorkQueue(rec, clock=lambda: now[0])
    queue.add("a")
    now[0] = 11.0
    queue.add("b")
    queue.add("a")
    now[0] = 13.5
    keys = await _get(queue, 1)
    queue.done(keys)
    assert rec.depths == [1, 2, 1, 1]
    assert rec.adds == 2
    assert rec.waits == [3.5]


def _upper(low: float, high: float) -> float:
    """Jitter that always picks the ceiling, so delays are exact."""
    return high


async def test_rate_limited_delay_grows_per_key_and_is_capped() -> None:
    """Each failure of a key doubles its own delay up to the cap; other keys start afresh."""
    queue: WorkQueue[str] = WorkQueue(retry_initial=0.5, retry_cap=3.0, jitter=_upper)
    delays = [queue.add_rate_limited("stuck") for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert queue.add_rate_limited("other") == 0.5
    assert queue.failures("stuck") == 5
    queue.shutdown()


async def test_forget_restarts_a_keys_backoff() -> None:
    """After forget (a success), the key's next failure waits the initial delay again."""
    queue: WorkQueue[str] = WorkQueue(retry_initial=0.5, retry_cap=3.0, jitter=_upper)
    queue.add_rate_limited("k")
    queue.add_rate_limited("k")
    queue.forget("k")
    assert queue.failures("k") == 0
    assert queue.add_rate_limited("k") == 0.5
    queue.shutdown()


async def test_rate_limited_key_comes_back_after_its_delay() -> None:
    """A rate-limited key is handed out again once its delay passed, and only once."""
    queue: WorkQueue[str] = WorkQueue(retry_initial=SHORT, jitter=_upper)
    queue.add_rate_limited("k")
    assert len(queue) == 0
    assert await _get(queue) == ["k"]
    queue.done(["k"])
    assert queue.idle()


async def test_one_timer_per_key_earliest_wins() -> None:
    """Scheduling a key that already waits keeps the earlier time; a sooner one replaces it."""
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("k", 60)
    queue.add_after("k", 120)  # later: ignored
    queue.add_after("k", SHORT)  # sooner: replaces the 60 s timer
    assert await _get(queue) == ["k"]
    queue.done(["k"])
    assert queue.idle(), "a second timer for the same key was left behind"
