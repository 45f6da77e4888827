"""CoDiPipeline end to end with random tiny weights: every input subset x every output subset, seeds, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from codi.conditions import InputError
from codi.media import AudioClip, VideoClip
from codi.modality import ALL_MODALITIES, Modality
from codi.pipeline import CoDiPipeline
from codi.world import render_audio, render_image, render_video, sample_scene

SCENE = sample_scene(np.random.default_rng(3), color="blue", shape="square", motion="left")
INPUTS = {
    Modality.TEXT: "a blue box sliding left",
    Modality.IMAGE: render_image(SCENE),
    Modality.VIDEO: VideoClip(frames=render_video(SCENE), fps=8.0),
    Modality.AUDIO: AudioClip(waveform=render_audio(SCENE), sample_rate=16000),
}
OUTPUT_SETS = [s for n in range(1, 5) for s in itertools.combinations(ALL_MODALITIES, n)]
INPUT_SETS = [s for n in range(0, 5) for s in itertools.combinations(ALL_MODALITIES, n)]


@pytest.fixture(scope="module")
def pipe() -> CoDiPipeline:
    torch.manual_seed(0)
    return CoDiPipeline.from_preset("tiny", allow_random=True)


def check_result(pipe: CoDiPipeline, result, outputs) -> None:
    media = pipe.config.media
    assert (result.text is not None) == (Modality.TEXT in outputs)
    assert (result.image is not None) == (Modality.IMAGE in outputs)
    assert (result.video is not None) == (Modality.VIDEO in outputs)
    assert (result.audio is not None) == (Modality.AUDIO in outputs)
    if result.image is not None:
        assert result.image.size == (media.image_size, media.image_size) and result.image.mode == "RGB"
    if result.video is not None:
        assert result.video.frames.shape == (media.num_frames, media.image_size, media.image_size, 3)
        assert result.video.frames.dtype == np.uint8 and result.video.fps == media.video_fps
    if result.audio is not None:
        wave = result.audio.waveform
        assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all() and np.abs(wave).max() <= 1
        assert result.audio.sample_rate == 16000 and len(wave) == 15360
    if result.text is not None:
        assert isinstance(result.text, str)


@pytest.mark.parametrize("outputs", OUTPUT_SETS, ids=lambda s: "+".join(m.value for m in s))
def test_every_input_subset_generates_these_outputs(pipe: CoDiPipeline, outputs) -> None:
    for inputs in INPUT_SETS:
        given = {m.value: INPUTS[m] for m in inputs}
        result = pipe(inputs=given, outputs=[m.value for m in outputs], steps=1, seed=11, guidance_scale=2.0)
        check_result(pipe, result, outputs)
        assert result.params["outputs"] == [m.value for m in outputs]
        assert [w[0] for w in result.params["weights"]] == [m.value for m in inputs]


def test_same_seed_same_result_and_order_does_not_matter(pipe: CoDiPipeline) -> None:
    kw = dict(inputs={"text": "a red ball rising"}, steps=3, seed=5, guidance_scale=2.0)
    a = pipe(outputs=["image", "audio"], **kw)
    b = pipe(outputs=["audio", "image"], **kw)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert np.array_equal(a.audio.waveform, b.audio.waveform)
    c = pipe(outputs=["image", "audio"], **{**kw, "seed": 6})
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    r = pipe(inputs={"text": "x"}, outputs="image", steps=1)  # no seed: one is drawn and recorded
    again = pipe(inputs={"text": "x"}, outputs="image", steps=1, seed=r.seed)
    assert np.array_equal(np.asarray(r.image), np.asarray(again.image))


def test_saved_files_repeat_byte_for_byte_and_thread_counts_change_only_rounding(pipe, tmp_path) -> None:
    """What the README promises (issue 20, item 5): the same request on the same machine and thread count writes
    the same bytes, video.mp4 with its sound included; another thread count sums in another order, which moves a
    pixel by at most one level and leaves the words alone."""
    from codi.results import save_result

    kw = dict(inputs={"text": "a red circle moving left"}, outputs=["text", "image", "video", "audio"], steps=4)
    threads = torch.get_num_threads()
    names = ["image.png", "video.mp4", "audio.wav", "text.txt"]
    try:
        torch.set_num_threads(1)
        runs = [pipe(**kw, seed=7) for _ in range(2)]
        for i, r in enumerate(runs):
            save_result(r, tmp_path / str(i))
        assert all((tmp_path / "0" / n).read_bytes() == (tmp_path / "1" / n).read_bytes() for n in names)
        torch.set_num_threads(2)
        other = pipe(**kw, seed=7)
    finally:
        torch.set_num_threads(threads)
    a = runs[0]
    assert other.text == a.text
    assert np.abs(np.asarray(other.image, np.int16) - np.asarray(a.image, np.int16)).max() <= 1
    assert np.abs(other.video.frames.astype(np.int16) - a.video.frames.astype(np.int16)).max() <= 1
    sound, other_sound = a.audio.waveform, other.audio.waveform  # full scale 1; measured: max 1.1e-3, L2 4.4e-4
    assert np.abs(other_sound - sound).max() < 5e-3
    assert np.linalg.norm(other_sound - sound) < 2e-3 * np.linalg.norm(sound)


def test_flush_to_zero_holds_only_during_a_call(pipe: CoDiPipeline) -> None:
    """Issue 20, item 6: building a pipeline turned flush-to-zero on for the whole process; now only its calls."""
    from codi.pipeline import denormals_flushed

    seen = []
    torch.set_flush_denormal(False)  # conftest turns it on for the test process
    try:
        CoDiPipeline.from_preset("tiny")
        assert not denormals_flushed()
        pipe(
            inputs={"text": "a red ball"},
            outputs="image",
            steps=2,
            progress=lambda *_: seen.append(denormals_flushed()),
        )
        assert seen == [True, True] and not denormals_flushed()
        torch.set_flush_denormal(True)  # a caller's own setting is left as it was
        pipe(inputs={"text": "a red ball"}, outputs="image", steps=1)
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(True)


def test_exact_step_count_and_progress(pipe: CoDiPipeline) -> None:
    for sampler, steps in (("ddim", 7), ("dpm", 5)):
        seen = []
        pipe(
            inputs={"text": "a"},
            outputs="image",
            steps=steps,
            sampler=sampler,
            seed=0,
            progress=lambda i, n, seen=seen: seen.append((i, n)),
        )
        assert seen == [(i + 1, steps) for i in range(steps)]
    seen = []
    pipe(
        inputs={"text": "a"},
        outputs="image",
        steps=30,
        seed=0,
        sampler="ddim",  # the released grid is DDIM's
        official_timestep_grid=True,
        progress=lambda i, n: seen.append(n),
    )
    assert len(seen) == 31  # the released grid runs 31 steps for 30


def test_guidance_one_and_coupling_modes(pipe: CoDiPipeline) -> None:
    kw = dict(inputs={"text": "a green wedge"}, outputs=["video", "audio"], steps=2, seed=1)
    off = pipe(guidance_scale=1.0, **kw)
    on = pipe(guidance_scale=3.0, **kw)
    assert not np.array_equal(off.video.frames, on.video.frames)
    paper = pipe(coupling="paper", **kw)
    official = pipe(coupling="official", **kw)
    assert not np.array_equal(paper.audio.waveform, official.audio.waveform)


def test_partner_weight_default_override_and_single_output(pipe: CoDiPipeline) -> None:
    kw = dict(inputs={"text": "a green wedge"}, outputs=["video", "audio"], steps=2, seed=1)
    default = pipe(**kw)
    assert default.params["partner_weight"] == pipe.config.defaults.partner_weight
    off, on = pipe(partner_weight=0.0, **kw), pipe(partner_weight=5.0, **kw)
    assert on.params["partner_weight"] == 5.0
    assert not np.array_equal(off.audio.waveform, on.audio.waveform)
    alone = dict(inputs={"text": "a green wedge"}, outputs=["audio"], steps=2, seed=1)
    np.testing.assert_array_equal(pipe(partner_weight=5.0, **alone).audio.waveform, pipe(**alone).audio.waveform)


def test_two_inputs_of_one_modality_compose(pipe: CoDiPipeline) -> None:
    other = render_image(sample_scene(np.random.default_rng(9), color="red", shape="circle", motion="still"))
    both = pipe(
        inputs={"image": [INPUTS[Modality.IMAGE], other]},
        weights={"image": [1.0, 3.0]},
        outputs="text",
        steps=1,
        seed=2,
    )
    assert both.params["weights"] == [["image", 1.0], ["image", 3.0]]


def test_text_temperature_default_and_override(pipe: CoDiPipeline) -> None:
    kw = dict(inputs={"text": "a red ball"}, outputs="text", steps=1, seed=4)
    default = pipe(**kw)
    assert default.params["text_temperature"] == pipe.config.defaults.text_temperature
    cold = pipe(text_temperature=0.05, **kw)
    assert cold.params["text_temperature"] == 0.05
    assert cold.text == pipe(text_temperature=0.05, **kw).text  # seeded


def test_num_samples_and_bf16(pipe: CoDiPipeline) -> None:
    r = pipe(inputs={"text": "a"}, outputs=["image", "text"], steps=1, seed=0, num_samples=3)
    assert len(r.images) == 3 and len(r.texts) == 3
    half = CoDiPipeline(pipe.model.to(torch.bfloat16), dtype=torch.bfloat16)
    try:
        out = half(inputs={"text": "a", "audio": INPUTS[Modality.AUDIO]}, outputs=["image", "audio"], steps=2, seed=0)
        check_result(half, out, [Modality.IMAGE, Modality.AUDIO])
    finally:
        pipe.model.to(torch.float32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(outputs=[]), "choose at least one output"),
        (dict(outputs=["smell"]), "unknown modality 'smell'"),
        (dict(inputs={"text": "a"}, weights={"image": 1}), "weight was given for image"),
        (dict(inputs={"text": "a"}, weights={"text": -1}), "finite number >= 0"),
        (dict(inputs={"text": "a"}, weights={"text": 0}), "all input weights are 0"),
        (dict(steps=0), "steps must be between"),
        (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number"),
        (dict(seed=-3), "seed must be between"),
        (dict(outputs="text", text_temperature=0.0), "text_temperature must be between 0.01 and 10"),
        (dict(outputs=["image", "text"], partner_weight=-1.0), "partner weight must be in"),
        (dict(outputs=["image", "text"], partner_weight=float("inf")), "partner_weight must be a finite number"),
        (dict(inputs={"image": "/no/such/file.png"}), "cannot read image"),
        (dict(inputs={"audio": "/no/such/file.wav"}), "audio file not found"),
        (dict(inputs={"text": 5}), "text input must be a string"),
        (dict(num_samples="2"), "num_samples must be a whole number, got str"),
        (dict(steps=2.7), "steps must be a whole number, got 2.7"),
        (dict(steps=True), "steps must be a whole number, got bool"),
        (dict(outputs=None), "choose at least one output"),
        (dict(inputs={"text": "a"}, weights=[1, 2]), "weights must map a modality to a weight"),
        (dict(inputs=[("text", "a"), ("text", "b")], weights={"text": [1.0]}), r"1 weight\(s\) for the text inputs"),
        (dict(inputs={"text": "a\ud800b"}), "lone surrogate"),
    ],
)
def test_bad_requests_raise_clear_errors(pipe: CoDiPipeline, kwargs, message) -> None:
    kwargs.setdefault("outputs", "image")
    with pytest.raises(InputError, match=message):
        pipe(**kwargs)
