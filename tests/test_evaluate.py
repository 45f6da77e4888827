"""The evaluation scores an oracle engine (which renders exactly what it is asked for) at 100 %."""

from __future__ import annotations

import numpy as np
from PIL import Image

from codi.evaluate import ALL3, evaluate, table
from codi.media import AudioClip, VideoClip
from codi.pipeline import GenerationResult
from codi.world import (
    parse_caption,
    read_audio,
    read_image,
    read_video,
    render_audio,
    render_image,
    render_video,
    sample_scene,
)


class Oracle:
    """Reads every input with the world readers, merges the attributes, renders the requested outputs."""

    def __call__(self, inputs, outputs, seed=0, **_):
        attrs: dict[str, str] = {}
        for key, value in inputs.items():
            if key == "text":
                read = parse_caption(value)
            elif key == "image":
                read = read_image(value)
            elif key == "video":
                read = read_video(value.frames)
            else:
                read = read_audio(value.waveform)
            attrs.update({k: v for k, v in read.items() if v is not None})
        rng = np.random.default_rng(seed)
        motion = attrs.get("motion") or ["up", "down", "left", "right", "still"][seed % 5]  # same for both outputs
        scene = sample_scene(rng, color=attrs.get("color"), shape=attrs.get("shape"), motion=motion)
        r = GenerationResult(seed=seed)
        if "image" in outputs:
            r.images = [Image.fromarray(render_image(scene))]
        if "video" in outputs:
            r.videos = [VideoClip(render_video(scene), 8.0)]
        if "audio" in outputs:
            r.audios = [AudioClip(render_audio(scene), 16000)]
        if "text" in outputs:
            r.texts = [f"a {scene.color} {scene.shape} moving {scene.motion}".replace("moving still", "at rest")]
        return r


def test_oracle_scores_full_marks() -> None:
    scores = evaluate(Oracle(), n=6, seed=3)
    by_task = {s.task: s for s in scores}
    for s in scores:
        assert s.n == 6 and all(0.0 <= v <= 1.0 for v in s.accuracy.values())
        if not s.task.startswith("separate"):
            assert s.mean == 1.0, (s.task, s.accuracy)
    assert set(by_task["text->video"].accuracy) == set(ALL3)
    text = table(scores)
    assert text.splitlines()[0].startswith("| task | n | color | shape | motion |") and "100 %" in text


def test_task_subset_scores_as_in_the_full_run() -> None:
    full = {s.task: s.accuracy for s in evaluate(Oracle(), n=3, seed=5)}
    part = evaluate(Oracle(), n=3, seed=5, tasks=("audio->text", "joint"))
    assert [s.task for s in part] == [
        "audio->text",
        "joint video+audio motion agreement",
        "separate video, audio motion agreement",
    ]
    assert all(s.accuracy == full[s.task] for s in part)
    try:
        evaluate(Oracle(), n=1, tasks=("text->smell",))
    except ValueError as e:
        assert "text->smell" in str(e)
    else:
        raise AssertionError("an unknown task must be refused")
