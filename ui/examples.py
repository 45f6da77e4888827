"""The example gallery: requests stored in assets/examples.json (inputs beside it), and exporting a recording as one."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.engine import INPUT_FILE_MODALITIES, GenerationRequest
from ui.recordings import Recording, slugify
from ui.thumbnails import card_for

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EXAMPLES = REPO / "assets" / "examples.json"
EXAMPLES_SUBDIR = "examples"  # input files of example <id> live in <examples.json dir>/examples/<id>/


@dataclass
class Example:
    """One gallery entry: a titled request (input paths absolute) for a model, with a thumbnail card."""

    id: str
    title: str
    model: str  # 'tiny', 'official' or 'any'
    request: GenerationRequest
    thumbnail: Path | None = None

    @property
    def kind(self) -> str:
        """'text + audio → image'."""
        return f"{' + '.join(self.request.inputs()) or 'nothing'} → {' + '.join(self.request.outputs)}"

    def caption(self) -> str:
        return self.kind


def read_entries(path: str | Path) -> list[dict[str, Any]]:
    """The raw entries of an examples.json ([] when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return list(data.get("examples", []))


def write_entries(path: str | Path, entries: list[dict[str, Any]]) -> None:
    """Writes examples.json atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"version": 1, "examples": entries}, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def from_entry(entry: dict[str, Any], root: Path) -> Example:
    """An examples.json entry -> Example, its relative paths resolved against `root`."""
    request = GenerationRequest.from_dict(entry["request"])
    for name in INPUT_FILE_MODALITIES:
        rel = getattr(request, name)
        if rel:
            setattr(request, name, str((root / rel).resolve()))
    thumb = root / entry["thumbnail"] if entry.get("thumbnail") else None
    return Example(entry["id"], entry.get("title", entry["id"]), entry.get("model", "any"), request, thumb)


def load_examples(path: str | Path = DEFAULT_EXAMPLES, model: str | None = None) -> list[Example]:
    """The examples for `model` ('tiny', 'official'; None: all), in file order; 'any' examples always match."""
    path = Path(path)
    examples = [from_entry(e, path.parent) for e in read_entries(path)]
    if model is None:
        return examples
    return [e for e in examples if e.model in (model, "any")]


def make_entry(
    example_id: str, title: str, model: str, request: GenerationRequest, root: Path, sources: dict[str, Path]
) -> dict[str, Any]:
    """Copies input files into `root/examples/<id>/`, draws the thumbnail and returns the examples.json entry.

    Args:
        sources: input files by modality name ('image', 'video', 'audio'), copied under their modality name.
    """
    folder = root / EXAMPLES_SUBDIR / example_id
    folder.mkdir(parents=True, exist_ok=True)
    stored = GenerationRequest.from_dict(request.to_dict())
    media = {}
    for name in INPUT_FILE_MODALITIES:
        setattr(stored, name, None)
        if sources.get(name):
            dst = folder / f"{name}{Path(sources[name]).suffix.lower()}"
            if Path(sources[name]).resolve() != dst.resolve():
                shutil.copyfile(sources[name], dst)
            setattr(stored, name, dst.relative_to(root).as_posix())
            media[name] = dst
    card_for(media, stored.text).save(folder / "thumbnail.png")
    return {
        "id": example_id,
        "title": title,
        "model": model,
        "thumbnail": (folder / "thumbnail.png").relative_to(root).as_posix(),
        "request": stored.to_dict(),
    }


def export_example(recording: Recording, path: str | Path = DEFAULT_EXAMPLES, title: str = "") -> Example:
    """Adds a recording to the example gallery (its inputs copied beside examples.json). A title whose id is
    taken gets the next free one ('my-title-2'), so an export never replaces another example.

    Returns:
        the new Example.
    """
    path = Path(path)
    title = title.strip() or recording.title
    taken = {e.get("id") for e in read_entries(path)}
    example_id = base = slugify(title)
    for k in range(2, len(taken) + 3):
        if example_id not in taken:
            break
        example_id = f"{base}-{k}"
    request = GenerationRequest.from_dict(recording.request.to_dict())
    sources = {n: Path(getattr(request, n)) for n in INPUT_FILE_MODALITIES if getattr(request, n)}
    entry = make_entry(example_id, title, recording.model or "any", request, path.parent, sources)
    entries = [*read_entries(path), entry]
    write_entries(path, entries)
    return from_entry(entry, path.parent)
