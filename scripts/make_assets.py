"""Renders the Studio's example inputs (Shapes & Tones media) and writes assets/examples.json.

    python scripts/make_assets.py [--out assets]

Deterministic: the same scenes, files and thumbnails every time (a few hundred kB in all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from codi.media import AudioClip, VideoClip, write_audio, write_image, write_video  # noqa: E402
from codi.world import SAMPLE_RATE, render_audio, render_image, render_video, sample_scene  # noqa: E402
from codi.world.scene import FPS  # noqa: E402
from ui.engine import GenerationRequest  # noqa: E402
from ui.examples import make_entry, write_entries  # noqa: E402

# (id, title, text, {modality: (color, shape, motion)}, outputs): the combinations CoDi's paper shows.
TINY_EXAMPLES = [
    ("text-to-image", "a red circle", "a red circle", {}, ["image"]),
    ("image-to-text", "caption a blue square", "", {"image": ("blue", "square", "still")}, ["text"]),
    ("text-to-audio", "a yellow triangle rising", "a yellow triangle rising", {}, ["audio"]),
    ("audio-to-text", "caption a tone", "", {"audio": ("green", "circle", "down")}, ["text"]),
    ("image-to-audio", "the sound of a yellow square", "", {"image": ("yellow", "square", "still")}, ["audio"]),
    ("audio-to-image", "the picture of a tone", "", {"audio": ("red", "triangle", "still")}, ["image"]),
    ("text-to-video", "a blue box sliding left", "a blue box sliding left", {}, ["video"]),
    ("video-to-text", "caption a clip", "", {"video": ("green", "triangle", "right")}, ["text"]),
    ("text-audio-to-image", "circle + yellow tone", "a circle", {"audio": ("yellow", "circle", "still")}, ["image"]),
    ("text-to-image-text", "a green wedge", "a green wedge", {}, ["text", "image"]),
    ("text-to-video-audio", "a red square moving up", "a red square moving up", {}, ["video", "audio"]),
    (
        "text-image-audio-to-video-audio",
        "moving down + a red square + its tone",
        "moving down",
        {"image": ("red", "square", "down"), "audio": ("red", "square", "down")},
        ["video", "audio"],
    ),
]

OFFICIAL_EXAMPLES = [
    ("official-teddy", "Teddy bear on a skateboard, 4k, high resolution", ["video", "audio"]),
    ("official-city", "A cyberpunk city street at night, neon lights, rain", ["image", "text"]),
    ("official-rain", "Rain falling on a tin roof", ["audio"]),
    ("official-turtle", "A sea turtle swimming over a coral reef", ["image"]),
]


def render_inputs(example_id: str, scenes: dict[str, tuple[str, str, str]], folder: Path, seed: int) -> dict:
    """Renders each input scene to a file (image.png, video.mp4, audio.wav); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, (modality, (color, shape, motion)) in enumerate(sorted(scenes.items())):
        scene = sample_scene(seed * 10 + k, color=color, shape=shape, motion=motion, r=12)
        if modality == "image":
            from PIL import Image

            paths[modality] = write_image(Image.fromarray(render_image(scene)), folder / "image.png")
        elif modality == "video":
            paths[modality] = write_video(VideoClip(render_video(scene), fps=float(FPS)), folder / "video.mp4")
        else:
            paths[modality] = write_audio(AudioClip(render_audio(scene), SAMPLE_RATE), folder / "audio.wav")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "assets"), help="assets folder (examples.json goes there)")
    args = parser.parse_args(argv)
    root = Path(args.out)
    entries = []
    for seed, (example_id, title, text, scenes, outputs) in enumerate(TINY_EXAMPLES, start=1):
        sources = render_inputs(example_id, scenes, root / "examples" / example_id, seed)
        request = GenerationRequest(text=text, outputs=outputs, seed=seed)
        entries.append(make_entry(example_id, title, "tiny", request, root, sources))
    for seed, (example_id, text, outputs) in enumerate(OFFICIAL_EXAMPLES, start=100):
        request = GenerationRequest(text=text, outputs=outputs, seed=seed)
        entries.append(make_entry(example_id, text, "official", request, root, {}))
    write_entries(root / "examples.json", entries)
    print(f"wrote {len(entries)} examples to {root / 'examples.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
