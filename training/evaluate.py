"""Quick quality and speed check of a trained checkpoint with the world's readers: `python -m training.evaluate`."""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from codi.pipeline import CoDiPipeline
from codi.world import (
    caption,
    compare,
    parse_caption,
    read_audio,
    read_image,
    read_video,
    render_audio,
    render_image,
    render_video,
    sample_scene,
)


def _read(result, out: str) -> dict:
    if out == "image":
        return read_image(np.asarray(result.image))
    if out == "video":
        return read_video(result.video.frames)
    if out == "audio":
        return read_audio(result.audio.waveform, result.audio.sample_rate)
    return parse_caption(result.text)


def _input(scene, modality: str, g: np.random.Generator):
    if modality == "text":
        return caption(scene, g, for_image=False)
    if modality == "image":
        return render_image(scene)
    if modality == "video":
        return render_video(scene)
    return (render_audio(scene), 16000)


DIRECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (  # input, output, scored attributes
    ("text", "image", ("color", "shape")),
    ("text", "video", ("color", "shape", "motion")),
    ("text", "audio", ("color", "shape", "motion")),
    ("image", "text", ("color", "shape")),
    ("video", "text", ("color", "shape", "motion")),
    ("audio", "text", ("color", "shape", "motion")),
    ("audio", "image", ("color", "shape")),
    ("image", "audio", ("color", "shape")),
)


def evaluate(pipe: CoDiPipeline, n: int = 24, seed: int = 0) -> dict:
    """Attribute accuracy per direction, joint video+audio motion agreement, and timings."""
    g = np.random.default_rng(seed)
    report: dict = {}
    for src, out, attrs in DIRECTIONS:
        hits = defaultdict(list)
        for i in range(n):
            scene = sample_scene(g)
            r = pipe({src: _input(scene, src, g)}, outputs=[out], seed=i)
            target = {k: v for k, v in scene.attributes().items() if k in attrs}
            for k, ok in compare(_read(r, out), target).items():
                hits[k].append(ok)
        report[f"{src}->{out}"] = {k: round(float(np.mean(v)), 3) for k, v in hits.items()}
    joint, separate = [], []
    for i in range(n):
        scene = sample_scene(g)
        prompt = caption(scene, g, with_motion=False)
        r = pipe({"text": prompt}, outputs=["video", "audio"], seed=i)
        joint.append(read_video(r.video.frames)["motion"] == read_audio(r.audio.waveform)["motion"])
        v = pipe({"text": prompt}, outputs=["video"], seed=i)
        a = pipe({"text": prompt}, outputs=["audio"], seed=i)
        separate.append(read_video(v.video.frames)["motion"] == read_audio(a.audio.waveform)["motion"])
    report["joint_video_audio_motion_agreement"] = {
        "joint": float(np.mean(joint)),
        "separate": float(np.mean(separate)),
    }
    report["seconds"] = timings(pipe)
    return report


def timings(pipe: CoDiPipeline) -> dict:
    out = {}
    for outputs in (["text"], ["image"], ["video"], ["audio"], ["text", "image", "video", "audio"]):
        pipe({"text": "a red circle moving up"}, outputs=outputs, seed=0)
        t0 = time.perf_counter()
        pipe({"text": "a red circle moving up"}, outputs=outputs, seed=1)
        out[",".join(outputs)] = round(time.perf_counter() - t0, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m training.evaluate")
    p.add_argument("--model", default="tiny")
    p.add_argument("-n", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = CoDiPipeline.from_preset(args.model)
    print(json.dumps(evaluate(pipe, args.n), indent=1))


if __name__ == "__main__":
    main()
