"""The Shapes & Tones world: renders follow shapes-world.md to the letter and the readers read them back."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from codi.modality import Modality
from codi.world import (
    BACKGROUND,
    COLORS,
    F0,
    MOTIONS,
    PALETTE,
    SHAPES,
    Scene,
    caption,
    compare,
    frame_positions,
    make_batch,
    parse_caption,
    read_audio,
    read_image,
    read_video,
    render_audio,
    render_image,
    render_video,
    sample_scene,
)
from codi.world.scene import GENERIC_SHAPE_WORDS, MOTION_PHRASES, SHAPE_WORDS, as_rng

COMBOS = list(itertools.product(COLORS, SHAPES, MOTIONS))
SR = 16_000


def _coverage(img: np.ndarray, color: str) -> np.ndarray:
    """Per-pixel object coverage recovered from a blended render: float [H, W]."""
    bg, col = np.asarray(BACKGROUND, float), np.asarray(PALETTE[color], float)
    k = int(np.abs(col - bg).argmax())  # the channel with the largest contrast
    return (img[..., k].astype(float) - bg[k]) / (col[k] - bg[k])


def _harmonic_ratios(wave: np.ndarray, f0: float) -> tuple[float, float]:
    """(|X(2 f0)|, |X(3 f0)|) / |X(f0)| of a 1 s constant-pitch tone (1 Hz bins)."""
    mag = np.abs(np.fft.rfft(wave.astype(np.float64)))  # [8001]
    peak = [mag[round(n * f0) - 2 : round(n * f0) + 3].max() for n in (1, 2, 3)]
    return peak[1] / peak[0], peak[2] / peak[0]


# ------------------------------------------------------------------------------------------ scene, image


def test_palette_and_background_are_exact():
    assert PALETTE == {
        "red": (230, 40, 40),
        "green": (40, 190, 60),
        "blue": (50, 90, 240),
        "yellow": (235, 210, 40),
    }
    assert BACKGROUND == (16, 16, 24)
    assert F0 == {"red": 220, "green": 294, "blue": 392, "yellow": 523}
    for color, shape in itertools.product(COLORS, SHAPES):
        img = render_image(Scene(color, shape, "still", 11, 31.0, 31.0))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert tuple(img[33, 31]) == PALETTE[color]  # inside every shape
        assert tuple(img[2, 2]) == BACKGROUND
        values = {tuple(p) for p in img.reshape(-1, 3)}
        assert PALETTE[color] in values and BACKGROUND in values


@pytest.mark.parametrize("motion", MOTIONS)
def test_sizes_and_positions_stay_inside_with_margin(motion):
    g = np.random.default_rng(0)
    scenes = [sample_scene(g, motion=motion) for _ in range(300)]
    assert {s.r for s in scenes} == set(range(9, 14))
    for s in scenes:
        pos = frame_positions(s)  # [8, 2]
        assert (pos - s.r >= 2).all() and (pos + s.r <= 61).all()
    for s in scenes[:10]:
        video = render_video(s)
        border = np.ones((64, 64), bool)
        border[2:62, 2:62] = False
        assert (video[:, border] == BACKGROUND).all()
    # the start position covers its whole allowed range: the motion's extent reaches both margins
    pos = np.stack([frame_positions(s) for s in scenes])  # [300, 8, 2]
    r = np.array([s.r for s in scenes], dtype=float)[:, None, None]  # [300, 1, 1]
    assert ((pos - r).min(axis=(0, 1)) < 2.5).all() and ((pos + r).max(axis=(0, 1)) > 60.5).all()


def test_sample_scene_fixes_given_attributes_and_accepts_seeds_and_torch():
    g = np.random.default_rng(1)
    s = sample_scene(g, color="blue", shape="triangle", motion="left")
    assert (s.color, s.shape, s.motion) == ("blue", "triangle", "left")
    seen = {(x.color, x.shape, x.motion) for x in (sample_scene(g) for _ in range(2000))}
    assert len(seen) == 60
    assert sample_scene(7) == sample_scene(7)
    torch = pytest.importorskip("torch")
    a = sample_scene(torch.Generator().manual_seed(3))
    assert a == sample_scene(torch.Generator().manual_seed(3))
    with pytest.raises(ValueError):
        Scene("purple", "circle", "up", 9, 30.0, 30.0)
    with pytest.raises(TypeError):
        as_rng("seed")


def test_triangle_geometry_apex_and_base_row():
    cx, cy, r = 30, 32, 10
    cov = _coverage(render_image(Scene("blue", "triangle", "still", r, float(cx), float(cy))), "blue")
    assert cov[cy + r + 1 :].max() <= 0.01  # nothing below the base row
    assert cov[cy + r, cx - r + 2 : cx + r - 1] == pytest.approx(0.5, abs=0.01)  # base 2r on row cy + r
    assert cov[cy + r].sum() == pytest.approx(r, abs=0.6)  # half-covered row of width 2r (+ AA corners)
    assert cov[cy + r - 1, cx - r + 2 : cx + r - 1].min() >= 0.99
    for y in range(cy - r + 2, cy + r):  # width grows linearly from the apex to 2r at the base
        assert cov[y].sum() == pytest.approx(y - (cy - r), abs=0.15)
    apex = cov[cy - r]
    assert int(apex.argmax()) == cx and apex.max() == pytest.approx(0.5, abs=0.01)  # apex (cx, cy - r)
    assert cov[: cy - r - 1].max() <= 0.01
    assert cov[:, : cx - r - 1].max() <= 0.01 and cov[:, cx + r + 2 :].max() <= 0.01


def test_square_and_circle_geometry():
    cov = _coverage(render_image(Scene("red", "square", "still", 9, 20.5, 40.5)), "red")
    assert cov.sum() == pytest.approx(18 * 18, abs=0.5)  # side 2r
    assert (cov[32:50, 12:30] >= 0.99).all()
    cov = _coverage(render_image(Scene("red", "circle", "still", 12, 30.3, 29.7)), "red")
    assert cov.sum() == pytest.approx(np.pi * 12**2, rel=0.01)  # disc of radius r


@pytest.mark.parametrize("motion", MOTIONS)
def test_video_moves_24_px_over_7_steps(motion):
    scene = sample_scene(np.random.default_rng(2), color="green", shape="square", motion=motion)
    video = render_video(scene)
    assert video.shape == (8, 64, 64, 3) and video.dtype == np.uint8
    pos = frame_positions(scene)
    step = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0), "still": (0, 0)}[motion]
    np.testing.assert_allclose(pos[7] - pos[0], 24 * np.asarray(step), atol=1e-9)
    np.testing.assert_allclose(np.diff(pos, axis=0), np.tile(24 / 7 * np.asarray(step), (7, 1)), atol=1e-9)
    ys, xs = np.mgrid[:64, :64]
    cents = []
    for frame in video:
        cov = _coverage(frame, "green")
        cents.append([(cov * xs).sum() / cov.sum(), (cov * ys).sum() / cov.sum()])
    np.testing.assert_allclose(np.asarray(cents), pos, atol=0.03)  # rendered where the contract says
    np.testing.assert_array_equal(video[0], render_image(scene))


# ------------------------------------------------------------------------------------------------ audio


def test_audio_format_peak_and_fades():
    fade = int(0.01 * SR)
    for color, shape, motion in COMBOS:
        wave = render_audio(Scene(color, shape, motion, 9, 30.0, 30.0))
        assert wave.shape == (SR,) and wave.dtype == np.float32
        assert np.abs(wave).max() <= 1.0
        assert np.abs(wave).max() == pytest.approx(0.5, abs=0.01)  # peak 1 times the loudest amplitude 0.5
        ramp = np.arange(fade) / fade
        assert (np.abs(wave[:fade]) <= 0.5 * ramp + 1e-6).all()
        assert (np.abs(wave[::-1][:fade]) <= 0.5 * ramp + 1e-6).all()
        assert wave[0] == 0 and wave[-1] == 0
        if shape == "circle":  # a sine with continuous phase moves at most 2 pi f / sr * amplitude per sample
            assert np.abs(np.diff(wave)).max() <= 2 * np.pi * F0[color] * 1.12 / SR * 0.5 + 1e-4


def test_audio_pitch_glide_loudness_and_timbre():
    for color in COLORS:
        still = render_audio(Scene(color, "circle", "still", 9, 30.0, 30.0))
        spec = np.abs(np.fft.rfft(still))
        assert int(spec.argmax()) == pytest.approx(F0[color], abs=1)
        assert read_audio(still)["color"] == color
    up, down = (render_audio(Scene("red", "circle", m, 9, 30.0, 30.0)) for m in ("up", "down"))

    def crossings(x):
        return int((np.diff(np.sign(x)) > 0).sum())

    q = SR // 4
    assert crossings(up[-q:]) > 1.15 * crossings(up[:q])  # rising pitch
    assert crossings(down[:q]) > 1.15 * crossings(down[-q:])  # falling pitch
    assert crossings(up) == pytest.approx(220, abs=2)  # glide centred on f0 (1.12^-1 .. 1.12)

    def rms(x):
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    ramps = {m: render_audio(Scene("blue", "square", m, 9, 30, 30)) for m in ("right", "left", "still")}
    right, left, still = ramps["right"], ramps["left"], ramps["still"]
    assert rms(right[-q:]) > 2.5 * rms(right[:q]) and rms(left[:q]) > 2.5 * rms(left[-q:])
    assert rms(still[-q:]) == pytest.approx(rms(still[:q]), rel=0.05)
    assert rms(up[-q:]) == pytest.approx(rms(up[:q]), rel=0.05)
    expected = {"circle": (0.0, 0.0), "square": (0.0, 1 / 3), "triangle": (0.5, 1 / 3)}
    for color, shape in itertools.product(COLORS, SHAPES):
        wave = render_audio(Scene(color, shape, "still", 9, 30.0, 30.0))
        np.testing.assert_allclose(_harmonic_ratios(wave, F0[color]), expected[shape], atol=0.01)
        spec = np.abs(np.fft.rfft(wave.astype(np.float64)))
        assert spec[7000:].max() < 1e-3 * spec.max()  # band-limited below 7 kHz


# ------------------------------------------------------------------------------------------------- text


def test_caption_grammar_synonyms_and_partials():
    g = np.random.default_rng(3)
    shape_re = "|".join(w for ws in SHAPE_WORDS.values() for w in ws)
    motion_re = "|".join(p for ps in MOTION_PHRASES.values() for p in ps)
    full = re.compile(rf"(a|the) ({'|'.join(COLORS)}) ({shape_re}) ({motion_re})")
    used: dict[str, set[str]] = {"article": set(), "shape": set(), "motion": set()}
    for _ in range(400):
        scene = sample_scene(g)
        text = caption(scene, g)
        m = full.fullmatch(text)
        assert m is not None and text == text.lower() and not text.endswith(".")
        assert m.group(2) == scene.color and m.group(3) in SHAPE_WORDS[scene.shape]
        assert m.group(4) in MOTION_PHRASES[scene.motion]
        used["article"].add(m.group(1))
        used["shape"].add(m.group(3))
        used["motion"].add(m.group(4))
        assert parse_caption(text) == scene.attributes()
        image_text = caption(scene, g, for_image=True)
        assert re.fullmatch(rf"(a|the) {scene.color} ({shape_re})", image_text)
        partial = caption(scene, g, with_color=False, with_shape=False, with_motion=False)
        assert re.fullmatch(r"(a|the) (shape|thing)", partial)
        no_color = caption(scene, g, with_color=False)
        assert parse_caption(no_color) == scene.attributes(with_color=False)
    assert used["article"] == {"a", "the"}
    assert used["shape"] == {w for ws in SHAPE_WORDS.values() for w in ws}
    assert used["motion"] == {p for ps in MOTION_PHRASES.values() for p in ps}
    assert set(GENERIC_SHAPE_WORDS) == {"shape", "thing"}
    examples = {
        "a red shape moving up": {"color": "red", "shape": None, "motion": "up"},
        "the circle": {"color": None, "shape": "circle", "motion": None},
        "a blue thing": {"color": "blue", "shape": None, "motion": None},
        "a square falling": {"color": None, "shape": "square", "motion": "down"},
        "The Yellow  Wedge drifting   left.": {"color": "yellow", "shape": "triangle", "motion": "left"},
    }
    for text, attrs in examples.items():
        assert parse_caption(text) == attrs


def test_synonym_choices_are_uniform():
    g = np.random.default_rng(4)
    scene = Scene("red", "square", "still", 9, 30.0, 30.0)
    words = [caption(scene, g).split()[2] for _ in range(3000)]
    counts = np.array([words.count(w) for w in SHAPE_WORDS["square"]])
    assert (np.abs(counts - 1000) < 120).all()


# ------------------------------------------------------------------------------------------ round trips


def test_readers_recover_every_combination():
    g = np.random.default_rng(5)
    for seed_round in range(3):
        for color, shape, motion in COMBOS:
            scene = sample_scene(g, color, shape, motion)
            assert read_image(render_image(scene)) == {"color": color, "shape": shape}, (seed_round, scene)
            assert read_video(render_video(scene)) == scene.attributes(), (seed_round, scene)
            assert parse_caption(caption(scene, g)) == scene.attributes()
    for color, shape, motion in COMBOS:  # audio depends on the attributes only
        assert read_audio(render_audio(Scene(color, shape, motion, 9, 30.0, 30.0))) == {
            "color": color,
            "shape": shape,
            "motion": motion,
        }


def test_readers_survive_odd_inputs():
    g = np.random.default_rng(6)
    none2, none3 = {"color": None, "shape": None}, {"color": None, "shape": None, "motion": None}
    assert read_image(np.zeros((64, 64, 3), np.uint8)) == none2
    assert read_image(np.full((64, 64, 3), BACKGROUND, np.uint8)) == none2
    assert read_video(np.full((8, 64, 64, 3), BACKGROUND, np.uint8)) == none3
    assert read_audio(np.zeros(SR, np.float32)) == none3
    assert read_audio(np.full(SR, 0.3)) == none3  # DC only
    assert read_audio(0.3 * g.standard_normal(SR)) == none3  # no tone in white noise
    odd_images = [
        g.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        np.zeros((0, 0, 3)),
        np.zeros((5, 7)),
        g.random((32, 48, 4)) * 255,
        np.full((64, 64, 3), np.nan),
        np.zeros((1, 1, 3)),
        None,
        "x",
    ]
    for img in odd_images:
        assert set(read_image(img)) == {"color", "shape"}
    odd_videos = [
        g.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),
        np.zeros((0, 64, 64, 3)),
        np.zeros((64, 64, 3)),
        g.random((3, 40, 30, 3)) * 255,
        None,
    ]
    for video in odd_videos:
        assert set(read_video(video)) == {"color", "shape", "motion"}
    one = render_video(sample_scene(g, motion="up"))[:1]
    assert read_video(one)["motion"] is None and read_video(one)["color"] is not None
    for wave in [np.zeros(10), np.array([]), np.full(SR, np.inf), g.standard_normal((2, SR)), None, "x"]:
        assert read_audio(wave) == none3
    tone = render_audio(Scene("green", "triangle", "down", 9, 30.0, 30.0))
    assert read_audio(tone[::2], sr=8000) == {"color": "green", "shape": "triangle", "motion": "down"}
    assert read_audio(tone + 0.03 * g.standard_normal(SR).astype(np.float32))["shape"] == "triangle"
    assert parse_caption(None) == none3 and parse_caption("") == none3


# ------------------------------------------------------------------------------------------------ batch


def test_make_batch_pairs_modalities_consistently():
    batch = make_batch(np.random.default_rng(7), 16)
    text, image = batch.data[Modality.TEXT], batch.data[Modality.IMAGE]
    video, audio = batch.data[Modality.VIDEO], batch.data[Modality.AUDIO]
    assert len(text) == 16 and image.shape == (16, 64, 64, 3) and video.shape == (16, 8, 64, 64, 3)
    assert audio.shape == (16, SR) and audio.dtype == np.float32
    for i, scene in enumerate(batch.scenes):
        assert parse_caption(text[i]) == scene.attributes() == batch.targets[i]
        np.testing.assert_array_equal(video[i], render_video(scene))
        np.testing.assert_array_equal(image[i], render_image(scene))
        np.testing.assert_array_equal(audio[i], render_audio(scene))
    again = make_batch(np.random.default_rng(7), 16)
    assert again.data[Modality.TEXT] == text and np.array_equal(again.data[Modality.VIDEO], video)
    pairs = make_batch(np.random.default_rng(8), 64, ["text", "image"], p_drop=0.5)
    assert set(pairs.data) == {Modality.TEXT, Modality.IMAGE}
    for text, target in zip(pairs.data[Modality.TEXT], pairs.targets):
        assert target["motion"] is None and parse_caption(text) == target
    assert any(t["color"] is None for t in pairs.targets) and any(t["shape"] is None for t in pairs.targets)
    assert compare({"color": "red", "shape": "box"}, {"color": "red", "shape": "square", "motion": None}) == {
        "color": True,
        "shape": False,
    }
