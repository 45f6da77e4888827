"""Named model presets and how each is loaded: `tiny` (embedded), `official` (released), or a folder."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from codi.config import CoDiConfig, official_config
from codi.keymaps import official_key_table
from codi.loading import check_against_module
from codi.model import CoDiModel
from codi.residency import ComponentManager, build_empty
from codi.weights import OfficialSource, SafetensorsSource, WeightSource

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DIR = REPO_ROOT / "checkpoints" / "tiny"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def preset_names() -> list[str]:
    return ["tiny", "official"]


def open_model(
    name: str = "tiny",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    official_variant: str = "fp16",
    cache_dir: str | None = None,
    allow_random: bool = False,
    strict_keys: bool = False,
    official_files: list[str | Path] | None = None,
    config: CoDiConfig | None = None,
    local_files_only: bool | None = None,
) -> tuple[CoDiModel, WeightSource | None, str]:
    """A model whose parameters are still on the meta device, the source that fills them, and a description.

    Args:
        name: 'tiny', 'official' or a folder (config.json + *.safetensors in our key names).
        allow_random: the tiny preset with random weights (a loaded model, no source) when its checkpoint
            is missing.
        strict_keys: refuse official checkpoint keys that map to no component (default: skip and report).
        official_files: the official .pth files to use instead of the Hugging Face cache.
        config: the config of an official-layout model (default: the released one).
        local_files_only: 'official' from the Hugging Face cache only, never downloading (the app starts so and
            offers the download on its page).
    """
    device = torch.device(device)
    if name == "official":
        from codi.hub import fetch_official

        if not official_files:
            weights = fetch_official(official_variant, cache_dir=cache_dir, local_files_only=local_files_only)
            official_files = list(weights.files)
        files = official_files
        config = config or official_config()
        model = build_empty(lambda: CoDiModel(config), device, dtype)
        vaes = config.image_vae.autoencoder, config.audio_vae.autoencoder
        table = official_key_table(len(vaes[0].ch_mult), len(vaes[1].ch_mult))
        source = OfficialSource(files, table, model.state_dict(keep_vars=True), strict_keys=strict_keys)
        return model, source, f"official CoDi weights ({official_variant}: {source.description})"
    folder = TINY_DIR if name == "tiny" else Path(name)
    if not (folder / CONFIG_NAME).exists():
        if name == "tiny" and allow_random:
            from codi.tiny import tiny_config

            torch.manual_seed(0)
            model = CoDiModel(tiny_config()).to(device=device, dtype=dtype)
            return model, None, "tiny preset with RANDOM weights (untrained)"
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: not a CoDi checkpoint folder")
    config = CoDiConfig.load(folder / CONFIG_NAME)
    model = build_empty(lambda: CoDiModel(config), device, dtype)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    source = SafetensorsSource(files)
    check_against_module(source.shapes(), model)  # our own format: every key, nothing else, right shapes
    return model, source, f"{folder}"


def snapshot_of(repo_id: str) -> str:
    """The local folder of a Hub repository holding a converted model (config.json + *.safetensors), downloaded
    with huggingface_hub into its cache the first time (HF_HUB_OFFLINE: the cache only)."""
    from huggingface_hub import snapshot_download

    from codi.hub import WeightsNotFoundError

    if repo_id.count("/") != 1:
        raise FileNotFoundError(f"{repo_id!r} is neither a preset (tiny, official), a folder nor a Hub repository id")
    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:  # offline and not cached, no such repository, network errors: one message
        raise WeightsNotFoundError(
            f"no folder {repo_id!r} here, and the Hub repository {repo_id!r} is not cached and could not be "
            f"downloaded ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from None


def load_model(name: str = "tiny", **kwargs) -> tuple[CoDiModel, str]:
    """A fully loaded model (every component) and where its weights came from; see `open_model`."""
    model, source, description = open_model(name, **kwargs)
    if source is not None:
        kw = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
        ComponentManager(model, source, **kw).load_all()
    return model, description


def load_folder(folder: str | Path) -> CoDiModel:
    """Our own checkpoint format (config.json + *.safetensors in our key names), loaded whole, strictly."""
    return load_model(str(folder))[0]


def save_folder(
    model: CoDiModel, folder: str | Path, extra: dict | None = None, dtype: torch.dtype | None = None
) -> None:
    """Writes config.json + model.safetensors (and meta.json from `extra`) for `load_folder`.

    Args:
        dtype: store floating tensors in this dtype (e.g. torch.float16 to halve the file); loading casts back.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / CONFIG_NAME)
    write_safetensors(model.state_dict(), folder / WEIGHTS_NAME, dtype)
    if extra:
        (folder / "meta.json").write_text(json.dumps(extra, indent=2) + "\n")


def write_safetensors(state: Mapping[str, torch.Tensor], path: Path, dtype: torch.dtype | None = None) -> Path:
    """Writes `state` (on CPU, floating tensors in `dtype` if given) to `path` atomically; a tensor tied to an
    earlier key is stored once and named in the file's `tied` metadata (read back by SafetensorsSource)."""
    from safetensors.torch import save_file

    out, tied, seen = {}, {}, {}
    for key, t in state.items():
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ptr in seen:
            tied[key] = seen[ptr]
            continue
        seen[ptr] = key
        t = t.detach().cpu()
        out[key] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(out, str(tmp), metadata={"format": "pt", "tied": json.dumps(tied)})
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def load_official(
    variant: str = "fp16",
    cache_dir: str | None = None,
    files: list[str | Path] | None = None,
    config: CoDiConfig | None = None,
    strict_keys: bool = False,
) -> CoDiModel:
    """The released CoDi weights in our modules, every component loaded (later files override earlier ones,
    as in the official loader; every key of our model must be provided)."""
    kwargs = {"official_variant": variant, "cache_dir": cache_dir, "official_files": files, "config": config}
    return load_model("official", strict_keys=strict_keys, **kwargs)[0]


def save_components(manager: ComponentManager, folder: str | Path, dtype: torch.dtype | None = None) -> list[Path]:
    """Writes config.json + one <component>.safetensors per component (our key names) for `open_model`.

    Components are loaded one at a time and those that were not resident are evicted again after writing,
    so converting the released model never holds more than its largest component.
    Args:
        dtype: store floating tensors in this dtype (default: as loaded).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in manager.keys:
        was_resident = manager.is_resident(name)
        manager.load_all([name])
        written.append(write_safetensors(manager.tensors(name), folder / f"{name}.safetensors", dtype))
        if not was_resident:
            manager.evict(name)
    manager.model.config.save(folder / CONFIG_NAME)
    return [*written, folder / CONFIG_NAME]


def default_threads() -> None:
    """Uses every core for CPU inference unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
