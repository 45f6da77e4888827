"""Reading and writing media: images (PIL), video (ffmpeg from imageio-ffmpeg), audio (soundfile/ffmpeg).

Readers check what a file would decode to against `MediaLimits` (CODI_MAX_... variables) from its
headers before decoding, and refuse unreadable, empty or non-finite media with a MediaError that says
what is wrong. The `*_from_array` functions apply the same rules to arrays given through the API.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from codi.limits import MediaLimits, env_name, over_limit


class MediaError(ValueError):
    """A media file could not be read or written; the message says which file and why."""


@dataclass
class VideoClip:
    """Video frames uint8 [T,H,W,3] at `fps`, with the clip's audio track when it has one."""

    frames: np.ndarray
    fps: float
    audio: AudioClip | None = None

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


@dataclass
class AudioClip:
    """A mono float32 waveform in [-1, 1] at `sample_rate`."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sample_rate


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: list[str], what: str, stdin: bytes | None = None) -> bytes:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(f"{what}: {msg[-1] if msg else 'ffmpeg failed'}")
    return proc.stdout


def _exists(path: Path) -> bool:
    """Path.exists, with names the OS refuses (over 255 bytes, a NUL byte) counted as absent instead of raising."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def read_image(path: str | Path, limits: MediaLimits | None = None) -> Image.Image:
    """Any image PIL opens, upright (EXIF orientation applied), as RGB (alpha composited on white).

    16-bit greyscale is scaled to 8 bits; an image over `limits.image_pixels` (default: from the
    environment) is refused from its header, before it is decoded.
    """
    limits = limits or MediaLimits.from_env()
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # CoDi's own limit is checked below
            img = Image.open(path)
        with img:
            w, h = img.size
            if w * h > limits.image_pixels:
                size = over_limit("image_pixels", w * h, limits.image_pixels, "pixels")
                raise MediaError(f"cannot read image {name}: it is {w}x{h} = {size}")
            img.load()
            return _image_to_rgb(ImageOps.exif_transpose(img), f"image {name}")
    except Image.DecompressionBombError as e:
        raise MediaError(
            f"cannot read image {name}: {e} Pillow refuses images this large; CoDi's own limit is "
            f"{limits.image_pixels:,} pixels ({env_name('image_pixels')})"
        ) from None
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:  # ValueError: a path with a NUL byte or lone surrogate
        raise MediaError(f"cannot read image {name}: {e}") from None


def _image_to_rgb(img: Image.Image, what: str) -> Image.Image:
    """An RGB copy of `img`: wide greyscale scaled to 8 bits, transparency composited on white."""
    if img.width == 0 or img.height == 0:
        raise MediaError(f"cannot read {what}: it is empty ({img.width}x{img.height} pixels)")
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit integer or 32-bit float greyscale
        return Image.fromarray(_wide_grey_to_uint8(np.asarray(img), what)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise MediaError(f"cannot read {what}: its {img.mode} pixels cannot be converted to RGB ({e})") from None


def _wide_grey_to_uint8(grey: np.ndarray, what: str) -> np.ndarray:
    """[H,W] 16-bit integer pixels (0..65535) or float pixels in [0, 1] -> [H,W] uint8, rounded."""
    if grey.dtype.kind == "f":
        return pixels_to_uint8(grey, what)
    lo, hi = int(grey.min()), int(grey.max())
    if lo < 0 or hi > 65535:
        raise MediaError(f"cannot read {what}: its pixels span {lo}..{hi}, outside the 16-bit range 0..65535")
    return ((grey.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # [H,W] 65535 -> 255


def pixels_to_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """Pixel values as uint8: uint8 kept, integers in 0..255 cast, floats in [0, 1] scaled by 255 and rounded.

    Anything else (floats outside [0, 1], NaN, integers past 255, other dtypes) is refused: guessing its
    range would give a black or white picture.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.size == 0:
        return pixels.astype(np.uint8)
    if pixels.dtype.kind in "iu":
        lo, hi = int(pixels.min()), int(pixels.max())
        if lo < 0 or hi > 255:
            raise MediaError(f"{what}: integer pixels must lie in 0..255, got {lo}..{hi}; scale them to 8 bits first")
        return pixels.astype(np.uint8)
    if pixels.dtype.kind != "f":
        raise MediaError(f"{what}: pixels must be uint8 or floats in [0, 1], got dtype {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise MediaError(f"{what}: {int((~np.isfinite(pixels)).sum())} pixel values are NaN or infinite")
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo < 0.0 or hi > 1.0:
        raise MediaError(
            f"{what}: float pixels must lie in [0, 1], got {lo:g}..{hi:g}; give 0..255 values as a uint8 array"
        )
    return np.round(pixels * 255.0).astype(np.uint8)


def image_from_array(pixels: np.ndarray) -> Image.Image:
    """An image array [H,W], [H,W,1], [H,W,3] or [H,W,4] (uint8, or floats in [0, 1]) as an RGB image."""
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # [H,W]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise MediaError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(f"the image array is empty ({arr.shape[1]}x{arr.shape[0]} pixels)")
    return _image_to_rgb(Image.fromarray(pixels_to_uint8(arr, "the image array")), "the image array")


def video_frames_from_array(frames: np.ndarray) -> np.ndarray:
    """Video frames [T,H,W,3] (uint8, or floats in [0, 1]) as contiguous uint8 [T,H,W,3]."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise MediaError(f"video frames must be an array [T,H,W,3], got shape {arr.shape}")
    if 0 in arr.shape[:3]:
        raise MediaError(f"the video array is empty (shape {arr.shape}): it needs at least one frame of 1x1 or more")
    return np.ascontiguousarray(pixels_to_uint8(arr, "the video frames"))  # [T,H,W,3]


def audio_from_array(waveform: np.ndarray, sample_rate: int) -> AudioClip:
    """A waveform [T], [T,C] or [C,T] (floats, or integers scaled by their dtype's maximum) as a mono clip."""
    try:
        wave = np.asarray(waveform)
    except (ValueError, TypeError) as e:  # ragged lists
        raise MediaError(f"the audio samples are not an array of numbers ({e})") from None
    sample_rate = _sample_rate(sample_rate)
    if wave.dtype.kind in "iu":
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    elif wave.dtype.kind != "f":
        raise MediaError(f"audio samples must be floats or integers, got dtype {wave.dtype}")
    if wave.ndim == 2:
        wave = wave.mean(axis=1 if wave.shape[1] <= wave.shape[0] else 0)  # [T,C] or [C,T] -> [T]
    if wave.ndim != 1:
        raise MediaError(f"an audio array must be [T], [T,C] or [C,T], got shape {np.shape(waveform)}")
    return AudioClip(waveform=_checked_waveform(wave, "the audio array"), sample_rate=sample_rate)


def _sample_rate(rate: Any, what: str = "the audio array", limits: MediaLimits | None = None) -> int:
    """A whole, positive sample rate within the limits, as an int (for files from their header, and arrays)."""
    limits = limits or MediaLimits.from_env()
    whole = isinstance(rate, (int, np.integer)) or (isinstance(rate, (float, np.floating)) and float(rate).is_integer())
    if isinstance(rate, bool) or not whole or not rate > 0:
        raise MediaError(f"cannot read {what}: its sample rate must be a positive whole number of Hz, got {rate!r:.40}")
    if rate > limits.audio_sample_rate:
        tail = over_limit("audio_sample_rate", int(rate), limits.audio_sample_rate, "samples per second")
        raise MediaError(f"cannot read {what}: it has {tail}")
    return int(rate)


def _checked_waveform(wave: np.ndarray, what: str) -> np.ndarray:
    """[T] float32 samples, refused when empty or when any is NaN or infinite."""
    if wave.size == 0:
        raise MediaError(f"cannot read {what}: it has no samples")
    finite = np.isfinite(wave)
    if not finite.all():
        bad = int(wave.size - finite.sum())
        raise MediaError(f"cannot read {what}: {bad:,} of its {wave.size:,} samples are NaN or infinite")
    return np.ascontiguousarray(wave, dtype=np.float32)


@dataclass(frozen=True)
class MediaProbe:
    """What ffmpeg's listing of a file says, read from its headers without decoding anything."""

    duration: float | None  # seconds; None when the container does not say (e.g. browser recordings)
    video_stream: str | None  # ffmpeg's index ("0:1") of the first video stream that is not cover art
    video_size: tuple[int, int] | None  # (width, height) as displayed: swapped for 90/270 degree rotation tags
    fps: float
    has_audio: bool
    problem: str  # ffmpeg's last complaint when it found no stream, else ""


def probe_media(path: Path) -> MediaProbe:
    """Streams, displayed video size, frame rate and duration, parsed from `ffmpeg -i path`'s listing."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, check=False)
    text = proc.stderr.decode(errors="replace")
    streams = re.split(r"\n\s*Stream #", text)[1:]  # each: the stream line, then its metadata and side data
    heads = [s.split("\n", 1)[0] for s in streams]
    video = next((i for i, h in enumerate(heads) if "Video:" in h and "(attached pic)" not in h), None)
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "output file must be specified" not in ln]
    probe = MediaProbe(
        duration=int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3]) if duration else None,
        video_stream=None,
        video_size=None,
        fps=25.0,
        has_audio=any("Audio:" in h for h in heads),
        problem="" if streams or not lines else lines[-1],
    )
    if video is None:
        return probe
    head = heads[video]
    size = re.search(r", (\d+)x(\d+)", head)
    fps = re.search(r"([\d.]+)(k?) fps", head) or re.search(r"([\d.]+)(k?) tbr", head)
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", streams[video], re.IGNORECASE) or re.search(
        r"\n\s*rotate\s*:\s*(-?[\d.]+)", streams[video]
    )
    w, h = (int(size[1]), int(size[2])) if size else (0, 0)
    if rotation and round(float(rotation[1]) / 90) % 2:
        w, h = h, w  # ffmpeg rotates the decoded frames upright
    index = re.match(r"(\d+:\d+)", head)
    return MediaProbe(
        duration=probe.duration,
        video_stream=index[1] if index else None,
        video_size=(w, h),
        fps=float(fps[1]) * (1000 if fps[2] else 1) if fps else 25.0,
        has_audio=probe.has_audio,
        problem="",
    )


def _video_size(probe: MediaProbe, name: str, limits: MediaLimits) -> tuple[int, int]:
    """The probed (width, height), or a MediaError saying why the file has no usable picture."""
    if probe.video_size is None:
        if probe.has_audio:
            reason = "it has no video stream, only audio"
        elif probe.problem:
            reason = f"ffmpeg cannot open it as a video ({probe.problem})"
        else:
            reason = "it has no video stream"
        raise MediaError(f"cannot read video {name}: {reason}")
    w, h = probe.video_size
    if w * h == 0:
        raise MediaError(f"cannot read video {name}: its video stream has no picture size ({w}x{h})")
    if w * h > limits.video_pixels:
        size = over_limit("video_pixels", w * h, limits.video_pixels, "pixels")
        raise MediaError(f"cannot read video {name}: its frames are {w}x{h} = {size}")
    return w, h


def _seconds_to_decode(
    duration: float | None, max_seconds: float | None, limit: float, field: str, what: str
) -> tuple[float, bool]:
    """Seconds to decode and whether the file's length is known; refuses a known length over `limit`."""
    if duration is None:
        return min(max_seconds or limit, limit), False
    wanted = duration if max_seconds is None else min(max_seconds, duration)
    if wanted > limit:
        tail = over_limit(field, wanted, limit, "s", hint="use a shorter clip")
        raise MediaError(f"cannot read {what}: {'it lasts' if wanted == duration else 'the part asked for is'} {tail}")
    return wanted, True


def _check_video_memory(size: tuple[int, int], fps: float, seconds: float, limits: MediaLimits, what: str) -> int:
    """Frames that `seconds` at `fps` decode to, refused over the frame or decoded-megabyte limits."""
    w, h = size
    frames = max(1, math.ceil(seconds * fps))
    if frames > limits.video_frames:
        tail = over_limit("video_frames", frames, limits.video_frames, "frames", hint="use a shorter clip")
        raise MediaError(f"cannot read {what}: {seconds:g} s at {fps:g} fps is {tail}")
    megabytes = frames * w * h * 3 / 2**20
    if megabytes > limits.video_megabytes:
        tail = over_limit("video_megabytes", math.ceil(megabytes), limits.video_megabytes, "MB", "use a smaller clip")
        raise MediaError(f"cannot read {what}: {frames} frames of {w}x{h} RGB decode to {tail}")
    return frames


def read_video(
    path: str | Path, max_seconds: float | None = None, audio_rate: int = 16000, limits: MediaLimits | None = None
) -> VideoClip:
    """Decodes a video file's frames (RGB uint8, upright) and, when present, its audio track (mono).

    Args:
        path: any file ffmpeg decodes that has a video stream.
        max_seconds: decode only the first `max_seconds` (None: the whole clip, which must fit the limits).
        audio_rate: sample rate of the returned audio track in Hz.
        limits: size limits, checked before decoding (default: MediaLimits.from_env()).
    Returns:
        VideoClip with frames [T,H,W,3] uint8 at the displayed size (ffmpeg applies rotation tags).
    """
    path = Path(path)
    limits = limits or MediaLimits.from_env()
    if not _exists(path):
        raise MediaError(f"video file not found: {path}")
    what = f"video {path.name}"
    probe = probe_media(path)
    size = _video_size(probe, path.name, limits)
    seconds, known = _seconds_to_decode(probe.duration, max_seconds, limits.video_seconds, "video_seconds", what)
    expected = _check_video_memory(size, probe.fps, seconds, limits, what) if known else 1
    cut = seconds if max_seconds is not None or not known else None  # None: the whole (checked) clip
    frames = _decode_frames(path, probe.video_stream or "0:v:0", size, cut, expected, limits)
    audio = None
    if probe.has_audio:
        try:
            audio = _decode_audio_ffmpeg(path, audio_rate, cut)
        except MediaError:
            audio = None
    return VideoClip(frames=frames, fps=probe.fps, audio=audio)


def _decode_frames(
    path: Path, stream: str, size: tuple[int, int], seconds: float | None, expected: int, limits: MediaLimits
) -> np.ndarray:
    """[T,H,W,3] uint8 frames of `stream` (its first `seconds`, or all), at the size ffmpeg reports decoding."""
    w, h = size
    cap = int(min(limits.video_frames, limits.video_megabytes * 2**20 // (w * h * 3)))  # frames the limits allow
    cut = [] if seconds is None else ["-t", f"{seconds}"]
    args = ["-i", str(path), *cut, "-map", stream, "-frames:v", f"{cap + 1}"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    data, log = _ffmpeg_to_array(args, f"cannot read video {path.name}", (expected + 1) * w * h * 3)
    out = re.search(r"Output #0.*?Stream #\S+: Video: [^\n]*?, (\d+)x(\d+)", log, re.DOTALL)
    w, h = (int(out[1]), int(out[2])) if out else (w, h)  # decoded size: the probe's, unless ffmpeg says otherwise
    count, rest = divmod(data.size, w * h * 3)
    if count == 0:
        raise MediaError(f"cannot read video {path.name}: ffmpeg decoded no frames (the video stream is unreadable)")
    if rest:
        raise MediaError(f"cannot read video {path.name}: decoded {data.size} bytes, not whole {w}x{h} RGB frames")
    if count > cap:
        field = "video_frames" if cap == limits.video_frames else "video_megabytes"
        raise MediaError(
            f"cannot read video {path.name}: it decodes to more than {cap} frames of {w}x{h}, over the "
            f"{field.replace('_', ' ')} limit (set {env_name(field)} to raise it, or use a shorter clip)"
        )
    return data.reshape(count, h, w, 3)  # [T,H,W,3]


def _ffmpeg_to_array(args: list[str], what: str, first_guess: int) -> tuple[np.ndarray, str]:
    """Runs ffmpeg and reads its stdout straight into one growing uint8 array, with its info-level log.

    Reading into the array (instead of collecting a bytes object and copying it) keeps peak memory at
    about the decoded size; ffmpeg's `-frames:v` in `args` bounds that size.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args]
    buf = np.empty(max(first_guess, 1 << 16), np.uint8)
    n = 0
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file)
        assert proc.stdout is not None
        with proc.stdout:
            while True:
                if n == buf.size:
                    buf.resize(2 * buf.size, refcheck=False)
                with memoryview(buf)[n:] as view:
                    got = proc.stdout.readinto(view)
                if not got:
                    break
                n += got
        returncode = proc.wait()
        log_file.seek(0)
        log = log_file.read().decode(errors="replace")
    if returncode != 0:
        lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "rror" in ln or "nvalid" in ln] or lines  # the log is info level
        raise MediaError(f"{what}: {errors[-1] if errors else 'ffmpeg failed'}")
    buf.resize(n, refcheck=False)
    return buf, log


def _decode_audio_ffmpeg(path: Path, rate: int, seconds: float | None) -> AudioClip:
    """The first `seconds` (or all) of the file's first audio stream, mixed to mono at `rate` by ffmpeg."""
    cut = [] if seconds is None else ["-t", f"{seconds}"]
    raw = _run_ffmpeg(
        ["-i", str(path), *cut, "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
        f"cannot read audio {path.name}",
    )
    wave = np.frombuffer(raw, np.float32).copy()  # [T]
    return AudioClip(waveform=_checked_waveform(wave, f"audio {path.name}"), sample_rate=rate)


def read_audio(path: str | Path, max_seconds: float | None = None, limits: MediaLimits | None = None) -> AudioClip:
    """wav/flac/ogg/mp3 (and anything ffmpeg decodes), mixed down to mono, at the file's own rate.

    Args:
        path: an audio file, or a video file with an audio track.
        max_seconds: read only the first `max_seconds` (None: the whole file, which must fit the limits).
        limits: size limits, checked from the header before decoding (default: MediaLimits.from_env()).
    Returns:
        AudioClip [T] float32 (files libsndfile cannot read are decoded by ffmpeg at 48 kHz). Empty files
        and files with NaN or infinite samples are refused.
    """
    import soundfile as sf

    path = Path(path)
    limits = limits or MediaLimits.from_env()
    if not _exists(path):
        raise MediaError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception:  # a format libsndfile lacks (m4a, mp4, webm, ...): ffmpeg decodes it
        return _read_audio_ffmpeg(path, max_seconds, limits)
    header = (int(info.channels), int(info.samplerate), int(info.frames))
    frames = _audio_frames_to_read(*header, max_seconds, limits, f"audio {path.name}")
    try:
        blocks = sf.blocks(str(path), blocksize=1 << 16, frames=frames, dtype="float32", always_2d=True)
        parts = [block.mean(axis=1) for block in blocks]  # [B] each: channels mixed down as they are read
    except Exception:  # libsndfile knows the header but not the encoding: let ffmpeg try
        return _read_audio_ffmpeg(path, max_seconds, limits)
    wave = np.concatenate(parts) if parts else np.zeros(0, np.float32)  # [T]
    return AudioClip(waveform=_checked_waveform(wave, f"audio {path.name}"), sample_rate=int(info.samplerate))


def _audio_frames_to_read(
    channels: int, rate: int, total: int, max_seconds: float | None, limits: MediaLimits, what: str
) -> int:
    """Frames to read of a file whose header says `channels`, `rate` and `total` frames; refused over the limits."""
    if channels > limits.audio_channels:
        raise MediaError(
            f"cannot read {what}: it has {over_limit('audio_channels', channels, limits.audio_channels, 'channels')}"
        )
    _sample_rate(rate, what, limits)
    seconds, _ = _seconds_to_decode(total / rate, max_seconds, limits.audio_seconds, "audio_seconds", what)
    return min(total, math.ceil(seconds * rate))


def _read_audio_ffmpeg(path: Path, max_seconds: float | None, limits: MediaLimits) -> AudioClip:
    """The file's first audio stream decoded by ffmpeg at 48 kHz, within the length limit."""
    probe = probe_media(path)
    if not probe.has_audio:
        if probe.video_size is not None:
            reason = "the file has no audio stream (it holds only video)"
        elif probe.problem:
            reason = f"ffmpeg cannot open it as audio ({probe.problem})"
        else:
            reason = "the file has no audio stream"
        raise MediaError(f"cannot read audio {path.name}: {reason}")
    what = f"audio {path.name}"
    seconds, known = _seconds_to_decode(probe.duration, max_seconds, limits.audio_seconds, "audio_seconds", what)
    return _decode_audio_ffmpeg(path, 48000, seconds if max_seconds is not None or not known else None)


def write_image(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    image.save(path)
    return path


def write_audio(clip: AudioClip, path: str | Path) -> Path:
    import soundfile as sf

    path = Path(path)
    sf.write(str(path), np.clip(clip.waveform, -1.0, 1.0).astype(np.float32), clip.sample_rate, subtype="PCM_16")
    return path


def write_video(clip: VideoClip, path: str | Path, audio: AudioClip | None = None) -> Path:
    """H.264 mp4 (yuv420p, even sizes), with `audio` muxed as AAC when given, cut or padded with silence to the
    frames' duration. The same frames and audio give the same bytes: ffmpeg's `-shortest` with `apad` stopped at a
    point that depended on thread timing (the muxed file lasted 1.0 s or 1.98 s for the same 1 s of frames), so the
    audio is cut here, in samples, and the file carries no encoder version or time stamp (bitexact)."""
    path = Path(path)
    frames = np.ascontiguousarray(clip.frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        h, w = h + pad_h, w + pad_w
    video_in = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{clip.fps}", "-i", "-"]
    bitexact = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]
    with tempfile.TemporaryDirectory() as tmp:
        audio_in: list[str] = []
        if audio is not None:
            wav = write_audio(fit_audio(audio, t / clip.fps), Path(tmp) / "a.wav")
            audio_in = ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k"]
        _run_ffmpeg(
            [
                "-y",
                *video_in,
                *audio_in,
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-crf",
                "18",
                *bitexact,
                "-movflags",
                "+faststart",
                str(path),
            ],
            f"cannot write video {path.name}",
            stdin=frames.tobytes(),
        )
    return path


def fit_audio(audio: AudioClip, seconds: float) -> AudioClip:
    """`audio` cut, or padded with silence, to round(seconds x rate) samples."""
    n = round(seconds * audio.sample_rate)
    wave = np.asarray(audio.waveform, dtype=np.float32)[:n]
    if len(wave) < n:
        wave = np.concatenate([wave, np.zeros(n - len(wave), np.float32)])
    return AudioClip(waveform=wave, sample_rate=audio.sample_rate)


def write_json(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return path
