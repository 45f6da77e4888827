"""`python -m training`: trains the embedded `tiny` CoDi from scratch on the Shapes & Tones world and exports it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codi.presets import TINY_DIR
from codi.tiny import tiny_config
from training.runner import STAGE_NAMES, pick_device, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("--out", default="runs/tiny", help="run folder: per-stage state, progress.json, log.jsonl")
    p.add_argument("--stages", default="all", help=f"'all' or a comma list of: {', '.join(STAGE_NAMES)}")
    p.add_argument("--resume", action="store_true", help="skip stages already finished in --out")
    p.add_argument("--minutes-scale", type=float, default=1.0, help="multiplies every stage's step count")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="run exactly this many steps per stage (dry runs)")
    p.add_argument(
        "--codi-schedule",
        action="store_true",
        help="train the UNets on CoDi's own schedule with eps prediction (default: zero terminal SNR, v prediction)",
    )
    p.add_argument("--export", default=str(TINY_DIR), help="checkpoint folder to write ('' to skip)")
    args = p.parse_args(argv)
    names = STAGE_NAMES if args.stages == "all" else tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(names) - set(STAGE_NAMES))
    if unknown:
        p.error(f"unknown stages {unknown}; choose from {', '.join(STAGE_NAMES)}")
    done = train(
        tiny_config(zero_terminal_snr=not args.codi_schedule),
        Path(args.out),
        pick_device(args.device),
        names,
        resume=args.resume,
        scale=args.minutes_scale,
        seed=args.seed,
        steps_override=args.steps,
        export_to=Path(args.export) if args.export else None,
    )
    print(json.dumps({k: v.get("seconds") for k, v in done["stages"].items()}))


if __name__ == "__main__":
    main()
