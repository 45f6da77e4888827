"""CLIP prompt encoder of CoDi: one L2-normalised token per text, image or video condition.

Wraps transformers' `CLIPModel` and adds CoDi's temporal block (`clip_temporal.CLIPTemporalBlock`) to
every vision encoder layer; 4-D pixels take the plain transformers vision path, 5-D pixels (video)
run the layers here so the temporal block can sit between spatial attention and MLP.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import LongTensor, Tensor, nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig

from codi.models.clip_temporal import CLIPTemporalBlock

BPE_PATH = Path(__file__).resolve().parents[1] / "tokenizers" / "clip_bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77  # tokens per prompt, <|startoftext|> and <|endoftext|> included
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
OFFICIAL_INPUT_SIZE = 512  # side of the official random square crop (regularize_image)


@dataclass(frozen=True)
class CLIPTextTowerConfig:
    """Sizes of the CLIP text transformer."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int = 49408
    max_position_embeddings: int = CONTEXT_LENGTH
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPTextTowerConfig:
        """Old-style `text_config_dict`; missing keys take transformers' defaults, as in the official code."""
        hf = CLIPTextConfig(**d)
        return cls(**{f.name: getattr(hf, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class CLIPVisionTowerConfig:
    """Sizes of the CLIP vision transformer."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPVisionTowerConfig:
        """Old-style `vision_config_dict`; missing keys take transformers' defaults, as in the official code."""
        hf = CLIPVisionConfig(**d)
        return cls(**{f.name: getattr(hf, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class CLIPEncoderConfig:
    """CLIP text + vision towers, joint projection width and whether the vision layers get temporal blocks."""

    text: CLIPTextTowerConfig
    vision: CLIPVisionTowerConfig
    projection_dim: int = 768
    add_temporal_attention: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPEncoderConfig:
        """Reads a fixture / official config: `text_config_dict`, `vision_config_dict` (or `*_config`)."""
        text = d.get("text_config_dict", d.get("text_config")) or {}
        vision = d.get("vision_config_dict", d.get("vision_config")) or {}
        return cls(
            text=CLIPTextTowerConfig.from_dict(text),
            vision=CLIPVisionTowerConfig.from_dict(vision),
            projection_dim=int(d.get("projection_dim", 512)),  # CLIPConfig's default
            add_temporal_attention=bool(d.get("add_temporal_attention", True)),
        )

    @classmethod
    def official(cls) -> CLIPEncoderConfig:
        """ViT-L/14 (openai/clip-vit-large-patch14) with temporal blocks, as released with CoDi."""
        return CLIP_PRESETS["official"]

    def to_transformers(self) -> CLIPConfig:
        """The transformers `CLIPConfig` of the two towers."""
        text = {f.name: getattr(self.text, f.name) for f in fields(self.text)}
        vision = {f.name: getattr(self.vision, f.name) for f in fields(self.vision)}
        return CLIPConfig(
            text_config={**text, "projection_dim": self.projection_dim},
            vision_config={**vision, "projection_dim": self.projection_dim},
            projection_dim=self.projection_dim,
        )


CLIP_PRESETS: dict[str, CLIPEncoderConfig] = {
    "official": CLIPEncoderConfig(
        text=CLIPTextTowerConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        vision=CLIPVisionTowerConfig(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
        ),
    ),
    "tiny": CLIPEncoderConfig(
        text=CLIPTextTowerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=CLIPVisionTowerConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    ),
}


@lru_cache(maxsize=2)
def load_clip_tokenizer(bpe_path: str | Path = BPE_PATH) -> CLIPTokenizer:
    """The openai CLIP tokenizer, vocabulary and merges derived in memory from the BPE merges list.

    Same derivation as openai's `SimpleTokenizer`: 256 byte symbols, the same with `</w>`, the first
    48894 merges (in rank order) and the two special tokens -> 49408 ids, `<|startoftext|>` = 49406,
    `<|endoftext|>` = 49407 (also the padding token), 77 tokens per prompt.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lines = gzip.decompress(Path(bpe_path).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)


def clip_tokenize(texts: Sequence[str]) -> LongTensor:
    """Prompts -> token ids [B,77]: <|startoftext|> ... <|endoftext|>, padded with <|endoftext|>, truncated."""
    batch = load_clip_tokenizer()(
        list(texts), padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
    )
    return batch["input_ids"]  # [B,77]


def clip_preprocess(images: Tensor, size: int = 224) -> Tensor:
    """The official CLIP image processing of [-1,1] images (transformers-4.26 `CLIPFeatureExtractor`).

    (x+1)/2 -> x*255 truncated to uint8 -> PIL bicubic resize of the shortest side to `size` (long side
    int(size*long/short)) -> center crop `size` -> /255 -> CLIP mean/std. Runs on CPU through PIL.

    Args:
        images: [N,3,H,W] in [-1,1], any device/dtype.
    Returns:
        [N,3,size,size] float32 on the CPU.
    """
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)  # [N,3,H,W]
    x = (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()  # [N,H,W,3] truncation, like astype
    mean, std = np.array(IMAGE_MEAN), np.array(IMAGE_STD)
    out = []
    for frame in x:
        h, w = frame.shape[:2]
        short, long = min(h, w), max(h, w)
        new_long = int(size * long / short)
        new_h, new_w = (size, new_long) if h <= w else (new_long, size)
        img = Image.fromarray(frame).resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        arr = np.asarray(img)[top : top + size, left : left + size]  # [size,size,3] uint8
        out.append(((arr / 255.0 - mean) / std).transpose(2, 0, 1))  # [3,size,size] float64
    return torch.from_numpy(np.stack(out)).float()  # [N,3,size,size]


def official_random_view(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The official `regularize_image` randomness: random square crop, bicubic 512 px, random h-flip.

    Args:
        images: [N,3,H,W] in [-1,1].
        generator: the source of the crop offsets and flips (CPU generator or None).
    Returns:
        [N,3,512,512] in [-1,1].
    """
    out = []
    for img in images:
        h, w = img.shape[-2:]
        side = min(h, w)
        top = int(torch.randint(h - side + 1, (1,), generator=generator))
        left = int(torch.randint(w - side + 1, (1,), generator=generator))
        crop = img[None, :, top : top + side, left : left + side]  # [1,3,side,side]
        size = (OFFICIAL_INPUT_SIZE, OFFICIAL_INPUT_SIZE)
        crop = F.interpolate(crop.float(), size=size, mode="bicubic", antialias=True).clamp(-1, 1)
        if float(torch.rand((), generator=generator)) < 0.5:
            crop = crop.flip(-1)  # [1,3,512,512]
        out.append(crop.to(img.dtype))
    return torch.cat(out)  # [N,3,512,512]


class CLIPEncoder(nn.Module):
    """CoDi's CLIP condition encoder: text, image or video -> one L2-normalised [B,1,P] token."""

    def __init__(self, config: CLIPEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = CLIPModel(config.to_transformers())
        if config.add_temporal_attention:
            heads = config.vision.num_attention_heads
            for layer in self.model.vision_model.encoder.layers:
                layer.temporal_self_attn = CLIPTemporalBlock(config.vision.hidden_size, heads)

    @property
    def tokenizer(self) -> CLIPTokenizer:
        return load_clip_tokenizer()

    def _param(self) -> Tensor:
        return self.model.visual_projection.weight

    def tokenize(self, texts: Sequence[str]) -> LongTensor:
        """Returns the token ids [B,77] (padded with <|endoftext|>, truncated to 77) on the CPU."""
        return clip_tokenize(texts)  # [B,77]

    def encode_text(self, texts: Sequence[str] | LongTensor) -> Tensor:
        """Prompts (or their token ids [B,77]) -> [B,1,projection_dim], L2-normalised.

        Pools the final-LayerNorm state at argmax(ids) (the first <|endoftext|>), as the official code.
        """
        ids = texts if isinstance(texts, Tensor) else self.tokenize(texts)
        ids = ids.to(self.model.text_projection.weight.device)  # [B,77]
        hidden = self.model.text_model(input_ids=ids).last_hidden_state  # [B,77,W]
        pooled = hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]  # [B,W]
        return _normalize(self.model.text_projection(pooled)).unsqueeze(1)  # [B,1,P]

    def vision_pooled(self, pixel_values: Tensor) -> Tensor:
        """Pooled CLS features after `post_layernorm`, before the projection.

        Args:
            pixel_values: [B,3,S,S] images or [B,F,3,S,S] videos, CLIP-normalised.
        Returns:
            [B,hidden].
        """
        pixel_values = pixel_values.to(device=self._param().device, dtype=self._param().dtype)
        if pixel_values.ndim == 4:
            return self.model.vision_model(pixel_values=pixel_values).pooler_output  # [B,hidden]
        if pixel_values.ndim != 5:
            raise ValueError(f"expected [B,3,S,S] or [B,F,3,S,S] pixels, got {tuple(pixel_values.shape)}")
        return self._video_pooled(pixel_values)

    def _video_pooled(self, pixel_values: Tensor) -> Tensor:
        vision = self.model.vision_model
        b, frames = pixel_values.shape[:2]
        x = vision.pre_layrnorm(vision.embeddings(pixel_values.flatten(0, 1)))  # [(B*F),L,C]
        for layer in vision.encoder.layers:
            h, _ = layer.self_attn(hidden_states=layer.layer_norm1(x), attention_mask=None)  # [(B*F),L,C]
            x = x + h  # [(B*F),L,C]
            temporal = getattr(layer, "temporal_self_attn", None)
            if temporal is not None:
                x = temporal(x, frames)  # [(B*F),L,C]
            x = x + layer.mlp(layer.layer_norm2(x))  # [(B*F),L,C]
        x = x.view(b, frames, *x.shape[1:]).mean(dim=1)  # [B,L,C] mean over frames
        return vision.post_layernorm(x[:, 0])  # [B,C] CLS

    def encode_pixels(self, pixel_values: Tensor) -> Tensor:
        """CLIP-normalised pixels [B,3,S,S] or [B,F,3,S,S] -> [B,1,projection_dim], L2-normalised."""
        pooled = self.vision_pooled(pixel_values)  # [B,C]
        return _normalize(self.model.visual_projection(pooled)).unsqueeze(1)  # [B,1,P]

    def encode_image(
        self, images: Tensor, generator: torch.Generator | None = None, official_preprocessing: bool = False
    ) -> Tensor:
        """Images [B,3,H,W] in [-1,1] -> [B,1,projection_dim] through the official CLIP preprocessing.

        Deterministic by default. `official_preprocessing=True` first applies the official random square
        crop / 512 px resize / horizontal flip, drawn from `generator`.
        """
        if official_preprocessing:
            images = official_random_view(images, generator)  # [B,3,512,512]
        pixels = clip_preprocess(images, self.config.vision.image_size)  # [B,3,S,S]
        return self.encode_pixels(pixels)  # [B,1,P]

    def encode_video(self, video: Tensor) -> Tensor:
        """Videos [B,3,F,H,W] in [-1,1] -> [B,1,projection_dim]: frames preprocessed like images."""
        b, _, frames = video.shape[:3]
        flat = video.transpose(1, 2).flatten(0, 1)  # [(B*F),3,H,W] b-major
        pixels = clip_preprocess(flat, self.config.vision.image_size)  # [(B*F),3,S,S]
        return self.encode_pixels(pixels.view(b, frames, *pixels.shape[1:]))  # [B,1,P]

    def unconditional_text(self, batch: int) -> Tensor:
        """CLIP of the empty prompt, [batch,1,P]."""
        return self.encode_text([""]).repeat(batch, 1, 1)  # [batch,1,P]

    def unconditional_image(self, batch: int, size: tuple[int, int] = (224, 224)) -> Tensor:
        """CLIP of an all-zero [-1,1] image (uniform grey, 127 after truncation), [batch,1,P]."""
        zeros = self._param().new_zeros(1, 3, *size)  # [1,3,H,W]
        return self.encode_image(zeros).repeat(batch, 1, 1)  # [batch,1,P]

    def unconditional_video(self, batch: int, frames: int, size: tuple[int, int] = (224, 224)) -> Tensor:
        """CLIP of an all-zero [-1,1] video of `frames` frames, [batch,1,P]."""
        zeros = self._param().new_zeros(1, 3, frames, *size)  # [1,3,F,H,W]
        return self.encode_video(zeros).repeat(batch, 1, 1)  # [batch,1,P]


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)  # [...,P]


__all__ = [
    "CLIP_PRESETS",
    "CLIPEncoder",
    "CLIPEncoderConfig",
    "CLIPTextTowerConfig",
    "CLIPVisionTowerConfig",
    "clip_preprocess",
    "clip_tokenize",
    "load_clip_tokenizer",
    "official_random_view",
]
