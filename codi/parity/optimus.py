"""Parity runner for the `optimus` fixture: Optimus BERT encoder, latent-conditioned GPT-2, seeded sampling."""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import Tensor

from codi.keymaps.optimus import OPTIMUS_MAP
from codi.loading import load_official_component
from codi.models.optimus import OptimusConfig, OptimusVAE

_SAMPLED = re.compile(r"output\.sampled_token_ids\.seed(\d+)\.row(\d+)")


def _float32(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in tensors.items()}


def build(spec: dict, tensors: dict[str, Tensor]) -> OptimusVAE:
    """Our OptimusVAE sized by the fixture config, with its official-named weights loaded strictly."""
    cfg = dict(spec["config"])
    if "text_scale_factor" in spec:
        cfg.setdefault("scale_factor", spec["text_scale_factor"])
    model = OptimusVAE(OptimusConfig.from_dict(cfg)).eval()
    load_official_component(model, _float32(tensors), OPTIMUS_MAP)
    return model


def _sampled(model: OptimusVAE, z_text: Tensor, names: list[str]) -> dict[str, Tensor]:
    """`output.sampled_token_ids.seed{S}.row{i}`: the official per-row sampler after torch.manual_seed(S)."""
    by_seed: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for name in names:
        seed, row = map(int, _SAMPLED.fullmatch(name).groups())
        by_seed[seed].append((row, name))
    out = {}
    for seed, rows in sorted(by_seed.items()):
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            ids = model.sample_ids_official(z_text / model.scale_factor)
        for row, name in rows:
            out[name] = torch.tensor(ids[row], dtype=torch.long)
    return out


def run(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every output the fixture names, computed by our modules from its `input.*` tensors."""
    model = build(spec, tensors)
    inputs = _float32({k: v for k, v in tensors.items() if k.startswith("input.")})
    wanted = list(spec["outputs"])
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        post = model.posterior(inputs["input.encoder_token_ids"])
        out["output.encoder_mu"], out["output.encoder_logvar"] = post.mu, post.logvar
        out["output.encoder_pooled"] = post.pooled
        out["output.codi_optimus_encode"] = model.encode(inputs["input.encoder_token_ids"])
        z = inputs["input.z_text"] / model.scale_factor  # [B, latent]
        hidden = model.decoder_hidden(inputs["input.decoder_prefix_ids"], z)  # [B, L, E]
        out["output.decoder_hidden"] = hidden
        out["output.decoder_logits_last"] = model.decoder.lm_head(hidden[:, -1])  # [B, V]
        out.update(_sampled(model, inputs["input.z_text"], [n for n in wanted if _SAMPLED.fullmatch(n)]))
    return {name: out[name] for name in wanted if name in out}
