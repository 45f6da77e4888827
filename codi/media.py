"""Reading and writing media: images (PIL), video (ffmpeg from imageio-ffmpeg), audio (soundfile/ffmpeg)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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


def read_image(path: str | Path) -> Image.Image:
    """Any image PIL opens, as RGB (alpha composited on white)."""
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"cannot read image {Path(path).name}: {e}") from None
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _probe(path: Path) -> tuple[int, int, float, bool]:
    """Width, height, fps and whether an audio stream exists, parsed from ffmpeg's stream listing."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, check=False)
    text = proc.stderr.decode(errors="replace")
    import re

    video = re.search(r"Stream #.*?Video:.*?(\d{2,5})x(\d{2,5})", text)
    if video is None:
        raise MediaError(f"cannot read video {path.name}: no video stream found")
    fps_match = re.search(r"([\d.]+) fps", text) or re.search(r"([\d.]+) tbr", text)
    fps = float(fps_match.group(1)) if fps_match else 25.0
    has_audio = re.search(r"Stream #.*?Audio:", text) is not None
    return int(video.group(1)), int(video.group(2)), fps, has_audio


def read_video(path: str | Path, max_seconds: float | None = None, audio_rate: int = 16000) -> VideoClip:
    """Decodes a video file's frames (RGB uint8) and, when present, its audio track (mono, `audio_rate`)."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"video file not found: {path}")
    w, h, fps, has_audio = _probe(path)
    limit = ["-t", f"{max_seconds}"] if max_seconds else []
    raw = _run_ffmpeg(
        ["-i", str(path), *limit, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        f"cannot read video {path.name}",
    )
    frames = np.frombuffer(raw, np.uint8)
    if frames.size == 0 or frames.size % (w * h * 3):
        raise MediaError(f"cannot read video {path.name}: decoded no whole frames")
    frames = frames.reshape(-1, h, w, 3).copy()
    audio = None
    if has_audio:
        try:
            audio = _decode_audio_ffmpeg(path, audio_rate, limit)
        except MediaError:
            audio = None
    return VideoClip(frames=frames, fps=fps, audio=audio)


def _decode_audio_ffmpeg(path: Path, rate: int, extra: list[str] | None = None) -> AudioClip:
    raw = _run_ffmpeg(
        ["-i", str(path), *(extra or []), "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
        f"cannot read audio {path.name}",
    )
    wave = np.frombuffer(raw, np.float32).copy()
    if wave.size == 0:
        raise MediaError(f"cannot read audio {path.name}: no samples")
    return AudioClip(waveform=wave, sample_rate=rate)


def read_audio(path: str | Path) -> AudioClip:
    """wav/flac/ogg/mp3 (and anything ffmpeg decodes), mixed down to mono, at the file's own rate."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"audio file not found: {path}")
    try:
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T,C]
        wave = data.mean(axis=1)
        if wave.size == 0:
            raise MediaError(f"cannot read audio {path.name}: no samples")
        return AudioClip(waveform=np.ascontiguousarray(wave), sample_rate=int(rate))
    except MediaError:
        raise
    except Exception:  # format libsndfile lacks: let ffmpeg decode it at 48 kHz
        return _decode_audio_ffmpeg(path, 48000)


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
    """H.264 mp4 (yuv420p, even sizes), with `audio` muxed as AAC when given (cut or padded to the frames)."""
    path = Path(path)
    frames = np.ascontiguousarray(clip.frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        h, w = h + pad_h, w + pad_w
    video_in = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{clip.fps}", "-i", "-"]
    with tempfile.TemporaryDirectory() as tmp:
        audio_in: list[str] = []
        if audio is not None:
            wav = write_audio(audio, Path(tmp) / "a.wav")
            audio_in = ["-i", str(wav), "-af", "apad", "-c:a", "aac", "-b:a", "128k", "-shortest"]
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
                "-movflags",
                "+faststart",
                str(path),
            ],
            f"cannot write video {path.name}",
            stdin=frames.tobytes(),
        )
    return path


def write_json(obj: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return path
