"""ZeroGPU on Hugging Face Spaces: the generation handler runs inside `spaces.GPU` when `spaces` is importable.

`spaces.GPU(duration=...)` takes a callable with the handler's own arguments; a shorter estimate gets a visitor a
better place in the queue, so the estimate grows with the steps, the outputs and the samples of each request.
Without the `spaces` package (a local run) the handler is returned unchanged.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any

# Seconds per guided sampler step and sample, float16 on a ZeroGPU slice (estimated from the parts' sizes until
# measured; bench/official_gpu.py measures them), and a fixed part for encoding, decoding and moving data.
STEP_SECONDS = {"text": 0.05, "image": 0.08, "video": 0.35, "audio": 0.06}
FIXED_SECONDS = 15
MIN_SECONDS, MAX_SECONDS = 20, 300


def is_zero_gpu() -> bool:
    """True on a ZeroGPU Space (the platform sets SPACES_ZERO_GPU)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def gpu_seconds(steps: int | None, outputs: Iterable[str] | None, num_samples: int | None, default_steps: int) -> int:
    """The GPU time to ask for one request: a fixed part plus steps x the outputs' step costs x samples."""
    per_step = sum(STEP_SECONDS.get(o, max(STEP_SECONDS.values())) for o in set(outputs or ["image"]))
    seconds = FIXED_SECONDS + int(steps or default_steps) * per_step * max(1, int(num_samples or 1))
    return int(min(MAX_SECONDS, max(MIN_SECONDS, round(seconds))))


def on_gpu(handler: Callable[..., Any], default_steps: int) -> Callable[..., Any]:
    """`handler` wrapped in `spaces.GPU` with a per-request duration, or `handler` itself without `spaces`."""
    if importlib.util.find_spec("spaces") is None:
        return handler
    import spaces

    signature = inspect.signature(handler)

    def duration(*args: Any, **kwargs: Any) -> int:
        call = signature.bind_partial(*args, **kwargs).arguments
        return gpu_seconds(call.get("steps"), call.get("outputs"), call.get("num_samples"), default_steps)

    return spaces.GPU(duration=duration)(handler)
