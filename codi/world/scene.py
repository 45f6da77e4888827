"""Scenes of the Shapes & Tones world (v1): constants of the contract and scene sampling.

The contract is `shapes-world.md`. Pixel coordinates put pixel (row i, column j) centre at (x=j, y=i),
so a scene's object spans [cx - r, cx + r] x [cy - r, cy + r] and pixels 0..1 and 62..63 of each axis
are always background (the 2 px margin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("up", "down", "left", "right", "still")
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "motion")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (235, 210, 40),
}
BACKGROUND: tuple[int, int, int] = (16, 16, 24)
F0: dict[str, float] = {"red": 220.0, "green": 294.0, "blue": 392.0, "yellow": 523.0}

IMAGE_SIZE = 64  # canvas height = width, pixels
NUM_FRAMES = 8  # video frames
FPS = 8  # video frames per second (1.0 s)
TRAVEL = 24.0  # D: pixels travelled from frame 0 to the last frame
MARGIN = 2  # pixels of background kept around the object during the whole motion
R_MIN, R_MAX = 9, 13  # half-width r, inclusive
SAMPLE_RATE = 16_000  # audio samples per second
AUDIO_SECONDS = 1.0

ARTICLES: tuple[str, ...] = ("a", "the")
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge"),
}
GENERIC_SHAPE_WORDS: tuple[str, ...] = ("shape", "thing")  # a caption that leaves the shape out
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "up": ("moving up", "rising", "going up"),
    "down": ("moving down", "falling", "sinking"),
    "left": ("moving left", "sliding left", "drifting left"),
    "right": ("moving right", "sliding right", "drifting right"),
    "still": ("standing still", "not moving", "at rest"),
}

DIRECTIONS: dict[str, tuple[int, int]] = {  # motion -> (dx, dy) unit step; image up is -y
    "up": (0, -1),
    "down": (0, 1),
    "left": (-1, 0),
    "right": (1, 0),
    "still": (0, 0),
}

Rng = Any  # numpy Generator, int seed or torch.Generator (see `as_rng`)


def as_rng(rng: Rng) -> np.random.Generator:
    """Returns a numpy Generator for a numpy Generator, an int seed or a torch.Generator.

    Args:
        rng: the caller's source of randomness; a torch.Generator is advanced by one draw.

    Returns:
        A numpy Generator (the same object when one is given).
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    if type(rng).__name__ == "Generator" and type(rng).__module__.startswith("torch"):
        import torch  # only touched when the caller already uses torch

        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    raise TypeError(f"expected a numpy Generator, an int seed or a torch.Generator, got {type(rng).__name__}")


@dataclass(frozen=True)
class Scene:
    """The hidden scene behind one sample: three attributes, size r and start position (cx, cy)."""

    color: str
    shape: str
    motion: str
    r: int
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name, values in (("color", COLORS), ("shape", SHAPES), ("motion", MOTIONS)):
            if getattr(self, name) not in values:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {values}")
        if self.r <= 0:
            raise ValueError(f"r must be positive, got {self.r}")

    def attributes(
        self, with_color: bool = True, with_shape: bool = True, with_motion: bool = True
    ) -> dict[str, str | None]:
        """The attributes as a reader returns them; left-out ones are None (a partial scene)."""
        return {
            "color": self.color if with_color else None,
            "shape": self.shape if with_shape else None,
            "motion": self.motion if with_motion else None,
        }


def start_range(r: float, motion: str, axis: int) -> tuple[float, float]:
    """Allowed start coordinates on one axis so the object stays inside the canvas with the margin.

    Args:
        r: half-width in pixels.
        motion: one of MOTIONS.
        axis: 0 for x (columns), 1 for y (rows).

    Returns:
        (low, high) inclusive bounds for cx (axis 0) or cy (axis 1).
    """
    shift = DIRECTIONS[motion][axis] * TRAVEL  # signed travel on this axis
    low = MARGIN + r - min(0.0, shift)
    high = IMAGE_SIZE - 1 - MARGIN - r - max(0.0, shift)
    return low, high


def sample_scene(
    rng: Rng,
    color: str | None = None,
    shape: str | None = None,
    motion: str | None = None,
    r: int | None = None,
) -> Scene:
    """Samples a scene; attributes given are fixed, the others uniform, as the contract says.

    Args:
        rng: numpy Generator (or int seed / torch.Generator, see `as_rng`).
        color, shape, motion: fixed attribute values, or None to sample uniformly.
        r: fixed half-width, or None for a uniform integer in [9, 13].

    Returns:
        A Scene whose start position is uniform over the positions that keep the object fully inside
        the 64 x 64 canvas with a 2 px margin for the whole motion.
    """
    g = as_rng(rng)
    color = COLORS[g.integers(len(COLORS))] if color is None else color
    shape = SHAPES[g.integers(len(SHAPES))] if shape is None else shape
    motion = MOTIONS[g.integers(len(MOTIONS))] if motion is None else motion
    r = int(g.integers(R_MIN, R_MAX + 1)) if r is None else int(r)
    if motion not in DIRECTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    cx = float(g.uniform(*start_range(r, motion, 0)))
    cy = float(g.uniform(*start_range(r, motion, 1)))
    return Scene(color=color, shape=shape, motion=motion, r=r, cx=cx, cy=cy)


def frame_positions(scene: Scene, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Object centres of the video frames: start + (k / (F - 1)) * D * direction.

    Args:
        scene: the scene.
        num_frames: F, frames in the clip (8 in the contract).

    Returns:
        float64 [F, 2] array of (x, y) centres.
    """
    k = np.arange(num_frames) / max(1, num_frames - 1)  # [F] in [0, 1]
    direction = np.asarray(DIRECTIONS[scene.motion], dtype=np.float64)  # [2]
    return np.array([scene.cx, scene.cy]) + k[:, None] * TRAVEL * direction  # [F, 2]
