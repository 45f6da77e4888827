"""Readers that score outputs for the Shapes & Tones world, as the last section of `shapes-world.md` says.

Every reader returns a dict of attribute -> value, with None for what it cannot read, and never raises on
odd input (blank, noise, silence, other sizes or dtypes).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

import numpy as np

from codi.world.scene import (
    BACKGROUND,
    COLORS,
    F0,
    GENERIC_SHAPE_WORDS,
    MOTION_PHRASES,
    PALETTE,
    SAMPLE_RATE,
    SHAPE_WORDS,
)

CANDIDATE_L1 = 60.0  # a pixel further than this from the background (sum of |channel diffs|) is a candidate
CORNER = 0.2  # corner patches are 20 % x 20 % of the object's bounding box
SQUARE_MIN, TRIANGLE_TOP_MAX, TRIANGLE_BOTTOM_MIN = 0.55, 0.3, 0.5  # corner-fill thresholds of the contract
CIRCLE_MAX = 0.5  # "about a quarter or less": a disc fills 0.13 of each patch, pixelised up to 0.375 at r = 9
MIN_BOX = 3  # a smaller bounding box has no readable corners
STILL_PX = 6.0  # centroid displacement under this on both axes is still

PITCH_TREND_OCT = 0.05  # |log2(f_last / f_first)| above this is a glide (the contract's glides give ~0.2)
LOUD_TREND = np.log(1.5)  # |ln(rms_last / rms_first)| above this is a ramp (the contract's ramps give ~1.0)
SILENCE_RMS = 1e-4
PEAK_PROMINENCE = 10.0  # fundamental peak over the median spectrum magnitude
F_SEARCH = (80.0, 2000.0)  # Hz searched for the fundamental
HARMONIC_BAND = 0.08  # relative half-width of the band whose energy measures a harmonic
TIMBRES: dict[str, tuple[float, float]] = {  # (2nd, 3rd) harmonic amplitude / fundamental
    "circle": (0.0, 0.0),  # sine
    "square": (0.0, 1.0 / 3.0),  # square wave
    "triangle": (0.5, 1.0 / 3.0),  # sawtooth
}

_BACKGROUND = np.asarray(BACKGROUND, dtype=np.float32)  # [3]
_PALETTE = np.asarray([PALETTE[c] for c in COLORS], dtype=np.float32)  # [4, 3]
_NONE_IMAGE: dict[str, str | None] = {"color": None, "shape": None}


# --------------------------------------------------------------------------------------- images, video


def _as_frames(x: object, ndim: int) -> np.ndarray | None:
    """Float32 [..., H, W, 3] in 0..255 from uint8/float RGB(A) input with `ndim` dims, else None.

    A grey [H, W] image is accepted; a grey clip is not (it cannot be told from one RGB frame).
    """
    try:
        a = np.asarray(x)
        if a.dtype == object or a.size == 0 or a.ndim not in ((2, 3) if ndim == 3 else (ndim,)):
            return None
        a = np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0), 0.0, 255.0)  # display range
    except (TypeError, ValueError):
        return None
    if a.ndim == 2:  # grey image
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] == 4:  # RGBA
        a = a[..., :3]
    return a if a.shape[-1] == 3 and min(a.shape[-3:-1]) > 0 else None


def _read_color(pixels: np.ndarray) -> int | None:
    """Palette index nearest (L1) to the mean of the candidate pixels of float [..., 3], or None."""
    candidates = np.abs(pixels - _BACKGROUND).sum(-1) > CANDIDATE_L1  # [...]
    if not candidates.any():
        return None
    mean = pixels[candidates].mean(0)  # [3]
    return int(np.abs(_PALETTE - mean).sum(-1).argmin())


def _object_mask(frame: np.ndarray, color: int) -> np.ndarray:
    """Pixels nearer (L1) to the palette colour than to the background: bool [H, W]."""
    to_color = np.abs(frame - _PALETTE[color]).sum(-1)  # [H, W]
    to_background = np.abs(frame - _BACKGROUND).sum(-1)  # [H, W]
    return to_color < to_background


def corner_fills(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Object fill of the four 20 % x 20 % corner patches of its bounding box.

    Args:
        mask: bool [H, W] object pixels.

    Returns:
        (top-left, top-right, bottom-left, bottom-right) fractions, or None when the object is empty or
        its bounding box is under 3 px on a side.
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # [h, w]
    h, w = box.shape
    if min(h, w) < MIN_BOX:
        return None
    ph, pw = max(1, round(CORNER * h)), max(1, round(CORNER * w))
    top, bottom = box[:ph], box[h - ph :]  # [ph, w]
    return (
        float(top[:, :pw].mean()),
        float(top[:, w - pw :].mean()),
        float(bottom[:, :pw].mean()),
        float(bottom[:, w - pw :].mean()),
    )


def _read_shape(mask: np.ndarray) -> str | None:
    """Shape from the corner fills: square fills all four, triangle the bottom two, circle none."""
    fills = corner_fills(mask)
    if fills is None:
        return None
    top, bottom = (fills[0] + fills[1]) / 2, (fills[2] + fills[3]) / 2
    if top >= SQUARE_MIN and bottom >= SQUARE_MIN:
        return "square"
    if top < TRIANGLE_TOP_MAX and bottom >= TRIANGLE_BOTTOM_MIN:
        return "triangle"
    if max(fills) < CIRCLE_MAX:  # none of the four corners is filled
        return "circle"
    return None


def read_image(img: np.ndarray) -> dict[str, str | None]:
    """Reads colour and shape of the one object in an image.

    Args:
        img: uint8 (or float 0..255) [H, W, 3] RGB image; grey [H, W] and RGBA are accepted.

    Returns:
        {"color": str | None, "shape": str | None}.
    """
    frame = _as_frames(img, 3)
    if frame is None:
        return dict(_NONE_IMAGE)
    color = _read_color(frame)
    if color is None:
        return dict(_NONE_IMAGE)
    return {"color": COLORS[color], "shape": _read_shape(_object_mask(frame, color))}


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    """Mean (x, y) of the object pixels of bool [H, W], or None when empty."""
    ys, xs = np.nonzero(mask)
    return None if xs.size == 0 else np.array([xs.mean(), ys.mean()])


def _motion_from_displacement(dx: float, dy: float) -> str:
    """Still under 6 px on both axes, else the larger axis and its sign (image up is -y)."""
    if abs(dx) < STILL_PX and abs(dy) < STILL_PX:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def read_video(frames: np.ndarray) -> dict[str, str | None]:
    """Reads colour, shape (majority over frames) and motion (centroid, first -> last frame) of a clip.

    Args:
        frames: uint8 (or float 0..255) [F, H, W, 3] RGB frames.

    Returns:
        {"color": ..., "shape": ..., "motion": ...}, each a str or None.
    """
    result: dict[str, str | None] = {"color": None, "shape": None, "motion": None}
    clip = _as_frames(frames, 4)
    if clip is None:
        return result
    color = _read_color(clip)  # candidates pooled over all frames
    if color is None:
        return result
    result["color"] = COLORS[color]
    masks = [_object_mask(f, color) for f in clip]
    votes = Counter(s for s in map(_read_shape, masks) if s is not None).most_common(2)
    if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]):
        result["shape"] = votes[0][0]
    first, last = _centroid(masks[0]), _centroid(masks[-1])
    if len(masks) > 1 and first is not None and last is not None:
        result["motion"] = _motion_from_displacement(*(last - first))
    return result


# ------------------------------------------------------------------------------------------------ audio


def _spectrum(segment: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann-windowed, zero-padded magnitude spectrum: (freqs [K] Hz, magnitude [K])."""
    n_fft = 1 << int(np.ceil(np.log2(max(4 * segment.size, 4096))))
    window = np.hanning(segment.size)  # [T]
    mag = np.abs(np.fft.rfft((segment - segment.mean()) * window, n_fft))  # [K], DC removed
    return np.fft.rfftfreq(n_fft, 1.0 / sr), mag


def _band_amplitude(freqs: np.ndarray, mag: np.ndarray, f: float) -> float:
    """Amplitude of the partial near f: root of the energy within +-8 % (robust to glides)."""
    band = np.abs(freqs - f) <= HARMONIC_BAND * f
    return float(np.sqrt((mag[band] ** 2).sum()))


def _fundamental(segment: np.ndarray, sr: int) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Fundamental frequency of a segment (lowest strong spectral peak, energy-centred), or None."""
    if segment.size < 64:
        return None
    freqs, mag = _spectrum(segment, sr)
    search = (freqs >= F_SEARCH[0]) & (freqs <= min(F_SEARCH[1], sr / 2))
    audible = (freqs >= F_SEARCH[0]) & (freqs <= sr / 2)
    if not search.any() or mag[search].max() <= PEAK_PROMINENCE * np.median(mag[audible]) + 1e-12:
        return None
    idx = np.flatnonzero(search)
    m = mag[idx]  # [K']
    strong = m >= 0.3 * m.max()
    peaks = strong[1:-1] & (m[1:-1] >= m[:-2]) & (m[1:-1] >= m[2:])  # local maxima
    hits = np.flatnonzero(peaks) + 1
    f_peak = freqs[idx[hits[0] if hits.size else int(m.argmax())]]
    band = np.abs(freqs - f_peak) <= HARMONIC_BAND * f_peak
    power = mag[band] ** 2
    return float((freqs[band] * power).sum() / power.sum()), freqs, mag


def _nearest_color(f: float) -> str:
    """Colour whose f0 is nearest to f on a log scale."""
    return min(COLORS, key=lambda c: abs(np.log(f / F0[c])))


def _timbre(f: float, freqs: np.ndarray, mag: np.ndarray) -> str | None:
    """Shape whose (2nd, 3rd) harmonic ratios are nearest to the measured ones."""
    a1 = _band_amplitude(freqs, mag, f)
    if a1 <= 0 or 3 * f * (1 + HARMONIC_BAND) > freqs[-1]:
        return None
    h = np.array([_band_amplitude(freqs, mag, 2 * f), _band_amplitude(freqs, mag, 3 * f)]) / a1
    if (h > 1.0).any():  # the fundamental is not the strongest partial: none of our waveforms
        return None
    return min(TIMBRES, key=lambda s: float(np.hypot(*(h - np.asarray(TIMBRES[s])))))


def _as_wave(wave: object) -> np.ndarray | None:
    """Float64 mono [T] from any array-like (channels averaged), or None."""
    try:
        a = np.squeeze(np.asarray(wave, dtype=np.float64))
    except (TypeError, ValueError):
        return None
    if a.ndim == 2:  # (channels, T) or (T, channels)
        a = a.mean(axis=int(np.argmin(a.shape)))
    if a.ndim != 1:
        return None
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    return a - a.mean() if a.size else a  # [T], DC removed


def read_audio(wave: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, str | None]:
    """Reads colour (pitch), shape (timbre) and motion (pitch glide or loudness ramp) of a tone.

    Args:
        wave: float [T] mono waveform (1.0 s in the contract; other lengths are read alike).
        sr: sample rate in Hz.

    Returns:
        {"color": ..., "shape": ..., "motion": ...}, each a str or None.
    """
    result: dict[str, str | None] = {"color": None, "shape": None, "motion": None}
    a = _as_wave(wave)
    if a is None or sr <= 0 or a.size < sr // 10 or np.sqrt(np.mean(a**2)) < SILENCE_RMS:
        return result
    mid, edge = min(a.size, round(0.4 * sr)), min(a.size // 4, round(0.25 * sr))
    start = (a.size - mid) // 2
    middle = _fundamental(a[start : start + mid], sr)
    if middle is not None:
        result["color"] = _nearest_color(middle[0])
        result["shape"] = _timbre(*middle)
    head, tail = a[:edge], a[a.size - edge :]
    rms_head, rms_tail = np.sqrt(np.mean(head**2)), np.sqrt(np.mean(tail**2))
    loud = float(np.log((rms_tail + 1e-12) / (rms_head + 1e-12))) / LOUD_TREND  # > 1: louder
    f_head, f_tail = _fundamental(head, sr), _fundamental(tail, sr)
    pitch = None if f_head is None or f_tail is None else np.log2(f_tail[0] / f_head[0]) / PITCH_TREND_OCT
    if abs(loud) >= 1 and (pitch is None or abs(loud) >= abs(pitch)):
        result["motion"] = "right" if loud > 0 else "left"
    elif pitch is not None:
        result["motion"] = "still" if abs(pitch) < 1 else ("up" if pitch > 0 else "down")
    return result


# ------------------------------------------------------------------------------------------------- text

_COLOR_RE = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
_SHAPE_WORD = {w: s for s, words in SHAPE_WORDS.items() for w in words} | dict.fromkeys(GENERIC_SHAPE_WORDS)
_SHAPE_RE = re.compile(r"\b(" + "|".join(_SHAPE_WORD) + r")\b")
_MOTION_PHRASE = {p: m for m, phrases in MOTION_PHRASES.items() for p in phrases}
_MOTION_RE = re.compile(r"\b(" + "|".join(p.replace(" ", r"\s+") for p in _MOTION_PHRASE) + r")\b")


def parse_caption(text: str) -> dict[str, str | None]:
    """Reads the colour word, shape word and motion phrase of a caption (first of each).

    Args:
        text: a caption, any case and spacing.

    Returns:
        {"color": ..., "shape": ..., "motion": ...}; None where the caption states nothing
        ("shape"/"thing" state no shape).
    """
    if not isinstance(text, str):
        return {"color": None, "shape": None, "motion": None}
    t = text.lower()
    color, shape, motion = _COLOR_RE.search(t), _SHAPE_RE.search(t), _MOTION_RE.search(t)
    return {
        "color": color.group(1) if color else None,
        "shape": _SHAPE_WORD[shape.group(1)] if shape else None,
        "motion": _MOTION_PHRASE[" ".join(motion.group(1).split())] if motion else None,
    }


def compare(read: Mapping[str, str | None], target: Mapping[str, str | None]) -> dict[str, bool]:
    """Scores a reading against the attributes a prompt states (None in `target` is not scored).

    Returns:
        attribute -> whether it was read right, for every attribute stated in `target`.
    """
    return {k: read.get(k) == v for k, v in target.items() if v is not None}
