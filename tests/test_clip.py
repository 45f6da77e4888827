"""CLIP prompt encoder: tokenizer, preprocessing, temporal video path, key table (tiny real models on CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import parity_dir

from codi.keymaps.clip import OFFICIAL_PREFIX, RULES, clip_component_map
from codi.loading import check_against_module, convert_official_state_dict
from codi.models.clip import (
    CLIP_PRESETS,
    IMAGE_MEAN,
    IMAGE_STD,
    CLIPEncoder,
    CLIPEncoderConfig,
    clip_preprocess,
    clip_tokenize,
    load_clip_tokenizer,
    official_random_view,
)
from codi.models.clip_temporal import CLIPTemporalBlock, FrameLayerNorm

TEMPORAL_NUMEL_FULL = 310_030_704  # spec 1.2: the 24 temporal blocks of ViT-L/14


@pytest.fixture(scope="module")
def encoder() -> CLIPEncoder:
    torch.manual_seed(0)
    return CLIPEncoder(CLIP_PRESETS["tiny"]).eval()


def _randomize_temporal(encoder: CLIPEncoder, seed: int) -> CLIPEncoder:
    """A copy whose temporal blocks are non-trivial (the default init makes them near-identity)."""
    gen = torch.Generator().manual_seed(seed)
    other = CLIPEncoder(encoder.config).eval()
    other.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        for name, p in other.named_parameters():
            if "temporal_self_attn" in name:
                p.normal_(0.0, 0.1, generator=gen)
    return other


def test_tokenizer_vocabulary_and_specials() -> None:
    tok = load_clip_tokenizer()
    assert len(tok) == 49408
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    ids = clip_tokenize(["a photo of a cat", "word " * 200])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all()  # padded with <|endoftext|>
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407  # truncated, end token kept


def test_tokenizer_matches_fixture_ids() -> None:
    folder = parity_dir()
    from safetensors import safe_open

    spec = json.loads((folder / "clip.json").read_text())
    with safe_open(str(folder / "clip.safetensors"), framework="pt") as f:
        expected = f.get_tensor("input.token_ids")
    ours = clip_tokenize(spec["strings"])
    assert torch.equal(ours, expected)


def test_config_from_fixture_dict() -> None:
    folder = parity_dir()
    spec = json.loads((folder / "clip.json").read_text())
    assert CLIPEncoderConfig.from_dict(spec["config"]) == CLIP_PRESETS["tiny"]


def test_dropped_position_ids_equal_ours(encoder: CLIPEncoder) -> None:
    folder = parity_dir()
    from safetensors import safe_open

    with safe_open(str(folder / "clip.safetensors"), framework="pt") as f:
        for tower in ("text_model", "vision_model"):
            official = f.get_tensor(f"{OFFICIAL_PREFIX}{tower}.embeddings.position_ids")
            ours = getattr(encoder.model, tower).embeddings.position_ids
            assert torch.equal(official, ours)
            assert official.tolist() == [list(range(official.shape[1]))]


def test_full_size_key_coverage() -> None:
    folder = parity_dir()
    rows = [line.split("\t") for line in (folder / "official_state_dict_keys.tsv").read_text().splitlines()]
    official = {
        key: torch.empty(json.loads(shape), device="meta") for key, shape, _ in rows if key.startswith(OFFICIAL_PREFIX)
    }
    assert len(official) == 952
    with torch.device("meta"):
        full = CLIPEncoder(CLIPEncoderConfig.official())
    ours = convert_official_state_dict(official, [clip_component_map()])
    check_against_module(ours, full.model)  # every key lands, same shapes, nothing missing
    temporal = sum(v.numel() for k, v in full.state_dict().items() if ".temporal_self_attn." in k)
    assert temporal == TEMPORAL_NUMEL_FULL
    assert sum(1 for r in RULES if not r.targets) == 1  # only the position_ids buffers are dropped


def test_preprocess_grey_and_shapes() -> None:
    grey = clip_preprocess(torch.zeros(1, 3, 40, 56))  # 0.5 -> 127 after truncation
    expected = (127 / 255 - torch.tensor(IMAGE_MEAN, dtype=torch.float64)) / torch.tensor(IMAGE_STD)
    assert grey.shape == (1, 3, 224, 224)
    torch.testing.assert_close(grey, expected.float().view(1, 3, 1, 1).expand_as(grey), rtol=0, atol=1e-6)
    tall = clip_preprocess(torch.rand(2, 3, 70, 30) * 2 - 1, size=32)
    assert tall.shape == (2, 3, 32, 32)


def test_text_paths_agree(encoder: CLIPEncoder) -> None:
    prompts = ["a photo of a cat", ""]
    with torch.no_grad():
        from_strings = encoder.encode_text(prompts)
        from_ids = encoder.encode_text(encoder.tokenize(prompts))
        uncond = encoder.unconditional_text(3)
    assert from_strings.shape == (2, 1, 768)
    torch.testing.assert_close(from_strings, from_ids, rtol=0, atol=0)
    torch.testing.assert_close(from_strings.norm(dim=-1), torch.ones(2, 1))
    torch.testing.assert_close(uncond, from_strings[1:].expand(3, -1, -1))


def test_video_of_one_repeated_frame_equals_image_at_init(encoder: CLIPEncoder) -> None:
    """Zero-initialised output projections make the temporal blocks the identity on a still video."""
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 40, 56, generator=gen) * 2 - 1
    with torch.no_grad():
        still = encoder.encode_video(image.unsqueeze(2).expand(-1, -1, 3, -1, -1))  # [2,1,768]
        ref = encoder.encode_image(image)
    torch.testing.assert_close(still, ref, rtol=0, atol=1e-6)


def test_video_rows_independent(encoder: CLIPEncoder) -> None:
    model = _randomize_temporal(encoder, seed=2)
    gen = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 4, 3, 224, 224, generator=gen)  # [B,F,3,S,S]
    with torch.no_grad():
        both = model.encode_pixels(pixels)
        singles = torch.cat([model.encode_pixels(pixels[i : i + 1]) for i in range(2)])
        at_init = encoder.encode_pixels(pixels)
    assert both.shape == (2, 1, 768)
    torch.testing.assert_close(both, singles, rtol=0, atol=1e-6)
    assert (both - at_init).abs().max() > 1e-4  # the temporal blocks contribute


def test_temporal_block_mixes_frames_of_one_token_only() -> None:
    torch.manual_seed(7)
    block = CLIPTemporalBlock(16, heads=4)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2 * 3, 5, 16)  # [(B*F),L,C], B=2, F=3
        y = block(x, frames=3)
        x2 = x.clone()
        x2[1, 2] += 1.0  # video 0, frame 1, token 2
        changed = (block(x2, frames=3) - y).abs().amax(dim=-1) > 1e-6  # [(B*F),L]
        perm = torch.randperm(5)
        torch.testing.assert_close(block(x[:, perm], frames=3), y[:, perm])  # tokens are independent
    expected = torch.zeros(6, 5, dtype=torch.bool)
    expected[0:3, 2] = True  # every frame of video 0 at token 2, nothing else
    assert torch.equal(changed, expected)


def test_unconditional_vision(encoder: CLIPEncoder) -> None:
    with torch.no_grad():
        image = encoder.unconditional_image(2, size=(32, 48))
        direct = encoder.encode_pixels(clip_preprocess(torch.zeros(1, 3, 224, 224)))
        video = encoder.unconditional_video(2, frames=3)
    assert image.shape == video.shape == (2, 1, 768)
    torch.testing.assert_close(image, direct.expand(2, -1, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(video, image, rtol=0, atol=1e-6)  # still video + identity temporal blocks


def test_official_random_view_is_seeded(encoder: CLIPEncoder) -> None:
    images = torch.rand(2, 3, 40, 56) * 2 - 1
    a = official_random_view(images, torch.Generator().manual_seed(4))
    b = official_random_view(images, torch.Generator().manual_seed(4))
    assert a.shape == (2, 3, 512, 512)
    assert torch.equal(a, b) and a.abs().max() <= 1
    with torch.no_grad():
        e1 = encoder.encode_image(images, torch.Generator().manual_seed(5), official_preprocessing=True)
        e2 = encoder.encode_image(images, torch.Generator().manual_seed(5), official_preprocessing=True)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)


def test_frame_layer_norm_normalises_over_frames() -> None:
    norm = FrameLayerNorm(8)
    x = torch.randn(5, 4, 8) * 3 + 2
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(5, 8), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(5, 8), rtol=0, atol=1e-3)


def test_temporal_block_low_precision() -> None:
    torch.manual_seed(6)
    block = CLIPTemporalBlock(16, heads=4)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2 * 3, 5, 16)  # [(B*F),L,C]
        ref = block(x, frames=3)
        low = block.to(torch.bfloat16)(x.bfloat16(), frames=3)
    assert low.dtype == torch.bfloat16 and low.shape == x.shape
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
