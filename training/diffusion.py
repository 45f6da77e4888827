"""(c) One latent diffusion model per modality and (d) latent alignment of the joint generator (paper coupling)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codi.modality import Modality
from codi.models.joint import CouplingMode
from training.context import Context, tone_index
from training.data import CaptionSampler
from training.losses import add_noise
from training.stages import Losses, Plan

COND_DROPOUT = 0.1  # condition replaced by the modality's unconditional embedding (classifier-free guidance)
JOINT_DROPOUT = 0.15


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


def _eps_loss(ctx: Context, x0: dict[Modality, Tensor], context: Tensor, tg: torch.Generator, joint: bool) -> Losses:
    """Noises every latent at one shared timestep per row and returns the eps-MSE per modality and summed."""
    b = context.shape[0]
    t = torch.randint(0, ctx.model.config.schedule.num_train_timesteps, (b,), generator=tg).to(ctx.device)
    noise = {m: ctx.randn(tuple(x.shape), tg) for m, x in x0.items()}
    noisy = {m: add_noise(x, noise[m], t, ctx.model.alphas_cumprod) for m, x in x0.items()}
    if joint:
        # inputs that require grad: torch 2.13 CPU segfaults in backward when only the connecters need grads
        noisy = {m: x.requires_grad_(True) for m, x in noisy.items()}
        eps = ctx.model.diffusion(noisy, t, context[:, None], mode=CouplingMode.PAPER)
    else:
        eps = {m: ctx.model.diffusion.unet_for(m)(x, t, context[:, None]) for m, x in noisy.items()}
    out = {m.value: F.mse_loss(eps[m].float(), noise[m]) for m in x0}
    out["loss"] = sum(out.values())
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
        img = _eps_loss(
            ctx, {Modality.IMAGE: pool.video_latents[ii][:, :, 0]}, _drop(ci, u, COND_DROPOUT, g), tg, False
        )
        vid = _eps_loss(ctx, {Modality.VIDEO: pool.video_latents[iv]}, _drop(cv, u, COND_DROPOUT, g), tg, False)
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
        lat = tones["latent"][torch.tensor([tone_index(s) for s in scenes])]  # [B,C,t,m]
        return _eps_loss(ctx, {Modality.AUDIO: lat}, cond, tg, False)

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
        audio = tones["clap"][torch.tensor([tone_index(s) for s in scenes])]  # [B,D]
        choices = torch.stack([pool.image_embeds[idx], pool.video_embeds[idx], audio])  # [3,B,D]
        sel = torch.from_numpy(src).to(ctx.device)
        cond = choices[sel, torch.arange(b, device=ctx.device)]  # [B,D]
        uncond = torch.stack([unc["image"], unc["video"], unc["audio"]])[sel]  # [B,D]
        drop = torch.from_numpy(g.random(b) < COND_DROPOUT).to(ctx.device)[:, None]
        return _eps_loss(ctx, {Modality.TEXT: z}, torch.where(drop, uncond, cond), tg, False)

    return Plan(body_params(m.diffusion.unet_text), step)


# ------------------------------------------------------------------------------------- (d) latent alignment
def joint_text_image(ctx: Context) -> Plan:
    """Text+image joint generation from partial captions: both UNets' environment encoders and connectors."""
    m, g, tg = ctx.model, ctx.rng("joint_text_image"), ctx.generator("joint_text_image")
    captions, pool = CaptionSampler(g), ctx.pool()
    b = ctx.batch(24)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        z_t = ctx.text_latents(captions(scenes, 0.0, for_image=True))  # [B,latent]
        cond = _drop(ctx.text_embeds(captions(scenes, 0.6, for_image=True)), ctx.uncond()["text"], JOINT_DROPOUT, g)
        return _eps_loss(ctx, {Modality.TEXT: z_t, Modality.IMAGE: pool.video_latents[idx][:, :, 0]}, cond, tg, True)

    unets = (m.diffusion.unet_text, m.diffusion.unet_image)
    return Plan(connector_params(unets), step)


def joint_text_audio(ctx: Context) -> Plan:
    """Text+audio joint generation, text frozen: the audio UNet's environment encoder and connectors."""
    m, g, tg = ctx.model, ctx.rng("joint_text_audio"), ctx.generator("joint_text_audio")
    captions, pool, tones = CaptionSampler(g), ctx.pool(), ctx.tones()
    b = ctx.batch(24)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        scenes = [pool.scenes[j] for j in idx]
        z_t = ctx.text_latents(captions(scenes, 0.0))  # [B,latent]
        z_a = tones["latent"][torch.tensor([tone_index(s) for s in scenes])]  # [B,C,t,m]
        cond = _drop(ctx.text_embeds(captions(scenes, 0.6)), ctx.uncond()["text"], JOINT_DROPOUT, g)
        return _eps_loss(ctx, {Modality.TEXT: z_t, Modality.AUDIO: z_a}, cond, tg, True)

    return Plan(connector_params([m.diffusion.unet_audio]), step)


def joint_audio_video(ctx: Context) -> Plan:
    """Audio+video joint generation, audio frozen: the image UNet's environment encoder and connectors on video.

    No caption is shown with the pair (no text-video-audio triples): the context is the empty prompt, so
    every shared attribute must travel through the environment vectors.
    """
    m, g, tg = ctx.model, ctx.rng("joint_audio_video"), ctx.generator("joint_audio_video")
    pool, tones = ctx.pool(), ctx.tones()
    b = ctx.batch(6)

    def step(i: int) -> Losses:
        idx = g.integers(0, len(pool), b)
        z_a = tones["latent"][torch.tensor([tone_index(pool.scenes[j]) for j in idx])]  # [B,C,t,m]
        cond = ctx.uncond()["text"][None].expand(b, -1)  # [B,D]
        return _eps_loss(ctx, {Modality.VIDEO: pool.video_latents[idx], Modality.AUDIO: z_a}, cond, tg, True)

    return Plan(connector_params([m.diffusion.unet_image]), step)
