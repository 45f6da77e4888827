"""CoDi's diffusion UNets: `UNet2D` (image/video and audio latents) and `UNet0D` (the text latent).

Both carry an environment encoder (`connecters_out`) and connecter-in transformers that attend to an
environment vector during joint generation. Submodule names equal the official ones
(`time_embed`, `input_blocks`, `middle_block`, `output_blocks`, `out`, `connecters_out`,
`input_block_connecters_in`, `output_block_connecters_in`), so official weights load unrenamed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from codi.models.temporal import ResBlockWithTemporal, SpatioTemporalAttention
from codi.models.unet_blocks import (
    Conv2d,
    Downsample,
    FCBlockMultiDim,
    GroupNorm32,
    LinearMultiDim,
    ResBlock,
    SpatialTransformer,
    Upsample,
    repeat_rows,
    timestep_embedding,
)


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of one CoDi UNet, named like the official yaml (`openai_unet_2d` / `_0dmd`)."""

    input_channels: int
    model_channels: int
    output_channels: int
    num_noattn_blocks: tuple[int, ...] = (2, 2, 2, 2)
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    with_attn: tuple[bool, ...] = (True, True, True, False)
    channel_mult_connector: tuple[int, ...] = (1, 2, 4)
    num_noattn_blocks_connector: tuple[int, ...] = (1, 1, 1)
    with_connector: tuple[bool, ...] = (True, True, True, False)
    connector_output_channel: int = 1280
    num_heads: int = 8
    context_dim: int = 768
    use_video_architecture: bool = False
    video_dim_scale_factor: int = 4  # STA head width = channels // this
    second_dim: tuple[int, ...] = (4, 4, 4, 4)  # text UNet: tokens per level
    second_dim_connector: tuple[int, ...] = (4, 4, 4)
    alias_last_skip: bool = False  # official quirk: output block 0 gets cat([middle, middle])

    INERT_KEYS: ClassVar[frozenset[str]] = frozenset({"use_checkpoint"})  # no effect at inference

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        for name in ("num_noattn_blocks", "with_attn", "with_connector", "second_dim"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"{name} needs one entry per level of channel_mult ({levels})")
        conn = len(self.channel_mult_connector)
        for name in ("num_noattn_blocks_connector", "second_dim_connector"):
            if len(getattr(self, name)) != conn:
                raise ValueError(f"{name} needs one entry per level of channel_mult_connector ({conn})")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], **overrides: Any) -> UNetConfig:
        """Builds a config from an official-style dict (lists become tuples); `overrides` win."""
        names = {f.name for f in dataclasses.fields(cls)}
        merged = {**cfg, **overrides}
        unknown = sorted(set(merged) - names - cls.INERT_KEYS)
        if unknown:
            raise ValueError(f"unknown UNet config keys: {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items() if k in names}
        return cls(**kwargs)

    @classmethod
    def official_image(cls) -> UNetConfig:
        """Full-size `unet_image` (image and video, `openai_unet_2d`)."""
        return OFFICIAL_CONFIGS["image"]

    @classmethod
    def official_audio(cls) -> UNetConfig:
        """Full-size `unet_audio` (`openai_unet_2d_audio`)."""
        return OFFICIAL_CONFIGS["audio"]

    @classmethod
    def official_text(cls) -> UNetConfig:
        """Full-size `unet_text` (`openai_unet_0dmd`)."""
        return OFFICIAL_CONFIGS["text"]


OFFICIAL_CONFIGS: dict[str, UNetConfig] = {
    "image": UNetConfig(4, 320, 4, use_video_architecture=True, alias_last_skip=True),
    "audio": UNetConfig(8, 192, 8, alias_last_skip=True),
    "text": UNetConfig(768, 320, 768, alias_last_skip=True),
}


class TimestepSequential(nn.ModuleList):
    """One UNet block: its layers in order, each given what it needs (time embedding, context, frames)."""

    def forward(self, h: Tensor, emb: Tensor, context: Tensor | None, num_frames: int | None) -> Tensor:
        """Args: h [N, C, ...], emb [N, E], context [G N, M, D]. Returns [N or G N, C', ...] (G N rows once a
        layer has read the context)."""
        for layer in self:
            emb = repeat_rows(emb, h.shape[0])  # [rows of h, E]
            if isinstance(layer, ResBlockWithTemporal):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context)
            elif isinstance(layer, SpatioTemporalAttention):
                h = layer(h, num_frames)
            else:
                h = layer(h)
        return h


class _CoDiUNet(nn.Module):
    """Shared layout and forward of the CoDi UNets; subclasses supply the layers and the latent layout."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc, emb_dim = config.model_channels, config.model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self._build_environment_encoder()
        skip_channels = self._build_input_blocks()
        ch, s = mc * config.channel_mult[-1], config.second_dim[-1]
        self.middle_block = TimestepSequential(
            [self._res(ch, ch, s, s), self._attn(ch, config.context_dim), self._res(ch, ch, s, s)]
        )
        self._build_output_blocks(skip_channels)
        self.out = self._head(mc * config.channel_mult[0], config.second_dim[0], config.output_channels)

    # layer factories: `s` is the text UNet's second dim (ignored by UNet2D)
    def _stem(self, out_ch: int, s: int) -> nn.Module:
        raise NotImplementedError

    def _res(self, in_ch: int, out_ch: int, s_in: int, s_out: int) -> nn.Module:
        raise NotImplementedError

    def _resample(self, ch: int, s: int, down: bool) -> nn.Module:
        raise NotImplementedError

    def _head(self, ch: int, s: int, out_ch: int) -> TimestepSequential:
        raise NotImplementedError

    def _attn(self, ch: int, context_dim: int) -> SpatialTransformer:
        heads = self.config.num_heads
        return SpatialTransformer(ch, heads, ch // heads, context_dim)

    def _build_environment_encoder(self) -> None:
        cfg = self.config
        ch, s = cfg.model_channels // 2, cfg.second_dim[0]
        blocks = [TimestepSequential([self._stem(ch, s)])]
        last = len(cfg.channel_mult_connector) - 1
        for level, (mult, s_out) in enumerate(zip(cfg.channel_mult_connector, cfg.second_dim_connector)):
            for _ in range(cfg.num_noattn_blocks_connector[level]):
                out = mult * cfg.model_channels
                blocks.append(TimestepSequential([self._res(ch, out, s, s_out)]))
                ch, s = out, s_out
            if level != last:
                blocks.append(TimestepSequential([self._resample(ch, s, down=True)]))
        blocks.append(self._head(ch, s, cfg.connector_output_channel))
        self.connecters_out = nn.ModuleList(blocks)

    def _build_input_blocks(self) -> list[tuple[int, int]]:
        cfg = self.config
        ch, s = cfg.model_channels, cfg.second_dim[0]
        blocks, connectors, skips = [TimestepSequential([self._stem(ch, s)])], [None], [(ch, s)]
        for level, (mult, s_out) in enumerate(zip(cfg.channel_mult, cfg.second_dim)):
            for _ in range(cfg.num_noattn_blocks[level]):
                out = mult * cfg.model_channels
                layers = [self._res(ch, out, s, s_out)]
                ch, s = out, s_out
                if cfg.with_attn[level]:
                    layers.append(self._attn(ch, cfg.context_dim))
                blocks.append(TimestepSequential(layers))
                connectors.append(self._connector_in(ch) if cfg.with_connector[level] else None)
                skips.append((ch, s))
            if level != len(cfg.channel_mult) - 1:
                blocks.append(TimestepSequential([self._resample(ch, s, down=True)]))
                connectors.append(None)
                skips.append((ch, s))
        self.input_blocks = nn.ModuleList(blocks)
        self.input_block_connecters_in = nn.ModuleList(connectors)
        return skips

    def _build_output_blocks(self, skips: list[tuple[int, int]]) -> None:
        cfg = self.config
        ch, s = cfg.model_channels * cfg.channel_mult[-1], cfg.second_dim[-1]
        blocks, connectors = [], []
        for level in reversed(range(len(cfg.channel_mult))):
            out, s_out = cfg.model_channels * cfg.channel_mult[level], cfg.second_dim[level]
            for i in range(cfg.num_noattn_blocks[level] + 1):
                extra, _ = skips.pop()
                layers = [self._res(ch + extra, out, s, s_out)]
                ch, s = out, s_out
                if cfg.with_attn[level]:
                    layers.append(self._attn(ch, cfg.context_dim))
                connectors.append(self._connector_in(ch) if cfg.with_connector[level] else None)
                if level != 0 and i == cfg.num_noattn_blocks[level]:
                    layers.append(self._resample(ch, s, down=False))
                blocks.append(TimestepSequential(layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.output_block_connecters_in = nn.ModuleList(connectors)

    def _connector_in(self, ch: int) -> TimestepSequential:
        return TimestepSequential([self._attn(ch, self.config.connector_output_channel)])

    # latent layout: subclasses map latents to block features and back
    def _features(self, x: Tensor) -> tuple[Tensor, int | None]:
        raise NotImplementedError

    def _latent(self, h: Tensor, num_frames: int | None) -> Tensor:
        raise NotImplementedError

    def _pool(self, h: Tensor, num_frames: int | None) -> Tensor:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def _embed(self, timesteps: Tensor, batch: int, num_frames: int | None) -> Tensor:
        """[B] timesteps -> [(B F), 4 model_channels] time embedding (repeated per frame)."""
        timesteps = timesteps.reshape(-1).expand(batch) if timesteps.numel() == 1 else timesteps
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(self.dtype))
        return _per_frame(emb, num_frames)

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, env_context: Tensor | None = None) -> Tensor:
        """Predicts the noise of one latent under one or several conditions.

        Args:
            x: the noisy latent: image [B, C, H, W], video [B, C, F, H, W], audio [B, C, T, Fq], text [B, C].
            timesteps: [B] (int or float) diffusion steps, or one step for the whole batch.
            context: [G B, M, context_dim] condition tokens (CoDi: M = 1); G > 1 conditions share the latent
                (classifier-free guidance: G = 2), which is then worked on once up to the first layer that reads
                the condition (the first cross-attention) and G times after it.
            env_context: None for a single-output call (connecter-in transformers skipped), or
                [B or G B, 1, connector_output_channel] environment vector for a joint call.
        Returns:
            eps prediction [G B, ...] shaped like `x` otherwise.
        """
        if context.shape[0] % x.shape[0]:
            raise ValueError(f"context rows ({context.shape[0]}) must be a multiple of the latent's ({x.shape[0]})")
        h, frames = self._features(x)
        emb = self._embed(timesteps, x.shape[0], frames)  # [(B F), E], repeated with h's rows
        rows = context.shape[0]  # G B
        context = _per_frame(context.to(h.dtype), frames)  # [(G B F), M, D]
        env = None if env_context is None else _per_frame(repeat_rows(env_context, rows).to(h.dtype), frames)
        skips = []
        for block, connector in zip(self.input_blocks, self.input_block_connecters_in):
            h = block(h, emb, context, frames)  # [(B F) or (G B F), C, ...]
            emb = repeat_rows(emb, h.shape[0])  # once the rows grew, later blocks need no repeat of their own
            if connector is not None and env is not None:
                h = connector(h, emb, env, frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, frames)
        if self.config.alias_last_skip:
            skips[-1] = h  # the official list aliasing: output block 0 sees the middle output twice
        for block, connector in zip(self.output_blocks, self.output_block_connecters_in):
            skip = skips.pop()
            h = block(torch.cat([h, repeat_rows(skip, h.shape[0])], dim=1), emb, context, frames)
            if connector is not None and env is not None:
                h = connector(h, emb, env, frames)
        h = repeat_rows(h, rows * (frames or 1))  # [(G B F), C, ...] even if no layer read the context
        return self._latent(self.out(h, emb, None, frames), frames).to(x.dtype)

    def environment(self, x: Tensor, timesteps: Tensor) -> Tensor:
        """The environment encoder on this modality's own noisy latent.

        Args:
            x: noisy latent (same layouts as `forward`).
            timesteps: [B] diffusion steps.
        Returns:
            [B, 1, connector_output_channel] L2-normalised mean over every non-channel axis.
        """
        h, frames = self._features(x)
        emb = self._embed(timesteps, x.shape[0], frames)  # [(B F), E]
        for block in self.connecters_out:
            h = block(h, emb, None, frames)
        env = self._pool(h, frames).unsqueeze(1)  # [B, 1, C_env]
        return env / torch.linalg.vector_norm(env, dim=-1, keepdim=True)


def _per_frame(t: Tensor, num_frames: int | None) -> Tensor:
    """[B, ...] -> [(B F), ...] (b-major), unchanged for images."""
    return t if num_frames is None else t.repeat_interleave(num_frames, dim=0)


class UNet2D(_CoDiUNet):
    """Convolutional CoDi UNet for image/video latents (with STA blocks) and audio mel latents."""

    def _stem(self, out_ch: int, s: int) -> nn.Module:
        return Conv2d(self.config.input_channels, out_ch, 3, padding=1)

    def _res(self, in_ch: int, out_ch: int, s_in: int, s_out: int) -> nn.Module:
        res = ResBlock(in_ch, self.config.model_channels * 4, out_ch)
        if not self.config.use_video_architecture:
            return res
        return ResBlockWithTemporal(res, SpatioTemporalAttention(out_ch, out_ch // self.config.video_dim_scale_factor))

    def _resample(self, ch: int, s: int, down: bool) -> nn.Module:
        return Downsample(ch) if down else Upsample(ch)

    def _head(self, ch: int, s: int, out_ch: int) -> TimestepSequential:
        return TimestepSequential([GroupNorm32(ch), nn.SiLU(), Conv2d(ch, out_ch, 3, padding=1)])

    def _features(self, x: Tensor) -> tuple[Tensor, int | None]:
        """[B, C, H, W] -> itself; [B, C, F, H, W] -> [(B F), C, H, W] and F."""
        x = x.to(self.dtype)
        if x.ndim == 4:
            return x, None
        if x.ndim != 5 or not self.config.use_video_architecture:
            raise ValueError(f"UNet2D takes [B,C,H,W] (or [B,C,F,H,W] with video architecture), got {tuple(x.shape)}")
        b, c, f, h, w = x.shape
        return x.transpose(1, 2).reshape(b * f, c, h, w), f

    def _latent(self, h: Tensor, num_frames: int | None) -> Tensor:
        if num_frames is None:
            return h
        n, c, hh, ww = h.shape
        return h.view(n // num_frames, num_frames, c, hh, ww).transpose(1, 2).contiguous()  # [B, C, F, H, W]

    def _pool(self, h: Tensor, num_frames: int | None) -> Tensor:
        if num_frames is not None:
            n, c, hh, ww = h.shape
            h = h.view(n // num_frames, num_frames, c, hh, ww).mean(1)  # [B, C, h, w], frames first
        return h.mean(2).mean(2)  # [B, C]


class UNet0D(_CoDiUNet):
    """Fully-connected "0-D multi-dim" CoDi UNet for the 768-d text latent; features are `[C, S, 1]` maps."""

    def _stem(self, out_ch: int, s: int) -> nn.Module:
        return LinearMultiDim((self.config.input_channels, 1, 1), (out_ch, s, 1))

    def _res(self, in_ch: int, out_ch: int, s_in: int, s_out: int) -> nn.Module:
        return FCBlockMultiDim((in_ch, s_in, 1), self.config.model_channels * 4, (out_ch, s_out, 1))

    def _resample(self, ch: int, s: int, down: bool) -> nn.Module:
        return LinearMultiDim((ch, s, 1), (ch, s, 1))

    def _head(self, ch: int, s: int, out_ch: int) -> TimestepSequential:
        return TimestepSequential([GroupNorm32(ch), nn.SiLU(), LinearMultiDim((ch, s, 1), (out_ch, 1, 1))])

    def _features(self, x: Tensor) -> tuple[Tensor, int | None]:
        """[B, C] -> [B, C, 1, 1]."""
        if x.ndim != 2:
            raise ValueError(f"UNet0D takes a [B, C] latent, got {tuple(x.shape)}")
        return x.to(self.dtype)[:, :, None, None], None

    def _latent(self, h: Tensor, num_frames: int | None) -> Tensor:
        return h.flatten(1)  # [B, C_out]

    def _pool(self, h: Tensor, num_frames: int | None) -> Tensor:
        return h.mean(2).mean(2)  # [B, C_env]


def build_unet(config: UNetConfig, text: bool = False) -> _CoDiUNet:
    """Builds a UNet0D for the text latent (`text=True`) or a UNet2D otherwise."""
    return UNet0D(config) if text else UNet2D(config)
