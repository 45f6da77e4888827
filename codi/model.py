"""The CoDi model: per-modality prompt encoders, latent autoencoders and the joint diffusion UNets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from codi.config import CoDiConfig
from codi.modality import Modality
from codi.models.audio_vae import AudioVAE
from codi.models.clap import CLAPEncoder
from codi.models.clip import CLIPEncoder
from codi.models.joint import JointDenoiser
from codi.models.optimus import OptimusVAE
from codi.models.unet import UNet0D, UNet2D
from codi.models.vae import ImageVAE


@dataclass(frozen=True)
class LatentSpec:
    """Shape of one sample's latent for an output modality (without the batch axis)."""

    shape: tuple[int, ...]


class CoDiModel(nn.Module):
    """All CoDi components; attribute names are the checkpoint prefixes of our own format."""

    def __init__(self, config: CoDiConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = CLIPEncoder(config.clip)
        self.clap = CLAPEncoder(config.clap)
        self.optimus = OptimusVAE(config.optimus)
        self.autokl = ImageVAE(config.image_vae)
        self.audioldm = AudioVAE(config.audio_vae)
        unets: dict[str, nn.Module] = {}
        if config.unet_image is not None:
            unets["image"] = UNet2D(config.unet_image)
        if config.unet_audio is not None:
            unets["audio"] = UNet2D(config.unet_audio)
        if config.unet_text is not None:
            unets["text"] = UNet0D(config.unet_text)
        self.diffusion = JointDenoiser(unets)
        self.register_buffer("alphas_cumprod", config.schedule.alphas_cumprod(), persistent=False)

    def can_generate(self, modality: Modality) -> bool:
        key = "image" if modality in (Modality.IMAGE, Modality.VIDEO) else modality.value
        return getattr(self.diffusion, f"unet_{key}", None) is not None

    def latent_shape(self, modality: Modality) -> tuple[int, ...]:
        """One sample's latent shape for `modality`, from the components that own the geometry."""
        media = self.config.media
        if modality is Modality.TEXT:
            return (self.config.unet_text.input_channels,)
        if modality is Modality.AUDIO:
            return tuple(self.audioldm.latent_shape(media.audio_seconds))  # nominal seconds (official 10)
        side = media.image_size // self.autokl.downsample
        if modality is Modality.IMAGE:
            return (self.autokl.latent_channels, side, side)
        return (self.autokl.latent_channels, media.num_frames, side, side)

    def decode(self, modality: Modality, z: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0):
        """Scaled latents -> media tensors: image/video in [-1,1], audio waveform, or a list of strings
        (text sampled at `temperature`)."""
        if modality is Modality.TEXT:
            return self.optimus.decode(z, generator=generator, temperature=temperature)
        if modality is Modality.AUDIO:
            return self.audioldm.decode(z)
        return self.autokl.decode(z)
