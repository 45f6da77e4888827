"""Downloading the released CoDi checkpoints from the Hugging Face Hub (huggingface_hub, cached)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OFFICIAL_REPO = "ZinengTang/CoDi"

# Load order of the README/demo; later files override earlier ones, as in the official loader.
OFFICIAL_FILES = (
    "CoDi_encoders.pth",
    "CoDi_text_diffuser.pth",
    "CoDi_audio_diffuser_m.pth",
    "CoDi_video_diffuser_8frames.pth",
)
FP16_FOLDER = "checkpoints_fp16"


class WeightsNotFoundError(FileNotFoundError):
    """The official weights are neither cached nor downloadable; the message gives the command to fetch them."""


@dataclass(frozen=True)
class OfficialWeights:
    """Where the official checkpoint files are on disk, in load order."""

    files: tuple[Path, ...]
    variant: str


def download_command(variant: str = "fp16") -> str:
    folder = f"{FP16_FOLDER}/" if variant == "fp16" else ""
    names = " ".join(f"{folder}{f}" for f in OFFICIAL_FILES)
    return f"hf download {OFFICIAL_REPO} {names}"


def fetch_official(
    variant: str = "fp16",
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> OfficialWeights:
    """Returns the official checkpoint files, downloading the missing ones into the HF cache.

    Args:
        variant: 'fp16' (checkpoints_fp16/, half the download) or 'fp32' (repository root). A file missing
            from the fp16 folder is taken from the root.
        cache_dir: Hugging Face cache folder (default: HF_HOME / ~/.cache/huggingface).
        revision: repository revision (branch, tag or commit).
        local_files_only: only use the cache (default: True when HF_HUB_OFFLINE is set).
    Raises:
        WeightsNotFoundError naming the file and the command that downloads it.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if variant not in ("fp16", "fp32"):
        raise ValueError(f"variant must be 'fp16' or 'fp32', got {variant!r}")
    kwargs = {"repo_id": OFFICIAL_REPO, "cache_dir": cache_dir, "revision": revision}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    paths = []
    for name in OFFICIAL_FILES:
        candidates = [f"{FP16_FOLDER}/{name}", name] if variant == "fp16" else [name]
        path = None
        for filename in candidates:
            try:
                path = Path(hf_hub_download(filename=filename, **kwargs))
                break
            except EntryNotFoundError:
                continue
            except (LocalEntryNotFoundError, OSError) as e:
                if filename == candidates[-1]:
                    raise WeightsNotFoundError(
                        f"official CoDi weights not available ({filename}: {e.__class__.__name__}). "
                        f"Download them with:\n  {download_command(variant)}"
                    ) from None
        if path is None:
            raise WeightsNotFoundError(f"{OFFICIAL_REPO} has no {name}; download with: {download_command(variant)}")
        paths.append(path)
    return OfficialWeights(files=tuple(paths), variant=variant)
