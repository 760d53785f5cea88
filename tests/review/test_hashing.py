"""A burst of failed logins neither blocks the event loop nor queues a real login behind it.

A real uvicorn server on 127.0.0.1 with argon2 at its production cost: 16 failed logins
for unknown users (each still costs a dummy hash) from one address, then a correct login
and a page view from another. Only the order of completions is asserted, never times.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from conftest import wait_for
from review_helpers import PASSWORD
from sqlalchemy import select

from review.auth import passwords
from review.db.engine import Database
from review.db.models import User

BURST = 16
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class CountingHasher(PasswordHasher):
    """The production hasher, counting the verifications that have started."""

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)
        self.started = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 (argon2's name)
        self.started = next(self._ids)
        return super().verify(hash, password)


def _client(base: str, source: str) -> tuple[httpx.Client, str]:
    """A client bound to the local address ``source``, with the login form's CSRF token."""
    c = httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=source), timeout=None)
    token = _TOKEN.search(c.get("/login").text)
    assert token
    return c, token.group(1)


def test_failed_login_burst_keeps_the_loop_responsive_and_a_real_login_gets_a_turn(
    live_server: str, db: Database, users: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher()
    monkeypatch.setattr(passwords, "HASHER", hasher)
    with db.write() as s:  # the real user's hash at production cost too
        s.execute(select(User).where(User.name == "rev")).scalar_one().password_hash = hasher.hash(PASSWORD)
    # The burst comes from 127.0.0.1; the real person and the page view from 127.0.0.2
    # (another machine, as far as the server can tell).
    flood = [_client(live_server, "127.0.0.1") for _ in range(BURST)]
    good, good_token = _client(live_server, "127.0.0.2")
    probe, _ = _client(live_server, "127.0.0.2")

    order: list[str] = []
    status: dict[str, int] = {}
    lock = threading.Lock()

    def run(name: str, call: Callable[[], httpx.Response]) -> threading.Thread:
        def target() -> None:
            r = call()
            with lock:
                order.append(name)
                status[name] = r.status_code

        t = threading.Thread(target=target)
        t.start()
        return t

    def failed_login(c: httpx.Client, token: str, i: int) -> Callable[[], httpx.Response]:
        data = {"username": f"ghost{i}", "password": "wrong-Password-1", "csrf_token": token}
        return lambda: c.post("/login", data=data)

    threads = [run(f"ghost{i}", failed_login(c, t, i)) for i, (c, t) in enumerate(flood)]
    assert wait_for(lambda: hasher.started >= 2, timeout=120), "the burst never reached the hashes"
    threads.append(
        run(
            "good",
            lambda: good.post("/login", data={"username": "rev", "password": PASSWORD, "csrf_token": good_token}),
        )
    )
    threads.append(run("probe", lambda: probe.get("/login")))
    for t in threads:
        t.join()
    for c, _ in [*flood, (good, ""), (probe, "")]:
        c.close()

    assert all(status[f"ghost{i}"] == 401 for i in range(BURST)), status
    assert status["good"] == 303, "the correct login failed"
    assert status["probe"] == 200
    ghosts = [i for i, name in enumerate(order) if name.startswith("ghost")]
    assert order.index("probe") < ghosts[-1], f"a page view waited for the whole burst: {order}"
    after_good = sum(1 for i in ghosts if i > order.index("good"))
    assert after_good >= BURST // 2, f"the correct login was queued behind the burst: {order}"


def test_waiting_logins_take_turns_between_lanes_and_a_full_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from review.auth import hashing

    async def scenario() -> list[str]:
        scheduler = hashing._LaneScheduler(1)
        served: list[str] = []

        async def login(lane: str, name: str) -> None:
            await scheduler.acquire(lane)
            served.append(name)

        await login("a", "a1")  # takes the only slot at once
        waiting = [asyncio.create_task(login(lane, name)) for lane, name in [("a", "a2"), ("a", "a3"), ("b", "b1")]]
        gone = asyncio.create_task(login("c", "c1"))
        await asyncio.sleep(0)
        gone.cancel()  # a client that went away gives up its place
        await asyncio.sleep(0)
        for _ in range(3):
            scheduler.release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)
        monkeypatch.setattr(hashing, "MAX_WAITING", 0)
        with pytest.raises(hashing.HashQueueFullError):
            await scheduler.acquire("z")
        return served

    assert asyncio.run(scenario()) == ["a1", "a2", "b1", "a3"]
