"""One HTTP download into a partial file, resumed with ``Range`` requests when it breaks.

`download` fills ``NAME.part`` from a URL: a partial file already there is continued
(``Range: bytes=N-``), a broken transfer is resumed up to ``retries`` times, a server that
ignores ``Range`` (status 200) is followed from the start, and a short body is an error,
never a complete file. Verifying and moving the file into place is `vision.data.fetch`'s.
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vision import __version__
from vision.errors import VisionError

#: Bytes read or written at a time.
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(VisionError, OSError):
    """A download failed (network, HTTP status, unsafe archive) after the retries allowed."""


def progress(enabled: bool, console: Console) -> Progress:
    """A bar for bytes (download, copy, hash, extraction); a description is escaped by its caller."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )


def _open_part(part: Path, offset: int) -> BinaryIO:
    """The partial file opened to continue at ``offset`` (truncated there)."""
    f = part.open("r+b" if offset and part.exists() else "wb")
    f.truncate(offset)
    f.seek(offset)
    return f


def sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


def download(
    url: str,
    part: Path,
    size: int,
    retries: int,
    timeout: float,
    show_progress: bool,
    console: Console,
    pause_s: float = 0.5,
) -> int:
    """Download ``url`` into ``part``, resuming the partial file; return the bytes kept.

    A broken transfer is resumed with a Range request up to ``retries`` times, after a
    pause of ``pause_s`` doubled each time (at most 10 s). A server that ignores Range
    (status 200) gets the file from the start again.

    Raises:
        DownloadError: an HTTP error status below 500, or the retries are spent.
    """
    resume = _Resume(part.stat().st_size if part.exists() else 0)
    if resume.kept:
        console.print(f"resuming {escape(part.name)} at {resume.kept:,} bytes")
    attempt = 0
    with progress(show_progress, console) as bar:
        task = bar.add_task(f"downloading {escape(PurePosixPath(url).name)}", total=size or None)
        while True:
            try:
                _transfer(url, part, timeout, resume, bar, task)
                return resume.kept
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                    raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
                attempt += 1
                if attempt > retries:
                    raise DownloadError(f"{url}: {_reason(exc)}") from exc
                console.print(
                    f"[yellow]transfer broken ({escape(_reason(exc))}); resuming "
                    f"({attempt}/{retries})[/yellow]"
                )
            time.sleep(min(pause_s * 2 ** (attempt - 1), 10.0))


@dataclass
class _Resume:
    """Bytes of an earlier partial download that the result keeps (0 once the file restarts)."""

    kept: int


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _transfer(
    url: str, part: Path, timeout: float, resume: _Resume, bar: Progress, task: TaskID
) -> None:
    """One HTTP request that continues ``part`` from its end until the file is complete.

    Raises:
        OSError, http.client.HTTPException: the connection broke, the body was short, or
            the server answered with another range than the one asked for.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"vision-pipeline/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after offset: the part is complete already
            return
        raise
    with response:
        start, total = _range_of(response)
        if start == 0 and offset:  # 200: the server sent the whole file, start over
            offset, resume.kept = 0, 0
        elif start != offset:
            raise http.client.HTTPException(f"asked for bytes {offset}-, got {start}-")
        if total is not None:
            bar.update(task, total=total)
        bar.update(task, completed=offset)
        received = offset
        with _open_part(part, offset) as f:
            for block in _blocks(response):
                f.write(block)
                received += len(block)
                bar.update(task, completed=received)
            sync(f)
    if total is not None and received < total:
        raise http.client.IncompleteRead(b"", total - received)


def _range_of(response: http.client.HTTPResponse) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's full size if the server says."""
    if response.status == 206:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if m is None:
            raise http.client.HTTPException("206 response without a usable Content-Range")
        return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None and length.isdigit() else None


def _blocks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        block = response.read(CHUNK)
        if not block:
            return
        yield block
