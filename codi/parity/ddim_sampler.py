"""Parity runner for ddim_sampler.json: CoDi's DDIM loop with guidance over the joint UNet."""

from __future__ import annotations

import torch
from torch import Tensor

from codi.modality import Modality
from codi.models.joint import CouplingMode, mix_conditions
from codi.parity.unet_joint import build_denoiser, load_fixture_denoiser
from codi.sampling import guided, official_timesteps, sample_ddim

SCHEDULE_BUFFERS = ("betas", "alphas_cumprod")


def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith("model.diffusion_model.") for k in tensors):  # UNet weights in this file
        denoiser = build_denoiser({"config": spec["unet_config"]}, tensors)
    else:  # as in set A: "the diffusion UNet weights are the ones in unet_joint.safetensors of this folder"
        denoiser = load_fixture_denoiser(spec["_dir"])
    alphas_cumprod = tensors["alphas_cumprod"].to(torch.float32)
    call = spec["call"]
    conds = [tensors[k].float() for k in sorted(k for k in tensors if k.startswith("input.condition."))]
    weights = [float(call["mix_weight"][c]) for c in call["condition_types"]]
    both = mix_conditions(conds, weights)  # [2B,1,D], uncond rows first
    uncond, cond = both.chunk(2)
    scale = float(call.get("guidance_scale", 7.5))
    out: dict[str, Tensor] = {}
    for r in spec["runs"]:
        mods = [Modality(m) for m in r["xtype"]]
        x_T = {m: tensors[name].float() for m, name in zip(mods, r["initial_noise"])}

        def predict(x, t, context):
            return denoiser(x, t, context, mode=CouplingMode.OFFICIAL)

        steps = official_timesteps(int(r["steps_requested"]), alphas_cumprod.shape[0])
        x_0 = sample_ddim(guided(predict, cond, uncond, scale), x_T, alphas_cumprod, steps)
        name = r["name"]
        for m, final in zip(mods, r["final"]):
            out[final] = x_0[m]
        ascending = steps[::-1]
        a = alphas_cumprod[ascending]
        a_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[ascending[:-1]]])
        out[f"output.{name}.timesteps_visited"] = torch.tensor(steps, dtype=torch.int64)
        out[f"output.{name}.ddim_alphas"] = a.double()
        out[f"output.{name}.ddim_alphas_prev"] = a_prev.double()
        out[f"output.{name}.ddim_sqrt_one_minus_alphas"] = torch.sqrt(1.0 - a).double()
    return out
