"""Open the files of a job without ever leaving the allowed roots.

A job's inputs (scenes, chips), its table, manifest and explanation heatmaps are read only
through `open_input`. The path must be absolute and lie, as written, inside one of the
allowed roots (`service_roots`: ``ReviewSettings.job_roots`` plus the service's own jobs
folder). It is then opened one component at a time from the root's directory, each with
``O_NOFOLLOW`` relative to the previous directory's descriptor: a symbolic link anywhere
below the root, swapped in at any time before the open, makes the open fail instead of
being followed (no time-of-check-to-time-of-use gap). The caller gets the open descriptor.

GDAL opens by path, so it is handed ``/proc/self/fd/N``: the kernel reopens the very file
already opened (not whatever the name points at now), and GDAL reads only the windows it
needs, so memory stays bounded for scenes of any size. This is Linux's ``/proc``; other
systems are refused with a clear error rather than served unsafely.

Whether a path outside the roots exists is never looked at: that refusal is decided on the
path text alone, so its message cannot tell an outside file that exists from one that does
not. Hard links cannot be told from their original and are not refused (the kernel's
``fs.protected_hardlinks`` keeps people from linking files they cannot read and write).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from review.jobs.paths import PathRefusedError, scan_links
from vision.errors import ConfigError, InputError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone put in a job folder must not hang the request.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_PROC_FD = Path("/proc/self/fd")


class InputRefusedError(PathRefusedError):
    """A job's file lies outside the allowed roots, or is reached through a symbolic link."""


class InputMissingError(InputError, FileNotFoundError):
    """A job's file (inside the allowed roots) is missing or is not a regular file."""


def service_roots(job_roots: Sequence[Path], data_dir: Path) -> tuple[Path, ...]:
    """The folders a job's files may lie in: the allow-listed roots and ``DATA/jobs``.

    Each is resolved once (a root may itself be reached through a link the admin set up).
    """
    out: list[Path] = []
    for r in (*job_roots, data_dir / "jobs"):
        real = Path(os.path.realpath(r))
        if real not in out:
            out.append(real)
    return tuple(out)


def locate(path: str | Path, roots: Sequence[Path]) -> tuple[Path, tuple[str, ...]]:
    """The root holding ``path`` and the components below it, decided on the text alone.

    Raises:
        InputRefusedError: not absolute, has ``..`` or a NUL byte, or is outside every root.
    """
    text = str(path)
    p = PurePosixPath(text)
    if "\x00" in text or not p.is_absolute() or ".." in p.parts:
        raise InputRefusedError("the file is outside the allowed folders")
    best: tuple[Path, tuple[str, ...]] | None = None
    for root in roots:
        r = PurePosixPath(root)
        if p == r or p.is_relative_to(r):
            parts = p.relative_to(r).parts
            if best is None or len(parts) < len(best[1]):
                best = (Path(root), parts)
    if best is None:
        raise InputRefusedError("the file is outside the allowed folders")
    return best


def is_inside(path: str | Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (as written) lies inside one of ``roots``."""
    try:
        locate(path, roots)
    except InputRefusedError:
        return False
    return True


def _fail(dir_fd: int, name: str, exc: OSError) -> Exception:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        return InputRefusedError("the file is reached through a symbolic link")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return InputMissingError("the file is missing")
    return InputMissingError(f"the file cannot be opened ({os.strerror(exc.errno or 0)})")


def _open_under(root: Path, parts: Sequence[str], final_flags: int) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            flags = final_flags if i == len(parts) - 1 else _DIR_FLAGS
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise _fail(fd, part, exc) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: str | Path, roots: Sequence[Path], create: bool = False) -> int:
    """A descriptor of the folder ``path`` inside the roots (no link followed).

    Args:
        create: make the last component when it is missing.

    Raises:
        InputRefusedError, InputMissingError: see the module docstring.
    """
    root, parts = locate(path, roots)
    if create and parts:
        parent = _open_under(root, parts[:-1], _DIR_FLAGS)
        try:
            with suppress(FileExistsError):
                os.mkdir(parts[-1], 0o755, dir_fd=parent)
        finally:
            os.close(parent)
    return _open_under(root, parts, _DIR_FLAGS)


@dataclass(frozen=True)
class SafeFile:
    """A regular file opened inside the roots.

    Attributes:
        fd: the open descriptor (closed when the `open_input` block ends).
        name: the path it was opened by (for its suffix and for messages).
        size, mtime_ns, dev, ino: from ``fstat`` of the descriptor.
    """

    fd: int
    name: str
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @property
    def suffix(self) -> str:
        """The lower-case suffix of the name (``.tif``)."""
        return PurePosixPath(self.name).suffix.lower()

    @property
    def gdal_path(self) -> str:
        """A path GDAL can open that reaches exactly this open file."""
        return f"{_PROC_FD}/{self.fd}"

    @property
    def key(self) -> tuple[int, int, int, int]:
        """What identifies this version of the file (for caches)."""
        return (self.dev, self.ino, self.size, self.mtime_ns)

    def read_bytes(self, limit: int) -> bytes:
        """The whole file, refusing one larger than ``limit`` bytes.

        Raises:
            InputRefusedError: the file is larger than ``limit``.
        """
        if self.size > limit:
            raise InputRefusedError(f"the file is larger than {limit} bytes")
        chunks: list[bytes] = []
        offset = 0
        while offset <= limit:
            block = os.pread(self.fd, min(1 << 20, limit + 1 - offset), offset)
            if not block:
                break
            chunks.append(block)
            offset += len(block)
        if offset > limit:
            raise InputRefusedError(f"the file is larger than {limit} bytes")
        return b"".join(chunks)

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The file's bytes, block by block (memory bounded by ``size``)."""
        offset = 0
        while block := os.pread(self.fd, size, offset):
            yield block
            offset += len(block)


@contextmanager
def open_input(path: str | Path, roots: Sequence[Path]) -> Iterator[SafeFile]:
    """Open the regular file ``path`` inside ``roots`` for reading (see the module docstring).

    Raises:
        InputRefusedError: outside the roots, or reached through a symbolic link (403).
        InputMissingError: missing, or not a regular file (404).
        ConfigError: this system has no ``/proc/self/fd`` (the service needs Linux).
    """
    if not _PROC_FD.is_dir():
        raise ConfigError("the review service reads job files through /proc/self/fd: run it on Linux")
    root, parts = locate(path, roots)
    if not parts:
        raise InputMissingError("the file is missing")
    fd = _open_under(root, parts, _FILE_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputMissingError("the path is not a regular file")
        yield SafeFile(fd, str(path), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
    finally:
        os.close(fd)


def read_small(path: str | Path, roots: Sequence[Path], limit: int) -> bytes:
    """`open_input` and read the whole file (at most ``limit`` bytes)."""
    with open_input(path, roots) as f:
        return f.read_bytes(limit)


def write_in(folder: str | Path, name: str, data: bytes, roots: Sequence[Path]) -> None:
    """Write ``folder/name`` atomically, creating ``folder`` (its parent must exist).

    The temporary file is created with ``O_EXCL | O_NOFOLLOW`` and renamed relative to the
    folder's descriptor, so a link planted as the folder or the file is never written through.

    Raises:
        InputRefusedError, InputMissingError: the folder is outside the roots or unsafe.
        OSError: the folder is read-only (the caller decides whether that matters).
    """
    if "/" in name or name in ("", ".", ".."):
        raise InputRefusedError("bad file name")
    dfd = open_dir(folder, roots, create=True)
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)


def check_tree(path: str | Path, roots: Sequence[Path]) -> Path:
    """The resolved ``path``, refused when it, or any link inside it, leads out of the roots.

    Run again right before the worker starts ``vision infer``: a link planted in a submitted
    folder after it was accepted must not be followed.

    Raises:
        PathRefusedError: see above, or the folder holds more than `MAX_SCAN` entries.
    """
    real = Path(os.path.realpath(path))
    locate(real, roots)
    if real.is_dir():
        scan_links(real, lambda p: is_inside(p, roots))
    return real
