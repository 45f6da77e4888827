"""`python app.py --mcp`: the app starts with Gradio's MCP server and lists CoDi's generate tool."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_the_generate_tool_over_mcp(tmp_path) -> None:
    pytest.importorskip("mcp", reason="the MCP server needs gradio[mcp] (requirements.txt)")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "CODI_MODEL": "tiny"}
    env["GRADIO_TEMP_DIR"] = str(tmp_path / "gradio")
    cmd = [sys.executable, "app.py", "--mcp", "--port", str(port), "--runs", str(tmp_path / "runs")]
    cmd += ["--recordings", str(tmp_path / "recordings")]
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/gradio_api/mcp/schema"
    start = time.perf_counter()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{(tmp_path / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    schema = json.loads(r.read())
                break
            except OSError:
                if time.perf_counter() - start > 180:
                    pytest.fail(f"no MCP schema in 180 s:\n{(tmp_path / 'app.log').read_text()}")
                time.sleep(0.5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    tools = {t["name"]: t for t in schema} if isinstance(schema, list) else schema
    (name,) = [n for n in tools if n.endswith("generate")]
    tool = tools[name]
    assert "Generates any combination of text, image, video and audio" in tool["description"]
    properties = tool["inputSchema"]["properties"]
    assert {"text", "outputs", "steps", "seed"} <= set(properties)
    assert "normalised to sum 1" in properties["text_weight"].get("description", "")
