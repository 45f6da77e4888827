"""(c) One latent diffusion model per modality and (d) latent alignment of the joint generator (paper coupling)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from codi.modality import Modality
from codi.models.joint import CouplingMode
from codi.sampling import Prediction
from training.context import Context, tone_rows
from training.data import CaptionSampler, match_matrix
from training.losses import add_noise, soft_info_nce, v_target
from training.stages import Losses, Plan

COND_DROPOUT = 0.1  # condition replaced by the modality's unconditional embedding (classifier-free guidance)
JOINT_DROPOUT = 0.15
# High-noise emphasis (audio and video): half the rows draw t from the top of the schedule, where the layout and the
# motion are decided. The tiny default (zero terminal SNR, v prediction) needs only that: trained on uniform
# timesteps it followed the text's motion in 38 % of videos, with the emphasis in 71 % (2800 steps;
# docs/tiny-model-history.md).
# With eps prediction on CoDi's schedule (--codi-schedule) it also weighs rows and shows signal-free starts:
# there a small world's latents give their content away through the noise itself (60 fixed tones are told apart
# from x_t even at t = 999), and eps-MSE weighs the high-noise steps by their SNR, so the UNet learns to ignore the
# condition; rows are weighted by clamp(1 / SNR, 1, HIGH_NOISE_WEIGHT_CAP) (x0-like at high noise, eps-MSE elsewhere).
HIGH_NOISE_FROM = 700
HIGH_NOISE_WEIGHT_CAP = 20.0
HIGH_NOISE_SHARE = 0.5
# The sampler starts from pure noise, but x_t at the last training step still holds the latent at SNR 0.005,
# enough to tell the 60 tones (or a video's direction) apart without the condition; the UNet learns to read that
# leak and, started from signal-free noise, ignores its condition (the flaw zero-terminal-SNR schedules fix). With
# the emphasis on, this share of rows is shown the sampler's start instead: pure noise x at a t in
# [SIGNAL_FREE_FROM, T) (where samplers of >= 10 steps take their first step: 961 for 25 DDIM steps), with the
# target eps that x implies for the clean latent at t, (x - sqrt(a_t) x0) / sqrt(1 - a_t).
SIGNAL_FREE_SHARE = 0.15
SIGNAL_FREE_FROM = 900
# Latent alignment trains the environment encoders only through the other UNet's connectors, and a from-scratch
# conv encoder mean-pooled over a small object on a plain background starts (and, after the joint stages, stayed)
# nearly constant: across 40 scenes its L2-normalised image/video/audio vector varied by 1-4 % of its norm at
# t = 500-900 (text: 25-60 %), so the partner's connectors had nothing to follow. Each joint stage therefore also
# pulls the two environments of a pair together with a soft InfoNCE (same scene = positive; pairs agreeing on every
# attribute the two show are not negatives), the "shared latent space" the paper projects into; the frozen side is
# the anchor. Measured: the vectors then vary by 20-120 %; see docs/tiny-model-history.md for what that did (and did
# not) change.
ENV_ALIGN_WEIGHT = 0.1
ENV_ALIGN_TEMPERATURE = 0.1
# Partner composition (codi.models.joint): at sampling, each output of a joint call may take the other outputs'
# environment vectors into its condition, beside the user's prompt, so the vectors must live where prompts live.
# Every joint stage therefore also regresses each environment encoder it trains onto the prompt embedding of its
# own content: 1 - cos to the unit mean CLIP text embedding of ANCHOR_WORDINGS captions stating every attribute the
# content shows, on ANCHOR_ROWS extra latents per step noised at uniform steps (so at high noise the vector is the
# mean caption of what x_t still shows). Measured (docs/tiny-model-history.md): the pair InfoNCE alone left the
# environments off the prompt space; anchored, a video's environment read as a prompt gives the audio its motion.
ANCHOR_WEIGHT = 1.0
ANCHOR_ROWS = 16
ANCHOR_WORDINGS = 4
# The joint stages leave the video's environment at cos 0.93 to its caption anchor on a clean video, and an audio
# composing it followed the video's motion in 69 % of 96 draws (a caption in its place: 87 % of 60): the part of the
# vector off the prompt space steers the audio at random. `anchor_video` then fits the video's environment encoder
# alone to the anchors (cos 0.99 on clean videos): 79 % with the final video's environment
# (docs/tiny-model-history.md). It stops at ANCHOR_T_MAX, past which x_t no longer shows a motion (probe: 74 % at
# t = 800) and the fit only pulls towards the mean caption.
ANCHOR_T_MAX = 850


def zero_init_transformer_outputs(model: nn.Module) -> None:
    """LDM-style init: every `proj_out` of the UNets' transformers starts at zero (blocks start as identity)."""
    for name, mod in model.diffusion.named_modules():
        if name.endswith("proj_out") and isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.zeros_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def is_connector(name: str) -> bool:
    """Latent-alignment parameters: environment encoder (connecters_out) and connector transformers."""
    return "connecters" in name


def body_params(unet: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in unet.named_parameters() if not is_connector(n)]


def connector_params(unets: Iterable[nn.Module]) -> list[nn.Parameter]:
    return [p for u in unets for n, p in u.named_parameters() if is_connector(n)]


def _drop(cond: Tensor, uncond: Tensor, p: float, g: np.random.Generator) -> Tensor:
    """Replaces rows of cond [B,D] by uncond [D] with probability p."""
    mask = torch.from_numpy(g.random(cond.shape[0]) < p).to(cond.device)[:, None]  # [B,1]
    return torch.where(mask, uncond[None].to(cond.dtype), cond)


def sample_timesteps(b: int, total: int, high_share: float, tg: torch.Generator) -> Tensor:
    """[b] training timesteps: uniform in [0, total), a `high_share` of rows uniform in [HIGH_NOISE_FROM, total)."""
    t = torch.randint(0, total, (b,), generator=tg)
    if high_share > 0:
        high = torch.rand(b, generator=tg) < high_share
        t = torch.where(high, torch.randint(HIGH_NOISE_FROM, total, (b,), generator=tg), t)
    return t


def high_noise_weights(t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """[b] per-row loss weights clamp(1 / SNR(t), 1, HIGH_NOISE_WEIGHT_CAP), normalised to mean 1."""
    ab = alphas_cumprod[t].float()
    w = ((1 - ab) / ab).clamp(1.0, HIGH_NOISE_WEIGHT_CAP)
    return w / w.mean()


def signal_free_start(
    t: Tensor,
    x0: dict[Modality, Tensor],
    noisy: dict[Modality, Tensor],
    noise: dict[Modality, Tensor],
    alphas_cumprod: Tensor,
    tg: torch.Generator,
) -> tuple[Tensor, dict[Modality, Tensor], dict[Modality, Tensor]]:
    """Turns a SIGNAL_FREE_SHARE of rows into a sampler's start: t in [SIGNAL_FREE_FROM, T), x_t = the pure noise,
    and the eps target that implies. Returns (t [B], noisy latents, eps targets)."""
    b, total = t.shape[0], alphas_cumprod.shape[0]
    rows = (torch.rand(b, generator=tg) < SIGNAL_FREE_SHARE).to(t.device)  # [B]
    t = torch.where(rows, torch.randint(SIGNAL_FREE_FROM, total, (b,), generator=tg).to(t.device), t)
    a = alphas_cumprod[t].float()  # [B]
    new_noisy, target = {}, {}
    for m, x in x0.items():
        shape = (-1, *([1] * (x.ndim - 1)))
        mask, a_m = rows.view(shape), a.view(shape)  # [B,1,...]
        new_noisy[m] = torch.where(mask, noise[m].to(noisy[m].dtype), noisy[m])
        implied = (noise[m] - a_m.sqrt() * x.float()) / (1 - a_m).sqrt()
        target[m] = torch.where(mask, implied, noise[m])
    return t, new_noisy, target


def _diffusion_loss(
    ctx: Context,
    x0: dict[Modality, Tensor],
    context: Tensor,
    tg: torch.Generator,
    joint: bool,
    high_share: float = 0.0,
    env_match: Tensor | None = None,
) -> Losses:
    """Noises every latent at one shared timestep per row and returns the denoising MSE per modality and summed.

    The target is what the schedule's `prediction` says: eps, or v = sqrt(a_t) eps - sqrt(1 - a_t) x0. `high_share`
    > 0 turns on the high-noise emphasis (see HIGH_NOISE_FROM): biased timesteps, and with eps also row weights and
    signal-free starts (see SIGNAL_FREE_SHARE); v prediction on a zero-terminal-SNR schedule needs neither (its loss
    is x0-like at high noise, its last step signal-free) but keeps the biased timesteps (uniform ones lost most of
    the motion it gains, see docs/tiny-model-history.md). `env_match` [B,B] (joint calls of two modalities): adds
    the environment alignment (see ENV_ALIGN_WEIGHT) with these positives.
    """
    if env_match is not None and not joint:
        raise ValueError("env_match needs a joint call (the environments exist only there)")
    b, schedule, ac = context.shape[0], ctx.model.config.schedule, ctx.model.alphas_cumprod
    v_pred = Prediction(schedule.prediction) is Prediction.V
    t = sample_timesteps(b, schedule.num_train_timesteps, high_share, tg).to(ctx.device)
    noise = {m: ctx.randn(tuple(x.shape), tg) for m, x in x0.items()}
    noisy = {m: add_noise(x, noise[m], t, ac) for m, x in x0.items()}
    target = noise
    if v_pred:
        target = {m: v_target(x.float(), noise[m], t, ac) for m, x in x0.items()}
    elif high_share > 0:
        t, noisy, target = signal_free_start(t, x0, noisy, noise, ac, tg)
    if joint:
        # inputs that require grad: torch 2.13 CPU segfaults in backward when only the connecters need grads
        noisy = {m: x.requires_grad_(True) for m, x in noisy.items()}
        envs = ctx.model.diffusion.environments(noisy, t)  # modality -> [B,1,C]
        pred = ctx.model.diffusion(noisy, t, context[:, None], mode=CouplingMode.PAPER, envs=envs)
    else:
        pred = {m: ctx.model.diffusion.unet_for(m)(x, t, context[:, None]) for m, x in noisy.items()}
    weighted = high_share > 0 and not v_pred
    w = high_noise_weights(t, ac) if weighted else torch.ones(b, device=ctx.device)
    out = {m.value: ((pred[m].float() - target[m]).pow(2).flatten(1).mean(1) * w).mean() for m in x0}
    out["loss"] = sum(out.values())
    if env_match is not None:  # a joint call of two outputs
        env_a, env_b = (e[:, 0].float() for e in envs.values())  # [B,C] each
        nce = soft_info_nce(env_a, env_b, env_match.to(ctx.device), ENV_ALIGN_TEMPERATURE)
        out["env"] = nce
        out["loss"] = out["loss"] + ENV_ALIGN_WEIGHT * nce
    return out


def caption_anchors(ctx: Context, scenes: list, captions: CaptionSampler, for_image: bool = False) -> Tensor:
    """[B,D] unit mean CLIP text embedding of ANCHOR_WORDINGS full captions of each scene."""
    e = torch.stack([ctx.text_embeds(captions(scenes, 0.0, for_image=for_image)) for _ in range(ANCHOR_WORDINGS)])
    e = e.float().mean(0)  # [B,D]
    return e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)


def anchor_loss(
    ctx: Context, unet: nn.Module, x0: Tensor, anchors: Tensor, tg: torch.Generator, t_max: int | None = None
) -> Tensor:
    """Mean 1 - cos between the environment of x0 [B,...] noised at steps uniform in [0, t_max) (default: every
    step) and its anchors [B,D]."""
    b, ac = x0.shape[0], ctx.model.alphas_cumprod
    t = torch.randint(0, t_max or ac.shape[0], (b,), generator=tg).to(ctx.device)
    x = add_noise(x0, ctx.randn(tuple(x0.shape), tg), t, ac)
    env = unet.environment(x.requires_grad_(True), t)[:, 0].float()  # [B,C] unit
    return ANCHOR_WEIGHT * (1 - (env * anchors.to(ctx.device)).sum(-1)).mean()


def _with_anchor(out: Losses, **losses: Tensor) -> Losses:
    for name, value in losses.items():
        out[f"anchor_{name}"] = value
        out["loss"] = out["loss"] + value
    return out


# ---------------------------------------------------------------------------------------- (c) single diffusers
def unet_image(ctx: Context) -> Plan:
    """Image UNet on text->image and text->video latents (one shared UNet; video latents are 5-D)."""
    m, g, tg = ctx.model, ctx.rng("unet_image"), ctx.generator("unet_image")
    captions, pool = CaptionSampler(g), ctx.pool()
    bi, bv = ctx.batch(16), ctx.batch(8)

    def step(i: int) -> Losses:
        ii, iv = g.integers(0, len(pool), bi), g.integers(0, len(pool), bv)
        ci = ctx.text_embeds(captions([pool.scenes[j] for j in ii], 0.3, for_image=True))  # [bi,D]
        cv = ctx.text_embeds(captions([pool.scenes[j] for j in iv], 0.3))  # [bv,D]
        u = ctx.uncond()["text"]
        img = _diffusion_loss(
            ctx, {Modality.IMAGE: pool.video_latents[ii][:, :, 0]}, _drop(ci, u, COND_DROPOUT, g), tg, False
        )
        vid = _diffusion_loss(
            ctx, {Modality.VIDEO: pool.video_latents[iv]}, _drop(cv, u, COND_DROPOUT, g), tg, False, HIGH_NOISE_SHARE
        )
        return {"loss": img["loss"] + vid["loss"], "image": img["image"], "video": vid["video"]}

    return Plan(body_params(m.diffusion.unet_image), step)


def unet_audio(ctx: Context) -> Plan:
    """Audio UNet on text->audio latents."""
    m, g, tg = ctx.model, ctx.rng("unet_audio"), ctx.generator("unet_audio")
    captions, pool, tones = CaptionSampler(g), ctx.pool(), ctx.tones()
    b = ctx.batch(24)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        cond = _drop(ctx.text_embeds(captions(scenes, 0.3)), ctx.uncond()["text"], COND_DROPOUT, g)
        lat = tones["latent"][tone_rows(scenes)]  # [B,C,t,m]
        return _diffusion_loss(ctx, {Modality.AUDIO: lat}, cond, tg, False, HIGH_NOISE_SHARE)

    return Plan(body_params(m.diffusion.unet_audio), step)


def unet_text(ctx: Context) -> Plan:
    """Text UNet on image->text, video->text and audio->text (Optimus latents of full captions)."""
    m, g, tg = ctx.model, ctx.rng("unet_text"), ctx.generator("unet_text")
    captions, pool, tones, unc = CaptionSampler(g), ctx.pool(), ctx.tones(), ctx.uncond()
    b = ctx.batch(48)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        src = g.integers(0, 3, b)  # 0 image, 1 video, 2 audio
        scenes = [pool.scenes[j] for j in idx]
        texts = [captions([s], 0.0, for_image=bool(k == 0))[0] for s, k in zip(scenes, src)]
        z = ctx.text_latents(texts)  # [B,latent]
        audio = tones["clap"][tone_rows(scenes)]  # [B,D]
        choices = torch.stack([pool.image_embeds[idx], pool.video_embeds[idx], audio])  # [3,B,D]
        sel = torch.from_numpy(src).to(ctx.device)
        cond = choices[sel, torch.arange(b, device=ctx.device)]  # [B,D]
        uncond = torch.stack([unc["image"], unc["video"], unc["audio"]])[sel]  # [B,D]
        drop = torch.from_numpy(g.random(b) < COND_DROPOUT).to(ctx.device)[:, None]
        return _diffusion_loss(ctx, {Modality.TEXT: z}, torch.where(drop, uncond, cond), tg, False)

    return Plan(body_params(m.diffusion.unet_text), step)


# ------------------------------------------------------------------------------------- (d) latent alignment
def _same(scenes: list, keys: tuple[str, ...] = ("color", "shape", "motion")) -> Tensor:
    """[B,B] 1 where two scenes agree on `keys` (what both modalities of the pair show)."""
    attrs = [{k: getattr(s, k) for k in keys} for s in scenes]
    return match_matrix(attrs, attrs, keys)


def joint_text_image(ctx: Context) -> Plan:
    """Text+image joint generation from partial captions: both UNets' environment encoders and connectors."""
    m, g, tg = ctx.model, ctx.rng("joint_text_image"), ctx.generator("joint_text_image")
    captions, pool = CaptionSampler(g), ctx.pool()
    b, ra = ctx.batch(24), ctx.batch(ANCHOR_ROWS)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        z_t = ctx.text_latents(captions(scenes, 0.0, for_image=True))  # [B,latent]
        cond = _drop(ctx.text_embeds(captions(scenes, 0.6, for_image=True)), ctx.uncond()["text"], JOINT_DROPOUT, g)
        x0 = {Modality.TEXT: z_t, Modality.IMAGE: pool.video_latents[idx][:, :, 0]}
        out = _diffusion_loss(ctx, x0, cond, tg, True, env_match=_same(scenes, ("color", "shape")))
        ia, ta = g.integers(0, len(pool), ra), g.integers(0, len(pool), ra)
        images, texts = [pool.scenes[j] for j in ia], [pool.scenes[j] for j in ta]
        z_img, z_txt = pool.video_latents[ia][:, :, 0], ctx.text_latents(captions(texts, 0.0))
        return _with_anchor(
            out,
            image=anchor_loss(ctx, m.diffusion.unet_image, z_img, caption_anchors(ctx, images, captions, True), tg),
            text=anchor_loss(ctx, m.diffusion.unet_text, z_txt, caption_anchors(ctx, texts, captions), tg),
        )

    unets = (m.diffusion.unet_text, m.diffusion.unet_image)
    return Plan(connector_params(unets), step)


def joint_text_audio(ctx: Context) -> Plan:
    """Text+audio joint generation, text frozen: the audio UNet's environment encoder and connectors."""
    m, g, tg = ctx.model, ctx.rng("joint_text_audio"), ctx.generator("joint_text_audio")
    captions, pool, tones = CaptionSampler(g), ctx.pool(), ctx.tones()
    b, ra = ctx.batch(24), ctx.batch(ANCHOR_ROWS)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        z_t = ctx.text_latents(captions(scenes, 0.0))  # [B,latent]
        z_a = tones["latent"][tone_rows(scenes)]  # [B,C,t,m]
        cond = _drop(ctx.text_embeds(captions(scenes, 0.6)), ctx.uncond()["text"], JOINT_DROPOUT, g)
        out = _diffusion_loss(ctx, {Modality.TEXT: z_t, Modality.AUDIO: z_a}, cond, tg, True, env_match=_same(scenes))
        sounds = [pool.scenes[j] for j in g.integers(0, len(pool), ra)]
        z = tones["latent"][tone_rows(sounds)]
        return _with_anchor(
            out, audio=anchor_loss(ctx, m.diffusion.unet_audio, z, caption_anchors(ctx, sounds, captions), tg)
        )

    return Plan(connector_params([m.diffusion.unet_audio]), step)


def joint_audio_video(ctx: Context) -> Plan:
    """Audio+video joint generation, audio frozen: the image UNet's environment encoder and connectors on video.

    No caption is shown with the pair (no text-video-audio triples): the context is the empty prompt, so
    every shared attribute must travel through the environment vectors.
    """
    m, g, tg = ctx.model, ctx.rng("joint_audio_video"), ctx.generator("joint_audio_video")
    captions, pool, tones = CaptionSampler(g), ctx.pool(), ctx.tones()
    b, ra = ctx.batch(6), ctx.batch(ANCHOR_ROWS)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        z_a = tones["latent"][tone_rows(scenes)]  # [B,C,t,m]
        cond = ctx.uncond()["text"][None].expand(b, -1)  # [B,D]
        x0 = {Modality.VIDEO: pool.video_latents[idx], Modality.AUDIO: z_a}
        out = _diffusion_loss(ctx, x0, cond, tg, True, HIGH_NOISE_SHARE, env_match=_same(scenes))
        va = g.integers(0, len(pool), ra)
        videos = [pool.scenes[j] for j in va]
        anchors = caption_anchors(ctx, videos, captions)
        return _with_anchor(out, video=anchor_loss(ctx, m.diffusion.unet_image, pool.video_latents[va], anchors, tg))

    return Plan(connector_params([m.diffusion.unet_image]), step)


def anchor_video(ctx: Context) -> Plan:
    """After the joint stages: the video's environment encoder alone, fitted to its caption anchors (1 - cos) on
    videos noised below ANCHOR_T_MAX, so that an audio composing it reads a prompt (partner composition)."""
    m, g, tg = ctx.model, ctx.rng("anchor_video"), ctx.generator("anchor_video")
    captions, pool, unet = CaptionSampler(g), ctx.pool(), m.diffusion.unet_image
    b = ctx.batch(32)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        anchors = caption_anchors(ctx, [pool.scenes[j] for j in idx], captions)  # [B,D]
        loss = anchor_loss(ctx, unet, pool.video_latents[idx], anchors, tg, ANCHOR_T_MAX)
        return {"loss": loss, "anchor_video": loss.detach()}

    return Plan(list(unet.connecters_out.parameters()), step)
