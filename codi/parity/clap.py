"""Parity runner for the `clap` fixture: CLAP audio embedding of a 16 kHz waveform."""

from __future__ import annotations

from torch import Tensor

from codi.keymaps.clap import OFFICIAL_PREFIX, RULES
from codi.loading import ComponentMap, load_official_component
from codi.models.clap import CLAPAudioConfig, CLAPEncoder


def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Builds `CLAPEncoder` from `spec["config"]`, loads the official weights, encodes `input.waveform_16k`.

    Args:
        spec: the fixture json (`config`, `outputs`).
        tensors: official-named weights under "clap.model." and `input.waveform_16k` [B, 1, T].
    Returns:
        {"output.embedding": [B, 1, joint_embed_shape]} float32.
    """
    encoder = CLAPEncoder(CLAPAudioConfig.from_dict(spec["config"]))
    load_official_component(encoder, tensors, ComponentMap(OFFICIAL_PREFIX, "", RULES))
    waveform = tensors["input.waveform_16k"].float()  # [B,1,T]
    return {"output.embedding": encoder.encode_audio(waveform)}  # [B,1,D]
