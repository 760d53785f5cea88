"""Download a public dataset release with checksum verification and resume (`vision data fetch`).

A download goes to ``DIR/NAME.part``; an interrupted one is continued from where it stopped
(an HTTP ``Range`` request), also by a later run. The sha256 of the whole file is checked
before the file is moved into place with ``os.replace``, so ``DIR/NAME`` is either absent
or complete and verified. A file whose checksum does not match is deleted and refused.

Provenance of the pinned values (no checksum here is computed by us or guessed):

- sha256 and size of ``EuroSAT.zip`` and ``EuroSATallBands.zip``: TensorFlow Datasets,
  ``tensorflow_datasets/url_checksums/eurosat.txt`` (for the DFKI URLs). The
  ``EuroSATallBands.zip`` value is also the one TorchGeo (``torchgeo/datasets/eurosat.py``)
  verifies its Hugging Face mirror against.
- md5, for cross-reference only (what we verify is the sha256):
  ``c8fa014336c82ac7804f0398fcb19387`` for ``EuroSAT.zip`` (torchvision,
  ``torchvision/datasets/eurosat.py``, which downloads the TorchGeo mirror below) and
  ``5ac12b3b2557aa56e1826e981e8e200e`` for ``EuroSATallBands.zip`` (TorchGeo before 0.6).

Example:
    >>> fetch_dataset("eurosat-rgb", to="data/downloads", extract=True)  # doctest: +SKIP
    FetchResult(path=PosixPath('data/downloads/EuroSAT.zip'), ...)
"""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from vision import settings
from vision.atomic import atomic_dir
from vision.console import make_console
from vision.data.transfer import CHUNK, DownloadError, download, sync
from vision.data.transfer import progress as _progress
from vision.errors import ConfigError, VisionError
from vision.hashing import file_sha256


class ChecksumMismatchError(VisionError, ValueError):
    """A downloaded or given file does not have the sha256 it must have."""


@dataclass(frozen=True)
class DatasetRelease:
    """A public dataset archive and how to verify it.

    Attributes:
        name: the name used on the command line (``eurosat-rgb``).
        filename: the archive's file name.
        urls: where to download it, the official source first, then mirrors of the same file.
        sha256: checksum of the archive (see the module docstring for where it is published).
        size: size in bytes, as published with the checksum.
        data_dir: folder inside the archive that holds the class folders.
        description: one line for ``--help`` and messages.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int
    data_dir: str
    description: str


#: Known releases. The DFKI server is the authors' official source; the Hugging Face copies
#: are TorchGeo's mirrors, which torchvision and TorchGeo download and verify (same bytes).
RELEASES: dict[str, DatasetRelease] = {
    r.name: r
    for r in (
        DatasetRelease(
            name="eurosat-rgb",
            filename="EuroSAT.zip",
            urls=(
                "https://madm.dfki.de/files/sentinel/EuroSAT.zip",
                "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
            ),
            sha256="8ebea626349354c5328b142b96d0430e647051f26efc2dc974c843f25ecf70bd",
            size=94_280_567,
            data_dir="2750",
            description="EuroSAT RGB: 27,000 64x64 JPEG chips, 10 classes (90 MB)",
        ),
        DatasetRelease(
            name="eurosat-ms",
            filename="EuroSATallBands.zip",
            urls=(
                "https://madm.dfki.de/files/sentinel/EuroSATallBands.zip",
                "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                "1ce6f1bfb56db63fd91b6ecc466ea67f2509774c/EuroSATallBands.zip",
            ),
            sha256="751f070f9bffa2eed48b24ca2dd0b02959280c08837e8c9a5532a67ba611df59",
            size=2_067_725_275,
            data_dir="ds/images/remote_sensing/otherDatasets/sentinel_2/tif",
            description="EuroSAT MS: 27,000 64x64 13-band GeoTIFF chips, 10 classes (2.1 GB)",
        ),
    )
}

#: Pause before the first resume of a broken transfer (doubled each time, at most 10 s).
RETRY_PAUSE_S = 0.5

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FetchResult:
    """What `fetch_dataset` did.

    Attributes:
        path: the verified archive.
        sha256: its checksum.
        source: where it came from (URL or local path); ``None`` if it was already there.
        resumed_from: bytes of an earlier partial download that were kept (0 if none).
        extracted: the folder it was extracted to, when asked.
    """

    path: Path
    sha256: str
    source: str | None
    resumed_from: int
    extracted: Path | None = None


def default_download_dir() -> Path:
    """``VISION_DATA_DIR/downloads``: where archives go without ``--to``."""
    return settings.data_dir() / "downloads"


def fetch_dataset(
    name: str,
    source: str | None = None,
    to: str | Path | None = None,
    sha256: str | None = None,
    extract: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    console: Console | None = None,
) -> FetchResult:
    """Download (or copy) a dataset archive, verify it, and optionally extract it.

    Args:
        name: a key of `RELEASES` (``eurosat-rgb``, ``eurosat-ms``).
        source: a mirror URL (``http(s)://``; ending in ``/`` means "this folder", the file
            name is appended), a local file or folder holding the archive, or ``None`` for
            the official source (then its mirrors, if it cannot be reached).
        to: folder for the archive; default `default_download_dir`.
        sha256: the checksum to require instead of the published one (a different
            packaging on a mirror, say).
        extract: also unpack the archive into ``to/<archive name without .zip>/``.
        retries: how many times a broken transfer is resumed before giving up.
        timeout: seconds without data before a connection counts as broken.
        progress: show a progress bar (on ``console``, default stderr).
        console: where the progress bar and messages go.

    Returns:
        Where the verified archive is, and how it got there.

    Raises:
        ConfigError: unknown name, malformed checksum, missing local file, or ``to`` not
            writable.
        ChecksumMismatchError: the file does not have the required sha256 (the download
            is deleted).
        DownloadError: the download failed after the retries.
    """
    release = RELEASES.get(name)
    if release is None:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(RELEASES)}")
    expected = (sha256 or release.sha256).strip().lower()
    if not _SHA256.match(expected):
        raise ConfigError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, got {retries}")
    console = console or make_console(stderr=True)
    folder = Path(to) if to is not None else default_download_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {folder} ({exc.strerror}); pass --to DIR") from exc
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{folder} is not writable; pass --to DIR")
    target = folder / release.filename
    part = folder / (release.filename + ".part")

    if target.exists():
        digest = _hash_file(target)
        if digest != expected:
            raise ChecksumMismatchError(
                f"{target} exists but its sha256 is {digest}, expected {expected}; "
                "delete it to download again, or pass --sha256 if it is right"
            )
        console.print(f"{escape(str(target))} is already here and verified (sha256 {expected[:12]}...)")
        result = FetchResult(target, digest, None, 0)
    else:
        result = _fetch(release, source, part, expected, retries, timeout, progress, console)
        os.replace(part, target)
        result = FetchResult(target, result.sha256, result.source, result.resumed_from)
        console.print(f"saved {escape(str(target))} (sha256 verified: {expected})")
    if extract:
        out = extract_archive(target, progress=progress, console=console)
        result = FetchResult(result.path, result.sha256, result.source, result.resumed_from, out)
    return result


def _fetch(
    release: DatasetRelease,
    source: str | None,
    part: Path,
    expected: str,
    retries: int,
    timeout: float,
    progress: bool,
    console: Console,
) -> FetchResult:
    """Fill ``part`` from the first source that works and verify it (not yet moved)."""
    local = _local_path(source) if source is not None else None
    if local is not None:
        if local.is_dir():
            local = local / release.filename
        if not local.is_file():
            raise ConfigError(f"--from {source}: no such file ({local})")
        _copy_local(local, part, progress, console)
        _verify(part, expected, str(local), progress, console)
        return FetchResult(part, expected, str(local), 0)

    urls = list(release.urls)
    if source is not None:  # a mirror: a folder URL (ending in /) or the file's URL
        urls = [source + release.filename if source.endswith("/") else source]
    failures: list[str] = []
    for url in urls:
        try:
            resumed = download(url, part, release.size, retries, timeout, progress, console,
                               RETRY_PAUSE_S)
        except DownloadError as exc:
            failures.append(str(exc))
            if url != urls[-1]:
                console.print(f"[yellow]{escape(str(exc))}; trying the next mirror[/yellow]")
            continue
        _verify(part, expected, url, progress, console)
        return FetchResult(part, expected, url, resumed)
    raise DownloadError("; ".join(failures) + " (the partial download is kept for a rerun)")


def _local_path(source: str) -> Path | None:
    """The local file or folder ``source`` names, or ``None`` for an http(s) URL."""
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if len(scheme) > 1:  # (one letter is a Windows drive)
        raise ConfigError(f"--from {source}: only http(s) URLs and local paths are supported")
    return Path(source).expanduser()


def _verify(part: Path, expected: str, where: str, progress: bool, console: Console) -> None:
    """Check the whole partial file; delete it and raise if it is not the expected one."""
    with _progress(progress, console) as bar:
        digest = _hash_file(part, bar)
    if digest != expected:
        size = part.stat().st_size
        part.unlink()
        raise ChecksumMismatchError(
            f"the file from {where} ({size:,} bytes) has sha256 {digest}, expected {expected}: "
            "refused and deleted (run again to download it again). If this source packages "
            "the data differently and you trust it, pin its checksum with --sha256"
        )


def _hash_file(path: Path, bar: Progress | None = None) -> str:
    if bar is None:
        return file_sha256(path, CHUNK)
    task = bar.add_task(f"verifying {escape(path.name)}", total=path.stat().st_size)
    return file_sha256(path, CHUNK, lambda n: bar.advance(task, n))


def _copy_local(src: Path, part: Path, progress: bool, console: Console) -> None:
    """Copy ``src`` into ``part`` from the start (a local copy is quick to redo)."""
    with _progress(progress, console) as bar, src.open("rb") as fin, part.open("wb") as fout:
        task = bar.add_task(f"copying {escape(src.name)}", total=src.stat().st_size)
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.advance(task, len(block))
        sync(fout)


# --- extraction ---------------------------------------------------------------------------


def extract_archive(
    archive: str | Path, progress: bool = True, console: Console | None = None
) -> Path:
    """Unpack a zip into ``<its folder>/<its name without .zip>/``, safely and atomically.

    Members are written into a temporary folder that is renamed into place at the end, so
    a half-extracted tree is never left under the final name. Members with absolute paths,
    ``..`` or links are refused (a zip must not write outside its folder).

    Returns:
        The folder holding the extracted files (skipped when it exists already).

    Raises:
        DownloadError: the archive is corrupt or has an unsafe member.
    """
    src = Path(archive)
    console = console or make_console(stderr=True)
    out = src.with_suffix("")
    if out.exists():
        console.print(f"{escape(str(out))} exists: not extracting again (delete it to re-extract)")
        return out
    try:
        with atomic_dir(out) as tmp, zipfile.ZipFile(src) as zf:
            members = zf.infolist()
            for m in members:
                _check_member(m, src)
            with _progress(progress, console) as bar:
                total = sum(m.file_size for m in members)
                task = bar.add_task(f"extracting {escape(src.name)}", total=total)
                for m in members:
                    zf.extract(m, tmp)
                    bar.advance(task, m.file_size)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{src}: not a readable zip ({exc})") from exc
    console.print(f"extracted to {escape(str(out))}")
    return out


def _check_member(member: zipfile.ZipInfo, archive: Path) -> None:
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts or is_link:
        raise DownloadError(f"{archive}: unsafe member {member.filename!r}; nothing extracted")


__all__ = [
    "RELEASES",
    "ChecksumMismatchError",
    "DatasetRelease",
    "DownloadError",
    "FetchResult",
    "extract_archive",
    "fetch_dataset",
]
