"""CoDi Studio: `python app.py` opens the app; `--model auto` picks tiny or the released model (README)."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outside calls
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch is imported: see codi/__init__.py


def is_zero_gpu() -> bool:
    from ui.zerogpu import is_zero_gpu as zero

    return zero()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description="CoDi Studio: any-to-any generation in the browser")
    p.add_argument(
        "--model",
        default=env.get("CODI_MODEL", "auto"),
        help="auto (default; $CODI_MODEL): the released model on a CUDA GPU when its weights are cached or "
        "downloadable, else tiny; or tiny, official, a converted folder",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, mps ...")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="auto: float32 for tiny; for the released model (or a folder of it) float16 on a GPU, bfloat16 on a CPU",
    )
    p.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on")
    p.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--recordings", default="recordings", help="folder of saved recordings")
    p.add_argument(
        "--runs",
        default=None,
        help="scratch folder for the latest runs' files (the newest 64 are kept; default: a fresh temporary folder "
        "of this app instance, removed when it exits)",
    )
    p.add_argument("--examples", default=None, help="examples.json of the gallery (default: assets/examples.json)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait for the model")
    p.add_argument(
        "--max-memory", type=float, default=None, metavar="GB", help="keep loaded model parts under this many GB"
    )
    p.add_argument(
        "--offload",
        choices=["none", "model"],
        default="none",
        help="model: parts wait on the CPU and each moves to the GPU only while it runs",
    )
    p.add_argument("--strict-keys", action="store_true", help="refuse checkpoint keys that map to no component")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNets (slow first request per shape)")
    p.add_argument(
        "--mcp",
        action="store_true",
        default=env.get("GRADIO_MCP_SERVER", "").lower() in ("1", "true", "yes"),
        help="also serve the generate endpoint as an MCP tool ($GRADIO_MCP_SERVER)",
    )
    return p.parse_args(argv)


def resolve_device(device: str) -> str:
    """`--device auto`: CUDA when present (or on a ZeroGPU Space), else the CPU. (`--dtype auto` is resolved by
    the pipeline, which knows the model's size: `CoDiPipeline.from_preset`.)"""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() or is_zero_gpu() else "cpu"
    return device


def on_space() -> bool:
    """True on a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def choose_model(model: str, device: str) -> tuple[str, str]:
    """Resolves `--model auto`: (model, why), for the banner.

    The released model when a CUDA GPU will run it (or this is a ZeroGPU Space) and its weights are cached or the
    Hub can be reached to download them; the embedded tiny model otherwise.
    """
    if model != "auto":
        return model, f"chosen with --model {model}"
    import torch

    from codi.hub import OFFICIAL_FILES, cached_official_files, format_size, hub_offline_mode, hub_reachable
    from codi.hub import official_download_size as size

    zero_gpu = is_zero_gpu()
    gpu = zero_gpu or ((device in ("auto", "cuda") or device.startswith("cuda:")) and torch.cuda.is_available())
    if not gpu:
        return "tiny", "no CUDA GPU here: the released CoDi needs one, so the embedded Shapes & Tones model runs"
    where = "a ZeroGPU Space" if zero_gpu else "a CUDA GPU"
    if len(cached_official_files("fp16")) == len(OFFICIAL_FILES):
        return "official", f"{where} and the released weights are cached"
    if not hub_offline_mode() and hub_reachable():
        when = "download while the Space starts" if on_space() else "download from the page (one click)"
        return "official", f"{where}; the released weights ({format_size(size('fp16'))}) {when}"
    return "tiny", f"{where}, but the released weights are not cached and the Hub cannot be reached"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.model, why = choose_model(args.model, args.device)
    from codi.presets import default_threads
    from ui.app import create_demo, launch_options
    from ui.engine import Engine
    from ui.examples import DEFAULT_EXAMPLES

    device = resolve_device(args.device)
    if device == "cpu":
        default_threads()
    try:
        memory = {"max_memory": args.max_memory, "offload": args.offload, "strict_keys": args.strict_keys}
        memory["compile"] = args.compile
        if is_zero_gpu():  # ZeroGPU moves what is on "cuda" at start-up into each GPU call: load it all now
            memory["lazy"] = False
        # Locally the released weights (11.6 GB) are never fetched unasked: the page offers the download. A Space
        # downloads them while starting (when `preload_from_hub` has not already), since its visitors cannot.
        memory["local_files_only"] = not on_space()
        if args.runs is None:  # one scratch folder per instance: two apps never prune each other's runs
            args.runs = tempfile.mkdtemp(prefix="codi-studio-runs-")
            atexit.register(shutil.rmtree, args.runs, ignore_errors=True)
        engine = Engine.load(args.model, device=device, dtype=args.dtype, runs_dir=args.runs, **memory)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = engine.info
    info.why = why
    print(f"CoDi Studio: model {info.name} ({info.source}) on {info.device}/{info.dtype}: {why}", file=sys.stderr)
    if info.random_weights:
        print("warning: checkpoints/tiny not found: the tiny model has RANDOM weights (noise)", file=sys.stderr)
    if info.problem:
        print(f"warning: {info.problem}", file=sys.stderr)
    examples = args.examples or DEFAULT_EXAMPLES
    demo = create_demo(engine, recordings_dir=args.recordings, examples_path=examples, queue_size=args.queue_size)
    options = launch_options(engine, args.recordings, examples)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, mcp_server=args.mcp, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
