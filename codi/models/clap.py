"""CLAP audio prompt encoder: LAION-CLAP's HTSAT (transformers' `ClapAudioModel`) plus CoDi's projection.

A 16 kHz waveform becomes one L2-normalised 768-d token: resample to 48 kHz, repeat-pad or crop to 10 s,
log-mel (float32), then HTSAT (bn0 over mel bins, 1001 -> 1024 frames folded into a 256x256 image, Swin
stages, final norm, average pool over all positions) and `audio_projection` (Linear, ReLU, Linear).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import ClapAudioConfig, ClapAudioModel

from codi.audio_dsp import log_mel_spectrogram, resample


@dataclass(frozen=True)
class CLAPAudioConfig:
    """Sizes of the HTSAT audio branch, its projection and its log-mel front end (defaults: HTSAT-large)."""

    embed_dim: int = 256  # width of the patch embedding; doubles at every patch merging
    depths: tuple[int, ...] = (2, 2, 12, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_norm: bool = True
    spec_size: int = 256  # side of the square "image" the log-mel is folded into
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    freq_ratio: int = 4  # time chunks stacked along frequency (spec_size = freq_ratio * n_mels)
    joint_embed_shape: int = 768
    input_sample_rate: int = 16000  # CoDi feeds CLAP 16 kHz audio
    sample_rate: int = 48000
    clip_samples: int = 480000  # 10 s at 48 kHz
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads", "patch_stride"):  # lists after a JSON round trip
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        if self.spec_size != self.freq_ratio * self.n_mels:
            raise ValueError(f"spec_size {self.spec_size} != freq_ratio {self.freq_ratio} x n_mels {self.n_mels}")

    @property
    def num_features(self) -> int:
        """Width of the last Swin stage (the pooled HTSAT embedding)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @classmethod
    def official(cls) -> CLAPAudioConfig:
        """HTSAT-large with the 768-d joint embedding, as built by the official CoDi."""
        return PRESETS["official"]

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> CLAPAudioConfig:
        """Builds the config from a parity fixture's `config` ({"htsat", "audio_cfg", ...}) or flat fields."""
        if "htsat" not in config:
            unknown = sorted(set(config) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown CLAPAudioConfig fields {unknown}")
            return cls(**config)
        htsat, audio = config["htsat"], config["audio_cfg"]
        if htsat.get("ape", False):
            raise NotImplementedError("absolute position embedding (ape=True) is not supported")
        if htsat.get("norm_before_mlp", "ln") != "ln":
            raise NotImplementedError(f"norm_before_mlp={htsat['norm_before_mlp']!r}: only 'ln' is supported")
        if config.get("enable_fusion", False):
            raise NotImplementedError("CoDi builds CLAP with enable_fusion=False")
        out = cls(
            embed_dim=int(htsat["embed_dim"]),
            depths=htsat["depths"],
            num_heads=htsat["num_heads"],
            window_size=int(htsat["window_size"]),
            mlp_ratio=float(htsat["mlp_ratio"]),
            qkv_bias=bool(htsat["qkv_bias"]),
            patch_norm=bool(htsat["patch_norm"]),
            spec_size=int(htsat["spec_size"]),
            patch_size=int(htsat["patch_size"]),
            patch_stride=htsat["patch_stride"],
            freq_ratio=int(htsat["spec_size"]) // int(audio["mel_bins"]),
            joint_embed_shape=int(config["joint_embed_shape"]),
            sample_rate=int(audio["sample_rate"]),
            clip_samples=int(audio["clip_samples"]),
            n_fft=int(audio["window_size"]),
            hop_length=int(audio["hop_size"]),
            n_mels=int(audio["mel_bins"]),
            f_min=float(audio["fmin"]),
            f_max=float(audio["fmax"]),
        )
        for key in ("num_features", "clap_embed_dim"):
            given = htsat.get(key, config.get(key))
            if given is not None and int(given) != out.num_features:
                raise ValueError(f"{key}={given} but embed_dim x 2^(stages-1) = {out.num_features}")
        return out

    def to_hf(self) -> ClapAudioConfig:
        """The equivalent transformers `ClapAudioConfig` (fusion off, no dropout)."""
        return ClapAudioConfig(
            window_size=self.window_size,
            num_mel_bins=self.n_mels,
            spec_size=self.spec_size,
            patch_size=self.patch_size,
            patch_stride=list(self.patch_stride),
            hidden_size=self.num_features,
            projection_dim=self.joint_embed_shape,
            depths=list(self.depths),
            num_attention_heads=list(self.num_heads),
            enable_fusion=False,
            patch_embeds_hidden_size=self.embed_dim,
            enable_patch_layer_norm=self.patch_norm,
            qkv_bias=self.qkv_bias,
            mlp_ratio=self.mlp_ratio,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.0,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )


PRESETS: dict[str, CLAPAudioConfig] = {
    "official": CLAPAudioConfig(),
    "tiny": CLAPAudioConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)),
}

CropMode = Literal["center", "random"]


def fit_length(
    waveform: Tensor, length: int, crop: CropMode = "center", generator: torch.Generator | None = None
) -> Tensor:
    """LAION-CLAP's "repeatpad" filling / cropping of every row to exactly `length` samples.

    Shorter rows are repeated floor(length / T) times and zero-padded; longer rows are cropped: at the
    centre (`crop="center"`, deterministic, our default) or at an offset drawn uniformly from
    [0, T - length] with `generator` (`crop="random"`, the official behaviour, one offset per row).

    Args:
        waveform: [B, T] samples, T >= 1.
        length: target number of samples.
        crop: "center" or "random".
        generator: torch.Generator for the random crop offsets (None = the global CPU RNG).
    Returns:
        [B, length] samples.
    """
    batch, total = waveform.shape
    if total == 0:
        raise ValueError("cannot fit an empty waveform")
    if total < length:
        repeated = waveform.repeat(1, length // total)  # [B,T*n]
        return F.pad(repeated, (0, length - repeated.shape[1]))  # [B,length]
    overflow = total - length
    if crop == "center":
        offsets = [overflow // 2] * batch
    elif crop == "random":
        device = generator.device if generator is not None else "cpu"
        offsets = torch.randint(0, overflow + 1, (batch,), generator=generator, device=device).tolist()
    else:
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    return torch.stack([row[o : o + length] for row, o in zip(waveform, offsets)])  # [B,length]


class CLAPEncoder(nn.Module):
    """CLAP audio branch (HTSAT) + audio_projection: a 16 kHz waveform -> one L2-normalised token."""

    def __init__(self, config: CLAPAudioConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_branch = ClapAudioModel(config.to_hf())
        self.audio_projection = nn.Sequential(
            nn.Linear(config.num_features, config.joint_embed_shape),
            nn.ReLU(),
            nn.Linear(config.joint_embed_shape, config.joint_embed_shape),
        )
        self.eval()

    def train(self, mode: bool = True) -> CLAPEncoder:
        """Frozen encoder: stays in eval mode so bn0 always uses (and never updates) its running stats."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_projection[0].weight.dtype

    @property
    def sample_rate_in(self) -> int:
        """Sample rate (Hz) `encode_audio` expects its waveform at."""
        return self.config.input_sample_rate

    def log_mel(
        self, waveform_16k: Tensor, crop: CropMode = "center", generator: torch.Generator | None = None
    ) -> Tensor:
        """The HTSAT input: resample, fit to clip_samples, log-mel (all float32).

        Args:
            waveform_16k: [B, 1, T] or [B, T] at `config.input_sample_rate`.
            crop, generator: see `fit_length`.
        Returns:
            [B, 1, frames, n_mels] float32 log-mel in dB (frames = 1 + clip_samples // hop_length).
        """
        cfg = self.config
        if waveform_16k.ndim not in (2, 3) or (waveform_16k.ndim == 3 and waveform_16k.shape[1] != 1):
            raise ValueError(f"expected a mono waveform [B,1,T] or [B,T], got {tuple(waveform_16k.shape)}")
        wave = waveform_16k.reshape(waveform_16k.shape[0], -1).float()  # [B,T]
        wave = resample(wave, cfg.input_sample_rate, cfg.sample_rate)  # [B,3T]
        wave = fit_length(wave, cfg.clip_samples, crop, generator)  # [B,clip_samples]
        mel = log_mel_spectrogram(
            wave,
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
        )  # [B,frames,n_mels]
        return mel[:, None]  # [B,1,frames,n_mels]

    def embed_log_mel(self, log_mel: Tensor) -> Tensor:
        """HTSAT pooled embedding of a log-mel: bn0, fold to the square image, Swin, norm, mean pool.

        Args:
            log_mel: [B, 1, frames, n_mels] (frames <= freq_ratio * spec_size).
        Returns:
            [B, num_features] pooled HTSAT feature in the parameter dtype.
        """
        return self.audio_branch(input_features=log_mel.to(self.dtype)).pooler_output  # [B,num_features]

    def encode_audio(
        self, waveform_16k: Tensor, crop: CropMode = "center", generator: torch.Generator | None = None
    ) -> Tensor:
        """CLAP audio embedding of a 16 kHz waveform, as CoDi's `clap_encode_audio`.

        Args:
            waveform_16k: [B, 1, T] or [B, T] at 16 kHz (any T >= 1; 10 s at 48 kHz is used).
            crop: how inputs longer than 10 s (at 48 kHz) are cut: "center" (default, deterministic) or
                "random" (the official behaviour: a uniform random offset per row, drawn from `generator`).
            generator: torch.Generator for `crop="random"`.
        Returns:
            [B, 1, joint_embed_shape] L2-normalised embedding in the parameter dtype.
        """
        features = self.embed_log_mel(self.log_mel(waveform_16k, crop, generator))  # [B,num_features]
        embedding = self.audio_projection(features)  # [B,D]
        return F.normalize(embedding, dim=-1)[:, None]  # [B,1,D]

    def unconditional(self, batch: int, num_samples: int) -> Tensor:
        """CLAP of an all-zero waveform (CoDi's negative audio condition).

        Args:
            batch: number of rows; num_samples: waveform length at 16 kHz (>= 1).
        Returns:
            [batch, 1, joint_embed_shape] L2-normalised embedding (the same for every row and length).
        """
        device = self.audio_projection[0].weight.device
        silence = torch.zeros(1, 1, num_samples, device=device)  # [1,1,T]
        return self.encode_audio(silence).repeat(batch, 1, 1)  # [batch,1,D]
