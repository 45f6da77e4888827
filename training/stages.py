"""CoDi's training scheme as stages: (a) autoencoders, (b) bridging alignment, (c) diffusers, (d) latent alignment.

Each stage's `setup(ctx)` returns a `Plan`: the parameters to optimise, a `step(i)` that returns named losses
(with "loss" the one optimised) and an optional `finish()` run after the last step. Only the pairs of
shapes-world.md are used: text-image, text-video, text-audio; joint text-image, text-audio, audio-video.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codi.models.audio_vae import normalize_waveform
from codi.models.optimus import BOS_ID, EOS_ID, gpt2_tokenizer
from codi.world import BACKGROUND, parse_caption, render_videos, sample_scene
from training.context import NUM_TONES, Context, set_scale_factor, tone_scenes
from training.data import CaptionSampler, to_signed
from training.losses import envelope_loss, gaussian_kl, stft_loss

PAD_ID = 50257
KL_WEIGHT = 1e-3  # Optimus KL weight
WORD_DROPOUT = 0.25  # Optimus: share of decoder input tokens (after <BOS>) replaced by <PAD>
ENCODER_INIT_STD = 0.2  # Optimus BERT init from scratch (see widen_text_encoder_init)
DECODER_WARMUP = 400  # Optimus: first steps train only the decoder, on the random encoder's noiseless means
MEL_FLOOR = 0.01  # vocoder mel loss: log(mel + floor), same reason as the STFT floor
Losses = dict[str, Tensor]


@dataclass
class Plan:
    """What one stage optimises and how one step computes its losses."""

    params: list[nn.Parameter]
    step: Callable[[int], Losses]
    finish: Callable[[], dict] | None = None


def _object_weight(u8: np.ndarray, boost: float = 4.0) -> Tensor:
    """[N,1,H,W] loss weight: 1 on background, 1 + boost on pixels that differ from it (objects, edges)."""
    diff = np.abs(u8.astype(np.int16) - np.array(BACKGROUND, dtype=np.int16)).sum(-1) > 30  # [N,H,W]
    return 1.0 + boost * torch.from_numpy(diff).float()[:, None]


# ------------------------------------------------------------------------------------------- (a) autoencoders
def image_vae(ctx: Context) -> Plan:
    """KL autoencoder on world images and video frames: object-weighted L1 + small KL; sets scale_factor."""
    vae, g, tg = ctx.model.autokl, ctx.rng("image_vae"), ctx.generator("image_vae")
    b = ctx.batch(16)

    def frames(n: int) -> np.ndarray:
        videos = render_videos([sample_scene(g) for _ in range(n)])  # [n,F,H,W,3]
        return videos[np.arange(n), g.integers(0, videos.shape[1], n)]  # [n,H,W,3] random frame each

    def step(i: int) -> Losses:
        u8 = frames(b)
        x = to_signed(u8).to(ctx.device)  # [B,3,H,W]
        mean, logvar, _ = vae.posterior(x)  # [B,C,h,w]
        z = mean + (0.5 * logvar).exp() * ctx.randn(tuple(mean.shape), tg)
        rec = vae.decode_unscaled(z)  # [B,3,H,W]
        l1 = ((rec - x).abs() * _object_weight(u8).to(ctx.device)).mean()
        kl = gaussian_kl(mean, logvar)
        return {"loss": l1 + 2e-6 * kl, "l1": l1, "kl": kl}

    @torch.no_grad()
    def finish() -> dict:
        x = to_signed(frames(ctx.batch(128))).to(ctx.device)
        mean = vae.posterior(x)[0]
        scale = float(1.0 / mean.std())
        set_scale_factor(ctx.model, "image", scale)
        rec = vae.decode_unscaled(mean)
        return {"scale_factor": scale, "rec_l1": float((rec - x).abs().mean())}

    return Plan(list(vae.vae.parameters()), step, finish)


def _tone_mels(ctx: Context) -> tuple[Tensor, Tensor]:
    """Normalised waveforms [60,T] and their log-mels [60,1,frames,n_mels] at the generated length."""
    m = ctx.model
    waves = torch.from_numpy(np.stack([_tone_wave(s) for s in tone_scenes()])).to(ctx.device)  # [60,T]
    frames = m.audioldm.config.mel.frames(m.config.media.audio_seconds)
    return normalize_waveform(waves), m.audioldm.mel(waves, frames)


def _tone_wave(scene) -> np.ndarray:
    from training.data import tone

    return tone(scene)


def audio_vae(ctx: Context) -> Plan:
    """Mel KL autoencoder on the world's sounds: L1 on log-mel + small KL; sets scale_factor."""
    vae, g, tg = ctx.model.audioldm, ctx.rng("audio_vae"), ctx.generator("audio_vae")
    _, mels = _tone_mels(ctx)
    b = ctx.batch(16)

    def step(i: int) -> Losses:
        mel = mels[torch.from_numpy(g.integers(0, NUM_TONES, b))]  # [B,1,T,M]
        mean, logvar = vae.moments(mel).chunk(2, dim=1)  # [B,C,t,m]
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + (0.5 * logvar).exp() * ctx.randn(tuple(mean.shape), tg)
        rec = vae.vae.decoder(vae.vae.post_quant_conv(z))  # [B,1,T,M]
        l1 = (rec - mel).abs().mean()
        kl = gaussian_kl(mean, logvar)
        return {"loss": l1 + 1e-6 * kl, "l1": l1, "kl": kl}

    @torch.no_grad()
    def finish() -> dict:
        mean = vae.moments(mels).chunk(2, dim=1)[0]
        scale = float(1.0 / mean.std())
        set_scale_factor(ctx.model, "audio", scale)
        rec = vae.decode_mel(mean * scale)
        return {"scale_factor": scale, "rec_l1": float((rec - mels).abs().mean())}

    return Plan(list(vae.vae.parameters()), step, finish)


def vocoder(ctx: Context) -> Plan:
    """HiFi-GAN generator: log-mel (true or VAE-reconstructed) -> wave; multi-resolution STFT + mel L1 + envelope."""
    vae, g, tg = ctx.model.audioldm, ctx.rng("vocoder"), ctx.generator("vocoder")
    waves, mels = _tone_mels(ctx)
    n = mels.shape[2] * vae.hop_length
    b = ctx.batch(8)

    def step(i: int) -> Losses:
        idx = torch.from_numpy(g.integers(0, NUM_TONES, b))
        mel = mels[idx]  # [B,1,T,M]
        if i % 2:
            with torch.no_grad():
                mean, logvar = vae.moments(mel).chunk(2, dim=1)
                z = mean + (0.5 * logvar.clamp(-30, 20)).exp() * ctx.randn(tuple(mean.shape), tg)
                mel = vae.vae.decoder(vae.vae.post_quant_conv(z))  # [B,1,T,M] reconstructed
        wave = vae.vocoder(mel[:, 0])[:, :n]  # [B,n]
        target = waves[idx][:, :n]  # [B,n]
        spec = stft_loss(wave, target)
        floor = torch.tensor(MEL_FLOOR).log()
        pred_mel = torch.logaddexp(vae.mel_frontend(wave)[:, :, : mels.shape[2]], floor)  # log(mel + floor)
        mel_l1 = (pred_mel - torch.logaddexp(mels[idx], floor)).abs().mean()
        env = envelope_loss(wave, target)
        return {"loss": spec + 0.5 * mel_l1 + env, "stft": spec, "mel_l1": mel_l1, "envelope": env}

    return Plan(list(vae.vocoder.parameters()), step)


def _gpt2_batch(texts: list[str], device: torch.device) -> Tensor:
    """<BOS> ' caption' <EOS> ids, right-padded with <PAD>: [B,L]."""
    tok = gpt2_tokenizer()
    rows = [[BOS_ID, *tok.encode(" " + t), EOS_ID] for t in texts]
    ids = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids.to(device)


def widen_text_encoder_init(model: nn.Module, std: float = ENCODER_INIT_STD) -> None:
    """Re-initialises the Optimus BERT's embeddings and linear layers with a wider normal than BERT's 0.02.

    Optimus starts from pretrained BERT; from scratch at 0.02 the pooled feature barely differs between
    captions (signal through two small matrices per layer), the decoder learns to ignore it and the encoder
    never recovers. At 0.2 captions start far apart. Attention queries and keys keep the 0.02 init: wide ones
    make every attention one-hot from the start (the [CLS] token read only "moving" and the latent learned the
    motion alone, colour and shape at chance).
    """
    for name, mod in model.optimus.encoder.named_modules():
        if name.endswith(("attention.self.query", "attention.self.key")):
            continue
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            nn.init.normal_(mod.weight, std=std)
            if isinstance(mod, nn.Linear) and mod.bias is not None:
                nn.init.zeros_(mod.bias)
    gpt = model.optimus.decoder.transformer
    for mod in (gpt.linear, gpt.linear_emb):  # latent projections at GPT-2's init scale, not nn.Linear's
        nn.init.normal_(mod.weight, std=model.optimus.decoder.config.initializer_range)


def optimus(ctx: Context) -> Plan:
    """Optimus text VAE on full and partial captions: teacher-forced GPT-2 CE + small KL; sets scale_factor."""
    vae, g, tg = ctx.model.optimus, ctx.rng("optimus"), ctx.generator("optimus")
    captions = CaptionSampler(g)
    b = ctx.batch(64)

    def texts(n: int) -> list[str]:
        scenes = [sample_scene(g) for _ in range(n)]
        half = n // 2
        return captions(scenes[:half], 0.0, for_image=False) + captions(scenes[half:], 0.3, bool(g.random() < 0.3))

    def step(i: int) -> Losses:
        t = texts(b)
        noise = ctx.randn((len(t), vae.config.latent_size), tg)  # [B,latent]
        if i < DECODER_WARMUP:
            # from scratch, encoder and decoder would both learn to ignore the latent (posterior collapse,
            # the encoder's means shrink to zero): first the decoder learns to read the frozen random
            # encoder's means, distinct per caption, like fixed codes
            with torch.no_grad():
                post = vae.posterior(t)
            z = post.mu  # [B,latent]
        else:
            post = vae.posterior(t)
            z = post.mu + (0.5 * post.logvar).exp() * noise  # [B,latent]
        ids = _gpt2_batch(t, ctx.device)  # [B,L]
        inputs = ids[:, :-1].clone()  # [B,L-1]
        drop = torch.rand(inputs.shape, generator=tg).to(ctx.device) < WORD_DROPOUT
        drop[:, 0] = False  # keep <BOS>
        # word dropout: without it the autoregressive decoder learns to ignore the latent (posterior collapse)
        logits = vae.decoder_logits(inputs.masked_fill(drop, PAD_ID), z)  # [B,L-1,V]
        target = ids[:, 1:].masked_fill(ids[:, 1:] == PAD_ID, -100)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100)
        kl = gaussian_kl(post.mu, post.logvar)
        # a near-autoencoder: a larger KL weight also lets GPT-2 ignore the latent
        return {"loss": ce + KL_WEIGHT * kl, "ce": ce, "kl": kl}

    @torch.no_grad()
    def finish() -> dict:
        t = texts(ctx.batch(256))
        mu = vae.posterior(t).mu
        scale = float(1.0 / mu.std())
        set_scale_factor(ctx.model, "text", scale)
        out = vae.decode(mu[:64] * scale, generator=torch.Generator().manual_seed(0))
        hits = [parse_caption(o) == parse_caption(s) for o, s in zip(out, t[:64])]
        return {"scale_factor": scale, "clean_exact_attributes": float(np.mean(hits)), "example": out[:3]}

    return Plan(list(vae.parameters()), step, finish)
