"""Parity runner for the `autoencoder_kl` fixture: SD AutoencoderKL posterior, decode, CoDi scaling, uint8."""

from __future__ import annotations

import torch
from torch import Tensor

from codi.keymaps.vae import autokl_rules
from codi.loading import ComponentMap, load_official_component
from codi.models.vae import ImageVAE, ImageVAEConfig, to_uint8


def _input(tensors: dict[str, Tensor], name: str) -> Tensor:
    value = tensors[name]
    return value.float() if value.is_floating_point() else value


@torch.no_grad()
def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Builds the fixture's ImageVAE, loads its `autokl.` weights and performs the json's calls."""
    config = ImageVAEConfig.from_dict(spec["config"])
    model = ImageVAE(config).float().eval()
    rules = autokl_rules(len(config.autoencoder.ch_mult))
    load_official_component(model, tensors, ComponentMap("autokl.", "", rules))

    mean, logvar, moments = model.posterior(_input(tensors, "input.image"))
    z = _input(tensors, "input.z")
    codi_decode = model.decode(z)  # autokl.decode(z / vision_scale_factor)
    return {
        "output.mean": mean,
        "output.logvar": logvar,
        "output.moments": moments,
        "output.decode": model.decode_unscaled(z),
        "output.decode_video": model.decode_unscaled(_input(tensors, "input.z_video")),
        "output.codi_autokl_decode": codi_decode,
        "output.codi_decode_uint8_hwc": to_uint8(codi_decode),
    }
