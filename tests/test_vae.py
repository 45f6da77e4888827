"""Latent autoencoders: SD kl-f8 image VAE, AudioLDM mel VAE + HiFi-GAN + mel front-end, and their key tables."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import parity_dir
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.upsampling import Upsample2D

from codi.keymaps.vae import AUDIOLDM_RULES, AUTOKL_RULES
from codi.loading import ComponentMap, convert_official_state_dict
from codi.models import unet_blocks, vae
from codi.models.audio_vae import AudioVAE, AudioVAEConfig, MelConfig, MelFrontend, normalize_waveform
from codi.models.griffin_lim import mel_to_linear
from codi.models.vae import ImageVAE, ImageVAEConfig, ParityUpsample2D, to_uint8
from codi.world import Scene, read_audio, render_audio

TINY_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
TINY_AUDIO = {
    "embed_dim": 8,
    "ddconfig": {**TINY_DDCONFIG, "z_channels": 8, "in_channels": 1, "out_ch": 1, "ch_mult": [1, 2, 2]},
    "vocoder": {
        "resblock": "1",
        "upsample_rates": [5, 4, 2, 2, 2],
        "upsample_kernel_sizes": [16, 16, 8, 4, 4],
        "upsample_initial_channel": 32,
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "num_mels": 64,
        "sampling_rate": 16000,
    },
}


def tiny_image_vae() -> ImageVAE:
    torch.manual_seed(0)
    return ImageVAE(ImageVAEConfig.from_dict({"embed_dim": 4, "ddconfig": TINY_DDCONFIG})).eval()


def tiny_audio_vae() -> AudioVAE:
    torch.manual_seed(0)
    return AudioVAE(AudioVAEConfig.from_dict(TINY_AUDIO)).eval()


# ---------------------------------------------------------------- full-size key coverage


def official_rows(prefix: str) -> dict[str, torch.Tensor]:
    """The tsv rows under `prefix` as meta tensors of the listed shapes."""
    rows = {}
    for line in (parity_dir() / "official_state_dict_keys.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        if key.startswith(prefix):
            rows[key] = torch.empty(json.loads(shape), device="meta")
    return rows


@pytest.mark.parametrize(
    ("prefix", "rules", "build", "count"),
    [
        ("autokl.", AUTOKL_RULES, lambda: ImageVAE(ImageVAEConfig.official()), 248),
        ("audioldm.", AUDIOLDM_RULES, lambda: AudioVAE(AudioVAEConfig.official()), 401),
    ],
)
def test_full_size_official_keys_land_on_our_tensors(prefix, rules, build, count) -> None:
    official = official_rows(prefix)
    assert len(official) == count
    with torch.device("meta"):
        module = build()
    ours = convert_official_state_dict(official, [ComponentMap(prefix, "", rules)])
    expected = module.state_dict()
    assert set(ours) == set(expected)  # every key landed, nothing of ours is left unloaded
    assert all(tuple(ours[k].shape) == tuple(expected[k].shape) for k in ours)
    if prefix == "audioldm.":  # only the three TacotronSTFT buffers are dropped
        stft = {k: v for k, v in official.items() if k.startswith("audioldm.fn_STFT.")}
        assert len(stft) == 3 and len(official) - len(ours) == 3
        assert convert_official_state_dict(stft, [ComponentMap(prefix, "", rules)]) == {}


def test_official_geometry() -> None:
    with torch.device("meta"):
        image, audio = ImageVAE(), AudioVAE()
    assert (image.scale_factor, image.downsample, image.latent_channels) == (0.18215, 8, 4)
    assert image.latent_shape(256, 256) == (4, 32, 32)
    assert image.latent_shape(256, 256, frames=8) == (4, 8, 32, 32)
    assert (audio.scale_factor, audio.sample_rate, audio.latent_channels) == (0.9228, 16000, 8)
    assert audio.latent_shape(10) == (8, 256, 16)  # nominal "10 s" = 1024 frames = 10.24 s of audio
    assert audio.waveform_length(256) == 163872  # 1024 mel frames -> slightly more than 1024 * 160


def test_unsupported_ldm_options_are_refused() -> None:
    for bad in ({"attn_resolutions": [16]}, {"double_z": False}, {"z_channels": 8}):
        with pytest.raises(NotImplementedError):
            ImageVAEConfig.from_dict({"embed_dim": 4, "ddconfig": {**TINY_DDCONFIG, **bad}})


# ---------------------------------------------------------------- image VAE


@torch.no_grad()
def test_image_vae_scaling_and_per_frame_video() -> None:
    vae = tiny_image_vae()
    gen = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 3, 3, 16, 24, generator=gen) * 2 - 1  # [B,3,F,H,W]
    z = vae.encode(frames)  # [B,4,F,8,12]
    assert z.shape == (2, 4, 3, 8, 12)
    mean, logvar, moments = vae.posterior(frames[:, :, 1])
    torch.testing.assert_close(z[:, :, 1], mean * 0.18215, rtol=0, atol=1e-6)
    torch.testing.assert_close(moments, torch.cat([mean, logvar], 1))
    video = vae.decode(z)  # [B,3,F,16,24]
    assert video.shape == frames.shape
    torch.testing.assert_close(video[:, :, 2], vae.decode_unscaled(z[:, :, 2] / 0.18215), rtol=0, atol=1e-5)


@torch.no_grad()
def test_image_vae_sampling_uses_only_the_generator() -> None:
    vae = tiny_image_vae()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    a = vae.encode(x, generator=torch.Generator().manual_seed(3), sample=True)
    b = vae.encode(x, generator=torch.Generator().manual_seed(3), sample=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, vae.encode(x))


def test_decoder_upsamplers_compute_by_parity_with_the_same_keys_and_pixels(monkeypatch) -> None:
    """The decoder's nearest + 3x3 upsamplers are ParityUpsample2D, holding diffusers' keys; the same pixels
    whichever path runs."""
    model = tiny_image_vae()
    ups = [up for block in model.vae.decoder.up_blocks for up in (block.upsamplers or ())]
    assert len(ups) == len(TINY_DDCONFIG["ch_mult"]) - 1
    for up in ups:
        assert type(up) is ParityUpsample2D
        assert up.state_dict().keys() == Upsample2D(up.channels, use_conv=True).state_dict().keys()
    z = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(0))
    calls = []
    monkeypatch.setattr(unet_blocks, "UPSAMPLE_CONV_MIN_MACS", 0)
    monkeypatch.setattr(vae, "upsample_conv", lambda *a: calls.append(1) or unet_blocks.upsample_conv(*a))
    with torch.no_grad():
        by_parity = model.decode(z)
        assert len(calls) == len(ups)
        monkeypatch.setattr(vae, "use_upsample_conv", lambda *a: False)
        plain = model.decode(z)
    assert len(calls) == len(ups)
    torch.testing.assert_close(by_parity, plain, rtol=1e-5, atol=1e-5)


def test_to_uint8_truncates_and_moves_channels_last() -> None:
    levels = torch.tensor([-2.0, -1.0, 127.9 / 127.5 - 1, 0.0, 1.0, 3.0])  # -> 0, 0, 127, 127, 255, 255
    image = levels.view(1, 1, 1, 6).expand(2, 3, 4, 6)
    out = to_uint8(image)
    assert out.dtype == torch.uint8 and out.shape == (2, 4, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 127, 127, 255, 255]
    assert to_uint8(torch.zeros(1, 3, 5, 4, 6)).shape == (1, 5, 4, 6, 3)


# ---------------------------------------------------------------- audio VAE, vocoder, front-end


def librosa_slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """An independent float64 re-statement of librosa.filters.mel(htk=False, norm="slaney")."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    ramps = mel_f[:, None] - fft_freqs[None]
    fdiff = np.diff(mel_f)
    lower, upper = -ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]
    return np.maximum(0, np.minimum(lower, upper)) * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def tacotron_forward_basis(filter_length: int) -> torch.Tensor:
    """The official `fn_STFT.stft_fn.forward_basis` [2*(n/2+1), 1, n]: periodic-Hann-windowed DFT rows."""
    fourier = np.fft.fft(np.eye(filter_length))
    cutoff = filter_length // 2 + 1
    basis = np.vstack([np.real(fourier[:cutoff]), np.imag(fourier[:cutoff])])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(filter_length) / filter_length)
    return torch.from_numpy(basis * window)[:, None].float()


def test_dropped_stft_buffers_equal_what_the_front_end_computes() -> None:
    cfg = MelConfig()
    front = MelFrontend(cfg)
    expected = librosa_slaney_mel(cfg.sample_rate, cfg.filter_length, cfg.n_mels, cfg.fmin, cfg.fmax)
    assert front.mel_basis.shape == (64, 513)  # official fn_STFT.mel_basis [64, 513]
    np.testing.assert_allclose(front.mel_basis.double().numpy(), expected, rtol=1e-6, atol=1e-9)

    basis = tacotron_forward_basis(cfg.filter_length)  # official fn_STFT.stft_fn.forward_basis [1026, 1, 1024]
    assert basis.shape == (1026, 1, 1024)
    wave = normalize_waveform(torch.randn(2, 4000, generator=torch.Generator().manual_seed(4)))
    padded = F.pad(wave[:, None, None], (512, 512, 0, 0), mode="reflect")[:, 0]  # [B,1,T+1024]
    spec = F.conv1d(padded, basis, stride=cfg.hop_length)  # [B,1026,frames]
    magnitude = torch.sqrt(spec[:, :513] ** 2 + spec[:, 513:] ** 2)
    official = torch.log(torch.clamp(front.mel_basis @ magnitude, min=1e-5)).transpose(1, 2)[:, None]
    ours = front(wave)  # [B,1,frames,64]
    assert ours.shape == official.shape == (2, 1, 4000 // 160 + 1, 64)
    torch.testing.assert_close(ours, official, rtol=0, atol=2e-4)


def test_waveform_normalisation_and_frame_count() -> None:
    vae = tiny_audio_vae()
    wave = torch.randn(2, 5000, generator=torch.Generator().manual_seed(5)) * 3 + 1
    norm = normalize_waveform(wave)
    torch.testing.assert_close(norm.mean(-1), torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(norm.abs().amax(-1), torch.full((2,), 0.5))
    assert vae.mel(wave).shape == (2, 1, 5000 // 160, 64)
    mel = vae.mel(wave, frames=40)  # zero-padded waveform: 40 frames
    assert mel.shape == (2, 1, 40, 64) and mel.dtype == torch.float32
    # frames whose window ends before sample 4960 (= 31 * 160, the default cut) do not see the padding
    torch.testing.assert_close(mel[:, :, :28], vae.mel(wave)[:, :, :28], rtol=0, atol=1e-5)


@torch.no_grad()
def test_audio_vae_round_trip_shapes() -> None:
    vae = tiny_audio_vae()
    wave = torch.randn(2, 32 * 160, generator=torch.Generator().manual_seed(6)).clamp(-1, 1)
    z = vae.encode_waveform(wave)  # [B,8,8,16]
    assert z.shape == (2, 8, 8, 16)
    mean = vae.moments(vae.mel(wave))[:, :8]
    torch.testing.assert_close(z, mean * 0.9228, rtol=0, atol=1e-6)
    mel = vae.decode_mel(z)
    assert mel.shape == (2, 1, 32, 64)
    audio = vae.decode(z)
    assert audio.shape == (2, 1, vae.waveform_length(8)) == (2, 1, 5152)
    assert audio.abs().max() <= 1.0


@torch.no_grad()
def test_decode_clips_the_whole_latent_only_beyond_100() -> None:
    vae = tiny_audio_vae()
    z = torch.randn(2, 8, 4, 16, generator=torch.Generator().manual_seed(7)) * 20
    unclipped = vae.vae.decoder(vae.vae.post_quant_conv(z / 0.9228))
    torch.testing.assert_close(vae.decode_mel(z), unclipped)  # max|z| < 100: untouched
    z[1, 0, 0, 0] = 150.0  # one big value clips every sample of the batch
    torch.testing.assert_close(vae.decode_mel(z), vae.decode_mel(z.clamp(-10, 10)))


@torch.no_grad()
def test_encoder_mid_attention_runs_in_float32() -> None:
    attn = tiny_audio_vae().vae.encoder.mid_block.attentions[0]
    x = torch.randn(2, 64, 4, 8, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(attn(x), AttnProcessor2_0()(attn, x), rtol=0, atol=1e-5)
    half = copy.deepcopy(attn).to(torch.bfloat16)
    out = half(x.bfloat16())
    assert out.dtype == torch.bfloat16
    reference = AttnProcessor2_0()(copy.deepcopy(half).float(), x.bfloat16().float())  # fp32 math on bf16 values
    torch.testing.assert_close(out, reference.bfloat16(), rtol=0, atol=0)


# ---------------------------------------------------------------- log-mel -> waveform


@torch.no_grad()
def test_hifigan_repeats_every_hop_when_the_mel_is_steady() -> None:
    """Why the tiny model defaults to Griffin-Lim: equal mel frames give a waveform periodic in the hop."""
    vae = tiny_audio_vae()
    frame = torch.randn(64, generator=torch.Generator().manual_seed(9))
    wave = vae.mel_to_waveform(frame.expand(1, 1, 60, 64).contiguous())[0, 0]  # [L]
    middle = wave[20 * 160 : 40 * 160].unflatten(0, (20, 160))  # [20 frames, hop]
    assert middle[0].std() > 1e-4 * middle.abs().max() > 0  # a waveform, not a constant
    assert (middle - middle[:1]).abs().max() <= 1e-4 * middle.abs().max()  # the same hop, frame after frame


def test_mel_inversion_is_non_negative_and_matches_the_mel() -> None:
    front = MelFrontend(MelConfig())
    wave = torch.from_numpy(render_audio(Scene("green", "triangle", "up", 10, 32.0, 32.0)))[None]  # [1,16000]
    mel = front(wave)[:, 0].exp().transpose(1, 2)  # [1,64,T]
    spec = mel_to_linear(mel, front.mel_basis)  # [1,513,T]
    assert spec.shape == (1, 513, mel.shape[-1]) and (spec >= 0).all()
    rel = (front.mel_basis @ spec - mel).norm() / mel.norm()
    assert rel < 0.02


@torch.no_grad()
@pytest.mark.parametrize(
    ("color", "shape", "motion"),
    [("red", "triangle", "up"), ("blue", "square", "left"), ("green", "circle", "down"), ("yellow", "square", "right")],
)
def test_griffin_lim_keeps_what_the_world_detector_reads(color: str, shape: str, motion: str) -> None:
    vae = AudioVAE(dataclasses.replace(AudioVAEConfig.from_dict(TINY_AUDIO), waveform_decoder="griffin_lim"))
    scene = Scene(color, shape, motion, 10, 32.0, 32.0)
    mel = vae.mel(torch.from_numpy(render_audio(scene))[None], frames=100)  # [1,1,100,64]
    wave = vae.mel_to_waveform(mel)[0, 0]  # [L]
    assert wave.shape == (vae.config.vocoder.output_length(100),) and wave.abs().max() <= 1.0
    assert read_audio(wave.numpy(), 16000) == scene.attributes()
    torch.testing.assert_close(vae.mel_to_waveform(mel)[0, 0], wave, rtol=0, atol=0)  # deterministic


def test_unknown_waveform_decoder_is_refused() -> None:
    vae = tiny_audio_vae()
    vae.waveform_decoder = "wavenet"
    with pytest.raises(ValueError, match="waveform_decoder"):
        vae.mel_to_waveform(torch.zeros(1, 1, 8, 64))
