"""Parity runner for `unet_joint.json`: the three UNets, single and joint (OFFICIAL coupling) calls."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from codi.keymaps.unet import joint_map
from codi.loading import load_official_component
from codi.modality import Modality
from codi.models.joint import CouplingMode, JointDenoiser, mix_conditions
from codi.models.unet import UNet0D, UNet2D, UNetConfig

# official `model_type` entries -> our UNet name
_MODEL_TYPES = {"image": "image", "video": "image", "audio": "audio", "text": "text"}


def build_denoiser(spec: dict | None, tensors: Mapping[str, Tensor] | None = None) -> JointDenoiser:
    """The JointDenoiser of a unet_joint-style spec, in eval mode, with the official aliasing quirk.

    Args:
        spec: a dict whose "config" holds `model_type` and `unet_<name>_cfg` (the unet_joint.json layout).
        tensors: official-named weights (`model.diffusion_model.*`, fp16 allowed) to load strictly, or None.
    Returns:
        the denoiser (float32), loaded when `tensors` is given.
    """
    if spec is None or "config" not in spec:
        raise ValueError("build_denoiser needs a unet_joint-style spec; use load_fixture_denoiser(folder)")
    config = spec["config"]
    names = {_MODEL_TYPES[t] for t in config["model_type"] if t in _MODEL_TYPES}
    unets = {}
    for name in sorted(names):
        cfg = UNetConfig.from_dict(config[f"unet_{name}_cfg"], alias_last_skip=True)
        unets[name] = UNet0D(cfg) if name == "text" else UNet2D(cfg)
    model = JointDenoiser(unets).eval()
    if tensors is not None:
        load_official_component(model, _floats(tensors), joint_map())
    return model


def load_fixture_denoiser(folder: str | Path) -> JointDenoiser:
    """The denoiser of `folder/unet_joint.{json,safetensors}` with its weights (shared by ddim_sampler)."""
    from codi.parity import read_fixture

    folder = Path(folder)
    spec, tensors = read_fixture(folder / "unet_joint.json", folder / "unet_joint.safetensors")
    return build_denoiser(spec, tensors)


def _floats(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    model = build_denoiser(spec, tensors)
    tensors = _floats(tensors)
    call = spec["call"]
    conditions = [tensors[name] for name in call["condition_list"]]
    context = mix_conditions(conditions, [call["mix_weight"][t] for t in call["condition_types"]])
    outputs = {}
    with torch.no_grad():
        for case in spec["cases"]:
            latents = {Modality.parse(m): tensors[name] for m, name in zip(case["xtype"], case["inputs"])}
            for key in call["timesteps"]:  # "t0", "t1", ...
                timesteps = tensors[f"input.timesteps.{key[1:]}"]
                eps = model(latents, timesteps, context, mode=CouplingMode.OFFICIAL)
                outputs.update(zip(case["outputs"][key], eps.values()))
    return outputs
