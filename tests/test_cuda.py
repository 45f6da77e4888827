"""On a CUDA GPU (skipped elsewhere): the tiny model's outputs on the device, in float32 and float16.

CI has no GPU; run `python -m pytest tests/test_cuda.py` on one (the device tool's machine). These paths never run
on a CPU: the pipeline's seeded generators are CPU ones, and each random draw must accept them for CUDA tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codi.models.optimus import draw
from codi.pipeline import CoDiPipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_draw_takes_a_cpu_generator_for_cuda_probabilities() -> None:
    probs = torch.rand(3, 50, generator=torch.Generator().manual_seed(0)).softmax(-1)  # [3, V]
    on_gpu = draw(probs.cuda(), torch.Generator().manual_seed(2))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), draw(probs, torch.Generator().manual_seed(2)))  # the same draws as on the CPU


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_all_four_outputs_on_the_gpu_are_seeded(dtype: str) -> None:
    pipe = CoDiPipeline.from_preset("tiny", device="cuda", dtype=dtype)
    request = {"inputs": {"text": "a yellow ball"}, "outputs": ["text", "image", "video", "audio"], "seed": 3}
    a, b = pipe(**request), pipe(**request)
    assert a.text and a.text == b.text  # the text decoder's draws on the GPU, from the seeded CPU generator
    # the same seed, the same pictures (to a level of rounding: cuDNN may pick kernels that sum in another order)
    image_a, image_b = (np.asarray(r.image, dtype=np.int16) for r in (a, b))
    assert image_a.shape == image_b.shape and np.abs(image_a - image_b).max() <= 2
    frames_a, frames_b = (r.video.frames.astype(np.int16) for r in (a, b))
    assert frames_a.shape == frames_b.shape and np.abs(frames_a - frames_b).max() <= 2
    assert a.audio.waveform.shape == b.audio.waveform.shape and abs(a.audio.waveform).max() <= 1
    assert a.model["device"].startswith("cuda") and a.model["peak_memory"]["kind"].startswith("cuda")
