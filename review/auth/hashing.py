"""Password hashes for the web app: off the event loop, a few at a time, taking turns.

An argon2 hash costs 64 MiB and a good part of a core, so only `HASH_THREADS` run at once
(on their own threads, never on the asyncio loop or in the thread pool that serves the
other routes). Logins waiting for a hash wait as asyncio futures, not as blocked threads,
so a burst of sign-in attempts cannot starve the rest of the app.

Waiting logins are served round-robin between *lanes* (the client's address): a burst of
failed logins from one place delays the next login from another place by at most one hash
per busy lane, instead of queueing it behind the whole burst. The lane never depends on the
user name, and unknown users cost the same dummy hash as real ones
(`review.auth.passwords.verify_password`), so neither timing nor order tells which names
exist.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from review.auth import passwords
from vision.errors import VisionError

T = TypeVar("T")

#: Hashes computed at once by the web app (each takes 64 MiB).
HASH_THREADS = 2
#: Logins allowed to wait for a hash; beyond this, new attempts are refused at once.
MAX_WAITING = 256


class HashQueueFullError(VisionError):
    """Too many sign-in attempts are waiting for a password hash."""


class _LaneScheduler:
    """Hands out `HASH_THREADS` slots to waiting coroutines, one lane after another."""

    def __init__(self, slots: int):
        self.free = slots
        self.lanes: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self.waiting = 0

    async def acquire(self, lane: str) -> None:
        if self.free > 0 and not self.lanes:
            self.free -= 1
            return
        if self.waiting >= MAX_WAITING:
            raise HashQueueFullError("too many sign-in attempts at once: wait a few seconds and retry")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lanes.setdefault(lane, deque()).append(fut)
        self.waiting += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled: pass it on
            else:
                self._forget(lane, fut)
            raise

    def _forget(self, lane: str, fut: asyncio.Future[None]) -> None:
        queue = self.lanes.get(lane)
        if queue is not None and fut in queue:
            queue.remove(fut)
            self.waiting -= 1
            if not queue:
                del self.lanes[lane]

    def release(self) -> None:
        while self.lanes:
            lane, queue = next(iter(self.lanes.items()))
            fut = queue.popleft()
            self.waiting -= 1
            if queue:
                self.lanes.move_to_end(lane)  # this lane had its turn: the others go first
            else:
                del self.lanes[lane]
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.free += 1


_executor: ThreadPoolExecutor | None = None
_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LaneScheduler] = weakref.WeakKeyDictionary()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="password-hash")
    return _executor


async def run_hash(lane: str, fn: Callable[..., T], *args: object) -> T:
    """Run the hashing function ``fn(*args)`` on a hash thread when ``lane``'s turn comes.

    Raises:
        HashQueueFullError: `MAX_WAITING` attempts are waiting already.
    """
    loop = asyncio.get_running_loop()
    scheduler = _schedulers.get(loop)
    if scheduler is None:
        scheduler = _schedulers[loop] = _LaneScheduler(HASH_THREADS)
    await scheduler.acquire(lane)
    try:
        return await loop.run_in_executor(_pool(), fn, *args)
    finally:
        scheduler.release()


async def verify(lane: str, stored_hash: str | None, password: str) -> bool:
    """`review.auth.passwords.verify_password` through the hash queue."""
    return await run_hash(lane, passwords.verify_password, stored_hash, password)


async def hash_new(lane: str, password: str) -> str:
    """`review.auth.passwords.hash_password` through the hash queue."""
    return await run_hash(lane, passwords.hash_password, password)
