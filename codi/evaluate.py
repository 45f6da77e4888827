"""`python -m codi eval`: scores a model on the Shapes & Tones world with the world's own readers.

Every task renders held-out scenes (a seed of its own), asks the model for an output and reads the attributes the
prompt states back from it. Accuracies are fractions of attributes read right (None = not readable = wrong).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codi.media import AudioClip, VideoClip
from codi.pipeline import CoDiPipeline, GenerationResult
from codi.world import (
    ATTRIBUTES,
    Scene,
    caption,
    parse_caption,
    read_audio,
    read_image,
    read_video,
    render_audio,
    render_image,
    render_video,
    sample_scene,
)

COLOR_SHAPE = ("color", "shape")
ALL3 = ATTRIBUTES


@dataclass
class TaskScore:
    """Per-attribute accuracy of one task over n samples."""

    task: str
    n: int
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else 0.0


def _read(result: GenerationResult, output: str) -> dict[str, str | None]:
    if output == "image":
        return read_image(np.asarray(result.image))
    if output == "video":
        return read_video(result.video.frames)
    if output == "audio":
        return read_audio(result.audio.waveform, result.audio.sample_rate)
    return parse_caption(result.text or "")


def _inputs(scene: Scene, given: tuple[str, ...], rng: np.random.Generator, for_image: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "text" in given:
        out["text"] = caption(scene, rng, for_image=for_image)
    if "image" in given:
        out["image"] = render_image(scene)
    if "video" in given:
        out["video"] = VideoClip(frames=render_video(scene), fps=8.0)
    if "audio" in given:
        out["audio"] = AudioClip(waveform=render_audio(scene), sample_rate=16000)
    return out


def score_direction(
    pipe: CoDiPipeline, given: tuple[str, ...], output: str, attrs: tuple[str, ...], n: int, seed: int, **gen: Any
) -> TaskScore:
    """Renders n scenes, generates `output` from the `given` modalities of each, reads `attrs` back."""
    rng = np.random.default_rng(seed)
    hits = {a: 0 for a in attrs}
    t0 = time.perf_counter()
    for i in range(n):
        scene = sample_scene(rng)
        # image captions have no motion phrase; text->video/audio uses full captions
        inputs = _inputs(scene, given, rng, for_image=(output in ("image",) and given == ("text",)))
        read = _read(pipe(inputs=inputs, outputs=[output], seed=seed * 1000 + i, **gen), output)
        for a in attrs:
            hits[a] += read.get(a) == getattr(scene, a)
    name = "+".join(given) + "->" + output
    return TaskScore(name, n, {a: hits[a] / n for a in attrs}, time.perf_counter() - t0)


def score_composition(pipe: CoDiPipeline, n: int, seed: int, **gen: Any) -> TaskScore:
    """Text naming only the motion ('moving left') + an image (color, shape) -> video with all three."""
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(ALL3, 0)
    t0 = time.perf_counter()
    for i in range(n):
        scene = sample_scene(rng)
        text = caption(scene, rng, with_color=False, with_shape=False)
        inputs = {"text": text, "image": render_image(scene)}
        read = read_video(pipe(inputs=inputs, outputs=["video"], seed=seed * 1000 + i, **gen).video.frames)
        for a in ALL3:
            hits[a] += read.get(a) == getattr(scene, a)
    return TaskScore(
        "text(motion)+image->video",
        n,
        {a: hits[a] / n for a in ALL3},
        time.perf_counter() - t0,
        "zero-shot composition of two inputs",
    )


def score_joint_coherence(pipe: CoDiPipeline, n: int, seed: int, **gen: Any) -> tuple[TaskScore, TaskScore]:
    """Under-specified text (color + shape, no motion) -> video + audio: do their motions agree?

    Joint: one call generating both. Separate: the same prompt and seed, video and audio in two calls.
    """
    rng = np.random.default_rng(seed)
    joint = separate = 0
    t0 = time.perf_counter()
    for i in range(n):
        scene = sample_scene(rng)
        text = caption(scene, rng, with_motion=False)
        s = seed * 1000 + i
        both = pipe(inputs={"text": text}, outputs=["video", "audio"], seed=s, **gen)
        joint += _agree(read_video(both.video.frames), read_audio(both.audio.waveform))
        v = pipe(inputs={"text": text}, outputs=["video"], seed=s, **gen)
        a = pipe(inputs={"text": text}, outputs=["audio"], seed=s, **gen)
        separate += _agree(read_video(v.video.frames), read_audio(a.audio.waveform))
    dt = time.perf_counter() - t0
    return (
        TaskScore("joint video+audio motion agreement", n, {"motion": joint / n}, dt, "one joint call"),
        TaskScore("separate video, audio motion agreement", n, {"motion": separate / n}, 0.0, "two calls"),
    )


def _agree(video: dict, audio: dict) -> bool:
    return video.get("motion") is not None and video.get("motion") == audio.get("motion")


TASKS: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = [
    (("text",), "image", COLOR_SHAPE),
    (("text",), "video", ALL3),
    (("text",), "audio", ALL3),
    (("image",), "text", COLOR_SHAPE),
    (("video",), "text", ALL3),
    (("audio",), "text", ALL3),
    (("audio",), "image", COLOR_SHAPE),
    (("image",), "audio", COLOR_SHAPE),
]


TASK_NAMES: tuple[str, ...] = (*("+".join(g) + "->" + o for g, o, _ in TASKS), "composition", "joint")


def check_tasks(tasks: tuple[str, ...]) -> None:
    """Raises ValueError naming the unknown ones (or an empty selection)."""
    unknown = sorted(set(tasks) - set(TASK_NAMES))
    if unknown or not tasks:
        raise ValueError(f"unknown eval tasks {unknown or list(tasks)}; choose from {', '.join(TASK_NAMES)}")


def evaluate(
    pipe: CoDiPipeline,
    n: int = 30,
    seed: int = 1234,
    progress: Callable[[str], None] | None = None,
    tasks: tuple[str, ...] = TASK_NAMES,
    **gen: Any,
) -> list[TaskScore]:
    """The tasks of the table named in `tasks` (all by default), `n` samples each (held-out scenes drawn from
    `seed`; every task keeps its own seed offset, so a subset scores exactly as in the full run)."""
    check_tasks(tasks)
    scores = []
    for k, (given, output, attrs) in enumerate(TASKS):
        if TASK_NAMES[k] in tasks:
            scores.append(score_direction(pipe, given, output, attrs, n, seed + k, **gen))
            if progress:
                progress(scores[-1].task)
    if "composition" in tasks:
        scores.append(score_composition(pipe, n, seed + 100, **gen))
    if "joint" in tasks:
        scores.extend(score_joint_coherence(pipe, n, seed + 200, **gen))
    return scores


def table(scores: list[TaskScore]) -> str:
    """A Markdown table: task, n, color, shape, motion, mean."""
    lines = ["| task | n | color | shape | motion | mean |", "|---|---|---|---|---|---|"]
    for s in scores:
        cells = [f"{s.accuracy[a] * 100:.0f} %" if a in s.accuracy else "" for a in ALL3]
        lines.append(f"| {s.task} | {s.n} | " + " | ".join(cells) + f" | {s.mean * 100:.0f} % |")
    return "\n".join(lines)


def main(args: Any) -> int:
    tasks = TASK_NAMES if args.tasks == "all" else tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    try:
        check_tasks(tasks)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pipe = CoDiPipeline.from_preset(args.model, device=args.device)
    pairs = (
        ("steps", args.steps),
        ("guidance_scale", args.guidance),
        ("sampler", getattr(args, "sampler", None)),
        ("text_temperature", args.text_temperature),
        ("partner_weight", args.partner_weight),
    )
    gen = {k: v for k, v in pairs if v is not None}
    scores = evaluate(
        pipe, n=args.n, seed=args.seed, progress=lambda t: print(f"  done: {t}", flush=True), tasks=tasks, **gen
    )
    print(table(scores))
    if args.json:
        payload = {
            "model": pipe.source,
            "n": args.n,
            "seed": args.seed,
            "settings": gen or "model defaults",
            "scores": [asdict(s) | {"mean": s.mean} for s in scores],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
