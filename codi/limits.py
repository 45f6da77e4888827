"""The largest inputs CoDi decodes, each overridable by a CODI_MAX_... environment variable.

Checks run on sizes read from file headers before anything is decoded, so one small upload (a
100000x100000 PNG, an hour of 4K video) is refused with a message instead of exhausting memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class MediaLimits:
    """Upper bounds on what one input may decode to; defaults fit a 16 GB machine with room for the model."""

    image_pixels: int = 64_000_000  # width * height of an image (192 MB as RGB)
    video_pixels: int = 3840 * 2160  # width * height of one video frame (4K UHD)
    video_seconds: float = 60.0  # seconds of video decoded in one read
    video_frames: int = 1800  # frames decoded in one read
    video_megabytes: float = 4096.0  # RGB bytes of all decoded frames together (frames * width * height * 3)
    audio_seconds: float = 600.0  # seconds of audio decoded in one read
    audio_channels: int = 32  # channels of an audio file (mixed down to mono as they are read)
    audio_sample_rate: int = 384_000  # samples per second of an audio file

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MediaLimits:
        """The defaults, with each field replaced by CODI_MAX_<FIELD> (e.g. CODI_MAX_IMAGE_PIXELS) when set."""
        environ = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for f in fields(cls):
            raw = environ.get(env_name(f.name), "").strip().replace("_", "")
            if not raw:
                continue
            kind = float if f.type == "float" else int
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{env_name(f.name)}={raw!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"{env_name(f.name)}={raw!r} must be positive")
            values[f.name] = value
        return cls(**values)


def env_name(field: str) -> str:
    """The environment variable overriding a MediaLimits field: 'image_pixels' -> 'CODI_MAX_IMAGE_PIXELS'."""
    return f"CODI_MAX_{field.upper()}"


def over_limit(field: str, amount: float, limit: float, unit: str, hint: str = "") -> str:
    """The end of a refusal: the amount, the limit and how to raise it.

    Example: over_limit("image_pixels", 4e8, 64e6, "pixels") -> "400,000,000 pixels, over the limit of
    64,000,000 pixels (set CODI_MAX_IMAGE_PIXELS to raise it)".
    """
    raise_it = f"set {env_name(field)} to raise it" + (f", or {hint}" if hint else "")
    return f"{_number(amount)} {unit}, over the limit of {_number(limit)} {unit} ({raise_it})"


def _number(x: float) -> str:
    if isinstance(x, int):
        return f"{x:,}"  # exact, and past float range too
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"
