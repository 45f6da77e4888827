"""A full-size, random-weight stand-in for the released fp16 CoDi checkpoints, written into an offline HF cache.

`ensure_rehearsal_cache()` writes the four files of `ZinengTang/CoDi/checkpoints_fp16/` with every key, shape and
dtype of the released state dict (official_state_dict_keys.tsv, 5.76 B numel, ~11.6 GB), split and serialised as
the released files are (flat `OrderedDict`s, floats as float16, `torch.save`), into
`<root>/models--ZinengTang--CoDi/{blobs,refs,snapshots}`, so the real loading path (`hf_hub_download(...,
local_files_only=True)`, `torch.load(weights_only=True)`, strict key mapping, a half-precision forward) can be
rehearsed at full size without the network. What a rehearsal should meet, and the released files hold:

* the audio file is in torch's legacy (non-zip) format, which `torch.load(mmap=True)` refuses;
* `EXTRA_KEYS`: tensors of no component (~22.5 M numel in the audio file, names outside every known prefix and one
  under `unet_audio.` with a leaf no layer has, plus two tiny ones in the video file) that a loader must report;
* GPT-2's tied `wte` / `lm_head` are written equal, as two tensors (`differ_lm_head` makes them differ).

Values are random but sane for a float16/bfloat16 forward: weights N(0, 1/fan_in), norm gains ~1, biases ~0,
embeddings N(0, 0.02), and every index or mask buffer holds its real value (`position_ids`, Swin
`relative_position_index` / shifted-window `attn_mask`, GPT-2's causal `attn.bias`, the DDPM schedule buffers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO, REHEARSAL_MARKER
from codi.sampling import NoiseSchedule

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the values or the layout written for the same inputs change
KEY_TABLE_NAME = "official_state_dict_keys.tsv"
MARKER_NAME = REHEARSAL_MARKER  # written last, inside the repo folder: the cache is complete
STARTED_NAME = ".codi-rehearsal.started"  # written first: the repo folder is ours, possibly half written

KeyRow = tuple[str, tuple[int, ...], str]  # (official key, shape, "float32" | "int64")

ENCODERS, TEXT, AUDIO, VIDEO = OFFICIAL_FILES
LEGACY_FILES = (AUDIO,)  # written with torch's pre-1.6 (non-zip) serialisation
RELEASED_SIZES: dict[str, int | None] = {ENCODERS: 3_017_419_057, TEXT: 4_097_188_355, AUDIO: 907_848_517, VIDEO: None}
"""Bytes of the released checkpoints_fp16/ files (spec 5.1); the video file's size was never found."""

_UNET = "model.diffusion_model."
_FILE_PREFIXES = {TEXT: _UNET + "unet_text.", AUDIO: _UNET + "unet_audio.", VIDEO: _UNET + "unet_image."}
WTE = "optimus.decoder.transformer.wte.weight"
LM_HEAD = "optimus.decoder.lm_head.weight"


@dataclass(frozen=True)
class ExtraTensor:
    """A tensor of no component that the released files carry beyond the model's state dict."""

    key: str
    shape: tuple[int, ...]
    dtype: str = "float32"


# The audio extras fill the released size: 907,848,517 B - the audio UNet in legacy format (862,857,041 B, i.e.
# 431,309,032 fp16 numel + 238,977 B of pickle) = 44,991,476 B = 4096*1024 + 2 + 17872*1024 numel + their pickle.
EXTRA_TENSORS: dict[str, tuple[ExtraTensor, ...]] = {
    AUDIO: (
        ExtraTensor("cond_stage_model.transformer.text_projection.weight", (4096, 1024)),
        ExtraTensor("model_ema.decay", ()),
        ExtraTensor("model_ema.num_updates", (), "int64"),
        ExtraTensor(_UNET + "unet_audio.audio_class_embed.weight", (17872, 1024)),
    ),
    VIDEO: (
        ExtraTensor(_UNET + "unet_image.frame_rate_prior", (8,)),
        ExtraTensor("logvar", (1000,)),
    ),
}
EXTRA_KEYS: tuple[str, ...] = tuple(e.key for extras in EXTRA_TENSORS.values() for e in extras)


def shared_dir() -> Path:
    """The shared folder: $CODI_SHARED, else `shared/` beside the repository (as tests/conftest.py finds it)."""
    return Path(os.environ.get("CODI_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def read_key_table(path: str | Path | None = None) -> list[KeyRow]:
    """Reads the official key table (`key<TAB>shape<TAB>dtype`, shape as a JSON list).

    Args:
        path: the .tsv (default: <shared>/official-parity/official_state_dict_keys.tsv).
    Returns:
        the rows in file order.
    """
    path = Path(path) if path is not None else shared_dir() / "official-parity" / KEY_TABLE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"official key table not found at {path} (set CODI_SHARED to the shared/ folder)")
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] != "key":
            rows.append((parts[0], tuple(json.loads(parts[1])), parts[2]))
    return rows


def file_of(key: str) -> str:
    """The released file that holds `key`: a UNet's file by prefix, the encoders file for everything else."""
    return next((name for name, prefix in _FILE_PREFIXES.items() if key.startswith(prefix)), ENCODERS)


def split_rows(
    rows: Sequence[KeyRow], extras: Mapping[str, Sequence[ExtraTensor]] = EXTRA_TENSORS
) -> dict[str, list[KeyRow]]:
    """The rows of each released file, in load order, each followed by that file's extra tensors."""
    parts: dict[str, list[KeyRow]] = {name: [] for name in OFFICIAL_FILES}
    for key, shape, dtype in rows:
        parts[file_of(key)].append((key, tuple(shape), dtype))
    for name, tensors in extras.items():
        parts[name] += [(e.key, tuple(e.shape), e.dtype) for e in tensors]
    return parts


# ---- values ------------------------------------------------------------------------------------------------------

_EMBEDDING = re.compile(
    r".*(word_embeddings|position_embeddings|token_type_embeddings|token_embedding|position_embedding|\.wte|\.wpe"
    r"|lm_head|class_embedding|pos_embeds|frame_rate_embeds|relative_position_bias_table)(\.weight)?"
)
_GPT2_CONV1D = re.compile(r"optimus\.decoder\.transformer\.h\.\d+\.(attn|mlp)\.(c_attn|c_proj|c_fc)\.weight")
_GPT2_MASK = re.compile(r"optimus\.decoder\.transformer\.h\.\d+\.attn\.bias")


def swin_relative_position_index(tokens: int) -> Tensor:
    """Swin's `relative_position_index` for a window of `tokens` = w*w positions: [tokens, tokens] int64 in
    [0, (2w-1)^2)."""
    w = math.isqrt(tokens)
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)  # [2, w*w]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)  # [w*w, w*w, 2]
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]  # [w*w, w*w]


def swin_shift_mask(windows: int, tokens: int) -> Tensor:
    """Swin's shifted-window `attn_mask` (0 / -100) for a square map of `windows` windows of `tokens` = w*w
    positions, shift w // 2: [windows, tokens, tokens] float32."""
    w, side = math.isqrt(tokens), math.isqrt(windows) * math.isqrt(tokens)
    labels = torch.zeros(side, side)
    cuts = (slice(0, -w), slice(-w, -(w // 2)), slice(-(w // 2), None))
    for i, (hs, ws) in enumerate((h, v) for h in cuts for v in cuts):
        labels[hs, ws] = i
    win = labels.view(side // w, w, side // w, w).permute(0, 2, 1, 3).reshape(windows, tokens)  # [nW, w*w]
    diff = win[:, None, :] - win[:, :, None]  # [nW, w*w, w*w]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def ddpm_schedule_buffers(steps: int) -> dict[str, Tensor]:
    """The 12 schedule buffers of LDM's `DDPM.register_schedule` for CoDi's scaled-linear schedule: name -> [steps]."""
    betas = NoiseSchedule(num_train_timesteps=steps).betas()  # [steps] float64
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - ac)
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - ac),
    }


SCHEDULE_BUFFERS = tuple(ddpm_schedule_buffers(2))


def _exact_value(key: str, shape: tuple[int, ...]) -> Tensor | None:
    """The real value of a buffer that is not a learned weight (indices, masks, schedule), else None."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "position_ids":
        return torch.arange(shape[-1]).expand(shape).clone()
    if leaf == "relative_position_index":
        return swin_relative_position_index(shape[0])
    if leaf == "attn_mask" and len(shape) == 3:
        return swin_shift_mask(shape[0], shape[1])
    if _GPT2_MASK.fullmatch(key):
        return torch.ones(shape[-2:]).tril().view(shape)  # causal mask, [1, 1, n_ctx, n_ctx]
    if key == "clip.model.logit_scale":
        return torch.tensor(math.log(100.0))  # CLIP's trained (clamped) temperature
    if key in SCHEDULE_BUFFERS and len(shape) == 1:
        return ddpm_schedule_buffers(shape[0])[key]
    return None


def _normal(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(mean, std) of a learned float tensor, chosen by its name and shape."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0, 0.05
    if leaf == "g" or (leaf == "weight" and len(shape) == 1):
        return 1.0, 0.02  # LayerNorm / GroupNorm / BatchNorm / ChanLayerNorm gains
    if _EMBEDDING.fullmatch(key):
        return 0.0, 0.02
    if len(shape) <= 1:
        return 0.0, 0.01  # biases, running means, scalars
    fan_in = shape[0] if _GPT2_CONV1D.fullmatch(key) else math.prod(shape) // shape[0]  # GPT-2 Conv1D is [in, out]
    return 0.0, 1.0 / math.sqrt(max(1, fan_in))


def key_seed(seed: int, key: str) -> int:
    """The generator seed of one key: values depend on (seed, key) only, not on row order or file split."""
    return (seed & 0xFFFFFFFF) << 32 | zlib.crc32(key.encode())


def make_tensor(key: str, shape: tuple[int, ...], dtype: str, seed: int = 0) -> Tensor:
    """One tensor as written: int64 rows keep their dtype (index values, else zeros), floats become float16.

    Args:
        key: official key (its name picks the value rule).
        shape: the tensor's shape.
        dtype: "float32" / "float16" / ... or "int64" / ...: the dtype of the released model's tensor.
        seed: the rehearsal seed.
    Returns:
        the tensor, contiguous, on CPU.
    """
    exact = _exact_value(key, shape)
    if not getattr(torch, dtype).is_floating_point:
        return (exact if exact is not None else torch.zeros(shape)).to(getattr(torch, dtype)).contiguous()
    if exact is not None:
        return exact.to(torch.float16).contiguous()
    mean, std = _normal(key, shape)
    gen = torch.Generator().manual_seed(key_seed(seed, key))
    return torch.empty(shape, dtype=torch.float16).normal_(mean, std, generator=gen)


def build_state(rows: Sequence[KeyRow], seed: int = 0, differ_lm_head: bool = False) -> OrderedDict[str, Tensor]:
    """The flat state dict of one file. `lm_head` copies `wte`'s values (GPT-2 ties them; the released files
    hold two equal tensors), unless `differ_lm_head` draws it on its own."""
    state: OrderedDict[str, Tensor] = OrderedDict()
    for key, shape, dtype in rows:
        source = WTE if key == LM_HEAD and not differ_lm_head else key
        state[key] = make_tensor(source, shape, dtype, seed)
    return state


# ---- the cache -------------------------------------------------------------------------------------------------


def fingerprint(
    rows: Sequence[KeyRow], seed: int, differ_lm_head: bool, extras: Mapping[str, Sequence[ExtraTensor]]
) -> str:
    """sha256 hex of everything the written values depend on (rows, extras, options, generator version)."""
    inputs = {
        "version": GENERATOR_VERSION,
        "rows": [list(r) for r in rows],
        "extras": {name: [[e.key, list(e.shape), e.dtype] for e in es] for name, es in sorted(extras.items())},
        "seed": seed,
        "differ_lm_head": differ_lm_head,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def repo_folder(root: str | Path) -> Path:
    """`<root>/models--ZinengTang--CoDi`, the Hugging Face cache folder of the official repository."""
    return Path(root) / f"models--{OFFICIAL_REPO.replace('/', '--')}"


def default_root(fp: str) -> Path:
    """$CODI_REHEARSAL_DIR, else <tempdir>/codi-rehearsal/<first 12 hex of the fingerprint>."""
    env = os.environ.get("CODI_REHEARSAL_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "codi-rehearsal" / fp[:12]


def read_marker(root: str | Path) -> dict | None:
    """The completion marker of a rehearsal cache at `root`, or None when there is none (never written or torn)."""
    try:
        return json.loads((repo_folder(root) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def snapshot_files(root: str | Path, commit: str) -> dict[str, Path]:
    """file name -> its path in the snapshot (`snapshots/<commit>/checkpoints_fp16/<name>`), in load order."""
    folder = repo_folder(root) / "snapshots" / commit / FP16_FOLDER
    return {name: folder / name for name in OFFICIAL_FILES}


def is_complete(root: str | Path, fp: str) -> bool:
    """Whether `root` holds a finished rehearsal cache for fingerprint `fp`, with every file at its written size."""
    marker = read_marker(root)
    if marker is None or marker.get("fingerprint") != fp:
        return False
    paths = snapshot_files(root, marker.get("commit", ""))
    sizes = marker.get("sizes", {})
    return all(p.is_file() and p.stat().st_size == sizes.get(name) for name, p in paths.items())


def _claim(repo: Path) -> None:
    """Clears a stale or half-written rehearsal at `repo` and marks the folder as ours; refuses a real cache."""
    if repo.exists():
        if not ((repo / MARKER_NAME).exists() or (repo / STARTED_NAME).exists()):
            raise FileExistsError(f"{repo} exists and is not a rehearsal cache (a real download?): not touching it")
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    (repo / STARTED_NAME).write_text(f"{os.getpid()}\n")


def _dtypes(parts: Mapping[str, Sequence[KeyRow]]) -> set[str]:
    return {d for rows in parts.values() for _, _, d in rows}


def _check_space(folder: Path, parts: Mapping[str, Sequence[KeyRow]]) -> None:
    """Raises OSError when `folder`'s disk cannot hold the files (data bytes + 1 %)."""
    itemsize = {d: 2 if getattr(torch, d).is_floating_point else getattr(torch, d).itemsize for d in _dtypes(parts)}
    need = sum(math.prod(s) * itemsize[d] for rows in parts.values() for _, s, d in rows) * 1.01
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(f"rehearsal cache needs {need / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB free")


def write_file(blobs: Path, name: str, blob: str, state: Mapping[str, Tensor]) -> Path:
    """torch.save(state) as `blobs/<blob>` via a temporary folder, so a torn write never has the final name.

    The file is first written as `<name>` (the zip archive inside is named after it, as in the released files),
    legacy format for `LEGACY_FILES`, then renamed. Returns the blob path.
    """
    tmp = blobs / f".incomplete-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp / name, _use_new_zipfile_serialization=name not in LEGACY_FILES)
    target = blobs / blob
    os.replace(tmp / name, target)
    tmp.rmdir()
    return target


def _link(snapshot_path: Path, blob: Path) -> None:
    """A relative symlink snapshot -> blob, as huggingface_hub makes them (a move where symlinks are refused)."""
    snapshot_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_path.symlink_to(os.path.relpath(blob, snapshot_path.parent))
    except OSError:
        os.replace(blob, snapshot_path)


def write_rehearsal_cache(
    root: str | Path,
    rows: Sequence[KeyRow],
    *,
    seed: int = 0,
    differ_lm_head: bool = False,
    extras: Mapping[str, Sequence[ExtraTensor]] = EXTRA_TENSORS,
) -> dict[str, int]:
    """Writes the four files (one file's tensors in memory at a time) and the completion marker last.

    Args:
        root: the Hugging Face cache folder (`cache_dir` of hf_hub_download).
        rows: the official key table (see `read_key_table`).
        seed: values depend on (seed, key).
        differ_lm_head: draw `lm_head` apart from `wte` instead of equal to it.
        extras: file name -> tensors of no component appended to that file.
    Returns:
        file name -> bytes written.
    """
    start = time.perf_counter()
    fp = fingerprint(rows, seed, differ_lm_head, extras)
    repo, commit = repo_folder(root), fp[:40]
    parts = split_rows(rows, extras)
    _claim(repo)
    _check_space(repo, parts)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    sizes: dict[str, int] = {}
    for name, path in snapshot_files(root, commit).items():
        t0 = time.perf_counter()
        state = build_state(parts[name], seed, differ_lm_head)
        blob = write_file(repo / "blobs", name, hashlib.sha256(f"{fp}/{name}".encode()).hexdigest(), state)
        del state
        sizes[name] = blob.stat().st_size
        _link(path, blob)
        log.info("wrote %s: %d B in %.1f s", name, sizes[name], time.perf_counter() - t0)
    marker = {"fingerprint": fp, "commit": commit, "sizes": sizes, "seconds": round(time.perf_counter() - start, 1)}
    (repo / f"{MARKER_NAME}.tmp").write_text(json.dumps(marker, indent=1))
    os.replace(repo / f"{MARKER_NAME}.tmp", repo / MARKER_NAME)
    (repo / STARTED_NAME).unlink()
    return sizes


def ensure_rehearsal_cache(
    root: str | Path | None = None,
    *,
    rows: Sequence[KeyRow] | None = None,
    seed: int = 0,
    differ_lm_head: bool = False,
    extras: Mapping[str, Sequence[ExtraTensor]] = EXTRA_TENSORS,
) -> Path:
    """Returns a Hugging Face cache folder holding the rehearsal files, writing them only if not already complete.

    Args:
        root: cache folder (default: `default_root`, keyed by the inputs' fingerprint).
        rows: key table (default: the official one, `read_key_table()`).
        seed, differ_lm_head, extras: as in `write_rehearsal_cache`.
    Returns:
        the cache folder, for `hf_hub_download(OFFICIAL_REPO, ..., cache_dir=root, local_files_only=True)`.
    """
    rows = read_key_table() if rows is None else list(rows)
    fp = fingerprint(rows, seed, differ_lm_head, extras)
    root = Path(root) if root is not None else default_root(fp)
    if not is_complete(root, fp):
        write_rehearsal_cache(root, rows, seed=seed, differ_lm_head=differ_lm_head, extras=extras)
    return root


def size_report(root: str | Path) -> list[str]:
    """One line per file of a complete rehearsal cache: written bytes vs the released ones."""
    marker = read_marker(root)
    if marker is None:
        raise FileNotFoundError(f"no complete rehearsal cache at {root}")
    lines = []
    for name, size in marker["sizes"].items():
        released = RELEASED_SIZES.get(name)
        vs = (
            f"released {released:,} B: {size - released:+,} B ({(size - released) / released:+.5%})"
            if released
            else "released size unknown"
        )
        lines.append(f"{FP16_FOLDER}/{name}: {size:,} B; {vs}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: writes (or reuses) the rehearsal cache and prints its path, the file sizes and the seconds taken."""
    parser = argparse.ArgumentParser(prog="python -m codi.rehearsal", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="cache folder (default: $CODI_REHEARSAL_DIR or tmp)")
    parser.add_argument("--differ-lm-head", action="store_true", help="draw optimus lm_head apart from wte")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    root = ensure_rehearsal_cache(args.out, seed=args.seed, differ_lm_head=args.differ_lm_head)
    print(root)
    print("\n".join(size_report(root)))
    print(f"{time.perf_counter() - start:.1f} s (written in {read_marker(root)['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
