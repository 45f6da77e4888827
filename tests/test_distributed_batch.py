"""`python -m codi generate --batch` under torchrun: two CPU processes (gloo) share the requests, each with its
own model, and the results are those of one process, in the same DIR/<id>/ layout, with a merged summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def batch_file(tmp_path: Path) -> Path:
    requests = [
        {"id": "a", "text": "a red circle", "outputs": "image", "seed": 1},
        {"id": "b", "text": "a blue square", "outputs": "audio", "seed": 2},
        {"id": "c", "text": "a green triangle", "outputs": "text", "seed": 3},
        {"id": "d", "text": "a yellow circle moving up", "outputs": "image,audio", "seed": 4},
        {"id": "e", "text": "a red square", "outputs": "image", "seed": 5},
    ]
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(r | {"steps": 2}) + "\n" for r in requests))
    return path


def generate(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_split_the_batch_and_match_one(tmp_path):
    batch = batch_file(tmp_path)
    common = ["-m", "codi", "generate", "--batch", str(batch), "--model", "tiny", "--device", "cpu", "--quiet"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = generate([*torchrun, *common, "--out", str(tmp_path / "two")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = generate([sys.executable, *common, "--out", str(tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]

    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["requests"] == 5 and summary["failed"] == 0
    assert [r["id"] for r in summary["results"]] == ["a", "b", "c", "d", "e"]
    assert {r["process"] for r in summary["results"]} == {0, 1}  # both processes worked
    assert not list((tmp_path / "two").glob(".summary-*"))  # the parts were merged away
    for rid, files in (("a", "image.png"), ("b", "audio.wav"), ("c", "text.txt"), ("d", "audio.wav")):
        mine, theirs = tmp_path / "two" / rid / files, tmp_path / "one" / rid / files
        assert mine.read_bytes() == theirs.read_bytes(), f"{rid}/{files} differs from the one-process run"
    alone = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert alone["processes"] == 1 and [r["id"] for r in alone["results"]] == ["a", "b", "c", "d", "e"]
