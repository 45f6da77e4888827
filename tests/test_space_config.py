"""The README's YAML header: a valid Hugging Face Space configuration that preloads the released weights."""

from __future__ import annotations

import yaml
from conftest import REPO

from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO

# Keys of the Spaces configuration reference (huggingface.co/docs/hub/spaces-config-reference) this header may use.
SPACE_KEYS = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file", "app_port",
    "base_path", "fullWidth", "header", "short_description", "models", "datasets", "tags", "thumbnail", "pinned",
    "hf_oauth", "hf_oauth_scopes", "hf_oauth_expiration_minutes", "disable_embedding", "startup_duration_timeout",
    "custom_headers", "preload_from_hub", "suggested_hardware", "suggested_storage", "license",
}  # fmt: skip
HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "a10g-small", "a10g-large"}


def header() -> dict:
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_space_header_keys_are_valid() -> None:
    config = header()
    assert set(config) <= SPACE_KEYS, sorted(set(config) - SPACE_KEYS)
    assert config["sdk"] == "gradio" and (REPO / config["app_file"]).is_file()
    assert config["suggested_hardware"] in HARDWARE
    assert config["startup_duration_timeout"] == "1h"


def test_space_preloads_the_released_fp16_files() -> None:
    (entry,) = header()["preload_from_hub"]
    repo, files = entry.split(" ")
    assert repo == OFFICIAL_REPO
    assert files.split(",") == [f"{FP16_FOLDER}/{name}" for name in OFFICIAL_FILES]
