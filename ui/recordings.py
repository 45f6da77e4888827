"""Recordings: a finished run saved (atomically) with its inputs, outputs and every parameter, and read back."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.engine import RESULT_FILE, GenerationRequest, ModelInfo, read_run_request
from ui.thumbnails import card_for

log = logging.getLogger(__name__)

META_FILE = "recording.json"
THUMBNAIL = "thumbnail.png"
OUTPUT_FILES = {"text": "text.txt", "image": "image.png", "video": "video.mp4", "audio": "audio.wav"}


@dataclass
class Recording:
    """A saved run: its folder, title, creation time, the request (input paths absolute) and its outputs."""

    folder: Path
    id: str
    title: str
    created: str
    model: str
    request: GenerationRequest
    result: dict[str, Any]

    @property
    def thumbnail(self) -> Path:
        return self.folder / THUMBNAIL

    def output(self, name: str) -> Path | None:
        """The first sample's file of an output kind, if this recording has one."""
        path = self.folder / OUTPUT_FILES[name]
        return path if path.exists() else None

    @property
    def text(self) -> str:
        path = self.output("text")
        return path.read_text().strip() if path else ""

    def files(self) -> list[Path]:
        """Every output file and result.json (what a user downloads)."""
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.name not in (META_FILE, THUMBNAIL))

    def caption(self) -> str:
        outs = " + ".join(self.request.outputs)
        ins = " + ".join(self.request.inputs()) or "nothing"
        return f"{self.title} · {ins} → {outs}"


def slugify(text: str, max_len: int = 40) -> str:
    """Lower-case letters, digits and dashes: 'A red circle!' -> 'a-red-circle'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].strip("-") or "untitled"


def default_title(request: GenerationRequest) -> str:
    """The prompt when there is one, else 'image + audio → video'."""
    if request.text.strip():
        return request.text.strip()[:60]
    return f"{' + '.join(request.inputs()) or 'nothing'} → {' + '.join(request.outputs)}"


def save_recording(run_folder: str | Path, recordings_dir: str | Path, info: ModelInfo, title: str = "") -> Recording:
    """Copies a run folder into `recordings_dir/<time>-<slug>/` with recording.json and a thumbnail.

    The copy is assembled in a hidden temporary folder and renamed into place, so a crash never leaves a
    half-written recording (and listing skips hidden folders).

    Args:
        run_folder: a folder written by `Engine.run` (outputs, inputs/, request.json, result.json).
        recordings_dir: where recordings live (created if needed).
        info: the model that made the run.
        title: a name for it; default: the prompt or 'inputs → outputs'.
    Returns:
        the saved Recording.
    """
    run_folder, recordings_dir = Path(run_folder), Path(recordings_dir)
    if not (run_folder / RESULT_FILE).exists():
        raise FileNotFoundError(f"{run_folder} is not a finished run (no {RESULT_FILE})")
    request = read_run_request(run_folder)
    title = title.strip() or default_title(request)
    rec_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slugify(title)}"
    if (recordings_dir / rec_id).exists():
        rec_id += f"-{uuid.uuid4().hex[:4]}"
    recordings_dir.mkdir(parents=True, exist_ok=True)
    tmp = recordings_dir / f".tmp-{rec_id}"
    shutil.copytree(run_folder, tmp)
    try:
        meta = {
            "id": rec_id,
            "title": title,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "model": {"name": info.name, "source": info.source, "device": info.device, "dtype": info.dtype},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        outputs = {k: tmp / f for k, f in OUTPUT_FILES.items() if (tmp / f).exists() and k != "text"}
        text = (tmp / OUTPUT_FILES["text"]).read_text() if (tmp / OUTPUT_FILES["text"]).exists() else ""
        card_for(outputs, text).save(tmp / THUMBNAIL)
        os.replace(tmp, recordings_dir / rec_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_recording(recordings_dir / rec_id)


def load_recording(folder: str | Path) -> Recording:
    """Reads a recording folder (raises FileNotFoundError / ValueError when it is not one)."""
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text())
    result = json.loads((folder / RESULT_FILE).read_text())
    return Recording(
        folder=folder,
        id=meta.get("id", folder.name),
        title=meta.get("title", folder.name),
        created=meta.get("created", ""),
        model=meta.get("model", {}).get("name", ""),
        request=read_run_request(folder),
        result=result,
    )


def list_recordings(recordings_dir: str | Path) -> list[Recording]:
    """Every readable recording, newest first; unreadable folders are skipped with a log line."""
    recordings_dir = Path(recordings_dir)
    if not recordings_dir.is_dir():
        return []
    found = []
    for folder in sorted(recordings_dir.iterdir(), reverse=True):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            found.append(load_recording(folder))
        except (OSError, ValueError, TypeError) as e:
            log.warning("skipping recording %s: %s", folder, e)
    return found


def find_recording(recordings_dir: str | Path, rec_id: str) -> Recording:
    """The recording with id `rec_id` (its folder name); FileNotFoundError when there is none."""
    if not rec_id or "/" in rec_id or rec_id.startswith("."):
        raise FileNotFoundError(f"no recording {rec_id!r}")
    folder = Path(recordings_dir) / rec_id
    if not (folder / META_FILE).exists():
        raise FileNotFoundError(f"no recording {rec_id!r} in {recordings_dir}")
    return load_recording(folder)


def delete_recording(recordings_dir: str | Path, rec_id: str) -> None:
    """Removes a recording: renamed to a hidden folder first (atomic), then deleted."""
    rec = find_recording(recordings_dir, rec_id)
    trash = rec.folder.with_name(f".trash-{rec.id}")
    os.replace(rec.folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
