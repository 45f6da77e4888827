"""Runs the stages in order with AdamW, a tqdm bar, a JSONL loss log, per-stage resumable state and export."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from codi.config import CoDiConfig
from codi.model import CoDiModel
from codi.presets import CONFIG_NAME, WEIGHTS_NAME
from codi.residency import channels_last_convs
from training import bridging, diffusion, stages
from training.context import Context
from training.stages import Plan


@dataclass(frozen=True)
class Stage:
    """One training stage: its name, default step count, peak learning rate and plan builder.

    `fine_tunes`: the earlier stage whose trained parameters this one goes on training (the image UNet's environment
    encoder and connectors: text-image, then audio-video). Such a stage starts from that stage's result instead of
    the seeded init, and re-running it re-runs that stage first."""

    name: str
    steps: int
    lr: float
    setup: Callable[[Context], Plan]
    fine_tunes: str | None = None


STAGES: tuple[Stage, ...] = (
    Stage("image_vae", 900, 2e-3, stages.image_vae),
    Stage("audio_vae", 800, 2e-3, stages.audio_vae),
    Stage("vocoder", 500, 1e-3, stages.vocoder),  # the tiny model decodes audio with Griffin-Lim by default
    Stage("optimus", 3000, 1e-3, stages.optimus),
    Stage("clip", 1200, 1e-3, bridging.clip),
    Stage("clap", 2000, 1e-3, bridging.clap),
    Stage("unet_image", 5600, 1e-3, diffusion.unet_image),
    Stage("unet_audio", 8000, 1e-3, diffusion.unet_audio),
    Stage("unet_text", 5000, 1e-3, diffusion.unet_text),
    Stage("joint_text_image", 800, 5e-4, diffusion.joint_text_image),
    Stage("joint_text_audio", 500, 5e-4, diffusion.joint_text_audio),
    Stage("joint_audio_video", 600, 5e-4, diffusion.joint_audio_video, fine_tunes="joint_text_image"),
    Stage("anchor_video", 750, 1.5e-3, diffusion.anchor_video, fine_tunes="joint_audio_video"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def with_prerequisites(names: Sequence[str]) -> tuple[str, ...]:
    """`names` plus every stage a named stage fine-tunes (transitively), in the canonical order."""
    chosen = set(names)
    for stage in reversed(STAGES):  # a stage fine-tunes an earlier one: one backward pass covers chains
        if stage.name in chosen and stage.fine_tunes:
            chosen.add(stage.fine_tunes)
    return tuple(n for n in STAGE_NAMES if n in chosen)


STALE_AFTER: dict[str, tuple[str, ...]] = {  # caches of frozen-encoder outputs a stage invalidates
    "image_vae": ("pool",),
    "audio_vae": ("tones",),
    "optimus": ("optimus",),
    "clip": ("clip_text", "uncond", "pool"),
    "clap": ("tones", "uncond"),
}


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU (with denormal flushing and every core)."""
    device = torch.device(
        "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)
    )
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # subnormals slow small CPU nets ~100x
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    return device


def fresh_model(config: CoDiConfig, seed: int) -> CoDiModel:
    """Seeded random initialisation, with the UNets' transformer outputs zeroed (LDM init) and wider inits of
    the from-scratch Optimus encoder and CLIP temporal blocks."""
    torch.manual_seed(seed)
    model = CoDiModel(config)
    diffusion.zero_init_transformer_outputs(model)
    stages.widen_text_encoder_init(model)
    bridging.widen_clip_temporal_init(model)
    return model


@torch.no_grad()
def reset_to_init(model: CoDiModel, params: Sequence[torch.nn.Parameter], seed: int) -> None:
    """Puts a stage's parameters back to their from-scratch initial values, so that re-running one stage
    (after a fix) gives what a full run from scratch gives."""
    names = {id(p): n for n, p in model.named_parameters()}
    init = dict(fresh_model(model.config, seed).named_parameters())
    for p in params:
        p.copy_(init[names[id(p)]])


def save_state(model: CoDiModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / CONFIG_NAME)
    # one copy per tensor: unties lm_head/wte and puts channels-last kernels back in the standard layout
    state = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))


def load_state(folder: Path, device: torch.device) -> CoDiModel:
    model = CoDiModel(CoDiConfig.load(folder / CONFIG_NAME))
    model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)), strict=True)
    return model.to(device)


def with_measured_scales(config: CoDiConfig, trained: CoDiConfig) -> CoDiConfig:
    """`config` (what the code builds now) with the latent scale factors training measured into `trained`, and the
    noise schedule it was trained on.

    A resumed run keeps the config its state was saved with; exporting this instead means settings that carry no
    weights (waveform decoder, sampling defaults) are always the current code's."""
    out = CoDiConfig.from_dict(config.to_dict())
    out.image_vae = dataclasses.replace(out.image_vae, scale_factor=trained.image_vae.scale_factor)
    out.audio_vae = dataclasses.replace(out.audio_vae, scale_factor=trained.audio_vae.scale_factor)
    out.optimus.scale_factor = trained.optimus.scale_factor
    out.schedule = trained.schedule  # what the UNets were trained to predict, on which schedule
    return out


def export(model: CoDiModel, folder: Path, meta: dict, config: CoDiConfig | None = None) -> int:
    """checkpoints/<name>/{config.json, model.safetensors (float16), meta.json}; returns the weights' bytes.

    `config`: the config to write with the measured scale factors (default: the model's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    (model.config if config is None else with_measured_scales(config, model.config)).save(folder / CONFIG_NAME)
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().contiguous().cpu() for k, v in model.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    size = (folder / WEIGHTS_NAME).stat().st_size
    (folder / "meta.json").write_text(json.dumps({**meta, "weights_bytes": size}, indent=2) + "\n")
    return size


def _lr(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def run_stage(ctx: Context, stage: Stage, steps: int, log: Path, progress: bool = True) -> dict:
    """Trains one stage; returns its summary (final mean losses, seconds, finish() results)."""
    model = ctx.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    plan = stage.setup(ctx)
    params = list({id(p): p for p in plan.params}.values())
    if stage.fine_tunes is None:
        reset_to_init(model, params, ctx.seed)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0, betas=(0.9, 0.99))
    t0, window, summary = time.perf_counter(), {}, {}
    bar = tqdm(range(steps), desc=stage.name, disable=not progress, mininterval=2.0)
    for i in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(i, steps, stage.lr)
        losses = plan.step(i)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        if (i + 1) % 20 == 0 or i + 1 == steps:
            means = {k: sum(v) / len(v) for k, v in window.items()}
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            entry = {"stage": stage.name, "step": i + 1, "losses": means, "seconds": time.perf_counter() - t0}
            with log.open("a") as f:
                f.write(json.dumps(entry) + "\n")
            summary["final_losses"], window = means, {}
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    with torch.no_grad():
        extra = plan.finish() if plan.finish else {}
    summary.update({"steps": steps, "seconds": round(time.perf_counter() - t0, 1), **(extra or {})})
    return summary


def train(
    config: CoDiConfig,
    out: Path,
    device: torch.device | None = None,
    names: Sequence[str] = STAGE_NAMES,
    resume: bool = False,
    scale: float = 1.0,
    seed: int = 0,
    batch_cap: int | None = None,
    steps_override: int | None = None,
    export_to: Path | None = None,
    progress: bool = True,
) -> dict:
    """Runs `names` (plus the stages they fine-tune) in the canonical order; finished stages are skipped with
    `resume`. Returns the summary."""
    device = device or pick_device()
    names = with_prerequisites(names)
    out.mkdir(parents=True, exist_ok=True)
    state_dir, progress_file, log = out / "state", out / "progress.json", out / "log.jsonl"
    done = json.loads(progress_file.read_text()) if progress_file.exists() else {"stages": {}}
    if (state_dir / WEIGHTS_NAME).exists() and (resume or set(names) != set(STAGE_NAMES)):
        model = load_state(state_dir, device)
        if model.config.schedule != config.schedule:
            raise ValueError(
                f"{out} was trained on {model.config.schedule}, this run asks for {config.schedule}: "
                "pass the same schedule option (--codi-schedule or not) or use another --out"
            )
    else:
        model, done = fresh_model(config, seed).to(device), {"stages": {}}
        log.unlink(missing_ok=True)
    if device.type == "cpu":
        channels_last_convs(model)
    ctx = Context(model, device, seed=seed, batch_cap=batch_cap)
    done.setdefault("config", config.name)
    for stage in STAGES:
        if stage.name not in names or (resume and stage.name in done["stages"]):
            continue
        steps = steps_override or max(1, round(stage.steps * scale))
        summary = run_stage(ctx, stage, steps, log, progress)
        done["stages"][stage.name] = summary
        done["stages"] = {n: done["stages"][n] for n in STAGE_NAMES if n in done["stages"]}  # canonical order
        ctx.forget(*STALE_AFTER.get(stage.name, ()))
        save_state(model, state_dir)
        progress_file.write_text(json.dumps(done, indent=2) + "\n")
        print(json.dumps({stage.name: summary}), flush=True)
    if export_to is not None:
        meta = {
            "trained_with": "python -m training",
            "device": str(device),
            "seed": seed,
            "stages": done["stages"],
            "total_seconds": round(sum(s.get("seconds", 0) for s in done["stages"].values()), 1),
        }
        meta["weights_bytes"] = export(model, export_to, meta, config)
    return done
