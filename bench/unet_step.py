"""One UNet step at full size: ours, and optionally the released code's module on the same random weights.

    python bench/unet_step.py --unet text --dtype bfloat16
    python bench/unet_step.py --unet image --official ../scratch/i-Code-V3     # a checkout of microsoft/i-Code

One guided step as the samplers make it: one latent under two conditions (the two halves of classifier-free
guidance), one condition token each, the released sizes (image 32x32 latents, video 8 frames, audio 256x16 mel
latents, text 768-d). The released code takes the latent twice (batch 2); ours takes it once with both conditions,
as the pipeline calls it, and works on it once up to the first cross-attention (`--shared off`: ours takes batch
2 too). With --official the released code's UNet is built
from its own configs/model/openai_unet.yaml (it needs einops; its `.cuda()` calls are made no-ops and torchvision,
which it imports but does not use here, is stubbed), given random weights, and ours gets the same weights through
our key table; the two then run alternately, pass by pass, so that machine noise hits both alike. The released code
is only imported from the path given, never copied into this project.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codi.config import official_config  # noqa: E402
from codi.keymaps import OFFICIAL_KEY_TABLE  # noqa: E402
from codi.loading import convert_official_state_dict  # noqa: E402
from codi.models.unet import UNet0D, UNet2D  # noqa: E402
from codi.residency import channels_last_convs  # noqa: E402

OFFICIAL_TYPES = {"image": "openai_unet_2d", "video": "openai_unet_2d", "audio": "openai_unet_2d_audio",
                  "text": "openai_unet_0dmd"}  # fmt: skip
PART = {"image": "image", "video": "image", "audio": "audio", "text": "text"}


def inputs(unet: str, dtype: torch.dtype, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent [B], timesteps [B], context [2B]) of one guided step at the released sizes."""
    g = torch.Generator().manual_seed(0)
    shape = {"image": (batch, 4, 32, 32), "video": (batch, 4, 8, 32, 32), "audio": (batch, 8, 256, 16),
             "text": (batch, 768)}[unet]  # fmt: skip
    x = torch.randn(shape, generator=g).to(dtype)
    t = torch.full((batch,), 500, dtype=torch.long)
    context = torch.randn(2 * batch, 1, 768, generator=g)  # [uncond; cond]
    context = (context / context.norm(dim=-1, keepdim=True)).to(dtype)
    return x, t, context


def ours(unet: str) -> torch.nn.Module:
    config = official_config()
    cfg = {"image": config.unet_image, "video": config.unet_image, "audio": config.unet_audio,
           "text": config.unet_text}[unet]  # fmt: skip
    return (UNet0D if unet == "text" else UNet2D)(cfg)


def official(unet: str, root: Path) -> tuple[torch.nn.Module, callable]:
    """The released UNetModelCoDi holding only this UNet, and a call with our argument order."""
    import yaml

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the released forward moves everything to CUDA
    if "torchvision" not in sys.modules:  # imported by the released get_model.py, unused by the UNets
        stub = types.ModuleType("torchvision")
        stub.__path__ = []
        stub.models = sys.modules["torchvision.models"] = types.ModuleType("torchvision.models")
        sys.modules["torchvision"] = stub
    sys.path.insert(0, str(root))
    from core.models.latent_diffusion import diffusion_unet as du  # released code, imported from `root`

    spec = yaml.safe_load((root / "configs" / "model" / "openai_unet.yaml").read_text())
    name = {"image": "openai_unet_2d", "video": "openai_unet_2d", "audio": "openai_unet_2d_audio",
            "text": "openai_unet_0dmd"}[unet]  # fmt: skip
    args = dict(spec[name]["args"])
    args["use_checkpoint"] = False
    module = (du.UNetModel0D_MultiDim if unet == "text" else du.UNetModel2D)(**args)
    codi = du.UNetModelCoDi.__new__(du.UNetModelCoDi)
    torch.nn.Module.__init__(codi)
    for part in ("image", "text", "audio"):
        setattr(codi, f"unet_{part}", module if part == PART[unet] else du.create_dummy_class())
    setattr(codi, f"{PART[unet]}_model_channels", module.model_channels)

    def call(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return codi([x], t, [context], [unet], ["text"])[0]

    return codi, call


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere (the released init zeroes every output layer, which would make both outputs 0):
    weights ~ N(0, 1/fan_in), norm scales ~ 1, biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(noise / (p[0].numel() ** 0.5))
            elif "norm" in name or name.endswith(("in_layers.0.weight", "out_layers.0.weight", "out.0.weight")):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def same_weights(ours_unet: torch.nn.Module, released: torch.nn.Module, unet: str) -> None:
    """Gives the released module random weights and copies them into ours through the key table (strict)."""
    randomize(released)
    prefix = f"model.diffusion_model.unet_{PART[unet]}."
    state = {prefix + k: v for k, v in getattr(released, f"unet_{PART[unet]}").state_dict().items()}
    converted = convert_official_state_dict(state, OFFICIAL_KEY_TABLE)
    mine = f"diffusion.unet_{PART[unet]}."
    ours_unet.load_state_dict({k[len(mine) :]: v for k, v in converted.items()}, strict=True)


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unet", choices=["image", "video", "audio", "text"], default="text")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--official", type=Path, help="folder i-Code-V3 of a microsoft/i-Code checkout")
    p.add_argument("--json", type=Path, help="append the figures to this file")
    p.add_argument(
        "--shared", choices=["on", "off"], default="on", help="ours takes the latent once (as sampling does)"
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    mine = ours(a.unet).eval()

    def twice(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([x, x]), torch.cat([t, t])  # the latent in both halves

    if a.shared == "on":
        runs = {"ours": lambda x, t, c: mine(x, t, c)}
    else:
        runs = {"ours": lambda x, t, c: mine(*twice(x, t), c)}
    if a.official:
        released, call = official(a.unet, a.official.resolve())
        released.eval()
        same_weights(mine, released, a.unet)
        released.to(dtype)
        runs["official"] = lambda x, t, c: call(*twice(x, t), c)
    mine.to(dtype)
    channels_last_convs(mine)  # as the pipeline stores them (codi.residency)
    x, t, c = inputs(a.unet, dtype)
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    for name, fn in runs.items():  # warm-up
        outs[name] = timed(fn, x.clone(), t, c)[1]
    for _ in range(a.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, x.clone(), t, c)[0])
    row = {"unet": a.unet, "dtype": a.dtype, "threads": a.threads, "repeats": a.repeats, "shared": a.shared}
    row |= {f"{k}_s": round(statistics.median(v), 4) for k, v in times.items()}
    row |= {f"{k}_each_s": [round(x, 2) for x in v] for k, v in times.items()}  # the machine's noise, in view
    if "official" in runs:
        o, r = outs["ours"].float(), outs["official"].float().reshape(outs["ours"].shape)
        row["ratio"] = round(row["ours_s"] / row["official_s"], 3)
        pairs = [o / r for o, r in zip(times["ours"], times["official"])]  # each pass against the next one
        row["ratio_of_pairs"] = round(statistics.median(pairs), 3)  # less moved by the machine's drift
        row["max_rel_diff"] = float((o - r).abs().max() / r.abs().max())
    print(json.dumps(row))
    if a.json:
        with a.json.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
