"""AudioLDM mel autoencoder + 16 kHz HiFi-GAN vocoder + TacotronSTFT-style mel front-end (official `audioldm.`).

The VAE is a diffusers `AutoencoderKL` with 1 input/output channel and 8 latent channels (as in diffusers'
own AudioLDM pipeline); its encoder mid attention always runs in float32, as the official one does. The
vocoder is transformers' `SpeechT5HifiGan` (leaky slope 0.1, no input normalisation), which computes the
official HiFi-GAN "16k_64" generator with weight norm removed. The mel front-end is only used to ENCODE
audio (training and tests); generation decodes latents -> log-mel -> waveform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
from transformers.audio_utils import mel_filter_bank

from codi.models.griffin_lim import griffin_lim, mel_to_linear
from codi.models.vae import KLAutoencoderConfig


@dataclass(frozen=True)
class MelConfig:
    """TacotronSTFT log-mel front-end of AudioLDM (16 kHz, 1024-point STFT, hop 160, 64 Slaney mels)."""

    sample_rate: int = 16000
    filter_length: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    # official target length int(time * 102.4) frames: a nominal "10 s" is 1024 frames, i.e. 10.24 s of audio
    frames_per_second: float = 102.4

    def frames(self, seconds: float) -> int:
        """Mel frames the official code uses for a duration of `seconds` (`int(seconds * 102.4)`)."""
        return int(seconds * self.frames_per_second)


@dataclass(frozen=True)
class HifiGanConfig:
    """HiFi-GAN generator with ResBlock1 (the official `HIFIGAN_16K_64`)."""

    num_mels: int = 64
    sampling_rate: int = 16000
    upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
    upsample_initial_channel: int = 1024
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> HifiGanConfig:
        """Accepts the official vocoder dict (`resblock` must be "1")."""
        if str(config.get("resblock", "1")) != "1":
            raise NotImplementedError(f"HiFi-GAN resblock type {config['resblock']!r} is not supported")
        return cls(
            num_mels=config["num_mels"],
            sampling_rate=config["sampling_rate"],
            upsample_rates=tuple(config["upsample_rates"]),
            upsample_kernel_sizes=tuple(config["upsample_kernel_sizes"]),
            upsample_initial_channel=config["upsample_initial_channel"],
            resblock_kernel_sizes=tuple(config["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(tuple(d) for d in config["resblock_dilation_sizes"]),
        )

    def output_length(self, frames: int) -> int:
        """Waveform samples for `frames` mel frames: each stage maps L to (L-1)*u - 2*((k-u)//2) + k."""
        length = frames
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            length = (length - 1) * u - 2 * ((k - u) // 2) + k
        return length

    def build(self) -> SpeechT5HifiGan:
        """Returns a randomly initialised SpeechT5HifiGan computing this generator."""
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=self.num_mels,
                sampling_rate=self.sampling_rate,
                upsample_initial_channel=self.upsample_initial_channel,
                upsample_rates=list(self.upsample_rates),
                upsample_kernel_sizes=list(self.upsample_kernel_sizes),
                resblock_kernel_sizes=list(self.resblock_kernel_sizes),
                resblock_dilation_sizes=[list(d) for d in self.resblock_dilation_sizes],
                leaky_relu_slope=0.1,
                normalize_before=False,
            )
        )
        for name in ("mean", "scale"):  # unused when normalize_before=False; not in the official checkpoint
            value = getattr(vocoder, name)
            delattr(vocoder, name)
            vocoder.register_buffer(name, value, persistent=False)
        return vocoder


@dataclass(frozen=True)
class AudioVAEConfig:
    """AudioLDM mel VAE, vocoder, mel front-end and latent scale (`configs/model/audioldm.yaml`)."""

    autoencoder: KLAutoencoderConfig = KLAutoencoderConfig(
        in_channels=1, out_channels=1, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, embed_dim=8
    )
    vocoder: HifiGanConfig = HifiGanConfig()
    mel: MelConfig = MelConfig()
    scale_factor: float = 0.9228
    waveform_decoder: str = "hifigan"  # log-mel -> wave: "hifigan" (the vocoder) or "griffin_lim" (no weights)
    griffin_lim_iters: int = 32

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AudioVAEConfig:
        """Accepts the official/fixture dict `{"embed_dim", "ddconfig", "vocoder"[, "mel", "scale_factor"]}`."""
        vocoder = HifiGanConfig.from_dict(config["vocoder"]) if "vocoder" in config else HifiGanConfig()
        mel = MelConfig(**config["mel"]) if "mel" in config else MelConfig(n_mels=vocoder.num_mels)
        return cls(
            autoencoder=KLAutoencoderConfig.from_ldm(config["embed_dim"], config["ddconfig"]),
            vocoder=vocoder,
            mel=mel,
            scale_factor=float(config.get("scale_factor", cls.scale_factor)),
        )

    @classmethod
    def official(cls) -> AudioVAEConfig:
        """The full-size AudioLDM VAE + HIFIGAN_16K_64 of CoDi."""
        return cls()


def normalize_waveform(wave: Tensor) -> Tensor:
    """AudioLDM waveform normalisation: remove the mean, scale the peak to 0.5 (per row of [B,T])."""
    wave = wave - wave.mean(dim=-1, keepdim=True)  # [B,T]
    return 0.5 * wave / (wave.abs().amax(dim=-1, keepdim=True) + 1e-8)  # [B,T]


class MelFrontend(nn.Module):
    """TacotronSTFT log-mel: |STFT| (Hann, reflect-padded centre frames) -> Slaney mel -> log(clamp(., 1e-5))."""

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        basis = mel_filter_bank(c.filter_length // 2 + 1, c.n_mels, c.fmin, c.fmax, c.sample_rate, "slaney", "slaney")
        mel_basis = torch.from_numpy(basis.T).to(torch.float32)  # [n_mels, n_fft/2+1], float64 -> float32
        self.register_buffer("mel_basis", mel_basis, persistent=False)
        self.register_buffer("window", torch.hann_window(c.win_length, dtype=torch.float32), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        """Log-mel of a waveform, computed in float32 (the official fp32 island).

        Args:
            wave: [B,T] waveform in [-1, 1] (clipped), T > filter_length / 2.
        Returns:
            [B,1,T//hop+1,n_mels] log-mel in float32.
        """
        c = self.config
        x = wave.float().clamp(-1.0, 1.0)  # [B,T]
        spec = torch.stft(
            x,
            c.filter_length,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window.float(),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [B,n_fft/2+1,frames]
        mel = self.mel_basis.float() @ spec.abs()  # [B,n_mels,frames]
        return torch.log(mel.clamp(min=1e-5)).transpose(1, 2)[:, None]  # [B,1,frames,n_mels]


class Float32AttnProcessor:
    """diffusers attention processor that runs a VAE mid-block attention in float32 whatever the model dtype."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
    ) -> Tensor:
        """Self-attention with residual: [B,C,H,W] -> [B,C,H,W] in the input dtype, computed in float32."""
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None:
            raise NotImplementedError("Float32AttnProcessor only handles plain VAE self-attention")
        dtype = hidden_states.dtype
        b, c, h, w = hidden_states.shape
        x = hidden_states.float()  # [B,C,H,W]
        norm = attn.group_norm
        y = F.group_norm(x, norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps)  # [B,C,H,W]
        y = y.flatten(2).transpose(1, 2)  # [B,HW,C]
        q, k, v = (
            _linear_fp32(proj, y).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )  # [B,heads,HW,C/heads] each
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B,heads,HW,C/heads]
        out = _linear_fp32(attn.to_out[0], out.transpose(1, 2).flatten(2))  # [B,HW,C]
        out = out.transpose(1, 2).reshape(b, c, h, w)  # [B,C,H,W]
        return ((out + x) / attn.rescale_output_factor).to(dtype)  # [B,C,H,W]


def _linear_fp32(layer: nn.Linear, x: Tensor) -> Tensor:
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x, layer.weight.float(), bias)


class AudioVAE(nn.Module):
    """AudioLDM latent autoencoder: 16 kHz waveform <-> log-mel <-> diffusion-scale latent [B,8,T/4,16]."""

    def __init__(self, config: AudioVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or AudioVAEConfig.official()
        self.vae = self.config.autoencoder.build()
        self.vae.encoder.mid_block.attentions[0].set_processor(Float32AttnProcessor())
        self.vocoder = self.config.vocoder.build()
        self.mel_frontend = MelFrontend(self.config.mel)
        self.scale_factor: float = self.config.scale_factor
        self.waveform_decoder: str = self.config.waveform_decoder
        self.sample_rate: int = self.config.mel.sample_rate
        self.hop_length: int = self.config.mel.hop_length
        self.latent_channels: int = self.config.autoencoder.embed_dim
        self.downsample: int = self.config.autoencoder.downsample

    def latent_shape(self, seconds: float) -> tuple[int, int, int]:
        """(C, frames/d, n_mels/d) for the official duration rounding: 10 -> 1024 frames -> (8, 256, 16)."""
        frames = self.config.mel.frames(seconds)
        return (self.latent_channels, frames // self.downsample, self.config.mel.n_mels // self.downsample)

    def mel(self, wave: Tensor, frames: int | None = None, normalize: bool = True) -> Tensor:
        """The official encoding front-end.

        Args:
            wave: [B,T] 16 kHz waveform.
            frames: mel frames to return; the waveform is zero-padded or cut to frames*hop samples first
                (default T // hop).
            normalize: remove the mean and scale the peak to 0.5 first, as the official loader does.
        Returns:
            [B,1,frames,n_mels] float32 log-mel.
        """
        if normalize:
            wave = normalize_waveform(wave)  # [B,T]
        frames = wave.shape[-1] // self.hop_length if frames is None else frames
        samples = frames * self.hop_length
        wave = F.pad(wave, (0, max(0, samples - wave.shape[-1])))[..., :samples]  # [B,frames*hop]
        return self.mel_frontend(wave)[:, :, :frames]  # [B,1,frames,n_mels]

    def moments(self, mel: Tensor) -> Tensor:
        """quant_conv(encoder(mel)): [B,1,T,M] -> [B,2C,T/d,M/d] (channels 0..C-1 mean, C..2C-1 logvar)."""
        return self.vae.quant_conv(self.vae.encoder(mel))

    def encode_mel(self, mel: Tensor, generator: torch.Generator | None = None, sample: bool = False) -> Tensor:
        """Log-mel [B,1,T,M] -> diffusion-scale latent [B,C,T/d,M/d] (posterior mean unless `sample`)."""
        mean, logvar = self.moments(mel.to(self.vae.dtype)).chunk(2, dim=1)  # [B,C,T/d,M/d] each
        z = mean
        if sample:
            noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
        return z * self.scale_factor

    def encode_waveform(
        self,
        wave: Tensor,
        frames: int | None = None,
        generator: torch.Generator | None = None,
        sample: bool = False,
    ) -> Tensor:
        """16 kHz waveform [B,T] -> diffusion-scale latent [B,C,frames/d,n_mels/d] (frames default T//hop)."""
        return self.encode_mel(self.mel(wave, frames), generator=generator, sample=sample)

    def decode_mel(self, z: Tensor) -> Tensor:
        """`CoDi.audioldm_decode`: diffusion-scale latent [B,C,t,m] -> log-mel [B,1,t*d,m*d].

        If max|z| > 100 the WHOLE latent is first clipped to [-10, 10] (official guard).
        """
        z = torch.where(z.abs().amax() > 100, z.clamp(-10.0, 10.0), z)  # [B,C,t,m]
        return self.vae.decoder(self.vae.post_quant_conv(z / self.scale_factor))  # [B,1,T,M]

    def mel_to_waveform(self, mel: Tensor) -> Tensor:
        """`CoDi.mel_spectrogram_to_waveform`: log-mel [B,1,T,M] -> float waveform [B,1,L] in [-1, 1].

        L = vocoder.output_length(T), slightly more than T * hop (163872 for 1024 frames). With
        `waveform_decoder="griffin_lim"` (a config field, also settable on the instance) the HiFi-GAN is bypassed
        for mel inversion + fast Griffin-Lim (`griffin_lim.py` says why the tiny model needs it).
        """
        if self.waveform_decoder == "hifigan":
            return self.vocoder(mel[:, 0])[:, None]  # [B,T,M] -> [B,L] -> [B,1,L]
        if self.waveform_decoder != "griffin_lim":
            raise ValueError(f"unknown waveform_decoder {self.waveform_decoder!r}: 'hifigan' or 'griffin_lim'")
        c = self.config.mel
        magnitude = mel_to_linear(mel[:, 0].float().exp().transpose(1, 2), self.mel_frontend.mel_basis)  # [B,K,T]
        wave = griffin_lim(
            magnitude,
            n_fft=c.filter_length,
            hop_length=c.hop_length,
            window=self.mel_frontend.window,
            length=self.config.vocoder.output_length(mel.shape[2]),
            iters=self.config.griffin_lim_iters,
        )  # [B,L]
        return wave.clamp(-1.0, 1.0).to(mel.dtype)[:, None]  # [B,1,L]

    def decode(self, z: Tensor) -> Tensor:
        """Diffusion-scale latent [B,C,t,m] -> 16 kHz float waveform [B,1,L]."""
        return self.mel_to_waveform(self.decode_mel(z))

    def waveform_length(self, latent_frames: int) -> int:
        """Samples `decode` returns for a latent with `latent_frames` time steps."""
        return self.config.vocoder.output_length(latent_frames * self.downsample)


__all__ = [
    "AudioVAE",
    "AudioVAEConfig",
    "Float32AttnProcessor",
    "HifiGanConfig",
    "MelConfig",
    "MelFrontend",
    "normalize_waveform",
]
