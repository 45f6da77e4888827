"""Audio signal processing without torchaudio: band-limited resampling and the CLAP log-mel front end.

`resample` reproduces the default `torchaudio.functional.resample` (windowed-sinc interpolation with a
Hann window, 6 zero crossings, roll-off 0.99, polyphase filtering after reducing both rates by their
gcd). torchaudio's polyphase kernel has one filter per reduced output phase, so it grows with the
product of the reduced rates (44101 -> 16000 Hz: 706M coefficients, ~15 GB to build); past
`EXACT_KERNEL_MAX_TAPS` the same windowed-sinc sum is evaluated per output sample in bounded chunks.
`log_mel_spectrogram` reproduces the torchlibrosa `Spectrogram` + `LogmelFilterBank` pair used by
LAION-CLAP's HTSAT (a real DFT applied as a strided convolution, librosa's Slaney mel filters, dB).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from transformers.audio_utils import mel_filter_bank

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)

# torchaudio's polyphase path is used while its kernel has at most this many coefficients (4 MiB in
# float32). Every pair of common rates (8 to 384 kHz to 16 or 48 kHz) needs at most 291,200 (11025 -> 16000).
EXACT_KERNEL_MAX_TAPS = 1 << 20
# The per-sample path gathers at most this many (row, output, tap) elements at a time (4 MiB in float32).
DIRECT_CHUNK_ELEMENTS = 1 << 20


def _sinc_resample_kernel(
    orig: int, new: int, *, zero_crossings: int, rolloff: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, int]:
    """Polyphase windowed-sinc filters for resampling by new/orig (both already divided by their gcd).

    Returns:
        kernels [new, 1, 2 * pad + orig] (one filter per output phase) and `pad`, the number of input
        samples the filters reach before (and after) the current input position.
    """
    cutoff = min(orig, new) * rolloff  # low-pass cut-off, in units of the reduced rates
    pad = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-pad, pad + orig, dtype=dtype, device=device)[None, None] / orig  # [1,1,K] input times
    phases = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new  # [new,1,1] output times
    t = (phases + taps) * cutoff  # [new,1,K] distance in units of the cut-off period
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2  # [new,1,K] Hann window over +-zero_crossings
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), t.sin() / t)  # [new,1,K]
    return sinc * (window * (cutoff / orig)), pad


def resample(waveform: Tensor, orig_sr: int, new_sr: int, *, zero_crossings: int = 6, rolloff: float = 0.99) -> Tensor:
    """Band-limited resampling along the last axis, numerically equal to torchaudio's default resample.

    Rate pairs whose polyphase kernel has at most EXACT_KERNEL_MAX_TAPS coefficients (all common rates)
    run torchaudio's algorithm; others (e.g. 8001 -> 16000 Hz) evaluate the same sum per output sample,
    equal to it up to rounding, in memory that does not depend on the rates.

    Args:
        waveform: [..., T] samples at `orig_sr`. float32/float64 are processed in their own dtype (as
            torchaudio does); float16/bfloat16 are processed in float32 and cast back.
        orig_sr: input sample rate in Hz (integer).
        new_sr: output sample rate in Hz (integer).
        zero_crossings: sinc lobes on each side of the filter centre (torchaudio's lowpass_filter_width).
        rolloff: fraction of the lower Nyquist rate kept by the anti-aliasing low-pass.
    Returns:
        [..., ceil(new_sr * T / orig_sr)] samples at `new_sr`, same dtype as `waveform`.
    """
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return waveform
    gcd = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // gcd, new_sr // gcd
    work = torch.float32 if waveform.dtype in _REDUCED_PRECISION else waveform.dtype
    lead, length = waveform.shape[:-1], waveform.shape[-1]
    x = waveform.reshape(-1, length).to(work)  # [N,T]
    out_length = -(-new * length // orig)  # ceil(new * T / orig)
    if exact_kernel_taps(orig_sr, new_sr, zero_crossings=zero_crossings, rolloff=rolloff) <= EXACT_KERNEL_MAX_TAPS:
        kernel, pad = _sinc_resample_kernel(
            orig, new, zero_crossings=zero_crossings, rolloff=rolloff, dtype=work, device=waveform.device
        )
        xp = F.pad(x[:, None], (pad, pad + orig))  # [N,1,T+2*pad+orig]
        y = F.conv1d(xp, kernel, stride=orig)  # [N,new,T//orig+1]: output phase p of input block j
        y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, :out_length]  # [N,T'] interleaved phases
    else:
        y = _resample_per_sample(x, orig, new, out_length, zero_crossings=zero_crossings, rolloff=rolloff)
    return y.reshape(*lead, out_length).to(waveform.dtype)  # [...,T']


def exact_kernel_taps(orig_sr: int, new_sr: int, *, zero_crossings: int = 6, rolloff: float = 0.99) -> int:
    """Coefficients in torchaudio's polyphase kernel for orig_sr -> new_sr: new * (2 * pad + orig), reduced rates."""
    gcd = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // gcd, new_sr // gcd
    pad = math.ceil(zero_crossings * orig / (min(orig, new) * rolloff))
    return new * (2 * pad + orig)


def _resample_per_sample(
    x: Tensor, orig: int, new: int, out_length: int, *, zero_crossings: int, rolloff: float
) -> Tensor:
    """The same windowed-sinc sum as `_sinc_resample_kernel`, with weights built per output sample.

    Output m sits at input position m * orig / new; it sums the inputs within `reach` samples, weighted by
    the Hann-windowed sinc of their distance. Weights are computed in float64 (float32 on MPS) for at most
    DIRECT_CHUNK_ELEMENTS (row, output, tap) elements at a time, so memory does not depend on the rates.

    Args:
        x: [N, T] samples (float32 or float64). orig, new: the rates divided by their gcd.
        out_length: outputs to produce (ceil(new * T / orig)).
    Returns:
        [N, out_length] in x's dtype.
    """
    scale = min(orig, new) * rolloff / orig  # cut-off periods per input sample (= cutoff / orig in Hz)
    reach = math.ceil(zero_crossings / scale)  # input samples the filter reaches on each side
    taps = torch.arange(2 * reach + 2, device=x.device)  # [K] offsets into the padded input
    xp = F.pad(x, (reach, reach + 2))  # [N,T+K]: padded index p is input sample p - reach
    out = x.new_empty(x.shape[0], out_length)  # [N,T']
    exact = torch.float32 if x.device.type == "mps" else torch.float64  # weights' dtype (MPS has no float64)
    step = max(1, DIRECT_CHUNK_ELEMENTS // (max(1, x.shape[0]) * len(taps)))
    for start in range(0, out_length, step):
        m = torch.arange(start, min(start + step, out_length), dtype=torch.int64, device=x.device)  # [M]
        base = m * orig // new  # [M] last input sample at or before output m
        frac = (m * orig - base * new).to(exact) / new  # [M] in [0, 1): output m's offset past `base`
        u = ((taps - reach).to(exact)[None] - frac[:, None]) * scale  # [M,K] distance in cut-off periods
        u = u.clamp(-zero_crossings, zero_crossings)
        window = torch.cos(u * (math.pi / zero_crossings / 2)) ** 2  # [M,K] Hann over +-zero_crossings
        weights = torch.special.sinc(u) * window * scale  # [M,K] sin(pi u) / (pi u) * window * cutoff / orig
        neighbours = xp[:, base[:, None] + taps[None]]  # [N,M,K]
        out[:, start : start + len(m)] = (neighbours * weights.to(x.dtype)).sum(-1)  # [N,M]
    return out


@lru_cache(maxsize=8)
def _stft_basis(n_fft: int) -> Tensor:
    """Periodic-Hann-windowed real DFT basis as conv1d weights [2 * (n_fft//2 + 1), 1, n_fft] float32 (cos; -sin)."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)
    angle = 2 * np.pi * ((k[:, None] * n[None, :]) % n_fft) / n_fft  # [K,N], reduced mod n_fft for accuracy
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann (librosa fftbins=True)
    basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])  # [2K,N] float64
    return torch.from_numpy(basis.astype(np.float32))[:, None, :]


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """librosa's default (Slaney-scale, Slaney-normalised) mel filters as float32 [n_fft//2 + 1, n_mels]."""
    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank.astype(np.float32))


def power_spectrogram(waveform: Tensor, *, n_fft: int = 1024, hop_length: int = 480) -> Tensor:
    """Centred (reflect-padded) periodic-Hann STFT power |X|^2, computed in float32 like torchlibrosa.

    Args:
        waveform: [B, T] samples (T > n_fft // 2).
        n_fft: DFT size (= window length).
        hop_length: frame step in samples.
    Returns:
        [B, 1 + T // hop_length, n_fft // 2 + 1] float32 power spectrogram.
    """
    basis = _stft_basis(n_fft).to(waveform.device)  # [2K,1,N]
    x = waveform.float()[:, None, :]  # [B,1,T]
    x = F.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")  # [B,1,T+N]
    spec = F.conv1d(x, basis, stride=hop_length)  # [B,2K,frames]
    real, imag = spec.chunk(2, dim=1)  # [B,K,frames] each
    return (real**2 + imag**2).transpose(1, 2)  # [B,frames,K]


def log_mel_spectrogram(
    waveform: Tensor,
    *,
    sample_rate: int = 48000,
    n_fft: int = 1024,
    hop_length: int = 480,
    n_mels: int = 64,
    f_min: float = 50.0,
    f_max: float = 14000.0,
    amin: float = 1e-10,
    ref: float = 1.0,
) -> Tensor:
    """Log-mel spectrogram in dB as LAION-CLAP's HTSAT computes it (torchlibrosa, top_db off), in float32.

    Args:
        waveform: [B, T] samples at `sample_rate` (any float dtype; the computation runs in float32).
        sample_rate: sample rate in Hz the mel filters are built for.
        n_fft: DFT size; hop_length: frame step in samples.
        n_mels, f_min, f_max: librosa Slaney mel filter bank parameters.
        amin: floor of the mel power before the log; ref: reference power (0 dB).
    Returns:
        [B, 1 + T // hop_length, n_mels] float32 values 10*log10(max(mel, amin)) - 10*log10(max(amin, ref)).
    """
    power = power_spectrogram(waveform, n_fft=n_fft, hop_length=hop_length)  # [B,frames,K]
    mel_basis = _mel_basis(int(sample_rate), int(n_fft), int(n_mels), float(f_min), float(f_max))
    mel = power @ mel_basis.to(power.device)  # [B,frames,n_mels]
    return 10.0 * torch.log10(mel.clamp(min=amin)) - 10.0 * math.log10(max(amin, ref))  # [B,frames,n_mels]
