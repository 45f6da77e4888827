"""`python app.py` in a subprocess for the end-to-end tests: started, waited for, stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(args: list[str], work: Path, env: dict[str, str], ready_path: str = "/") -> Iterator[str]:
    """Starts `python app.py ARGS --port P` (log in work/app.log), waits until `ready_path` answers (180 s at
    most, failing the test with the log otherwise) and yields the app's base URL; stops it afterwards."""
    port = free_port()
    offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env = {**os.environ, **offline, "GRADIO_TEMP_DIR": str(work / "gradio"), **env}
    log = open(work / "app.log", "w")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "app.py", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(work / 'app.log').read_text()}")
            try:
                urllib.request.urlopen(url + ready_path.lstrip("/"), timeout=5).close()
                break
            except OSError:
                if time.perf_counter() - start > 180:
                    pytest.fail(f"app.py did not answer in 180 s:\n{(work / 'app.log').read_text()}")
                time.sleep(0.5)
        print(f"\n[e2e] app.py ready in {time.perf_counter() - start:.1f} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
