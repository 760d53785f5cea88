"""How long a correct sign-in takes while a burst of failed logins is being hashed, as ratios.

A throw-away review service (SQLite, argon2 at its production cost, a ``uvicorn`` process on
127.0.0.1, built as `bench/review_load.py` builds it). Each round measures a correct login
(GET /login, then POST with the right password: the time of the POST):

1. alone (the reference);
2. during ``--burst`` concurrent failed logins for unknown user names from 127.0.0.1, the
   correct one from 127.0.0.2 (another machine, as far as the server can tell);
3. the same burst, the correct login from 127.0.0.1 too (the same address: behind a reverse
   proxy every client looks like this).

and a page view (GET /login) during the burst. Printed: the median of each over the rounds,
and 2 and 3 divided by 1. Hashes take turns between client addresses
(`review.auth.hashing`), so case 2 waits for about one hash per busy address; case 3 shares
its address's turn with the burst and waits for it (said plainly: that is the design's limit).

Usage:
    python bench/login_burst.py [--burst 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from review_load import _CSRF_FIELD, _serve, _service  # noqa: E402 (the same throw-away service)


def _client(base: str, source: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=source), timeout=None)
    token = _CSRF_FIELD.search(c.get("/login").text)
    assert token, "no login form"
    return c, token.group(1)


def _timed_login(base: str, source: str, name: str, password: str) -> float:
    c, token = _client(base, source)
    try:
        t0 = time.perf_counter()
        r = c.post("/login", data={"username": name, "password": password, "csrf_token": token})
        took = time.perf_counter() - t0
    finally:
        c.close()
    if r.status_code != 303:
        raise RuntimeError(f"the correct login failed: {r.status_code}")
    return took


def _burst(base: str, n: int) -> tuple[list[threading.Thread], list[int]]:
    clients = [_client(base, "127.0.0.1") for _ in range(n)]
    codes: list[int] = []

    def fail(c: httpx.Client, token: str, i: int) -> None:
        try:
            r = c.post("/login", data={"username": f"ghost{i}", "password": "wrong-Password-1", "csrf_token": token})
            codes.append(r.status_code)
        finally:
            c.close()

    threads = [threading.Thread(target=fail, args=(c, t, i)) for i, (c, t) in enumerate(clients)]
    for t in threads:
        t.start()
    return threads, codes


def measure(base: str, name: str, password: str, burst: int, rounds: int) -> dict[str, float]:
    alone, other, same, view = [], [], [], []
    _timed_login(base, "127.0.0.2", name, password)  # warm-up: the first hash faults in 64 MiB
    for _ in range(rounds):
        alone.append(_timed_login(base, "127.0.0.2", name, password))
        for source, out in (("127.0.0.2", other), ("127.0.0.1", same)):
            threads, codes = _burst(base, burst)
            time.sleep(0.2)  # the burst has reached the hashes
            if source == "127.0.0.2":
                t0 = time.perf_counter()
                httpx.get(f"{base}/login", timeout=None)
                view.append(time.perf_counter() - t0)
            out.append(_timed_login(base, source, name, password))
            for t in threads:
                t.join()
            if codes != [401] * burst:
                raise RuntimeError(f"a failed login did not answer 401: {codes}")
    med = {k: statistics.median(v) for k, v in
           (("alone_s", alone), ("other_address_s", other), ("same_address_s", same), ("page_view_s", view))}
    return {**{k: round(v, 3) for k, v in med.items()},
            "other_address_over_alone": round(med["other_address_s"] / med["alone_s"], 2),
            "same_address_over_alone": round(med["same_address_s"] / med["alone_s"], 2)}


def main() -> None:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--burst", type=int, default=16, help="concurrent failed logins")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="login-burst-") as d:
        tmp = Path(d)
        secret = secrets.token_urlsafe(48)
        url, _, names, password = _service(tmp, 1, 1, None, secret)
        server, base = _serve(tmp, url, secret)
        try:
            print(json.dumps({"burst": a.burst, "rounds": a.rounds, **measure(base, names[0], password, a.burst,
                                                                               a.rounds)}, indent=2))
        finally:
            server.terminate()
            server.communicate(timeout=60)


if __name__ == "__main__":
    main()
