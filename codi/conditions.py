"""Turning user inputs (strings, images, videos, audio; files or arrays) into encoder-ready tensors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from codi.config import MediaConfig
from codi.media import (
    AudioClip,
    MediaError,
    VideoClip,
    audio_from_array,
    image_from_array,
    read_audio,
    read_image,
    read_video,
    video_frames_from_array,
)
from codi.modality import Modality


class InputError(ValueError):
    """A generation request is malformed; the message tells the user what to change."""


@dataclass
class Condition:
    """One input of a request: its modality, its value (already loaded) and its mixing weight."""

    modality: Modality
    value: Any
    weight: float = 1.0


def collect_conditions(
    inputs: Mapping[str | Modality, Any] | Iterable[tuple[str | Modality, Any]] | None,
    weights: Mapping[str | Modality, float | list[float]] | None = None,
) -> list[Condition]:
    """Normalises `inputs` to a list of conditions; a modality may carry a list of values (two images).

    Args:
        inputs: {modality: value or [values]} or [(modality, value), ...]; None/empty values are skipped.
        weights: {modality: weight or [weights per value]}; missing weights are 1.
    """
    pairs: list[tuple[Modality, Any]] = []
    items = inputs.items() if isinstance(inputs, Mapping) else (inputs or [])
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise InputError(
            f"inputs must map a modality to a value, e.g. {{'text': 'a cat'}}, got {type(inputs).__name__}"
        )
    items = list(items)
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
        raise InputError("inputs given as a list must hold (modality, value) pairs, e.g. [('text', 'a cat')]")
    for key, value in items:
        m = parse_modality(key)
        values = value if isinstance(value, (list, tuple)) and m is not Modality.AUDIO else [value]
        if m is Modality.AUDIO and isinstance(value, list):
            values = value
        pairs += [(m, v) for v in values if not _is_empty(v)]
    if weights is not None and not isinstance(weights, Mapping):
        raise InputError(f"weights must map a modality to a weight, e.g. {{'text': 1.0}}, got {type(weights).__name__}")
    w = {parse_modality(k): v for k, v in (weights or {}).items()}
    unknown = set(w) - {m for m, _ in pairs}
    if unknown:
        names = ", ".join(sorted(m.value for m in unknown))
        raise InputError(f"a weight was given for {names} but there is no such input")
    counts: dict[Modality, int] = {}
    out = []
    for m, v in pairs:
        i = counts.get(m, 0)
        counts[m] = i + 1
        given = w.get(m, 1.0)
        if isinstance(given, (list, tuple)) and i >= len(given):
            raise InputError(f"{len(given)} weight(s) for the {m.value} inputs, but there are more {m.value} inputs")
        weight = given[i] if isinstance(given, (list, tuple)) else given
        try:
            weight = float(weight)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"the weight of the {m.value} input must be a number, got {weight!r:.40}") from None
        if not np.isfinite(weight) or weight < 0:
            raise InputError(f"the weight of the {m.value} input must be a finite number >= 0, got {weight}")
        out.append(Condition(m, v, weight))
    if out and sum(c.weight for c in out) <= 0:
        raise InputError("all input weights are 0: give at least one input a positive weight")
    return [c for c in out if c.weight > 0]


def parse_modality(value: str | Modality) -> Modality:
    """Modality.parse with the request error type."""
    try:
        return Modality.parse(value)
    except ValueError as e:
        raise InputError(str(e)) from None


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip() and not Path(v).suffix)


def image_tensor(
    value: Any, media: MediaConfig, generator: torch.Generator | None = None, official_random: bool = False
) -> Tensor:
    """An image (PIL, array HxWx3, path) -> [1,3,S,S] in [-1,1]: square crop, bicubic resize to S.

    The crop is centred; `official_random=True` reproduces the released code's random crop and random
    horizontal flip (drawn from `generator`).
    """
    img = _to_pil(value)
    w, h = img.size
    side = min(w, h)
    if official_random:
        left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
        top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
    else:
        left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    size = media.cond_image_size
    img = img.resize((size, size), Image.BICUBIC)
    if official_random and float(torch.rand((1,), generator=generator)) < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)  # [S,S,3]
    return arr.permute(2, 0, 1).unsqueeze(0)  # [1,3,S,S]


def _to_pil(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, (str, Path)):
        return read_image(value)
    if isinstance(value, np.ndarray):
        return image_from_array(value)  # uint8, or floats in [0, 1]; anything else refused
    raise InputError(f"cannot use a {type(value).__name__} as an image")


def video_tensor(value: Any, media: MediaConfig) -> Tensor:
    """A video (VideoClip, path, frames [T,H,W,3]) -> [1,3,F,S,S] in [-1,1].

    F = media.cond_video_frames frames evenly spaced over the first media.cond_video_seconds of the clip,
    centre square crop, bicubic resize to media.cond_video_size (official `regularize_video`: 256).
    """
    clip = _to_video(value, media)
    frames = clip.frames
    n = len(frames)
    if n == 0:
        raise InputError("the input video has no frames")
    window = min(n, max(1, int(round(media.cond_video_seconds * clip.fps))))
    idx = np.linspace(0, window - 1, media.cond_video_frames).round().astype(int)
    out = []
    for i in idx:
        img = Image.fromarray(frames[i])
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        size = media.cond_video_size
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        out.append(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    arr = torch.from_numpy(np.stack(out))  # [F,S,S,3]
    return arr.permute(3, 0, 1, 2).unsqueeze(0)  # [1,3,F,S,S]


def _to_video(value: Any, media: MediaConfig) -> VideoClip:
    if isinstance(value, VideoClip):
        fps = value.fps
        if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not 0 < fps <= 1000:
            raise MediaError(
                f"a video's frame rate must be a number of frames per second in (0, 1000], got {fps!r:.40}"
            )
        return VideoClip(video_frames_from_array(value.frames), float(fps), value.audio)
    if isinstance(value, (str, Path)):
        return read_video(value, max_seconds=media.cond_video_seconds + 1.0)
    if isinstance(value, np.ndarray) and value.ndim == 4 and value.shape[-1] == 3:
        fps = float(media.cond_video_frames / media.cond_video_seconds)
        return VideoClip(frames=video_frames_from_array(value), fps=fps)  # floats in [0, 1] scaled, not black
    raise InputError(f"cannot use a {type(value).__name__} as a video (expected a file or frames [T,H,W,3])")


def audio_tensor(value: Any, media: MediaConfig, sample_rate: int = 16000) -> Tensor:
    """Audio (AudioClip, path, (waveform, rate)) -> [1,T] mono float32 at `sample_rate`, cut to the
    configured condition length."""
    from codi.audio_dsp import resample

    clip = _to_audio(value, media)  # mono, non-empty, finite float32 [T]
    wave = torch.from_numpy(clip.waveform)
    wave = wave[: int((media.cond_audio_seconds + 0.5) * clip.sample_rate) + 1]  # what the model keeps, + margin
    if clip.sample_rate != sample_rate:
        wave = resample(wave, int(clip.sample_rate), sample_rate)
    max_len = int(media.cond_audio_seconds * sample_rate)
    return wave[:max_len].clamp(-1.0, 1.0).unsqueeze(0)  # [1,T]


def _to_audio(value: Any, media: MediaConfig) -> AudioClip:
    if isinstance(value, AudioClip):
        return audio_from_array(value.waveform, value.sample_rate)  # refuses empty or non-finite samples
    if isinstance(value, (str, Path)):
        return read_audio(value, max_seconds=media.cond_audio_seconds + 0.5)  # what the model keeps, + margin
    if isinstance(value, tuple) and len(value) == 2:
        a, b = value
        wave, rate = (b, a) if isinstance(a, (int, np.integer)) else (a, b)  # gradio gives (rate, data)
        return audio_from_array(wave, rate)  # checks the samples and the rate
    raise InputError(f"cannot use a {type(value).__name__} as audio (expected a file or (waveform, rate))")


def load_condition_value(c: Condition, media: MediaConfig) -> Any:
    """Reads files eagerly so bad inputs fail before any model work, with a clear message."""
    try:
        if c.modality is Modality.TEXT:
            if not isinstance(c.value, str):
                raise InputError(f"the text input must be a string, got {type(c.value).__name__}")
            try:
                c.value.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate, e.g. from a broken JSON escape
                raise InputError(
                    f"the text input has an invalid character at position {e.start} ({c.value[e.start]!r}, a lone "
                    "surrogate): it cannot be encoded"
                ) from None
            return c.value
        if c.modality is Modality.IMAGE:
            return _to_pil(c.value)
        if c.modality is Modality.VIDEO:
            return _to_video(c.value, media)
        return _to_audio(c.value, media)
    except MediaError as e:
        raise InputError(str(e)) from None
