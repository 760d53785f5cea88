"""Load test of the review service: N concurrent reviewers claim and decide for D seconds.

Each simulated reviewer signs in, then loops: show an item (claim), load its chip, decide
(accept, correct or reject at random) and take the next item from the decision's answer,
as the review page does. Every request's latency is recorded; any non-2xx answer or
transport error counts as an error. Prints (and returns) a JSON summary with the ids of
every item whose decision the server acknowledged, so the caller can check the database
for lost or duplicated decisions.

    python tests/review/load_client.py --base http://127.0.0.1:8000 --job 1 \\
        --users rev001,...,rev050 --password ... --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass
class Stats:
    """What the reviewers saw."""

    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    decided: dict[str, list[int]] = field(default_factory=dict)

    def time(self, kind: str, ms: float) -> None:
        self.latencies_ms.setdefault(kind, []).append(ms)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def _login(client: httpx.AsyncClient, name: str, password: str) -> str:
    r = await client.get("/login")
    token = _CSRF_FIELD.search(r.text)
    assert token, f"no login form for {name}"
    r = await client.post(
        "/login", data={"username": name, "password": password, "csrf_token": token.group(1)}, follow_redirects=False
    )
    if r.status_code != 303:
        raise RuntimeError(f"login of {name} failed: {r.status_code}")
    home = await client.get("/")
    meta = _CSRF_META.search(home.text)
    assert meta
    return meta.group(1)


async def _reviewer(
    base: str, name: str, password: str, job: int, start: asyncio.Event, deadline: list[float], stats: Stats, seed: int
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        csrf = await _login(client, name, password)
        headers = {"X-CSRF-Token": csrf}
        stats.decided[name] = []  # signed in
        await start.wait()

        async def call(kind: str, method: str, url: str, **kw: Any) -> httpx.Response | None:
            t0 = time.perf_counter()
            try:
                r = await client.request(method, url, headers=headers, **kw)
            except httpx.HTTPError as exc:
                stats.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return None
            stats.time(kind, (time.perf_counter() - t0) * 1000)
            if r.status_code >= 300:
                stats.errors.append(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
                return None
            return r

        r = await call("claim", "POST", f"/api/jobs/{job}/claim")
        item = r.json()["item"] if r is not None else None
        while item is not None and time.perf_counter() < deadline[0]:
            await call("chip", "GET", item["chip_url"])
            decision = rng.choice(["accept", "accept", "correct", "reject"])
            body: dict[str, Any] = {"decision": decision, "version": item["version"]}
            if decision == "correct":
                body["class_name"] = rng.choice(item["classes"])
            r = await call("decision", "POST", f"/api/items/{item['id']}/decision", json=body)
            if r is None:
                r = await call("claim", "POST", f"/api/jobs/{job}/claim")
                item = r.json()["item"] if r is not None else None
                continue
            stats.decided[name].append(item["id"])
            item = r.json()["next"]


async def run(base: str, job: int, users: list[str], password: str, duration: float) -> dict[str, Any]:
    """Run the load; returns the summary (see the module docstring)."""
    stats = Stats()
    start = asyncio.Event()
    deadline = [float("inf")]
    tasks = [
        asyncio.create_task(_reviewer(base, u, password, job, start, deadline, stats, i)) for i, u in enumerate(users)
    ]
    # wait until everyone is signed in (logins hash passwords: not part of the measurement)
    while not all(u in stats.decided for u in users) and not any(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    for t in tasks:
        if t.done() and t.exception():
            raise t.exception()  # type: ignore[misc]
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    all_ms = [v for vs in stats.latencies_ms.values() for v in vs]
    decided = [i for ids in stats.decided.values() for i in ids]
    return {
        "reviewers": len(users),
        "duration_s": round(elapsed, 1),
        "requests": len(all_ms),
        "errors": len(stats.errors),
        "error_samples": stats.errors[:10],
        "decisions": len(decided),
        "decisions_per_s": round(len(decided) / elapsed, 1),
        "requests_per_s": round(len(all_ms) / elapsed, 1),
        "p50_ms": round(_pct(all_ms, 50), 1),
        "p95_ms": round(_pct(all_ms, 95), 1),
        "p99_ms": round(_pct(all_ms, 99), 1),
        "p95_ms_by_kind": {k: round(_pct(v, 95), 1) for k, v in sorted(stats.latencies_ms.items())},
        "decided": stats.decided,
    }


def main() -> None:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--job", type=int, required=True)
    p.add_argument("--users", required=True, help="comma-separated reviewer names")
    p.add_argument("--password", required=True)
    p.add_argument("--duration", type=float, default=60.0)
    a = p.parse_args()
    summary = asyncio.run(run(a.base, a.job, a.users.split(","), a.password, a.duration))
    summary.pop("decided")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
