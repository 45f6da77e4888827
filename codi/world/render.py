"""Renders Shapes & Tones scenes as image, video, audio and text, following `shapes-world.md`.

Images and frames are drawn with analytic anti-aliasing (area coverage of each pixel, exact for the
square's edges and the triangle's base), vectorised over many frames at once. Audio depends only on the
three attributes, so the 60 distinct waveforms are synthesised once and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from codi.modality import ALL_MODALITIES, Modality
from codi.world.scene import (
    ARTICLES,
    AUDIO_SECONDS,
    BACKGROUND,
    COLORS,
    DIRECTIONS,
    F0,
    GENERIC_SHAPE_WORDS,
    IMAGE_SIZE,
    MOTION_PHRASES,
    NUM_FRAMES,
    PALETTE,
    SAMPLE_RATE,
    SHAPE_WORDS,
    SHAPES,
    Rng,
    Scene,
    as_rng,
    frame_positions,
    sample_scene,
)

GLIDE = 1.12  # up/down: f(t) = f0 * GLIDE^(+-(2t - 1))
BAND_LIMIT_HZ = 7000.0  # harmonics n * f must stay below this
FADE_SECONDS = 0.01  # linear fade-in and fade-out
LOUD, QUIET = 0.5, 0.1  # envelope amplitudes
_CHUNK = 256  # frames rendered per vectorised step (bounds temporaries to a few MB)


# ----------------------------------------------------------------------------------------------- images


def _coverage(shape: str, r: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the object, for N objects of one shape.

    Args:
        shape: one of SHAPES.
        r, cx, cy: float32 [N] half-widths and centres (pixel-centre coordinates).
        size: canvas height = width.

    Returns:
        float32 [N, size, size] coverage in [0, 1].
    """
    r, cx, cy = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (r, cx, cy))  # [N, 1, 1]
    grid = np.arange(size, dtype=np.float32)
    x, y = grid[None, None, :], grid[None, :, None]  # [1, 1, S], [1, S, 1]
    if shape == "square":  # exact area of [x +- 0.5] x [y +- 0.5] inside the square
        cov_x = np.clip(np.minimum(x + 0.5, cx + r) - np.maximum(x - 0.5, cx - r), 0.0, 1.0)  # [N, 1, S]
        cov_y = np.clip(np.minimum(y + 0.5, cy + r) - np.maximum(y - 0.5, cy - r), 0.0, 1.0)  # [N, S, 1]
        return cov_x * cov_y  # [N, S, S]
    if shape == "circle":  # signed distance to the rim, one pixel wide ramp
        dist = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)  # [N, S, S]
        return np.clip(r - dist + 0.5, 0.0, 1.0)  # [N, S, S]
    if shape == "triangle":  # apex (cx, cy - r), base 2r on the row cy + r
        to_base = (cy + r) - y  # [N, S, 1] distance above the base
        half_width = 0.5 * (y - (cy - r))  # [N, S, 1] half-width of the triangle on row y
        to_side = (half_width - np.abs(x - cx)) * np.float32(2.0 / np.sqrt(5.0))  # [N, S, S]
        return np.clip(np.minimum(to_side, to_base) + 0.5, 0.0, 1.0)  # [N, S, S]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_frames(
    colors: Iterable[str],
    shapes: Iterable[str],
    r: Iterable[float],
    cx: Iterable[float],
    cy: Iterable[float],
    size: int = IMAGE_SIZE,
) -> np.ndarray:
    """Draws one object per frame on the uniform background, vectorised over frames.

    Args:
        colors, shapes: N colour and shape names.
        r, cx, cy: N half-widths and centres in pixel-centre coordinates.
        size: canvas height = width.

    Returns:
        uint8 [N, size, size, 3] frames.
    """
    colors, shapes = list(colors), list(shapes)
    r, cx, cy = (np.asarray(list(v), dtype=np.float32) for v in (r, cx, cy))  # [N] each
    n = len(colors)
    background = np.asarray(BACKGROUND, dtype=np.float32)  # [3]
    delta = np.asarray([PALETTE[c] for c in COLORS], dtype=np.float32) - background  # [4, 3]
    color_idx = np.asarray([COLORS.index(c) for c in colors], dtype=np.int64)  # [N]
    shape_arr = np.asarray(shapes)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(n, start + _CHUNK))
        cov = np.empty((sl.stop - sl.start, size, size), dtype=np.float32)  # [n_chunk, S, S]
        for shape in SHAPES:
            idx = np.flatnonzero(shape_arr[sl] == shape)
            if idx.size:
                j = idx + start
                cov[idx] = _coverage(shape, r[j], cx[j], cy[j], size)
        rgb = background + cov[..., None] * delta[color_idx[sl]][:, None, None, :]  # [n_chunk, S, S, 3]
        out[sl] = np.rint(rgb, out=rgb)
    return out


def render_image(scene: Scene) -> np.ndarray:
    """Draws the scene's object at its start position (an image shows no motion).

    Returns:
        uint8 [64, 64, 3] RGB image.
    """
    return render_frames([scene.color], [scene.shape], [scene.r], [scene.cx], [scene.cy])[0]


def render_video(scene: Scene) -> np.ndarray:
    """Draws the 8 frames of the scene; frame k at start + (k / 7) * 24 px * direction.

    Returns:
        uint8 [8, 64, 64, 3] RGB frames (8 fps, 1.0 s).
    """
    pos = frame_positions(scene)  # [8, 2]
    return render_frames(
        [scene.color] * NUM_FRAMES, [scene.shape] * NUM_FRAMES, [scene.r] * NUM_FRAMES, pos[:, 0], pos[:, 1]
    )


def render_images(scenes: Sequence[Scene]) -> np.ndarray:
    """Draws n scenes at their start positions in one vectorised pass.

    Returns:
        uint8 [n, 64, 64, 3] RGB images.
    """
    return render_frames(
        [s.color for s in scenes], [s.shape for s in scenes], [s.r for s in scenes],
        [s.cx for s in scenes], [s.cy for s in scenes],
    )  # fmt: skip


def render_videos(scenes: Sequence[Scene]) -> np.ndarray:
    """Draws the clips of n scenes in one vectorised pass.

    Returns:
        uint8 [n, 8, 64, 64, 3] RGB frames.
    """
    pos = np.stack([frame_positions(s) for s in scenes]).reshape(-1, 2)  # [n * 8, 2]
    frames = render_frames(
        [s.color for s in scenes for _ in range(NUM_FRAMES)],
        [s.shape for s in scenes for _ in range(NUM_FRAMES)],
        [s.r for s in scenes for _ in range(NUM_FRAMES)],
        pos[:, 0],
        pos[:, 1],
    )  # [n * 8, 64, 64, 3]
    return frames.reshape(len(scenes), NUM_FRAMES, *frames.shape[1:])


# ------------------------------------------------------------------------------------------------ audio


def _harmonics(shape: str, f_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic numbers n (n * f_max < 7 kHz) and their amplitudes for the shape's waveform."""
    n = np.arange(1, int(np.ceil(BAND_LIMIT_HZ / f_max)), dtype=np.float64)  # [H]
    n = n[n * f_max < BAND_LIMIT_HZ]
    if shape == "circle":  # sine
        n = n[:1]
    elif shape == "square":  # odd harmonics, 1/n
        n = n[n % 2 == 1]
    elif shape != "triangle":  # triangle: sawtooth, all harmonics, 1/n
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return n, 1.0 / n


@lru_cache(maxsize=len(COLORS) * len(SHAPES) * len(DIRECTIONS))
def _tone(color: str, shape: str, motion: str) -> np.ndarray:
    """The (read-only, cached) waveform of an attribute triple: float32 [16000]."""
    t = np.arange(int(round(SAMPLE_RATE * AUDIO_SECONDS))) / SAMPLE_RATE  # [T] seconds
    f0 = F0[color]
    if motion in ("up", "down"):  # f(t) = f0 * G^(s(2t-1)); cycles = integral of f
        s = 1.0 if motion == "up" else -1.0
        cycles = f0 * (GLIDE ** (s * (2 * t - 1)) - GLIDE**-s) / (2 * s * np.log(GLIDE))  # [T]
        f_max = f0 * GLIDE
    elif motion in DIRECTIONS:
        cycles, f_max = f0 * t, f0  # [T]
    else:
        raise ValueError(f"unknown motion {motion!r}")
    n, amp = _harmonics(shape, f_max)  # [H], [H]
    wave = amp @ np.sin(2 * np.pi * n[:, None] * cycles[None, :])  # [T]
    wave /= np.abs(wave).max()  # peak 1 before the envelope
    envelope = {"right": QUIET + (LOUD - QUIET) * t, "left": LOUD - (LOUD - QUIET) * t}.get(motion, LOUD)
    i = np.arange(t.size)
    fade = np.clip(np.minimum(i, t.size - 1 - i) / (FADE_SECONDS * SAMPLE_RATE), 0.0, 1.0)  # [T]
    out = (wave * envelope * fade).astype(np.float32)  # [T]
    out.flags.writeable = False
    return out


def render_audio(scene: Scene) -> np.ndarray:
    """Synthesises the scene's 1.0 s tone: f0 by colour, timbre by shape, glide/ramp by motion.

    Returns:
        float32 [16000] mono waveform at 16 kHz in [-1, 1].
    """
    return _tone(scene.color, scene.shape, scene.motion).copy()


# ------------------------------------------------------------------------------------------------- text


def _choice(g: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(g.integers(len(options)))]


def caption(
    scene: Scene,
    rng: Rng,
    with_color: bool = True,
    with_shape: bool = True,
    with_motion: bool = True,
    for_image: bool = False,
) -> str:
    """Writes a caption "<article> <color> <shape word> <motion phrase>", synonyms drawn uniformly.

    Args:
        scene: the scene to describe.
        rng: numpy Generator (or int seed / torch.Generator).
        with_color, with_shape, with_motion: False leaves the attribute out (no colour word,
            "shape"/"thing" for the shape, no motion phrase).
        for_image: image captions never have a motion phrase.

    Returns:
        Lower-case caption without a final period, e.g. "the red ball rising".
    """
    g = as_rng(rng)
    words = [_choice(g, ARTICLES)]
    if with_color:
        words.append(scene.color)
    words.append(_choice(g, SHAPE_WORDS[scene.shape] if with_shape else GENERIC_SHAPE_WORDS))
    if with_motion and not for_image:
        words.append(_choice(g, MOTION_PHRASES[scene.motion]))
    return " ".join(words)


# ------------------------------------------------------------------------------------------------ batch


@dataclass
class WorldBatch:
    """Paired samples of n scenes: `data[m]` holds the modality's samples in scene order."""

    scenes: list[Scene]
    data: dict[Modality, np.ndarray | list[str]] = field(default_factory=dict)
    targets: list[dict[str, str | None]] = field(default_factory=list)  # what each caption states


def make_batch(
    rng: Rng,
    n: int,
    modalities: Iterable[Modality | str] = ALL_MODALITIES,
    p_drop: float = 0.0,
    for_image: bool | None = None,
) -> WorldBatch:
    """Samples n scenes and renders them in the requested modalities, fast enough for training.

    Args:
        rng: numpy Generator (or int seed / torch.Generator).
        n: number of scenes.
        modalities: any of text, image, video, audio.
        p_drop: probability that a caption leaves out each attribute (partial captions).
        for_image: image captions (no motion phrase); None means yes when image is the only
            other modality requested with text.

    Returns:
        WorldBatch with text: list of n str; image: uint8 [n, 64, 64, 3]; video: uint8
        [n, 8, 64, 64, 3]; audio: float32 [n, 16000]; targets: the attributes each caption
        states (None where left out or not stated; all attributes when no text is requested).
    """
    g = as_rng(rng)
    mods = {Modality.parse(m) for m in modalities}
    scenes = [sample_scene(g) for _ in range(n)]
    batch = WorldBatch(scenes=scenes, targets=[s.attributes() for s in scenes])
    if for_image is None:
        for_image = Modality.IMAGE in mods and not mods & {Modality.VIDEO, Modality.AUDIO}
    if Modality.TEXT in mods:
        keep = g.random((n, 3)) >= p_drop  # [n, 3] color, shape, motion kept
        keep[:, 2] &= not for_image
        batch.data[Modality.TEXT] = [caption(s, g, *map(bool, k)) for s, k in zip(scenes, keep)]
        batch.targets = [s.attributes(*map(bool, k)) for s, k in zip(scenes, keep)]
    if Modality.VIDEO in mods:
        batch.data[Modality.VIDEO] = render_videos(scenes)
    if Modality.IMAGE in mods:  # frame 0 of a video is its start position, i.e. the image
        has_video = Modality.VIDEO in mods
        images = batch.data[Modality.VIDEO][:, 0].copy() if has_video else render_images(scenes)
        batch.data[Modality.IMAGE] = images
    if Modality.AUDIO in mods:
        batch.data[Modality.AUDIO] = np.stack([_tone(s.color, s.shape, s.motion) for s in scenes])
    return batch
