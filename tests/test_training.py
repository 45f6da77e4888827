"""The training scheme: every stage runs 2 steps on CPU and exports; its fixes; the committed checkpoint matches it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from codi.config import CoDiConfig
from codi.modality import Modality
from codi.models.optimus import bert_tokenizer
from codi.presets import TINY_DIR, load_folder
from codi.sampling import NoiseSchedule, Prediction, split_prediction
from codi.tiny import tiny_config
from codi.world import render_video, sample_scene
from training.bridging import reversed_twin
from training.context import NUM_TONES, Context, tone_index, tone_scenes
from training.data import match_matrix
from training.diffusion import (
    HIGH_NOISE_FROM,
    HIGH_NOISE_WEIGHT_CAP,
    SIGNAL_FREE_FROM,
    high_noise_weights,
    is_connector,
    sample_timesteps,
    signal_free_start,
)
from training.losses import add_noise, envelope_loss, soft_info_nce, v_target
from training.probe import KINDS, probe, ridge_accuracy, table
from training.runner import (
    STAGE_NAMES,
    STAGES,
    channels_last_convs,
    export,
    fresh_model,
    run_stage,
    train,
    with_measured_scales,
    with_prerequisites,
)
from training.stages import ENCODER_INIT_STD


def test_every_stage_runs_and_exports(tmp_path):
    torch.set_num_threads(1)
    out, export = tmp_path / "run", tmp_path / "export"
    done = train(
        tiny_config(), out, torch.device("cpu"), batch_cap=2, steps_override=2, export_to=export, progress=False
    )
    assert list(done["stages"]) == list(STAGE_NAMES)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {e["stage"] for e in log} == set(STAGE_NAMES)
    assert all(torch.isfinite(torch.tensor(e["losses"]["loss"])) for e in log)
    model = load_folder(export)
    assert abs(model.autokl.scale_factor - done["stages"]["image_vae"]["scale_factor"]) < 1e-6
    assert model.can_generate(Modality.AUDIO)
    meta = json.loads((export / "meta.json").read_text())
    assert meta["weights_bytes"] < 50e6
    # resuming a finished run trains nothing more
    again = train(tiny_config(), out, torch.device("cpu"), resume=True, batch_cap=2, steps_override=2, progress=False)
    assert again["stages"].keys() == done["stages"].keys()


def test_soft_targets_do_not_punish_identical_captions():
    stated = [{"color": "red", "shape": None, "motion": None}] * 2
    actual = [{"color": "red", "shape": "circle", "motion": "up"}, {"color": "red", "shape": "square", "motion": "up"}]
    match = match_matrix(stated, actual)
    assert match.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    e = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    both = soft_info_nce(e, e.flip(0), match)
    assert torch.allclose(both, soft_info_nce(e, e, match))  # swapping equally valid positives changes nothing


def test_tone_index_covers_the_sixty_sounds():
    assert sorted(tone_index(s) for s in tone_scenes()) == list(range(NUM_TONES))


def test_envelope_loss_sees_loudness_not_waveform():
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 16000, generator=g)
    ramp = torch.linspace(0.2, 1.0, 16000)
    assert envelope_loss(wave, wave).item() == 0.0
    assert envelope_loss(-wave, wave).item() == 0.0  # sign/phase: same loudness
    # a 0.2 -> 1.0 ramp against a flat one: mean |log a| over a in [0.2, 1] = (0.8 + 0.2 ln 0.2) / 0.8 = 0.598
    assert abs(envelope_loss(wave * ramp, wave).item() - 0.598) < 0.01


def test_from_scratch_optimus_encoder_starts_wide():
    torch.manual_seed(0)
    model = fresh_model(tiny_config(), seed=0)
    emb = model.optimus.encoder.embeddings.word_embeddings.weight
    assert abs(emb.std().item() - ENCODER_INIT_STD) < 0.01
    latent_emb = model.optimus.decoder.transformer.linear_emb.weight
    assert abs(latent_emb.std().item() - model.optimus.decoder.config.initializer_range) < 0.005
    texts = ["a red circle moving up", "a blue square falling", "the green wedge at rest"]
    with torch.no_grad():
        mu = model.optimus.posterior(texts).mu  # [3,latent]
    assert mu.std(0).mean().item() > 0.1  # captions start apart (at BERT's 0.02 init: ~0.03)
    # ... while attention starts near uniform: wide queries/keys make it one-hot from step 0 (max weight
    # 0.6-0.99 at this seed) and the trained latent then kept only the word [CLS] happened to read
    encoder = model.optimus.encoder
    encoder.config._attn_implementation = "eager"
    ids = torch.tensor([bert_tokenizer().encode(texts[0])])  # [1,7]
    with torch.no_grad():
        attentions = encoder(input_ids=ids, output_attentions=True).attentions  # per layer [1,heads,7,7]
    for a in attentions:
        assert a[0, :, 0].max() < 0.3  # [CLS] row; uniform would be 1/7


def test_committed_checkpoint_is_what_the_training_code_builds():
    """checkpoints/tiny/config.json = tiny_config() plus the three latent scale factors training measured."""
    committed = CoDiConfig.load(TINY_DIR / "config.json")
    built = with_measured_scales(tiny_config(), committed)
    assert committed.to_dict() == built.to_dict() and committed.schedule == tiny_config().schedule
    meta = json.loads((TINY_DIR / "meta.json").read_text())
    assert list(meta["stages"]) == list(STAGE_NAMES)
    assert {k: v["steps"] for k, v in meta["stages"].items()} == {s.name: s.steps for s in STAGES}
    assert meta["weights_bytes"] == (TINY_DIR / "model.safetensors").stat().st_size <= 50 * 2**20


def test_channels_last_kernels_keep_the_outputs():
    model = fresh_model(tiny_config(), seed=0).eval()
    unet = model.diffusion.unet_image
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, 8, generator=g), torch.randn(2, 1, unet.config.context_dim, generator=g)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        before = unet(x, t, ctx, unet.environment(x, t))  # [2,4,F,8,8]
        channels_last_convs(model)
        after = unet(x, t, ctx, unet.environment(x, t))
    assert unet.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert before.abs().mean() > 1e-3
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_reversed_twin_renders_the_video_backwards():
    rng = np.random.default_rng(3)
    for motion in ("up", "down", "left", "right", "still"):
        scene = sample_scene(rng, motion=motion)
        twin = reversed_twin(scene)
        assert twin.motion == {"up": "down", "down": "up", "left": "right", "right": "left"}.get(motion, "still")
        np.testing.assert_array_equal(render_video(twin), render_video(scene)[::-1])


def test_from_scratch_clip_video_path_sees_time_order():
    model = fresh_model(tiny_config(), seed=0)
    scenes = [sample_scene(np.random.default_rng(4), motion="left") for _ in range(2)]
    video = torch.from_numpy(np.stack([render_video(s) for s in scenes])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        forward = model.clip.encode_video(video)[:, 0]  # [2,D]
        backward = model.clip.encode_video(video.flip(2))[:, 0]  # [2,D]
    cos = (forward * backward).sum(-1)  # [2]
    assert (cos < 0.995).all(), cos  # with the official identity init: 1.0000


def test_high_noise_emphasis_draws_late_timesteps_and_weights_them():
    tg = torch.Generator().manual_seed(0)
    uniform = sample_timesteps(4000, 1000, 0.0, torch.Generator().manual_seed(0))
    biased = sample_timesteps(4000, 1000, 0.5, tg)
    assert int(biased.min()) >= 0 and int(biased.max()) < 1000
    late_uniform = (uniform >= HIGH_NOISE_FROM).float().mean().item()  # ~0.3
    late_biased = (biased >= HIGH_NOISE_FROM).float().mean().item()  # ~0.3 * 0.5 + 0.5 = 0.65
    assert abs(late_uniform - 0.3) < 0.03 and abs(late_biased - 0.65) < 0.03
    ab = NoiseSchedule().alphas_cumprod()  # CoDi's scaled-linear schedule (0.00085 -> 0.012)
    t = torch.tensor([0, 200, 500, 800, 999])
    raw = ((1 - ab[t]) / ab[t]).clamp(1.0, HIGH_NOISE_WEIGHT_CAP)
    torch.testing.assert_close(high_noise_weights(t, ab), raw / raw.mean())
    assert raw[:2].tolist() == [1.0, 1.0] and raw[-1] == HIGH_NOISE_WEIGHT_CAP  # low noise: plain eps-MSE
    assert 2.0 < raw[2] < 3.0 and 20.0 >= raw[3] > 10.0  # 1 / SNR: 2.6 at t = 500, 26 -> 20 at t = 800


def test_v_target_is_what_the_sampler_reads_back():
    sched = tiny_config().schedule  # zero terminal SNR, v prediction
    ab = sched.alphas_cumprod()
    g = torch.Generator().manual_seed(7)
    x0, noise = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    t = torch.tensor([0, 400, 998, 999])
    x_t = add_noise(x0, noise, t, ab)
    assert torch.equal(x_t[3], noise[3])  # the last step keeps no signal
    v = v_target(x0, noise, t, ab)
    for i in range(4):
        got_x0, got_eps = split_prediction(v[i], x_t[i], ab[t[i]], Prediction(sched.prediction))
        torch.testing.assert_close(got_x0, x0[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(got_eps, noise[i], atol=1e-5, rtol=0)


def test_a_run_trains_v_on_zero_terminal_snr_and_keeps_its_schedule(tmp_path):
    out, export = tmp_path / "run", tmp_path / "export"
    cpu = torch.device("cpu")
    kw = {"batch_cap": 2, "steps_override": 2, "progress": False}
    done = train(tiny_config(True), out, cpu, ("unet_audio",), export_to=export, **kw)
    assert torch.isfinite(torch.tensor(done["stages"]["unet_audio"]["final_losses"]["loss"]))
    exported = CoDiConfig.load(export / "config.json").schedule
    assert exported.zero_terminal_snr and exported.prediction == "v"
    with pytest.raises(ValueError, match="--codi-schedule"):  # its state cannot go on with CoDi's schedule
        train(tiny_config(zero_terminal_snr=False), out, cpu, ("unet_text",), **kw)


def test_signal_free_rows_see_pure_noise_and_the_eps_it_implies():
    ab = NoiseSchedule().alphas_cumprod()  # eps prediction on CoDi's schedule (where the signal-free rows apply)
    g = torch.Generator().manual_seed(1)
    x0 = {Modality.AUDIO: torch.randn(400, 2, 3, 3, generator=g)}
    noise = {Modality.AUDIO: torch.randn(400, 2, 3, 3, generator=g)}
    t = torch.randint(0, 500, (400,), generator=g)
    noisy = {Modality.AUDIO: ab[t].sqrt().view(-1, 1, 1, 1) * x0[Modality.AUDIO]}  # stand-in: never kept as is
    t2, noisy2, target = signal_free_start(t, x0, noisy, noise, ab, torch.Generator().manual_seed(2))
    rows = t2 >= SIGNAL_FREE_FROM  # the untouched rows all have t < 500
    assert 0.10 < rows.float().mean() < 0.20 and (t2[~rows] == t[~rows]).all()
    n, x, a = noise[Modality.AUDIO][rows], x0[Modality.AUDIO][rows], ab[t2[rows]].view(-1, 1, 1, 1)
    torch.testing.assert_close(noisy2[Modality.AUDIO][rows], n)  # the sampler's start: no signal
    torch.testing.assert_close(target[Modality.AUDIO][rows], (n - a.sqrt() * x) / (1 - a).sqrt())
    torch.testing.assert_close(noisy2[Modality.AUDIO][~rows], noisy[Modality.AUDIO][~rows])
    torch.testing.assert_close(target[Modality.AUDIO][~rows], noise[Modality.AUDIO][~rows])


def test_export_writes_the_current_config_with_the_measured_scales(tmp_path):
    stale = tiny_config()  # as saved by an older run: other non-weight settings, measured scale factors
    stale.audio_vae = dataclasses.replace(stale.audio_vae, waveform_decoder="hifigan", scale_factor=0.6)
    stale.image_vae = dataclasses.replace(stale.image_vae, scale_factor=0.7)
    stale.optimus.scale_factor = 0.8
    stale.defaults = dataclasses.replace(stale.defaults, guidance_scale=2.0)
    export(fresh_model(stale, seed=0), tmp_path, {}, tiny_config())
    written = CoDiConfig.load(tmp_path / "config.json")
    assert written.audio_vae.waveform_decoder == tiny_config().audio_vae.waveform_decoder
    assert written.defaults == tiny_config().defaults
    assert (written.image_vae.scale_factor, written.audio_vae.scale_factor, written.optimus.scale_factor) == (
        0.7,
        0.6,
        0.8,
    )


def test_audio_video_stage_fine_tunes_the_text_image_connectors(tmp_path):
    """The image UNet's environment encoder and connectors are trained text-image, then audio-video: the second
    stage goes on from the first's result (no reset to the init), and re-running it re-runs the first."""
    assert with_prerequisites(["joint_audio_video"]) == ("joint_text_image", "joint_audio_video")
    assert with_prerequisites(["clip", "unet_text"]) == ("clip", "unet_text")
    torch.set_num_threads(1)
    model = fresh_model(tiny_config(), seed=0)
    ctx = Context(model, torch.device("cpu"), batch_cap=2)
    name, param = next((n, p) for n, p in model.diffusion.unet_image.named_parameters() if is_connector(n))
    with torch.no_grad():
        param.add_(1.0)  # stands in for what joint_text_image learned
    before = param.detach().clone()
    stage = next(s for s in STAGES if s.name == "joint_audio_video")
    run_stage(ctx, stage, 1, tmp_path / "log.jsonl", progress=False)
    moved = (param.detach() - before).abs().max().item()
    assert moved < 0.01, (name, moved)  # one AdamW step of lr 5e-4 away; a reset would move it by ~1


def test_anchor_video_stage_fits_only_the_video_environment_after_the_joint_stages(tmp_path):
    """`anchor_video` goes on from joint_audio_video (which goes on from joint_text_image) and trains the image
    UNet's environment encoder alone."""
    assert with_prerequisites(["anchor_video"]) == ("joint_text_image", "joint_audio_video", "anchor_video")
    torch.set_num_threads(1)
    model = fresh_model(tiny_config(), seed=0)
    ctx = Context(model, torch.device("cpu"), batch_cap=2)
    unet = model.diffusion.unet_image
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    summary = run_stage(ctx, next(s for s in STAGES if s.name == "anchor_video"), 2, tmp_path / "log.jsonl", False)
    assert set(summary["final_losses"]) == {"loss", "anchor_video"}
    moved = {n for n, p in unet.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(n.startswith("connecters_out") for n in moved), sorted(moved)[:3]


def test_joint_loss_aligns_the_two_environments_of_a_pair():
    """With `env_match`, the joint loss adds a soft InfoNCE between the pair's environment vectors; its gradient
    reaches the environment encoder (connecters_out), which the eps loss alone barely trains."""
    from training.diffusion import _diffusion_loss, _same

    torch.set_num_threads(1)
    model = fresh_model(tiny_config(), seed=0)
    ctx = Context(model, torch.device("cpu"))
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, motion=m) for m in ("up", "up", "down")]
    scenes[1] = dataclasses.replace(scenes[1], color=scenes[0].color, shape=scenes[0].shape)
    match = _same(scenes)
    assert match.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert _same(scenes, ("color", "shape"))[0, 1] == 1
    g, side = torch.Generator().manual_seed(0), model.config.media.image_size // 8
    x0 = {
        Modality.TEXT: torch.randn(3, model.config.optimus.latent_size, generator=g),
        Modality.IMAGE: torch.randn(3, 4, side, side, generator=g),
    }
    context = torch.randn(3, model.config.clip.projection_dim, generator=g)
    losses = _diffusion_loss(ctx, x0, context, torch.Generator().manual_seed(1), True, env_match=match)
    assert set(losses) == {"text", "image", "env", "loss"}
    assert torch.isclose(losses["loss"], losses["text"] + losses["image"] + 0.1 * losses["env"])
    env_param = next(p for n, p in model.diffusion.unet_image.named_parameters() if n.startswith("connecters_out"))
    (grad,) = torch.autograd.grad(losses["env"], env_param)
    assert grad.abs().sum() > 0


def test_anchor_loss_pulls_an_environment_onto_its_caption_embedding():
    """The anchor is the unit mean embedding of several wordings (same for scenes that agree on every attribute);
    its loss is 1 - cos, reaches only the environment encoder, and a few steps on it lower it."""
    from training.data import CaptionSampler
    from training.diffusion import anchor_loss, caption_anchors

    torch.set_num_threads(1)
    model = fresh_model(tiny_config(), seed=0)
    ctx = Context(model, torch.device("cpu"))
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, color="red", shape="circle", motion="left") for _ in range(2)]
    scenes.append(sample_scene(rng, color="blue", shape="square", motion="up"))
    captions = CaptionSampler(np.random.default_rng(0))
    anchors = caption_anchors(ctx, scenes, captions)  # [3,D]
    torch.testing.assert_close(anchors.norm(dim=-1), torch.ones(3))
    assert (anchors[0] @ anchors[1]).item() > (anchors[0] @ anchors[2]).item()
    unet, g = model.diffusion.unet_audio, torch.Generator().manual_seed(0)
    x0 = torch.randn(3, *model.latent_shape(Modality.AUDIO), generator=g)
    env_params = [p for n, p in unet.named_parameters() if n.startswith("connecters_out")]
    body = next(p for n, p in unet.named_parameters() if n.startswith("output_blocks"))  # (time_embed is shared)
    first = anchor_loss(ctx, unet, x0, anchors, torch.Generator().manual_seed(1))
    assert 0.0 <= first.item() <= 2.0
    assert torch.autograd.grad(first, body, allow_unused=True)[0] is None
    opt = torch.optim.Adam(env_params, lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        anchor_loss(ctx, unet, x0, anchors, torch.Generator().manual_seed(1)).backward()
        opt.step()
    assert anchor_loss(ctx, unet, x0, anchors, torch.Generator().manual_seed(1)).item() < first.item() - 0.2


def test_committed_video_environments_read_like_their_captions():
    """The committed joint stages anchor the environments to the prompt space: a clean world video's environment is
    nearer its own full caption's embedding than the same caption with any other motion (what partner composition
    hands the audio UNet)."""
    from codi.world import MOTIONS, caption

    model = load_folder(TINY_DIR).float()
    rng, hits = np.random.default_rng(21), 0
    scenes = [sample_scene(rng) for _ in range(16)]
    videos = torch.from_numpy(np.stack([render_video(s) for s in scenes])).float().div(127.5).sub(1.0).movedim(-1, 1)
    with torch.no_grad():
        env = model.diffusion.unet_image.environment(model.autokl.encode(videos), torch.zeros(16, dtype=torch.long))
        for i, s in enumerate(scenes):
            texts = [caption(dataclasses.replace(s, motion=m), np.random.default_rng(0)) for m in MOTIONS]
            sims = (model.clip.encode_text(texts)[:, 0] @ env[i, 0]).tolist()  # [5] cosine
            hits += max(range(len(MOTIONS)), key=sims.__getitem__) == MOTIONS.index(s.motion)
    assert hits >= 14, hits  # 16 of 16 (the checkpoint before the anchors: 2); chance about 3

    g = torch.Generator().manual_seed(0)
    labels = [["up", "down", "still"][i % 3] for i in range(300)]
    onehot = torch.tensor([[float(lab == k) for k in ("up", "down", "still")] for lab in labels])  # [300,3]
    carried = torch.cat([onehot + 0.1 * torch.randn(300, 3, generator=g), torch.randn(300, 5, generator=g)], 1)
    assert ridge_accuracy(carried, labels) == 1.0
    chance = ridge_accuracy(torch.randn(300, 8, generator=g), labels)
    assert 0.2 < chance < 0.47  # 1/3 up to sampling error
    with pytest.raises(ValueError, match="one label per row"):
        ridge_accuracy(carried, labels[:10])


def test_environment_probe_of_the_committed_checkpoint():
    """The committed model's environment vectors carry colour where the outputs are clean and lose it near pure
    noise (the 512-scene table is in docs/tiny-model-history.md; 64 scenes here)."""
    result = probe(load_folder(TINY_DIR), scenes=64, steps=(0, 900))
    for kind in KINDS:
        assert sorted(result[kind]) == [0, 900]
        for step in (0, 900):
            assert sorted(result[kind][step]) == ["audio", "text", "video"]
            assert all(sorted(accs) == ["color", "motion", "shape"] for accs in result[kind][step].values())
    env = result["env"]
    assert env[0]["audio"]["color"] == 1.0 and env[0]["text"]["color"] == 1.0 and env[0]["video"]["color"] > 0.85
    assert env[900]["audio"]["color"] < 0.8 and env[900]["text"]["color"] < 0.5  # chance 0.25
    assert table(result).splitlines()[2].startswith("| 0 | ")  # one row per step, colour/shape/motion %
