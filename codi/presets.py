"""Named model presets and how each is loaded: `tiny` (embedded), `official` (released), or a folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from codi.config import CoDiConfig, official_config
from codi.keymaps import official_key_table
from codi.loading import CheckpointKeyError, check_against_module, convert_official_state_dict, read_tensor_file
from codi.model import CoDiModel

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DIR = REPO_ROOT / "checkpoints" / "tiny"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def preset_names() -> list[str]:
    return ["tiny", "official"]


@contextmanager
def building_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """Creates parameters directly on `device` in `dtype` (the full official model is 23 GB in float32)."""
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def load_model(
    name: str = "tiny",
    official_variant: str = "fp16",
    cache_dir: str | None = None,
    allow_random: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[CoDiModel, str]:
    """Builds and loads a model; returns it with a one-line description of where its weights came from.

    Args:
        name: 'tiny', 'official' or a folder holding config.json + model.safetensors.
        allow_random: build the tiny preset with random weights when its checkpoint is missing.
        device, dtype: where the official model is built (the small ones are built on CPU and moved).
    """
    if name == "official":
        with building_on(device, dtype):
            model = load_official(official_variant, cache_dir)
        return model, f"official CoDi weights ({official_variant})"
    folder = TINY_DIR if name == "tiny" else Path(name)
    if not (folder / CONFIG_NAME).exists():
        if name == "tiny" and allow_random:
            from codi.tiny import tiny_config

            torch.manual_seed(0)
            return CoDiModel(tiny_config()), "tiny preset with RANDOM weights (untrained)"
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: not a CoDi checkpoint folder")
    return load_folder(folder), f"{folder}"


def load_folder(folder: str | Path) -> CoDiModel:
    """Our own checkpoint format: config.json (CoDiConfig) + model.safetensors (our key names), strict.

    Tied parameters are stored once; the file's metadata names each omitted twin and its source.
    """
    from safetensors import safe_open

    folder = Path(folder)
    config = CoDiConfig.load(folder / CONFIG_NAME)
    model = CoDiModel(config)
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        tied = json.loads((f.metadata() or {}).get("tied", "{}"))
    for twin, source in tied.items():
        state[twin] = state[source]
    check_against_module(state, model)
    model.load_state_dict(state, strict=True)
    return model


def save_folder(
    model: CoDiModel, folder: str | Path, extra: dict | None = None, dtype: torch.dtype | None = None
) -> None:
    """Writes config.json + model.safetensors (and meta.json from `extra`) for `load_folder`.

    Args:
        dtype: store floating tensors in this dtype (e.g. torch.float16 to halve the file); loading casts back.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / CONFIG_NAME)
    state, tied, seen = {}, {}, {}
    for k, v in model.state_dict().items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ptr in seen:
            tied[k] = seen[ptr]
            continue
        seen[ptr] = k
        v = v.detach().cpu()
        state[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "tied": json.dumps(tied)})
    if extra:
        (folder / "meta.json").write_text(json.dumps(extra, indent=2) + "\n")


def load_official(
    variant: str = "fp16",
    cache_dir: str | None = None,
    files: list[str | Path] | None = None,
    config: CoDiConfig | None = None,
) -> CoDiModel:
    """The released CoDi weights in our modules: every official key through OFFICIAL_KEY_TABLE, strictly.

    Files are read one at a time (later files override earlier ones, as in the official loader); at the end
    every key of our model must have been loaded.
    """
    from codi.hub import fetch_official

    paths = files or list(fetch_official(variant, cache_dir=cache_dir).files)
    model = CoDiModel(config or official_config())
    vaes = model.config.image_vae.autoencoder, model.config.audio_vae.autoencoder
    table = official_key_table(len(vaes[0].ch_mult), len(vaes[1].ch_mult))
    loaded: set[str] = set()
    for path in paths:
        state = convert_official_state_dict(read_tensor_file(path), table)
        check_against_module(state, model, complete=False)
        model.load_state_dict(state, strict=False)
        loaded |= set(state)
        del state
    missing = sorted(set(model.state_dict()) - loaded)
    if missing:
        shown = "\n  ".join(missing[:20])
        raise CheckpointKeyError(f"{len(missing)} keys of the model were in none of the checkpoint files:\n  {shown}")
    return model


def default_threads() -> None:
    """Uses every core for CPU inference unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
