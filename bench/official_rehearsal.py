"""The released CoDi at full size, rehearsed on random weights in the released files' layout.

Writes (once, reused) a random-weight copy of the four released fp16 files into an offline Hugging Face cache
(`codi.rehearsal`), then runs `python -m codi generate --model official` on it, one fresh process per output
combination, and prints seconds, seconds per sampler step and peak memory (process RSS on CPU, CUDA max
allocated on a GPU) from each run's result.json.

    python bench/official_rehearsal.py                                   # CPU, bfloat16, 2 steps
    python bench/official_rehearsal.py --device cuda --dtype float16 --steps 50 --offload model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGE = REPO / "assets" / "examples" / "image-to-text" / "image.png"
CASES: dict[str, list[str]] = {
    "text->image": ["--text", "a red circle", "--outputs", "image"],
    "image->text": ["--image", str(IMAGE), "--outputs", "text"],
    "text->audio": ["--text", "rain on a tin roof", "--outputs", "audio"],
    "text->text": ["--text", "a cat on a sofa", "--outputs", "text"],
    "text->video": ["--text", "a dog running", "--outputs", "video"],
    "text->video+audio": ["--text", "waves on a beach", "--outputs", "video,audio"],
    "text->all four": ["--text", "a train passing", "--outputs", "text,image,video,audio"],
}
DEFAULT_CASES = "text->image,image->text,text->audio,text->all four"


def run_case(name: str, args: argparse.Namespace, cache: Path, out: Path) -> dict:
    """One generation in a fresh process; returns its figures from result.json."""
    folder = out / name.replace("->", "_to_").replace(" ", "_").replace("+", "_")
    cmd = [sys.executable, "-m", "codi", "generate", "--model", "official", "--device", args.device]
    cmd += ["--dtype", args.dtype, "--steps", str(args.steps), "--seed", "0", "--quiet", "--out", str(folder)]
    cmd += ["--offload", args.offload, *CASES[name]] + (["--compile"] if getattr(args, "compile", False) else [])
    cmd += ["--sampler", getattr(args, "sampler", None) or "ddim"]
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"case": name, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "wall_s": wall}
    meta = json.loads((folder / "result.json").read_text())
    t, model = meta["timings"], meta["model"]
    return {
        "case": name,
        "wall_s": round(wall, 1),
        "total_s": t["total_s"],
        "denoise_s": t["denoise_s"],
        "load_s": t["load_s"],  # weights read on first use, inside the phases
        "s_per_step": round(t["sample_s"] / args.steps, 3),  # the sampler alone, loading left out
        "peak_gb": round(model["peak_memory"]["bytes"] / 1e9, 2),
        "peak_kind": model["peak_memory"]["kind"],
        "components": model["components_used"],
        "skipped_keys": model.get("checkpoint_keys", {}).get("skipped_keys"),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpm"])
    p.add_argument("--offload", default="none", choices=["none", "model"])
    p.add_argument("--cases", default=DEFAULT_CASES, help="comma list of: " + ", ".join(CASES))
    p.add_argument("--cache", default=None, help="rehearsal cache root (default: codi.rehearsal's)")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "codi-rehearsal-runs"))
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    from codi.rehearsal import ensure_rehearsal_cache

    cache = Path(args.cache) if args.cache else ensure_rehearsal_cache()
    rows = []
    for name in args.cases.split(","):
        row = run_case(name.strip(), args, cache, Path(args.out))
        rows.append(row)
        print(json.dumps(row), flush=True)
    setting = f"{args.device}, {args.dtype}, {args.steps} {args.sampler} steps"
    print(f"\n| case | total s | of it loading s | s / step | peak GB ({setting}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | failed: {r['error']} | | | |")
        else:
            print(
                f"| {r['case']} | {r['total_s']:.1f} | {r['load_s']:.1f} | {r['s_per_step']:.2f} | {r['peak_gb']:.2f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
