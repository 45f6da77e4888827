"""Numerical parity with the official CoDi code: `python -m codi.parity FIXTURE.json WEIGHTS.safetensors OUT`.

Builds our modules from the fixture's `config`, loads its official-named weights, performs its call on
its `input.*` tensors and writes every tensor named under the fixture's `outputs`, with the same names.
`output.*` and `debug.*` tensors in WEIGHTS are never read.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

# fixture kind (the json's "fixture" field) -> module with `run(spec, tensors) -> dict[str, Tensor]`
RUNNERS: dict[str, str] = {
    "unet_joint": "codi.parity.unet_joint",
    "context_mixing": "codi.parity.context_mixing",
    "ddim_sampler": "codi.parity.ddim_sampler",
    "autoencoder_kl": "codi.parity.autoencoder_kl",
    "audioldm_vae_vocoder": "codi.parity.audioldm_vae_vocoder",
    "clip": "codi.parity.clip",
    "clap": "codi.parity.clap",
    "optimus": "codi.parity.optimus",
}

Runner = Callable[[dict, dict[str, Tensor]], dict[str, Tensor]]


def read_fixture(json_path: str | Path, weights_path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """Returns the fixture spec and its weight and input tensors (never `output.*` / `debug.*`)."""
    from safetensors import safe_open

    spec = json.loads(Path(json_path).read_text())
    spec["_dir"] = str(Path(json_path).resolve().parent)  # sibling fixtures (ddim_sampler reuses unet_joint's UNet)
    tensors: dict[str, Tensor] = {}
    with safe_open(str(weights_path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            if key.startswith(("output.", "debug.")):
                continue
            tensors[key] = f.get_tensor(key)
    return spec, tensors


def runner_for(spec: dict) -> Runner:
    kind = spec.get("fixture")
    if kind not in RUNNERS:
        raise SystemExit(f"unknown fixture kind {kind!r}; known: {', '.join(sorted(RUNNERS))}")
    return importlib.import_module(RUNNERS[kind]).run


@torch.no_grad()
def run_fixture(spec: dict, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Performs the fixture's call and returns every tensor its `outputs` names."""
    outputs = runner_for(spec)(spec, tensors)
    missing = sorted(set(spec["outputs"]) - set(outputs))
    if missing:
        raise RuntimeError(f"runner for {spec['fixture']} produced no {missing}")
    return {name: outputs[name].contiguous() for name in spec["outputs"]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(prog="python -m codi.parity", description=__doc__.splitlines()[0])
    parser.add_argument("fixture", help="fixture .json")
    parser.add_argument("weights", help="fixture .safetensors (official-named weights and input.* tensors)")
    parser.add_argument("out", help="output .safetensors")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)  # random fixture weights yield subnormals that slow CPU math ~100x
    spec, tensors = read_fixture(args.fixture, args.weights)
    outputs = run_fixture(spec, tensors)
    save_file(outputs, args.out)
    print(f"wrote {len(outputs)} tensors to {args.out}")
    return 0
