"""CoDi Studio engine: any-to-any generation with Composable Diffusion.

from codi import CoDiPipeline
pipe = CoDiPipeline.from_preset("tiny")
result = pipe(inputs={"text": "a red circle moving up"}, outputs=["video", "audio"])
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from codi.modality import Modality

# Big CPU tensors on transparent huge pages: torch's CPU allocator reads this on its first allocation, so it acts
# when codi is imported before torch (the CLI, the app). A UNet step allocates and frees GBs; on 4 KB pages each
# allocation faults its pages in again (released text->image at full size, 2 cores: 42 -> 36 s, peak -0.3 GB).
# THP_MEM_ALLOC_ENABLE=0 turns it off; Linux only (elsewhere torch ignores it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

if TYPE_CHECKING:
    from codi.pipeline import CoDiPipeline, GenerationResult

__all__ = ["CoDiPipeline", "GenerationResult", "Modality"]


def __getattr__(name: str):  # import torch-heavy modules on first use only
    if name in ("CoDiPipeline", "GenerationResult"):
        from codi import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'codi' has no attribute {name!r}")
