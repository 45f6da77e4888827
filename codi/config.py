"""Typed configuration of a whole CoDi model and the named presets (`official`, `tiny`)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codi.models.audio_vae import AudioVAEConfig
from codi.models.clap import CLAPAudioConfig
from codi.models.clip import CLIPEncoderConfig
from codi.models.optimus import OptimusConfig
from codi.models.unet import UNetConfig
from codi.models.vae import ImageVAEConfig
from codi.sampling import NoiseSchedule


@dataclass
class MediaConfig:
    """Sizes of generated media and of conditions fed to the prompt encoders."""

    image_size: int = 256  # generated image / video frame side (pixels)
    num_frames: int = 8  # generated video frames
    video_fps: float = 4.0  # playback rate of generated video (official demo: 8 frames over 2 s)
    audio_seconds: float = 10.0  # nominal generated audio length (AudioVAE: official 10 -> 1024 mel frames, 10.24 s)
    cond_image_size: int = 512  # side an input image is resized to before the prompt encoder
    cond_video_size: int = 256  # side input video frames are resized to (official regularize_video)
    cond_video_frames: int = 4  # frames sampled from an input video
    cond_video_seconds: float = 4.0  # window of an input video the frames are sampled from
    cond_audio_seconds: float = 10.23  # input audio is cut to at most this long (official demo)


@dataclass
class SamplingDefaults:
    """Defaults a call uses when the caller does not say."""

    steps: int = 25  # DPM-Solver++ 25 (tiny: 15) scores within 2 points of DDIM at 50 on every eval row (EVAL.md)
    guidance_scale: float = 7.5
    sampler: str = "dpm"  # the released code samples with DDIM at 50 steps: sampler="ddim", steps=50
    coupling: str = "official"
    partner_weight: float = 0.0  # other outputs' environments in each output's condition (joint calls; 0 = paper)
    text_temperature: float = 1.0  # softmax temperature of the Optimus text decoder (official: 1)


@dataclass
class CoDiConfig:
    """Everything needed to build a CoDi model: components, schedule, media sizes and defaults."""

    name: str
    description: str
    clip: CLIPEncoderConfig
    clap: CLAPAudioConfig
    optimus: OptimusConfig
    image_vae: ImageVAEConfig
    audio_vae: AudioVAEConfig
    unet_image: UNetConfig | None
    unet_audio: UNetConfig | None
    unet_text: UNetConfig | None
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    media: MediaConfig = field(default_factory=MediaConfig)
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoDiConfig:
        """Inverse of `to_dict` (the JSON stored beside a checkpoint)."""
        return _build(cls, d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CoDiConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _build(cls: type, d: dict[str, Any]) -> Any:
    """Rebuilds a nested dataclass from its `dataclasses.asdict` form (lists back to tuples where typed so)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return cls(**{k: _value(hints[k], v) for k, v in d.items()})


def _value(hint: Any, v: Any) -> Any:
    if v is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _value(args[0], v)
    if dataclasses.is_dataclass(hint) and isinstance(v, dict):
        return _build(hint, v)
    if origin is tuple and isinstance(v, list):
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_value(inner, x) if inner is not None else _tuple_deep(x) for x in v)
    return v


def _tuple_deep(v: Any) -> Any:
    return tuple(_tuple_deep(x) for x in v) if isinstance(v, list) else v


def official_config() -> CoDiConfig:
    """The released CoDi (Hugging Face `ZinengTang/CoDi`), sizes per the official configs."""
    return CoDiConfig(
        name="official",
        description="The released CoDi weights (ZinengTang/CoDi): 256 px images, 8-frame video, 10 s audio.",
        clip=CLIPEncoderConfig.official(),
        clap=CLAPAudioConfig.official(),
        optimus=OptimusConfig.official(),
        image_vae=ImageVAEConfig.official(),
        audio_vae=AudioVAEConfig.official(),
        unet_image=UNetConfig.official_image(),
        unet_audio=UNetConfig.official_audio(),
        unet_text=UNetConfig.official_text(),
    )
