"""CLAP audio encoder: config, key table (fixture and full size), recomputed buffers, cropping, encoding."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import parity_dir

from codi.keymaps.clap import OFFICIAL_PREFIX, RULES
from codi.loading import ComponentMap, check_against_module, convert_official_state_dict, load_official_component
from codi.models.clap import PRESETS, CLAPAudioConfig, CLAPEncoder, fit_length

CLAP_MAP = ComponentMap(OFFICIAL_PREFIX, "", RULES)


def _tiny_encoder(seed: int = 0) -> CLAPEncoder:
    torch.manual_seed(seed)
    return CLAPEncoder(PRESETS["tiny"])


def _fixture() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    folder = parity_dir()
    return json.loads((folder / "clap.json").read_text()), load_file(str(folder / "clap.safetensors"))


def test_config_from_fixture_and_official_preset() -> None:
    spec, _ = _fixture()
    cfg = CLAPAudioConfig.from_dict(spec["config"])
    assert cfg == PRESETS["tiny"]
    assert cfg.num_features == spec["config"]["clap_embed_dim"] == 128
    official = CLAPAudioConfig.official()
    assert (official.num_features, official.depths, official.num_heads) == (2048, (2, 2, 12, 2), (4, 8, 16, 32))
    flat = CLAPAudioConfig.from_dict({"embed_dim": 16, "depths": [2, 2], "num_heads": [1, 2], "n_mels": 64})
    assert (flat.depths, flat.num_features) == ((2, 2), 32)
    round_trip = json.loads(json.dumps(dataclasses.asdict(official)))  # tuples come back as lists
    assert CLAPAudioConfig(**round_trip) == official == CLAPAudioConfig.from_dict(round_trip)
    with pytest.raises(ValueError, match="unknown"):
        CLAPAudioConfig.from_dict({"embed_dims": 16})
    bad = json.loads(json.dumps(spec["config"]))
    bad["htsat"]["num_features"] = 64
    with pytest.raises(ValueError, match="num_features"):
        CLAPAudioConfig.from_dict(bad)


def test_full_size_official_keys_land_on_our_module() -> None:
    rows = [line.split("\t") for line in (parity_dir() / "official_state_dict_keys.tsv").read_text().splitlines()]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    official = {
        key: torch.empty(json.loads(shape), dtype=dtypes[dtype], device="meta")
        for key, shape, dtype in rows
        if key.startswith(OFFICIAL_PREFIX)
    }
    assert len(official) == 292
    with torch.device("meta"):
        encoder = CLAPEncoder(CLAPAudioConfig.official())
    ours = convert_official_state_dict(official, [CLAP_MAP])
    check_against_module(ours, encoder)  # every key of ours present, same shapes, nothing missing


def test_dropped_attn_masks_and_loaded_indices_equal_recomputed_ones() -> None:
    _, tensors = _fixture()
    encoder = CLAPEncoder(PRESETS["tiny"])
    stages = encoder.audio_branch.audio_encoder.layers
    resolutions = encoder.audio_branch.audio_encoder.input_resolutions
    masks = 0
    for key, value in tensors.items():
        parts = key.split(".")  # clap.model.audio_branch.layers.L.blocks.B.<leaf...>
        if key.endswith(".attn_mask"):
            layer = stages[int(parts[4])].blocks[int(parts[6])]
            layer.set_shift_and_window_size(resolutions[int(parts[4])])
            torch.testing.assert_close(layer.get_attn_mask(*resolutions[int(parts[4])], torch.float32, "cpu"), value)
            masks += 1
        elif key.endswith(".relative_position_index"):
            attention = stages[int(parts[4])].blocks[int(parts[6])].attention.self
            assert torch.equal(attention.create_relative_position_index(), value)
    assert masks == 3  # one shifted block per stage wider than the window


def test_fixture_weights_load_strictly_and_reject_strays() -> None:
    _, tensors = _fixture()
    encoder = CLAPEncoder(PRESETS["tiny"])
    load_official_component(encoder, tensors, CLAP_MAP)
    assert encoder.audio_branch.audio_encoder.batch_norm.num_batches_tracked.item() == (
        tensors["clap.model.audio_branch.bn0.num_batches_tracked"].item()
    )
    q = encoder.audio_branch.audio_encoder.layers[1].blocks[0].attention.self.query.weight
    qkv = tensors["clap.model.audio_branch.layers.1.blocks.0.attn.qkv.weight"]
    assert torch.equal(q, qkv[: qkv.shape[0] // 3].float())
    stray = dict(tensors)
    stray["clap.model.audio_branch.layers.0.blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match="attn.extra"):
        load_official_component(encoder, stray, CLAP_MAP)


def test_fit_length_repeat_pads_and_crops() -> None:
    x = torch.arange(1, 4, dtype=torch.float32)[None].repeat(2, 1)  # [2,3] rows 1,2,3
    assert fit_length(x, 8).tolist() == [[1, 2, 3, 1, 2, 3, 0, 0]] * 2
    assert torch.equal(fit_length(x, 3), x)
    long = torch.arange(10, dtype=torch.float32)[None].repeat(3, 1)  # [3,10]
    assert fit_length(long, 4)[0].tolist() == [3, 4, 5, 6]  # center crop: offset (10-4)//2
    first = fit_length(long, 4, "random", torch.Generator().manual_seed(5))
    again = fit_length(long, 4, "random", torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    starts = first[:, 0].long()
    assert torch.all((starts >= 0) & (starts <= 6)) and torch.equal(first, starts[:, None] + torch.arange(4))
    with pytest.raises(ValueError, match="crop"):
        fit_length(long, 4, "left")


@torch.no_grad()
def test_encode_audio_shapes_norm_layouts_and_determinism() -> None:
    encoder = _tiny_encoder()
    wave = torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(3))  # 0.5 s at 16 kHz
    out = encoder.encode_audio(wave)
    assert out.shape == (2, 1, 768) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 1))
    assert torch.equal(encoder.encode_audio(wave[:, 0]), out)  # [B,T] and [B,1,T] are the same input
    torch.testing.assert_close(encoder.encode_audio(wave[1:]), out[1:], atol=1e-6, rtol=0)  # rows independent
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="mono"):
        encoder.encode_audio(wave.repeat(1, 2, 1))  # stereo must be mixed down by the caller
    assert torch.equal(_tiny_encoder().encode_audio(wave), out)  # seeded construction, deterministic call


@torch.no_grad()
def test_unconditional_is_silence_and_encoder_stays_in_eval_mode() -> None:
    encoder = _tiny_encoder()
    encoder.train()
    assert not encoder.training and not encoder.audio_branch.audio_encoder.batch_norm.training
    uncond = encoder.unconditional(3, 1600)
    assert uncond.shape == (3, 1, 768)
    torch.testing.assert_close(uncond, encoder.encode_audio(torch.zeros(3, 1, 16000)))  # length-independent
    stats = encoder.audio_branch.audio_encoder.batch_norm.running_mean.clone()
    encoder.encode_audio(torch.randn(2, 1, 800))
    assert torch.equal(stats, encoder.audio_branch.audio_encoder.batch_norm.running_mean)


@torch.no_grad()
def test_long_input_crop_modes() -> None:
    encoder = _tiny_encoder()
    wave = torch.randn(1, 1, 160_400, generator=torch.Generator().manual_seed(4))  # 1200 samples over 10 s
    centered = encoder.log_mel(wave)
    assert centered.shape == (1, 1, 1001, 64) and centered.dtype == torch.float32
    draws = [encoder.log_mel(wave, "random", torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


@torch.no_grad()
def test_bfloat16_encoder_keeps_float32_front_end() -> None:
    encoder = _tiny_encoder()
    wave = torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(6))
    reference = encoder.encode_audio(wave)
    low = encoder.to(torch.bfloat16).encode_audio(wave)
    assert low.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(low.float(), reference, dim=-1).min() > 0.99
