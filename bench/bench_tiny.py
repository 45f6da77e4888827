"""Speed of the embedded tiny model: each single output and all four jointly, at the model's default settings.

    python bench/bench_tiny.py [--model tiny] [--threads 2] [--repeats 5] [--device cpu] [--json out.json]

Reports the median wall time of `repeats` calls after one warm-up call (model loading excluded).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codi.pipeline import CoDiPipeline  # noqa: E402

CASES = [
    ("text -> image", {"text": "a red circle"}, ["image"]),
    ("text -> video", {"text": "a blue square moving left"}, ["video"]),
    ("text -> audio", {"text": "a green triangle rising"}, ["audio"]),
    ("image -> text", "image", ["text"]),
    ("text -> text+image+video+audio", {"text": "a yellow ball"}, ["text", "image", "video", "audio"]),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = CoDiPipeline.from_preset(args.model, device=args.device, dtype=args.dtype)
    d = pipe.config.defaults
    import numpy as np

    from codi.world import render_image, sample_scene

    image = render_image(sample_scene(np.random.default_rng(0)))
    rows = []
    for name, inputs, outputs in CASES:
        inputs = {"image": image} if inputs == "image" else inputs
        pipe(inputs=inputs, outputs=outputs, seed=0)  # warm-up
        times = []
        for r in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pipe(inputs=inputs, outputs=outputs, seed=r)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        rows.append({"case": name, "median_s": statistics.median(times), "min_s": min(times)})
    print(
        f"model {pipe.source}; {d.steps} {d.sampler} steps, guidance {d.guidance_scale}, coupling {d.coupling}; "
        f"device {args.device}, {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print("| case | median (s) | min (s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['median_s']:.3f} | {r['min_s']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
