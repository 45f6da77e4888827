"""A stand-in for the Hugging Face Hub on 127.0.0.1: serves a folder's files at the Hub's resolve URLs, so that
huggingface_hub's own download code (hf_hub_download, its HEAD metadata request, the cache layout) runs for real."""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
CHUNK = 64 * 1024


@functools.cache
def _sha256(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


class FakeHubServer(ThreadingHTTPServer):
    """`files`: {repository path: file on disk} of one repository; `delay` seconds after each 64 KB sent."""

    daemon_threads = True

    def __init__(self, repo_id: str, files: dict[str, Path], delay: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repo_id = repo_id
        self.files = files
        self.delay = delay
        self.requests: list[tuple[str, str]] = []  # (method, repository path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHubServer

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _file(self) -> tuple[str, Path] | None:
        prefix = f"/{self.server.repo_id}/resolve/"
        path = unquote(urlparse(self.path).path)
        if not path.startswith(prefix):
            return None
        filename = path[len(prefix) :].split("/", 1)[1]  # after the revision
        self.server.requests.append((self.command, filename))
        found = self.server.files.get(filename)
        return (filename, found) if found is not None else None

    def _headers(self, file: Path, start: int) -> None:
        size = file.stat().st_size
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{_sha256(file)}"')  # a large (LFS) file's ETag is its content's sha256
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        found = self._file()
        if found is None:
            self.send_error(404, "Entry not found")
            return
        self._headers(found[1], 0)

    def do_GET(self) -> None:  # noqa: N802
        found = self._file()
        if found is None:
            self.send_error(404, "Entry not found")
            return
        ranged = self.headers.get("Range", "")
        start = int(ranged.split("=")[1].split("-")[0]) if ranged.startswith("bytes=") else 0
        self._headers(found[1], start)
        with found[1].open("rb") as f:
            f.seek(start)
            try:
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)
                    if self.server.delay:
                        time.sleep(self.server.delay)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a cancelled download)
                pass


@contextmanager
def fake_hub(repo_id: str, files: dict[str, Path], delay: float = 0.0) -> Iterator[FakeHubServer]:
    """Serves `files` of `repo_id` until the block ends."""
    server = FakeHubServer(repo_id, files, delay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
