"""`--compile`: the UNets run through torch.compile and give what the eager model gives (tiny model, CPU)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from codi.pipeline import CoDiPipeline


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_compiled_unets_match_eager():
    torch.manual_seed(0)
    eager = CoDiPipeline.from_preset("tiny")
    compiled = CoDiPipeline.from_preset("tiny", compile=True)
    assert all(hasattr(u, "_compiled_call_impl") and u._compiled_call_impl for u in compiled.model.diffusion.children())
    kwargs = {"inputs": {"text": "a red circle"}, "outputs": ["image"], "steps": 3, "seed": 5}
    a, b = (np.asarray(p(**kwargs).images[0], dtype=np.int16) for p in (eager, compiled))
    assert np.abs(a - b).max() <= 2  # the same picture, up to float rounding in the fused kernels
