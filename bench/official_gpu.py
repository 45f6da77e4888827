"""The full-size rehearsal on a CUDA GPU: seconds and peak VRAM per output combination at 50 DDIM steps.

Writes the random-weight copy of the released fp16 files once (~11.6 GB of disk, ~1.5 min), then runs each
combination in a fresh process, in float16, without and with `--offload model`:

    python bench/official_gpu.py                       # all cases, both offload modes
    python bench/official_gpu.py --steps 10 --cases text->image --offload none

Each case prints its row (and rewrites --json) as it finishes, and the uncompiled runs come first, so a run cut
short by a time limit still has every case measured without compiling.

Targets (issue 17): text->image <= 6 GB peak VRAM without offload, text->video+audio <= 12 GB, all four
<= 14 GB, each below 4 GB with --offload model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from official_rehearsal import CASES, run_case  # noqa: E402

GPU_CASES = "text->image,text->video,text->audio,text->text,text->video+audio,text->all four"
TARGET_GB = {"text->image": 6.0, "text->video+audio": 12.0, "text->all four": 14.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--cases", default=GPU_CASES, help="comma list of: " + ", ".join(CASES))
    p.add_argument("--offload", default="both", choices=["none", "model", "both"])
    p.add_argument("--compile", default="both", choices=["off", "on", "both"], help="torch.compile the UNets")
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default="/tmp/codi-gpu-runs")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import torch

    from codi.rehearsal import ensure_rehearsal_cache

    if not torch.cuda.is_available():
        print("no CUDA GPU: run bench/official_rehearsal.py for the CPU figures", file=sys.stderr)
        return 2
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.dtype}, {args.steps} DDIM steps")
    cache = Path(args.cache) if args.cache else ensure_rehearsal_cache()
    rows = []
    for offload, compiled in plan(args.offload, args.compile):
        run = argparse.Namespace(device="cuda", dtype=args.dtype, steps=args.steps, offload=offload)
        run.compile = compiled
        for name in args.cases.split(","):
            folder = Path(args.out) / f"{offload}{'-compiled' if compiled else ''}"
            row = {**run_case(name.strip(), run, cache, folder), "offload": offload, "compile": compiled}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # rewritten after every case: a run stopped by a time limit keeps what it measured
                Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| case | offload | compile | s per generation | s / step | peak VRAM GB | target |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = 4.0 if r["offload"] == "model" else TARGET_GB.get(r["case"])
        if "error" in r:
            print(f"| {r['case']} | {r['offload']} | {r['compile']} | failed: {r['error']} | | | |")
            continue
        mark = "" if target is None else f"<= {target:g}" + (" ok" if r["peak_gb"] <= target else " MISSED")
        cells = [
            r["case"],
            r["offload"],
            str(r["compile"]),
            f"{r['total_s']:.2f}",
            f"{r['s_per_step']:.3f}",
            f"{r['peak_gb']:.2f}",
            mark,
        ]
        print("| " + " | ".join(cells) + " |")
    return 0 if all("error" not in r for r in rows) else 1


def plan(offload: str, compile: str) -> list[tuple[str, bool]]:
    """(offload, compiled) runs in order: the uncompiled ones first (each compiled case spends minutes compiling),
    so that a run cut short by a time limit has measured every case at least without compiling."""
    modes = ("none", "model") if offload == "both" else (offload,)
    runs: list[tuple[str, bool]] = []
    for compiled in (False, True) if compile == "both" else (compile == "on",):
        for mode in modes:
            run = (mode, compiled and mode == "none")  # offloaded parts are not compiled
            if run not in runs:
                runs.append(run)
    return runs


if __name__ == "__main__":
    raise SystemExit(main())
