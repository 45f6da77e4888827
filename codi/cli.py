"""Command line: `python -m codi generate ...` (one request or a JSONL batch)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi.components import COMPONENT_LABELS
from codi.conditions import InputError
from codi.evaluate import TASK_NAMES
from codi.media import MediaError
from codi.pipeline import CoDiPipeline, GenerationResult
from codi.results import save_result

if TYPE_CHECKING:
    from codi.residency import ComponentManager

BATCH_KEYS = {
    "id",
    "text",
    "image",
    "video",
    "audio",
    "weights",
    "outputs",
    "seed",
    "steps",
    "guidance",
    "sampler",
    "coupling",
    "partner_weight",
    "num_samples",
    "text_temperature",
}


ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a batch id names a folder: nothing else gets in
_NUMBER = (int, float)
BATCH_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,), "image": (str,), "video": (str,), "audio": (str,), "weights": (dict,), "outputs": (str, list),
    "seed": (int,), "steps": (int,), "guidance": _NUMBER, "sampler": (str,), "coupling": (str,),
    "partner_weight": _NUMBER, "num_samples": (int,), "text_temperature": _NUMBER,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m codi", description="CoDi any-to-any generation")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate outputs from any combination of inputs")
    g.add_argument("--text", help="text prompt")
    g.add_argument("--image", help="input image file")
    g.add_argument("--video", help="input video file")
    g.add_argument("--audio", help="input audio file (wav/flac/mp3/ogg, any rate)")
    g.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="MODALITY=W",
        help="mixing weight of an input, e.g. --weight text=2 (repeatable)",
    )
    g.add_argument("--outputs", default=None, help="comma-separated subset of text,image,video,audio")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--sampler", choices=["ddim", "dpm"], default=None)
    g.add_argument(
        "--coupling", choices=["official", "paper"], default=None, help="joint coupling of co-generated outputs"
    )
    g.add_argument(
        "--partner-weight",
        type=float,
        default=None,
        help="weight of the other outputs' environments in each output's condition (joint calls; 0 = CoDi as "
        "published; default: the model's)",
    )
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument(
        "--text-temperature", type=float, default=None, help="text decoder temperature (default: the model's)"
    )
    g.add_argument(
        "--batch",
        help="JSONL file: one request per line (keys: " + ", ".join(sorted(BATCH_KEYS)) + "); under torchrun or "
        "accelerate launch the requests are split across the processes (one model and device each)",
    )
    add_model_options(g)
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("convert", help="convert the released .pth files into our format (safetensors per component)")
    c.add_argument("files", nargs="*", help="the released .pth files, in load order (or --from-cache)")
    c.add_argument("--from-cache", action="store_true", help="take the released files from the Hugging Face cache")
    c.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="which released files (cache)")
    c.add_argument("--out", required=True, help="folder to write (config.json + <component>.safetensors)")
    c.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"], help="stored dtype")
    c.add_argument("--strict-keys", action="store_true", help="refuse checkpoint keys that map to no component")
    d = sub.add_parser("download", help="download the released weights (Hugging Face cache) and convert them")
    d.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="fp16 (11.6 GB) or fp32 (36.5 GB)")
    d.add_argument("--out", default=None, help="also convert into this folder (default: keep the .pth files only)")
    d.add_argument("--revision", default=None, help="repository revision (branch, tag or commit)")
    e = sub.add_parser("eval", help="score a model on the Shapes & Tones world")
    e.add_argument("--model", default="tiny", help="tiny (default) or a checkpoint folder trained on the world")
    e.add_argument("--n", type=int, default=30, help="samples per task")
    e.add_argument("--seed", type=int, default=1234, help="seed of the held-out scenes")
    e.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    e.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    e.add_argument("--sampler", choices=["ddim", "dpm"], default=None, help="sampler (default: the model's)")
    e.add_argument("--text-temperature", type=float, default=None, help="text decoder temperature (model's)")
    e.add_argument("--partner-weight", type=float, default=None, help="partner weight of joint calls (model's)")
    e.add_argument(
        "--tasks", default="all", help="'all' or a comma list of: " + ", ".join(TASK_NAMES) + " (quote the '>')"
    )
    e.add_argument("--device", default="cpu")
    e.add_argument("--json", default="eval.json", help="where to write the scores as JSON ('' for none)")
    return p


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype and the memory options, shared by generate and the app."""
    p.add_argument("--model", default="tiny", help="tiny (default, embedded), official, or a converted folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="auto (default): float32 for tiny; for the released model float16 on a GPU, bfloat16 on a CPU",
    )
    p.add_argument(
        "--max-memory",
        type=float,
        default=None,
        metavar="GB",
        help="keep loaded components under this many GB, evicting the least recently used",
    )
    p.add_argument(
        "--offload",
        choices=["none", "model"],
        default="none",
        help="model: components wait on the CPU and each moves to the device only while it runs",
    )
    p.add_argument(
        "--strict-keys", action="store_true", help="refuse official checkpoint keys that map to no component"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the UNets (slow first call per shape, faster steps)"
    )


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`CoDiPipeline.from_preset` keyword arguments from `add_model_options`' flags."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "max_memory": args.max_memory,
        "offload": args.offload,
        "strict_keys": args.strict_keys,
        "compile": args.compile,
    }


def parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--weight takes MODALITY=W, got {item!r}")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--weight {item!r}: {value!r} is not a number") from None
    return weights


def request_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "text": args.text,
        "image": args.image,
        "video": args.video,
        "audio": args.audio,
        "weights": parse_weights(args.weight),
        "outputs": args.outputs,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "sampler": args.sampler,
        "coupling": args.coupling,
        "partner_weight": args.partner_weight,
        "num_samples": args.num_samples,
        "text_temperature": args.text_temperature,
    }


def read_batch(path: str | Path) -> list[dict[str, Any]]:
    """The requests of a JSONL batch, every line checked before anything runs (keys, value types, unique ids)."""
    requests: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the batch file {path}: {e}") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(req, dict):
            raise InputError(f"{path}:{n}: each line must be a JSON object")
        unknown = set(req) - BATCH_KEYS
        if unknown:
            raise InputError(f"{path}:{n}: unknown keys {sorted(unknown)}; allowed: {sorted(BATCH_KEYS)}")
        req.setdefault("id", f"{n:04d}")
        rid = req["id"]
        if not isinstance(rid, (str, int)) or not ID_PATTERN.fullmatch(str(rid)):
            raise InputError(f"{path}:{n}: id {rid!r} must be 1-64 ASCII letters, digits, '-' or '_'")
        if str(rid) in seen:
            raise InputError(f"{path}:{n}: id {rid!r} is also line {seen[str(rid)]}'s: each request needs its own")
        seen[str(rid)] = n
        for key, kinds in BATCH_TYPES.items():
            value = req.get(key)
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
                names = " or ".join(k.__name__ for k in kinds)
                raise InputError(f"{path}:{n}: {key} must be {names}, got {type(value).__name__} {value!r}")
        requests.append(req)
    if not requests:
        raise InputError(f"{path} holds no requests")
    return requests


def run_request(pipe: CoDiPipeline, req: dict[str, Any], out: Path, progress=None) -> GenerationResult:
    inputs = {k: req[k] for k in ("text", "image", "video", "audio") if req.get(k) not in (None, "")}
    outputs = req["outputs"] if req.get("outputs") is not None else "image"  # "" is refused, not taken as image
    result = pipe(
        inputs=inputs,
        outputs=outputs,
        weights=req.get("weights") or None,
        steps=req.get("steps"),
        guidance_scale=req.get("guidance"),
        seed=req.get("seed"),
        sampler=req.get("sampler"),
        coupling=req.get("coupling"),
        partner_weight=req.get("partner_weight"),
        num_samples=req["num_samples"] if req.get("num_samples") is not None else 1,  # 0 is refused, not taken as 1
        text_temperature=req.get("text_temperature"),
        progress=progress,
    )
    save_result(result, out, inputs)
    return result


def _progress_bar(quiet: bool, label: str):
    if quiet:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="step", leave=False)

    def update(done: int, total: int) -> None:
        if done == 1:  # rate and time left from here: encoding and loading weights before the first step are not steps
            bar.set_description_str(label, refresh=False)  # after "loading the ..." (`_console`)
            bar.reset(total)
            bar.initial = 1
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar


@contextlib.contextmanager
def _console(bar, components: ComponentManager) -> Iterator[None]:
    """While a progress bar shows: it names the part of the model being read (the released model loads each on
    first use, seconds each), and log lines (e.g. 'loaded unet_image ...') are written above it, not into it."""
    if bar is None:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    from codi.hub import format_size

    label = bar.desc

    def on_load(name: str, size: int) -> None:
        bar.set_description_str(f"{label}: loading the {COMPONENT_LABELS.get(name, name)} ({format_size(size)})")

    with components.reporting_loads(on_load), logging_redirect_tqdm():
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "eval":
        from codi.evaluate import main as evaluate_main

        return evaluate_main(args)
    from codi.hub import WeightsNotFoundError
    from codi.loading import CheckpointKeyError, CorruptCheckpointError
    from codi.pipeline import NotEnoughMemoryError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "convert":
            return convert(args.files, args.out, args.from_cache, args.precision, args.dtype, args.strict_keys)
        if args.command == "download":
            return download(args.precision, args.out, args.revision)
        return generate(args)
    except (InputError, MediaError, FileNotFoundError, ValueError, CheckpointKeyError, NotEnoughMemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (WeightsNotFoundError, CorruptCheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3


def generate(args: argparse.Namespace) -> int:
    from codi.distributed import share_of, write_summary
    from codi.loading import CorruptCheckpointError

    requests = read_batch(args.batch) if args.batch else [request_from_args(args)]
    out = Path(args.out)
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # checked before loading and generating, not when the files are written
        raise InputError(f"--out {out}: {blocker} is a file, not a folder")
    with share_of(requests, args.device if args.batch else None) as share:
        kwargs = model_kwargs(args) | ({"device": share.device} if share.device else {})
        pipe = CoDiPipeline.from_preset(args.model, **kwargs)
        where = (
            f" (process {share.rank + 1} of {share.world}, {len(share.requests)} requests)" if share.world > 1 else ""
        )
        print(f"model: {pipe.source}{where}", file=sys.stderr)
        rows = []
        for req in share.requests:
            folder = out / str(req["id"]) if args.batch else out
            update, bar = _progress_bar(args.quiet, str(req.get("id", "generate")))
            try:
                with _console(bar, pipe.components):
                    result = run_request(pipe, req, folder, update)
            except Exception as e:  # noqa: BLE001 (a batch records any failing line and goes on)
                if not args.batch or isinstance(e, CorruptCheckpointError):
                    raise
                print(f"{folder}: error: {e}", file=sys.stderr)  # the pipeline stays usable: go on
                rows.append({"id": req.get("id"), "process": share.rank, "error": f"{type(e).__name__}: {e}"})
                continue
            finally:
                if bar is not None:
                    bar.close()
            peak, t = result.model.get("peak_memory", {}), result.timings
            loading = f" ({t['load_s']:.1f} s of it loading weights)" if t.get("load_s", 0) >= 0.1 else ""
            print(
                f"{folder}: {', '.join(result.params['outputs'])} (seed {result.seed}, {t['total_s']:.2f} s{loading}, "
                f"peak {peak.get('bytes', 0) / 1e9:.2f} GB {peak.get('kind', '')})"
            )
            row = {"id": req.get("id"), "process": share.rank, "device": str(pipe.device), "seed": result.seed}
            row |= {"outputs": result.params["outputs"], "total_s": result.timings["total_s"]}
            rows.append(row | {"files": sorted(p.name for p in folder.iterdir())})
        if args.batch:
            summary = write_summary(out, share, rows)
            if summary is not None:
                print(f"{summary}: {len(requests)} requests in {share.world} process(es)", file=sys.stderr)
    return 2 if any(r.get("error") for r in rows) else 0


def convert(files: list[str], out: str, from_cache: bool, precision: str, dtype: str, strict_keys: bool = False) -> int:
    """Reads the released .pth files once and writes our format: config.json + <component>.safetensors."""
    if bool(files) == bool(from_cache):
        raise InputError("give the released .pth files in load order, or --from-cache (not both)")
    kwargs: dict[str, Any] = {"official_variant": precision, "strict_keys": strict_keys}
    if files:
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"no such file: {', '.join(missing)}")
        kwargs["official_files"] = files
    pipe = CoDiPipeline.from_preset("official", device="cpu", dtype=dtype, lazy=True, **kwargs)
    report = pipe.components.source.report
    if report.summary():
        print(f"note: {report.summary()}", file=sys.stderr)
    written = pipe.save_pretrained(out, dtype=dtype)
    total = sum(p.stat().st_size for p in written)
    print(f"{out}: {len(written)} files, {total / 1e9:.2f} GB (load with --model {out})")
    return 0


def download(precision: str, out: str | None, revision: str | None) -> int:
    """Fetches the released files into the Hugging Face cache (with progress), then converts them if asked."""
    from codi.hub import download_official

    weights = download_official(precision, revision=revision)
    print("\n".join(str(p) for p in weights.files))
    if weights.commit:
        print(
            f"commit {weights.commit} (sizes and sha256 checked; pin it with CODI_OFFICIAL_REVISION={weights.commit})"
        )
    if out is not None:
        return convert([str(p) for p in weights.files], out, False, precision, "float16")
    return 0
