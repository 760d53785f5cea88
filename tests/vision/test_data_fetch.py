"""`vision data fetch`: download, resume, verification and extraction, all on 127.0.0.1.

A real HTTP server runs in a thread of the test process. It serves byte ranges itself
(``Range: bytes=N-`` / ``bytes=N-M``, answered with 206 and ``Content-Range``), logs every
request, and can misbehave on purpose: drop the connection part-way, or ignore Range.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vision.data.commands import data_app
from vision.data.fetch import (
    RELEASES,
    ChecksumMismatchError,
    DownloadError,
    extract_archive,
    fetch_dataset,
)


@dataclass
class Behaviour:
    """What the server does; tests change it between requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    ignore_range: bool = False
    cut_after: list[int] = field(default_factory=list)  # per request: bytes sent, then close


class Server:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        behaviour = self.behaviour

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                behaviour.requests.append((self.path, rng))
                data = behaviour.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, end = 0, len(data) - 1
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                partial = m is not None and not behaviour.ignore_range
                if partial and m is not None:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else end
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start : end + 1]
                self.send_response(206 if partial else 200)
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if behaviour.cut_after:
                    body = body[: behaviour.cut_after.pop(0)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, path: str, data: bytes) -> str:
        self.behaviour.files[path] = data
        return self.url + path


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture()
def archive() -> bytes:
    """A small EuroSAT-like zip (~300 kB): ``2750/<class>/<class>_<n>.jpg``."""
    rnd = hashlib.sha256(b"seed").digest() * 1600  # 51 kB of incompressible-ish bytes
    names = [f"2750/{c}/{c}_{i}.jpg" for c in ("Forest", "River") for i in (1, 2, 3)]
    return make_zip({name: rnd[i:] for i, name in enumerate(names)})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vision.data.fetch.RETRY_PAUSE_S", 0.0)


def _words(text: str) -> str:
    """Text with rich's line wrapping undone."""
    return " ".join(text.split())


# --- download -----------------------------------------------------------------------------


def test_full_download_is_verified_and_moved_into_place(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/mirror/EuroSAT.zip", archive)

    result = fetch_dataset(
        "eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive), progress=False
    )

    assert result.path == tmp_path / "EuroSAT.zip"
    assert result.path.read_bytes() == archive
    assert result.sha256 == sha256(archive)
    assert (result.source, result.resumed_from) == (url, 0)
    assert not (tmp_path / "EuroSAT.zip.part").exists()
    assert server.behaviour.requests == [("/mirror/EuroSAT.zip", None)]


def test_a_folder_url_gets_the_file_name_appended(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    server.serve("/eurosat/EuroSAT.zip", archive)

    fetch_dataset("eurosat-rgb", source=server.url + "/eurosat/", to=tmp_path,
                  sha256=sha256(archive), progress=False)

    assert (tmp_path / "EuroSAT.zip").read_bytes() == archive


def test_a_partial_download_is_resumed_with_a_range_request(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    kept = len(archive) // 3
    (tmp_path / "EuroSAT.zip.part").write_bytes(archive[:kept])

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           progress=False)

    assert server.behaviour.requests == [("/EuroSAT.zip", f"bytes={kept}-")]
    assert result.resumed_from == kept
    assert result.path.read_bytes() == archive
    assert not (tmp_path / "EuroSAT.zip.part").exists()


def test_a_dropped_connection_is_resumed_where_it_broke(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    server.behaviour.cut_after = [100_000, 50_000]  # two broken transfers, then a good one

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           retries=2, progress=False)

    assert result.path.read_bytes() == archive
    assert server.behaviour.requests == [
        ("/EuroSAT.zip", None),
        ("/EuroSAT.zip", "bytes=100000-"),
        ("/EuroSAT.zip", "bytes=150000-"),
    ]


def test_out_of_retries_keeps_the_partial_file_for_a_rerun(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    server.behaviour.cut_after = [1000, 1000]

    with pytest.raises(DownloadError, match="partial download is kept"):
        fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                      retries=1, progress=False)
    assert (tmp_path / "EuroSAT.zip.part").stat().st_size == 2000
    assert not (tmp_path / "EuroSAT.zip").exists()

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           progress=False)  # the rerun continues at byte 2000
    assert result.resumed_from == 2000
    assert server.behaviour.requests[-1] == ("/EuroSAT.zip", "bytes=2000-")
    assert result.path.read_bytes() == archive


def test_a_server_that_ignores_range_gets_the_whole_file_again(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    server.behaviour.ignore_range = True
    (tmp_path / "EuroSAT.zip.part").write_bytes(archive[:5000])

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           progress=False)

    assert server.behaviour.requests == [("/EuroSAT.zip", "bytes=5000-")]  # asked, got 200
    assert result.resumed_from == 0
    assert result.path.read_bytes() == archive


def test_a_complete_partial_file_is_verified_without_downloading_again(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    (tmp_path / "EuroSAT.zip.part").write_bytes(archive)

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           progress=False)

    assert server.behaviour.requests == [("/EuroSAT.zip", f"bytes={len(archive)}-")]  # 416
    assert result.path.read_bytes() == archive


# --- verification -------------------------------------------------------------------------


def test_checksum_mismatch_is_refused_and_nothing_is_left(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)  # not the real EuroSAT.zip

    with pytest.raises(ChecksumMismatchError) as exc:
        fetch_dataset("eurosat-rgb", source=url, to=tmp_path, progress=False)

    assert RELEASES["eurosat-rgb"].sha256 in str(exc.value)  # the published value is required
    assert sha256(archive) in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_verified_file_is_not_downloaded_again(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)
    (tmp_path / "EuroSAT.zip").write_bytes(archive)

    result = fetch_dataset("eurosat-rgb", source=url, to=tmp_path, sha256=sha256(archive),
                           progress=False)

    assert server.behaviour.requests == []
    assert result.source is None

    with pytest.raises(ChecksumMismatchError, match="exists but its sha256"):
        fetch_dataset("eurosat-rgb", source=url, to=tmp_path, progress=False)
    assert (tmp_path / "EuroSAT.zip").exists()  # a file we did not download is not deleted


def test_http_errors_fail_without_a_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_dataset("eurosat-rgb", source=server.url + "/nothing.zip", to=tmp_path,
                      progress=False)
    assert not (tmp_path / "EuroSAT.zip").exists()


# --- local copies -------------------------------------------------------------------------


def test_from_a_local_file_or_folder(archive: bytes, tmp_path: Path) -> None:
    local = tmp_path / "usb" / "EuroSAT.zip"
    local.parent.mkdir()
    local.write_bytes(archive)

    first = fetch_dataset("eurosat-rgb", source=str(local), to=tmp_path / "a",
                          sha256=sha256(archive), progress=False)
    second = fetch_dataset("eurosat-rgb", source=str(local.parent), to=tmp_path / "b",
                           sha256=sha256(archive), progress=False)

    assert first.path.read_bytes() == second.path.read_bytes() == archive
    assert first.source == str(local)


def test_a_local_file_with_the_wrong_checksum_is_refused(archive: bytes, tmp_path: Path) -> None:
    local = tmp_path / "EuroSAT.zip"
    local.write_bytes(archive)

    with pytest.raises(ChecksumMismatchError):
        fetch_dataset("eurosat-rgb", source=str(local), to=tmp_path / "out", progress=False)

    assert local.read_bytes() == archive  # the source is left alone
    assert list((tmp_path / "out").iterdir()) == []


# --- extraction ---------------------------------------------------------------------------


def test_extract_unpacks_into_a_folder_named_after_the_archive(
    archive: bytes, tmp_path: Path
) -> None:
    local = tmp_path / "src" / "EuroSAT.zip"
    local.parent.mkdir()
    local.write_bytes(archive)

    result = fetch_dataset("eurosat-rgb", source=str(local), to=tmp_path / "data",
                           sha256=sha256(archive), extract=True, progress=False)

    assert result.extracted == tmp_path / "data" / "EuroSAT"
    chips = result.extracted / RELEASES["eurosat-rgb"].data_dir
    assert sorted(p.name for p in (chips / "Forest").iterdir()) == [
        "Forest_1.jpg", "Forest_2.jpg", "Forest_3.jpg"
    ]
    assert not list((tmp_path / "data").glob(".*extracting"))


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil.txt", "2750/../../evil.txt"])
def test_an_archive_that_escapes_its_folder_is_refused(name: str, tmp_path: Path) -> None:
    bad = tmp_path / "EuroSAT.zip"
    bad.write_bytes(make_zip({"2750/ok.txt": b"ok", name: b"evil"}))

    with pytest.raises(DownloadError, match="unsafe member"):
        extract_archive(bad, progress=False)

    assert not (tmp_path / "EuroSAT").exists()
    assert not (tmp_path / "evil.txt").exists()


# --- the command --------------------------------------------------------------------------


def test_cli_fetches_extracts_and_says_how_to_check(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    url = server.serve("/EuroSAT.zip", archive)

    result = CliRunner().invoke(data_app, [
        "fetch", "eurosat-rgb", "--from", url, "--to", str(tmp_path), "--sha256",
        sha256(archive).upper(), "--extract", "--no-progress",
    ], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    assert (tmp_path / "EuroSAT" / "2750" / "River" / "River_2.jpg").exists()
    assert f"vision data check {tmp_path / 'EuroSAT' / '2750'}" in result.output


def test_cli_prints_a_folder_with_markup_characters_literally(
    server: Server, archive: bytes, tmp_path: Path
) -> None:
    """``[red]dl[/red]`` in --to was read as Rich markup: the brackets vanished from every
    line that named the folder (saved, extracted, how to check)."""
    url = server.serve("/EuroSAT.zip", archive)
    to = tmp_path / "[red]dl[/red]"  # the folder "[red]dl[" holding "red]"

    result = CliRunner().invoke(data_app, [
        "fetch", "eurosat-rgb", "--from", url, "--to", str(to), "--sha256", sha256(archive),
        "--extract", "--no-progress",
    ], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    flat = "".join(result.output.split())
    for line in (f"saved{to / 'EuroSAT.zip'}", f"extractedto{to / 'EuroSAT'}",
                 f"visiondatacheck{to / 'EuroSAT' / '2750'}"):
        assert "".join(line.split()) in flat, line


def _main_exit_code(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    import vision.cli

    monkeypatch.setattr(vision.cli, "_register_plugins", lambda: None)  # only `vision data`
    monkeypatch.setattr(sys, "argv", ["vision", "data", "fetch", "--no-progress", *args])
    with pytest.raises(SystemExit) as exc:
        vision.cli.main()
    return int(exc.value.code or 0)


def test_cli_exit_codes(
    server: Server,
    archive: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.serve("/EuroSAT.zip", archive)

    assert _main_exit_code(monkeypatch, "eurosat-xl", "--to", str(tmp_path)) == 2
    assert "unknown dataset 'eurosat-xl'" in _words(capsys.readouterr().err)
    assert _main_exit_code(monkeypatch, "eurosat-rgb", "--sha256", "abc", "--to",
                           str(tmp_path)) == 2
    assert _main_exit_code(monkeypatch, "eurosat-rgb", "--from", str(tmp_path / "none.zip"),
                           "--to", str(tmp_path)) == 2
    assert _main_exit_code(monkeypatch, "eurosat-rgb", "--from", "ftp://example.org/x.zip",
                           "--to", str(tmp_path)) == 2
    capsys.readouterr()
    assert _main_exit_code(monkeypatch, "eurosat-rgb", "--from", url, "--to",
                           str(tmp_path)) == 1  # checksum mismatch
    assert "refused and deleted" in _words(capsys.readouterr().err)
    assert not list(tmp_path.glob("EuroSAT.zip*"))


def test_published_checksums_are_well_formed() -> None:
    for release in RELEASES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", release.sha256)
        assert release.urls[0].startswith("https://madm.dfki.de/files/sentinel/")
        assert all(u.endswith("/" + release.filename) for u in release.urls)
