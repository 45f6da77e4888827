"""Resampling and the CLAP log-mel front end against direct formulas and the official fixture."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import parity_dir

from codi.audio_dsp import log_mel_spectrogram, power_spectrogram, resample


def _direct_resample(x: torch.Tensor, orig_sr: int, new_sr: int, zero_crossings: int = 6) -> torch.Tensor:
    """Naive float64 windowed-sinc interpolation: every output sample summed over every input sample."""
    cutoff = min(orig_sr, new_sr) * 0.99  # Hz
    out_len = math.ceil(new_sr * x.shape[-1] / orig_sr)
    t_out = torch.arange(out_len, dtype=torch.float64)[:, None] / new_sr  # [M,1] seconds
    t_in = torch.arange(x.shape[-1], dtype=torch.float64)[None, :] / orig_sr  # [1,N] seconds
    u = ((t_in - t_out) * cutoff).clamp(-zero_crossings, zero_crossings)  # [M,N] in cut-off periods
    window = torch.cos(u * math.pi / zero_crossings / 2) ** 2
    sinc = torch.special.sinc(u)  # sin(pi u) / (pi u)
    return (sinc * window * (cutoff / orig_sr)) @ x.double()  # [M]


@pytest.mark.parametrize(("orig_sr", "new_sr"), [(16000, 48000), (48000, 16000), (48000, 32000), (44100, 16000)])
def test_resample_matches_direct_sinc_interpolation(orig_sr: int, new_sr: int) -> None:
    x = torch.randn(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = resample(x, orig_sr, new_sr)
    assert ours.shape == (math.ceil(new_sr * 300 / orig_sr),)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, _direct_resample(x, orig_sr, new_sr), atol=1e-12, rtol=0)


def test_resample_shapes_dtypes_and_identity() -> None:
    x = torch.randn(2, 3, 1001, generator=torch.Generator().manual_seed(1))
    assert resample(x, 16000, 16000) is x
    y = resample(x, 22050, 16000)
    assert y.shape == (2, 3, math.ceil(16000 * 1001 / 22050)) and y.dtype == torch.float32
    torch.testing.assert_close(y[1, 2], resample(x[1, 2], 22050, 16000))  # rows are independent
    half = resample(x.half(), 16000, 48000)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), resample(x.half().float(), 16000, 48000), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16000)


def test_resample_keeps_a_tone_in_band() -> None:
    t = torch.arange(44100, dtype=torch.float64) / 44100
    y = resample(torch.sin(2 * math.pi * 440 * t), 44100, 16000)  # [16000]
    expected = torch.sin(2 * math.pi * 440 * torch.arange(16000, dtype=torch.float64) / 16000)
    assert (y - expected)[200:-200].abs().max() < 1e-3  # away from the zero-padded edges


def test_resample_matches_official_fixture() -> None:
    from safetensors import safe_open

    with safe_open(str(parity_dir() / "clap.safetensors"), framework="pt") as f:
        wave = f.get_tensor("input.waveform_16k")  # [B,1,T]
        reference = f.get_tensor("debug.resampled_48k_row0_first4800")  # [4800]
    ours = resample(wave, 16000, 48000)
    assert ours.shape == (*wave.shape[:-1], 3 * wave.shape[-1])
    assert (ours[0, 0, :4800] - reference).abs().max().item() <= 1e-6


def test_power_spectrogram_matches_torch_stft() -> None:
    x = torch.randn(2, 4800, generator=torch.Generator().manual_seed(2))
    window = torch.hann_window(1024, periodic=True, dtype=torch.float64)
    stft = torch.stft(x.double(), 1024, 480, window=window, center=True, pad_mode="reflect", return_complex=True)
    ours = power_spectrogram(x, n_fft=1024, hop_length=480)  # [B,frames,513]
    assert ours.shape == (2, 1 + 4800 // 480, 513) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), stft.abs().pow(2).transpose(1, 2), rtol=1e-4, atol=1e-3)


def test_log_mel_floor_and_shape() -> None:
    silence = log_mel_spectrogram(torch.zeros(1, 48000))
    assert silence.shape == (1, 101, 64)
    assert torch.all(silence == -100.0)  # 10*log10(amin=1e-10)
    assert log_mel_spectrogram(torch.zeros(1, 48000, dtype=torch.float16)).dtype == torch.float32


def test_log_mel_matches_official_fixture() -> None:
    from safetensors import safe_open

    with safe_open(str(parity_dir() / "clap.safetensors"), framework="pt") as f:
        wave = f.get_tensor("input.waveform_16k")[:, 0]  # [B,T]
        reference = f.get_tensor("debug.logmel_before_bn0")[:, 0]  # [B,1001,64] dB
    x = resample(wave, 16000, 48000)  # [B,3T]
    repeats = 480000 // x.shape[-1]
    x = torch.nn.functional.pad(x.repeat(1, repeats), (0, 480000 - repeats * x.shape[-1]))  # [B,480000]
    ours = log_mel_spectrogram(x)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 1e-3
