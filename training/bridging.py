"""(b) Bridging alignment: CLIP text + vision (+ temporal) on text-image and text-video, then CLAP on text-audio."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from codi.world import render_videos, sample_scene
from codi.world.scene import DIRECTIONS, TRAVEL, Scene
from training.context import NUM_TONES, Context, tone_scenes
from training.data import CaptionSampler, clip_pixels, match_matrix, tone
from training.losses import distinct_penalty, soft_info_nce
from training.stages import Losses, Plan

TEMPERATURE = 0.07
TEMPORAL_OUT_STD = 0.1  # from-scratch init of the CLIP temporal blocks' output layers (official: zeros)
POSITION_BIAS_STD = 3.0  # ... and of their relative-position-bias head (the only sense of time order they have)
OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left", "still": "still"}


def reversed_twin(scene: Scene) -> Scene:
    """The scene whose video is `scene`'s played backwards: opposite motion, starting where `scene` ends."""
    dx, dy = DIRECTIONS[scene.motion]
    return dataclasses.replace(
        scene, motion=OPPOSITE[scene.motion], cx=scene.cx + dx * TRAVEL, cy=scene.cy + dy * TRAVEL
    )


def widen_clip_temporal_init(model: nn.Module) -> None:
    """From scratch, CoDi's CLIP video path is blind to time order: the temporal blocks start as the identity and
    their only order signal, the relative-position bias, starts small, so a video and its reversal embed alike
    (cosine 1.0000 after 1200 steps: left = right, up = down). A wider init of those layers lets the contrastive
    loss (with reversed twins in the batch) find the order: motion retrieval 20 % -> 90 % in a 600-step trial."""
    for layer in model.clip.model.vision_model.encoder.layers:
        block = getattr(layer, "temporal_self_attn", None)
        if block is None:
            continue
        nn.init.normal_(block.temporal_attn.to_out.weight, std=TEMPORAL_OUT_STD)
        nn.init.normal_(block.ff.proj_out[1].weight, std=TEMPORAL_OUT_STD)
        nn.init.normal_(block.temporal_rel_pos_bias.net[2].weight, std=POSITION_BIAS_STD)


def clip(ctx: Context) -> Plan:
    """CLIP text + vision towers and the vision temporal blocks, contrastive on text-image and text-video pairs.

    Soft targets count every caption whose stated attributes hold for a sample as a positive (partial and
    repeated captions are no false negatives); images match on color and shape, videos also on motion. The
    unconditional embeddings (empty prompt, grey image, grey video) are pushed away from real ones. Half of the
    videos are the time-reversed twins of the other half: pairs that differ only in the direction of motion.
    """
    m, g = ctx.model, ctx.rng("clip")
    size, frames = m.config.clip.vision.image_size, m.config.media.cond_video_frames
    captions = CaptionSampler(g)
    bi, bv = ctx.batch(48), ctx.batch(24)
    grey = np.full((1, size, size, 3), 127, dtype=np.uint8)

    def step(i: int) -> Losses:
        scenes_i = [sample_scene(g) for _ in range(bi)]
        half = [sample_scene(g) for _ in range(bv - bv // 2)]
        scenes_v = half + [reversed_twin(s) for s in half[: bv // 2]]
        videos = render_videos(scenes_i + scenes_v)  # [bi+bv,F,H,W,3]
        cap_i = captions(scenes_i, 0.3, for_image=True)
        cap_v = captions(scenes_v, 0.3)
        text = m.clip.encode_text(cap_i + cap_v + [""])[:, 0]  # [bi+bv+1,D]
        img = m.clip.encode_pixels(clip_pixels(np.concatenate([videos[:bi, 0], grey]), size).to(ctx.device))[:, 0]
        vid_u8 = videos[bi:, :: max(1, videos.shape[1] // frames)][:, :frames]  # [bv,frames,H,W,3]
        grey_v = np.repeat(grey[:, None], frames, axis=1)
        vid = m.clip.encode_pixels(clip_pixels(np.concatenate([vid_u8, grey_v]), size).to(ctx.device))[:, 0]
        stated = [captions.stated(None, [c])[0] for c in cap_i + cap_v]
        mi = match_matrix(stated[:bi], [s.attributes() for s in scenes_i], ("color", "shape")).to(ctx.device)
        mv = match_matrix(stated[bi:], [s.attributes() for s in scenes_v]).to(ctx.device)
        l_img = soft_info_nce(text[:bi], img[:bi], mi, TEMPERATURE)
        l_vid = soft_info_nce(text[bi:-1], vid[:-1], mv, TEMPERATURE)
        l_unc = (
            distinct_penalty(text[:-1], text[-1])
            + distinct_penalty(img[:-1], img[-1])
            + distinct_penalty(vid[:-1], vid[-1])
        )
        return {"loss": l_img + l_vid + l_unc, "image": l_img, "video": l_vid, "uncond": l_unc}

    return Plan(list(m.clip.parameters()), step)


def clap(ctx: Context) -> Plan:
    """CLAP audio encoder aligned to the frozen CLIP text space on text-audio pairs (color, shape, motion)."""
    m, g = ctx.model, ctx.rng("clap")
    captions = CaptionSampler(g)
    scenes_all = tone_scenes()
    waves = torch.from_numpy(np.stack([tone(s) for s in scenes_all])).to(ctx.device)  # [60,T]
    with torch.no_grad():
        mels = m.clap.log_mel(torch.cat([waves, torch.zeros_like(waves[:1])]))  # [61,1,frames,n_mels]
        bn = m.clap.audio_branch.audio_encoder.batch_norm
        per_bin = mels[:-1, 0].transpose(0, 2).flatten(1)  # [n_mels, 60*frames]
        bn.running_mean.copy_(per_bin.mean(1))
        bn.running_var.copy_(per_bin.var(1))
    b = ctx.batch(32)

    def embed(mel: Tensor) -> Tensor:
        e = m.clap.audio_projection(m.clap.embed_log_mel(mel))  # [N,D]
        return torch.nn.functional.normalize(e, dim=-1)

    def step(i: int) -> Losses:
        idx = g.integers(0, NUM_TONES, b)
        scenes = [scenes_all[j] for j in idx]
        caps = captions(scenes, 0.3)
        text = ctx.text_embeds(caps)  # [B,D] frozen
        audio = embed(mels[torch.from_numpy(np.append(idx, NUM_TONES))])  # [B+1,D], last = silence
        match = match_matrix([captions.stated(None, [c])[0] for c in caps], [s.attributes() for s in scenes])
        l_nce = soft_info_nce(text, audio[:-1], match.to(ctx.device), TEMPERATURE)
        l_unc = distinct_penalty(audio[:-1], audio[-1])
        return {"loss": l_nce + l_unc, "nce": l_nce, "uncond": l_unc}

    return Plan(list(m.clap.parameters()), step)
