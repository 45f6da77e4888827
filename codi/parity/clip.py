"""Parity runner for the `clip` fixture: CLIP text / image / video embeddings and the image processor."""

from __future__ import annotations

import torch
from torch import Tensor

from codi.keymaps.clip import clip_component_map
from codi.loading import load_official_component
from codi.models.clip import CLIPEncoder, CLIPEncoderConfig, clip_preprocess


def _input(tensors: dict[str, Tensor], name: str) -> Tensor:
    t = tensors[f"input.{name}"]
    return t.float() if t.is_floating_point() else t


@torch.no_grad()
def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Builds `CLIPEncoder` from spec["config"], loads the official weights and makes every output."""
    config = CLIPEncoderConfig.from_dict(spec["config"])
    encoder = CLIPEncoder(config).eval()
    load_official_component(encoder.model, tensors, clip_component_map())
    ids = _input(tensors, "token_ids")  # [B,77]
    video_pixels = _input(tensors, "pixel_values_video")  # [B,F,3,S,S]
    raw_image = _input(tensors, "raw_image")  # [B,3,H,W]
    out = {
        "output.text_from_strings": encoder.encode_text(spec["strings"]),
        "output.text_from_ids": encoder.encode_text(ids),
        "output.text_last_hidden_state": encoder.model.text_model(input_ids=ids).last_hidden_state,
        "output.vision_from_pixels": encoder.encode_pixels(_input(tensors, "pixel_values")),
        "output.video_from_pixels": encoder.encode_pixels(video_pixels),
        "output.video_pooler_output": encoder.vision_pooled(video_pixels),
        "output.vision_from_raw": encoder.encode_image(raw_image),
        "output.video_from_raw": encoder.encode_video(_input(tensors, "raw_video")),
        "output.processor_pixel_values_image": clip_preprocess(raw_image, config.vision.image_size),
    }
    return {name: out[name] for name in spec["outputs"]}
