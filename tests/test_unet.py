"""The CoDi UNets, the STA block, condition mixing and the joint denoiser on tiny CPU models."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import parity_dir

from codi.keymaps.unet import unet_map
from codi.loading import check_against_module, convert_official_state_dict
from codi.modality import Modality
from codi.models import unet_blocks
from codi.models.joint import CouplingMode, JointDenoiser, mix_conditions
from codi.models.temporal import (
    ChanLayerNorm,
    FrameShiftBlock,
    SpatioTemporalAttention,
    TemporalFeedForward,
    frame_shift,
    token_shift,
)
from codi.models.unet import UNet0D, UNet2D, UNetConfig
from codi.models.unet_blocks import (
    Conv2d,
    Upsample,
    matmul_conv,
    timestep_embedding,
    upsample_conv,
    use_matmul_conv,
    use_upsample_conv,
)

TINY = dict(
    model_channels=64,
    num_noattn_blocks=(1, 1),
    channel_mult=(1, 1),
    with_attn=(True, False),
    channel_mult_connector=(1, 1),
    num_noattn_blocks_connector=(1, 1),
    with_connector=(True, False),
    connector_output_channel=32,
    num_heads=4,
    context_dim=16,
    second_dim=(4, 4),
    second_dim_connector=(4, 4),
)


def tiny_unets(seed: int = 0, **overrides) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    cfg = {**TINY, **overrides}
    return {
        "image": UNet2D(UNetConfig(4, output_channels=4, use_video_architecture=True, **cfg)).eval(),
        "audio": UNet2D(UNetConfig(8, output_channels=8, **cfg)).eval(),
        "text": UNet0D(UNetConfig(24, output_channels=24, **cfg)).eval(),
    }


def inputs(seed: int = 1, batch: int = 2, frames: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 4, 8, 8, generator=g),
        "video": torch.randn(batch, 4, frames, 8, 8, generator=g),
        "audio": torch.randn(batch, 8, 8, 4, generator=g),
        "text": torch.randn(batch, 24, generator=g),
        "context": torch.randn(batch, 1, 16, generator=g),
        "t": torch.tensor([981, 37][:batch] + [500] * max(0, batch - 2)),
    }


def test_config_from_dict_and_presets() -> None:
    cfg = UNetConfig.from_dict(
        {
            "input_channels": 4,
            "model_channels": 64,
            "output_channels": 4,
            "channel_mult": [1, 1, 1, 1],
            "use_checkpoint": True,
        },
        alias_last_skip=True,
    )
    assert cfg.channel_mult == (1, 1, 1, 1) and cfg.alias_last_skip and cfg.connector_output_channel == 1280
    with pytest.raises(ValueError, match="unknown UNet config keys"):
        UNetConfig.from_dict({"input_channels": 4, "model_channels": 64, "output_channels": 4, "typo": 1})
    with pytest.raises(ValueError, match="with_attn"):
        UNetConfig(4, 64, 4, with_attn=(True,))
    image, audio, text = UNetConfig.official_image(), UNetConfig.official_audio(), UNetConfig.official_text()
    assert image.model_channels == 320 and image.use_video_architecture and image.alias_last_skip
    assert audio.model_channels == 192 and audio.input_channels == 8 and not audio.use_video_architecture
    assert text.input_channels == 768 and text.second_dim == (4, 4, 4, 4)


def test_timestep_embedding_is_cos_then_sin() -> None:
    emb = timestep_embedding(torch.tensor([0, 10]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]))


def test_token_and_frame_shift() -> None:
    x = torch.arange(1, 2 * 3 * 16 + 1, dtype=torch.float32).view(2 * 3, 16, 1, 1)  # B=2, F=3, C=16
    video = x.view(2, 3, 16)
    shifted = token_shift(x, 3).view(2, 3, 16)
    torch.testing.assert_close(shifted[:, :, :8], video[:, :, :8])
    torch.testing.assert_close(shifted[:, 1:, 8:], video[:, :-1, 8:])
    assert (shifted[:, 0, 8:] == 0).all()
    moved = frame_shift(x, 3).view(2, 3, 8, 2)  # 8 chunks of 2 channels, chunk i moves i frames
    chunks = video.view(2, 3, 8, 2)
    torch.testing.assert_close(moved[:, :, 0], chunks[:, :, 0])
    torch.testing.assert_close(moved[:, 2:, 2], chunks[:, :1, 2])
    assert (moved[:, :2, 2] == 0).all() and (moved[:, :, 3:] == 0).all()  # F=3 < 8: chunks i >= 3 vanish


def test_sta_is_identity_for_images_and_mixes_frames() -> None:
    torch.manual_seed(0)
    sta = SpatioTemporalAttention(64, 16).eval()
    x = torch.randn(6, 64, 4, 4)
    assert sta(x, None) is x
    with torch.no_grad():
        y = sta(x, 3)  # B=2, F=3
        x2 = x.clone()
        x2[1] += 1.0  # change frame 1 of sample 0
        y2 = sta(x2, 3)
    assert y.shape == x.shape
    assert not torch.allclose(y[2], y2[2])  # a later frame of the same sample sees it
    torch.testing.assert_close(y[3:], y2[3:])  # the other sample does not


@pytest.mark.parametrize("channels_last", [False, True])
def test_sta_hands_its_feed_forward_channels_last_rows(channels_last) -> None:
    """Whatever the input's layout, the STA's output and what its channel LayerNorm reads are channels-last (the
    norm's fused CPU path needs contiguous channel rows), with the values of the plain reshape."""
    torch.manual_seed(0)
    sta = SpatioTemporalAttention(32, 8).eval()
    x = torch.randn(6, 32, 4, 5)
    cl = torch.channels_last
    x = x.contiguous(memory_format=cl) if channels_last else x
    seen = []
    sta.ff.proj_out[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=cl)))
    with torch.no_grad():
        y = sta(x, 3)
        read_by_norm = list(seen)
        seq = x.view(2, 3, 32, 4, 5).permute(0, 3, 4, 1, 2).reshape(40, 3, 32)
        seq = seq + sta.temporal_attn(seq, sta.temporal_rel_pos_bias(3))
        mixed = seq.view(2, 4, 5, 3, 32).permute(0, 3, 4, 1, 2).reshape(6, 32, 4, 5)
        mixed = mixed + sta.ff(mixed.contiguous(), 3)
        expected = sta.frameshiftblock(mixed, 3)
    assert read_by_norm == [True] and y.is_contiguous(memory_format=cl)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_unet2d_shapes_environment_and_connectors() -> None:
    unets, d = tiny_unets(), inputs()
    image = unets["image"]
    with torch.no_grad():
        eps_img = image(d["image"], d["t"], d["context"])
        eps_vid = image(d["video"], d["t"], d["context"])
        env = image.environment(d["video"], d["t"])
        joint = image(d["video"], d["t"], d["context"], env_context=env)
    assert eps_img.shape == d["image"].shape and eps_vid.shape == d["video"].shape
    assert env.shape == (2, 1, 32)
    torch.testing.assert_close(env.norm(dim=-1), torch.ones(2, 1))
    assert not torch.allclose(joint, eps_vid)  # connecter-in transformers are active
    with pytest.raises(ValueError, match="UNet2D takes"):
        unets["audio"](d["video"], d["t"], d["context"])


def test_unet0d_text_shapes() -> None:
    text, d = tiny_unets()["text"], inputs()
    with torch.no_grad():
        eps = text(d["text"], d["t"], d["context"])
        env = text.environment(d["text"], d["t"])
    assert eps.shape == (2, 24) and env.shape == (2, 1, 32) and torch.isfinite(eps).all()
    assert text.input_blocks[1][0].in_layers[0].num_channels == 64 * 4  # [C, 4, 1] flattened C-major


def test_alias_last_skip_changes_output_block_zero_input() -> None:
    d = inputs()
    textbook, aliased = tiny_unets()["audio"], tiny_unets(alias_last_skip=True)["audio"]
    with torch.no_grad():
        a = textbook(d["audio"], d["t"], d["context"])
        b = aliased(d["audio"], d["t"], d["context"])
    assert not torch.allclose(a, b)


def test_batch_rows_are_independent_with_any_frame_count() -> None:
    unets, d = tiny_unets(), inputs(batch=3, frames=5)
    model = JointDenoiser(unets)
    latents = {Modality.VIDEO: d["video"], Modality.AUDIO: d["audio"]}
    with torch.no_grad():
        full = model(latents, d["t"], d["context"])
        row = model({m: x[1:2] for m, x in latents.items()}, d["t"][1:2], d["context"][1:2])
    for m in latents:
        torch.testing.assert_close(full[m][1:2], row[m], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", [CouplingMode.OFFICIAL, CouplingMode.PAPER])
def test_paper_mode_routes_other_environments(mode: CouplingMode) -> None:
    model, d = JointDenoiser(tiny_unets()), inputs()
    other_audio = d["audio"] + torch.randn(d["audio"].shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = model({Modality.VIDEO: d["video"], Modality.AUDIO: d["audio"]}, d["t"], d["context"], mode=mode)
        b = model({Modality.VIDEO: d["video"], Modality.AUDIO: other_audio}, d["t"], d["context"], mode=mode)
    assert list(a) == [Modality.VIDEO, Modality.AUDIO]
    if mode is CouplingMode.OFFICIAL:
        torch.testing.assert_close(a[Modality.VIDEO], b[Modality.VIDEO], atol=0, rtol=0)
    else:
        assert (a[Modality.VIDEO] - b[Modality.VIDEO]).abs().max() > 1e-4


def test_partner_weight_composes_the_leading_outputs_environments_into_the_followers_condition() -> None:
    model, d = JointDenoiser(tiny_unets(connector_output_channel=16)), inputs()  # environments as wide as prompts
    latents = {Modality.VIDEO: d["video"], Modality.AUDIO: d["audio"]}
    w = torch.tensor([3.0, 0.0])  # row 1: an unconditional row of guidance keeps its context
    with torch.no_grad():
        plain = model(latents, d["t"], d["context"], mode=CouplingMode.PAPER)
        composed = model(latents, d["t"], d["context"], mode=CouplingMode.PAPER, partner_weight=w)
        envs = model.environments(latents, d["t"])
        audio_ctx = (d["context"] + 3.0 * envs[Modality.VIDEO]) / 4.0  # [B,1,D]: the audio follows the video
        by_hand = model.unet_for("audio")(d["audio"], d["t"], audio_ctx, env_context=envs[Modality.VIDEO])
        alone = model({Modality.AUDIO: d["audio"]}, d["t"], d["context"], partner_weight=3.0)
        with_text = {**latents, Modality.TEXT: d["text"]}
        three = model(with_text, d["t"], d["context"], mode=CouplingMode.PAPER, partner_weight=3.0)
        three_plain = model(with_text, d["t"], d["context"], mode=CouplingMode.PAPER)
    torch.testing.assert_close(composed[Modality.AUDIO][0], by_hand[0], atol=1e-5, rtol=1e-5)
    assert (composed[Modality.AUDIO][0] - plain[Modality.AUDIO][0]).abs().max() > 1e-3
    torch.testing.assert_close(composed[Modality.AUDIO][1], plain[Modality.AUDIO][1], atol=0, rtol=0)
    torch.testing.assert_close(composed[Modality.VIDEO], plain[Modality.VIDEO], atol=0, rtol=0)  # settles first
    torch.testing.assert_close(three[Modality.VIDEO], three_plain[Modality.VIDEO], atol=0, rtol=0)
    assert (three[Modality.TEXT] - three_plain[Modality.TEXT]).abs().max() > 1e-3  # text follows both
    torch.testing.assert_close(alone[Modality.AUDIO], model.unet_for("audio")(d["audio"], d["t"], d["context"]))
    narrow = JointDenoiser(tiny_unets())  # 32-wide environments, 16-wide prompts (like 1280 vs 768 officially)
    with pytest.raises(ValueError, match="as wide as the prompt embedding"):
        narrow(latents, d["t"], d["context"], partner_weight=1.0)
    narrow(latents, d["t"], d["context"], partner_weight=0.0)  # CoDi as published needs nothing


def test_leader_env_hook_replaces_what_a_leader_offers_its_followers() -> None:
    """With `leader_env`, leaders run first and the follower composes the hook's vector (called once per leader,
    with the leader's own output); outputs keep the caller's order."""
    model, d = JointDenoiser(tiny_unets(connector_output_channel=16)), inputs()
    latents = {Modality.AUDIO: d["audio"], Modality.VIDEO: d["video"]}  # follower first: run order is not dict order
    offered = torch.nn.functional.normalize(torch.randn(2, 1, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    calls = []

    def hook(modality, x, t, out):
        calls.append((modality, x.shape, out.shape))
        return offered

    with torch.no_grad():
        out = model(latents, d["t"], d["context"], mode=CouplingMode.PAPER, partner_weight=2.0, leader_env=hook)
        envs = model.environments(latents, d["t"])
        by_hand = model.unet_for("audio")(
            d["audio"], d["t"], (d["context"] + 2.0 * offered) / 3.0, env_context=envs[Modality.VIDEO]
        )
        off = model(latents, d["t"], d["context"], mode=CouplingMode.PAPER, leader_env=hook)  # w = 0: no call
    assert list(out) == [Modality.AUDIO, Modality.VIDEO]
    assert calls == [(Modality.VIDEO, d["video"].shape, d["video"].shape)]
    torch.testing.assert_close(out[Modality.AUDIO], by_hand, atol=1e-5, rtol=1e-5)
    assert (off[Modality.AUDIO] - out[Modality.AUDIO]).abs().max() > 1e-3


def test_joint_denoiser_modalities_and_checks() -> None:
    unets, d = tiny_unets(), inputs()
    only_image = JointDenoiser({"image": unets["image"]})
    assert only_image.unet_for(Modality.VIDEO) is unets["image"]
    assert {k.split(".")[0] for k in only_image.state_dict()} == {"unet_image"}
    with pytest.raises(KeyError, match="unet_text"):
        only_image.unet_for("text")
    with torch.no_grad():
        single = only_image({Modality.IMAGE: d["image"]}, d["t"], d["context"])
        direct = unets["image"](d["image"], d["t"], d["context"])
    torch.testing.assert_close(single[Modality.IMAGE], direct, atol=0, rtol=0)  # no environment when alone
    other = UNet2D(UNetConfig(8, output_channels=8, **{**TINY, "connector_output_channel": 64}))
    with pytest.raises(ValueError, match="connector_output_channel"):
        JointDenoiser({"image": unets["image"], "audio": other})


def test_bf16_forward() -> None:
    model, d = JointDenoiser(tiny_unets()).to(torch.bfloat16), inputs(frames=2)
    latents = {m: d[m.value].to(torch.bfloat16) for m in (Modality.VIDEO, Modality.AUDIO, Modality.TEXT)}
    with torch.no_grad():
        out = model(latents, d["t"], d["context"].to(torch.bfloat16), mode=CouplingMode.PAPER)
    for m, x in latents.items():
        assert out[m].shape == x.shape and out[m].dtype == torch.bfloat16 and torch.isfinite(out[m]).all()


def test_mix_conditions() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 8, generator=g), torch.randn(2, 1, 8, generator=g)
    torch.testing.assert_close(mix_conditions([a, b], [1, 3]), 0.25 * a + 0.75 * b)
    torch.testing.assert_close(mix_conditions([a, a], [0.5, 0.5]), a)  # same modality twice
    torch.testing.assert_close(mix_conditions([b], [5]), b)
    with pytest.raises(ValueError):
        mix_conditions([a, b], [1])


@pytest.mark.parametrize("name", ["image", "audio", "text"])
def test_full_size_official_keys_land_on_our_modules(name: str) -> None:
    folder = parity_dir()
    prefix = f"model.diffusion_model.unet_{name}."
    official = {}
    for line in (folder / "official_state_dict_keys.tsv").read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        if key.startswith(prefix):
            dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
            official[key] = torch.empty(dims, dtype=getattr(torch, dtype), device="meta")
    config = dataclasses.asdict(getattr(UNetConfig, f"official_{name}")())
    with torch.device("meta"):
        module = (UNet0D if name == "text" else UNet2D)(UNetConfig(**config))
    ours = convert_official_state_dict(official, [unet_map(name)])
    assert len(ours) == len(official) == {"image": 1597, "audio": 1122, "text": 1122}[name]
    check_against_module(ours, module)


@pytest.mark.parametrize(
    "frames, channels, size, min_pixels", [(8, 64, 4, 1), (8, 64, 4, 40), (3, 32, 2, 1), (5, 96, 3, 1), (1, 32, 2, 1)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_frame_shift_block_skips_only_dropped_outputs(frames, channels, size, min_pixels, channels_last, monkeypatch):
    """Frames in groups with a prefix of the kernel each = the convolution of every frame, then `frame_shift`."""
    torch.manual_seed(0)
    block = FrameShiftBlock(channels).eval()
    x = torch.randn(2 * frames, channels, size, size)
    if channels_last:
        block, x = block.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(FrameShiftBlock, "MIN_PIXELS", min_pixels)
    with torch.no_grad():
        expected = x + frame_shift(block.out_layers(x), frames)
        got = block(x, frames)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if frames > 1:  # split by frame: written into a copy of x, in x's memory format
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_temporal_feed_forward_matches_its_definition(channels_last, dtype) -> None:
    """conv -> GEGLU in float32 -> token shift -> channel LayerNorm -> conv, as spelled out by the released code."""
    torch.manual_seed(0)
    ff = TemporalFeedForward(24).eval()  # inner 64
    with torch.no_grad():
        ff.proj_out[0].g.uniform_(0.5, 1.5)
    ff = ff.to(dtype)
    x = torch.randn(2 * 4, 24, 3, 3, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    conv_in, geglu = ff.proj_in
    norm, conv_out = ff.proj_out
    with torch.no_grad():
        h = token_shift(geglu(F.conv2d(x, conv_in.weight[..., 0])), 4)
        var, mean = h.var(dim=1, unbiased=False, keepdim=True), h.mean(dim=1, keepdim=True)
        h = (h - mean) * var.clamp(min=1e-5 if dtype == torch.float32 else 1e-3).rsqrt() * norm.g[:, 0].float()
        expected = F.conv2d(h.to(dtype), conv_out.weight[..., 0])
        got = ff(x, 4)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_channel_layer_norm_clamps_small_variances() -> None:
    """The fused path (channels-last float32) and the spelled-out one agree, also where var < eps is clamped."""
    torch.manual_seed(0)
    norm = ChanLayerNorm(16)
    with torch.no_grad():
        norm.g.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 3, 3)
    x[1, :, 2, 2] = 0.5 + 1e-4 * torch.randn(16)  # one pixel with var ~1e-8 < eps 1e-5
    for quiet in (x[:1], x):  # without and with that pixel
        with torch.no_grad():
            fused, plain = norm(quiet.contiguous(memory_format=torch.channels_last)), norm(quiet.contiguous())
        var, mean = quiet.var(dim=1, unbiased=False, keepdim=True), quiet.mean(dim=1, keepdim=True)
        expected = (quiet - mean) * var.clamp(min=1e-5).rsqrt() * norm.g[:, 0]
        torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-4)  # (x - mean) ~1e-4 loses digits x 316
        torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-4)
    assert fused[1, :, 2, 2].abs().max() < 0.3 < expected[0].abs().max()  # clamped: ~(x - mean) / sqrt(1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_channel_layer_norm_compiles_as_one_graph() -> None:
    """Under torch.compile the channel norm takes the spelled-out formula: the fused path's `.any()` check would
    break the graph in every temporal block (fullgraph=True raises on a break)."""
    torch.manual_seed(0)
    norm = ChanLayerNorm(16)
    x = torch.randn(2, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    x[1, :, 2, 2] = 0.5  # var 0 < eps: clamped
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(norm, fullgraph=True, dynamic=False)(x)
        torch.testing.assert_close(compiled, norm(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["image", "video", "audio", "text"])
@pytest.mark.parametrize("joint", [False, True])
def test_conditions_sharing_a_latent_equal_the_latent_repeated(name: str, joint: bool) -> None:
    """x [B] under a context [2B] (guidance: the halves share the latent) = x repeated to [2B] under it; the work
    before the first cross-attention is then done once. Holds with an environment too ([B] or [2B] rows)."""
    unets, d = tiny_unets(), inputs()
    unet = unets["image" if name == "video" else name]
    x, t = d[name], d["t"]
    context = torch.cat([d["context"], -d["context"]])  # [2B, 1, D]: two conditions per latent
    with torch.no_grad():
        env = unet.environment(x, t) if joint else None  # [B, 1, C_env]
        shared = unet(x, t, context, env_context=env)
        repeated = unet(
            torch.cat([x, x]), torch.cat([t, t]), context, env_context=None if env is None else torch.cat([env, env])
        )
    assert shared.shape == (4, *x.shape[1:])
    torch.testing.assert_close(shared, repeated, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(shared[:2], shared[2:])  # the two conditions still differ
    with pytest.raises(ValueError, match="multiple of the latent"):
        unet(x, t, context[:3])


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 3, 1, 1), (3, 4, 2, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_upsample_conv_is_the_convolution_of_the_upsampled_map(shape, channels_last, bias) -> None:
    """By output parity (2x2 kernels of summed taps on the padded input) = 3x3 convolution of the nearest-x2 map."""
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, c, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64) if bias else None
    if channels_last:
        x, weight = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    expected = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, b, padding=1)
    got = upsample_conv(x, weight, b)
    assert got.shape == (n, 5, 2 * h, 2 * w)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if channels_last or h * w > 1:  # a 1x1 map is contiguous in both layouts (and gets channels-last)
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_upsample_takes_the_parity_path_only_where_it_pays(monkeypatch) -> None:
    """CPU inference at the released sizes, in any precision; not under autograd, not for the tiny model's small
    convolutions (where the call overheads win)."""
    big, weight = torch.empty(1, 512, 32, 32), torch.empty(512, 512, 3, 3)  # 9.7e9 multiply-adds
    with torch.no_grad():
        assert use_upsample_conv(big, weight)
        assert use_upsample_conv(big.bfloat16(), weight.bfloat16())
        assert use_upsample_conv(torch.empty(16, 1280, 4, 4).bfloat16(), torch.empty(1280, 1280, 3, 3))
        assert not use_upsample_conv(torch.empty(4, 32, 32, 32), torch.empty(32, 32, 3, 3))  # tiny's largest
    assert not use_upsample_conv(big, weight)  # autograd on: the plain path (training)

    torch.manual_seed(0)
    up = Upsample(8).eval()
    x = torch.randn(2, 8, 5, 6)
    expected = up(x).detach()  # autograd on: interpolate + conv
    calls = []
    monkeypatch.setattr(unet_blocks, "UPSAMPLE_CONV_MIN_MACS", 0)
    monkeypatch.setattr(unet_blocks, "upsample_conv", lambda *a: calls.append(1) or upsample_conv(*a))
    with torch.no_grad():
        got = up(x)
    assert calls == [1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (2, 1, 0), (3, 1, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matmul_conv_is_the_convolution(kernel, stride, padding, channels_last) -> None:
    """Patches gathered channels-last times the kernel viewed [O, kh kw C] = F.conv2d, any stride and padding."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, kernel, kernel, generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    if channels_last:
        x, weight = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight))
    expected = F.conv2d(x, weight, bias, stride, padding)
    got = matmul_conv(x, weight, bias, stride, padding)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_conv2d_runs_small_maps_as_matrix_products(monkeypatch) -> None:
    """The UNets' Conv2d: same keys as nn.Conv2d; on a CPU without autograd, maps of at most 8x8 with at least
    1e8 multiply-adds go through `matmul_conv` (the released 4x4 and 8x8 levels), others through oneDNN."""
    with torch.no_grad():
        assert use_matmul_conv(torch.empty(16, 1280, 4, 4), torch.empty(1280, 1280, 3, 3), 16)
        assert use_matmul_conv(torch.empty(16, 1280, 8, 8), torch.empty(1280, 1280, 1, 1), 64)
        assert not use_matmul_conv(torch.empty(16, 640, 16, 16), torch.empty(640, 640, 3, 3), 256)  # 16x16
        assert not use_matmul_conv(torch.empty(16, 128, 8, 8), torch.empty(64, 128, 3, 3), 64)  # tiny's widest
    assert not use_matmul_conv(torch.empty(16, 1280, 4, 4), torch.empty(1280, 1280, 3, 3), 16)  # autograd

    torch.manual_seed(0)
    conv = Conv2d(6, 4, 3, stride=2, padding=1).eval()
    assert conv.state_dict().keys() == torch.nn.Conv2d(6, 4, 3).state_dict().keys()
    x = torch.randn(2, 6, 7, 5)
    expected = conv(x).detach()  # autograd on: oneDNN
    calls = []
    monkeypatch.setattr(unet_blocks, "MATMUL_CONV_MIN_MACS", 0)
    monkeypatch.setattr(unet_blocks, "matmul_conv", lambda *a: calls.append(a[3:]) or matmul_conv(*a))
    with torch.no_grad():
        got = conv(x)
    assert calls == [(2, 1)]  # stride, padding
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    same = Conv2d(6, 4, 3, padding="same").eval()  # string padding: torch's own call, no unpacking of it
    with torch.no_grad():
        torch.testing.assert_close(same(x), F.conv2d(x, same.weight, same.bias, padding="same"))
    assert calls == [(2, 1)]
