"""The GPU benchmark's run order (what a time-limited run on a lent GPU measures first) and its session script."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from official_gpu import plan  # noqa: E402


@pytest.mark.parametrize(
    ("offload", "compile", "expected"),
    [
        ("both", "both", [("none", False), ("model", False), ("none", True)]),  # compiling last: it takes minutes
        ("none", "both", [("none", False), ("none", True)]),
        ("both", "off", [("none", False), ("model", False)]),
        ("model", "on", [("model", False)]),  # offloaded parts are never compiled
        ("none", "on", [("none", True)]),
    ],
)
def test_gpu_bench_runs_uncompiled_cases_first(offload, compile, expected) -> None:
    assert plan(offload, compile) == expected


def test_the_gpu_session_script_runs_its_steps_and_keeps_their_output(tmp_path) -> None:
    """bench/gpu_check.sh (the one device call of a session lent a GPU), run here: no wheels to install, the CUDA
    tests skip and the benchmark says there is no GPU, and each step's output is in $OUT with the benchmark's exit."""
    (tmp_path / "wheels").mkdir()
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_WHEELS": str(tmp_path / "wheels"), "GPU_BENCH_S": "120"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["env.txt", "gpu.txt", "test_cuda.txt"]
    assert "cuda False" in (out / "env.txt").read_text()  # the versions line, on a machine without CUDA
    assert "3 skipped" in (out / "test_cuda.txt").read_text()
    gpu = (out / "gpu.txt").read_text()
    assert "no CUDA GPU" in gpu and "bench exit: 2" in gpu
    for script in ("gpu_check.sh", "gpu_kit.sh"):
        assert subprocess.run(["bash", "-n", str(REPO / "bench" / script)]).returncode == 0
