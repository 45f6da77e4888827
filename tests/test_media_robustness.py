"""Every kind of upload is read right or refused with a message that says why (issue 20, items 1 and 2).

Small real files are written in tmp_path with PIL, soundfile and the ffmpeg binary, then read back.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codi import audio_dsp
from codi.audio_dsp import EXACT_KERNEL_MAX_TAPS, exact_kernel_taps, resample
from codi.limits import MediaLimits, env_name
from codi.media import (
    AudioClip,
    MediaError,
    VideoClip,
    audio_from_array,
    ffmpeg_exe,
    fit_audio,
    image_from_array,
    probe_media,
    read_audio,
    read_image,
    read_video,
    video_frames_from_array,
    write_video,
)

QUADRANTS = np.array([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]], np.uint8)  # [2,2,3]


def _quadrant_frame(h: int = 32, w: int = 48) -> np.ndarray:
    """[h,w,3] uint8: red, green over blue, white."""
    return QUADRANTS.repeat(h // 2, axis=0).repeat(w // 2, axis=1)


def _ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", *args], input=stdin, check=True)


def _encode(frames: np.ndarray, path: Path, fps: int = 10, extra: tuple[str, ...] = ()) -> Path:
    """Lossless H.264 (yuv444p, qp 0) of frames [T,H,W,3] uint8."""
    t, h, w, _ = frames.shape
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    _ffmpeg(*raw, "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", *extra, str(path), stdin=frames.tobytes())
    return path


def _limits_env(monkeypatch: pytest.MonkeyPatch, **values: float) -> None:
    for field, value in values.items():
        monkeypatch.setenv(env_name(field), str(value))


# --- item 1: resampling memory does not depend on the rates ------------------------------------------


def _direct_sinc(x: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Every output sample summed over every input (float64): the formula torchaudio's kernel implements."""
    cutoff = min(orig_sr, new_sr) * 0.99
    t_out = torch.arange(math.ceil(new_sr * x.shape[-1] / orig_sr), dtype=torch.float64)[:, None] / new_sr
    t_in = torch.arange(x.shape[-1], dtype=torch.float64)[None, :] / orig_sr
    u = ((t_in - t_out) * cutoff).clamp(-6, 6)  # [M,N] cut-off periods
    return (torch.special.sinc(u) * torch.cos(u * math.pi / 12) ** 2 * (cutoff / orig_sr)) @ x.double()


def test_common_rates_keep_the_torchaudio_kernel_and_odd_rates_do_not() -> None:
    common = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000, 192000]
    assert max(exact_kernel_taps(o, n) for o in common for n in (16000, 48000)) == 291_200  # 11025 -> 16000
    assert exact_kernel_taps(8001, 16000) == 128_240_000 > EXACT_KERNEL_MAX_TAPS
    assert exact_kernel_taps(44101, 16000) == 706_160_000


@pytest.mark.parametrize(("orig_sr", "new_sr"), [(8001, 16000), (44101, 16000), (44101, 48000), (16000, 44101)])
def test_odd_rates_resample_by_the_same_formula(orig_sr: int, new_sr: int, monkeypatch) -> None:
    monkeypatch.setattr(audio_dsp, "DIRECT_CHUNK_ELEMENTS", 2000)  # many chunks, to test their seams
    x = torch.randn(2, 700, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = resample(x, orig_sr, new_sr)
    assert y.shape == (2, math.ceil(new_sr * 700 / orig_sr)) and y.dtype == torch.float64
    torch.testing.assert_close(y[1], _direct_sinc(x[1], orig_sr, new_sr), atol=1e-12, rtol=0)
    assert resample(x.float(), orig_sr, new_sr).dtype == torch.float32


def test_the_per_sample_path_equals_the_torchaudio_path_on_common_rates() -> None:
    x = torch.randn(1, 3000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = audio_dsp._resample_per_sample(x, 441, 160, 1089, zero_crossings=6, rolloff=0.99)  # 44100 -> 16000
    torch.testing.assert_close(ours, resample(x, 44100, 16000), atol=1e-12, rtol=0)


_PEAK_SCRIPT = """
import sys, torch
from codi.audio_dsp import resample
rate = int(sys.argv[1])
x = torch.randn(2 * rate)  # 2 s
resample(x[:1000], 16000, 44100)
def kb(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")  # restart the peak-RSS count here
before = kb("VmRSS:")
resample(x, rate, 16000)
print((kb("VmHWM:") - before) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-RSS reset")
def test_two_seconds_at_44101_hz_resample_in_little_memory() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, "44101"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert int(out.stdout.strip()) < 200  # MB; torchaudio's kernel for this pair takes ~14 GB to build


# --- item 1: limits on what a file decodes to, checked before decoding -----------------------------


def test_limits_come_from_the_environment(monkeypatch) -> None:
    assert MediaLimits.from_env({}) == MediaLimits()
    got = MediaLimits.from_env({"CODI_MAX_IMAGE_PIXELS": "1_000", "CODI_MAX_AUDIO_SECONDS": "2.5"})
    assert (got.image_pixels, got.audio_seconds, got.video_frames) == (1000, 2.5, MediaLimits().video_frames)
    with pytest.raises(ValueError, match="CODI_MAX_VIDEO_FRAMES='many' is not a number"):
        MediaLimits.from_env({"CODI_MAX_VIDEO_FRAMES": "many"})
    with pytest.raises(ValueError, match="must be positive"):
        MediaLimits.from_env({"CODI_MAX_AUDIO_CHANNELS": "0"})


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)
    _limits_env(monkeypatch, image_pixels=1000)
    with pytest.raises(MediaError) as e:
        read_image(path)
    assert str(e.value) == (
        "cannot read image big.png: it is 40x30 = 1,200 pixels, over the limit of 1,000 pixels "
        "(set CODI_MAX_IMAGE_PIXELS to raise it)"
    )
    _limits_env(monkeypatch, image_pixels=1200)
    assert read_image(path).getpixel((0, 0)) == (10, 20, 30)


def test_pillow_decompression_bomb_becomes_a_media_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (20, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses past twice this
    with pytest.raises(MediaError, match=r"cannot read image bomb.png: .*Pillow refuses .*CODI_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_video_limits_name_their_variable(tmp_path: Path, monkeypatch) -> None:
    path = _encode(np.stack([_quadrant_frame()] * 10), tmp_path / "clip.mp4")  # 1 s, 48x32, 10 fps
    _limits_env(monkeypatch, video_pixels=1000)
    with pytest.raises(MediaError, match=r"frames are 48x32 = 1,536 pixels, over .* CODI_MAX_VIDEO_PIXELS"):
        read_video(path)
    monkeypatch.delenv("CODI_MAX_VIDEO_PIXELS")
    _limits_env(monkeypatch, video_seconds=0.5)
    with pytest.raises(MediaError, match=r"clip.mp4: it lasts 1 s, over the limit of 0.50 s \(set CODI_MAX_VIDEO_SEC"):
        read_video(path)
    assert read_video(path, max_seconds=0.4).frames.shape == (4, 32, 48, 3)  # the start of a long clip is fine
    monkeypatch.delenv("CODI_MAX_VIDEO_SECONDS")
    _limits_env(monkeypatch, video_frames=5)
    with pytest.raises(MediaError, match=r"1 s at 10 fps is 10 frames, over the limit of 5 frames"):
        read_video(path)
    monkeypatch.delenv("CODI_MAX_VIDEO_FRAMES")
    _limits_env(monkeypatch, video_megabytes=0.02)  # 4 frames of 48x32 RGB
    with pytest.raises(MediaError, match=r"10 frames of 48x32 RGB decode to 1 MB, .*CODI_MAX_VIDEO_MEGABYTES"):
        read_video(path)


def test_a_video_of_unknown_length_stops_at_the_frame_limit(tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "clip.h264"  # an elementary stream: no container, so no duration to check up front
    _encode(np.stack([_quadrant_frame()] * 10), raw, extra=("-pix_fmt", "yuv420p"))
    assert read_video(raw).frames.shape == (10, 32, 48, 3)
    _limits_env(monkeypatch, video_frames=3)
    with pytest.raises(MediaError, match=r"decodes to more than 3 frames of 48x32.*CODI_MAX_VIDEO_FRAMES"):
        read_video(raw)


def test_audio_limits_are_checked_from_the_header(tmp_path: Path, monkeypatch) -> None:
    wave = np.sin(np.arange(16000) * 0.05).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([wave, wave, wave], axis=1), 16000, subtype="FLOAT")  # 1 s, 3 channels
    _limits_env(monkeypatch, audio_seconds=0.5)
    with pytest.raises(MediaError, match=r"it lasts 1 s, over the limit of 0.50 s \(set CODI_MAX_AUDIO_SECONDS to"):
        read_audio(path)
    start = read_audio(path, max_seconds=0.25)
    np.testing.assert_allclose(start.waveform, wave[:4000], atol=1e-6)
    monkeypatch.delenv("CODI_MAX_AUDIO_SECONDS")
    _limits_env(monkeypatch, audio_channels=2)
    with pytest.raises(MediaError, match=r"it has 3 channels, over the limit of 2 channels"):
        read_audio(path)
    monkeypatch.delenv("CODI_MAX_AUDIO_CHANNELS")
    _limits_env(monkeypatch, audio_sample_rate=8000)
    with pytest.raises(MediaError, match=r"16,000 samples per second, over .*CODI_MAX_AUDIO_SAMPLE_RATE"):
        read_audio(path)


def test_audio_that_ffmpeg_decodes_keeps_the_length_limit(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "tone.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    assert read_audio(path).sample_rate == 48000
    _limits_env(monkeypatch, audio_seconds=0.5)
    with pytest.raises(MediaError, match=r"cannot read audio tone.m4a: it lasts 1 s, over the limit"):
        read_audio(path)
    assert read_audio(path, max_seconds=0.1).waveform.shape == (4800,)


# --- item 2: read right ----------------------------------------------------------------------------


def test_a_phone_video_with_a_rotation_tag_is_read_upright(tmp_path: Path) -> None:
    frame = _quadrant_frame()  # [32,48,3]
    plain = _encode(np.stack([frame] * 5), tmp_path / "plain.mp4")
    rotated = tmp_path / "phone.mp4"
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))  # tag only, same pixels
    clip = read_video(rotated)
    assert clip.frames.shape == (5, 48, 32, 3)  # displayed size: portrait
    upright = np.rot90(frame)  # display rotation 90 = a quarter turn counter-clockwise
    assert np.abs(clip.frames.astype(int) - upright).max() <= 2
    probe = probe_media(rotated)
    assert (probe.video_size, probe.fps, probe.has_audio) == ((32, 48), 10.0, False)


def test_a_16_bit_grey_png_keeps_its_gradient(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (4, 1))  # [4,256] 0..65535
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(read_image(path))  # [4,256,3]
    np.testing.assert_array_equal(rgb, np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (4, 256, 3)))


def test_an_exif_rotated_photo_is_read_upright(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: display after a quarter turn clockwise
    Image.fromarray(_quadrant_frame(20, 40)).save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.size == (20, 40)
    assert np.abs(np.asarray(img)[2, 2].astype(int) - (0, 0, 255)).max() < 40  # blue turns to the top left


def test_float_frames_in_0_1_are_scaled_and_other_ranges_refused() -> None:
    rng = np.random.default_rng(0)
    unit = rng.random((2, 3, 4, 3), dtype=np.float32)
    np.testing.assert_array_equal(video_frames_from_array(unit), np.round(unit * 255).astype(np.uint8))
    img = image_from_array(unit[0].astype(np.float64))
    np.testing.assert_array_equal(np.asarray(img), np.round(unit[0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(image_from_array(np.full((2, 2), 7, np.int64))), np.full((2, 2, 3), 7))
    with pytest.raises(MediaError, match=r"float pixels must lie in \[0, 1\], got 0..255; give 0..255 .* uint8"):
        video_frames_from_array(unit * 0 + np.linspace(0, 255, 3, dtype=np.float32))
    with pytest.raises(MediaError, match=r"integer pixels must lie in 0..255, got 0..4095"):
        image_from_array(np.array([[0, 4095]], np.uint16))
    bad = unit.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(MediaError, match="1 pixel values are NaN or infinite"):
        video_frames_from_array(bad)


def test_rgba_arrays_are_composited_on_white() -> None:
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (10, 20, 30, 255)
    np.testing.assert_array_equal(np.asarray(image_from_array(rgba)), [[[255, 255, 255], [10, 20, 30]]])


def test_non_finite_audio_is_refused(tmp_path: Path) -> None:
    wave = np.zeros(1600, np.float32)
    wave[[10, 20]] = (np.nan, np.inf)
    path = tmp_path / "bad.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match=r"cannot read audio bad.wav: 2 of its 1,600 samples are NaN or infinite"):
        read_audio(path)
    with pytest.raises(MediaError, match="1 of its 1,600 samples are NaN"):
        audio_from_array(np.where(np.arange(1600) == 5, np.nan, 0.0), 16000)
    clip = audio_from_array(np.full((100, 2), 16384, np.int16), 8000)  # [T,C] integer PCM
    np.testing.assert_allclose(clip.waveform, np.full(100, 16384 / 32767, np.float32))


def test_empty_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"the image array is empty \(0x0 pixels\)"):
        image_from_array(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(MediaError, match=r"the video array is empty \(shape \(0, 8, 8, 3\)\)"):
        video_frames_from_array(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(MediaError, match="the audio array: it has no samples"):
        audio_from_array(np.zeros(0, np.float32), 16000)
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(MediaError, match="cannot read audio silence.wav: it has no samples"):
        read_audio(path)


def test_an_8x8_video_is_read(tmp_path: Path) -> None:
    colour = np.array([200, 40, 90], np.uint8)
    path = write_video(VideoClip(frames=np.tile(colour, (6, 8, 8, 1)), fps=12.0), tmp_path / "tiny.mp4")
    clip = read_video(path)
    assert clip.frames.shape == (6, 8, 8, 3) and clip.fps == 12.0
    assert np.abs(clip.frames.astype(int) - colour).max() <= 6  # yuv420p rounding


def test_wrong_kinds_of_file_say_what_is_wrong(tmp_path: Path) -> None:
    silent = _encode(np.stack([_quadrant_frame()] * 3), tmp_path / "silent.mp4")
    with pytest.raises(MediaError, match=r"^cannot read audio silent.mp4: the file has no audio stream \(it holds"):
        read_audio(silent)
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros(800, np.float32), 8000)
    with pytest.raises(MediaError, match=r"^cannot read video song.wav: it has no video stream, only audio$"):
        read_video(song)
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video")
    with pytest.raises(MediaError, match=r"^cannot read video notes.mp4: ffmpeg cannot open it as a video \(.*Invalid"):
        read_video(junk)
    with pytest.raises(MediaError, match=r"^cannot read image notes.mp4: cannot identify image file"):
        read_image(junk)


def test_float_frames_in_zero_one_reach_the_model_as_pictures_not_black():
    from codi.conditions import video_tensor
    from codi.tiny import tiny_config

    frames = np.full((4, 16, 16, 3), 0.5, dtype=np.float32)  # mid grey, given as floats in [0, 1]
    tensor = video_tensor(frames, tiny_config().media)  # [1,3,F,S,S] in [-1, 1]
    assert abs(float(tensor.mean())) < 0.01  # 0.5 -> 128 -> ~0, not -1 (black)
    with pytest.raises(MediaError, match=r"must lie in \[0, 1\]"):
        video_tensor(np.full((4, 16, 16, 3), 3.0, dtype=np.float32), tiny_config().media)


@pytest.mark.parametrize("audio_seconds", [3.0, 0.5])
def test_video_with_sound_is_the_same_file_every_time_and_the_sound_lasts_as_long_as_the_frames(
    tmp_path, audio_seconds
):
    """Issue 20, item 5: `-shortest` with `apad` let ffmpeg stop the sound at a timing-dependent point (the same
    1 s of frames muxed into files of 1.0 s or 1.98 s); the sound is now cut or padded in samples first."""
    rng = np.random.default_rng(0)
    frames = (rng.random((8, 32, 32, 3)) * 255).astype(np.uint8)  # 1 s at 8 fps
    sound = AudioClip((rng.standard_normal(int(16000 * audio_seconds)) * 0.1).astype(np.float32), 16000)
    files = [write_video(VideoClip(frames, 8.0), tmp_path / f"v{i}.mp4", audio=sound) for i in range(4)]
    assert len({f.read_bytes() for f in files}) == 1
    assert probe_media(files[0]).duration == pytest.approx(1.0, abs=0.01)
    track = read_audio(files[0])
    assert track.seconds == pytest.approx(1.0, abs=1024 / 16000)  # one AAC frame at most
    if audio_seconds < 1.0:  # padded with silence after the sound
        tail = track.waveform[int(0.6 * track.sample_rate) : int(0.9 * track.sample_rate)]
        assert np.abs(tail).max() < 1e-3


def test_fit_audio_cuts_and_pads_to_the_sample():
    wave = np.arange(1, 11, dtype=np.float32)
    assert fit_audio(AudioClip(wave, 10), 0.5).waveform.tolist() == [1, 2, 3, 4, 5]
    padded = fit_audio(AudioClip(wave, 10), 1.25).waveform
    assert padded.tolist() == [*range(1, 11), 0, 0]  # round(12.5) = 12 samples
