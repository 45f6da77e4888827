"""The GPU benchmark's run order: what a time-limited run on a lent GPU measures first."""

from __future__ import annotations

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
