"""Training data from the Shapes & Tones world: tensors, CLIP pixels, attribute-match targets and latent pools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from codi.models.clip import IMAGE_MEAN, IMAGE_STD
from codi.world import ATTRIBUTES, Scene, caption, render_videos
from codi.world.render import _tone


def to_signed(images_u8: np.ndarray) -> Tensor:
    """uint8 images [N,H,W,3] or videos [N,F,H,W,3] -> float [-1,1] [N,3,H,W] or [N,3,F,H,W]."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float() / 127.5 - 1.0  # [N,(F,)H,W,3]
    return x.movedim(-1, 1).contiguous()  # [N,3,(F,)H,W]


def clip_pixels(images_u8: np.ndarray, size: int) -> Tensor:
    """uint8 [N,H,W,3] or [N,F,H,W,3] -> CLIP-normalised pixels [N,3,S,S] or [N,F,3,S,S].

    Equals `codi.models.clip.clip_preprocess` on the pipeline's [-1,1] input when H == S (no resize).
    """
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float() / 255.0  # [N,(F,)H,W,3]
    mean, std = torch.tensor(IMAGE_MEAN), torch.tensor(IMAGE_STD)
    x = ((x - mean) / std).movedim(-1, -3)  # [N,(F,)3,H,W]
    if x.shape[-1] != size:
        flat = x.reshape(-1, *x.shape[-3:])  # [M,3,H,W]
        flat = torch.nn.functional.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
        x = flat.view(*x.shape[:-2], size, size)
    return x.contiguous()


def match_matrix(stated: Sequence[dict], actual: Sequence[dict], keys: Sequence[str] = ATTRIBUTES) -> Tensor:
    """[B,B] 1.0 where every attribute caption i states (among `keys`) holds for sample j, else 0.0."""
    out = torch.zeros(len(stated), len(actual))
    for i, s in enumerate(stated):
        for j, a in enumerate(actual):
            out[i, j] = float(all(s.get(k) is None or s[k] == a[k] for k in keys))
    return out


def tone(scene: Scene) -> np.ndarray:
    """The scene's 1 s audio (float32 [16000]); it depends only on the three attributes (cached)."""
    return _tone(scene.color, scene.shape, scene.motion)


@dataclass
class CaptionSampler:
    """Draws full or partial captions of scenes from a numpy generator."""

    rng: np.random.Generator

    def __call__(self, scenes: Sequence[Scene], p_drop: float = 0.0, for_image: bool = False) -> list[str]:
        out = []
        for s in scenes:
            keep = self.rng.random(3) >= p_drop
            out.append(caption(s, self.rng, bool(keep[0]), bool(keep[1]), bool(keep[2]), for_image=for_image))
        return out

    def stated(self, scenes: Sequence[Scene], texts: Sequence[str]) -> list[dict]:
        from codi.world import parse_caption

        return [parse_caption(t) for t in texts]


class EmbeddingCache:
    """Memoises a frozen encoder's per-item output (captions, tones) keyed by a hashable."""

    def __init__(self, fn: Callable[[list], Tensor]) -> None:
        self.fn = fn
        self.store: dict = {}

    @torch.no_grad()
    def __call__(self, keys: Sequence, items: Sequence | None = None) -> Tensor:
        """Returns [N,...] outputs for `keys` (items default to the keys themselves)."""
        items = list(keys) if items is None else list(items)
        todo = [(k, it) for k, it in zip(keys, items) if k not in self.store]
        uniq = dict(todo)
        if uniq:
            out = self.fn(list(uniq.values()))
            for k, o in zip(uniq, out):
                self.store[k] = o.detach()
        return torch.stack([self.store[k] for k in keys])


@dataclass
class ScenePool:
    """A fixed set of rendered scenes with their frozen-encoder outputs, sampled by index for training."""

    scenes: list[Scene]
    video_latents: Tensor  # [P,C,F,h,w] scaled image-VAE latents of every frame (frame 0 = the image)
    image_embeds: Tensor  # [P,D] CLIP image embeddings of frame 0
    video_embeds: Tensor  # [P,D] CLIP video embeddings

    def __len__(self) -> int:
        return len(self.scenes)


def render_pool_videos(scenes: Sequence[Scene], chunk: int = 64) -> list[np.ndarray]:
    """uint8 videos [n,F,H,W,3] in chunks (bounded memory)."""
    return [render_videos(scenes[i : i + chunk]) for i in range(0, len(scenes), chunk)]
