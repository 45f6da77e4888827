"""Shared test setup: offline hub, deterministic threads, the parity fixture folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CODI_SHARED", REPO.parent / "shared"))
PARITY_DIR = SHARED / "official-parity"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
torch.set_flush_denormal(True)  # subnormals from random weights slow CPU math ~100x


def parity_dir() -> Path:
    """The official parity fixture folder, or skip the test with the reason."""
    if not (PARITY_DIR / "manifest.json").exists():
        pytest.skip(f"official parity fixtures not found at {PARITY_DIR} (set CODI_SHARED to ../shared)")
    return PARITY_DIR


@pytest.fixture
def parity_path() -> Path:
    return parity_dir()
