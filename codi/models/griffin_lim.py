"""Log-mel -> waveform without a neural vocoder: non-negative mel inversion + fast Griffin-Lim.

The tiny model uses this by default. A HiFi-GAN generator is exactly equivariant to a shift of one mel frame
(stride-product upsampling, stride-1 convolutions, pointwise activations), so for a steady tone, whose mel frames
are all equal, it can only emit a waveform that repeats every hop (multiples of 100 Hz at hop 160 / 16 kHz):
the Shapes & Tones world's pitches, glides and harmonics are out of its reach. Phase retrieval has no such limit.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mel_to_linear(mel: Tensor, mel_basis: Tensor, iters: int = 200) -> Tensor:
    """Non-negative least-squares inversion of a mel filter bank (multiplicative updates).

    Args:
        mel: [B,M,T] mel magnitudes (not log).
        mel_basis: [M,K] filter bank (K = n_fft // 2 + 1).
        iters: multiplicative-update iterations.
    Returns:
        [B,K,T] non-negative linear magnitudes S with mel_basis @ S ~= mel.
    """
    basis = mel_basis.float()
    target = basis.T @ mel.float()  # [B,K,T]
    spec = target.clamp(min=1e-6)  # [B,K,T]
    for _ in range(iters):
        spec = (spec * target / (basis.T @ (basis @ spec) + 1e-9)).clamp(min=1e-12)  # [B,K,T], no subnormals
    return spec


def griffin_lim(
    magnitude: Tensor,
    *,
    n_fft: int,
    hop_length: int,
    window: Tensor,
    length: int,
    iters: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
) -> Tensor:
    """Fast Griffin-Lim (Perraudin et al., 2013) from a deterministic pseudo-random start phase.

    Args:
        magnitude: [B,K,T] target |STFT| (centred frames, K = n_fft // 2 + 1).
        n_fft, hop_length: STFT size and hop; `window` [win_length <= n_fft] its window.
        length: samples to return.
        iters: projection iterations; momentum: the acceleration (0 = classic Griffin-Lim).
        seed: seed of the start phase (fixed, so a mel always gives the same waveform).
    Returns:
        [B,length] float32 waveform.
    """
    mag = magnitude.float()  # [B,K,T]
    frames = mag.shape[-1]
    start = torch.rand(mag.shape, generator=torch.Generator().manual_seed(seed)).to(mag.device)  # [B,K,T]
    spec = mag * torch.polar(torch.ones_like(start), 2 * torch.pi * start)  # [B,K,T] complex
    window, win = window.float().to(mag.device), window.numel()

    def project(x: Tensor) -> Tensor:  # nearest consistent spectrogram, then the target magnitude
        wave = torch.istft(x, n_fft, hop_length, win, window, length=frames * hop_length)  # [B,T*hop]
        y = torch.stft(wave, n_fft, hop_length, win, window, return_complex=True)[..., :frames]  # [B,K,T]
        return mag * y / y.abs().clamp(min=1e-8)

    prev = spec
    for _ in range(iters):
        cur = project(spec)
        spec = cur + momentum * (cur - prev)
        prev = cur
    return torch.istft(prev, n_fft, hop_length, win, window, length=length)  # [B,length]


__all__ = ["griffin_lim", "mel_to_linear"]
