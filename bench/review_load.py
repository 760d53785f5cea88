"""Load benchmark of the review service: N concurrent reviewers claim and decide for D seconds.

Each simulated reviewer signs in, then loops: show an item (claim), load its chip, decide
(accept, correct or reject at random) and take the next item from the decision's answer,
as the review page does. Every request's latency is recorded; any non-2xx answer or
transport error counts as an error. Printed: requests and decisions per second, latency
percentiles (p50/p95/p99, overall and per request kind), the p95 as a ratio of a target
(``--p95-target-ms``, goal <= 1.0), and the correctness check (no decision lost or doubled).

Against a throw-away service this script builds (a job of scene windows in a temporary
folder, SQLite or ``--db``, reviewers rev000...; a ``uvicorn`` process on 127.0.0.1)::

    python bench/review_load.py --reviewers 50 --duration 60 [--db postgresql://...]

Against a running server with a job and reviewers of your own::

    python bench/review_load.py --base http://127.0.0.1:8000 --job 1 \\
        --users rev001,...,rev050 --password ... --duration 60

This is a benchmark, not a test: run it on an otherwise idle machine (the suite's
``tests/review/test_load.py`` checks correctness under concurrency without timing anything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
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


def _check(db_url: str, decided: dict[str, list[int]]) -> dict[str, Any]:
    """Compare what the server acknowledged with what the database holds."""
    from sqlalchemy import func, select

    from review import audit
    from review.db.engine import Database
    from review.db.models import AuditEntry, Decision, Item, User

    db = Database(db_url, pool_size=2)
    try:
        with db.read() as s:
            rows = s.execute(select(User.name, Decision.item_id).join(User, User.id == Decision.reviewer_id)).all()
            n_done = s.execute(select(func.count()).select_from(Item).where(Item.status == "done")).scalar_one()
            n_audit = s.execute(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "review.first")
            ).scalar_one()
            chain = audit.verify(s).ok
    finally:
        db.dispose()
    acknowledged = {(name, item) for name, items in decided.items() for item in items}
    stored = {(n, i) for n, i in rows}
    per_item: dict[int, int] = {}
    for _, i in rows:
        per_item[i] = per_item.get(i, 0) + 1
    return {
        "acknowledged": len(acknowledged),
        "stored": len(rows),
        "lost": len(acknowledged - stored),
        "unacknowledged": len(stored - acknowledged),
        "decided_twice": sum(1 for n in per_item.values() if n > 1),
        "items_done": int(n_done),
        "audit_rows": int(n_audit),
        "audit_chain_intact": bool(chain),
    }


def _service(tmp: Path, reviewers: int, rows: int, db_url: str | None, secret: str) -> tuple[str, int, list[str], str]:
    """A migrated database with ``reviewers`` reviewers and one imported job of ``rows`` windows.

    ``secret`` is the service's secret: the audit rows written here are keyed with it, as the
    server's will be (`_serve` gets the same one).
    """
    import secrets

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "review"))
    from review_helpers import write_job  # the tests' builder of a real job folder

    from review.auth.users import add_user
    from review.jobs.files import service_roots
    from review.jobs.importer import import_job
    from review.service import open_database

    roots = tmp / "incoming"
    url = db_url or f"sqlite:///{tmp / 'review.db'}"
    os.environ["VISION_REVIEW_SECRET"] = secret
    db = open_database(url, pool_size=4)
    password = secrets.token_urlsafe(18)
    names = [f"rev{i:03d}" for i in range(reviewers)]
    with db.write() as s:
        for n in names:
            add_user(s, n, "reviewer", password, actor="bench")
    folder = write_job(roots / "jobs" / "bench", n_windows=rows, n_chips=0, n_bad=0)
    job_id = import_job(db, folder, "bench", service_roots((roots,), tmp / "data"), classes_of_interest=["AnnualCrop"])
    db.dispose()
    return url, job_id, names, password


def _serve(tmp: Path, url: str, secret: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    env = dict(os.environ, VISION_REVIEW_SECRET=secret, VISION_REVIEW_DB=url,
               VISION_REVIEW_DATA=str(tmp / "data"), VISION_REVIEW_ROOTS=str(tmp / "incoming"))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "review.web.app:app_from_env", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "120"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    while server.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("the server did not start:\n" + (server.stdout.read() if server.stdout else ""))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", help="a running server (else a throw-away one is started)")
    p.add_argument("--job", type=int, help="job to review (with --base)")
    p.add_argument("--users", help="comma-separated reviewer names (with --base)")
    p.add_argument("--password", help="their password (with --base)")
    p.add_argument("--reviewers", type=int, default=50, help="simulated reviewers (throw-away service)")
    p.add_argument("--db", help="database URL of the throw-away service (default SQLite)")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--p95-target-ms", type=float, default=500.0)
    a = p.parse_args()
    server = None
    tmpdir = None
    try:
        if a.base:
            if not (a.job and a.users and a.password):
                p.error("--base needs --job, --users and --password")
            base, job, users, password, url = a.base, a.job, a.users.split(","), a.password, None
        else:
            import secrets
            import tempfile

            tmpdir = tempfile.TemporaryDirectory(prefix="review-load-")
            tmp = Path(tmpdir.name)
            secret = secrets.token_urlsafe(48)
            url, job, users, password = _service(tmp, a.reviewers, int(200 * a.duration) + 2000, a.db, secret)
            server, base = _serve(tmp, url, secret)
        summary = asyncio.run(run(base, job, users, password, a.duration))
        decided = summary.pop("decided")
        summary["p95_over_target"] = round(summary["p95_ms"] / a.p95_target_ms, 2)
        if url is not None:
            summary["correctness"] = _check(url, decided)
        print(json.dumps(summary, indent=2))
    finally:
        if server is not None:
            server.terminate()
            server.communicate(timeout=60)
        if tmpdir is not None:
            tmpdir.cleanup()


if __name__ == "__main__":
    main()
