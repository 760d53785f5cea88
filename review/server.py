"""The service's processes: ``vision review serve`` (web app + worker) and ``vision review worker``.

`run_server` serves the app with uvicorn, optionally over TLS (then cookies are ``Secure``
and HSTS is sent), prints the URL once the socket listens, and owns its worker: the worker
runs in its own process group, is told to stop when the server stops (SIGTERM, SIGINT or
any error), is killed with its running ``vision infer`` if it does not stop within
`WORKER_GRACE_S`, and stops by itself if the server disappears (``--parent``). uvicorn
re-raises the signal that stopped it after its graceful shutdown; with Python's default
SIGTERM action that killed the server before it could stop the worker, which then kept
taking jobs as an orphan.

Both processes run with umask 077, so every file they and ``vision infer`` create is
owner-only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from vision.errors import ConfigError

#: How long a stopping worker may take to finish its current step before it is killed.
WORKER_GRACE_S = 10.0
_HANDLED = (signal.SIGTERM, signal.SIGINT)


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both to serve HTTPS, or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use --tls-cert {cert} / --tls-key {key}: {exc}") from exc


def url_of(scheme: str, host: str, port: int) -> str:
    """The URL people open for a server listening on ``host:port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"


def run_server(
    host: str,
    port: int,
    db_url: str | None,
    worker: bool,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve the review app until SIGTERM/SIGINT, with a worker unless ``worker`` is false.

    Raises:
        ConfigError: missing or weak secret, unusable TLS files, unsafe accounts.
    """
    from review.service import open_database, preflight, private_files
    from review.settings import ReviewSettings
    from review.web.app import create_app

    _check_tls(tls_cert, tls_key)
    settings = ReviewSettings.from_env(db_url, require_secret=True)
    private_files()  # after the checks: a refused start changes nothing about the process
    if tls_cert is not None:
        settings = settings.with_(secure_cookies=True)
    database = open_database(settings.db_url, audit_key=settings.audit_key())
    preflight(settings, database)
    config = uvicorn.Config(
        create_app(settings, database),
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=False,
        server_header=False,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    server = _Server(config, "https" if tls_cert else "http")
    signals = _SignalCounter(server)
    proc = _start_worker(settings.db_url) if worker else None
    if proc is not None:
        print(f"vision review: worker started (pid {proc.pid})", flush=True)
    try:
        server.run()
    finally:
        if proc is not None:
            stop_worker(proc, signals)
        signals.restore()
        database.dispose()


class _Server(uvicorn.Server):
    """A uvicorn server that prints its URL once it listens (uvicorn logs it only at info)."""

    def __init__(self, config: uvicorn.Config, scheme: str):
        super().__init__(config)
        self.scheme = scheme

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            print(f"vision review: serving {url_of(self.scheme, self.config.host, port)}", flush=True)


class _SignalCounter:
    """SIGTERM/SIGINT ask the server to stop (instead of killing this process outright)."""

    def __init__(self, server: Any):
        self.server, self.count, self.previous = server, 0, {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in _HANDLED}

    def _handle(self, _sig: int, _frame: Any) -> None:
        # Also called when uvicorn re-raises the signal after its own graceful shutdown.
        self.count += 1
        self.server.should_exit = True

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _start_worker(db_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, VISION_REVIEW_DB=db_url)
    argv = [sys.executable, "-m", "vision.cli", "review", "worker", "--parent", str(os.getpid())]
    # Its own process group: a terminal's Ctrl-C reaches only the server, which stops the
    # worker in order; and the group can be killed with the worker's `vision infer`.
    return subprocess.Popen(argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL)


def stop_worker(proc: subprocess.Popen[bytes], signals: Any = None, grace_s: float = WORKER_GRACE_S) -> None:
    """Ask the worker to stop; kill it (and its running job) after ``grace_s`` or a second signal.

    A killed job stays ``running`` until its heartbeat is stale; the next worker queues it
    again and ``vision infer`` resumes it.
    """
    if proc.poll() is not None:
        return
    seen = signals.count if signals is not None else 0
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        if signals is not None and signals.count > seen + 1:
            break  # asked twice more: stop waiting
        time.sleep(0.05)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_worker(db_url: str | None, parent: int | None) -> None:
    """Take and run jobs until SIGTERM/SIGINT, or until process ``parent`` is gone.

    Raises:
        ConfigError: no audit key (the worker writes audit rows).
    """
    from review.audit import AuditKeyError
    from review.auth.keys import audit_key_from_env
    from review.jobs.files import service_roots
    from review.jobs.worker import Worker
    from review.service import open_database, private_files
    from review.settings import ReviewSettings

    settings = ReviewSettings.from_env(db_url, require_secret=False)
    key = audit_key_from_env()
    if key is None:
        raise AuditKeyError("the worker writes audit rows: set VISION_REVIEW_SECRET to the service's secret")
    private_files()
    database = open_database(settings.db_url, audit_key=key)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now, even in the middle of a job
        stop.set()

    for sig in _HANDLED:
        signal.signal(sig, on_signal)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()
    try:
        roots = service_roots(settings.job_roots, settings.data_dir)
        Worker(database, roots=roots, engine=settings.infer_engine).run_forever(stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        database.dispose()


def _watch_parent(parent: int, stop: threading.Event) -> None:
    # A server killed outright (SIGKILL, OOM) cannot stop its worker: the worker notices
    # that it was re-parented and stops taking jobs.
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()
