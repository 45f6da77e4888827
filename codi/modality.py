"""The closed set of modalities CoDi reads and writes."""

from __future__ import annotations

from enum import Enum


class Modality(str, Enum):
    """One of the four media types; the value is the official CoDi name."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Returns the modality named `value` or raises a ValueError listing the valid names."""
        if isinstance(value, Modality):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown modality {value!r}; expected one of: {names}") from None


ALL_MODALITIES: tuple[Modality, ...] = (Modality.TEXT, Modality.IMAGE, Modality.VIDEO, Modality.AUDIO)
