"""`python app.py --mcp`: the app starts with Gradio's MCP server and lists CoDi's generate tool."""

from __future__ import annotations

import json
import urllib.request

import pytest
from app_process import running_app

pytestmark = pytest.mark.slow


def test_app_serves_the_generate_tool_over_mcp(tmp_path) -> None:
    pytest.importorskip("mcp", reason="the MCP server needs gradio[mcp] (requirements.txt)")
    args = ["--mcp", "--runs", str(tmp_path / "runs"), "--recordings", str(tmp_path / "recordings")]
    schema_path = "gradio_api/mcp/schema"
    with running_app(args, tmp_path, {"CODI_MODEL": "tiny"}, ready_path=schema_path) as url:
        schema = json.loads(urllib.request.urlopen(url + schema_path, timeout=10).read())
    tools = {t["name"]: t for t in schema} if isinstance(schema, list) else schema
    (name,) = [n for n in tools if n.endswith("generate")]
    tool = tools[name]
    assert "Generates any combination of text, image, video and audio" in tool["description"]
    properties = tool["inputSchema"]["properties"]
    assert {"text", "outputs", "steps", "seed"} <= set(properties)
    assert "normalised to sum 1" in properties["text_weight"].get("description", "")
