"""A generation's files: image.png, video.mp4 (with the generated audio muxed in), audio.wav, text.txt, result.json.

Used by the command line (`python -m codi generate`) and the Studio's run folders alike.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from codi.media import write_audio, write_image, write_json, write_video
from codi.pipeline import GenerationResult


def save_result(result: GenerationResult, out: Path, inputs: dict[str, Any] | None = None) -> list[Path]:
    """Writes image.png, video.mp4 (with the generated audio muxed in), audio.wav, text.txt, result.json."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(max(len(result.images), len(result.videos), len(result.audios), len(result.texts))):
        sfx = "" if i == 0 else f"_{i}"
        if i < len(result.images):
            written.append(write_image(result.images[i], out / f"image{sfx}.png"))
        audio = result.audios[i] if i < len(result.audios) else None
        if audio is not None:
            written.append(write_audio(audio, out / f"audio{sfx}.wav"))
        if i < len(result.videos):
            written.append(write_video(result.videos[i], out / f"video{sfx}.mp4", audio=audio))
        if i < len(result.texts):
            (out / f"text{sfx}.txt").write_text(result.texts[i] + "\n")
            written.append(out / f"text{sfx}.txt")
    meta = {
        "params": result.params,
        "input_files": {k: str(v) for k, v in (inputs or {}).items() if k != "text"},
        "seed": result.seed,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "model": result.model,
        "outputs": [p.name for p in written],
        "versions": versions(),
    }
    written.append(write_json(meta, out / "result.json"))
    return written


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "codi": "0.1.0",
    }
