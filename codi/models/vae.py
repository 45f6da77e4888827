"""SD kl-f8 latent autoencoder for images and video frames (official `autokl.`), wrapping diffusers.

The network is diffusers' `AutoencoderKL`, which computes exactly what the LDM `Encoder`/`Decoder` of the
official code computes (GroupNorm(32, eps 1e-6), right/bottom-padded stride-2 downsampling, nearest x2 +
conv upsampling, one single-head mid attention with scale C^-0.5, logvar clamped to [-30, 20]). CoDi adds
the latent scale factor, per-frame video coding and the truncating uint8 conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.models.upsampling import Upsample2D
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from codi.models.unet_blocks import upsample_conv, use_upsample_conv

DECODE_SLICE = 4  # images decoded at once: a video's 8 frames in two slices, same pixels, half the peak memory


@dataclass(frozen=True)
class KLAutoencoderConfig:
    """Geometry of an LDM KL autoencoder: the `embed_dim` and `ddconfig` fields of the official yaml."""

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    embed_dim: int = 4
    norm_groups: int = 32

    @classmethod
    def from_ldm(cls, embed_dim: int, ddconfig: Mapping[str, Any]) -> KLAutoencoderConfig:
        """Builds the config from the official `embed_dim` and `ddconfig`, refusing what diffusers lacks."""
        if ddconfig.get("attn_resolutions"):
            raise NotImplementedError("attention outside the mid block (attn_resolutions) is not supported")
        if not ddconfig.get("double_z", True):
            raise NotImplementedError("only double_z (KL posterior) autoencoders are supported")
        if ddconfig.get("downsample_time", False):
            raise NotImplementedError("AudioLDM time-stride-4 downsampling is not supported")
        if ddconfig.get("dropout", 0.0):
            raise NotImplementedError("dropout is not supported (inference-only autoencoder)")
        if ddconfig["z_channels"] != embed_dim:
            raise NotImplementedError(f"z_channels {ddconfig['z_channels']} != embed_dim {embed_dim}")
        return cls(
            in_channels=ddconfig["in_channels"],
            out_channels=ddconfig["out_ch"],
            ch=ddconfig["ch"],
            ch_mult=tuple(ddconfig["ch_mult"]),
            num_res_blocks=ddconfig["num_res_blocks"],
            embed_dim=embed_dim,
        )

    @property
    def downsample(self) -> int:
        """Spatial reduction factor between input and latent."""
        return 2 ** (len(self.ch_mult) - 1)

    def build(self) -> AutoencoderKL:
        """Returns a randomly initialised diffusers AutoencoderKL of this geometry."""
        levels = len(self.ch_mult)
        autoencoder = AutoencoderKL(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.ch * m for m in self.ch_mult),
            layers_per_block=self.num_res_blocks,
            latent_channels=self.embed_dim,
            norm_num_groups=self.norm_groups,
        )
        for block in autoencoder.decoder.up_blocks:
            for i, up in enumerate(block.upsamplers or ()):
                block.upsamplers[i] = ParityUpsample2D.replacing(up)
        return autoencoder


class ParityUpsample2D(Upsample2D):
    """diffusers' decoder upsampler (nearest x2, then a 3x3 convolution), computed by output parity where
    `use_upsample_conv` says so (a CPU without autograd): a 256 px image's decoder spends ~30 % of its
    multiplications in these three convolutions on upsampled maps, and `upsample_conv` does them 2.25x cheaper."""

    @classmethod
    def replacing(cls, up: Upsample2D) -> Upsample2D:
        """The same upsampler (its `conv` module, so the same keys and weights) as this class, where it is the
        plain nearest + 3x3 convolution kind; any other kind is returned unchanged."""
        conv = getattr(up, "conv", None)
        plain = (
            type(up) is Upsample2D
            and isinstance(conv, nn.Conv2d)
            and getattr(up, "interpolate", True)  # diffusers 0.42's options, read defensively
            and getattr(up, "norm", None) is None
            and conv.kernel_size == (3, 3)
            and conv.padding == (1, 1)
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
        )
        if not plain:
            return up
        new = cls(up.channels, use_conv=True, out_channels=up.out_channels)
        new.conv = conv
        return new

    def forward(self, hidden_states: Tensor, output_size: int | None = None, *args: Any, **kwargs: Any) -> Tensor:
        if output_size is None and not args and not kwargs and use_upsample_conv(hidden_states, self.conv.weight):
            return upsample_conv(hidden_states, self.conv.weight, self.conv.bias)  # [N, C, 2H, 2W]
        return super().forward(hidden_states, output_size, *args, **kwargs)


@dataclass(frozen=True)
class ImageVAEConfig:
    """The image/video autoencoder and its latent scale (`configs/model/sd.yaml`, `vision_scale_factor`)."""

    autoencoder: KLAutoencoderConfig = KLAutoencoderConfig()
    scale_factor: float = 0.18215

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ImageVAEConfig:
        """Accepts the official/fixture dict `{"embed_dim", "ddconfig"[, "scale_factor"]}`."""
        autoencoder = KLAutoencoderConfig.from_ldm(config["embed_dim"], config["ddconfig"])
        return cls(autoencoder, float(config.get("scale_factor", cls.scale_factor)))

    @classmethod
    def official(cls) -> ImageVAEConfig:
        """The full-size SD kl-f8 autoencoder of CoDi."""
        return cls(KLAutoencoderConfig(), 0.18215)


def frames_to_batch(x: Tensor) -> tuple[Tensor, int]:
    """[B,C,F,H,W] -> ([B*F,C,H,W], F); a 4-D input passes through with F = 0."""
    if x.dim() == 4:
        return x, 0
    if x.dim() != 5:
        raise ValueError(f"expected a [B,C,H,W] or [B,C,F,H,W] tensor, got shape {tuple(x.shape)}")
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w), f  # [B*F,C,H,W]


def batch_to_frames(x: Tensor, frames: int) -> Tensor:
    """Inverse of `frames_to_batch`: [B*F,C,H,W] -> [B,C,F,H,W] (identity when frames == 0)."""
    if frames == 0:
        return x
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)  # [B,C,F,H,W]


class ImageVAE(nn.Module):
    """SD kl-f8 autoencoder between [-1,1] images (or video frames) and diffusion-scale latents."""

    def __init__(self, config: ImageVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or ImageVAEConfig.official()
        self.vae = self.config.autoencoder.build()
        self.scale_factor: float = self.config.scale_factor
        self.downsample: int = self.config.autoencoder.downsample
        self.latent_channels: int = self.config.autoencoder.embed_dim

    def latent_shape(self, height: int, width: int, frames: int | None = None) -> tuple[int, ...]:
        """Latent shape without batch: (C, h, w) for an image, (C, F, h, w) for `frames` video frames."""
        h, w = height // self.downsample, width // self.downsample
        return (self.latent_channels, h, w) if frames is None else (self.latent_channels, frames, h, w)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior of the official `autokl.encode`.

        Args:
            x: images [B,3,H,W] (or frames [B,3,F,H,W]) in [-1, 1].
        Returns:
            (mean, logvar clamped to [-30, 20], moments = quant_conv output), each [B,C(,F),h,w] with
            C = latent_channels for mean/logvar and 2*latent_channels for moments.
        """
        flat, frames = frames_to_batch(x)  # [N,3,H,W]
        moments = self.vae.quant_conv(self.vae.encoder(flat))  # [N,2C,h,w]
        mean, logvar = moments.chunk(2, dim=1)  # [N,C,h,w] each
        logvar = logvar.clamp(-30.0, 20.0)
        return tuple(batch_to_frames(t, frames) for t in (mean, logvar, moments))  # type: ignore[return-value]

    def encode(self, x: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        """Encodes images or video frames to diffusion-scale latents.

        Args:
            x: [B,3,H,W] or [B,3,F,H,W] in [-1, 1].
            generator: random source for `sample=True`.
            sample: draw from the posterior (the official `autokl_encode`) instead of taking its mean.
        Returns:
            latent * scale_factor, [B,C,H/d,W/d] or [B,C,F,H/d,W/d] (d = downsample).
        """
        mean, logvar, _ = self.posterior(x)
        z = mean
        if sample:
            noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return z * self.scale_factor

    def decode_unscaled(self, z: Tensor) -> Tensor:
        """The official `autokl.decode`: unscaled latent [B,C,h,w] / [B,C,F,h,w] -> [B,3,H,W] / [B,3,F,H,W]."""
        flat, frames = frames_to_batch(z)  # [N,C,h,w]
        # in slices of DECODE_SLICE images (video frames, samples): the decoder's peak memory is that of a slice
        x = torch.cat([self.vae.decoder(self.vae.post_quant_conv(part)) for part in flat.split(DECODE_SLICE)])
        return batch_to_frames(x, frames)  # x: [N,3,H,W]

    def decode(self, z: Tensor) -> Tensor:
        """Decodes diffusion-scale latents (`CoDi.autokl_decode`).

        Args:
            z: [B,C,h,w] or [B,C,F,h,w] latents in diffusion scale.
        Returns:
            images [B,3,H,W] or frames [B,3,F,H,W], roughly in [-1, 1] (not clamped).
        """
        return self.decode_unscaled(z / self.scale_factor)


def to_uint8(images: Tensor) -> Tensor:
    """The official image conversion: clamp((x+1)/2, 0, 1) * 255, truncated to uint8, channels last.

    Args:
        images: [B,3,H,W] or [B,3,F,H,W], roughly in [-1, 1].
    Returns:
        uint8 [B,H,W,3] or [B,F,H,W,3].
    """
    x = torch.clamp((images + 1.0) / 2.0, min=0.0, max=1.0)
    x = x.mul(255).to(torch.uint8)  # truncation, as torchvision's ToPILImage
    return x.movedim(1, -1).contiguous()  # [B,(F,)H,W,3]
