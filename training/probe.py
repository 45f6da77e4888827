"""`python -m training.probe`: what the joint generator's environment vectors carry (latent-alignment diagnostics).

For held-out world scenes noised to several steps, each output's environment vector (its UNet's `connecters_out`
on its own noisy latent: video, audio, text), the noisy latent itself and the clean latent its UNet predicts from it
with the empty prompt (what the denoiser already knows at that step) are read by a linear probe (ridge regression,
one-vs-all, fit on half the scenes, scored on the other half) for colour, shape and motion. A partner can only
follow what an environment vector carries at the steps where the outputs settle (docs/tiny-model-history.md).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from codi.modality import Modality
from codi.model import CoDiModel
from codi.presets import TINY_DIR, load_folder
from codi.sampling import Prediction, split_prediction
from codi.world import ATTRIBUTES
from training.context import Context, tone_rows
from training.data import CaptionSampler
from training.losses import add_noise

DEFAULT_STEPS: tuple[int, ...] = (0, 300, 600, 800, 900)
KINDS: tuple[str, ...] = ("env", "latent", "x0")


def ridge_accuracy(x: Tensor, labels: Sequence[str], ridge: float = 1e-2) -> float:
    """Fits a one-vs-all ridge readout on the first half of the rows of x [N,D] and returns its accuracy on the
    second half (labels: N class names)."""
    n, half = x.shape[0], x.shape[0] // 2
    if half < 1 or len(labels) != n:
        raise ValueError(f"need at least 2 rows and one label per row, got {n} rows and {len(labels)} labels")
    classes = sorted(set(labels))
    y = torch.tensor([[float(c == k) for k in classes] for c in labels], dtype=torch.float64)  # [N,K]
    xb = torch.cat([x.double(), torch.ones(n, 1, dtype=torch.float64)], 1)  # [N,D+1] with a bias column
    fit, test = xb[:half], xb[half:]
    w = torch.linalg.solve(fit.T @ fit + ridge * torch.eye(xb.shape[1], dtype=torch.float64), fit.T @ y[:half])
    return float(((test @ w).argmax(1) == y[half:].argmax(1)).double().mean())


@torch.no_grad()
def probe(model: CoDiModel, scenes: int = 512, steps: Sequence[int] = DEFAULT_STEPS, seed: int = 0) -> dict:
    """{"env" | "latent" | "x0": {step: {modality: {attribute: accuracy}}}} on `scenes` held-out scenes."""
    model.eval()
    ctx = Context(model, next(model.parameters()).device, seed=seed + 7, pool_size=scenes)
    pool, tones = ctx.pool(), ctx.tones()
    texts = CaptionSampler(np.random.default_rng(seed))(pool.scenes, 0.0)  # full captions
    clean = {
        Modality.VIDEO: pool.video_latents,  # [N,C,F,h,w]
        Modality.AUDIO: tones["latent"][tone_rows(pool.scenes)],  # [N,C,t,m]
        Modality.TEXT: ctx.text_latents(texts),  # [N,latent]
    }
    labels = {a: [getattr(s, a) for s in pool.scenes] for a in ATTRIBUTES}
    g = torch.Generator().manual_seed(seed)
    empty = ctx.uncond()["text"][None, None].expand(len(pool), 1, -1)  # [N,1,D]
    prediction, ac = Prediction(model.config.schedule.prediction), model.alphas_cumprod
    out: dict[str, dict[int, dict[str, dict[str, float]]]] = {k: {} for k in KINDS}
    for step in steps:
        t = torch.full((len(pool),), int(step), device=ctx.device)
        noisy = {m: add_noise(z, ctx.randn(tuple(z.shape), g), t, ac) for m, z in clean.items()}
        envs = model.diffusion.environments(noisy, t)  # modality -> [N,1,C]
        x0 = {  # each UNet alone (no partner), empty prompt
            m: split_prediction(model.diffusion.unet_for(m)(x, t, empty), x, ac[int(step)].to(x.dtype), prediction)[0]
            for m, x in noisy.items()
        }
        for kind, feats in zip(KINDS, ({m: e[:, 0] for m, e in envs.items()}, noisy, x0)):
            out[kind][int(step)] = {
                m.value: {a: ridge_accuracy(f.flatten(1).float().cpu(), labels[a]) for a in ATTRIBUTES}
                for m, f in feats.items()
            }
    return out


def table(result: dict) -> str:
    """Markdown table: one row per step, colour/shape/motion % per modality and kind (see KINDS)."""
    mods = [m.value for m in (Modality.VIDEO, Modality.AUDIO, Modality.TEXT)]
    head = "| t | " + " | ".join(f"{k} {m}" for k in KINDS for m in mods) + " |"
    rows = [head, "|" + "---|" * (1 + len(KINDS) * len(mods))]
    for step in result["env"]:
        cells = ["/".join(f"{100 * result[k][step][m][a]:.0f}" for a in ATTRIBUTES) for k in KINDS for m in mods]
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.probe", description=__doc__)
    p.add_argument("--model", default=str(TINY_DIR), help="checkpoint folder")
    p.add_argument("--scenes", type=int, default=512, help="held-out scenes (half fit the probe, half score it)")
    p.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="comma list of diffusion steps")
    p.add_argument("--json", default="", help="also write the result here")
    args = p.parse_args(argv)
    result = probe(load_folder(args.model), args.scenes, [int(s) for s in args.steps.split(",")])
    print("colour/shape/motion % read by a linear probe (chance 25/33/20)")
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
