"""Parity runner for the `audioldm_vae_vocoder` fixture: AudioLDM VAE encoder/decoder, CoDi decode, HiFi-GAN."""

from __future__ import annotations

import torch
from torch import Tensor

from codi.keymaps.vae import audioldm_rules
from codi.loading import ComponentMap, load_official_component
from codi.models.audio_vae import AudioVAE, AudioVAEConfig


def _input(tensors: dict[str, Tensor], name: str) -> Tensor:
    value = tensors[name]
    return value.float() if value.is_floating_point() else value


@torch.no_grad()
def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Builds the fixture's AudioVAE, loads its `audioldm.` weights and performs the json's calls."""
    config = AudioVAEConfig.from_dict(spec["config"])
    model = AudioVAE(config).float().eval()
    rules = audioldm_rules(len(config.autoencoder.ch_mult))
    load_official_component(model, tensors, ComponentMap("audioldm.", "", rules))

    z = _input(tensors, "input.z")
    codi_mel = model.decode_mel(z)  # CoDi.audioldm_decode
    vocoder_mel = _input(tensors, "input.vocoder_mel")  # [B,M,T], the official vocoder layout
    return {
        "output.encoder_moments": model.moments(_input(tensors, "input.mel")),
        "output.decode": model.vae.decoder(model.vae.post_quant_conv(z)),  # audioldm.decode, unscaled
        "output.codi_audioldm_decode": codi_mel,
        "output.codi_audioldm_decode_clipped": model.decode_mel(_input(tensors, "input.z_big")),
        "output.vocoder_waveform": model.mel_to_waveform(vocoder_mel.transpose(1, 2)[:, None]),
        "output.codi_mel_to_waveform": model.mel_to_waveform(codi_mel),
    }
