"""What every training stage shares: the model, device, seeded randomness and cached frozen-encoder outputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from codi.model import CoDiModel
from codi.world import COLORS, MOTIONS, SHAPES, Scene, sample_scene
from training.data import EmbeddingCache, ScenePool, clip_pixels, render_pool_videos, tone

NUM_TONES = len(COLORS) * len(SHAPES) * len(MOTIONS)  # 60 distinct sounds: audio depends only on attributes


def tone_index(scene: Scene) -> int:
    """Index of a scene's sound among the 60 (color-major, then shape, then motion)."""
    return (COLORS.index(scene.color) * len(SHAPES) + SHAPES.index(scene.shape)) * len(MOTIONS) + MOTIONS.index(
        scene.motion
    )


def tone_rows(scenes: Sequence[Scene]) -> Tensor:
    """[B] long indices of the scenes' sounds, for gathering rows of `Context.tones()` tensors."""
    return torch.tensor([tone_index(s) for s in scenes])


def tone_scenes() -> list[Scene]:
    """One scene per sound, in `tone_index` order (positions irrelevant to audio)."""
    return [sample_scene(0, c, s, m) for c in COLORS for s in SHAPES for m in MOTIONS]


@dataclass
class Context:
    """The model under training plus shared, lazily built data (pools, caches) of one run."""

    model: CoDiModel
    device: torch.device
    seed: int = 0
    batch_cap: int | None = None  # tests: cap every batch size
    pool_size: int = 1024
    cache: dict[str, Any] = field(default_factory=dict)

    def batch(self, n: int) -> int:
        return n if self.batch_cap is None else max(2, min(n, self.batch_cap))

    def rng(self, stage: str) -> np.random.Generator:
        """Seeded numpy generator of a stage (independent of the others)."""
        return np.random.default_rng([self.seed, *stage.encode()])

    def generator(self, stage: str) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.rng(stage + "/torch").integers(2**62)))

    def randn(self, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
        """Standard normal noise drawn on the CPU (same numbers on every device), moved to the device."""
        return torch.randn(shape, generator=g).to(self.device)

    # ---------------------------------------------------------------- frozen-encoder caches (valid once trained)
    def text_embeds(self, texts: list[str]) -> Tensor:
        """CLIP text embeddings [N,D] of captions (frozen CLIP; memoised)."""
        if "clip_text" not in self.cache:
            self.cache["clip_text"] = EmbeddingCache(lambda t: self.model.clip.encode_text(t)[:, 0])
        return self.cache["clip_text"](texts)

    def text_latents(self, texts: list[str]) -> Tensor:
        """Optimus latents [N,latent] in diffusion scale (frozen Optimus; memoised)."""
        if "optimus" not in self.cache:
            self.cache["optimus"] = EmbeddingCache(lambda t: self.model.optimus.encode(t))
        return self.cache["optimus"](texts)

    @torch.no_grad()
    def uncond(self) -> dict[str, Tensor]:
        """The unconditional embeddings guidance uses, [D] each: text "", grey image, grey video, silence."""
        if "uncond" not in self.cache:
            m, media = self.model, self.model.config.media
            size = m.config.clip.vision.image_size
            grey = np.full((1, size, size, 3), 127, dtype=np.uint8)
            vid = np.full((1, media.cond_video_frames, size, size, 3), 127, dtype=np.uint8)
            self.cache["uncond"] = {
                "text": m.clip.encode_text([""])[0, 0],
                "image": m.clip.encode_pixels(clip_pixels(grey, size).to(self.device))[0, 0],
                "video": m.clip.encode_pixels(clip_pixels(vid, size).to(self.device))[0, 0],
                "audio": m.clap.unconditional(1, 16000)[0, 0],
            }
        return self.cache["uncond"]

    @torch.no_grad()
    def tones(self) -> dict[str, Tensor]:
        """The 60 sounds: waveforms [60,T], scaled audio latents [60,C,t,m], CLAP embeddings [60,D]."""
        if "tones" not in self.cache:
            m = self.model
            waves = torch.from_numpy(np.stack([tone(s) for s in tone_scenes()])).to(self.device)  # [60,T]
            frames = m.audioldm.config.mel.frames(m.config.media.audio_seconds)
            lat = m.audioldm.encode_mel(m.audioldm.mel(waves, frames))  # [60,C,t,m]
            emb = m.clap.encode_audio(waves)[:, 0]  # [60,D]
            self.cache["tones"] = {"wave": waves, "latent": lat, "clap": emb}
        return self.cache["tones"]

    @torch.no_grad()
    def pool(self) -> ScenePool:
        """Rendered scenes with their image-VAE latents and CLIP image/video embeddings (frozen encoders)."""
        if "pool" not in self.cache:
            m, g = self.model, self.rng("pool")
            n = self.pool_size if self.batch_cap is None else 8
            scenes = [sample_scene(g) for _ in range(n)]
            size = m.config.clip.vision.image_size
            lats, imgs, vids, start = [], [], [], 0
            for videos in render_pool_videos(scenes, 32):  # [b,F,H,W,3] uint8
                x = torch.from_numpy(videos).float().div(127.5).sub(1.0).movedim(-1, 1).to(self.device)
                lats.append(m.autokl.encode(x))  # [b,C,F,h,w]
                imgs.append(m.clip.encode_pixels(clip_pixels(videos[:, 0], size).to(self.device))[:, 0])
                vids.append(m.clip.encode_pixels(clip_pixels(videos, size).to(self.device))[:, 0])
                start += len(videos)
            self.cache["pool"] = ScenePool(scenes, torch.cat(lats), torch.cat(imgs), torch.cat(vids))
        return self.cache["pool"]

    def forget(self, *keys: str) -> None:
        """Drops caches whose encoders are about to change."""
        for k in keys:
            self.cache.pop(k, None)


def set_scale_factor(model: CoDiModel, component: str, value: float) -> None:
    """Writes a latent scale factor into both the config (exported) and the live module."""
    cfg = model.config
    if component == "image":
        cfg.image_vae = dataclasses.replace(cfg.image_vae, scale_factor=value)
        model.autokl.config = cfg.image_vae
        model.autokl.scale_factor = value
    elif component == "audio":
        cfg.audio_vae = dataclasses.replace(cfg.audio_vae, scale_factor=value)
        model.audioldm.config = cfg.audio_vae
        model.audioldm.scale_factor = value
    else:
        cfg.optimus.scale_factor = value
        model.optimus.config = cfg.optimus
        model.optimus.scale_factor = value
