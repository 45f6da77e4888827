"""CoDi Studio engine: any-to-any generation with Composable Diffusion.

from codi import CoDiPipeline
pipe = CoDiPipeline.from_preset("tiny")
result = pipe(inputs={"text": "a red circle moving up"}, outputs=["video", "audio"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codi.modality import Modality

if TYPE_CHECKING:
    from codi.pipeline import CoDiPipeline, GenerationResult

__all__ = ["CoDiPipeline", "GenerationResult", "Modality"]


def __getattr__(name: str):  # import torch-heavy modules on first use only
    if name in ("CoDiPipeline", "GenerationResult"):
        from codi import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'codi' has no attribute {name!r}")
