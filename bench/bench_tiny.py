"""Speed of the embedded tiny model: each single output and all four jointly, at the model's default settings.

    python bench/bench_tiny.py [--model tiny] [--threads 2] [--repeats 5] [--device cpu] [--json out.json]
    python bench/bench_tiny.py --compare HEAD~3      # a git revision against the working tree, in one run

Reports the median wall time of `repeats` calls after one warm-up call (model loading excluded). With --compare,
the revision is exported (git archive) to a temporary folder and each tree runs in a worker process of its own;
the calls alternate between the two, one at a time, so that the machine's ups and downs hit both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

CASES = [
    ("text -> image", {"text": "a red circle"}, ["image"]),
    ("text -> video", {"text": "a blue square moving left"}, ["video"]),
    ("text -> audio", {"text": "a green triangle rising"}, ["audio"]),
    ("image -> text", "image", ["text"]),
    ("text -> text+image+video+audio", {"text": "a yellow ball"}, ["text", "image", "video", "audio"]),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", default="")
    p.add_argument("--compare", metavar="REV", help="time this git revision against the working tree, alternating")
    p.add_argument("--worker", metavar="TREE", help=argparse.SUPPRESS)  # internal: serve timings of TREE's code
    return p.parse_args(argv)


class Cases:
    """The pipeline of one source tree and the inputs of CASES."""

    def __init__(self, tree: Path, args: argparse.Namespace) -> None:
        sys.path.insert(0, str(tree))
        import numpy as np

        from codi.pipeline import CoDiPipeline
        from codi.world import render_image, sample_scene

        torch.set_num_threads(args.threads)
        self.pipe = CoDiPipeline.from_preset(args.model, device=args.device, dtype=args.dtype)
        self.image = render_image(sample_scene(np.random.default_rng(0)))
        self.device = args.device

    def run(self, index: int, seed: int) -> float:
        """Seconds of one call of CASES[index]."""
        _, inputs, outputs = CASES[index]
        inputs = {"image": self.image} if inputs == "image" else inputs
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.pipe(inputs=inputs, outputs=outputs, seed=seed)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def serve(args: argparse.Namespace) -> int:
    """Worker: loads TREE's pipeline, then times 'case seed' lines from stdin, one answer line each."""
    cases = Cases(Path(args.worker), args)
    print("ready", flush=True)
    for line in sys.stdin:
        index, seed = map(int, line.split())
        print(f"{cases.run(index, seed):.6f}", flush=True)
    return 0


def compare(args: argparse.Namespace) -> int:
    """REV against the working tree, alternating call by call between two worker processes."""
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as old:
        archive = subprocess.run(["git", "archive", args.compare], cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        trees = {args.compare: Path(old), "working tree": REPO}
        flags = ["--model", args.model, "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]
        workers = {}
        for name, tree in trees.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), *flags]
            workers[name] = subprocess.Popen(cmd, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if workers[name].stdout.readline().strip() != "ready":
                raise SystemExit(f"the {name} worker did not start")

        def call(name: str, index: int, seed: int) -> float:
            workers[name].stdin.write(f"{index} {seed}\n")
            workers[name].stdin.flush()
            return float(workers[name].stdout.readline())

        rows = []
        for index, (case, _, _) in enumerate(CASES):
            times: dict[str, list[float]] = {name: [] for name in workers}
            for name in workers:
                call(name, index, 0)  # warm-up
            for r in range(args.repeats):
                for name in workers if r % 2 == 0 else reversed(workers):
                    times[name].append(call(name, index, r))
            rows.append({"case": case, **{n: statistics.median(t) for n, t in times.items()}})
        for w in workers.values():
            w.stdin.close()
            w.wait()
    old_name = args.compare
    print(
        f"{args.threads} threads, {platform.processor() or platform.machine()}, {args.repeats} calls each, alternating"
    )
    print(f"| case | {old_name} (s) | working tree (s) | speed-up |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r[old_name]:.3f} | {r['working tree']:.3f} | {r[old_name] / r['working tree']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return serve(args)
    if args.compare:
        return compare(args)
    cases = Cases(REPO, args)
    d = cases.pipe.config.defaults
    rows = []
    for index, (name, _, _) in enumerate(CASES):
        cases.run(index, 0)  # warm-up
        times = [cases.run(index, r) for r in range(args.repeats)]
        rows.append({"case": name, "median_s": statistics.median(times), "min_s": min(times)})
    print(
        f"model {cases.pipe.source}; {d.steps} {d.sampler} steps, guidance {d.guidance_scale}, coupling {d.coupling}; "
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
