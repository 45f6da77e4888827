"""The official key table over the whole model, and loading through a Hugging Face cache built offline."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from conftest import parity_dir

from codi.config import CoDiConfig, MediaConfig, SamplingDefaults, official_config
from codi.keymaps import OFFICIAL_KEY_TABLE
from codi.loading import CheckpointKeyError, check_against_module, convert_official_state_dict, read_tensor_file
from codi.model import CoDiModel
from codi.models.audio_vae import AudioVAEConfig
from codi.models.clap import CLAPAudioConfig
from codi.models.clip import CLIPEncoderConfig
from codi.models.optimus import OptimusConfig
from codi.models.unet import UNetConfig
from codi.models.vae import ImageVAEConfig
from codi.pipeline import CoDiPipeline, auto_dtype
from codi.presets import save_folder
from codi.tiny import tiny_config


def test_every_official_key_lands_on_the_full_size_model() -> None:
    """All 6109 keys of the released state dict map strictly onto CoDiModel(official) built on meta."""
    rows = [line.split("\t") for line in (parity_dir() / "official_state_dict_keys.tsv").read_text().splitlines()]
    rows = [r for r in rows if len(r) == 3 and r[0] != "key"]
    assert len(rows) == 6109
    official = {key: torch.empty(json.loads(shape), device="meta") for key, shape, _ in rows}
    with torch.device("meta"):
        model = CoDiModel(official_config())
    ours = convert_official_state_dict(official, OFFICIAL_KEY_TABLE)
    check_against_module(ours, model)  # complete, same shapes, nothing unexpected
    unet_numel = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("diffusion."))
    assert unet_numel == 1_772_784_247 + 2_048_385_408 + 431_309_032  # spec 1.1


def test_auto_dtype_halves_the_released_model_only(tmp_path: Path, monkeypatch) -> None:
    """dtype 'auto' (the CLI's and the app's default): the full-size model (on meta) in bfloat16 on a CPU and
    float16 on a GPU; the tiny model and a folder of a small model stay in float32, as an explicit dtype does."""
    with torch.device("meta"):
        full = CoDiModel(official_config())
    assert auto_dtype(full, torch.device("cpu")) == torch.bfloat16
    assert auto_dtype(full, torch.device("cuda", 1)) == torch.float16  # only the device's type is read
    assert CoDiPipeline.from_preset("tiny", dtype="auto").dtype == torch.float32
    save_folder(CoDiModel(tiny_config()), tmp_path / "small")
    pipe = CoDiPipeline.from_preset(str(tmp_path / "small"), dtype="auto")
    assert pipe.dtype == torch.float32 and pipe.model_report()["dtype"] == "float32"
    assert CoDiPipeline.from_preset("tiny", dtype="bfloat16").dtype == torch.bfloat16
    monkeypatch.setattr("codi.pipeline.AUTO_FLOAT32_BYTES", 1)  # the same folder counted as big: loaded in bfloat16
    pipe = CoDiPipeline.from_preset(str(tmp_path / "small"), dtype="auto")
    assert pipe.dtype == torch.bfloat16 and pipe.model.diffusion.unet_image.out[2].weight.dtype == torch.bfloat16
    image = pipe(inputs={"text": "a red circle"}, outputs=["image"], steps=1, seed=0).image
    assert image.size == (64, 64)


def test_unknown_and_missing_keys_are_named() -> None:
    with pytest.raises(CheckpointKeyError, match="model.something_else"):
        convert_official_state_dict({"model.something_else": torch.zeros(1)}, OFFICIAL_KEY_TABLE)
    small = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointKeyError, match="missing keys:\n  bias"):
        check_against_module({"weight": torch.zeros(2, 2)}, small)
    with pytest.raises(CheckpointKeyError, match=r"weight: checkpoint \(3, 2\)"):
        check_against_module({"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, small)


def fixture_config() -> CoDiConfig:
    """A whole CoDi at the sizes of the parity fixtures (official architecture, random official-named weights)."""
    folder = parity_dir()
    spec = {
        n: json.loads((folder / f"{n}.json").read_text())["config"]
        for n in ("unet_joint", "clip", "clap", "optimus", "autoencoder_kl", "audioldm_vae_vocoder")
    }
    unet = spec["unet_joint"]
    return CoDiConfig(
        name="fixture",
        description="official architecture at fixture sizes",
        clip=CLIPEncoderConfig.from_dict(spec["clip"]),
        clap=CLAPAudioConfig.from_dict(spec["clap"]),
        optimus=OptimusConfig.from_dict(spec["optimus"]),
        image_vae=ImageVAEConfig.from_dict(spec["autoencoder_kl"]),
        audio_vae=AudioVAEConfig.from_dict(spec["audioldm_vae_vocoder"]),
        unet_image=UNetConfig.from_dict(unet["unet_image_cfg"], alias_last_skip=True),
        unet_audio=UNetConfig.from_dict(unet["unet_audio_cfg"], alias_last_skip=True),
        unet_text=UNetConfig.from_dict(unet["unet_text_cfg"], alias_last_skip=True),
        media=MediaConfig(
            image_size=32,
            num_frames=3,
            audio_seconds=0.3125,
            cond_image_size=48,
            cond_video_size=48,
            cond_video_frames=2,
            cond_video_seconds=1.0,
            cond_audio_seconds=1.0,
        ),
        defaults=SamplingDefaults(steps=2, guidance_scale=7.5),
    )


def fixture_official_state() -> dict[str, torch.Tensor]:
    """Every official-named tensor of the fixtures (+ the fn_STFT buffers the audio fixture omits)."""
    from safetensors.torch import load_file

    folder = parity_dir()
    state: dict[str, torch.Tensor] = {}
    for name in ("unet_joint", "clip", "clap", "optimus", "autoencoder_kl", "audioldm_vae_vocoder", "ddim_sampler"):
        for k, v in load_file(str(folder / f"{name}.safetensors")).items():
            if not k.startswith(("input.", "output.", "debug.")):
                state[k] = v
    state["audioldm.fn_STFT.mel_basis"] = torch.zeros(64, 513)
    state["audioldm.fn_STFT.stft_fn.forward_basis"] = torch.zeros(1026, 1, 1024)
    state["audioldm.fn_STFT.stft_fn.inverse_basis"] = torch.zeros(1026, 1, 1024)
    return state


def build_hub_cache(root: Path, state: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face cache holding ZinengTang/CoDi's four fp16 files, split as the released ones are."""
    from codi.hub import FP16_FOLDER, OFFICIAL_FILES, OFFICIAL_REPO

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{OFFICIAL_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / FP16_FOLDER
    snap.mkdir(parents=True)
    parts = {
        OFFICIAL_FILES[0]: lambda k: not k.startswith("model.diffusion_model."),
        OFFICIAL_FILES[1]: lambda k: k.startswith("model.diffusion_model.unet_text."),
        OFFICIAL_FILES[2]: lambda k: k.startswith("model.diffusion_model.unet_audio."),
        OFFICIAL_FILES[3]: lambda k: k.startswith("model.diffusion_model.unet_image."),
    }
    for name, keep in parts.items():
        torch.save(OrderedDict((k, v) for k, v in state.items() if keep(k)), snap / name)
    return root


def test_a_file_of_the_wrong_size_is_warned_of_unless_it_is_a_rehearsal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The fixture files are far from the released sizes: each whose exact size is known is named with 'delete it
    and download it again'; in a cache that codi.rehearsal marked as its own (random weights written in the released
    layout, a few bytes of pickle apart) the cache is named once as a rehearsal, at info level."""
    from codi.hub import OFFICIAL_REPO, REHEARSAL_MARKER, fetch_official

    build_hub_cache(tmp_path, fixture_official_state())
    with caplog.at_level(logging.INFO, logger="codi.hub"):
        fetch_official(cache_dir=tmp_path, local_files_only=True)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and all("download it again" in m for m in warned)  # the video file's size is unknown
    (tmp_path / f"models--{OFFICIAL_REPO.replace('/', '--')}" / REHEARSAL_MARKER).write_text("{}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="codi.hub"):
        fetch_official(cache_dir=tmp_path, local_files_only=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("is a rehearsal" in r.getMessage() for r in caplog.records) == 1


def test_official_weights_load_from_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hf_hub_download resolves the four files offline; every key loads strictly; the model generates."""
    from codi import presets
    from codi.hub import fetch_official
    from codi.pipeline import CoDiPipeline

    state = fixture_official_state()
    cache = build_hub_cache(tmp_path / "hub", state)
    weights = fetch_official("fp16", cache_dir=cache, local_files_only=True)
    assert [p.name for p in weights.files] == [
        "CoDi_encoders.pth",
        "CoDi_text_diffuser.pth",
        "CoDi_audio_diffuser_m.pth",
        "CoDi_video_diffuser_8frames.pth",
    ]
    assert read_tensor_file(weights.files[1])  # weights_only pickle load
    model = presets.load_official(files=list(weights.files), config=fixture_config())
    clip_key = "clip.model.text_model.final_layer_norm.weight"
    assert torch.equal(model.state_dict()[clip_key], state[clip_key].float())
    pipe = CoDiPipeline(model)
    result = pipe(inputs={"text": "a photo of a cat"}, outputs=["image", "audio", "text"], steps=2, seed=0)
    assert result.image.size == (32, 32) and result.audio.waveform.ndim == 1 and isinstance(result.text, str)


def test_missing_official_weights_say_how_to_download(tmp_path: Path) -> None:
    from codi.hub import WeightsNotFoundError, fetch_official

    with pytest.raises(WeightsNotFoundError, match="hf download ZinengTang/CoDi"):
        fetch_official(cache_dir=tmp_path, local_files_only=True)


def test_an_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    from codi import presets

    state = fixture_official_state()
    state.pop("model.diffusion_model.unet_audio.out.2.weight")
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointKeyError, match="diffusion.unet_audio.out.2.weight"):
        presets.load_official(files=[path], config=fixture_config())
